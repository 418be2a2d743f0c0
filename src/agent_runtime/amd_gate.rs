//! The opening of an outbound call whose agent detects answering machines,
//! sans-IO: until the detector has decided, the called party's audio goes
//! to the [`AmdDetector`] (and nowhere else: a person's "Hello?" is not a
//! question to answer), the first stretch of their speech to the
//! recognizer, whose words go back to the detector. The gate then says how
//! the call opens: the greeting (a person, or no verdict), a hang-up, or —
//! on a machine whose greeting is over — the voicemail message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::amd::{AmdDetector, AmdEvent, AmdSettings, OnMachine, Verdict};
use crate::media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};

/// Transcription turns of the gate: far from the conversation's (from 1)
/// and the fixed lines' (from `u64::MAX / 2`).
const FIRST_TURN: u64 = u64::MAX - 4;
/// Speech the recognizer is asked about once it has lasted this long (as
/// `tests/amd_fixtures.rs` measured the detector).
const HEARD_FOR_WORDS: usize = 16_000;
/// At most this much of the called party's audio is kept (16 kHz).
const MAX_HEARD: usize = 6 * 16_000;
/// Before the onset, kept with the speech (the endpointer's onset plus
/// its pre-roll).
const LEAD_IN: usize = 300 * 16;
/// Transcriptions asked for at most.
const MAX_ASKS: u64 = 2;

/// What the call must do next.
#[derive(Debug, PartialEq)]
pub enum GateStep {
    Transcribe {
        turn: u64,
        audio: Arc<Vec<i16>>,
    },
    CancelTranscription {
        turn: u64,
    },
    /// The verdict, to be recorded (comes before the step it leads to).
    Decided {
        verdict: Verdict,
        reason: &'static str,
        after: Duration,
    },
    /// Open the conversation: the greeting.
    Greet,
    /// A machine answered and the agent leaves no message.
    HangUp,
    /// The machine's greeting is over: say this, then hang up.
    LeaveVoicemail(String),
}

pub struct AmdGate {
    detector: AmdDetector,
    on_machine: OnMachine,
    /// Finds the called party's pauses (the moments to transcribe).
    endpointer: Endpointer,
    heard: Vec<i16>,
    /// Where the first stretch of speech begins in `heard`.
    speech_from: Option<usize>,
    /// Samples of `heard` the last transcription covered.
    asked_upto: usize,
    asks: u64,
    /// Transcriptions asked for and not answered yet.
    waiting: Vec<u64>,
    done: bool,
}

impl AmdGate {
    pub fn new(
        settings: AmdSettings,
        on_machine: OnMachine,
        endpoint: EndpointConfig,
        answered_at: Instant,
    ) -> AmdGate {
        AmdGate {
            detector: AmdDetector::new(settings, answered_at),
            on_machine,
            endpointer: Endpointer::new(endpoint),
            heard: Vec::new(),
            speech_from: None,
            asked_upto: 0,
            asks: 0,
            waiting: Vec::new(),
            done: false,
        }
    }

    /// Whether a transcription turn is the gate's.
    pub fn owns_turn(turn: u64) -> bool {
        turn >= FIRST_TURN
    }

