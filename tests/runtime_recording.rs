//! Call recording end to end: the demo agent with `recording_enabled` takes
//! a real call (in-process SIP/RTP caller asking a question); when it ends
//! the WAV in the recording folder lasts as long as the call, holds the
//! caller on the left and the agent on the right (whisper hears the
//! question on one side and the greeting and the answer on the other, in
//! that order), `call_recordings` describes the file, and the API serves
//! the same bytes to a workspace member — and to no one else.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::{demo_agent, poll, speech_8k, start_node, transcribe_wav};
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

/// An API key of `role` for `workspace`.
async fn api_key(db: &TestDb, workspace: Uuid, role: &str) -> String {
    let (key, prefix, hash) = switchboard::api::auth::generate_api_key();
    sqlx::query(
        "insert into api_keys (workspace_id, name, prefix, key_hash, role)
         values ($1, 'test', $2, $3, $4::app_role)",
    )
    .bind(workspace)
    .bind(&prefix)
    .bind(&hash)
    .bind(role)
    .execute(&db.pool)
    .await
    .expect("api key");
    key
}

/// One channel of a stereo 16-bit WAV, as samples.
fn channel(wav: &Path, index: usize) -> Vec<i16> {
    let mut r = hound::WavReader::open(wav).expect("recording");
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.expect("sample")).collect();
    samples.chunks(2).map(|c| c[index]).collect()
}

fn write_mono(path: &Path, pcm: &[i16], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for s in pcm {
        w.write_sample(*s).expect("sample");
    }
    w.finalize().expect("finalize");
}

