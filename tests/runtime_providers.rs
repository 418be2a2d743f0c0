//! Networked providers on a live call, against a mock OpenAI-compatible
//! server in the test: the demo agent's LLM (SSE streaming chat) and TTS go
//! to the mock through `workspace_llm_config` (key encrypted as the API
//! stores it). The caller hears the mock's answer (whisper); a failing and a
//! hanging model give the persona's fallback line, never dead air; and a
//! hangup while the model is still streaming closes the stream at once and
//! writes nothing afterwards.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mock_openai::{
    use_mock_for_demo_agent, use_mock_stt_for_demo_agent, ChatMode, MockServer, ALLOW_LOOPBACK,
};
use common::node::{ended_session, node_config, poll, session_messages, speech_8k, transcribe_wav};
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;

const FALLBACK_POLICY_SQL: &str = "update personas set escalation_policy = 'apologize'";

/// Which of the demo agent's providers go to the mock.
#[derive(Clone, Copy)]
enum Mocked {
    /// The LLM and the voice.
    Models,
    /// Speech-to-text alone; the LLM stays offline.
    Recognizer,
}

async fn node_with_mock(
    db: &TestDb,
    mock: &MockServer,
    rtp_base: u16,
    extra: &[(&str, &str)],
) -> switchboard::serve::Services {
    node_using(db, mock, Mocked::Models, rtp_base, extra).await
}

async fn node_using(
    db: &TestDb,
    mock: &MockServer,
    mocked: Mocked,
    rtp_base: u16,
    extra: &[(&str, &str)],
) -> switchboard::serve::Services {
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let extra = [extra, &[ALLOW_LOOPBACK]].concat();
    let config = node_config(&db.url, rtp_base, &extra);
    match mocked {
        Mocked::Models => use_mock_for_demo_agent(&db.pool, &config, &mock.base_url()).await,
        Mocked::Recognizer => {
            use_mock_stt_for_demo_agent(&db.pool, &config, &mock.base_url()).await
        }
    }
    let node = switchboard::serve::start(Arc::new(config), db.pool.clone())
        .await
        .expect("node starts");
    common::node::warmed_up(&node).await;
    node
}

/// Dials, lets the greeting play out, asks `question`; returns the caller
/// and when the question finished leaving.
async fn ask(node: &switchboard::serve::Services, question: &[i16]) -> (SipCaller, Instant) {
    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    let asked = caller.say_and_wait(question).await;
    (caller, asked)
}

/// What whisper hears of the agent's next reply after `after`.
async fn hear_reply(
    caller: &SipCaller,
    after: Instant,
    within: Duration,
    dir: &std::path::Path,
) -> (Instant, String) {
    let (start, end) = caller
        .wait_agent_speech(after, Duration::from_millis(1200), within)
        .await
        .unwrap_or_else(|| panic!("no reply (dead air) within {within:?}"));
    let wav = dir.join("reply.wav");
    caller.write_received(
        &wav,
        start - Duration::from_millis(100),
        end + Duration::from_millis(100),
    );
    (start, transcribe_wav(&wav).await)
}

