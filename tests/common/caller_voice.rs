//! The test caller's mouth and ears, independent of the node: questions are
//! spoken by a Piper neural voice (the reference implementation, PyPI
//! `piper-tts` in `data/venv`), cached by content under `data/cache`, and
//! what the agent says back is heard by whisper base, not the agent's model.
//! espeak-ng remains only for the one robustness case that asks for it.
//! Self-contained, so any test support module can include it by path.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use switchboard::agent_runtime::stt::{SpeechToText, WhisperOptions, WhisperStt};

/// The voice every test caller speaks with.
pub const VOICE: &str = "data/models/piper/en_US-joe-medium.onnx";
/// The caller-side recognizer: multilingual whisper base (the agent runs
/// tiny.en), so a test's ears do not share the agent's mistakes.
pub const EARS: &str = "data/models/ggml-base.bin";

/// Runs a command to completion, failing the test with its stderr on error.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (sox and espeak-ng: scripts/setup)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn missing(what: &str, path: &Path) -> ! {
    panic!(
        "{what} {} is missing: run scripts/setup (it installs data/venv with PyPI piper-tts \
         and puts the models in data/models)",
        path.display()
    )
}

/// Piper's sampling noise, off: the same text gives the same samples on every
/// machine and every run, so a test's audio (its onsets, pauses and levels)
/// is fixed and a threshold means the same thing in CI as here. The voice
/// is still the neural one, with its prosody a little flatter.
const PIPER_ARGS: [&str; 4] = ["--noise-scale", "0", "--noise-w-scale", "0"];

/// Piper's own output (22.05 kHz mono WAV) for `text`, synthesized once and
/// kept at `data/cache/caller-voice/<sha256 of voice, settings and text>.wav`.
pub fn piper_wav(text: &str) -> PathBuf {
    let python = root().join("data/venv/bin/python");
    let model = root().join(VOICE);
    if !python.is_file() {
        missing("the Piper venv", &python);
    }
    if !model.is_file() {
        missing("the Piper voice", &model);
    }
    let key = hex::encode(Sha256::digest(
        format!("{VOICE}\n{}\n{text}", PIPER_ARGS.join(" ")).as_bytes(),
    ));
    let dir = root().join("data/cache/caller-voice");
    let out = dir.join(format!("{key}.wav"));
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    // Written beside, then renamed: tests running at once never read half a file.
    let tmp = dir.join(format!("{key}.{}.tmp.wav", uuid::Uuid::new_v4().simple()));
    let result = Command::new(&python)
        .args(["-m", "piper", "-m"])
        .arg(&model)
        .args(PIPER_ARGS)
        .arg("-f")
        .arg(&tmp)
        .arg("--")
        .arg(text)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (run scripts/setup)", python.display()));
    assert!(
        result.status.success() && tmp.is_file(),
        "Piper failed for {text:?} (run scripts/setup): {}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("cache the caller's voice");
    out
}

/// `text` in the caller's voice as an 8 kHz mono 16-bit WAV in `dir`, with
/// `lead_ms` of silence before and `tail_ms` after.
pub fn speech_wav(dir: &Path, name: &str, text: &str, lead_ms: u32, tail_ms: u32) -> PathBuf {
    to_8k(
        &piper_wav(text),
        &dir.join(format!("{name}.wav")),
        lead_ms,
        tail_ms,
    )
}

/// `text` in the caller's voice as 16 kHz mono samples (no padding).
pub fn speech_16k(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let out = dir.join(format!("{name}-16k.wav"));
    run(Command::new("sox")
        .arg(piper_wav(text))
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&out));
    let mut r = hound::WavReader::open(&out).expect("open wav");
    r.samples::<i16>().map(|s| s.unwrap_or(0)).collect()
}

/// `text` in the caller's voice as the node hears it on a phone call: 8 kHz,
/// G.711 μ-law there and back, resampled to 16 kHz by the node's resampler.
pub fn phone_16k(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let wav = speech_wav(dir, name, text, 0, 0);
    let pcm: Vec<i16> = hound::WavReader::open(&wav)
        .expect("open wav")
        .samples::<i16>()
        .map(|s| s.unwrap_or(0))
        .collect();
    line_16k(&pcm)
}

/// 8 kHz samples after the phone line (G.711 μ-law there and back),
/// resampled to 16 kHz by the node's resampler.
pub fn line_16k(narrow: &[i16]) -> Vec<i16> {
    let mut codes = Vec::new();
    switchboard::media::g711::encode_ulaw(narrow, &mut codes);
    let mut back = Vec::new();
    switchboard::media::g711::decode_ulaw(&codes, &mut back);
    switchboard::media::resample::resample_all(&back, 8000, 16_000).expect("resample")
}

