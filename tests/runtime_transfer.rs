//! Transfer on request: the caller asks for a person in their own words
//! ("Can I speak to a person, please?", Piper voice); the demo agent has
//! `transfer_to` (+15555550199) and escalation policy `transfer`, so the
//! node sends a blind-transfer REFER to the caller's side, which accepts it
//! (202, NOTIFY sipfrag 200) and gets the BYE. The call is `transferred`,
//! the session `escalated`.

use crate::common;

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

/// A transfer the carrier cannot make: the caller asks for a person, the
/// agent announces the transfer and sends REFER (to a `tel:` target, kept
/// as configured), the caller's side refuses it (`refer_code`) or accepts
/// it and then reports `report` in its NOTIFY. The caller must then hear
/// the agent's transfer-failed line (whisper on what it received), and a
/// next question must be answered: no dead air, no hang-up.
async fn failed_transfer_is_said_and_the_call_goes_on(
    refer_code: u16,
    report: u16,
    rtp_base: u16,
    outcome: &str,
) {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    sqlx::query("update agents set transfer_to = 'tel:+15555550199' where name = 'Reception'")
        .execute(&db.pool)
        .await
        .expect("agent");
    let node = start_node(&db.url, &db.pool, rtp_base, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Can I speak to a person, please?");
    let next = speech_8k(dir.path(), "n", "What are your opening hours?");
    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    caller.answer_refer_with(refer_code, report);
    caller.say_and_wait(&question).await;
    let refer = caller
        .wait_request("REFER", Duration::from_secs(15))
        .await
        .expect("no REFER within 15 s of asking for a person");
    assert!(
        refer.text.contains("Refer-To: <tel:+15555550199>"),
        "{}",
        refer.text
    );
    assert!(refer.text.contains("Referred-By: <sip:"), "{}", refer.text);
    let (start, end) = caller
        .wait_agent_speech(
            refer.at,
            Duration::from_millis(900),
            Duration::from_secs(15),
        )
        .await
        .expect("the agent said nothing after the failed transfer: dead air");
    println!(
        "failure line {} ms after the REFER",
        start.saturating_duration_since(refer.at).as_millis()
    );
    let heard = common::caller_voice::hear_16k(&upsample(&caller.received_pcm(start, end)))
        .await
        .to_lowercase();
    println!("caller heard: {heard:?}");
    assert!(
        heard.contains("transfer") && heard.contains("sorry"),
        "the caller did not hear the failure line: {heard:?}"
    );

    let asked = caller.say_and_wait(&next).await;
    assert!(
        caller
            .wait_agent_speech(asked, Duration::from_millis(900), Duration::from_secs(20))
            .await
            .is_some(),
        "the next question was not answered"
    );
    assert!(
        caller.request("BYE").is_none(),
        "the node hung up after a failed transfer"
    );
    caller.hangup().await;

    let session = common::node::ended_session(&db.pool).await;
    let messages = common::node::session_messages(&db.pool, session).await;
    let failed_at = messages
        .iter()
        .position(|(role, content, _)| {
            role == "assistant" && content.starts_with("I am sorry, I could not transfer you")
        })
        .unwrap_or_else(|| panic!("no failure line in the messages: {messages:?}"));
    let asked_at = messages[failed_at..]
        .iter()
        .position(|(role, content, _)| role == "user" && content.to_lowercase().contains("hours"))
        .map(|i| failed_at + i)
        .unwrap_or_else(|| panic!("the next question is not in the messages: {messages:?}"));
    assert!(
        messages[asked_at..].iter().any(|m| m.0 == "assistant"),
        "the next question got no answer: {messages:?}"
    );
    let row: (String, Option<String>, Option<String>, Option<i32>) = poll(
        Duration::from_secs(10),
        || async {
            sqlx::query_as(
                "select status, transfer_target, transfer_outcome, transfer_sip_code from call_logs \
                 where ended_at is not null",
            )
            .fetch_optional(&db.pool)
            .await
            .expect("call_logs")
        },
    )
    .await
    .expect("the call's row was finished");
    assert_eq!(
        row,
        (
            "completed".to_string(),
            Some("tel:+15555550199".to_string()),
            Some(outcome.to_string()),
            Some(i32::from(if refer_code >= 300 {
                refer_code
            } else {
                report
            })),
        )
    );
    node.stop(Duration::from_secs(1)).await;
}

/// 8 kHz → 16 kHz by repeating samples (enough for the recognizer).
fn upsample(pcm_8k: &[i16]) -> Vec<i16> {
    pcm_8k.iter().flat_map(|&s| [s, s]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_refused_403_is_said_and_the_next_question_answered() {
    failed_transfer_is_said_and_the_call_goes_on(403, 0, 55000, "refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_503_is_said_and_the_next_question_answered() {
    failed_transfer_is_said_and_the_call_goes_on(202, 503, 55200, "failed").await;
}
