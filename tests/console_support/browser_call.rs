//! One browser call from the console's "Talk to an agent" page, as a person
//! makes it: Chromium's fake microphone plays a question, the page calls
//! the agent over WebRTC (WHIP), and what the page recorded (microphone
//! left, agent right, on the page's one audio clock) is read back with the
//! live transcript it showed, the ICE pair it used and the call's id.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use super::cdp::Page;

/// The fake microphone's file: `lead_ms` of silence (the greeting plays
/// meanwhile), `text` in the Piper test voice, `tail_ms` of silence, as
/// 48 kHz mono 16-bit (Chromium plays it once, from the start of capture).
pub fn microphone_wav(dir: &Path, text: &str, lead_ms: u32, tail_ms: u32) -> PathBuf {
    let out = dir.join("microphone.wav");
    crate::common::run(
        std::process::Command::new("sox")
            .arg(crate::common::caller_voice::piper_wav(text))
            .args(["-r", "48000", "-c", "1", "-b", "16", "-e", "signed-integer"])
            .arg(&out)
            .args([
                "pad",
                &format!("{}", lead_ms as f64 / 1000.0),
                &format!("{}", tail_ms as f64 / 1000.0),
            ]),
    );
    out
}

pub struct BrowserCall {
    /// `role:text` of each line the page's live transcript showed.
    pub transcript: Vec<String>,
    /// The page's recording: (microphone, agent) samples at `rate`.
    pub mic: Vec<i16>,
    pub agent: Vec<i16>,
    pub rate: u32,
    /// The ICE pair the browser used: (local address, remote address).
    pub pair: (String, String),
    /// Every candidate pair the browser formed (checked or not).
    pub pairs: Vec<(String, String)>,
    pub call_log_id: Option<String>,
}

/// Signs the demo OWNER in to the console at `base` and opens "Talk to an
/// agent" for `agent`, ready to start a call.
pub async fn open_talk_page(page: &Page, base: &str, agent: uuid::Uuid) {
    sign_in(page, base).await;
    page.eval(&format!("location.hash = '#/talk/{agent}'; true"))
        .await
        .expect("to the talk page");
    page.wait_for(
        "document.getElementById('main').dataset.ready === 'true' && !!document.getElementById('talk-start') && !document.getElementById('talk-start').disabled",
        Duration::from_secs(30),
        "the talk page",
    )
    .await;
}

/// Signs the demo OWNER in to the console at `base`.
pub async fn sign_in(page: &Page, base: &str) {
    page.navigate(&format!("{base}/console#/login")).await;
    page.wait_for(
        "!!document.getElementById('email')",
        Duration::from_secs(30),
        "login form",
    )
    .await;
    page.eval(&format!(
        "document.getElementById('email').value = '{}';
         document.getElementById('password').value = '{}';
         document.getElementById('login-submit').click(); true",
        super::OWNER_EMAIL,
        super::PASSWORD
    ))
    .await
    .expect("sign in");
    page.wait_for(
        "document.getElementById('main').dataset.page === 'agents'",
        Duration::from_secs(30),
        "signed in",
    )
    .await;
}

const READ_LINES: &str = "[...document.querySelectorAll('#talk-transcript .line')].map(e => e.dataset.role + ':' + e.lastChild.textContent)";

/// On the talk page of `agent` (already open and signed in): starts the
/// call, waits until the transcript holds a user line and then an agent
/// line that both match `answered` (lower-cased), lets the answer play for
/// `listen`, reads everything back and hangs up.
pub async fn talk(page: &Page, answered: &str, limit: Duration, listen: Duration) -> BrowserCall {
    talk_then(page, answered, limit, listen, || async {}).await
}

/// [`talk`], with `then` run once the exchange is seen (before listening
/// and hanging up).
pub async fn talk_then<F, Fut>(
    page: &Page,
    answered: &str,
    limit: Duration,
    listen: Duration,
    then: F,
) -> BrowserCall
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    page.eval("document.getElementById('talk-start').click(); true")
        .await
        .expect("start");
    let mut transcript = wait_for_exchange(page, answered, limit).await;
    then().await;
    tokio::time::sleep(listen).await;
    let later = page
        .eval(READ_LINES)
        .await
        .ok()
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default();
    if later.len() > transcript.len() {
        transcript = later;
    }
    finish(page, transcript).await
}

