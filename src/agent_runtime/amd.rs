//! Answering-machine detection on outbound calls, sans-IO: fed the called
//! party's audio (16 kHz frames) and what the recognizer made of it, with
//! the time, it decides within a few seconds of the answer whether a person
//! or a machine picked up, and on a machine, when its greeting is over (the
//! beep, or a silence after the greeting) so a voicemail can be left.
//!
//! The rules are those of telephony AMD (Asterisk's `AMD()` and carrier
//! detectors): a person answers with a short "Hello?" and waits; a machine
//! talks on for seconds ("Hi, you've reached Sam, I can't take your call
//! right now, please leave a message after the tone") and ends with a pure
//! tone. The transcript adds what the audio alone misses: a short greeting
//! that says "leave a message" is a machine.

use std::time::{Duration, Instant};

use crate::media::tone::ToneDetector;
use crate::media::vad::Vad;

/// Thresholds of the decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmdSettings {
    /// Speech held longer than this (pauses under `word_gap` bridged) is
    /// a recorded greeting.
    pub max_human_greeting: Duration,
    /// A short greeting followed by this much silence is a person waiting
    /// for an answer.
    pub human_silence: Duration,
    /// Pauses shorter than this join two words into one stretch of speech.
    pub word_gap: Duration,
    /// No speech at all for this long after the answer: undecided (the
    /// agent speaks, as to a person who says nothing).
    pub initial_silence: Duration,
    /// No decision by then: undecided.
    pub deadline: Duration,
    /// After a machine's greeting, this much silence without a beep means
    /// the recording has started.
    pub silence_after_greeting: Duration,
    /// Longest wait for the greeting to end once a machine was decided.
    pub max_greeting_wait: Duration,
}

impl Default for AmdSettings {
    fn default() -> Self {
        AmdSettings {
            max_human_greeting: Duration::from_millis(1800),
            human_silence: Duration::from_millis(800),
            word_gap: Duration::from_millis(350),
            initial_silence: Duration::from_millis(3000),
            deadline: Duration::from_millis(4000),
            silence_after_greeting: Duration::from_millis(1500),
            max_greeting_wait: Duration::from_secs(30),
        }
    }
}

/// What an agent does about answering machines on its outbound calls
/// (`agents.amd_enabled`, `amd_action`, `voicemail_message`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AmdPolicy {
    pub enabled: bool,
    pub on_machine: OnMachine,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnMachine {
    #[default]
    HangUp,
    /// Wait for the greeting's end (the beep), say this, hang up.
    Voicemail(String),
}

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Human,
    Machine,
    /// Silence, or nothing conclusive before the deadline.
    Unknown,
}

impl Verdict {
    /// As stored in `call_logs.amd_result`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Human => "human",
            Verdict::Machine => "machine",
            Verdict::Unknown => "unknown",
        }
    }
}

/// What the detector reports, each at most once, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmdEvent {
    Decided {
        verdict: Verdict,
        reason: &'static str,
        /// Time from the answer to the decision.
        after: Duration,
    },
    /// On a machine: its greeting is over (`beep`, `silence` or `timeout`);
    /// a voicemail spoken now is recorded.
    GreetingOver { reason: &'static str },
}

/// Phrases of recorded greetings, matched on the lower-cased transcript.
const MACHINE_PHRASES: &[&str] = &[
    "leave a message",
    "leave your message",
    "leave me a message",
    "leave your name",
    "after the tone",
    "after the beep",
    "at the tone",
    "not available",
    "unavailable",
    "can't take your call",
    "cannot take your call",
    "can't come to the phone",
    "cannot come to the phone",
    "voicemail",
    "voice mail",
    "mailbox",
    "you have reached",
    "you've reached",
    "record your message",
];

/// Whether a transcript reads like a recorded greeting.
pub fn sounds_recorded(transcript: &str) -> bool {
    let t = transcript.to_lowercase().replace('’', "'");
    MACHINE_PHRASES.iter().any(|p| t.contains(p))
}

/// Frames a beep must last: 100 ms of 20 ms frames.
const BEEP_FRAMES: usize = 5;

pub struct AmdDetector {
    settings: AmdSettings,
    answered_at: Instant,
    vad: Vad,
    tone: ToneDetector,
    /// Start of the current stretch of speech and its last voiced frame.
    speech_start: Option<Instant>,
    last_voice: Option<Instant>,
    /// Speech heard at all, and how long the first stretch lasted.
    heard_speech: bool,
    decided: Option<Verdict>,
    greeting_over: bool,
    pending: Vec<AmdEvent>,
}

