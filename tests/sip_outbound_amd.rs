//! Answering-machine detection on outbound calls, as a trunk and an API
//! client see it: the agent's AMD settings written through the API, a whole
//! node on loopback dialing a SIPp UAS that answers and replays recorded
//! audio (`uas_answer_pcap.xml`, `play_pcap_audio`) built here from the
//! Piper voice: a person's "Hello?" — greeted at once, `call_logs` says
//! human — and a voicemail greeting ending in a 1 kHz beep — the voicemail
//! message is spoken after the beep (its first audio at the UAS's SDP
//! address comes after the beep's time, seconds of it), then the node
//! hangs up and `call_logs` says machine.

use crate::common;
use crate::sip_support;

use std::time::{Duration, Instant};

use common::node::{api_key, demo_agent, poll, speech_8k, start_node};
use serde_json::{json, Value};
use sip_support::Uas;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

const CALLEE: &str = "+15551230000";
const VOICEMAIL: &str = "Hi, this is the reception desk. Please call us back about your booking.";

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

fn beep(ms: usize) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| (7000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 8000.0).sin()) as i16)
        .collect()
}

struct Fixture {
    db: TestDb,
    node: switchboard::serve::Services,
    ws: Uuid,
    agent: Uuid,
    key: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

async fn fixture(rtp_base: u16) -> Fixture {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let (agent, ws) = demo_agent(&db.pool).await;
    let key = api_key(&db.pool, ws, "MANAGER").await;
    let node = start_node(
        &db.url,
        &db.pool,
        rtp_base,
        &[("SWITCHBOARD_OUTBOUND__ALLOW", "[\"127.0.0.0/8\"]")],
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
        key,
        http,
        dir: tempfile::tempdir().expect("tmp"),
    }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!(
            "http://{}/v1/workspaces/{}/{path}",
            self.node.api_addr, self.ws
        )
    }