async fn session_usage(db: &TestDb) -> Vec<(String, f64, f64)> {
    let session = ended_session(&db.pool).await;
    poll(Duration::from_secs(5), || async {
        let rows: Vec<(String, f64, f64)> = sqlx::query_as(
            "select kind, quantity::float8, cost::float8 from usage_logs where session_id = $1",
        )
        .bind(session)
        .fetch_all(&db.pool)
        .await
        .expect("usage");
        (rows.len() >= 5).then_some(rows)
    })
    .await
    .expect("usage rows written")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_hears_the_mock_models_answer() {
    common::node::init_logs();
    let answer = "Blue whales are the largest animals that ever lived. Their hearts weigh as much as a small car.";
    let mock = MockServer::start(ChatMode::Answer {
        text: answer.into(),
        prompt_tokens: 420,
        completion_tokens: 21,
    })
    .await;
    let db = TestDb::new().await;
    let node = node_with_mock(&db, &mock, 38000, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Tell me a fun fact about whales.");

    let (caller, asked) = ask(&node, &question).await;
    let (_, heard) = hear_reply(&caller, asked, Duration::from_secs(25), dir.path()).await;
    assert!(caller.hangup().await, "BYE answered");
    assert!(
        heard.contains("whale") && (heard.contains("largest") || heard.contains("heart")),
        "the mock's answer did not come back; heard {heard:?}"
    );

    // The mock saw an authorised streaming request carrying the question,
    // and spoke the greeting and the answer through the mock TTS.
    assert_eq!(
        mock.unauthorized(),
        0,
        "every request carried the decrypted key"
    );
    let chats = mock.chats();
    assert_eq!(chats.len(), 1, "one model request");
    let req = chats[0].request.to_string().to_lowercase();
    assert!(
        req.contains("\"stream\":true") && req.contains("fun fact"),
        "{req}"
    );
    assert!(chats[0].closed.is_some(), "the stream was finished");
    let spoken: Vec<String> = mock.speech().into_iter().map(|s| s.1).collect();
    assert!(
        spoken.iter().any(|s| s.contains("Bluebird"))
            && spoken.iter().any(|s| s.contains("Blue whales")),
        "TTS requests {spoken:?}"
    );

    // Tokens come from the provider's usage chunk, priced from llm_models.
    let usage = session_usage(&db).await;
    let get = |k: &str| usage.iter().find(|u| u.0 == k).cloned().unwrap_or_default();
    assert_eq!(get("llm_tokens_in").1, 420.0, "{usage:?}");
    assert_eq!(get("llm_tokens_out").1, 21.0, "{usage:?}");
    assert!(get("llm_tokens_in").2 > 0.0, "priced: {usage:?}");
    node.stop(Duration::from_secs(1)).await;
}

async fn fallback_is_heard(mode: ChatMode, rtp_base: u16) {
    let mock = MockServer::start(mode).await;
    let db = TestDb::new().await;
    let node = node_with_mock(
        &db,
        &mock,
        rtp_base,
        &[("SWITCHBOARD_LLM__FIRST_TOKEN_TIMEOUT_SECS", "2")],
    )
    .await;
    sqlx::query(FALLBACK_POLICY_SQL)
        .execute(&db.pool)
        .await
        .expect("policy");
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Tell me a fun fact about whales.");

    let (caller, asked) = ask(&node, &question).await;
    let (start, heard) = hear_reply(&caller, asked, Duration::from_secs(25), dir.path()).await;
    let silence_ms = start.saturating_duration_since(asked).as_millis();
    println!("fallback started {silence_ms} ms after the question ended");
    assert!(caller.hangup().await, "BYE answered");
    assert!(
        heard.contains("sorry") && heard.contains("information"),
        "the persona's fallback was not heard; heard {heard:?}"
    );
    let chats = mock.chats();
    assert!(!chats.is_empty(), "the model was asked");
    let closed = poll(Duration::from_secs(3), || async {
        mock.chats()
            .iter()
            .all(|c| c.closed.is_some())
            .then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "a model stream was left open: {:?}",
        mock.chats()
    );
    assert!(
        mock.chats().iter().all(|c| c.tokens_sent == 0),
        "the mock never produced a token"
    );
    node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_gives_the_fallback_line() {
    common::node::init_logs();
    fallback_is_heard(ChatMode::Fail, 38400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_model_times_out_into_the_fallback_line() {
    common::node::init_logs();
    fallback_is_heard(ChatMode::Hang, 38800).await;
}

/// The workspace's provider URL names an internal address the operator has
/// not allowed (the model listens on 127.0.0.2; the node allows 127.0.0.1
/// only): the model is never reached, and the caller hears the persona's
/// fallback line in the offline voice, as from any failing provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_url_on_a_refused_address_gives_the_fallback_line() {
    common::node::init_logs();
    let answer = ChatMode::Answer {
        text: "This answer must never be heard.".into(),
        prompt_tokens: 10,
        completion_tokens: 7,
    };
    let mock = MockServer::start_on("127.0.0.2", answer, "").await;
    let db = TestDb::new().await;
    let node = node_with_mock(&db, &mock, 47200, &[]).await;
    sqlx::query(FALLBACK_POLICY_SQL)
        .execute(&db.pool)
        .await
        .expect("policy");
    // The fallback is spoken by the offline voice (the networked one is
    // behind the same refused URL).
    sqlx::query("update agents set tts_provider = 'piper'")
        .execute(&db.pool)
        .await
        .expect("offline voice");
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Tell me a fun fact about whales.");

    let (caller, asked) = ask(&node, &question).await;
    let (start, heard) = hear_reply(&caller, asked, Duration::from_secs(25), dir.path()).await;
    println!(
        "fallback started {} ms after the question ended: {heard:?}",
        start.saturating_duration_since(asked).as_millis()
    );
    assert!(caller.hangup().await, "BYE answered");
    assert!(
        heard.contains("sorry") && heard.contains("information"),
        "the persona's fallback was not heard; heard {heard:?}"
    );
    assert!(mock.chats().is_empty(), "the refused model was reached");
    assert!(mock.speech().is_empty(), "the refused voice was reached");
    node.stop(Duration::from_secs(1)).await;
}

/// Issue 7, item 1: a hangup cancels the work in flight. The model trickles
/// a long answer; the caller hangs up while it streams; the mock sees the
/// stream closed within a second, no further model or TTS request arrives,
/// and no usage row is written after the call's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_closes_the_model_stream_and_stops_billing() {
    common::node::init_logs();
    let mock = MockServer::start(ChatMode::Trickle {
        text: "Whales are large. They sing long songs. They swim very far. ".into(),
        every: Duration::from_millis(150),
    })
    .await;
    let db = TestDb::new().await;
    let node = node_with_mock(&db, &mock, 39200, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Tell me a fun fact about whales.");

    let (caller, asked) = ask(&node, &question).await;
    caller
        .wait_agent_voice(asked, Duration::from_secs(15))
        .await
        .expect("the trickled answer started playing");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        mock.chats().last().is_some_and(|c| c.closed.is_none()),
        "the model is still streaming when the caller hangs up"
    );
    let bye_at = Instant::now();
    assert!(caller.hangup().await, "BYE answered");

    let closed = poll(Duration::from_secs(5), || async {
        mock.chats().last().and_then(|c| c.closed)
    })
    .await
    .expect("the model stream was never closed");
    let close_ms = closed.saturating_duration_since(bye_at).as_millis();
    println!("model stream closed {close_ms} ms after BYE");
    assert!(close_ms <= 1000, "stream closed {close_ms} ms after BYE");

    let ended: chrono::DateTime<chrono::Utc> = poll(Duration::from_secs(10), || async {
        sqlx::query_scalar("select ended_at from call_logs where ended_at is not null")
            .fetch_optional(&db.pool)
            .await
            .expect("call_logs")
    })
    .await
    .expect("call ended in call_logs");
    let usage_now = session_usage(&db).await.len();
    let tokens = mock.chats().last().map(|c| c.tokens_sent).unwrap_or(0);
    let requests = (mock.chats().len(), mock.speech().len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mock.chats().last().map(|c| c.tokens_sent).unwrap_or(0),
        tokens,
        "tokens still flowing after the stream closed"
    );
    assert_eq!(
        (mock.chats().len(), mock.speech().len()),
        requests,
        "provider requests after the hangup"
    );
    let (count, latest): (i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select count(*), max(created_at) from usage_logs")
            .fetch_one(&db.pool)
            .await
            .expect("usage");
    assert_eq!(count as usize, usage_now, "usage rows written later");
    let lag = latest.expect("usage rows") - ended;
    assert!(
        lag < chrono::Duration::seconds(2),
        "usage written {lag} after the call ended"
    );
    node.stop(Duration::from_secs(1)).await;
}

/// OpenAI-compatible STT: the agent's `stt_provider` is `openai`, so the
/// caller's utterance is uploaded to the mock, whose transcript (not what
/// was said) becomes the caller's turn — and the offline answerer answers
/// that transcript from the knowledge base, heard by whisper at the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_uses_the_networked_transcriber() {
    common::node::init_logs();
    let mock =
        MockServer::start_with_transcript(ChatMode::Fail, "What time do you open on Saturday?")
            .await;
    let db = TestDb::new().await;
    let node = node_using(&db, &mock, Mocked::Recognizer, 46800, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let said = speech_8k(dir.path(), "q", "Hello there, I have a question for you.");

    let (caller, asked) = ask(&node, &said).await;
    let (_, heard) = hear_reply(&caller, asked, Duration::from_secs(25), dir.path()).await;
    assert!(caller.hangup().await, "BYE answered");
    assert!(
        heard.contains("saturday") && heard.contains("open") && heard.contains("close"),
        "the answer to the mock's transcript did not come back; heard {heard:?}"
    );
    let uploads = mock.transcriptions();
    assert!(!uploads.is_empty(), "no transcription request");
    // 16 kHz 16-bit WAV of a ~2.5 s utterance: well over 40 kB.
    assert!(uploads.iter().any(|&n| n > 40_000), "uploads {uploads:?}");
    assert_eq!(mock.unauthorized(), 0);
    assert!(mock.chats().is_empty(), "the LLM stayed offline");
    // A transcript the knowledge matches well is heard once, without a hint.
    assert!(
        mock.transcription_prompts().iter().all(Option::is_none),
        "prompts {:?}",
        mock.transcription_prompts()
    );
    let user: String = poll(Duration::from_secs(10), || async {
        sqlx::query_scalar("select content from messages where role = 'user'")
            .fetch_optional(&db.pool)
            .await
            .expect("messages")
    })
    .await
    .expect("the caller's turn");
    assert_eq!(user, "What time do you open on Saturday?");
    node.stop(Duration::from_secs(1)).await;
}

/// A transcript that matches nothing in the knowledge is heard again with
/// the knowledge's words as the recognizer's prompt; the second hearing,
/// which the knowledge matches, is the caller's turn and gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misheard_turn_is_heard_again_with_the_knowledge_words() {
    common::node::init_logs();
    let mock = MockServer::start_hearing(
        ChatMode::Fail,
        "Wad hime dew ewe hopen hon satter dey?",
        "What time do you open on Saturday?",
    )
    .await;
    let db = TestDb::new().await;
    // A second hearing when the best passage scores below 0.45.
    let relisten = ("SWITCHBOARD_STT__RELISTEN_BELOW", "0.45");
    let node = node_using(&db, &mock, Mocked::Recognizer, 56000, &[relisten]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let said = speech_8k(dir.path(), "q", "Hello there, I have a question for you.");

    let (caller, asked) = ask(&node, &said).await;
    let (_, heard) = hear_reply(&caller, asked, Duration::from_secs(25), dir.path()).await;
    assert!(caller.hangup().await, "BYE answered");
    assert!(
        heard.contains("saturday") && heard.contains("open"),
        "the answer to the second hearing did not come back; heard {heard:?}"
    );
    let prompts = mock.transcription_prompts();
    let hinted: Vec<&String> = prompts.iter().flatten().collect();
    assert!(
        !hinted.is_empty() && prompts.iter().any(Option::is_none),
        "a plain hearing, then a hinted one; prompts {prompts:?}"
    );
    // The hint is a few of the knowledge's own words.
    let hint = hinted[0].to_lowercase();
    let words = hint.split_whitespace().count();
    assert!((1..=16).contains(&words), "hint {hint:?}");
    let user: String = poll(Duration::from_secs(10), || async {
        sqlx::query_scalar("select content from messages where role = 'user'")
            .fetch_optional(&db.pool)
            .await
            .expect("messages")
    })
    .await
    .expect("the caller's turn");
    assert_eq!(user, "What time do you open on Saturday?");
    node.stop(Duration::from_secs(1)).await;
}

/// One sentence of about 5 s, so the agent is mid-word 1 s into it.
const LONG_SENTENCE: &str = "Whales are the largest animals that have ever lived on our planet, \
and some of them sing long songs that carry across whole oceans.";

/// Issue 7, barge-in with networked providers: the model streams a long
/// answer (faster than it can be spoken, never finishing); the caller
/// interrupts about 1 s into it. The agent's audio stops within 200 ms of
/// the caller's onset (on the caller's RTP), the model's stream is closed
/// by the barge-in, no more speech is synthesised for that answer, and the
/// answer is stored as interrupted with only what played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_closes_the_model_stream_and_stops_synthesis() {
    common::node::init_logs();
    let mock = MockServer::start(ChatMode::Trickle {
        text: format!("{LONG_SENTENCE} "),
        every: Duration::from_millis(40),
    })
    .await;
    let db = TestDb::new().await;
    let node = node_with_mock(&db, &mock, 39600, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "Tell me a fun fact about whales.");
    let interruption = speech_8k(
        dir.path(),
        "i",
        "Sorry to interrupt, what time do you open on Saturday?",
    );

    let (caller, asked) = ask(&node, &question).await;
    let answer_at = caller
        .wait_agent_voice(asked, Duration::from_secs(15))
        .await
        .expect("the streamed answer started playing");
    tokio::time::sleep_until((answer_at + Duration::from_millis(1000)).into()).await;
    let speak_at = Instant::now();
    caller.say(&interruption);
    let onset = poll(Duration::from_secs(2), || async {
        caller.first_sent_voice_after(speak_at)
    })
    .await
    .expect("the interruption was sent");
    assert!(
        caller.agent_speaking_at(onset),
        "the agent was not speaking when the caller started"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop_ms = caller
        .agent_stop_ms_after(onset)
        .expect("the agent's audio stopped");
    let first = mock.chats().first().cloned().expect("the answer's stream");
    let closed = first
        .closed
        .expect("the interrupted model stream was closed");
    let close_ms = closed.saturating_duration_since(onset).as_millis();
    println!(
        "barge-in: audio stopped {stop_ms} ms, model stream closed {close_ms} ms after the caller's onset"
    );
    assert!(
        stop_ms <= 200,
        "agent audio stopped {stop_ms} ms after the onset"
    );
    // The reply is cancelled once the speech outlasts the barge-in minimum.
    assert!(
        close_ms <= 1000,
        "model stream closed {close_ms} ms after the onset"
    );
    // No sentence of the interrupted answer is synthesised after the close
    // (requests for the next answer only start after the caller's turn).
    let late: Vec<String> = mock
        .speech()
        .into_iter()
        .filter(|(at, _)| {
            *at > closed + Duration::from_millis(100) && *at < onset + Duration::from_millis(2500)
        })
        .map(|(_, t)| t)
        .collect();
    caller.say_and_wait(&[]).await;
    assert!(caller.hangup().await, "BYE answered");

    let session = ended_session(&db.pool).await;
    let messages = poll(Duration::from_secs(5), || async {
        let rows = session_messages(&db.pool, session).await;
        rows.iter().any(|m| m.2).then_some(rows)
    })
    .await
    .expect("an interrupted message was stored");
    let answer = messages
        .iter()
        .find(|m| m.0 == "assistant" && m.2)
        .expect("the interrupted answer");
    // About a second of it played: a few words, a prefix of the stream.
    assert!(
        !answer.1.is_empty()
            && answer.1.len() < LONG_SENTENCE.len() / 2
            && LONG_SENTENCE.starts_with(answer.1.trim()),
        "only what played is stored: {:?}",
        answer.1
    );
    assert!(
        late.len() <= 1,
        "speech still synthesised for the interrupted answer: {late:?}"
    );
    node.stop(Duration::from_secs(1)).await;
}