    /// The gate has opened the call; the conversation (or the voicemail)
    /// takes over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.done {
            None
        } else {
            self.detector.next_deadline()
        }
    }

    /// 20 ms of the called party's audio at 16 kHz.
    pub fn audio(&mut self, frame: &[i16], now: Instant) -> Vec<GateStep> {
        if self.done {
            return Vec::new();
        }
        self.detector.push_audio(frame, now);
        let mut out = Vec::new();
        if self.detector.verdict().is_none() {
            if self.heard.len() + frame.len() <= MAX_HEARD {
                self.heard.extend_from_slice(frame);
            }
            for ev in self.endpointer.push(frame, now) {
                match ev {
                    EndpointEvent::SpeechStarted { .. } if self.speech_from.is_none() => {
                        self.speech_from = Some(self.heard.len().saturating_sub(LEAD_IN));
                    }
                    EndpointEvent::PauseStarted { .. } | EndpointEvent::SpeechEnded { .. }
                        if self.asks == 0 =>
                    {
                        out.extend(self.ask(now));
                    }
                    _ => {}
                }
            }
            if let Some(from) = self.speech_from {
                // Still talking after a second: a greeting's first words.
                if self.endpointer.is_speaking()
                    && self.heard.len() >= from + HEARD_FOR_WORDS
                    && self.asked_upto < from + HEARD_FOR_WORDS
                {
                    out.extend(self.ask(now));
                }
            }
        }
        out.extend(self.steps());
        out
    }

    /// The recognizer's words for one of the gate's turns.
    pub fn transcribed(&mut self, turn: u64, text: Option<&str>, now: Instant) -> Vec<GateStep> {
        self.waiting.retain(|t| *t != turn);
        if self.done {
            return Vec::new();
        }
        if let Some(text) = text {
            self.detector.push_transcript(text, now);
        }
        self.steps()
    }

    pub fn tick(&mut self, now: Instant) -> Vec<GateStep> {
        if self.done {
            return Vec::new();
        }
        self.detector.tick(now);
        self.steps()
    }

    /// Asks the recognizer about the speech heard so far.
    fn ask(&mut self, _now: Instant) -> Option<GateStep> {
        let from = self.speech_from?;
        if self.asks >= MAX_ASKS || self.heard.len() <= self.asked_upto.max(from) {
            return None;
        }
        let turn = FIRST_TURN + self.asks;
        self.asks += 1;
        self.asked_upto = self.heard.len();
        self.waiting.push(turn);
        Some(GateStep::Transcribe {
            turn,
            audio: Arc::new(self.heard[from..].to_vec()),
        })
    }

    fn steps(&mut self) -> Vec<GateStep> {
        let mut out = Vec::new();
        while let Some(ev) = self.detector.poll_event() {
            match ev {
                AmdEvent::Decided {
                    verdict,
                    reason,
                    after,
                } => {
                    out.push(GateStep::Decided {
                        verdict,
                        reason,
                        after,
                    });
                    self.heard = Vec::new();
                    out.extend(
                        self.waiting
                            .drain(..)
                            .map(|turn| GateStep::CancelTranscription { turn }),
                    );
                    match (verdict, &self.on_machine) {
                        (Verdict::Machine, OnMachine::Voicemail(_)) => {}
                        (Verdict::Machine, OnMachine::HangUp) => {
                            self.done = true;
                            out.push(GateStep::HangUp);
                        }
                        _ => {
                            self.done = true;
                            out.push(GateStep::Greet);
                        }
                    }
                }
                AmdEvent::GreetingOver { reason } => {
                    if let (false, OnMachine::Voicemail(message)) = (self.done, &self.on_machine) {
                        tracing::info!(
                            reason,
                            "the machine's greeting is over: leaving the voicemail"
                        );
                        self.done = true;
                        out.push(GateStep::LeaveVoicemail(message.clone()));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_runtime::amd::test_signals::frame;

    const F: Duration = Duration::from_millis(20);

    /// The steps' kinds (the audio they carry is too long to print).
    fn names(steps: &[(usize, GateStep)]) -> String {
        steps
            .iter()
            .map(|(k, s)| match s {
                GateStep::Transcribe { turn, audio } => {
                    format!("{k}: transcribe {turn} ({} samples)", audio.len())
                }
                s => format!("{k}: {s:?}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A gate with the default settings, answered now.
    fn gate(on_machine: OnMachine) -> (Instant, AmdGate) {
        let t0 = Instant::now();
        let gate = AmdGate::new(
            AmdSettings::default(),
            on_machine,
            EndpointConfig::default(),
            t0,
        );
        (t0, gate)
    }

    fn run(gate: &mut AmdGate, t0: Instant, script: &str) -> Vec<(usize, GateStep)> {
        let mut out = Vec::new();
        for (k, c) in script.chars().enumerate() {
            let now = t0 + F * (k as u32 + 1);
            out.extend(gate.audio(&frame(c, k), now).into_iter().map(|s| (k, s)));
        }
        out
    }

    #[test]
    fn a_short_greeting_is_transcribed_once_and_opens_with_the_greeting() {
        let (t0, mut gate) = gate(OnMachine::HangUp);
        let script = "s".repeat(20) + &"v".repeat(30) + &"s".repeat(60);
        let steps = run(&mut gate, t0, &script);
        let asked: Vec<u64> = steps
            .iter()
            .filter_map(|(_, s)| match s {
                GateStep::Transcribe { turn, audio } => {
                    assert!(audio.len() >= 30 * 320, "the speech is in it");
                    Some(*turn)
                }
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 1, "{}", names(&steps));
        assert!(AmdGate::owns_turn(asked[0]));
        let tail: Vec<&GateStep> = steps
            .iter()
            .map(|(_, s)| s)
            .skip_while(|s| !matches!(s, GateStep::Decided { .. }))
            .collect();
        assert!(
            matches!(
                tail[0],
                GateStep::Decided {
                    verdict: Verdict::Human,
                    ..
                }
            ),
            "{}",
            names(&steps)
        );
        // The unanswered transcription is cancelled, then the greeting.
        assert_eq!(tail[1], &GateStep::CancelTranscription { turn: asked[0] });
        assert_eq!(tail[2], &GateStep::Greet);
        assert!(gate.is_done());
        assert!(gate.next_deadline().is_none());
    }

    #[test]
    fn greeting_words_decide_a_machine_and_silence_then_lets_the_voicemail_go() {
        let (t0, mut gate) = gate(OnMachine::Voicemail("Please call us back.".into()));
        // A greeting with a pause after its first words.
        let steps = run(
            &mut gate,
            t0,
            &("s".repeat(15) + &"v".repeat(40) + &"s".repeat(20)),
        );
        let turn = steps
            .iter()
            .find_map(|(_, s)| match s {
                GateStep::Transcribe { turn, .. } => Some(*turn),
                _ => None,
            })
            .expect("asked at the pause");
        let now = t0 + F * 76;
        let steps = gate.transcribed(turn, Some("You have reached the Millers."), now);
        assert!(
            matches!(
                steps[..],
                [GateStep::Decided {
                    verdict: Verdict::Machine,
                    reason: "greeting words",
                    ..
                }]
            ),
            "{steps:?}"
        );
        assert!(!gate.is_done(), "waits for the greeting's end");
        // Silence: the greeting is over 1.5 s after the last word, found by
        // a tick at the deadline the gate gave.
        let at = gate.next_deadline().expect("a deadline");
        assert!(at <= t0 + F * 55 + Duration::from_millis(1600), "{at:?}");
        let steps = gate.tick(at);
        assert_eq!(
            steps,
            vec![GateStep::LeaveVoicemail("Please call us back.".into())]
        );
        assert!(gate.is_done());
        // A late answer changes nothing.
        assert!(gate
            .transcribed(turn + 1, Some("leave a message"), at)
            .is_empty());
    }

    #[test]
    fn silence_times_out_to_the_greeting_without_audio() {
        let (t0, mut gate) = gate(OnMachine::HangUp);
        // No RTP at all: only ticks at the deadlines the gate gives.
        let mut now = t0;
        let mut steps = Vec::new();
        for _ in 0..5 {
            let Some(at) = gate.next_deadline() else {
                break;
            };
            now = at;
            steps.extend(gate.tick(now));
        }
        assert!(
            matches!(
                steps[..],
                [
                    GateStep::Decided {
                        verdict: Verdict::Unknown,
                        ..
                    },
                    GateStep::Greet
                ]
            ),
            "{steps:?}"
        );
        assert_eq!(now, t0 + Duration::from_millis(3000));
    }
}
