//! Digest authentication that fails closed, black-box over UDP: a trunk
//! whose password is missing or cannot be decrypted refuses (403) whatever
//! digest comes; a captured Authorization cannot be replayed, pointed at
//! another Request-URI or used from another address; and the API refuses
//! a trunk username without a password.

use crate::api_support;
use crate::security_support;
use crate::sip_support;

use std::time::Duration;

use security_support::{header, status, RawSip, Request};
use serde_json::json;
use sip_support::Node;
use switchboard::sip::digest::answer_challenge;

const NUMBER: &str = "+15555550101";

/// The demo node plus trunk `digest` (user `trunkuser`, password column
/// `password_sql`) owning `NUMBER`, for any loopback source.
async fn digest_node(password_sql: &str) -> Node {
    let node = Node::start().await;
    node.sql(&format!(
        "insert into sip_trunks (workspace_id, name, inbound_cidrs, inbound_username, inbound_password, max_concurrent_calls)
         select workspace_id, 'digest', '{{127.0.0.0/8}}', 'trunkuser', {password_sql}, 5 from sip_trunks where name = 'local';
         insert into phone_numbers (workspace_id, e164, sip_trunk_id, agent_id)
         select t.workspace_id, '{NUMBER}', t.id, p.agent_id from sip_trunks t, phone_numbers p
         where t.name = 'digest' and p.e164 = '+15555550100';"
    ))
    .await;
    node
}

/// Sends an INVITE, expects the 401, ACKs it; returns the challenge.
async fn challenge(sip: &RawSip, invite: &Request) -> String {
    sip.send(&invite.text()).await;
    let c = sip
        .final_response(Duration::from_secs(5))
        .await
        .expect("an answer to the INVITE");
    assert_eq!(status(&c), Some(401), "{c}");
    sip.send(&invite.ack(&c).text()).await;
    header(&c, "WWW-Authenticate")
        .expect("a challenge")
        .to_string()
}

/// The same INVITE again (new transaction) carrying `authorization`.
fn with_auth(invite: &Request, authorization: &str, local: std::net::SocketAddr) -> Request {
    let mut r = invite.clone();
    r.cseq += 1;
    r.via = format!(
        "SIP/2.0/UDP {local};branch={};rport",
        security_support::branch()
    );
    r.extra.push(format!("Authorization: {authorization}"));
    r
}

/// Sends `r`; returns the final status (a 200 is ACKed and hung up).
async fn final_status(sip: &RawSip, r: &Request) -> u16 {
    sip.send(&r.text()).await;
    let a = sip
        .final_response(Duration::from_secs(5))
        .await
        .expect("a final answer");
    sip.send(&r.ack(&a).text()).await;
    if status(&a) == Some(200) {
        sip.send(&r.bye(&a, sip.local()).text()).await;
        let _ = sip.final_response(Duration::from_secs(3)).await;
    }
    status(&a).unwrap_or(0)
}

fn offer_for(sip: &RawSip) -> String {
    let rtp = sip.local();
    security_support::offer(std::net::SocketAddr::new(rtp.ip(), rtp.port() + 1))
}

