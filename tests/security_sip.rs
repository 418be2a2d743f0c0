//! Signalling a stranger cannot bend, black-box against a SIP node over UDP:
//! responses go only to the request's real source whatever its Via claims
//! (RFC 3261 §18.2.2, RFC 3581); unauthenticated floods get rate-limited
//! answers and a bounded transaction map; unauthenticated rejections are
//! counted, not logged as calls.

use crate::security_support;
use crate::sip_support;

use std::time::Duration;

use security_support::{header, offer, status, RawSip, Request};
use sip_support::{Node, Script};
use switchboard::sip::SipOptions;

const DEMO: &str = "+15555550100";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_received_and_rport_cannot_aim_responses_at_another_address() {
    let node = Node::start().await;
    let victim = security_support::Listener::bind("127.0.0.3:0").await;
    let sip = RawSip::bind("127.0.0.1", node.addr()).await;
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // The INVITE: the Via's host is the real source, but it claims
    // `received` and `rport` of an address that never spoke.
    let mut invite = Request::invite(
        DEMO,
        node.addr(),
        sip.local(),
        offer(rtp.local_addr().unwrap()),
    );
    invite.via = format!(
        "SIP/2.0/UDP {};branch={};received=127.0.0.3;rport={}",
        sip.local(),
        security_support::branch(),
        victim.addr.port()
    );
    sip.send(&invite.text()).await;
    let answer = sip.final_response(Duration::from_secs(5)).await;
    // The same trick on requests answered without routing.
    let mut options = Request::invite("options", node.addr(), sip.local(), String::new());
    options.method = "OPTIONS".into();
    options.via = invite.via.replace("branch=", "branch=z9hG4bKo");
    sip.send(&options.text()).await;
    let options_answer = sip.final_response(Duration::from_secs(3)).await;
    let mut stray = options.clone();
    stray.method = "BYE".into();
    stray.to = format!("{};tag=nosuchdialog", stray.to);
    stray.via = invite.via.replace("branch=", "branch=z9hG4bKs");
    sip.send(&stray.text()).await;
    let stray_answer = sip.final_response(Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        victim.count(),
        0,
        "{} datagrams reached 127.0.0.3, which never spoke",
        victim.count()
    );
    let answer = answer.expect("the INVITE's answer reached its real source");
    assert_eq!(status(&answer), Some(200), "{answer}");
    let via = header(&answer, "Via").unwrap_or("");
    assert!(
        via.contains("received=127.0.0.1") && !via.contains("127.0.0.3"),
        "received is the node's to set: {via}"
    );
    assert!(
        via.contains(&format!("rport={}", sip.local().port())),
        "rport names the port the request came from: {via}"
    );
    assert_eq!(options_answer.as_deref().and_then(status), Some(200));
    assert_eq!(stray_answer.as_deref().and_then(status), Some(481));
    sip.send(&invite.ack(&answer).text()).await;
    sip.send(&invite.bye(&answer, sip.local()).text()).await;
    let _ = sip.final_response(Duration::from_secs(3)).await;
}

/// A node whose demo trunk admits only 127.0.0.1 by address, plus a trunk
/// that admits anyone with its credentials: 127.0.0.2 is then a stranger
/// the node must still answer (it might know the password).
async fn stranger_node(options: SipOptions) -> Node {
    let node = Node::start_with(options, Script::Hold).await;
    node.sql(
        "update sip_trunks set inbound_cidrs = '{127.0.0.1/32}';
         insert into sip_trunks (workspace_id, name, inbound_cidrs, inbound_username, inbound_password)
         select workspace_id, 'open-digest', '{}', 'trunkuser', 'trunkpass' from sip_trunks where name = 'local';",
    )
    .await;
    node
}