impl AmdDetector {
    pub fn new(settings: AmdSettings, answered_at: Instant) -> AmdDetector {
        AmdDetector {
            settings,
            answered_at,
            vad: Vad::default(),
            tone: ToneDetector::new(16_000, BEEP_FRAMES),
            speech_start: None,
            last_voice: None,
            heard_speech: false,
            decided: None,
            greeting_over: false,
            pending: Vec::new(),
        }
    }

    /// The verdict, once decided.
    pub fn verdict(&self) -> Option<Verdict> {
        self.decided
    }

    /// Whether the detector has nothing more to say.
    pub fn finished(&self) -> bool {
        match self.decided {
            Some(Verdict::Machine) => self.greeting_over && self.pending.is_empty(),
            Some(_) => self.pending.is_empty(),
            None => false,
        }
    }

    fn decide(&mut self, verdict: Verdict, reason: &'static str, now: Instant) {
        if self.decided.is_some() {
            return;
        }
        self.decided = Some(verdict);
        self.pending.push(AmdEvent::Decided {
            verdict,
            reason,
            after: now.saturating_duration_since(self.answered_at),
        });
    }

    fn greeting_over(&mut self, reason: &'static str) {
        if self.decided == Some(Verdict::Machine) && !self.greeting_over {
            self.greeting_over = true;
            self.pending.push(AmdEvent::GreetingOver { reason });
        }
    }

    /// One 20 ms frame of the called party's audio at 16 kHz.
    pub fn push_audio(&mut self, frame: &[i16], now: Instant) {
        if self.finished() {
            return;
        }
        if self.tone.push(frame) {
            // A beep: a machine, and its greeting is over.
            self.decide(Verdict::Machine, "beep", now);
            self.greeting_over("beep");
        }
        if self.vad.is_speech(frame) {
            self.heard_speech = true;
            let bridged = self
                .last_voice
                .is_some_and(|l| now.saturating_duration_since(l) <= self.settings.word_gap);
            if !bridged {
                self.speech_start = Some(now);
            }
            self.last_voice = Some(now);
        }
        self.tick(now);
    }

    /// What the recognizer heard of the called party so far.
    pub fn push_transcript(&mut self, text: &str, now: Instant) {
        if self.decided.is_none() && sounds_recorded(text) {
            self.decide(Verdict::Machine, "greeting words", now);
        }
    }

    /// The time-based rules; call on every frame and on timers.
    pub fn tick(&mut self, now: Instant) {
        let since_answer = now.saturating_duration_since(self.answered_at);
        let silent_for = self.last_voice.map(|l| now.saturating_duration_since(l));
        if self.decided.is_none() {
            if let (Some(start), Some(last)) = (self.speech_start, self.last_voice) {
                let stretch = last.saturating_duration_since(start);
                if stretch > self.settings.max_human_greeting {
                    self.decide(Verdict::Machine, "long greeting", now);
                } else if silent_for.is_some_and(|s| s >= self.settings.human_silence) {
                    self.decide(Verdict::Human, "short greeting", now);
                }
            }
            if self.decided.is_none() {
                if !self.heard_speech && since_answer >= self.settings.initial_silence {
                    self.decide(Verdict::Unknown, "silence", now);
                } else if since_answer >= self.settings.deadline {
                    self.decide(Verdict::Unknown, "undecided", now);
                }
            }
        }
        if self.decided == Some(Verdict::Machine) && !self.greeting_over {
            if silent_for.is_some_and(|s| s >= self.settings.silence_after_greeting) {
                self.greeting_over("silence");
            } else if since_answer >= self.settings.max_greeting_wait {
                self.greeting_over("timeout");
            }
        }
    }

    /// When `tick` next has something to decide (the time rules only; the
    /// length of a greeting is judged on its frames).
    pub fn next_deadline(&self) -> Option<Instant> {
        let (a, s) = (self.answered_at, &self.settings);
        let mut at: Vec<Instant> = Vec::with_capacity(3);
        match self.decided {
            None => {
                at.push(a + s.deadline);
                if !self.heard_speech {
                    at.push(a + s.initial_silence);
                }
                if let Some(last) = self.last_voice {
                    at.push(last + s.human_silence);
                }
            }
            Some(Verdict::Machine) if !self.greeting_over => {
                at.push(a + s.max_greeting_wait);
                if let Some(last) = self.last_voice {
                    at.push(last + s.silence_after_greeting);
                }
            }
            _ => {}
        }
        at.into_iter().min()
    }

    /// The next thing to report, if any.
    pub fn poll_event(&mut self) -> Option<AmdEvent> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.pending.remove(0))
        }
    }
}

