//! Pre-rendered FAQ answers on a real call: the node pre-renders the demo
//! agent's fixed lines and FAQ answers at start-up, a caller (our SIP/RTP
//! socket, one clock for what it sends and hears) asks an FAQ question in
//! a Piper voice, and the first answer audio must arrive at the caller
//! within 50 ms of the turn's decision time recorded in `call_logs.latency`.
//! Then a changed answer drops its stale rendering and renders the new one.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::node::{poll, start_node};
use common::sip_caller::SipCaller;
use futures::StreamExt;
use switchboard::agent_runtime::profile::AgentProfile;
use switchboard::agent_runtime::tts::TextToSpeech;
use switchboard::agent_runtime::tts_cache::TtsCache;
use switchboard::agent_runtime::tts_piper::PiperTts;
use switchboard::agent_runtime::tts_prerender::texts_for;
use switchboard::config::Config;
use switchboard::db::testing::TestDb;
use switchboard::media::resample::resample_all;
use uuid::Uuid;

const VOICE: &str = "en_US-joe-medium";

/// Silence after each question.
const TRAILING_SILENCE: Duration = Duration::from_millis(300);

/// `text` in the Piper voice at 8 kHz, with [`TRAILING_SILENCE`] after it.
async fn piper_8k(text: &str) -> Vec<i16> {
    let c = Config::load_from(None, &[]).unwrap().tts;
    let tts = PiperTts::new(&c.onnxruntime_path, &c.piper_dir, VOICE, 1, 1).expect("piper");
    let mut s = tts.synthesize(text, VOICE, 1.0).await.unwrap();
    let (mut pcm, mut rate) = (Vec::new(), 22050);
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        rate = c.sample_rate;
        pcm.extend(c.pcm);
    }
    let mut out = resample_all(&pcm, rate, 8000).unwrap();
    out.extend(std::iter::repeat_n(
        0,
        TRAILING_SILENCE.as_millis() as usize * 8,
    ));
    out
}

async fn wanted_keys(db: &TestDb, agent: Uuid) -> HashSet<String> {
    let profile = AgentProfile::load(&db.pool, agent).await.unwrap();
    texts_for(&db.pool, &profile)
        .await
        .unwrap()
        .iter()
        .map(|t| TtsCache::key("piper", VOICE, profile.tts_speed, t))
        .collect()
}

fn cached(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".wav")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_rendered(db: &TestDb, agent: Uuid, dir: &Path, limit: Duration) -> HashSet<String> {
    let started = Instant::now();
    let want = wanted_keys(db, agent).await;
    poll(limit, || {
        let (want, dir) = (want.clone(), dir.to_path_buf());
        async move { want.is_subset(&cached(&dir)).then_some(()) }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{} of {} renderings after {:?}",
            want.intersection(&cached(dir)).count(),
            want.len(),
            started.elapsed()
        )
    });
    println!(
        "pre-rendered {} texts in {:.1} s",
        want.len(),
        started.elapsed().as_secs_f64()
    );
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prerendered_faq_answer_reaches_the_caller_within_50_ms_of_the_decision() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let agent: Uuid = sqlx::query_scalar("select id from agents where status = 'live' limit 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let node = start_node(
        &db.url,
        &db.pool,
        38400,
        &[
            ("SWITCHBOARD_TTS__CACHE_DIR", cache_dir.as_str()),
            ("SWITCHBOARD_TTS__PRERENDER_POLL_SECS", "1"),
        ],
    )
    .await;
    let before = wait_rendered(&db, agent, cache.path(), Duration::from_secs(180)).await;

    let question = piper_8k("What are your opening hours?").await;
    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    let asked = caller.say_and_wait(&question).await;
    caller
        .wait_agent_speech(asked, Duration::from_millis(900), Duration::from_secs(20))
        .await
        .expect("the agent answered");
    // The question ends with 300 ms of silence, and an answer to a
    // finished sentence may start before that silence has all been sent:
    // the answer's first sound is the first after the end of the speech.
    let speech_end = asked - TRAILING_SILENCE;
    let first_audio = caller.first_sound_after(speech_end).expect("answer audio");
    // The caller's clock (Instant) on the wall clock, as the node records it.
    let first_audio_unix_ms = {
        let ago = Instant::now().saturating_duration_since(first_audio);
        (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - ago).as_secs_f64() * 1000.0
    };
    assert!(caller.hangup().await, "BYE answered");

    let latency: serde_json::Value = poll(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Option<serde_json::Value>>(
            "select latency from call_logs where latency ? 'turns' limit 1",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
    })
    .await
    .expect("call_logs.latency written");
    let turn = &latency["turns"][0];
    let decided = turn["decided_at_unix_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no decision time in {latency}"));
    let after_ms = first_audio_unix_ms - decided;
    let around: Vec<String> = caller
        .packets_between(
            first_audio - Duration::from_millis(120),
            first_audio + Duration::from_millis(40),
        )
        .iter()
        .map(|(at, rms)| {
            let ms = at.saturating_duration_since(first_audio).as_secs_f64() * 1000.0
                - first_audio.saturating_duration_since(*at).as_secs_f64() * 1000.0;
            format!("{ms:+.0} ms rms {rms:.0}")
        })
        .collect();
    println!("packets around the first sound: {around:?}");
    println!("first answer audio at the caller {after_ms:.1} ms after the decision (turn: {turn})");
    // The answer spoken is one of the pre-rendered FAQ answers.
    let spoken: String = sqlx::query_scalar(
        "select content from messages where role = 'assistant' order by created_at desc limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let faq: Vec<String> = sqlx::query_scalar("select content from knowledge_chunks")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        faq.iter().any(|c| c.contains(&format!("A: {spoken}"))),
        "the reply {spoken:?} is not an FAQ answer"
    );
    assert!(
        (0.0..=50.0).contains(&after_ms),
        "first answer audio {after_ms:.1} ms after the decision (limit 50 ms)"
    );

    // A changed answer: its new text is rendered, the old one dropped.
    let changed = sqlx::query(
        "update knowledge_chunks set content = replace(content, 'on Saturday from 9 am to 1 pm.', 'on Saturday from 9 am to noon.')
         where content like 'Q: What are your opening hours?%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1, "the FAQ answer was changed");
    let after = wait_rendered(&db, agent, cache.path(), Duration::from_secs(60)).await;
    let stale: HashSet<String> = before.difference(&after).cloned().collect();
    assert!(
        !stale.is_empty(),
        "the change made a new text ({} texts before, {} after)",
        before.len(),
        after.len()
    );
    let dir = cache.path().to_path_buf();
    poll(Duration::from_secs(20), || {
        let (stale, dir) = (stale.clone(), dir.clone());
        async move { stale.is_disjoint(&cached(&dir)).then_some(()) }
    })
    .await
    .expect("the stale rendering was dropped");
    node.stop(Duration::from_secs(1)).await;
}