/// The agent's voice (`pcm` at `rate`) as the caller's recognizer gets it:
/// at 8 kHz, followed by half a second of the line going quiet as on a
/// call (an abrupt end makes whisper repeat the clip's tail), over the
/// phone line ([`line_16k`]).
pub fn agent_over_the_phone(pcm: &[i16], rate: u32) -> Vec<i16> {
    let mut narrow = switchboard::media::resample::resample_all(pcm, rate, 8000).expect("resample");
    narrow.extend(std::iter::repeat_n(0i16, 4000));
    line_16k(&narrow)
}

/// The robustness case only: `text` spoken by espeak-ng (a robotic voice
/// whisper often mishears), same format as [`speech_wav`].
pub fn espeak_speech_wav(
    dir: &Path,
    name: &str,
    text: &str,
    lead_ms: u32,
    tail_ms: u32,
) -> PathBuf {
    let raw = dir.join(format!("{name}-espeak.wav"));
    run(Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text));
    to_8k(&raw, &dir.join(format!("{name}.wav")), lead_ms, tail_ms)
}

fn to_8k(src: &Path, out: &Path, lead_ms: u32, tail_ms: u32) -> PathBuf {
    run(Command::new("sox")
        .arg(src)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(out)
        .args([
            "pad",
            &format!("{:.3}", lead_ms as f64 / 1000.0),
            &format!("{:.3}", tail_ms as f64 / 1000.0),
        ]));
    out.to_path_buf()
}

/// The caller's recognizer (whisper base), loaded once.
pub fn ears() -> &'static WhisperStt {
    static EARS_STT: std::sync::OnceLock<WhisperStt> = std::sync::OnceLock::new();
    EARS_STT.get_or_init(|| {
        let path = root().join(EARS);
        if !path.is_file() {
            missing("the caller-side whisper model", &path);
        }
        WhisperStt::load(
            &path,
            WhisperOptions {
                // One thread: the whisper-bound suites run two at a time
                // (`.config/nextest.toml`, `common::node::one_core_models`).
                threads: 1,
                workers: 1,
                sized_audio_ctx: true,
                temperature_fallback: false,
                beam_size: 1,
            },
        )
        .expect("load whisper base")
    })
}

/// What the caller's recognizer hears in 16 kHz samples, lower-cased.
/// A run that outlasts whisper's own time guard (a machine busy with other
/// work) is tried again, up to three times in all.
pub async fn hear_16k(pcm16k: &[i16]) -> String {
    let mut last = String::new();
    for _ in 0..3 {
        match try_hear_16k(pcm16k).await {
            Ok(text) => return text,
            Err(e) => last = e,
        }
    }
    panic!("the caller's recognizer failed three times: {last}")
}

/// [`hear_16k`], with the recognizer's error as a value (a benchmark on a
/// busy machine records it and goes on).
pub async fn try_hear_16k(pcm16k: &[i16]) -> Result<String, String> {
    ears()
        .transcribe(
            pcm16k,
            &switchboard::agent_runtime::stt::SttHints::language("en"),
        )
        .await
        .map(|t| t.text.to_lowercase())
        .map_err(|e| e.to_string())
}

/// Lower-case words only (punctuation and hyphens become spaces).
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// A word sequence repeated back to back ("can i pay by card can i pay"):
/// the first run of `min_len` or more words that reappears at once, or a
/// transcript that starts over with its own opening words.
pub fn repeated_run(text: &str, min_len: usize) -> Option<String> {
    let w = words(text);
    for len in min_len..=w.len() / 2 {
        for start in 0..=w.len() - 2 * len {
            if w[start..start + len] == w[start + len..start + 2 * len] {
                return Some(w[start..start + len].join(" "));
            }
        }
    }
    // "Can I pay by card? Can I pay": the opening words come back at the end.
    for len in (min_len..=w.len() / 2).rev() {
        if w[..len] == w[w.len() - len..] {
            return Some(w[..len].join(" "));
        }
    }
    None
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "is", "are", "we", "you",
    "your", "our", "us", "it", "its", "be", "can", "do", "does", "with", "by", "as", "that",
    "this", "i", "if", "from", "will", "have", "has", "so", "all", "also", "please", "just",
];

