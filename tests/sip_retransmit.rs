//! A caller that never ACKs our 200: the 200 is retransmitted (T1 doubling,
//! capped at T2) and after 64*T1 the call is torn down with BYE and its
//! call_logs row says why. Takes ~33 s of real time by design (RFC timers).

use crate::sip_support;

use std::time::{Duration, Instant};

use sip_support::{sipp, Node};
use switchboard::sip::call::{CallEvent, HangupBy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_ack_gets_200_retransmitted_then_bye_after_timer_h() {
    let node = Node::start().await;
    let started = Instant::now();
    let run = sipp(
        node.addr(),
        "uac_no_ack.xml",
        "+15555550100",
        &["-timeout", "60s"],
    )
    .await;
    run.assert_ok();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(31),
        "BYE came after {elapsed:?}, before 64*T1"
    );
    assert!(
        elapsed < Duration::from_secs(45),
        "BYE came after {elapsed:?}"
    );
    // Every 200 OK SIPp received for the INVITE (original + retransmissions).
    let received_200s = run
        .messages
        .split("----------------------------------------------")
        .filter(|block| {
            block.contains("message received")
                && block.contains("SIP/2.0 200 OK")
                && block.contains("1 INVITE")
        })
        .count();
    // T1 = 500 ms: 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5 s → about ten retransmissions.
    assert!(
        received_200s >= 8,
        "only {received_200s} 200 OKs reached SIPp:\n{}",
        run.messages
    );
    let rows = node.final_rows(1).await;
    let row = &rows[0];
    assert_eq!(row.status, "failed", "{row:?}");
    assert_eq!(row.hangup_reason.as_deref(), Some("ack timeout"));
    assert_eq!(row.hangup_by.as_deref(), Some("system"));
    let seen = node.seen();
    assert_eq!(
        seen.len(),
        1,
        "the call was handed over when the 200 was sent"
    );
    let events = seen[0].events.lock().unwrap().clone();
    assert!(
        matches!(events.last(), Some(CallEvent::Hangup { by: HangupBy::System, reason }) if reason == "ack timeout"),
        "{events:?}"
    );
    node.wait_idle().await;
}
