//! Barge-in, measured on the RTP itself: a caller (our own SIP/RTP socket,
//! one clock for what it sends and what it hears) starts talking about 1 s
//! into the agent's long greeting. The agent's audio must stop within
//! 200 ms of the caller's speech onset (playout is held at the onset and
//! flushed once the speech outlasts `turn.barge_in_min_ms`), and the
//! greeting is stored as interrupted with only the words that played. A
//! 300 ms "mm-hm" during the greeting must not interrupt it: the greeting
//! pauses briefly and plays on, every word of it.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{ended_session, poll, session_messages, speech_8k, start_node};
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;
use switchboard::media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};

/// One long sentence (several seconds in the agent's voice), so the agent is surely
/// still speaking 1 s in and its own pauses are short comma pauses.
const LONG_GREETING: &str =
    "Thanks for calling Bluebird Dental, where our friendly team has cared \
for families in Springfield for twenty years, so please tell me how I can help you today";

async fn node_with_long_greeting(db: &TestDb, rtp_base: u16) -> switchboard::serve::Services {
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    sqlx::query("update personas set greeting = $1")
        .bind(LONG_GREETING)
        .execute(&db.pool)
        .await
        .expect("long greeting");
    start_node(&db.url, &db.pool, rtp_base, &[]).await
}

