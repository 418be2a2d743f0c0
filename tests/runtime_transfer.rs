//! Transfer on request: the caller asks for a person in their own words
//! ("Can I speak to a person, please?", Piper voice); the demo agent has
//! `transfer_to` (+15555550199) and escalation policy `transfer`, so the
//! node sends a blind-transfer REFER to the caller's side, which accepts it
//! (202, NOTIFY sipfrag 200) and gets the BYE. The call is `transferred`,
//! the session `escalated`.

mod common;

use std::time::Duration;

use common::node::{poll, speech_8k, start_node};
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_person_transfers_the_call_by_refer() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let transfer_to: String =
        sqlx::query_scalar("select transfer_to from agents where name = 'Reception'")
            .fetch_one(&db.pool)
            .await
            .expect("agent");
    assert_eq!(transfer_to, "+15555550199", "seed changed");
    let node = start_node(&db.url, &db.pool, 39600, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Can I speak to a person, please?");

    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    let asked = caller.say_and_wait(&question).await;
    let refer = caller
        .wait_request("REFER", Duration::from_secs(15))
        .await
        .expect("no REFER within 15 s of asking for a person");
    println!(
        "REFER {} ms after the question ended",
        refer.at.saturating_duration_since(asked).as_millis()
    );
    let refer_to = refer
        .text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("refer-to:") || l.starts_with("r:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        refer_to.contains("+15555550199"),
        "Refer-To: {refer_to:?}\n{}",
        refer.text
    );
    // The agent said it would transfer before it did.
    assert!(
        caller
            .first_voice_after(asked)
            .is_some_and(|t| t <= refer.at),
        "the caller heard nothing before the transfer"
    );
    let bye = caller
        .wait_request("BYE", Duration::from_secs(10))
        .await
        .expect("the node hangs up after the accepted transfer");
    assert!(bye.at >= refer.at);

    let (status, session_status): (String, Option<String>) = poll(Duration::from_secs(10), || async {
        sqlx::query_as(
            "select c.status, s.status from call_logs c left join agent_sessions s on s.id = c.session_id
             where c.ended_at is not null and s.ended_at is not null",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("call_logs")
    })
    .await
    .expect("the call's records were finished");
    assert_eq!(status, "transferred");
    assert_eq!(session_status.as_deref(), Some("escalated"));
    node.stop(Duration::from_secs(1)).await;
}
