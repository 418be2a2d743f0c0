//! Browser calls without a browser: the aiortc caller (PyPI, in
//! `data/venv`, `tests/fixtures/whip/aiortc_caller.py`) calls an agent
//! through WHIP, asks Piper-voiced questions and records the answers; a
//! node's ICE settings for loopback only.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// ICE on loopback only, on 100 UDP ports from `port_min`.
pub fn webrtc_env(port_min: u16) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHBOARD_WEBRTC__ICE_IPS", r#"["127.0.0.0/8"]"#.into()),
        ("SWITCHBOARD_WEBRTC__INCLUDE_LOOPBACK", "true".into()),
        ("SWITCHBOARD_WEBRTC__PORT_MIN", port_min.to_string()),
        ("SWITCHBOARD_WEBRTC__PORT_MAX", (port_min + 99).to_string()),
    ]
}

/// Runs the aiortc caller; its JSON report.
pub fn aiortc_call(dir: &Path, url: &str, token: &str, questions: &[&Path]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("data/venv/bin/python");
    assert!(
        python.is_file(),
        "data/venv is missing: run scripts/setup (it installs aiortc from PyPI)"
    );
    let report = dir.join("report.json");
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("tests/fixtures/whip/aiortc_caller.py"))
        .args(["--url", url, "--token", token])
        .arg("--out")
        .arg(dir.join("heard.wav"))
        .arg("--report")
        .arg(&report)
        // A fresh node warms whisper up for its first seconds; on a loaded
        // two-core machine a question asked meanwhile waits past its limit.
        .args(["--settle-ms", "5000"]);
    for q in questions {
        cmd.arg("--question").arg(q);
    }
    let out = cmd.output().expect("run the aiortc caller");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); the caller said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let v: Value = serde_json::from_str(&text).expect("report JSON");
    assert!(
        out.status.success(),
        "the aiortc call failed: {v:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

/// A question in the Piper voice as a 16 kHz WAV for the aiortc caller.
pub fn question_wav(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}-16k.wav"));
    write_wav_16k(&path, &super::caller_voice::speech_16k(dir, name, text));
    path
}

pub fn write_wav_16k(path: &Path, pcm: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for &s in pcm {
        w.write_sample(s).expect("sample");
    }
    w.finalize().expect("wav");
}
