//! Shared helpers of the provider tests: callers' speech in a Piper voice
//! (`caller_voice`), the whisper model found the way the runtime finds it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use switchboard::agent_runtime::stt::{resolve_model_path, WhisperOptions, WhisperStt};

/// Whisper tests of one binary take turns: two whisper.cpp runs on this
/// 2-core machine oversubscribe it (its threads spin at barriers), and a
/// run then takes many times longer than alone. The runtime itself never
/// does this: one pool per process, sized to the cores.
pub async fn whisper_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

use crate::common::caller_voice;

/// `text` in the test caller's voice (Piper), 16 kHz mono 16-bit.
pub fn speech_16k(dir: &Path, text: &str) -> Vec<i16> {
    caller_voice::speech_16k(dir, "speech", text)
}

pub fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let mut r = hound::WavReader::open(path).expect("open wav");
    let rate = r.spec().sample_rate;
    (
        r.samples::<i16>().map(|s| s.expect("sample")).collect(),
        rate,
    )
}

pub fn whisper(workers: usize, sized: bool) -> Arc<WhisperStt> {
    let path = resolve_model_path("").expect("whisper model in data/models (scripts/setup)");
    Arc::new(
        WhisperStt::load(
            &path,
            WhisperOptions {
                // One thread: these suites run beside another whisper-bound
                // one (`.config/nextest.toml`).
                threads: 1,
                workers,
                sized_audio_ctx: sized,
                temperature_fallback: true,
                beam_size: 1,
            },
        )
        .expect("load whisper"),
    )
}

/// Lower-case words only, for comparing transcripts.
pub fn words(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The provider client for mock providers on 127.0.0.1: the operator's
/// allow-list admits that one address (and no other internal one).
pub fn loopback_client() -> switchboard::outbound::GuardedClient {
    let allowed = switchboard::outbound::Allowed::parse(&["127.0.0.1/32"]).expect("allow-list");
    switchboard::agent_runtime::provider_http::provider_client(allowed).expect("client")
}
