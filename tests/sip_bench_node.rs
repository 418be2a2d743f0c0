//! Not a test: the SIP node that `bench/sip-capacity/run.sh --harness`
//! drives with SIPp while `switchboard serve` does not start SIP yet. It
//! runs `SipServer` with a fresh seeded database (call_logs written for
//! real) and a stand-in runtime that holds each call until BYE, writes its
//! address to $SIP_BENCH_ADDR_FILE, and stops when $SIP_BENCH_STOP_FILE
//! appears (or after $SIP_BENCH_SECONDS).

use crate::sip_support;

use std::time::Duration;

use sip_support::{Node, Script};
use switchboard::sip::SipOptions;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark node, started by bench/sip-capacity/run.sh"]
async fn bench_node() {
    let addr_file = std::env::var("SIP_BENCH_ADDR_FILE").expect("SIP_BENCH_ADDR_FILE");
    let stop_file = std::env::var("SIP_BENCH_STOP_FILE").expect("SIP_BENCH_STOP_FILE");
    let secs: u64 = std::env::var("SIP_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let node = Node::start_env(
        SipOptions::default(),
        Script::Hold,
        &[("SWITCHBOARD_SIP__MAX_CALLS", "6000")],
    )
    .await;
    node.sql("update sip_trunks set max_concurrent_calls = 100000")
        .await;
    std::fs::write(&addr_file, node.addr().to_string()).expect("write address");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline && !std::path::Path::new(&stop_file).exists() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from call_logs")
        .fetch_one(&node.db.pool)
        .await
        .unwrap();
    println!("bench node: {rows} call_logs rows written");
}
