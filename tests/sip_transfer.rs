//! Blind transfers as carriers do them, against SIPp in the caller's (the
//! carrier's) place: the node's REFER carries the target exactly as
//! configured (`tel:` stays `tel:`) and a Referred-By; the NOTIFY sipfrag
//! reports are followed (100, 180, then 200 → the node hangs up with BYE;
//! a 503 report or a REFER answered 403 → the call goes on, no BYE), and
//! call_logs keeps the target, mode, outcome and code. A stand-in runtime
//! asks for the transfer (the agent's side is in tests/runtime_transfer.rs).

use crate::sip_support;

use std::time::Duration;

use sip_support::{sipp, Node, Script};
use switchboard::sip::call::CallEvent;
use switchboard::sip::SipOptions;

const DEMO: &str = "+15555550100";
const TARGET: &str = "tel:+15555550199";

/// (target, mode, outcome, code) of the only call.
async fn transfer_columns(
    node: &Node,
) -> (Option<String>, Option<String>, Option<String>, Option<i32>) {
    for _ in 0..50 {
        let row: (Option<String>, Option<String>, Option<String>, Option<i32>) = sqlx::query_as(
            "select transfer_target, transfer_mode, transfer_outcome, transfer_sip_code from call_logs",
        )
        .fetch_one(&node.db.pool)
        .await
        .expect("call_logs");
        if row.2.is_some() {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no transfer outcome in call_logs");
}

fn transfer_results(node: &Node) -> Vec<(bool, u16)> {
    node.seen()[0]
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            CallEvent::TransferResult { accepted, sip_code } => Some((*accepted, *sip_code)),
            _ => None,
        })
        .collect()
}

async fn node() -> Node {
    Node::start_with(
        SipOptions::default(),
        Script::TransferAfter(Duration::from_millis(500), TARGET.into()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tel_target_kept_progress_followed_and_the_node_hangs_up() {
    let node = node().await;
    // The scenario checks Refer-To <tel:+15555550199> and Referred-By itself.
    let run = sipp(node.addr(), "uac_transfer_tel_ok.xml", DEMO, &[]).await;
    run.assert_ok();
    let refer = run
        .messages
        .split("\n\n")
        .find(|m| m.contains("REFER sip:"))
        .unwrap_or_default()
        .to_string();
    println!("{refer}");
    assert!(refer.contains("Refer-To: <tel:+15555550199>"), "{refer}");
    assert!(refer.contains("Referred-By: <sip:"), "{refer}");
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "transferred", "{rows:?}");
    assert_eq!(rows[0].hangup_by.as_deref(), Some("agent"));
    assert_eq!(
        transfer_columns(&node).await,
        (
            Some(TARGET.into()),
            Some("blind".into()),
            Some("transferred".into()),
            Some(200)
        )
    );
    assert_eq!(transfer_results(&node), vec![(true, 200)]);
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_report_fails_the_transfer_and_the_call_goes_on() {
    let node = node().await;
    // SIPp fails on any BYE from the node during its 3 s pause.
    sipp(node.addr(), "uac_transfer_notify_503.xml", DEMO, &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}");
    assert_eq!(rows[0].hangup_by.as_deref(), Some("caller"));
    assert_eq!(
        transfer_columns(&node).await,
        (
            Some(TARGET.into()),
            Some("blind".into()),
            Some("failed".into()),
            Some(503)
        )
    );
    assert_eq!(transfer_results(&node), vec![(false, 503)]);
    node.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_refused_403_fails_the_transfer_and_the_call_goes_on() {
    let node = node().await;
    sipp(node.addr(), "uac_transfer_refused.xml", DEMO, &[])
        .await
        .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}");
    assert_eq!(
        transfer_columns(&node).await,
        (
            Some(TARGET.into()),
            Some("blind".into()),
            Some("refused".into()),
            Some(403)
        )
    );
    assert_eq!(transfer_results(&node), vec![(false, 403)]);
    node.wait_idle().await;
}