/// Start and end (ms) of the voiced stretches of `pcm` (20 ms frames above
/// a speech-level RMS), merging gaps shorter than `gap_ms`.
fn voiced(pcm: &[i16], rate: u32, gap_ms: u64) -> Vec<(u64, u64)> {
    let frame = (rate / 50) as usize;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (i, f) in pcm.chunks(frame).enumerate() {
        let rms = (f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
        if rms < 300.0 {
            continue;
        }
        let (start, end) = (i as u64 * 20, i as u64 * 20 + 20);
        match spans.last_mut() {
            Some(last) if start <= last.1 + gap_ms => last.1 = end,
            _ => spans.push((start, end)),
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_is_a_stereo_wav_a_row_and_a_download() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let (agent, workspace) = demo_agent(&db.pool).await;
    sqlx::query("update agents set recording_enabled = true where id = $1")
        .bind(agent)
        .execute(&db.pool)
        .await
        .expect("recording on");
    // A relative folder, as in the default configuration (`data/recordings`).
    let folder = PathBuf::from(format!("target/test-recordings/{}", Uuid::new_v4()));
    let folder_setting = folder.display().to_string();
    let node = start_node(
        &db.url,
        &db.pool,
        41200,
        &[("SWITCHBOARD_RECORDING__DIR", &folder_setting)],
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "q", "What time do you open on Saturday?");

    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    let asked = caller.say_and_wait(&question).await;
    let (answer_heard, _) = caller
        .wait_agent_speech(asked, Duration::from_millis(1200), Duration::from_secs(25))
        .await
        .expect("the answer played");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hung_up = Instant::now();
    assert!(caller.hangup().await, "BYE answered");
    let call_ms = hung_up.duration_since(caller.answered_at).as_millis() as i64;

    // The row, once the call's records are written.
    let (rec_id, call_log_id, stored, format, duration_ms, size_bytes): (
        Uuid,
        Uuid,
        String,
        String,
        i64,
        i64,
    ) = poll(Duration::from_secs(15), || async {
        sqlx::query_as(
            "select id, call_log_id, storage_path, format, duration_ms, size_bytes from call_recordings",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("call_recordings")
    })
    .await
    .expect("a call_recordings row");
    let logged: Uuid = sqlx::query_scalar("select id from call_logs")
        .fetch_one(&db.pool)
        .await
        .expect("call_logs");
    assert_eq!(call_log_id, logged);
    assert_eq!(format, "wav");
    assert_eq!(
        stored,
        format!("{call_log_id}.wav"),
        "stored relative to the folder"
    );

    // The file: where the row says, the size it says, as long as the call.
    let wav = folder.join(&stored);
    let bytes = std::fs::read(&wav).expect("the recording file exists");
    assert_eq!(bytes.len() as i64, size_bytes);
    let spec = hound::WavReader::open(&wav).expect("wav").spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let frames = hound::WavReader::open(&wav).expect("wav").duration() as i64;
    assert_eq!(
        frames * 1000 / 8000,
        duration_ms,
        "row duration = file duration"
    );
    println!("recording {duration_ms} ms, call {call_ms} ms (answer to BYE)");
    assert!(
        (duration_ms - call_ms).abs() <= 700,
        "recording {duration_ms} ms for a call of {call_ms} ms"
    );

    // Both directions, aligned: the caller's question on the left, the
    // greeting before it and the answer after it on the right.
    let (left, right) = (channel(&wav, 0), channel(&wav, 1));
    let caller_speech = voiced(&left, 8000, 400);
    let agent_speech = voiced(&right, 8000, 900);
    println!("caller voiced {caller_speech:?}, agent voiced {agent_speech:?}");
    let question_span = *caller_speech
        .iter()
        .max_by_key(|(a, b)| b - a)
        .expect("the caller is heard on the left");
    assert!(
        question_span.1 - question_span.0 >= 1500,
        "the question lasts {question_span:?}"
    );
    assert!(
        agent_speech.iter().any(|s| s.1 <= question_span.0),
        "the greeting precedes the question on the right: {agent_speech:?}"
    );
    let answer = agent_speech
        .iter()
        .find(|s| s.0 >= question_span.1)
        .expect("the answer follows the question on the right");
    // The caller's clock: when the question started and ended leaving, and
    // when the answer arrived. The recording keeps those times (within the
    // jitter buffer's delay and a frame or two of voice detection).
    let since_answer =
        |t: Instant| t.saturating_duration_since(caller.answered_at).as_millis() as i64;
    // The voice pads its speech with a little silence: the voiced part.
    let spoken = *voiced(&question, 8000, 400)
        .first()
        .expect("voiced question");
    let wav_start = since_answer(asked) - question.len() as i64 / 8;
    let sent = (wav_start + spoken.0 as i64, wav_start + spoken.1 as i64);
    let latency: serde_json::Value =
        sqlx::query_scalar("select latency from call_logs where id = $1")
            .bind(call_log_id)
            .fetch_one(&db.pool)
            .await
            .expect("latency");
    println!(
        "question sent {sent:?} ms, answer arrived at {} ms; recorded {question_span:?} and {answer:?}; turn figures {}",
        since_answer(answer_heard),
        latency["turns"]
    );
    let observed_gap = since_answer(answer_heard) - sent.1;
    let recorded_gap = answer.0 as i64 - question_span.1 as i64;
    assert!(
        (recorded_gap - observed_gap).abs() <= 300,
        "question end → answer start: recorded {recorded_gap} ms, the caller saw {observed_gap} ms"
    );
    assert!(
        (question_span.0 as i64 - sent.0).abs() <= 300,
        "the question starts at {} ms in the recording, was sent at {} ms",
        question_span.0,
        sent.0
    );
    let left_wav = dir.path().join("left.wav");
    let right_wav = dir.path().join("right.wav");
    write_mono(&left_wav, &left, 8000);
    write_mono(
        &right_wav,
        &right[answer.0 as usize * 8..answer.1 as usize * 8],
        8000,
    );
    let heard_caller = transcribe_wav(&left_wav).await;
    let heard_agent = transcribe_wav(&right_wav).await;
    println!("left: {heard_caller:?}; right (answer): {heard_agent:?}");
    assert!(heard_caller.contains("saturday"), "{heard_caller:?}");
    assert!(
        heard_agent.contains("saturday") && heard_agent.contains("close"),
        "{heard_agent:?}"
    );

    // The download: a member gets the same bytes; another workspace does not.
    let viewer = api_key(&db, workspace, "VIEWER").await;
    let url = format!(
        "http://{}/v1/workspaces/{workspace}/call-recordings/{rec_id}/audio",
        node.api_addr
    );
    let http = reqwest::Client::new();
    let r = http
        .get(&url)
        .header("x-api-key", &viewer)
        .send()
        .await
        .expect("GET audio");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("audio/wav")
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), bytes.as_slice());
    let other: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('Other', 'other') returning id",
    )
    .fetch_one(&db.pool)
    .await
    .expect("workspace");
    let outsider = api_key(&db, other, "OWNER").await;
    let r = http
        .get(&url)
        .header("x-api-key", &outsider)
        .send()
        .await
        .expect("GET audio");
    assert!(
        matches!(r.status().as_u16(), 403 | 404),
        "another workspace's key got {}",
        r.status()
    );
    let r = http.get(&url).send().await.expect("GET audio");
    assert_eq!(r.status(), 401, "no credentials");

    node.stop(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&folder);
}