fn bye_without_dialog(sip: &RawSip, n: usize) -> String {
    let mut r = Request::invite(DEMO, sip.server, sip.local(), String::new());
    r.method = if n.is_multiple_of(2) {
        "BYE"
    } else {
        "MESSAGE"
    }
    .into();
    r.to = format!("{};tag=gone{n}", r.to);
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stray_requests_gets_rate_limited_answers_and_a_bounded_map() {
    let node = Node::start().await;
    let sip = RawSip::bind("127.0.0.2", node.addr()).await;
    let flood = 3000;
    let started = std::time::Instant::now();
    let mut answers = 0;
    for n in 0..flood {
        sip.send(&bye_without_dialog(&sip, n)).await;
        if n % 100 == 99 {
            answers += sip.drain(Duration::from_millis(10)).await.len();
        }
    }
    answers += sip.drain(Duration::from_millis(1000)).await.len();
    let secs = started.elapsed().as_secs_f64();
    let txs = node.server.server_transactions();
    // Another source is not starved by the flood of the first.
    let other = RawSip::bind("127.0.0.4", node.addr()).await;
    let mut options = Request::invite("options", node.addr(), other.local(), String::new());
    options.method = "OPTIONS".into();
    other.send(&options.text()).await;
    let other_answer = other.final_response(Duration::from_secs(3)).await;
    eprintln!("{flood} stray requests in {secs:.1} s: {answers} answers, {txs} transactions held");
    assert!(
        answers <= 200 + (secs * 60.0) as usize,
        "{answers} answers to {flood} stray requests in {secs:.1} s"
    );
    assert!(answers > 0, "the first stray requests are still answered");
    assert!(
        txs <= SipOptions::default().max_server_txs_per_source,
        "{txs} server transactions held for one source"
    );
    assert_eq!(other_answer.as_deref().and_then(status), Some(200));
    let counters = node.server.counters();
    assert!(counters.responses_rate_limited > 0, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_map_is_capped_per_source_with_503_and_retry_after() {
    // A generous answer budget, so the transaction cap is what binds.
    let options = SipOptions {
        max_server_txs_per_source: 64,
        stranger_answer_burst: 10_000.0,
        ..SipOptions::default()
    };
    let node = stranger_node(options).await;
    let sip = RawSip::bind("127.0.0.2", node.addr()).await;
    let mut answers = Vec::new();
    for n in 0..300 {
        let r = Request::invite(
            &format!("+1555555{:04}", 1000 + n),
            node.addr(),
            sip.local(),
            String::new(),
        );
        sip.send(&r.text()).await;
        if n % 50 == 49 {
            answers.extend(sip.drain(Duration::from_millis(50)).await);
        }
    }
    answers.extend(sip.drain(Duration::from_millis(1500)).await);
    let txs = node.server.server_transactions();
    assert!(txs <= 64, "{txs} transactions held for one source");
    let busy: Vec<&String> = answers.iter().filter(|m| status(m) == Some(503)).collect();
    eprintln!(
        "300 INVITEs: {} answers, {} of them 503, {txs} transactions held",
        answers.len(),
        busy.len()
    );
    assert!(!busy.is_empty(), "no 503 once the source's share was full");
    assert!(
        busy.iter().all(|m| header(m, "Retry-After").is_some()),
        "503 without Retry-After"
    );
    // The legitimate trunk's address is not affected.
    let trusted = RawSip::bind("127.0.0.1", node.addr()).await;
    let mut options = Request::invite("options", node.addr(), trusted.local(), String::new());
    options.method = "OPTIONS".into();
    trusted.send(&options.text()).await;
    let answer = trusted.final_response(Duration::from_secs(3)).await;
    assert_eq!(answer.as_deref().and_then(status), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_rejections_are_counted_not_written_as_calls() {
    let node = stranger_node(SipOptions::default()).await;
    let sip = RawSip::bind("127.0.0.2", node.addr()).await;
    // Unknown numbers: 404 (the stranger passed no check at all).
    for n in 0..20 {
        let r = Request::invite(
            &format!("+1555555{:04}", 2000 + n),
            node.addr(),
            sip.local(),
            String::new(),
        );
        sip.send(&r.text()).await;
        let a = sip
            .final_response(Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(status(&a), Some(404), "{a}");
        sip.send(&r.ack(&a).text()).await;
    }
    // A known number of the open trunk with a wrong password: 403.
    node.sql(
        "insert into phone_numbers (workspace_id, e164, sip_trunk_id, agent_id)
         select t.workspace_id, '+15555550111', t.id, p.agent_id from sip_trunks t, phone_numbers p
         where t.name = 'open-digest' and p.e164 = '+15555550100'",
    )
    .await;
    for _ in 0..5 {
        let mut r = Request::invite("+15555550111", node.addr(), sip.local(), String::new());
        sip.send(&r.text()).await;
        let challenge = sip
            .final_response(Duration::from_secs(5))
            .await
            .expect("401");
        assert_eq!(status(&challenge), Some(401), "{challenge}");
        sip.send(&r.ack(&challenge).text()).await;
        let auth = switchboard::sip::digest::answer_challenge(
            header(&challenge, "WWW-Authenticate").unwrap(),
            "INVITE",
            &r.uri,
            "trunkuser",
            "wrong",
            "c0ffee",
            1,
        )
        .unwrap();
        r.cseq = 2;
        r.via = format!(
            "SIP/2.0/UDP {};branch={};rport",
            sip.local(),
            security_support::branch()
        );
        r.extra.push(format!("Authorization: {auth}"));
        sip.send(&r.text()).await;
        let a = sip
            .final_response(Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(status(&a), Some(403), "{a}");
        sip.send(&r.ack(&a).text()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = node.rows().await;
    assert!(
        rows.is_empty(),
        "unauthenticated attempts became call_logs rows: {rows:?}"
    );
    let counters = node.server.counters();
    assert_eq!(counters.unauthenticated_rejections, 25, "{counters:?}");
}