/// The answer to a caller who offers a digest over an empty password
/// (when the node challenges at all: refusing at once is better still).
async fn empty_password_digest_status(password_sql: &str) -> u16 {
    let node = digest_node(password_sql).await;
    let sip = RawSip::bind("127.0.0.1", node.addr()).await;
    let invite = Request::invite(NUMBER, node.addr(), sip.local(), offer_for(&sip));
    sip.send(&invite.text()).await;
    let first = sip
        .final_response(Duration::from_secs(5))
        .await
        .expect("an answer to the INVITE");
    sip.send(&invite.ack(&first).text()).await;
    if status(&first) != Some(401) {
        return status(&first).unwrap_or(0);
    }
    let c = header(&first, "WWW-Authenticate").expect("a challenge");
    let auth = answer_challenge(c, "INVITE", &invite.uri, "trunkuser", "", "cn", 1).unwrap();
    final_status(&sip, &with_auth(&invite, &auth, sip.local())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_username_without_a_password_refuses_every_digest() {
    assert_eq!(empty_password_digest_status("null").await, 403);
    assert_eq!(empty_password_digest_status("''").await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_that_cannot_be_decrypted_refuses_every_digest() {
    // Sealed under another key: the node cannot open it.
    let sealed = format!("'v1:{}'", "QUFB".repeat(20));
    assert_eq!(empty_password_digest_status(&sealed).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_authorization_is_refused() {
    let node = digest_node("'trunkpass'").await;
    let sip = RawSip::bind("127.0.0.1", node.addr()).await;
    let invite = Request::invite(NUMBER, node.addr(), sip.local(), offer_for(&sip));
    let c = challenge(&sip, &invite).await;
    let auth =
        answer_challenge(&c, "INVITE", &invite.uri, "trunkuser", "trunkpass", "cn", 1).unwrap();
    assert_eq!(
        final_status(&sip, &with_auth(&invite, &auth, sip.local())).await,
        200,
        "the first use is a call"
    );
    // A captured header, replayed on a new call (same nonce, same nc).
    let mut replay = Request::invite(NUMBER, node.addr(), sip.local(), offer_for(&sip));
    replay.uri = invite.uri.clone();
    let got = final_status(&sip, &with_auth(&replay, &auth, sip.local())).await;
    assert_ne!(got, 200, "the replayed Authorization was accepted");
    // The honest next use of the nonce (nc = 2) still works.
    let next =
        answer_challenge(&c, "INVITE", &invite.uri, "trunkuser", "trunkpass", "cn", 2).unwrap();
    let fresh = Request::invite(NUMBER, node.addr(), sip.local(), offer_for(&sip));
    assert_eq!(
        final_status(&sip, &with_auth(&fresh, &next, sip.local())).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_uri_must_be_the_request_uri() {
    let node = digest_node("'trunkpass'").await;
    let sip = RawSip::bind("127.0.0.1", node.addr()).await;
    let invite = Request::invite(NUMBER, node.addr(), sip.local(), offer_for(&sip));
    let c = challenge(&sip, &invite).await;
    let other_uri = format!("sip:{NUMBER}@192.0.2.1");
    let auth =
        answer_challenge(&c, "INVITE", &other_uri, "trunkuser", "trunkpass", "cn", 1).unwrap();
    assert_eq!(
        final_status(&sip, &with_auth(&invite, &auth, sip.local())).await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_is_bound_to_the_address_it_was_issued_to() {
    let node = digest_node("'trunkpass'").await;
    let sip = RawSip::bind("127.0.0.1", node.addr()).await;
    let invite = Request::invite(NUMBER, node.addr(), sip.local(), offer_for(&sip));
    let c = challenge(&sip, &invite).await;
    let auth =
        answer_challenge(&c, "INVITE", &invite.uri, "trunkuser", "trunkpass", "cn", 1).unwrap();
    // Another address presents the nonce 127.0.0.1 was given.
    let other = RawSip::bind("127.0.0.2", node.addr()).await;
    let mut moved = Request::invite(NUMBER, node.addr(), other.local(), offer_for(&other));
    moved.uri = invite.uri.clone();
    let got = final_status(&other, &with_auth(&moved, &auth, other.local())).await;
    assert_ne!(
        got, 200,
        "a nonce issued to 127.0.0.1 worked from 127.0.0.2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_trunk_username_without_a_password() {
    let api = api_support::Api::start().await;
    let (_, token) = api.user("owner@example.com").await;
    let ws = api.workspace(&token, "Acme").await;
    let base = format!("/v1/workspaces/{ws}/sip-trunks");
    let r = api
        .post(&base, &token, json!({"name": "T", "inbound_username": "u"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["details"]["field"], "inbound_password");
    // Allowed with a password; then neither half can be taken away alone.
    let id = api
        .create(
            &token,
            ws,
            "sip-trunks",
            json!({"name": "T", "inbound_username": "u", "inbound_password": "pw"}),
        )
        .await;
    let r = api
        .patch(
            &format!("{base}/{id}"),
            &token,
            json!({"inbound_password": null}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let bare = api
        .create(&token, ws, "sip-trunks", json!({"name": "Bare"}))
        .await;
    let r = api
        .patch(
            &format!("{base}/{bare}"),
            &token,
            json!({"inbound_username": "u"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = api
        .patch(
            &format!("{base}/{id}"),
            &token,
            json!({"inbound_username": null, "inbound_password": null}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
