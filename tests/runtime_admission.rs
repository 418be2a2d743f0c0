//! Admission control on a real node: beyond `admission.max_calls`, or
//! while transcriptions wait too long for the CPU, a new call gets 503 with
//! Retry-After (recorded `failed`) and the calls already up go on; once the
//! node has room again it takes calls.

use crate::common;
use crate::sip_support;

use std::time::Duration;

use common::node::start_node;
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;

const NUMBER: &str = "+15555550100";

async fn refusals(db: &TestDb) -> Vec<(String, Option<i32>, Option<String>)> {
    sqlx::query_as(
        "select status, sip_code, hangup_reason from call_logs where sip_code = 503 order by started_at",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows")
}

/// A SIPp INVITE answered 503 with `Retry-After: {secs}`, and the refusals
/// recorded once the node has written them.
async fn refused_with_retry_after(
    db: &TestDb,
    sip: std::net::SocketAddr,
    secs: u32,
) -> Vec<(String, Option<i32>, Option<String>)> {
    let refused = sip_support::sipp(sip, "uac_expect_503.xml", NUMBER, &[]).await;
    refused.assert_ok();
    assert!(
        refused.messages.contains(&format!("Retry-After: {secs}")),
        "{}",
        refused.messages
    );
    common::node::poll(Duration::from_secs(5), || async {
        let r = refusals(db).await;
        (!r.is_empty()).then_some(r)
    })
    .await
    .expect("the refusal is recorded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_answers_503_with_retry_after_and_keeps_its_call() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let node = start_node(
        &db.url,
        &db.pool,
        43_200,
        &[
            ("SWITCHBOARD_ADMISSION__MAX_CALLS", "1"),
            ("SWITCHBOARD_ADMISSION__RETRY_AFTER_SECS", "7"),
        ],
    )
    .await;
    let sip = node.sip.local_addr();
    let caller = SipCaller::dial(sip, NUMBER).await;
    caller
        .wait_agent_voice(caller.answered_at, Duration::from_secs(10))
        .await
        .expect("the first call is served");

    let rows = refused_with_retry_after(&db, sip, 7).await;
    assert_eq!(
        rows,
        vec![(
            "failed".to_string(),
            Some(503),
            Some("node full".to_string())
        )]
    );
    // The call already up was not touched: it hangs up normally.
    assert!(caller.hangup().await, "the first call was still up");
    let idle = common::node::poll(Duration::from_secs(10), || async {
        (node.sip.live_calls() == 0 && node.runtime.registry.is_empty()).then_some(())
    })
    .await;
    assert!(idle.is_some(), "the first call did not end");

    let served = sip_support::sipp(sip, "uac_short.xml", NUMBER, &[]).await;
    served.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_refuses_new_calls_until_transcriptions_keep_up_again() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let node = start_node(
        &db.url,
        &db.pool,
        43_600,
        &[("SWITCHBOARD_ADMISSION__MAX_STT_WAIT_MS", "800")],
    )
    .await;
    let sip = node.sip.local_addr();
    // The node's own measure, as its transcriptions would have fed it on a
    // saturated CPU (this test process is the node's process).
    for _ in 0..20 {
        switchboard::agent_runtime::admission::record_stt_wait(Duration::from_millis(2_500));
    }
    let rows = refused_with_retry_after(&db, sip, 5).await;
    assert_eq!(rows[0].2.as_deref(), Some("overloaded"));

    // The long waits leave the measure's 10 s window; quick ones follow.
    tokio::time::sleep(switchboard::agent_runtime::admission::WINDOW + Duration::from_millis(500))
        .await;
    for _ in 0..20 {
        switchboard::agent_runtime::admission::record_stt_wait(Duration::from_millis(50));
    }
    let served = sip_support::sipp(sip, "uac_short.xml", NUMBER, &[]).await;
    served.assert_ok();
}
