//! Session timers (RFC 4028) against SIPp: a far end that asked to refresh
//! and never does is hung up with BYE 60 s into a 90 s session, the end
//! recorded (`hangup_by = system`, `session timer expired`); when the node
//! is the refresher it sends an UPDATE at half the interval; an interval
//! below Min-SE gets 422 with Min-SE and the retry is answered. The first
//! two take a minute each of real time (90 s is the smallest interval RFC
//! 4028 allows); the state machine itself is unit-tested on a simulated
//! clock (`src/sip/session_timer.rs`). Ports 53600–53799.

use crate::secure_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use secure_support::*;

fn node_addr(base: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_end_that_never_refreshes_is_hung_up_before_expiry() {
    init_logs();
    let base = ports(53_600, 61);
    let node = SecureNode::start(base, MediaHandler::default(), &[]).await;
    let started = Instant::now();
    let run = sipp_run(
        node_addr(base),
        "uac_session_timer_expiry.xml",
        ports(53_670, 2),
        ports(53_672, 4),
    )
    .await;
    let took = started.elapsed();
    run.assert_ok();
    let rows = node.final_rows(1, Duration::from_secs(10)).await;
    let row = &rows[0];
    println!("session timer expiry: BYE after {took:?}; {row:?}");
    assert_eq!(row.status, "completed", "{rows:?}");
    assert_eq!(row.hangup_by.as_deref(), Some("system"));
    assert_eq!(row.hangup_reason.as_deref(), Some("session timer expired"));
    let ms = row.duration_ms.expect("duration");
    assert!(
        (58_000..=64_000).contains(&ms),
        "BYE at 60 s of a 90 s session, not {ms} ms"
    );
    let call = node.handler.call(0);
    let hangup = call.hangup.lock().unwrap().clone();
    assert!(
        hangup.is_some_and(|(_, reason)| reason == "session timer expired"),
        "the runtime is told why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_refresher_the_node_sends_update_at_half_the_interval() {
    init_logs();
    let base = ports(53_700, 61);
    let node = SecureNode::start(base, MediaHandler::default(), &[]).await;
    let run = sipp_run(
        node_addr(base),
        "uac_session_timer_refresh.xml",
        ports(53_770, 2),
        ports(53_772, 4),
    )
    .await;
    run.assert_ok();
    let rows = node.final_rows(1, Duration::from_secs(10)).await;
    let row = &rows[0];
    println!("refresher: {row:?}");
    assert_eq!(
        (row.status.as_str(), row.hangup_by.as_deref()),
        ("completed", Some("caller"))
    );
    // SIPp hangs up right after answering our UPDATE, sent at 45 s.
    let ms = row.duration_ms.expect("duration");
    assert!(
        (44_000..=50_000).contains(&ms),
        "UPDATE at 45 s, call ended at {ms} ms"
    );
    assert!(
        run.messages.contains("UPDATE sip:sipp@"),
        "{}",
        run.messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_below_min_se_gets_422_and_the_retry_is_answered() {
    init_logs();
    let base = ports(53_800, 61);
    let node = SecureNode::start(base, MediaHandler::default(), &[]).await;
    let run = sipp_run(
        node_addr(base),
        "uac_session_timer_422.xml",
        ports(53_870, 2),
        ports(53_872, 4),
    )
    .await;
    run.assert_ok();
    let rows = node.final_rows(1, Duration::from_secs(10)).await;
    assert_eq!(rows.len(), 1, "the 422 is not a call: {rows:?}");
    assert_eq!(rows[0].status, "completed");
}
