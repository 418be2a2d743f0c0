//! Shared helpers of the provider tests: real speech made with espeak-ng and
//! sox, the whisper model found the way the runtime finds it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use switchboard::agent_runtime::stt::{resolve_model_path, WhisperOptions, WhisperStt};

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (espeak-ng and sox are required)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whisper tests of one binary take turns: two whisper.cpp runs on this
/// 2-core machine oversubscribe it (its threads spin at barriers), and a
/// run then takes many times longer than alone. The runtime itself never
/// does this: one pool per process, sized to the cores.
pub async fn whisper_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// `text` spoken by espeak-ng, resampled by sox to 16 kHz mono 16-bit.
pub fn espeak_16k(dir: &Path, text: &str) -> Vec<i16> {
    let raw = dir.join("espeak.wav");
    let out = dir.join("speech16k.wav");
    run(Command::new("espeak-ng")
        .arg("-v")
        .arg("en-us")
        .arg("-w")
        .arg(&raw)
        .arg(text));
    run(Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&out));
    read_wav(&out).0
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
                threads: 2,
                workers,
                sized_audio_ctx: sized,
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
