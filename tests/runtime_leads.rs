//! Leads from real calls: a caller (in-process SIP/RTP peer, Piper voice
//! heard by the node's whisper) gives a name, an email address and a
//! phone number over three turns; when the call ends one `leads` row holds
//! all three, tied to the call's session and agent. A caller who only asks
//! a question leaves no lead.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::node::{demo_agent, poll, start_node};
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

/// The caller's speech (Piper voice) as 8 kHz samples.
fn speech(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    common::node::speech_8k(dir, name, text)
}

/// Says each line after the agent's previous speech has ended, then hangs up.
async fn call(node: &switchboard::serve::Services, lines: &[Vec<i16>]) {
    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    for (i, line) in lines.iter().enumerate() {
        let said = caller.say_and_wait(line).await;
        caller
            .wait_agent_speech(said, Duration::from_millis(1200), Duration::from_secs(25))
            .await
            .unwrap_or_else(|| panic!("no answer to line {i}"));
    }
    assert!(caller.hangup().await, "BYE answered");
}

/// The session of the call whose caller said `words` (ended), once written.
async fn session_with(db: &TestDb, words: &str) -> Uuid {
    poll(Duration::from_secs(15), || async {
        sqlx::query_scalar(
            "select s.id from agent_sessions s join messages m on m.session_id = s.id
             where s.ended_at is not null and m.role = 'user' and lower(m.content) like $1
             limit 1",
        )
        .bind(format!("%{words}%"))
        .fetch_optional(&db.pool)
        .await
        .expect("sessions")
    })
    .await
    .unwrap_or_else(|| panic!("no ended session where the caller said {words:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_gives_contact_details_becomes_one_lead() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let node = start_node(&db.url, &db.pool, 40800, &[]).await;
    let (agent_id, workspace_id) = demo_agent(&db.pool).await;
    let dir = tempfile::tempdir().expect("tmp");

    // A question only: no lead.
    call(
        &node,
        &[speech(
            dir.path(),
            "hours",
            "What time do you open on Saturday?",
        )],
    )
    .await;
    let asked = session_with(&db, "saturday").await;

    call(
        &node,
        &[
            // "My name is Mary Smith." alone makes whisper tiny repeat it
            // until its token limit in a call; the greeting word does not.
            speech(dir.path(), "name", "Hello, my name is Mary Smith."),
            speech(dir.path(), "email", "My email is mary at example dot com."),
            speech(
                dir.path(),
                "phone",
                "My phone number is 6 1 7 4 9 2 3 0 4 1.",
            ),
        ],
    )
    .await;
    let gave = session_with(&db, "mary").await;
    let heard: Vec<String> = sqlx::query_scalar(
        "select content from messages where session_id = $1 and role = 'user' order by created_at",
    )
    .bind(gave)
    .fetch_all(&db.pool)
    .await
    .expect("messages");
    println!("the caller was heard as {heard:?}");

    type LeadRow = (
        Uuid,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        serde_json::Value,
    );
    let leads: Vec<LeadRow> = poll(Duration::from_secs(10), || async {
        let rows: Vec<LeadRow> = sqlx::query_as(
            "select workspace_id, agent_id, session_id, name, email, phone, channel, metadata from leads",
        )
        .fetch_all(&db.pool)
        .await
        .expect("leads");
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("a lead was written");
    // Records are queued in order: nothing more is coming for either call.
    assert!(node.runtime.records.flush(Duration::from_secs(10)).await);
    let leads: Vec<LeadRow> = sqlx::query_as(
        "select workspace_id, agent_id, session_id, name, email, phone, channel, metadata from leads",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap_or(leads);
    assert_eq!(leads.len(), 1, "one lead for the two calls: {leads:?}");
    let (ws, agent, session, name, email, phone, channel, metadata) = leads[0].clone();
    assert_eq!(ws, workspace_id);
    assert_eq!(agent, Some(agent_id));
    assert_eq!(session, Some(gave), "the lead belongs to the second call");
    assert_ne!(session, Some(asked));
    assert_eq!(name.as_deref(), Some("Mary Smith"), "heard {heard:?}");
    assert_eq!(
        email.as_deref(),
        Some("mary@example.com"),
        "heard {heard:?}"
    );
    assert_eq!(phone.as_deref(), Some("+16174923041"), "heard {heard:?}");
    assert_eq!(channel.as_deref(), Some("phone"));
    let call_log: Uuid = sqlx::query_scalar("select id from call_logs where session_id = $1")
        .bind(gave)
        .fetch_one(&db.pool)
        .await
        .expect("the call's log");
    assert_eq!(
        metadata["call_log_id"],
        serde_json::json!(call_log.to_string())
    );
    node.stop(Duration::from_secs(1)).await;
}
