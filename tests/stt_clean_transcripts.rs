//! Clean transcripts on a caller's real voice: questions spoken by the Piper
//! voice (`tests/fixtures/audio/piper-*.wav`, 8 kHz as a caller sends them)
//! go through G.711 µ-law, the call path's 8 → 16 kHz resampler, the
//! endpointer, the turn machine and whisper on a simulated clock, exactly
//! as a call drives them. Each question must be answered with one clean
//! sentence: no repeated words or phrases (whisper tiny.en, left alone,
//! writes "Can I pay by car? Can I pay by car? Can I pay by car" for the
//! first fixture), and a word error rate over the set within bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::agent_runtime::stt::{SpeechToText, WhisperStt};
use switchboard::agent_runtime::turn::{Action, Input, TurnMachine, TurnSettings};
use switchboard::config::Config;
use switchboard::media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use switchboard::media::g711::{decode_ulaw, encode_ulaw};
use switchboard::media::resample::Resampler;

/// Each fixture and the words spoken in it.
const QUESTIONS: [(&str, &str); 12] = [
    ("piper-can-i-pay-by-card", "Can I pay by card?"),
    ("piper-do-you-do-grooming", "Do you do grooming?"),
    (
        "piper-cancel-appointment",
        "I need to cancel my appointment, how does that work?",
    ),
    (
        "piper-charge-normal-checkup",
        "What do you charge for a normal checkup?",
    ),
    (
        "piper-teeth-cleaning-cat",
        "How much is a teeth cleaning for a cat?",
    ),
    ("piper-microchips", "Do you put in microchips?"),
    ("piper-address", "What's your address?"),
    ("piper-vet-come-home", "Can the vet come to my home?"),
    ("piper-opening-hours", "What are your opening hours?"),
    ("piper-open-saturday", "What time do you open on Saturday?"),
    ("piper-new-patients", "Do you take new patients?"),
    ("piper-parking", "Is there parking?"),
];

/// Silence the caller keeps after the question (the call goes on).
const LISTEN_MS: u32 = 2000;
/// Call time a transcription takes: the simulated clock stands still while
/// whisper runs (a debug build on a busy machine is many times slower than
/// a call's), and the transcript arrives this much later, about whisper
/// tiny.en's time for a question in a release build.
const STT_MS: u64 = 150;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(format!("{name}.wav"))
}

/// The caller's 8 kHz audio as the call task receives it: µ-law on the
/// wire, decoded, resampled to 16 kHz by the receiver's resampler, in 20 ms
/// frames.
fn caller_frames(name: &str) -> Vec<Vec<i16>> {
    let mut reader = hound::WavReader::open(fixture(name)).expect("fixture");
    assert_eq!(reader.spec().sample_rate, 8000, "{name}: 8 kHz fixture");
    let mut pcm: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    pcm.resize(pcm.len() + LISTEN_MS as usize * 8, 0);
    let mut resampler = Resampler::new(8000, 16_000).expect("resampler");
    let mut frames = Vec::new();
    for chunk in pcm.chunks_exact(160) {
        let mut wire = Vec::new();
        encode_ulaw(chunk, &mut wire);
        let mut decoded = Vec::new();
        decode_ulaw(&wire, &mut decoded);
        let mut frame = Vec::new();
        resampler.process(&decoded, &mut frame);
        frames.push(frame);
    }
    frames
}

fn settings(config: &Config) -> TurnSettings {
    let t = &config.turn;
    TurnSettings {
        end_of_turn_silence: Duration::from_millis(t.end_of_turn_silence_ms as u64),
        speculate_after: Duration::from_millis(t.speculate_after_ms as u64),
        complete_turn_silence: Duration::from_millis(t.complete_turn_silence_ms as u64),
        barge_in_min: Duration::from_millis(t.barge_in_min_ms as u64),
        backchannel_resume: Duration::from_millis(t.backchannel_resume_ms as u64),
        speech_onset: Duration::from_millis(t.speech_onset_ms as u64),
        interruptible: true,
        silence_timeout: Duration::from_secs(30),
        max_call: Duration::from_secs(600),
    }
}

/// What one question produced: every transcript whisper returned and what
/// the agent was asked to answer.
struct Heard {
    transcripts: Vec<String>,
    answered: Vec<String>,
}

/// Drives one question through endpointer, turn machine and whisper as the
/// call task does, on a simulated clock; a transcript arrives when the
/// simulated clock has passed its real transcription time.
async fn hear(stt: &WhisperStt, config: &Config, name: &str) -> Heard {
    let t0 = Instant::now();
    let mut turns = TurnMachine::new(settings(config), t0);
    let mut endpointer = Endpointer::new(EndpointConfig {
        onset_ms: config.turn.speech_onset_ms,
        end_of_turn_silence_ms: config.turn.end_of_turn_silence_ms,
        ..EndpointConfig::default()
    });
    let mut pending: Vec<(Instant, u64, String)> = Vec::new();
    let mut heard = Heard {
        transcripts: Vec::new(),
        answered: Vec::new(),
    };
    for (i, frame) in caller_frames(name).iter().enumerate() {
        let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
        let mut actions = Vec::new();
        for ev in endpointer.push(frame, now) {
            let input = match ev {
                EndpointEvent::VoiceDetected { at } => Input::VoiceDetected { at },
                EndpointEvent::SpeechStarted { at } => Input::SpeechStarted { at },
                EndpointEvent::PauseStarted { at, audio } => Input::PauseStarted { at, audio },
                EndpointEvent::SpeechResumed { at } => Input::SpeechResumed { at },
                EndpointEvent::SpeechEnded { at, audio, .. } => Input::SpeechEnded {
                    at,
                    audio: Arc::new(audio),
                },
            };
            actions.extend(turns.handle(input, now));
        }
        let due: Vec<_> = pending.iter().filter(|p| p.0 <= now).cloned().collect();
        pending.retain(|p| p.0 > now);
        for (_, turn, text) in due {
            actions.extend(turns.handle(Input::Transcript { turn, text }, now));
        }
        if now >= turns.next_deadline() {
            actions.extend(turns.handle(Input::Tick, now));
        }
        for action in actions {
            match action {
                Action::Transcribe { turn, audio } => {
                    dump(name, turn, &audio);
                    let text = transcribe(stt, &audio).await;
                    heard.transcripts.push(text.clone());
                    pending.push((now + Duration::from_millis(STT_MS), turn, text));
                }
                Action::CancelTranscription { turn } => pending.retain(|p| p.1 != turn),
                Action::Respond { text, .. } => {
                    heard.answered.push(text);
                    // The agent holds the floor until its reply has played.
                    turns.handle(Input::ReplyFinished, now);
                }
                _ => {}
            }
        }
    }
    heard
}