/// The page's transcript once it holds a user line matching `answered`
/// (lower-cased) and then an agent line matching it too.
pub async fn wait_for_exchange(page: &Page, answered: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let lines: Vec<String> = page
            .eval(READ_LINES)
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let user = lines
            .iter()
            .position(|l| l.starts_with("user:") && l.to_lowercase().contains(answered));
        let answer = user.and_then(|u| {
            lines[u..]
                .iter()
                .position(|l| l.starts_with("assistant:") && l.to_lowercase().contains(answered))
        });
        if answer.is_some() {
            return lines;
        }
        if Instant::now() > deadline {
            let state = page
                .eval("document.getElementById('talk-state').textContent")
                .await;
            panic!(
                "the page's transcript shows no question and answer about {answered:?} within {limit:?}: {lines:?} (state: {state:?}); page errors: {:?}",
                page.errors()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the call's ICE pairs, recording and id back, and hangs up.
async fn finish(page: &Page, transcript: Vec<String>) -> BrowserCall {
    let stats = page
        .eval(
            "(async () => { const s = await SB.talk.call.pc.getStats(); let pair = null; const all = [];
               const ends = p => { const l = s.get(p.localCandidateId), r = s.get(p.remoteCandidateId);
                                   return [l.address || l.ip, r.address || r.ip]; };
               s.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = s.get(r.selectedCandidatePairId); });
               s.forEach(r => { if (r.type === 'candidate-pair') { all.push(ends(r));
                                  if (!pair && r.nominated && r.state === 'succeeded') pair = r; } });
               return {selected: pair ? ends(pair) : null, all}; })()",
        )
        .await
        .expect("ICE stats");
    let pair: (String, String) = serde_json::from_value(stats["selected"].clone())
        .unwrap_or_else(|_| panic!("no selected ICE pair: {stats}"));
    let pairs: Vec<(String, String)> =
        serde_json::from_value(stats["all"].clone()).unwrap_or_default();
    let marks = page.eval("SB.talk.marks()").await.expect("marks");
    let wav = page.eval("SB.talk.recording()").await.expect("recording");
    page.eval("document.getElementById('talk-stop').click(); true")
        .await
        .expect("hang up");
    page.wait_for(
        "document.getElementById('talk-state').textContent === 'Call ended.'",
        Duration::from_secs(20),
        "the page hangs up",
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(wav.as_str().expect("recording base64"))
        .expect("base64");
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("page's WAV");
    let spec = reader.spec();
    assert_eq!(spec.channels, 2, "stereo: microphone and agent");
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap_or(0)).collect();
    let (mut mic, mut agent) = (Vec::new(), Vec::new());
    for frame in samples.chunks_exact(2) {
        mic.push(frame[0]);
        agent.push(frame[1]);
    }
    BrowserCall {
        transcript,
        mic,
        agent,
        rate: spec.sample_rate,
        pair,
        pairs,
        call_log_id: marks_call(&marks),
    }
}

fn marks_call(marks: &Value) -> Option<String> {
    marks["callId"].as_str().map(str::to_string)
}

/// RMS of each 20 ms frame.
fn frames(pcm: &[i16], rate: u32) -> Vec<f64> {
    let n = (rate / 50) as usize;
    pcm.chunks(n)
        .map(|c| (c.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
        .collect()
}

/// Frames louder than this are speech (about -40 dBFS).
const SPEECH_RMS: f64 = 300.0;

impl BrowserCall {
    /// End of the question in the microphone channel (ms from the start of
    /// the recording): the end of its last loud frame.
    pub fn question_end_ms(&self) -> Option<u64> {
        let f = frames(&self.mic, self.rate);
        f.iter()
            .rposition(|&r| r > SPEECH_RMS)
            .map(|i| (i as u64 + 1) * 20)
    }

    /// Voice-to-voice where the user is: end of the question in the
    /// microphone → the agent's first audio after it, on one clock.
    pub fn voice_to_voice_ms(&self) -> Option<u64> {
        let end = self.question_end_ms()?;
        let f = frames(&self.agent, self.rate);
        let first = (end / 20) as usize;
        f.iter()
            .skip(first)
            .position(|&r| r > SPEECH_RMS)
            .map(|i| (first + i) as u64 * 20 - end)
    }

    /// The agent's audio after the question, at 16 kHz (for whisper).
    pub fn answer_16k(&self) -> Vec<i16> {
        let end = self.question_end_ms().unwrap_or(0);
        let from = (end * self.rate as u64 / 1000) as usize;
        let step = (self.rate / 16_000).max(1) as usize;
        self.agent[from.min(self.agent.len())..]
            .chunks(step)
            .map(|c| (c.iter().map(|&s| s as i32).sum::<i32>() / c.len() as i32) as i16)
            .collect()
    }
}