    async fn patch_agent(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.url(&format!("agents/{}", self.agent)))
            .header("x-api-key", &self.key)
            .json(&body)
            .send()
            .await
            .expect("PATCH agent");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// SIPp answering with `pcm` (8 kHz), its SDP address our `media`
    /// socket; the call's id once dialed.
    async fn dial(&self, name: &str, pcm: &[i16], media: &tokio::net::UdpSocket) -> (Uas, Uuid) {
        let pcap = self.dir.path().join(format!("{name}.pcap"));
        common::pcap::write_pcmu(&pcap, pcm);
        let template = std::fs::read_to_string(sip_support::scenario("uas_answer_pcap.xml"))
            .expect("scenario");
        let scenario = self.dir.path().join(format!("{name}.xml"));
        std::fs::write(
            &scenario,
            template.replace("ANSWER_PCAP", pcap.to_str().expect("utf-8 path")),
        )
        .expect("write scenario");
        let rtp_port = media.local_addr().expect("addr").port().to_string();
        let uas = Uas::start(
            scenario.to_str().expect("utf-8 path"),
            "u1",
            &["-key", "rtp_port", &rtp_port],
        )
        .await;
        let trunk: Uuid = sqlx::query_scalar(
            "insert into sip_trunks (workspace_id, name, direction, outbound_host, outbound_port)
             values ($1, $2, 'outbound', '127.0.0.1', $3) returning id",
        )
        .bind(self.ws)
        .bind(name)
        .bind(i32::from(uas.port))
        .fetch_one(&self.db.pool)
        .await
        .expect("trunk");
        let r = self
            .http
            .post(self.url("calls"))
            .header("x-api-key", &self.key)
            .json(&json!({"agent_id": self.agent, "to": CALLEE, "sip_trunk_id": trunk}))
            .send()
            .await
            .expect("POST calls");
        assert_eq!(r.status().as_u16(), 202);
        let body: Value = r.json().await.expect("json");
        let id = body["call_log_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("call_log_id");
        (uas, id)
    }

    /// (status, hangup_by, hangup_reason, amd_result, amd_decision_ms)
    /// once the call has ended and its verdict is written (bounded: 20 s).
    async fn ended(&self, id: Uuid) -> (String, String, String, String, i32) {
        poll(Duration::from_secs(20), || async {
            sqlx::query_as(
                "select status, hangup_by, hangup_reason, amd_result, amd_decision_ms from call_logs
                  where id = $1 and ended_at is not null and amd_result is not null",
            )
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .expect("call_logs")
        })
        .await
        .unwrap_or_else(|| panic!("call {id} did not end with a verdict within 20 s"))
    }

    /// The agent's lines of the call, in order.
    async fn agent_lines(&self, id: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "select m.content from messages m join call_logs c on c.session_id = m.session_id
              where c.id = $1 and m.role = 'assistant' order by m.created_at",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .expect("messages")
    }
}

/// The agent's audio reaching `socket` for `listen`: (arrival, PCM of the
/// packet, louder than comfort noise) for every PCMU packet.
async fn packets(
    socket: &tokio::net::UdpSocket,
    listen: Duration,
) -> Vec<(Instant, Vec<i16>, bool)> {
    let deadline = tokio::time::Instant::now() + listen;
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        if n > 12 && buf[1] & 0x7f == 0 {
            let mut pcm = Vec::new();
            switchboard::media::g711::decode_ulaw(&buf[12..n], &mut pcm);
            let energy = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64;
            out.push((Instant::now(), pcm, energy.sqrt() > 200.0));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_answering_is_greeted_and_the_call_says_human() {
    let f = fixture(54000).await;
    // A voicemail with nothing to say is refused.
    let (status, body) = f
        .patch_agent(json!({"amd_enabled": true, "amd_action": "voicemail"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["details"]["field"], "voicemail_message",
        "{body}"
    );
    let (status, body) = f
        .patch_agent(json!({"amd_enabled": true, "amd_action": "hangup"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["amd_enabled"].clone(), body["amd_action"].clone()),
        (json!(true), json!("hangup"))
    );

    let mut answer = silence(400);
    answer.extend(speech_8k(f.dir.path(), "hello", "Hello?"));
    answer.extend(silence(6000));
    let media = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("media");
    let (uas, id) = f.dial("human", &answer, &media).await;
    let greeting: Vec<_> = packets(&media, Duration::from_secs(8))
        .await
        .into_iter()
        .filter(|p| p.2)
        .collect();
    assert!(
        greeting.len() > 50,
        "the greeting reached the callee: {} voiced packets",
        greeting.len()
    );
    let row = poll(Duration::from_secs(10), || async {
        sqlx::query_as::<_, (Option<String>, Option<i32>)>(
            "select amd_result, amd_decision_ms from call_logs where id = $1 and amd_result is not null",
        )
        .bind(id)
        .fetch_optional(&f.db.pool)
        .await
        .expect("call_logs")
    })
    .await
    .expect("the verdict is on the call's row");
    println!("human answer: verdict {:?} after {:?} ms", row.0, row.1);
    assert_eq!(row.0.as_deref(), Some("human"));
    let ms = row.1.expect("decision time");
    assert!(
        (400..=3500).contains(&ms),
        "decided {ms} ms after the answer"
    );
    // Our side hangs up; the greeting is the agent's first line.
    let r = f
        .http
        .delete(f.url(&format!("calls/live/{id}")))
        .header("x-api-key", &f.key)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 202);
    uas.finish().await.assert_ok();
    let (status, ..) = f.ended(id).await;
    assert_eq!(status, "completed");
    let lines = f.agent_lines(id).await;
    let greeting_text: String = sqlx::query_scalar(
        "select p.greeting from agents a join personas p on p.id = a.persona_id where a.id = $1",
    )
    .bind(f.agent)
    .fetch_one(&f.db.pool)
    .await
    .expect("greeting");
    assert_eq!(lines.first(), Some(&greeting_text), "{lines:?}");
    f.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voicemail_gets_the_message_after_its_beep_and_the_call_says_machine() {
    let f = fixture(54400).await;
    let (status, body) = f
        .patch_agent(
            json!({"amd_enabled": true, "amd_action": "voicemail", "voicemail_message": VOICEMAIL}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut answer = silence(300);
    answer.extend(speech_8k(
        f.dir.path(),
        "greeting",
        "Hi, you've reached Sam. I can't take your call right now, please leave a message after the tone.",
    ));
    answer.extend(silence(300));
    let beep_at = Duration::from_millis((answer.len() / 8) as u64);
    answer.extend(beep(600));
    answer.extend(silence(12_000));
    let media = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("media");
    let dialed = Instant::now();
    let (uas, id) = f.dial("voicemail", &answer, &media).await;
    let heard = packets(&media, Duration::from_secs(20)).await;
    let first = heard
        .iter()
        .find(|p| p.2)
        .map(|p| p.0)
        .expect("the voicemail reached the machine");
    // The replay starts at the answer, after the POST: the beep reached the
    // node no earlier than `beep_at` after it.
    let after_dial = first.duration_since(dialed);
    println!("voicemail: beep at {beep_at:?} into the greeting, first agent audio {after_dial:?} after the POST");
    assert!(
        after_dial >= beep_at,
        "the agent spoke before the beep ({after_dial:?} < {beep_at:?})"
    );
    assert!(
        after_dial <= beep_at + Duration::from_secs(4),
        "the voicemail came late: {after_dial:?}"
    );
    // The node hangs up once the message has played; SIPp got its BYE.
    uas.finish().await.assert_ok();
    let (status, hangup_by, reason, verdict, ms) = f.ended(id).await;
    println!("voicemail: verdict {verdict} after {ms} ms");
    assert_eq!(
        (
            status.as_str(),
            hangup_by.as_str(),
            reason.as_str(),
            verdict.as_str()
        ),
        ("completed", "agent", "voicemail left", "machine")
    );
    assert!(
        (500..=3500).contains(&ms),
        "decided {ms} ms after the answer"
    );
    assert_eq!(
        f.agent_lines(id).await,
        vec![VOICEMAIL.to_string()],
        "the voicemail is the agent's only line"
    );
    // The machine recorded seconds of speech: the message, not a blip.
    let voiced = heard.iter().filter(|p| p.2).count();
    assert!(
        voiced >= 100,
        "only {voiced} voiced packets reached the machine"
    );
    f.node.stop(Duration::from_secs(1)).await;
}