/// With `DUMP_UTTERANCES=dir`, writes each audio handed to whisper there
/// (16 kHz WAV): how a failing utterance becomes a fixture.
fn dump(name: &str, turn: u64, audio: &[i16]) {
    let Some(dir) = std::env::var_os("DUMP_UTTERANCES") else {
        return;
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let path = Path::new(&dir).join(format!("{name}-turn{turn}.wav"));
    let mut w = hound::WavWriter::create(path, spec).expect("dump");
    for &s in audio {
        w.write_sample(s).expect("dump");
    }
    w.finalize().expect("dump");
}

/// Whisper's text for `audio`; its time limit (meant for a call) is retried
/// when a busy machine runs past it.
async fn transcribe(stt: &WhisperStt, audio: &[i16]) -> String {
    let mut last = None;
    for _ in 0..3 {
        match stt
            .transcribe(
                audio,
                &switchboard::agent_runtime::stt::SttHints::language("en"),
            )
            .await
        {
            Ok(t) => return t.text,
            Err(e) => last = Some(e),
        }
    }
    panic!("whisper failed three times: {last:?}")
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word-level edit distance.
fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(r != h))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[hypothesis.len()]
}

/// A word n-gram (n ≥ 1) heard twice in a row, any word pair heard twice,
/// or a sentence that starts the text over: the signs of a repeated tail.
fn repetition(text: &str) -> Option<String> {
    let raw: Vec<&str> = text.split_whitespace().collect();
    let w = words(text);
    if raw.len() == w.len() {
        for p in 1..raw.len() {
            if raw[p - 1].ends_with(['.', '?', '!']) && w[p] == w[0] {
                return Some(format!("restart at {:?}", raw[p]));
            }
        }
    }
    for n in 1..=w.len() / 2 {
        for i in 0..=w.len() - 2 * n {
            if w[i..i + n] == w[i + n..i + 2 * n] {
                return Some(w[i..i + n].join(" "));
            }
        }
    }
    for i in 0..w.len().saturating_sub(1) {
        for j in i + 1..w.len() - 1 {
            if w[i..i + 2] == w[j..j + 2] {
                return Some(w[i..i + 2].join(" "));
            }
        }
    }
    None
}

#[test]
fn repetition_detector_finds_the_tails_callers_heard() {
    for t in [
        "Can I pay by card? Can I pay",
        "Do you do grooming? Do",
        "I need to cancel my appointment, how does that work? I need to cancel my appointment, how does that work? I need to",
    ] {
        assert!(repetition(t).is_some(), "{t}");
    }
    assert_eq!(repetition("Do you do grooming?"), None);
    assert_eq!(repetition("What time do you open on Saturday?"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piper_questions_through_the_call_path_give_one_clean_sentence_each() {
    // Whisper's raw text is logged when its repeats were dropped.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("switchboard::agent_runtime::stt=debug")
        .with_test_writer()
        .try_init();
    // One whisper thread: this suite runs beside other whisper-bound ones
    // (`.config/nextest.toml`).
    let config = Config::load_from(None, &crate::common::node::one_core_models()).expect("config");
    let stt = Arc::new(WhisperStt::from_config(&config.stt).expect("whisper model"));
    let (mut errors, mut total) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (name, said) in QUESTIONS {
        let heard = hear(&stt, &config, name).await;
        eprintln!(
            "{name}: said {said:?}; whisper {:?}; answered {:?}",
            heard.transcripts, heard.answered
        );
        // One answer; two only when the caller paused after a complete
        // sentence (Piper's comma pause is 390 ms) and went on: the early
        // answer, then the whole question (in a call, a barge-in).
        let Some(last) = heard.answered.last() else {
            failures.push(format!("{name}: no answer"));
            continue;
        };
        if heard.answered.len() > 2 {
            failures.push(format!("{name}: answers {:?}", heard.answered));
        }
        for answer in &heard.answered {
            if let Some(rep) = repetition(answer) {
                failures.push(format!("{name}: {answer:?} repeats {rep:?}"));
            }
        }
        let (r, h) = (words(said), words(last));
        errors += word_errors(&r, &h);
        total += r.len();
    }
    let wer = errors as f64 / total.max(1) as f64;
    eprintln!("WER {:.1} % ({errors}/{total})", wer * 100.0);
    assert!(failures.is_empty(), "{failures:#?}");
    // whisper tiny.en's own mistakes on this voice ("car" for card, "my car
    // chips", "check up"): 14.8 % measured; the goal of 10 % needs a larger
    // model (stt.model_path). The bound catches transcripts that break.
    assert!(wer <= 0.16, "WER {:.1} % over the set", wer * 100.0);
}