/// Signals the detector's tests feed it (here, in the gate's and in the
/// call machine's).
#[cfg(test)]
pub(crate) mod test_signals {
    /// A voice-like signal the VAD takes for speech: a 140 Hz buzz with
    /// harmonics, its loudness swinging at a syllable rate (frame `k`).
    pub fn voiced(k: usize) -> Vec<i16> {
        (0..320)
            .map(|i| {
                let t = (k * 320 + i) as f32 / 16000.0;
                let syllable = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                (1..12)
                    .map(|h| {
                        let f = 140.0 * h as f32;
                        2500.0 / h as f32 * (2.0 * std::f32::consts::PI * f * t).sin()
                    })
                    .sum::<f32>()
                    * syllable
            })
            .map(|v| v.clamp(-32000.0, 32000.0) as i16)
            .collect()
    }

    /// Frame `k` of a 1 kHz beep.
    pub fn beep(k: usize) -> Vec<i16> {
        (0..320)
            .map(|i| {
                (8000.0
                    * (2.0 * std::f32::consts::PI * 1000.0 * (k * 320 + i) as f32 / 16000.0).sin())
                    as i16
            })
            .collect()
    }

    /// Frame `k` of a script: `v` voice, `b` beep, anything else silence.
    pub fn frame(c: char, k: usize) -> Vec<i16> {
        match c {
            'v' => voiced(k),
            'b' => beep(k),
            _ => vec![0i16; 320],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_signals::frame;
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    /// Feeds `script` (frame kinds: 'v' voice, 's' silence, 'b' beep) and
    /// returns the events with the frame index they came on.
    fn run(script: &str) -> Vec<(usize, AmdEvent)> {
        let t0 = Instant::now();
        let mut d = AmdDetector::new(AmdSettings::default(), t0);
        let mut out = Vec::new();
        for (k, c) in script.chars().enumerate() {
            let now = t0 + FRAME * (k as u32 + 1);
            d.push_audio(&frame(c, k), now);
            while let Some(e) = d.poll_event() {
                out.push((k, e));
            }
        }
        out
    }

    fn frames(kind: char, ms: usize) -> String {
        std::iter::repeat_n(kind, ms / 20).collect()
    }

    #[test]
    fn a_short_hello_then_silence_is_a_person() {
        let script = frames('s', 400) + &frames('v', 600) + &frames('s', 2000);
        let events = run(&script);
        let (_, first) = events.first().copied().expect("a decision");
        match first {
            AmdEvent::Decided { verdict, after, .. } => {
                assert_eq!(verdict, Verdict::Human);
                // 0.4 s wait + 0.6 s hello + 0.8 s silence, give or take the VAD.
                assert!(after < Duration::from_millis(2200), "{after:?}");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn a_long_greeting_is_a_machine_and_the_beep_ends_it() {
        let script = frames('s', 300)
            + &frames('v', 1200)
            + &frames('s', 200)
            + &frames('v', 2500)
            + &frames('s', 300)
            + &frames('b', 400)
            + &frames('s', 500);
        let events = run(&script);
        assert!(
            matches!(events[0].1, AmdEvent::Decided { verdict: Verdict::Machine, reason: "long greeting", after } if after < Duration::from_millis(3000)),
            "{events:?}"
        );
        let beep_at = script.find('b').unwrap();
        let (k, over) = events[1];
        assert_eq!(over, AmdEvent::GreetingOver { reason: "beep" });
        assert!(
            k >= beep_at + 4 && k <= beep_at + 6,
            "beep at {beep_at}, reported at {k}"
        );
    }

    #[test]
    fn a_machine_without_a_beep_is_over_after_a_silence() {
        let script = frames('v', 3000) + &frames('s', 2500);
        let events = run(&script);
        assert!(matches!(
            events[0].1,
            AmdEvent::Decided {
                verdict: Verdict::Machine,
                ..
            }
        ));
        assert_eq!(events[1].1, AmdEvent::GreetingOver { reason: "silence" });
    }

    #[test]
    fn silence_is_undecided_and_words_decide_a_machine() {
        let events = run(&frames('s', 4000));
        assert!(
            matches!(
                events[..],
                [(
                    _,
                    AmdEvent::Decided {
                        verdict: Verdict::Unknown,
                        reason: "silence",
                        ..
                    }
                )]
            ),
            "{events:?}"
        );
        let t0 = Instant::now();
        let mut d = AmdDetector::new(AmdSettings::default(), t0);
        d.push_transcript("Hi, you’ve reached Sam.", t0 + Duration::from_millis(900));
        assert!(matches!(
            d.poll_event(),
            Some(AmdEvent::Decided {
                verdict: Verdict::Machine,
                reason: "greeting words",
                ..
            })
        ));
        assert!(sounds_recorded("Please LEAVE A MESSAGE after the tone"));
        assert!(!sounds_recorded("Hello? Who is this?"));
    }
}
