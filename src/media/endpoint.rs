//! Endpointing, sans-IO: 20 ms frames of 16 kHz audio and `now` in, turn
//! events out. Speech starts after `onset_ms` of voice, a pause begins at
//! the first silent frame (handing over the utterance so far, which the
//! runtime may transcribe speculatively), and the turn ends after
//! `end_of_turn_silence_ms` of silence, handing over the whole utterance.
//! This is the one buffer of the caller's utterance: both hand-overs start
//! `pre_roll_ms` before the onset, so the first word is whole and the
//! speculative audio is a prefix of the final one. [`Endpointer::speech_ms`]
//! serves barge-in decisions.
//!
//! Time convention: a frame pushed with `now` covers `[now − 20 ms, now]`.
//! Event `at` fields are audio times: `SpeechStarted.at` is the start of the
//! first voiced frame, `SpeechEnded.at` the end of the last voiced frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::vad::Vad;

/// Samples per millisecond at 16 kHz.
const SPMS: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    /// Voice needed before speech counts as started.
    pub onset_ms: u32,
    /// Silence after speech that ends the turn.
    pub end_of_turn_silence_ms: u32,
    /// Audio kept before the onset and prepended to the utterance.
    pub pre_roll_ms: u32,
    /// Audio kept after the last voiced frame.
    pub tail_ms: u32,
    /// Voice needed during a pause to count as resumed speech (shorter
    /// blips are treated as noise inside the pause).
    pub resume_ms: u32,
    /// An utterance is cut (ended) at this length: bounds memory.
    pub max_utterance_ms: u32,
    /// VAD score threshold (0..1).
    pub vad_threshold: f32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            onset_ms: 100,
            end_of_turn_silence_ms: 500,
            pre_roll_ms: 200,
            tail_ms: 100,
            resume_ms: 40,
            max_utterance_ms: 30_000,
            vad_threshold: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndpointEvent {
    /// The first voiced frame of a run while idle, before the onset is
    /// confirmed (it may be a blip). Barge-in holds the agent's audio here
    /// rather than `onset_ms` later; no `SpeechStarted` within about
    /// `onset_ms` means it was nothing.
    VoiceDetected {
        at: Instant,
    },
    SpeechStarted {
        at: Instant,
    },
    /// First silent frame after speech; `at` is the end of the caller's
    /// voice (the last loud voiced frame). `audio`: the utterance so far
    /// (pre-roll + speech + this frame), what a speculative transcription
    /// takes; the same samples begin `SpeechEnded.audio`.
    PauseStarted {
        at: Instant,
        audio: Arc<Vec<i16>>,
    },
    /// Voice again before the turn ended (discard speculative work).
    SpeechResumed {
        at: Instant,
    },
    /// The turn is over. `audio`: 16 kHz mono, pre-roll + speech + tail.
    SpeechEnded {
        audio: Vec<i16>,
        at: Instant,
        speech_ms: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Speaking,
    Paused,
}

/// Timing and level of one pushed frame.
#[derive(Debug, Clone, Copy)]
struct FrameMeta {
    start: Instant,
    end: Instant,
    db: f32,
    samples: usize,
}

/// Boundary refinement: how far the level may move the VAD's start back
/// (the detector needs a few frames to commit, more so in noise) and its
/// end back (it lingers over trailing noise).
const START_BACK_FRAMES: usize = 5;
const END_BACK_FRAMES: usize = 10;
/// A frame is "loud" when this far above the noise floor, and never below
/// the absolute floor.
const LOUD_ABOVE_NOISE_DB: f32 = 6.0;
/// One quiet stretch an onset may contain: the closure of a stop consonant
/// in the first word ("Ac-tually") sinks to the background for 60–80 ms,
/// and in loud noise that broke the onset and put the start of speech a
/// word late. Only after a syllable's worth of voice, and only once, so
/// blips and clicks never add up to speech.
const ONSET_GAP_MS: u32 = 80;
const ONSET_GAP_AFTER_MS: u32 = 60;
const LOUD_FLOOR_DBFS: f32 = -55.0;

fn level_db(frame: &[i16]) -> f32 {
    let ms =
        frame.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / frame.len().max(1) as f64;
    (10.0 * (ms / (32768.0 * 32768.0)).max(1e-10).log10()) as f32
}

#[derive(Debug)]
pub struct Endpointer {
    cfg: EndpointConfig,
    vad: Vad,
    state: State,
    /// Recent audio while idle (pre-roll + onset), bounded, with its frames.
    history: VecDeque<i16>,
    history_meta: VecDeque<FrameMeta>,
    utterance: Vec<i16>,
    utt_meta: Vec<FrameMeta>,
    voiced_run_ms: u32,
    /// Frames since the run began, quiet ones inside it included.
    voiced_run_frames: usize,
    /// Quiet time inside the current onset run, and whether voice came back
    /// after it (the one dip allowed is used up).
    onset_gap_ms: u32,
    onset_gap_closed: bool,
    run_start: Option<Instant>,
    speech_start: Option<Instant>,
    /// Index in `utt_meta` of the first voiced frame and of the last one.
    start_idx: usize,
    last_voice_idx: usize,
    /// Background level, followed while nobody speaks.
    noise_db: Option<f32>,
}

impl Endpointer {
    pub fn new(cfg: EndpointConfig) -> Endpointer {
        Endpointer {
            vad: Vad::new(cfg.vad_threshold),
            cfg,
            state: State::Idle,
            history: VecDeque::new(),
            history_meta: VecDeque::new(),
            utterance: Vec::new(),
            utt_meta: Vec::new(),
            voiced_run_ms: 0,
            voiced_run_frames: 0,
            onset_gap_ms: 0,
            onset_gap_closed: false,
            run_start: None,
            speech_start: None,
            start_idx: 0,
            last_voice_idx: 0,
            noise_db: None,
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Forgets any speech in progress (e.g. after the agent's turn began
    /// with the caller's audio discarded). The VAD's context and the noise
    /// estimate are kept.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.history.clear();
        self.history_meta.clear();
        self.utterance = Vec::new();
        self.utt_meta = Vec::new();
        self.voiced_run_ms = 0;
        self.voiced_run_frames = 0;
        self.onset_gap_ms = 0;
        self.onset_gap_closed = false;
        self.run_start = None;
        self.speech_start = None;
        self.start_idx = 0;
        self.last_voice_idx = 0;
    }

    /// True from onset until the first silent frame, and again on resume.
    pub fn is_speaking(&self) -> bool {
        self.state == State::Speaking
    }

    /// True from onset until the turn ends (pauses included).
    pub fn in_turn(&self) -> bool {
        self.state != State::Idle
    }

    /// Caller speech so far in this turn (onset to last voiced frame): what
    /// barge-in compares with `barge_in_min_ms`.
    pub fn speech_ms(&self) -> u32 {
        match (self.speech_start, self.utt_meta.get(self.last_voice_idx)) {
            (Some(s), Some(m)) if self.state != State::Idle => {
                m.end.saturating_duration_since(s).as_millis() as u32
            }
            _ => 0,
        }
    }

    fn loud_db(&self) -> f32 {
        self.noise_db.map_or(LOUD_FLOOR_DBFS, |n| {
            (n + LOUD_ABOVE_NOISE_DB).max(LOUD_FLOOR_DBFS)
        })
    }

    /// Runs the VAD on `frame` and advances the state machine.
    pub fn push(&mut self, frame: &[i16], now: Instant) -> Vec<EndpointEvent> {
        let voiced = self.vad.is_speech(frame);
        self.push_classified(frame, voiced, now)
    }

    /// Advances the state machine with an external voice decision (tests,
    /// or a different VAD).
    pub fn push_classified(
        &mut self,
        frame: &[i16],
        voiced: bool,
        now: Instant,
    ) -> Vec<EndpointEvent> {
        let frame_ms = (frame.len() / SPMS) as u32;
        let start = now
            .checked_sub(Duration::from_millis(frame_ms as u64))
            .unwrap_or(now);
        let meta = FrameMeta {
            start,
            end: now,
            db: level_db(frame),
            samples: frame.len(),
        };
        let mut events = Vec::new();
        match self.state {
            State::Idle => self.idle(frame, meta, voiced, frame_ms, &mut events),
            State::Speaking => {
                self.utterance.extend_from_slice(frame);
                self.utt_meta.push(meta);
                if voiced {
                    self.last_voice_idx = self.utt_meta.len() - 1;
                } else {
                    self.state = State::Paused;
                    self.voiced_run_ms = 0;
                    self.run_start = None;
                    // The pause is timed from the end of the caller's voice
                    // as the end of turn is (the detector lingers over
                    // trailing quiet frames), so an early answer's silence
                    // and the full one are counted from the same moment.
                    let (_, end) = self.refined_end();
                    events.push(EndpointEvent::PauseStarted {
                        at: end.min(start),
                        audio: Arc::new(self.utterance.clone()),
                    });
                }
            }
            State::Paused => {
                self.utterance.extend_from_slice(frame);
                self.utt_meta.push(meta);
                if voiced {
                    let run_start = *self.run_start.get_or_insert(start);
                    self.voiced_run_ms += frame_ms;
                    if self.voiced_run_ms >= self.cfg.resume_ms {
                        self.state = State::Speaking;
                        self.last_voice_idx = self.utt_meta.len() - 1;
                        events.push(EndpointEvent::SpeechResumed { at: run_start });
                        self.voiced_run_ms = 0;
                        self.run_start = None;
                    }
                } else {
                    self.voiced_run_ms = 0;
                    self.run_start = None;
                }
                let (_, end) = self.refined_end();
                let silent_ms = now.saturating_duration_since(end).as_millis() as u32;
                if self.state == State::Paused && silent_ms >= self.cfg.end_of_turn_silence_ms {
                    events.push(self.finish(false));
                }
            }
        }
        if self.state != State::Idle
            && self.utterance.len() >= self.cfg.max_utterance_ms as usize * SPMS
        {
            // Too long to hold: end the turn here, as if the caller paused.
            self.last_voice_idx = self.utt_meta.len().saturating_sub(1);
            events.push(self.finish(true));
        }
        events
    }

    fn idle(
        &mut self,
        frame: &[i16],
        meta: FrameMeta,
        voiced: bool,
        frame_ms: u32,
        events: &mut Vec<EndpointEvent>,
    ) {
        self.history.extend(frame.iter().copied());
        self.history_meta.push_back(meta);
        let keep_ms = self.cfg.pre_roll_ms
            + self.cfg.onset_ms
            + (START_BACK_FRAMES as u32 + 2) * frame_ms.max(1);
        while self.history.len() > keep_ms as usize * SPMS && self.history_meta.len() > 1 {
            if let Some(m) = self.history_meta.pop_front() {
                self.history.drain(..m.samples.min(self.history.len()));
            }
        }
        // While idle, voice must also stand out from the background: a
        // detector fooled by noise (or by noise switching on) does not open
        // a turn on a frame no louder than that noise.
        let loud = meta.db >= self.loud_db();
        if (!voiced || !loud)
            && self.run_start.is_some()
            && !self.onset_gap_closed
            && self.voiced_run_ms >= ONSET_GAP_AFTER_MS
            && self.onset_gap_ms + frame_ms <= ONSET_GAP_MS
        {
            // A dip inside a possible first word: the run goes on.
            self.onset_gap_ms += frame_ms;
            self.voiced_run_frames += 1;
            return;
        }
        if !voiced || !loud {
            // Not speech: follow the background level, quickly when it is
            // near the estimate, slowly when far above (a cough, a door).
            self.noise_db = Some(match self.noise_db {
                None => meta.db,
                Some(n) if meta.db < n + 10.0 => 0.9 * n + 0.1 * meta.db,
                Some(n) => n + 0.1,
            });
            self.voiced_run_ms = 0;
            self.voiced_run_frames = 0;
            self.onset_gap_ms = 0;
            self.onset_gap_closed = false;
            self.run_start = None;
            return;
        }
        self.onset_gap_closed |= self.onset_gap_ms > 0;
        if self.run_start.is_none() {
            events.push(EndpointEvent::VoiceDetected { at: meta.start });
        }
        self.run_start.get_or_insert(meta.start);
        self.voiced_run_ms += frame_ms;
        self.voiced_run_frames += 1;
        if self.voiced_run_ms < self.cfg.onset_ms {
            return;
        }
        // Onset confirmed. Refine where speech began from the level: back
        // over loud frames the detector had not committed to yet, forward
        // over quiet ones it flagged early.
        let loud = self.loud_db();
        let meta: Vec<FrameMeta> = self.history_meta.iter().copied().collect();
        let mut first = meta.len() - self.voiced_run_frames.min(meta.len());
        let mut back = 0;
        while first > 0 && back < START_BACK_FRAMES && meta[first - 1].db >= loud {
            first -= 1;
            back += 1;
        }
        let mut fwd = 0;
        while first + 1 < meta.len() && fwd + 1 < self.voiced_run_frames && meta[first].db < loud {
            first += 1;
            fwd += 1;
        }
        let speech_start = meta[first].start;
        // Pre-roll: whole frames ending no earlier than pre_roll before it.
        let pre_roll = Duration::from_millis(self.cfg.pre_roll_ms as u64);
        let mut p = first;
        while p > 0 && speech_start.saturating_duration_since(meta[p - 1].start) <= pre_roll {
            p -= 1;
        }
        let offset: usize = meta[..p].iter().map(|m| m.samples).sum();
        self.utterance = self.history.iter().skip(offset).copied().collect();
        self.utt_meta = meta[p..].to_vec();
        self.start_idx = first - p;
        self.last_voice_idx = self.utt_meta.len() - 1;
        self.history.clear();
        self.history_meta.clear();
        self.state = State::Speaking;
        self.speech_start = Some(speech_start);
        self.voiced_run_ms = 0;
        self.voiced_run_frames = 0;
        self.onset_gap_ms = 0;
        self.onset_gap_closed = false;
        self.run_start = None;
        events.push(EndpointEvent::SpeechStarted { at: speech_start });
    }

    /// The last voiced frame, moved back over trailing frames that are no
    /// louder than the background (the detector lingers there in noise).
    fn refined_end(&self) -> (usize, Instant) {
        let loud = self.loud_db();
        let mut j = self
            .last_voice_idx
            .min(self.utt_meta.len().saturating_sub(1));
        let mut steps = 0;
        while j > self.start_idx && steps < END_BACK_FRAMES && self.utt_meta[j].db < loud {
            j -= 1;
            steps += 1;
        }
        let end = self
            .utt_meta
            .get(j)
            .map(|m| m.end)
            .or(self.speech_start)
            .unwrap_or_else(Instant::now);
        (j, end)
    }

    fn finish(&mut self, cut: bool) -> EndpointEvent {
        let (j, at) = if cut {
            let j = self.utt_meta.len().saturating_sub(1);
            (
                j,
                self.utt_meta
                    .get(j)
                    .map(|m| m.end)
                    .unwrap_or_else(Instant::now),
            )
        } else {
            self.refined_end()
        };
        let speech_ms = self
            .speech_start
            .map_or(0, |s| at.saturating_duration_since(s).as_millis() as u32);
        let voiced_samples: usize = self.utt_meta.iter().take(j + 1).map(|m| m.samples).sum();
        let end = (voiced_samples + self.cfg.tail_ms as usize * SPMS).min(self.utterance.len());
        let mut audio = std::mem::take(&mut self.utterance);
        audio.truncate(end);
        self.reset();
        EndpointEvent::SpeechEnded {
            audio,
            at,
            speech_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    /// Runs a voiced/silent pattern (one char per 20 ms frame: `#` voice,
    /// `.` silence); frame i carries the value i so audio can be traced.
    fn run(ep: &mut Endpointer, pattern: &str, t0: Instant) -> Vec<(usize, EndpointEvent)> {
        let mut out = vec![];
        for (i, c) in pattern.chars().enumerate() {
            // Voiced frames are loud (3000 + i), silent ones quiet (i).
            let v = if c == '#' { 3000 + i as i16 } else { i as i16 };
            let frame = vec![v; 320];
            for e in ep.push_classified(&frame, c == '#', t0 + F * (i as u32 + 1)) {
                out.push((i, e));
            }
        }
        out
    }

    #[test]
    fn a_turn_with_a_pause_produces_the_documented_events() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(EndpointConfig::default());
        // 20 frames silence, 15 voice, 5 silence (pause), 10 voice, 30 silence.
        let pattern = format!(
            "{}{}{}{}{}",
            ".".repeat(20),
            "#".repeat(15),
            ".".repeat(5),
            "#".repeat(10),
            ".".repeat(30)
        );
        let ev = run(&mut ep, &pattern, t0);
        let kinds: Vec<&str> = ev
            .iter()
            .map(|(_, e)| match e {
                EndpointEvent::VoiceDetected { .. } => "voice",
                EndpointEvent::SpeechStarted { .. } => "start",
                EndpointEvent::PauseStarted { .. } => "pause",
                EndpointEvent::SpeechResumed { .. } => "resume",
                EndpointEvent::SpeechEnded { .. } => "end",
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["voice", "start", "pause", "resume", "pause", "end"]
        );
        // The first voiced frame is reported at once (barge-in holds there).
        assert_eq!(
            ev[0],
            (20, EndpointEvent::VoiceDetected { at: t0 + F * 20 })
        );
        // Speech started at frame 20's start; confirmed after onset (5 frames).
        assert_eq!(
            ev[1],
            (24, EndpointEvent::SpeechStarted { at: t0 + F * 20 })
        );
        let EndpointEvent::PauseStarted { at, audio: so_far } = &ev[2].1 else {
            panic!("not a pause")
        };
        assert_eq!(*at, t0 + F * 35);
        // The utterance so far: pre-roll (frames 10..20), speech and the
        // first silent frame, from the same buffer as the final audio.
        assert_eq!(so_far.len(), (10 + 15 + 1) * 320);
        assert_eq!(ev[3].1, EndpointEvent::SpeechResumed { at: t0 + F * 40 });
        let (
            idx,
            EndpointEvent::SpeechEnded {
                audio,
                at,
                speech_ms,
            },
        ) = &ev[5]
        else {
            panic!("not end")
        };
        assert_eq!(*at, t0 + F * 50, "end of the last voiced frame");
        assert_eq!(*idx, 49 + 25, "500 ms of silence later");
        assert_eq!(*speech_ms, 600);
        // Audio: 200 ms pre-roll (frames 10..20) + frames 20..50 + 100 ms tail.
        assert_eq!(audio.len(), (10 + 30 + 5) * 320);
        assert_eq!(audio[0], 10);
        assert_eq!(audio[10 * 320], 3020);
        assert_eq!(*audio.last().unwrap(), 54);
        assert!(!ep.in_turn());
    }

    #[test]
    fn short_blips_are_not_speech() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(EndpointConfig::default());
        let ev = run(&mut ep, "..##..###...#.####....", t0);
        // Each run is reported as possible voice, none confirmed as speech
        // (the blip at 12 continues the run from 6 across one dip, and the
        // second dip ends it).
        let at: Vec<_> = ev
            .iter()
            .map(|(i, e)| match e {
                EndpointEvent::VoiceDetected { .. } => *i,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(at, vec![2, 6, 14]);
    }

    /// (frame index, `at`) of each `SpeechStarted`.
    fn speech_starts(ev: &[(usize, EndpointEvent)]) -> Vec<(usize, Instant)> {
        ev.iter()
            .filter_map(|(i, e)| match e {
                EndpointEvent::SpeechStarted { at } => Some((*i, *at)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_stop_closure_inside_the_first_word_keeps_the_onset() {
        let t0 = Instant::now();
        // "Ac" (80 ms), the closure (80 ms, as quiet as the background),
        // "tually": speech from frame 2.
        let mut ep = Endpointer::new(EndpointConfig::default());
        let ev = run(&mut ep, "..####....#####", t0);
        let started = speech_starts(&ev);
        assert_eq!(started, vec![(10, t0 + F * 2)], "{ev:?}");
        // A longer quiet stretch is not a closure: the onset starts over.
        let mut ep = Endpointer::new(EndpointConfig::default());
        let ev = run(&mut ep, "..####.....#####", t0);
        let started = speech_starts(&ev);
        assert_eq!(started, vec![(15, t0 + F * 11)], "{ev:?}");
    }

    #[test]
    fn speech_ms_grows_for_barge_in_and_reset_clears() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(EndpointConfig {
            onset_ms: 60,
            ..Default::default()
        });
        run(&mut ep, &"#".repeat(25), t0);
        assert!(ep.is_speaking());
        assert_eq!(ep.speech_ms(), 500);
        ep.reset();
        assert_eq!(ep.speech_ms(), 0);
        assert!(!ep.in_turn());
    }

    #[test]
    fn very_long_speech_is_cut_at_the_bound() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(EndpointConfig {
            max_utterance_ms: 2000,
            ..Default::default()
        });
        let ev = run(&mut ep, &"#".repeat(300), t0);
        let ends: Vec<_> = ev
            .iter()
            .filter(|(_, e)| matches!(e, EndpointEvent::SpeechEnded { .. }))
            .collect();
        assert!(ends.len() >= 2);
        for (_, e) in ends {
            if let EndpointEvent::SpeechEnded { audio, .. } = e {
                assert!(audio.len() <= 2000 * 16);
            }
        }
    }

    #[test]
    fn blip_in_pause_does_not_resume_or_reset_the_silence() {
        let t0 = Instant::now();
        let mut ep = Endpointer::new(EndpointConfig::default());
        let pattern = format!("{}{}#{}", "#".repeat(10), ".".repeat(10), ".".repeat(20));
        let ev = run(&mut ep, &pattern, t0);
        assert!(!ev
            .iter()
            .any(|(_, e)| matches!(e, EndpointEvent::SpeechResumed { .. })));
        let end = ev
            .iter()
            .find(|(_, e)| matches!(e, EndpointEvent::SpeechEnded { .. }))
            .unwrap();
        assert_eq!(end.0, 9 + 25);
    }
}
