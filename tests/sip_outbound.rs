//! Outbound calls as an API client and a trunk see them: a whole node on
//! loopback, `POST /v1/workspaces/{id}/calls` over HTTP with API keys, and
//! a real SIPp UAS standing in for the trunk (its `outbound_host:port`).
//! Challenges (401, 407 over TCP), busy, no answer (ring timeout, CANCEL),
//! an answer whose greeting is heard at the SDP address and a DELETE that
//! sends BYE, a ringing call cancelled by DELETE, the trunk's concurrency,
//! and the API's refusals. Every wait is bounded.

use crate::common;
use crate::sip_support;

use std::time::Duration;

use common::node::{api_key, demo_agent, poll, start_node};
use serde_json::{json, Value};
use sip_support::Uas;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

/// Outbound calls ring this long before they are cancelled.
const RING_TIMEOUT_SECS: &str = "2";
const CALLEE: &str = "+15551230000";

struct Fixture {
    db: TestDb,
    node: switchboard::serve::Services,
    ws: Uuid,
    agent: Uuid,
    manager: String,
    viewer: String,
    http: reqwest::Client,
}

async fn fixture(rtp_base: u16) -> Fixture {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let (agent, ws) = demo_agent(&db.pool).await;
    let manager = api_key(&db.pool, ws, "MANAGER").await;
    let viewer = api_key(&db.pool, ws, "VIEWER").await;
    let node = start_node(
        &db.url,
        &db.pool,
        rtp_base,
        &[
            ("SWITCHBOARD_SIP__RING_TIMEOUT_SECS", RING_TIMEOUT_SECS),
            // The trunks of these tests are SIPp on loopback.
            ("SWITCHBOARD_OUTBOUND__ALLOW", "[\"127.0.0.0/8\"]"),
        ],
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("http");
    Fixture {
        db,
        node,
        ws,
        agent,
        manager,
        viewer,
        http,
    }
}

impl Fixture {
    /// An outbound trunk at 127.0.0.1:`port`; its password stored
    /// encrypted under the node's key, as the API stores it.
    async fn trunk(&self, name: &str, port: u16, transport: &str, auth: bool, max: i32) -> Uuid {
        let key = self.node.runtime.config.encryption_key_bytes();
        let password = auth.then(|| switchboard::api::secrets::encrypt(&key, "trunkpass"));
        sqlx::query_scalar(
            "insert into sip_trunks (workspace_id, name, direction, outbound_host, outbound_port, outbound_transport,
                                     outbound_username, outbound_password, max_concurrent_calls)
             values ($1, $2, 'outbound', '127.0.0.1', $3, $4, $5, $6, $7) returning id",
        )
        .bind(self.ws)
        .bind(name)
        .bind(i32::from(port))
        .bind(transport)
        .bind(auth.then_some("trunkuser"))
        .bind(password)
        .bind(max)
        .fetch_one(&self.db.pool)
        .await
        .expect("trunk")
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://{}/v1/workspaces/{}/{path}",
            self.node.api_addr, self.ws
        )
    }

    async fn post_raw(&self, key: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("calls"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST calls");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn dial(&self, key: &str, body: Value) -> (u16, Value) {
        self.post_raw(key, &body.to_string()).await
    }

    /// Dials `CALLEE` through `trunk`; the call's id.
    async fn dial_ok(&self, trunk: Uuid) -> Uuid {
        let (status, body) = self
            .dial(
                &self.manager,
                json!({"agent_id": self.agent, "to": CALLEE, "sip_trunk_id": trunk,
                       "variables": {"name": "Ada"}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "ringing");
        body["call_log_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("call_log_id")
    }

    async fn live(&self) -> Vec<Value> {
        let r = self
            .http
            .get(self.url("calls/live"))
            .header("x-api-key", &self.viewer)
            .send()
            .await
            .expect("GET live");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn hang_up(&self, id: Uuid) -> u16 {
        self.http
            .delete(self.url(&format!("calls/live/{id}")))
            .header("x-api-key", &self.manager)
            .send()
            .await
            .expect("DELETE live")
            .status()
            .as_u16()
    }

    /// The call's row once it has ended (bounded: 15 s).
    async fn ended(&self, id: Uuid) -> CallRow {
        poll(Duration::from_secs(15), || async {
            sqlx::query_as::<_, CallRow>(
                "select direction, status, sip_code, hangup_by, from_number, to_number, codec, sip_trunk_id,
                        answered_at is not null as answered
                 from call_logs where id = $1 and ended_at is not null",
            )
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .expect("call_logs")
        })
        .await
        .unwrap_or_else(|| panic!("call {id} did not end within 15 s"))
    }
}

#[derive(Debug, sqlx::FromRow)]
struct CallRow {
    direction: String,
    status: String,
    sip_code: Option<i32>,
    hangup_by: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    codec: Option<String>,
    sip_trunk_id: Option<Uuid>,
    answered: bool,
}

async fn challenged_call(code: u16, transport: &str, db_transport: &str, rtp_base: u16) {
    let f = fixture(rtp_base).await;
    let uas = Uas::start(&format!("uas_auth_{code}.xml"), transport, &[]).await;
    let trunk = f.trunk("carrier", uas.port, db_transport, true, 5).await;
    let id = f.dial_ok(trunk).await;
    let run = uas.finish().await;
    run.assert_ok();
    let row = f.ended(id).await;
    assert_eq!(row.direction, "outbound");
    assert_eq!(row.status, "completed", "{row:?}");
    assert_eq!(row.sip_code, Some(200));
    assert_eq!(
        row.hangup_by.as_deref(),
        Some("caller"),
        "the far end hung up"
    );
    assert!(row.answered);
    assert_eq!(row.codec.as_deref(), Some("PCMU"));
    assert_eq!(row.to_number.as_deref(), Some(CALLEE));
    assert_eq!(
        row.from_number.as_deref(),
        Some("+15555550100"),
        "the agent's own number"
    );
    assert_eq!(row.sip_trunk_id, Some(trunk));
    // SIPp checked the digest (verifyauth) before it answered.
    let header = if code == 401 {
        "Authorization: Digest"
    } else {
        "Proxy-Authorization: Digest"
    };
    assert!(run.messages.contains(header), "{}", run.messages);
    f.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_challenge_is_answered_and_the_call_completes() {
    challenged_call(401, "u1", "udp", 42000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_challenge_over_tcp_is_answered_and_the_call_completes() {
    challenged_call(407, "t1", "tcp", 42400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_is_busy_and_an_unanswered_call_is_cancelled_at_the_ring_timeout() {
    let f = fixture(42800).await;
    // 486 Busy Here.
    let uas = Uas::start("uas_busy.xml", "u1", &[]).await;
    let trunk = f.trunk("busy", uas.port, "udp", false, 5).await;
    let id = f.dial_ok(trunk).await;
    uas.finish().await.assert_ok();
    let row = f.ended(id).await;
    assert_eq!(
        (row.direction.as_str(), row.status.as_str(), row.sip_code),
        ("outbound", "busy", Some(486)),
        "{row:?}"
    );
    assert!(!row.answered);

    // 180 and nothing more: CANCEL after the ring timeout, 487, no_answer.
    let uas = Uas::start("uas_no_answer.xml", "u1", &[]).await;
    sqlx::query("update sip_trunks set outbound_port = $1 where id = $2")
        .bind(i32::from(uas.port))
        .bind(trunk)
        .execute(&f.db.pool)
        .await
        .expect("trunk port");
    let started = std::time::Instant::now();
    let id = f.dial_ok(trunk).await;
    let ringing = poll(Duration::from_secs(2), || async {
        f.live()
            .await
            .into_iter()
            .find(|c| c["call_log_id"] == id.to_string())
    })
    .await
    .expect("the ringing call is listed live");
    assert_eq!(ringing["state"], "ringing");
    assert_eq!(ringing["direction"], "outbound");
    let run = uas.finish().await;
    run.assert_ok();
    let took = started.elapsed();
    assert!(run.messages.contains("CANCEL sip:"), "SIPp saw the CANCEL");
    let row = f.ended(id).await;
    assert_eq!(
        (row.status.as_str(), row.sip_code, row.hangup_by.as_deref()),
        ("no_answer", Some(487), Some("system")),
        "{row:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "cancelled after {took:?}, the ring timeout is 2 s"
    );
    assert!(f.live().await.is_empty(), "nothing live afterwards");
    f.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_is_cancelled_by_delete_and_the_trunk_limit_holds() {
    let f = fixture(43200).await;
    let uas = Uas::start("uas_no_answer.xml", "u1", &[]).await;
    let trunk = f.trunk("one-line", uas.port, "udp", false, 1).await;
    let id = f.dial_ok(trunk).await;
    // The trunk's one line is taken.
    let (status, body) = f
        .dial(
            &f.manager,
            json!({"agent_id": f.agent, "to": "+15551230001", "sip_trunk_id": trunk}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "capacity_reached");
    // Hang up while it rings: CANCEL (before the 2 s ring timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.hang_up(id).await, 202);
    let run = uas.finish().await;
    run.assert_ok();
    assert!(run.messages.contains("CANCEL sip:"));
    let row = f.ended(id).await;
    assert_eq!(
        (row.status.as_str(), row.sip_code, row.hangup_by.as_deref()),
        ("no_answer", Some(487), Some("agent")),
        "{row:?}"
    );
    // Only the one call was placed; the refused one has no row.
    let rows: i64 =
        sqlx::query_scalar("select count(*) from call_logs where direction = 'outbound'")
            .fetch_one(&f.db.pool)
            .await
            .expect("count");
    assert_eq!(rows, 1);
    assert_eq!(f.hang_up(id).await, 404, "no longer live");
    f.node.stop(Duration::from_secs(1)).await;
}

/// What arrives at the SDP address of the answer for `listen`: every PCMU
/// payload decoded, and the RFC 4733 events (payload type 101, as offered)
/// as (event, end bit).
async fn capture(
    socket: &tokio::net::UdpSocket,
    listen: Duration,
) -> (usize, Vec<i16>, Vec<(u8, bool)>) {
    let deadline = tokio::time::Instant::now() + listen;
    let mut buf = vec![0u8; 2048];
    let (mut packets, mut pcm, mut events) = (0, Vec::new(), Vec::new());
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        // 12-byte header (we send no CSRC or extension).
        match buf[1] & 0x7f {
            0 if n > 12 => {
                packets += 1;
                switchboard::media::g711::decode_ulaw(&buf[12..n], &mut pcm);
            }
            101 if n >= 16 => events.push((buf[12], buf[13] & 0x80 != 0)),
            _ => {}
        }
    }
    (packets, pcm, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_is_live_hears_the_greeting_takes_dtmf_and_delete_sends_bye() {
    let f = fixture(43600).await;
    let media = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("media socket");
    let rtp_port = media.local_addr().expect("addr").port().to_string();
    let uas = Uas::start("uas_answer.xml", "u1", &["-key", "rtp_port", &rtp_port]).await;
    let trunk = f.trunk("carrier", uas.port, "udp", false, 5).await;
    let id = f.dial_ok(trunk).await;
    // The agent speaks first: its greeting reaches the answer's address.
    let (packets, pcm, _) = capture(&media, Duration::from_secs(8)).await;
    assert!(packets > 100, "only {packets} RTP packets of the greeting");
    let live = f.live().await;
    let call = live
        .iter()
        .find(|c| c["call_log_id"] == id.to_string())
        .unwrap_or_else(|| panic!("the call is not live: {live:?}"));
    assert_eq!(call["state"], "in_progress");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["to"], CALLEE);
    // DTMF out: 1, 2, # as RFC 4733 events with the offered payload type.
    let dtmf = |body: Value| {
        let url = f.url(&format!("calls/live/{id}/dtmf"));
        let req = f.http.post(url).header("x-api-key", &f.manager).json(&body);
        async move { req.send().await.expect("POST dtmf").status().as_u16() }
    };
    assert_eq!(dtmf(json!({"digits": "12x"})).await, 400);
    assert_eq!(dtmf(json!({"digits": "12#"})).await, 202);
    let (_, _, events) = capture(&media, Duration::from_secs(2)).await;
    let ended: Vec<u8> = {
        let mut ended = Vec::new();
        for (event, end) in &events {
            if *end && ended.last() != Some(event) {
                ended.push(*event);
            }
        }
        ended
    };
    assert_eq!(
        ended,
        vec![1, 2, 11],
        "telephone-events received: {events:?}"
    );
    assert_eq!(f.hang_up(id).await, 202);
    let run = uas.finish().await;
    run.assert_ok();
    assert!(run.messages.contains("BYE sip:"), "SIPp got the BYE");
    let gone = poll(Duration::from_secs(5), || async {
        (dtmf(json!({"digits": "1"})).await == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "digits for an ended call are 404");
    let row = f.ended(id).await;
    assert_eq!(
        (
            row.direction.as_str(),
            row.status.as_str(),
            row.sip_code,
            row.hangup_by.as_deref()
        ),
        ("outbound", "completed", Some(200), Some("agent")),
        "{row:?}"
    );
    // The session's person on the line is the callee.
    let caller: String = sqlx::query_scalar(
        "select s.caller from agent_sessions s join call_logs c on c.session_id = s.id where c.id = $1",
    )
    .bind(id)
    .fetch_one(&f.db.pool)
    .await
    .expect("session");
    assert_eq!(caller, CALLEE);
    // What arrived is speech, not comfort silence: at least a second of
    // 20 ms frames well above the noise floor.
    let voiced = pcm
        .chunks(160)
        .filter(|frame| {
            let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (energy / frame.len() as f64).sqrt() > 300.0
        })
        .count();
    assert!(
        voiced >= 50,
        "only {voiced} voiced frames in {} ms of the greeting",
        pcm.len() / 8
    );
    f.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_cannot_dial() {
    let f = fixture(44000).await;
    let trunk = f.trunk("carrier", 5999, "udp", false, 5).await;
    let body = |extra: Value| {
        let mut b = json!({"agent_id": f.agent, "to": CALLEE, "sip_trunk_id": trunk});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        b
    };
    let expect = |r: (u16, Value), status: u16, code: &str, field: Option<&str>| {
        assert_eq!(r.0, status, "{}", r.1);
        assert_eq!(r.1["error"]["code"], code, "{}", r.1);
        if let Some(field) = field {
            assert_eq!(r.1["error"]["details"]["field"], field, "{}", r.1);
        }
    };
    // A VIEWER may not place calls.
    expect(
        f.dial(&f.viewer, body(json!({}))).await,
        403,
        "forbidden",
        None,
    );
    // Bad JSON, unknown fields, numbers that are not E.164.
    expect(
        f.post_raw(&f.manager, "{\"agent_id\": ").await,
        400,
        "malformed_json",
        None,
    );
    expect(
        f.dial(&f.manager, body(json!({"colour": "red"}))).await,
        400,
        "validation_failed",
        Some("colour"),
    );
    for bad in ["5551230000", "+0123456789", "+1555", "+1555123000x", ""] {
        expect(
            f.dial(&f.manager, body(json!({"to": bad}))).await,
            400,
            "validation_failed",
            Some("to"),
        );
    }
    expect(
        f.dial(&f.manager, body(json!({"from": "12"}))).await,
        400,
        "validation_failed",
        Some("from"),
    );
    expect(
        f.dial(&f.manager, body(json!({"variables": [1]}))).await,
        400,
        "validation_failed",
        Some("variables"),
    );
    // An agent, a trunk or a number of another workspace is not there.
    expect(
        f.dial(&f.manager, body(json!({"agent_id": Uuid::new_v4()})))
            .await,
        422,
        "unprocessable",
        Some("agent_id"),
    );
    let other: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('Other', 'other') returning id",
    )
    .fetch_one(&f.db.pool)
    .await
    .expect("workspace");
    let foreign: Uuid = sqlx::query_scalar(
        "insert into sip_trunks (workspace_id, name, direction, outbound_host, outbound_port) values ($1, 'theirs', 'both', '127.0.0.1', 5998) returning id",
    )
    .bind(other)
    .fetch_one(&f.db.pool)
    .await
    .expect("foreign trunk");
    expect(
        f.dial(&f.manager, body(json!({"sip_trunk_id": foreign})))
            .await,
        422,
        "unprocessable",
        Some("sip_trunk_id"),
    );
    sqlx::query("insert into phone_numbers (workspace_id, e164) values ($1, '+15559990000')")
        .bind(other)
        .execute(&f.db.pool)
        .await
        .expect("foreign number");
    expect(
        f.dial(&f.manager, body(json!({"from": "+15559990000"})))
            .await,
        422,
        "unprocessable",
        Some("from"),
    );
    // The inbound-only demo trunk cannot call out; with two outbound trunks
    // the trunk must be named.
    let local: Uuid = sqlx::query_scalar("select id from sip_trunks where name = 'local'")
        .fetch_one(&f.db.pool)
        .await
        .expect("demo trunk");
    expect(
        f.dial(&f.manager, body(json!({"sip_trunk_id": local})))
            .await,
        422,
        "unprocessable",
        Some("sip_trunk_id"),
    );
    f.trunk("second", 5997, "udp", false, 5).await;
    expect(
        f.dial(&f.manager, json!({"agent_id": f.agent, "to": CALLEE}))
            .await,
        422,
        "unprocessable",
        Some("sip_trunk_id"),
    );
    // The plan's usage limit.
    sqlx::query("update pricing_plans set conversation_limit = 0 where is_default")
        .execute(&f.db.pool)
        .await
        .expect("plan");
    expect(
        f.dial(&f.manager, body(json!({}))).await,
        402,
        "usage_limit_reached",
        None,
    );
    sqlx::query("update pricing_plans set conversation_limit = null where is_default")
        .execute(&f.db.pool)
        .await
        .expect("plan");
    // A trunk host the operator did not admit (a private address).
    sqlx::query("update sip_trunks set outbound_host = '10.11.12.13' where id = $1")
        .bind(trunk)
        .execute(&f.db.pool)
        .await
        .expect("host");
    expect(
        f.dial(&f.manager, body(json!({}))).await,
        422,
        "unprocessable",
        Some("sip_trunk_id"),
    );
    // An agent that is not live.
    sqlx::query("update agents set status = 'draft' where id = $1")
        .bind(f.agent)
        .execute(&f.db.pool)
        .await
        .expect("draft");
    expect(
        f.dial(&f.manager, body(json!({}))).await,
        422,
        "unprocessable",
        Some("agent_id"),
    );
    // Digits: MANAGER only, on a live call of this node.
    let dtmf = |key: &str| {
        let url = f.url(&format!("calls/live/{}/dtmf", Uuid::new_v4()));
        let req = f
            .http
            .post(url)
            .header("x-api-key", key)
            .json(&json!({"digits": "1"}));
        async move { req.send().await.expect("POST dtmf").status().as_u16() }
    };
    assert_eq!(dtmf(&f.viewer).await, 403);
    assert_eq!(dtmf(&f.manager).await, 404);
    // Nothing was dialed.
    let rows: i64 = sqlx::query_scalar("select count(*) from call_logs")
        .fetch_one(&f.db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
    // The OpenAPI document describes the operation.
    let doc: Value = f
        .http
        .get(format!("http://{}/openapi.json", f.node.api_addr))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let op = &doc["paths"]["/v1/workspaces/{workspace_id}/calls"]["post"];
    assert!(op["requestBody"].is_object(), "{op}");
    assert!(op["responses"]["202"].is_object(), "{op}");
    f.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_is_retried_once_with_the_trunks_min_se_and_the_call_is_answered() {
    let f = fixture(54800).await;
    let media = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("media socket");
    let rtp_port = media.local_addr().expect("addr").port().to_string();
    let uas = Uas::start(
        "uas_session_timer_422.xml",
        "u1",
        &["-key", "rtp_port", &rtp_port],
    )
    .await;
    let trunk = f.trunk("timers", uas.port, "udp", false, 5).await;
    let id = f.dial_ok(trunk).await;
    // SIPp checked the second INVITE (Session-Expires 1800, CSeq 2) before
    // it answered; the greeting then flows.
    let (packets, _, _) = capture(&media, Duration::from_secs(4)).await;
    assert!(packets > 50, "only {packets} RTP packets after the answer");
    assert_eq!(f.hang_up(id).await, 202);
    let run = uas.finish().await;
    run.assert_ok();
    assert!(run.messages.contains("SIP/2.0 422"), "{}", run.messages);
    let row = f.ended(id).await;
    assert_eq!(
        (row.status.as_str(), row.sip_code, row.answered),
        ("completed", Some(200), true),
        "{row:?}"
    );
    f.node.stop(Duration::from_secs(1)).await;
}