/// Messages of the (only) session once it has ended: (role, content, interrupted).
async fn final_messages(db: &TestDb) -> Vec<(String, String, bool)> {
    let session = ended_session(&db.pool).await;
    // The last records are queued with the session end; give the writer a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    session_messages(&db.pool, session).await
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_speech_stops_the_agent_and_keeps_only_the_words_played() {
    common::node::init_logs();
    let db = TestDb::new().await;
    let node = node_with_long_greeting(&db, 37000).await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(
        dir.path(),
        "question",
        "Sorry to interrupt, what time do you open on Saturday?",
    );

    let caller = SipCaller::dial(node.sip.local_addr(), "+15555550100").await;
    let greeting_at = caller
        .wait_agent_voice(caller.answered_at, Duration::from_secs(10))
        .await
        .expect("the greeting starts within 10 s of answer");
    tokio::time::sleep_until((greeting_at + Duration::from_millis(1000)).into()).await;
    let speak_at = Instant::now();
    let asked = caller.say_and_wait(&question).await;
    // The question is a turn of its own: the agent answers it.
    let answered = caller
        .wait_agent_voice(asked, Duration::from_secs(20))
        .await
        .is_some();
    let onset = caller
        .first_sent_voice_after(speak_at)
        .expect("the caller's speech was sent");
    assert!(
        caller.agent_speaking_at(onset),
        "the agent was not speaking when the caller started"
    );
    let stop_ms = caller
        .agent_stop_ms_after(onset)
        .expect("the agent's audio stopped");
    println!("barge-in: agent audio stopped {stop_ms} ms after the caller's speech onset");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(caller.hangup().await, "BYE answered");
    assert!(
        answered,
        "no answer to the interrupting question within 20 s"
    );

    let messages = final_messages(&db).await;
    let greeting = messages
        .iter()
        .find(|m| m.0 == "assistant")
        .expect("the greeting was stored");
    assert!(greeting.2, "greeting not marked interrupted: {messages:?}");
    let played = words(&greeting.1);
    let full = words(LONG_GREETING);
    assert!(
        !played.is_empty() && played.len() < full.len() / 2 && full.starts_with(&played),
        "only the words played (about 1 s of {} words) should be stored: {:?}",
        full.len(),
        greeting.1
    );
    // The interruption is one turn, or two when the agent answered "Sorry
    // to interrupt." before the caller went on; either way each word the
    // caller said is recorded once.
    let user: Vec<&str> = messages
        .iter()
        .filter(|m| m.0 == "user")
        .map(|m| m.1.as_str())
        .collect();
    let heard = words(&user.join(" "));
    assert!(heard.iter().any(|w| w == "saturday"), "transcript {user:?}");
    assert_eq!(
        heard.iter().filter(|w| *w == "interrupt").count(),
        1,
        "the opening recorded once: {user:?}"
    );
    assert!(
        stop_ms <= 200,
        "agent audio stopped {stop_ms} ms after the caller's speech onset (limit 200 ms)"
    );
    node.stop(Duration::from_secs(1)).await;
}

/// "Uh-huh" in the caller's voice, leading silence removed, cut to 300 ms
/// (the voice's closed-mouth "mm hm" is a hum the VAD does not take for speech).
fn backchannel_8k(dir: &std::path::Path) -> Vec<i16> {
    let raw = common::speech_wav(dir, "mmhm-raw", "Uh-huh.", 0, 0);
    let out = dir.join("mmhm.wav");
    common::run(
        Command::new("sox")
            .arg(&raw)
            .arg(&out)
            .args(["silence", "1", "0.01", "1%", "trim", "0", "0.3"]),
    );
    let (pcm, rate) = common::read_wav(&out);
    assert_eq!(rate, 8000);
    assert!(
        (2200..=2400).contains(&pcm.len()),
        "backchannel is {} samples",
        pcm.len()
    );
    // The node's own endpointer hears it as speech: not interrupting is a
    // decision, not deafness. As on the call, a quiet line comes first (the
    // endpointer learns the background from it).
    let pcm16 = common::wav_16k(&out);
    let mut ep = Endpointer::new(EndpointConfig::default());
    let t0 = Instant::now();
    let mut started = false;
    let silence = vec![0i16; 320 * 50];
    for (i, frame) in silence
        .iter()
        .chain(pcm16.iter())
        .chain(silence.iter())
        .copied()
        .collect::<Vec<_>>()
        .chunks(320)
        .enumerate()
    {
        let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
        started |= ep
            .push(frame, now)
            .iter()
            .any(|e| matches!(e, EndpointEvent::SpeechStarted { .. }));
    }
    assert!(
        started,
        "the endpointer does not hear the backchannel as speech"
    );
    pcm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_backchannel_does_not_interrupt() {
    common::node::init_logs();
    let db = TestDb::new().await;
    let node = node_with_long_greeting(&db, 37400).await;
    let dir = tempfile::tempdir().expect("tmp");
    let mmhm = backchannel_8k(dir.path());

    let caller = SipCaller::dial(node.sip.local_addr(), "+15555550100").await;
    let greeting_at = caller
        .wait_agent_voice(caller.answered_at, Duration::from_secs(10))
        .await
        .expect("the greeting starts within 10 s of answer");
    tokio::time::sleep_until((greeting_at + Duration::from_millis(1000)).into()).await;
    let speak_at = Instant::now();
    caller.say(&mmhm);

    // The greeting holds for the backchannel and goes on: no silence of
    // 600 ms for the next 3 s.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let onset = caller
        .first_sent_voice_after(speak_at)
        .expect("the backchannel was sent");
    if let Some(end) = caller.voice_end_after(onset, Duration::from_millis(600)) {
        assert!(
            end >= onset + Duration::from_millis(3000),
            "agent audio stopped {} ms after a 300 ms backchannel",
            end.saturating_duration_since(onset).as_millis()
        );
    }
    if let Some(held) = caller.voice_end_after(onset, Duration::from_millis(100)) {
        if let Some(again) = caller.first_voice_after(held + Duration::from_millis(1)) {
            println!(
                "backchannel: first pause in the agent's audio {}–{} ms after its onset",
                held.saturating_duration_since(onset).as_millis(),
                again.saturating_duration_since(onset).as_millis()
            );
        }
    }
    // Let the greeting finish, then hang up.
    let end = poll(Duration::from_secs(15), || async {
        caller.voice_end_after(onset, Duration::from_millis(800))
    })
    .await
    .expect("the greeting ended within 15 s");
    println!(
        "backchannel: greeting went on for {} ms after it",
        end.saturating_duration_since(onset).as_millis()
    );
    assert!(caller.hangup().await, "BYE answered");

    let messages = final_messages(&db).await;
    let greeting = messages
        .iter()
        .find(|m| m.0 == "assistant")
        .expect("the greeting was stored");
    assert!(
        !greeting.2,
        "the backchannel interrupted the greeting: {messages:?}"
    );
    assert_eq!(
        words(&greeting.1),
        words(LONG_GREETING),
        "the whole greeting played"
    );
    assert!(
        messages.iter().all(|m| m.0 != "user"),
        "a backchannel is not a turn: {messages:?}"
    );
    node.stop(Duration::from_secs(1)).await;
}
