//! Phone numbers and routing that tenants cannot capture, black-box: two
//! workspaces with a trunk each. Through the API a number one holds cannot
//! be claimed by the other (409, whether by create or by patch) until an
//! operator assigns it; over SIP an INVITE arriving on trunk A for a number
//! of workspace B is "not found" (404, logged in A, nothing in B), never
//! B's agent, while on B's trunk the same INVITE reaches B's agent; and a
//! carrier range both trunks list carries each number to its own tenant.

use crate::api_support;
use crate::security_support;
use crate::sip_support;

use std::net::SocketAddr;
use std::time::Duration;

use api_support::Api;
use security_support::{offer, status, RawSip, Request};
use serde_json::json;
use sip_support::{Node, Script};
use switchboard::api::operator::{assign_number, NumberAssignment};
use switchboard::api::types::E164;
use switchboard::sip::SipOptions;
use uuid::Uuid;

const NUMBER: &str = "+15555550142";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_another_workspace_holds_is_409_until_an_operator_assigns_it() {
    let api = Api::start().await;
    let (_, ta) = api.user("owner-a@example.com").await;
    let (_, tb) = api.user("owner-b@example.com").await;
    let a = api.workspace(&ta, "Tenant A").await;
    let b = api.workspace(&tb, "Tenant B").await;
    let trunk = |name: &str| json!({"name": name, "inbound_cidrs": ["203.0.113.0/24"]});
    let trunk_a = api.create(&ta, a, "sip-trunks", trunk("carrier")).await;
    let trunk_b = api.create(&tb, b, "sip-trunks", trunk("carrier")).await;
    let held = api
        .create(
            &ta,
            a,
            "phone-numbers",
            json!({"e164": NUMBER, "sip_trunk_id": trunk_a}),
        )
        .await;

    // B claims A's number: 409, saying why and what to do.
    let r = api
        .post(
            &format!("/v1/workspaces/{b}/phone-numbers"),
            &tb,
            json!({"e164": NUMBER, "sip_trunk_id": trunk_b}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    let message = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("held by another workspace") && message.contains("operator"),
        "{message}"
    );
    assert_eq!(r.body["error"]["details"]["field"], "e164", "{}", r.text);
    assert!(
        !r.text.contains(&a.to_string()),
        "the 409 names A: {}",
        r.text
    );
    // Or renames one of its own numbers to it: 409 too.
    let own = api
        .create(&tb, b, "phone-numbers", json!({"e164": "+15555550143"}))
        .await;
    let r = api
        .patch(
            &format!("/v1/workspaces/{b}/phone-numbers/{own}"),
            &tb,
            json!({"e164": NUMBER}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("held by another workspace"), "{}", r.text);
    // A claiming it twice is told it already holds it.
    let r = api
        .post(
            &format!("/v1/workspaces/{a}/phone-numbers"),
            &ta,
            json!({"e164": NUMBER}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("already a number of this workspace"),
        "{}",
        r.text
    );
    assert!(r.text.contains(&held.to_string()), "{}", r.text);
    let holders = api
        .rows(&format!(
            "select workspace_id from phone_numbers where e164 = '{NUMBER}'"
        ))
        .await;
    assert_eq!(holders, vec![json!({"workspace_id": a})]);

    // The operator assigns it to B: it moves, on B's trunk.
    let assigned = assign_number(
        &api.db.pool,
        &NumberAssignment {
            e164: E164::parse(NUMBER).unwrap(),
            workspace_id: b,
            agent_id: None,
            sip_trunk_id: Some(trunk_b),
            label: Some("ported".into()),
        },
    )
    .await
    .expect("operator assigns");
    assert_eq!(assigned.taken_from, Some(a));
    let r = api
        .get(
            &format!("/v1/workspaces/{b}/phone-numbers?e164=%2B15555550142"),
            &tb,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(&trunk_b.to_string()), "{}", r.text);
    let r = api
        .get(&format!("/v1/workspaces/{a}/phone-numbers"), &ta)
        .await;
    assert!(!r.text.contains(NUMBER), "A still lists it: {}", r.text);
    // Now A is the one refused.
    let r = api
        .post(
            &format!("/v1/workspaces/{a}/phone-numbers"),
            &ta,
            json!({"e164": NUMBER}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    // The operator cannot point it at another workspace's trunk.
    let wrong = assign_number(
        &api.db.pool,
        &NumberAssignment {
            e164: E164::parse(NUMBER).unwrap(),
            workspace_id: b,
            agent_id: None,
            sip_trunk_id: Some(trunk_a),
            label: None,
        },
    )
    .await;
    assert!(wrong.is_err(), "{wrong:?}");
}

const B_NUMBER: &str = "+15555550200";
const B_WIDE_NUMBER: &str = "+15555550201";
const A_NUMBER: &str = "+15555550100";

/// The demo workspace is A (trunk `local`, now 127.0.0.1 only, number
/// +15555550100); B gets a live agent, a trunk for 127.0.0.2, a number on
/// that trunk and one that names no trunk.
async fn two_tenants() -> (Node, Uuid, Uuid) {
    let node = Node::start_env(
        SipOptions::default(),
        Script::Hold,
        &[("SWITCHBOARD_SIP__ROUTING_CACHE_TTL_SECS", "0")],
    )
    .await;
    node.sql(&format!(
        "update sip_trunks set inbound_cidrs = '{{127.0.0.1/32}}' where name = 'local';
         insert into workspaces (name, slug) values ('Tenant B', 'tenant-b');
         insert into agents (workspace_id, name, status)
             select id, 'B agent', 'live' from workspaces where slug = 'tenant-b';
         insert into sip_trunks (workspace_id, name, inbound_cidrs, codecs)
             select id, 'b-carrier', '{{127.0.0.2/32}}', '{{PCMU}}' from workspaces where slug = 'tenant-b';
         insert into phone_numbers (workspace_id, e164, sip_trunk_id, agent_id)
             select w.id, '{B_NUMBER}', t.id, a.id from workspaces w
               join sip_trunks t on t.workspace_id = w.id join agents a on a.workspace_id = w.id
              where w.slug = 'tenant-b';
         insert into phone_numbers (workspace_id, e164, agent_id)
             select w.id, '{B_WIDE_NUMBER}', a.id from workspaces w
               join agents a on a.workspace_id = w.id where w.slug = 'tenant-b';"
    ))
    .await;
    let ws = |slug: &'static str| {
        let pool = node.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("select id from workspaces where slug = $1")
                .bind(slug)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (a, b) = (ws("demo").await, ws("tenant-b").await);
    (node, a, b)
}

/// Sends an INVITE for `number` from `ip`; returns its final answer (ACKed
/// when it is not a 2xx) with the request and the caller's socket.
async fn invite(node: &Node, ip: &str, number: &str) -> (u16, Request, RawSip, String) {
    let sip = RawSip::bind(ip, node.addr()).await;
    let rtp: SocketAddr = format!("{ip}:{}", 40_000 + rand::random::<u16>() % 10_000)
        .parse()
        .unwrap();
    let r = Request::invite(number, node.addr(), sip.local(), offer(rtp));
    sip.send(&r.text()).await;
    let answer = sip
        .final_response(Duration::from_secs(5))
        .await
        .expect("a final answer");
    let code = status(&answer).unwrap_or(0);
    if code >= 300 {
        sip.send(&r.ack(&answer).text()).await;
    }
    (code, r, sip, answer)
}

/// The calls the agent stand-in has been handed, once there are `n`.
async fn calls_seen(node: &Node, n: usize) -> Vec<sip_support::SeenCall> {
    for _ in 0..50 {
        let seen = node.seen();
        if seen.len() >= n {
            assert_eq!(seen.len(), n, "more calls than expected");
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} calls never reached the agent: {}", node.seen().len());
}

/// (workspace_id, sip_code, to_number) of every call_logs row.
async fn logged(node: &Node) -> Vec<(Uuid, Option<i32>, Option<String>)> {
    sqlx::query_as("select workspace_id, sip_code, to_number from call_logs order by started_at")
        .fetch_all(&node.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_on_trunk_a_for_a_number_of_workspace_b_is_not_routed_to_b() {
    let (node, a, b) = two_tenants().await;
    // On A's trunk (127.0.0.1), B's numbers are not found: 404, not B's agent.
    for number in [B_NUMBER, B_WIDE_NUMBER] {
        let (code, _, _, answer) = invite(&node, "127.0.0.1", number).await;
        assert_eq!(code, 404, "{number} on trunk A: {answer}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node.seen().is_empty(), "a call reached an agent");
    let rows = logged(&node).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(ws, code, _)| *ws == a && *code == Some(404)),
        "the attempts belong to A, the trunk that took them: {rows:?}"
    );

    // On B's trunk (127.0.0.2), the same INVITE reaches B's agent.
    let (code, r, sip, answer) = invite(&node, "127.0.0.2", B_NUMBER).await;
    assert_eq!(code, 200, "{answer}");
    sip.send(&r.ack(&answer).text()).await;
    let seen = calls_seen(&node, 1).await;
    assert_eq!(seen[0].to_number, B_NUMBER);
    let ws: Uuid = sqlx::query_scalar("select workspace_id from call_logs where id = $1")
        .bind(seen[0].call_log_id)
        .fetch_one(&node.db.pool)
        .await
        .unwrap();
    assert_eq!(ws, b);
    sip.send(&r.bye(&answer, sip.local()).text()).await;
    node.wait_idle().await;

    // One carrier range on both trunks: each number still goes to its own
    // tenant, A's number to A's agent.
    node.sql("update sip_trunks set inbound_cidrs = '{127.0.0.0/8}'")
        .await;
    let (code, r, sip, answer) = invite(&node, "127.0.0.1", A_NUMBER).await;
    assert_eq!(code, 200, "{answer}");
    sip.send(&r.ack(&answer).text()).await;
    let seen = calls_seen(&node, 2).await;
    let ws: Uuid = sqlx::query_scalar("select workspace_id from call_logs where id = $1")
        .bind(seen[1].call_log_id)
        .fetch_one(&node.db.pool)
        .await
        .unwrap();
    assert_eq!(ws, a, "A's number answered in A");
    sip.send(&r.bye(&answer, sip.local()).text()).await;
    node.wait_idle().await;
    let in_b = logged(&node)
        .await
        .into_iter()
        .filter(|(ws, _, _)| *ws == b)
        .count();
    assert_eq!(in_b, 1, "B has its one call and nothing of A's");
}
