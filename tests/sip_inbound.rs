//! Inbound SIP as trunks see it: real SIPp against a SIP server on its own
//! port with its own seeded database; every DESIGN.md answer, checked on
//! SIPp's exit code and on the call_logs rows.

use crate::sip_support;

use std::time::Duration;

use sip_support::{sipp, Node, Script};
use switchboard::media::Codec;
use switchboard::sip::call::{CallEvent, HangupBy};
use switchboard::sip::SipOptions;

const DEMO: &str = "+15555550100";

async fn demo_call(transport: &str) {
    let node = Node::start().await;
    let run = sipp(
        node.addr(),
        "uac_call.xml",
        DEMO,
        &["-t", transport, "-d", "2000"],
    )
    .await;
    run.assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.status, "completed", "{row:?}");
    assert_eq!(row.sip_code, Some(200));
    assert_eq!(row.hangup_by.as_deref(), Some("caller"));
    assert!(row.duration_ms.unwrap_or(0) >= 1500, "duration {row:?}");
    assert_eq!(row.codec.as_deref(), Some("PCMU"));
    assert_eq!(row.to_number.as_deref(), Some(DEMO));
    assert_eq!(row.from_number.as_deref(), Some("+15550001111"));
    assert_eq!(row.node_id.as_deref(), Some("test-node"));
    let seen = node.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.call_log_id, row.id);
    assert_eq!(
        (
            call.media.codec,
            call.media.payload_type,
            call.media.telephone_event_pt
        ),
        (Codec::Pcmu, 0, Some(101))
    );
    assert!(
        call.rtp_packets.load(std::sync::atomic::Ordering::Relaxed) > 10,
        "RTP from SIPp reached the call's socket"
    );
    node.wait_idle().await;
    let events = call.events.lock().unwrap().clone();
    assert!(
        matches!(
            events.last(),
            Some(CallEvent::Hangup {
                by: HangupBy::Caller,
                ..
            })
        ),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_number_call_over_udp_completes_with_media_and_record() {
    demo_call("u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_number_call_over_tcp_completes_with_media_and_record() {
    demo_call("t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_number_is_404_and_logged_rejected() {
    let node = Node::start().await;
    sipp(node.addr(), "uac_expect_404.xml", "+15555559999", &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].sip_code),
        ("rejected", Some(404))
    );
    assert!(node.seen().is_empty());
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_replacing_no_dialog_of_ours_is_481() {
    let node = Node::start().await;
    sipp(node.addr(), "uac_expect_481_replaces.xml", DEMO, &[])
        .await
        .assert_ok();
    // Refused before routing: no call, no row.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(node.rows().await.is_empty());
    assert!(node.seen().is_empty());
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_outside_every_trunk_is_403() {
    let node = Node::start().await;
    node.sql("update sip_trunks set inbound_cidrs = '{127.0.0.1/32}'")
        .await;
    sipp(
        node.addr(),
        "uac_expect_403.xml",
        DEMO,
        &["-i", "127.0.0.2"],
    )
    .await
    .assert_ok();
    // The same number from an allowed address still works (the 403 is the source's).
    sipp(node.addr(), "uac_call.xml", DEMO, &["-d", "200"])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows.len(), 1, "a refused source writes no row: {rows:?}");
    assert_eq!(rows[0].status, "completed");
}

async fn digest_node() -> Node {
    let node = Node::start().await;
    node.sql(
        "insert into sip_trunks (workspace_id, name, inbound_cidrs, inbound_username, inbound_password, max_concurrent_calls)
         select workspace_id, 'digest', '{127.0.0.0/8}', 'trunkuser', 'trunkpass', 5 from sip_trunks where name = 'local';
         insert into phone_numbers (workspace_id, e164, sip_trunk_id, agent_id)
         select t.workspace_id, '+15555550101', t.id, p.agent_id from sip_trunks t, phone_numbers p
         where t.name = 'digest' and p.e164 = '+15555550100';",
    )
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_trunk_challenges_then_accepts_right_password() {
    let node = digest_node().await;
    sipp(
        node.addr(),
        "uac_auth.xml",
        "+15555550101",
        &["-au", "trunkuser", "-ap", "trunkpass", "-d", "200"],
    )
    .await
    .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(
        rows.len(),
        1,
        "the challenge itself is not a call: {rows:?}"
    );
    assert_eq!(rows[0].status, "completed");
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_trunk_refuses_wrong_password_with_403() {
    let node = digest_node().await;
    sipp(
        node.addr(),
        "uac_auth_403.xml",
        "+15555550101",
        &["-au", "trunkuser", "-ap", "wrong"],
    )
    .await
    .assert_ok();
    sipp(
        node.addr(),
        "uac_auth_403.xml",
        "+15555550101",
        &["-au", "intruder", "-ap", "trunkpass"],
    )
    .await
    .assert_ok();
    let rows = node.final_rows(2).await;
    assert!(
        rows.iter()
            .all(|r| r.status == "rejected" && r.sip_code == Some(403)),
        "{rows:?}"
    );
    assert!(node.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_agent_is_480() {
    let node = Node::start().await;
    node.sql(
        "insert into agents (workspace_id, name, status) select workspace_id, 'Draft', 'draft' from sip_trunks where name = 'local';
         insert into phone_numbers (workspace_id, e164, sip_trunk_id, agent_id)
         select a.workspace_id, '+15555550102', t.id, a.id from agents a, sip_trunks t where a.name = 'Draft' and t.name = 'local';",
    )
    .await;
    sipp(node.addr(), "uac_expect_480.xml", "+15555550102", &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].sip_code),
        ("rejected", Some(480))
    );
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_at_its_limit_is_486() {
    let node = Node::start().await;
    node.sql("update sip_trunks set max_concurrent_calls = 1")
        .await;
    let addr = node.addr();
    let first =
        tokio::spawn(async move { sipp(addr, "uac_call.xml", DEMO, &["-d", "4000"]).await });
    for _ in 0..100 {
        if !node.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node.seen().len(), 1, "first call answered");
    sipp(node.addr(), "uac_expect_486.xml", DEMO, &[])
        .await
        .assert_ok();
    first.await.unwrap().assert_ok();
    // The slot is released: a third call goes through.
    sipp(node.addr(), "uac_call.xml", DEMO, &["-d", "100"])
        .await
        .assert_ok();
    let rows = node.final_rows(3).await;
    let mut statuses: Vec<_> = rows.iter().map(|r| r.status.as_str()).collect();
    statuses.sort();
    assert_eq!(statuses, vec!["busy", "completed", "completed"]);
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g729_only_offer_is_488() {
    let node = Node::start().await;
    sipp(node.addr(), "uac_expect_488.xml", DEMO, &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].sip_code),
        ("rejected", Some(488))
    );
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_ringing_is_487_and_no_answer() {
    let options = SipOptions {
        answer_delay: Duration::from_secs(5),
        ..SipOptions::default()
    };
    let node = Node::start_with(options, Script::Hold).await;
    sipp(node.addr(), "uac_cancel.xml", DEMO, &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].sip_code),
        ("no_answer", Some(487)),
        "{rows:?}"
    );
    assert!(!rows[0].answered);
    assert!(
        node.seen().is_empty(),
        "a cancelled call never reaches the runtime"
    );
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_200_over_udp_and_tcp() {
    let node = Node::start().await;
    sipp(node.addr(), "uac_options.xml", "options", &[])
        .await
        .assert_ok();
    sipp(node.addr(), "uac_options.xml", "options", &["-t", "t1"])
        .await
        .assert_ok();
    assert!(node.rows().await.is_empty(), "OPTIONS is not a call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_answers_503_and_live_calls_go_on() {
    let node = Node::start().await;
    let addr = node.addr();
    let live = tokio::spawn(async move { sipp(addr, "uac_call.xml", DEMO, &["-d", "3000"]).await });
    for _ in 0..100 {
        if node.server.live_calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.server.start_drain();
    sipp(node.addr(), "uac_expect_503.xml", DEMO, &[])
        .await
        .assert_ok();
    let left = node.server.drain(Duration::from_secs(15)).await;
    assert_eq!(left, 0, "the live call ended by itself within the limit");
    live.await.unwrap().assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hangup_sends_bye() {
    let node = Node::start_with(
        SipOptions::default(),
        Script::HangupAfter(Duration::from_millis(800)),
    )
    .await;
    sipp(node.addr(), "uac_wait_bye.xml", DEMO, &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed");
    assert_eq!(rows[0].hangup_by.as_deref(), Some("agent"));
    assert!(rows[0].duration_ms.unwrap_or(0) >= 700, "{rows:?}");
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_transfer_by_refer() {
    let node = Node::start_with(
        SipOptions::default(),
        Script::TransferAfter(Duration::from_millis(500), "+15555550199".into()),
    )
    .await;
    let run = sipp(node.addr(), "uac_transfer.xml", DEMO, &[]).await;
    run.assert_ok();
    assert!(
        run.messages.contains("Refer-To: <sip:+15555550199@"),
        "REFER carries the target"
    );
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "transferred", "{rows:?}");
    let seen = node.seen();
    let events = seen[0].events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(
            e,
            CallEvent::TransferResult {
                accepted: true,
                sip_code: 200
            }
        )),
        "{events:?}"
    );
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_call_info_dtmf_reinvite_hold_update_refresh_and_prack_refused() {
    let node = Node::start().await;
    sipp(node.addr(), "uac_midcall.xml", DEMO, &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed");
    node.wait_idle().await;
    let seen = node.seen();
    let events = seen[0].events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(
            e,
            CallEvent::Dtmf {
                digit: '5',
                duration_ms: 160
            }
        )),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::MediaChanged { on_hold: true, .. })),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offerless_invite_gets_offer_in_200_and_answer_from_ack() {
    let node = Node::start().await;
    sipp(node.addr(), "uac_offerless.xml", DEMO, &["-d", "1000"])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed");
    node.wait_idle().await;
    let seen = node.seen();
    assert_eq!(seen.len(), 1, "handed over once the ACK brought the answer");
    assert_eq!(
        (
            seen[0].media.codec,
            seen[0].media.payload_type,
            seen[0].media.telephone_event_pt
        ),
        (Codec::Pcma, 8, Some(101))
    );
    assert!(
        seen[0]
            .rtp_packets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_national_trunk_reads_national_numbers_and_the_asserted_caller() {
    let node = Node::start().await;
    // A UK trunk: national numbers have 10 digits after the trunk prefix 0.
    node.sql(
        "update sip_trunks set country_code = 44, national_length = 10; \
         update phone_numbers set e164 = '+442079460000'",
    )
    .await;
    sipp(
        node.addr(),
        "uac_asserted_caller.xml",
        "02079460000",
        &["-d", "500"],
    )
    .await
    .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed", "{:?}", rows[0]);
    assert_eq!(rows[0].to_number.as_deref(), Some("+442079460000"));
    // From is anonymous; the trunk asserted 07700 900123.
    assert_eq!(rows[0].from_number.as_deref(), Some("+447700900123"));
    // It was forwarded from another of the company's numbers.
    let diverted: Option<String> = sqlx::query_scalar("select diverted_from from call_logs")
        .fetch_one(&node.db.pool)
        .await
        .expect("call_logs");
    assert_eq!(diverted.as_deref(), Some("+442079460999"));
    node.wait_idle().await;
}