/// Spellings of the same spoken words, as a recognizer writes them and as
/// a text does (the kind of normalisation Whisper's own evaluation applies):
/// contractions, titles, "$120" for "120 dollars", "12,000" for "12000".
fn spoken_form(text: &str) -> String {
    let mut t = text
        .to_lowercase()
        .replace('\u{2019}', "'")
        .replace("check up", "checkup")
        .replace("check-up", "checkup")
        .replace("e-mail", "email")
        .replace("a.m.", "am")
        .replace("p.m.", "pm")
        .replace("dr.", "doctor")
        .replace("mrs.", "missus")
        .replace("mr.", "mister");
    for (short, long) in [
        ("there's", "there is"),
        ("it's", "it is"),
        ("that's", "that is"),
        ("what's", "what is"),
        ("here's", "here is"),
        ("i'm", "i am"),
        ("we're", "we are"),
        ("you're", "you are"),
        ("they're", "they are"),
        ("we'll", "we will"),
        ("i'll", "i will"),
        ("you'll", "you will"),
        ("we've", "we have"),
        ("i've", "i have"),
        ("don't", "do not"),
        ("doesn't", "does not"),
        ("isn't", "is not"),
        ("aren't", "are not"),
        ("won't", "will not"),
        ("can't", "can not"),
        ("cannot", "can not"),
    ] {
        t = t.replace(short, long);
    }
    // "$120" → "120 dollars"; "12,000" → "12000".
    let chars: Vec<char> = t.chars().collect();
    let digit_at = |k: usize| chars.get(k).is_some_and(|c| c.is_ascii_digit());
    let mut out = String::with_capacity(t.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' && digit_at(i + 1) {
            let mut j = i + 1;
            while j < chars.len()
                && (chars[j].is_ascii_digit() || (chars[j] == ',' && digit_at(j + 1)))
            {
                if chars[j] != ',' {
                    out.push(chars[j]);
                }
                j += 1;
            }
            out.push_str(" dollars");
            i = j;
            continue;
        }
        if c == ',' && i > 0 && chars[i - 1].is_ascii_digit() && digit_at(i + 1) {
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `a` with each pair of neighbours joined where `b` writes them as one
/// word ("audio books" against "audiobooks", "wi fi" against "wifi").
fn join_compounds(a: Vec<String>, b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(a.len());
    let mut i = 0;
    while i < a.len() {
        if let Some(next) = a.get(i + 1) {
            let joined = format!("{}{next}", a[i]);
            if b.contains(&joined) && !b.contains(&a[i]) {
                out.push(joined);
                i += 2;
                continue;
            }
        }
        out.push(a[i].clone());
        i += 1;
    }
    out
}

/// Words normalised for comparing meaning: numbers as digits ("one" and
/// "twelve thousand" as "1" and "12000"), "9am" as "9 am", the spellings of
/// [`spoken_form`].
pub fn norm_words(text: &str) -> Vec<String> {
    let spaced = spoken_form(text);
    let mut out: Vec<String> = Vec::new();
    // Whether the last word pushed was a spelled-out tens ("twenty").
    let mut after_tens: Option<bool> = None;
    for w in words(&spaced) {
        let scale = match w.as_str() {
            "hundred" => Some(100u64),
            "thousand" => Some(1000),
            _ => None,
        };
        if let (Some(scale), Some(n)) = (scale, out.last().and_then(|p| p.parse::<u64>().ok())) {
            if let Some(last) = out.last_mut() {
                *last = (n * scale).to_string();
            }
            continue;
        }
        let digits: String = w.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() && digits.len() < w.len() {
            out.push(digits.clone());
            out.push(w[digits.len()..].to_string());
            continue;
        }
        let n = match w.as_str() {
            "zero" => "0",
            "one" => "1",
            "two" => "2",
            "three" => "3",
            "four" => "4",
            "five" => "5",
            "six" => "6",
            "seven" => "7",
            "eight" => "8",
            "nine" => "9",
            "ten" => "10",
            "eleven" => "11",
            "twelve" => "12",
            "fifteen" => "15",
            "twenty" => "20",
            "thirty" => "30",
            "forty" => "40",
            "fifty" => "50",
            "sixty" => "60",
            "seventy" => "70",
            "eighty" => "80",
            "ninety" => "90",
            other => other,
        };
        // "twenty four" is 24.
        let unit = n.len() == 1 && n != "0" && n != w;
        if let (true, Some(true)) = (unit, after_tens) {
            if let Some(last) = out.last_mut() {
                *last = format!("{}{n}", &last[..1]);
            }
            after_tens = None;
            continue;
        }
        after_tens = Some(n.len() == 2 && n.ends_with('0') && n != w && n != "10");
        out.push(n.to_string());
    }
    out
}

/// The content words of `text` (stop words dropped), normalised.
pub fn key_words(text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for w in norm_words(text) {
        if !STOP_WORDS.contains(&w.as_str()) && !seen.contains(&w) {
            seen.push(w);
        }
    }
    seen
}

/// The share of `expected`'s key words found in `heard` (1.0 = all).
pub fn key_word_recall(expected: &str, heard: &str) -> f64 {
    let want = key_words(expected);
    if want.is_empty() {
        return 1.0;
    }
    let got = norm_words(heard);
    let found = want.iter().filter(|w| got.contains(w)).count();
    found as f64 / want.len() as f64
}

/// Word error rate of `hypothesis` against `reference` (normalised words;
/// substitutions + deletions + insertions over the reference's length) and
/// the reference's length.
pub fn wer(reference: &str, hypothesis: &str) -> (usize, usize) {
    let (r, h) = (norm_words(reference), norm_words(hypothesis));
    let r = join_compounds(r, &h);
    let h = join_compounds(h, &r);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}
