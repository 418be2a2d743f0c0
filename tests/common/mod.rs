//! Shared helpers for end-to-end tests: callers' speech (a Piper voice, see
//! `caller_voice`) and sox, a scripted baresip caller, and a caller-side
//! whisper to understand what the agent said. Every external tool is required: a missing one fails the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs a command to completion, failing the test with its stderr on error.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speaks `text` in the caller's voice (Piper, see `caller_voice`) into an
/// 8 kHz mono 16-bit WAV with `lead_ms` of silence before and `tail_ms`
/// after (baresip ends the call when its audio file ends, so the tail is how
/// long the caller listens).
pub fn speech_wav(dir: &Path, name: &str, text: &str, lead_ms: u32, tail_ms: u32) -> PathBuf {
    caller_voice::speech_wav(dir, name, text, lead_ms, tail_ms)
}

/// Concatenates WAV files (same format) with sox.
pub fn concat_wav(parts: &[PathBuf], out: &Path) {
    let mut cmd = Command::new("sox");
    for p in parts {
        cmd.arg(p);
    }
    cmd.arg(out);
    run(&mut cmd);
}

/// Reads a WAV file as mono i16 samples and its sample rate.
pub fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap_or(0)).collect();
    let mono = if spec.channels == 2 {
        samples.chunks(2).map(|c| c[0]).collect()
    } else {
        samples
    };
    (mono, spec.sample_rate)
}

/// Resamples a WAV to 16 kHz mono with sox and returns the samples.
pub fn wav_16k(path: &Path) -> Vec<i16> {
    let out = path.with_extension("16k.wav");
    run(Command::new("sox")
        .arg(path)
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&out));
    read_wav(&out).0
}

/// A scripted baresip caller (Debian `baresip-core`), headless: plays a WAV
/// as its microphone and writes what it hears to `dir/dump-*-dec.wav`.
pub struct BaresipCall {
    pub dir: PathBuf,
    pub output: std::process::Output,
}

impl BaresipCall {
    /// Dials `uri` from `127.0.0.1:sip_port` playing `wav`, and quits after
    /// `max_secs`. The call ends (baresip hangs up) when the file ends.
    pub fn dial(dir: &Path, sip_port: u16, uri: &str, wav: &Path, max_secs: u32) -> BaresipCall {
        Self::dial_rtp(dir, sip_port, (31000, 31999), uri, wav, max_secs)
    }

    /// [`BaresipCall::dial`] with its RTP ports in `rtp` (a suite's own range).
    pub fn dial_rtp(
        dir: &Path,
        sip_port: u16,
        rtp: (u16, u16),
        uri: &str,
        wav: &Path,
        max_secs: u32,
    ) -> BaresipCall {
        std::fs::create_dir_all(dir).expect("baresip dir");
        let config = format!(
            "poll_method\tepoll\nsip_listen\t127.0.0.1:{sip_port}\n\
             audio_player\taufile,/dev/null\naudio_source\taufile,{wav}\naudio_alert\taufile,/dev/null\n\
             audio_srate\t8000\naudio_channels\t1\n\
             module_path\t/usr/lib/baresip/modules\nmodule\tg711.so\nmodule\taccount.so\nmodule\taufile.so\nmodule\tsndfile.so\n\
             module_app\tmenu.so\nsnd_path\t{dir}\nrtp_ports\t{}-{}\n",
            rtp.0,
            rtp.1,
            wav = wav.display(),
            dir = dir.display()
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        std::fs::write(dir.join("accounts"), "<sip:test@127.0.0.1>;regint=0\n")
            .expect("baresip accounts");
        std::fs::write(dir.join("contacts"), "").expect("baresip contacts");
        let output = baresip_dial(dir, uri, max_secs);
        BaresipCall {
            dir: dir.to_path_buf(),
            output,
        }
    }

    pub fn log(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// The decoded audio baresip received from us.
    pub fn received_wav(&self) -> PathBuf {
        std::fs::read_dir(&self.dir)
            .expect("baresip dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
            })
            .unwrap_or_else(|| panic!("baresip wrote no dump-*-dec.wav; its log:\n{}", self.log()))
    }
}

/// Runs baresip with the configuration in `dir`, dials `uri`, and quits
/// after `max_secs` (killed 10 s later if it hangs).
pub fn baresip_dial(dir: &Path, uri: &str, max_secs: u32) -> std::process::Output {
    Command::new("timeout")
        .arg(format!("{}", max_secs + 10))
        .arg("baresip")
        .arg("-f")
        .arg(dir)
        .arg("-e")
        .arg(format!("/dial {uri}"))
        .arg("-t")
        .arg(max_secs.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("baresip (Debian package baresip-core) must be installed")
}

pub fn short_timeout() -> Duration {
    Duration::from_secs(20)
}
pub mod caller_voice;
pub mod mock_openai;
pub mod node;
pub mod pcap;
pub mod pgcluster;
pub mod sip_caller;
pub mod warm;
pub mod whip;
