//! Turn taking for one call, sans-IO: who holds the floor, when to start
//! transcribing (speculatively, at the first pause), when the caller's turn
//! has really ended, barge-in, backchannels, silence reprompts and the call
//! time limit. Time is an argument; the call driver feeds events and
//! carries out the returned actions.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod reading;

pub use reading::continuation_after;
use reading::{is_noise_transcript, reads_complete};

/// Timing rules for one call (agent columns and `[turn]` configuration).
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Trailing silence that ends the caller's turn (the endpointer's).
    pub end_of_turn_silence: Duration,
    /// Pause after which transcription starts speculatively. Shorter than
    /// `end_of_turn_silence`, so the transcript is ready when the turn ends.
    pub speculate_after: Duration,
    /// A pause this long ends the turn early when the speculative
    /// transcript reads as a finished sentence ("…on Saturday?"): the
    /// answer starts without waiting for the full end-of-turn silence.
    pub complete_turn_silence: Duration,
    /// Caller speech during agent playout that counts as an interruption.
    /// Playout is held from the onset; shorter speech is a backchannel.
    pub barge_in_min: Duration,
    /// Silence after a backchannel before held playout plays on.
    pub backchannel_resume: Duration,
    /// Voice the endpointer needs before speech counts as started: a hold
    /// at the first voiced frame is released if no onset follows.
    pub speech_onset: Duration,
    pub interruptible: bool,
    /// Caller silence (while the agent is not speaking) before a reprompt.
    pub silence_timeout: Duration,
    pub max_call: Duration,
}

/// What happened, as the driver saw it.
#[derive(Debug, Clone)]
pub enum Input {
    /// A first voiced frame, onset not yet confirmed (may be a blip).
    VoiceDetected {
        at: Instant,
    },
    /// The endpointer heard voice start (onset already confirmed).
    SpeechStarted {
        at: Instant,
    },
    /// First silent frame after speech; `audio` is the utterance so far (16 kHz).
    PauseStarted {
        at: Instant,
        audio: Arc<Vec<i16>>,
    },
    /// Voice again after a pause shorter than the end-of-turn silence.
    SpeechResumed {
        at: Instant,
    },
    /// The endpointer's end of turn, with the whole utterance.
    SpeechEnded {
        at: Instant,
        audio: Arc<Vec<i16>>,
    },
    Transcript {
        turn: u64,
        text: String,
    },
    TranscriptFailed {
        turn: u64,
    },
    /// Every sentence of the agent's current reply has finished playing.
    ReplyFinished,
    Dtmf {
        digit: char,
    },
    Tick,
}

/// Past the onset time, how long a hold for possible voice waits for the
/// onset to be confirmed (frames arrive late by the jitter buffer depth).
const BLIP_GRACE: Duration = Duration::from_millis(60);

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Transcribe this audio as turn `turn` (speculative until committed).
    Transcribe { turn: u64, audio: Arc<Vec<i16>> },
    /// Drop transcription `turn`: the caller went on speaking.
    CancelTranscription { turn: u64 },
    /// The caller's turn `turn` is over and this is what they said:
    /// answer it. `speech_ended_at` is the end of the caller's voice.
    /// `repeats`: the caller went on after an early answer, so `text` (the
    /// whole utterance) begins with this transcript, already a turn of its
    /// own; the record keeps only the words that follow it.
    Respond {
        turn: u64,
        text: String,
        speech_ended_at: Instant,
        repeats: Option<String>,
    },
    /// Stop the agent now: flush playout, cancel LLM/TTS, mark interrupted.
    BargeIn,
    /// The caller started speaking over the agent: pause playout (silence
    /// from the next frame) until `ResumePlayout` or `BargeIn`.
    HoldPlayout,
    /// It was a backchannel: play on from where the hold stopped.
    ResumePlayout,
    /// Say a fixed line (reprompt, goodbye).
    Say { text: SayKind },
    /// End the call after anything queued has played.
    Hangup { reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SayKind {
    Reprompt,
    Goodbye,
}

/// The end of the caller's turn, decided while its transcript is pending.
#[derive(Debug)]
struct Committed {
    turn: u64,
    /// End of the caller's voice.
    ended: Instant,
    /// The early-answered transcript this turn's repeats (see `continues`).
    repeats: Option<String>,
}

#[derive(Debug)]
struct Speculation {
    turn: u64,
    /// Transcript, once whisper returns it.
    text: Option<String>,
}

#[derive(Debug)]
pub struct TurnMachine {
    settings: TurnSettings,
    call_started: Instant,
    next_turn: u64,
    /// The agent holds the floor (a reply or a fixed line is being spoken).
    agent_speaking: bool,
    /// Caller voice began at this time and has not paused yet.
    caller_speech_since: Option<Instant>,
    /// Onset of the caller's current utterance, kept across the short
    /// pauses between words: barge-in counts from here, so a caller who
    /// speaks naturally (gaps between words) still interrupts.
    utterance_onset: Option<Instant>,
    /// The current caller speech began while the agent was speaking and
    /// has not (yet) lasted long enough to interrupt: a backchannel.
    backchannel: bool,
    /// Playout is held (caller speech over the agent, undecided yet).
    held: bool,
    /// A held backchannel went quiet: play on at this time.
    resume_at: Option<Instant>,
    /// When the caller paused, with the audio so far.
    pause: Option<(Instant, Arc<Vec<i16>>)>,
    speculation: Option<Speculation>,
    /// End of turn decided; waiting for the transcript of this turn.
    committed: Option<Committed>,
    /// Last moment something happened in the conversation (silence timer).
    last_activity: Instant,
    reprompted: bool,
    hanging_up: bool,
    /// The turn was answered early from this speculative transcript; the
    /// endpointer's own end of turn for the same speech is to be ignored.
    answered_early: Option<String>,
    /// The caller went on speaking after the early answer to this
    /// transcript: the utterance being heard continues it.
    continues: Option<String>,
}

impl TurnMachine {
    pub fn new(settings: TurnSettings, now: Instant) -> TurnMachine {
        TurnMachine {
            settings,
            call_started: now,
            next_turn: 1,
            agent_speaking: false,
            caller_speech_since: None,
            utterance_onset: None,
            backchannel: false,
            held: false,
            resume_at: None,
            pause: None,
            speculation: None,
            committed: None,
            last_activity: now,
            reprompted: false,
            hanging_up: false,
            answered_early: None,
            continues: None,
        }
    }

    /// The agent starts speaking (greeting, reply or fixed line).
    pub fn agent_started_speaking(&mut self, now: Instant) {
        self.agent_speaking = true;
        self.last_activity = now;
    }

    pub fn agent_speaking(&self) -> bool {
        self.agent_speaking
    }

    /// The earliest time `Tick` has something to do.
    pub fn next_deadline(&self) -> Instant {
        let mut at = self.call_started + self.settings.max_call;
        if let (Some(since), true) = (
            self.caller_speech_since,
            self.agent_speaking && self.settings.interruptible,
        ) {
            at = at.min(since + self.settings.barge_in_min);
        }
        if let (Some(resume), true) = (self.resume_at, self.held) {
            at = at.min(resume);
        }
        if let (Some((paused, _)), None) = (&self.pause, &self.speculation) {
            at = at.min(*paused + self.settings.speculate_after);
        }
        if let (Some((paused, _)), Some(Speculation { text: Some(_), .. })) =
            (&self.pause, &self.speculation)
        {
            at = at.min(*paused + self.settings.complete_turn_silence);
        }
        if !self.agent_speaking
            && self.caller_speech_since.is_none()
            && self.committed.is_none()
            && !self.hanging_up
        {
            at = at.min(self.last_activity + self.settings.silence_timeout);
        }
        at
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::VoiceDetected { at } => {
                // Hold at the first syllable; `SpeechStarted` keeps the hold,
                // and without it the blip is over after the onset time.
                if self.agent_speaking && self.caller_speech_since.is_none() && self.pause.is_none()
                {
                    self.hold(&mut out);
                    if self.held {
                        self.resume_at = Some(at + self.settings.speech_onset + BLIP_GRACE);
                    }
                }
            }
            Input::SpeechStarted { at } => {
                self.caller_speech_since = Some(at);
                self.utterance_onset = Some(at);
                self.continues = None;
                self.last_activity = now;
                self.backchannel = self.agent_speaking;
                self.pause = None;
                self.drop_speculation(&mut out);
                if self.backchannel {
                    self.hold(&mut out);
                }
            }
            Input::SpeechResumed { at } => {
                if let Some(early) = self.answered_early.take() {
                    // The caller went on after an early answer: this is new
                    // speech over the agent (barge-in rules apply), and its
                    // end of turn is a turn of its own, whose transcript
                    // (the whole utterance) repeats the early one.
                    self.continues = Some(early);
                    self.backchannel = self.agent_speaking;
                    self.utterance_onset = Some(at);
                }
                if self.caller_speech_since.is_none() {
                    self.caller_speech_since = Some(self.utterance_onset.unwrap_or(at));
                }
                self.last_activity = now;
                self.pause = None;
                self.drop_speculation(&mut out);
                if self.backchannel && self.agent_speaking {
                    self.hold(&mut out);
                }
            }
            Input::PauseStarted { at, audio } => {
                self.last_activity = now;
                let was_backchannel = self.backchannel && self.agent_speaking;
                self.caller_speech_since = None;
                if was_backchannel {
                    if self.held {
                        self.resume_at = Some(at + self.settings.backchannel_resume);
                    }
                } else {
                    self.pause = Some((at, audio));
                }
            }
            Input::SpeechEnded { at, audio } => {
                self.last_activity = now;
                self.caller_speech_since = None;
                self.utterance_onset = None;
                if self.answered_early.take().is_some() {
                    self.pause = None;
                    self.backchannel = false;
                    return out;
                }
                let backchannel = std::mem::take(&mut self.backchannel) && self.agent_speaking;
                let pause_at = self.pause.take().map(|(p, _)| p).unwrap_or(at);
                if backchannel || audio.is_empty() {
                    self.drop_speculation(&mut out);
                    self.release(&mut out);
                } else {
                    self.commit(pause_at, audio, &mut out);
                }
            }
            Input::Transcript { turn, text } => {
                let committed_turn = self.committed.as_ref().map(|c| c.turn);
                match &mut self.speculation {
                    Some(spec) if spec.turn == turn => {
                        if committed_turn == Some(turn) {
                            self.speculation = None;
                            let (ended, repeats) = match self.committed.take() {
                                Some(c) => (c.ended, c.repeats),
                                None => (now, None),
                            };
                            self.respond(turn, text, repeats, ended, now, &mut out);
                        } else {
                            spec.text = Some(text);
                            self.answer_early_if_complete(now, &mut out);
                        }
                    }
                    _ => {} // a cancelled speculation finishing late
                }
            }
            Input::TranscriptFailed { turn } => {
                if self.speculation.as_ref().is_some_and(|s| s.turn == turn) {
                    self.speculation = None;
                }
                if self.committed.as_ref().is_some_and(|c| c.turn == turn) {
                    self.committed = None;
                    self.last_activity = now;
                }
            }
            Input::ReplyFinished => {
                self.agent_speaking = false;
                self.backchannel = false;
                self.last_activity = now;
                self.release(&mut out);
            }
            Input::Dtmf { digit } => {
                self.last_activity = now;
                let turn = self.take_turn();
                if self.agent_speaking && self.settings.interruptible {
                    self.barge_in(&mut out);
                }
                self.respond(
                    turn,
                    format!("The caller pressed {digit}."),
                    None,
                    now,
                    now,
                    &mut out,
                );
            }
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.hanging_up {
            return;
        }
        if now >= self.call_started + self.settings.max_call {
            self.hanging_up = true;
            out.push(Action::Hangup {
                reason: "max_call_seconds",
            });
            return;
        }
        if let Some(since) = self.caller_speech_since {
            if self.agent_speaking
                && self.settings.interruptible
                && now >= since + self.settings.barge_in_min
            {
                // Long enough to be a real interruption, not a cough or "mm-hm".
                self.barge_in(out);
            }
        }
        if self.held
            && self.caller_speech_since.is_none()
            && self.resume_at.is_some_and(|r| now >= r)
        {
            self.release(out);
        }
        let due = match (&self.pause, &self.speculation) {
            (Some((paused, audio)), None) if now >= *paused + self.settings.speculate_after => {
                Some(audio.clone())
            }
            _ => None,
        };
        {
            if let Some(audio) = due {
                let turn = self.take_turn();
                out.push(Action::Transcribe { turn, audio });
                self.speculation = Some(Speculation { turn, text: None });
            }
        }
        self.answer_early_if_complete(now, out);
        let idle =
            !self.agent_speaking && self.caller_speech_since.is_none() && self.committed.is_none();
        if idle && now >= self.last_activity + self.settings.silence_timeout {
            self.last_activity = now;
            if self.reprompted {
                self.hanging_up = true;
                out.push(Action::Say {
                    text: SayKind::Goodbye,
                });
                out.push(Action::Hangup {
                    reason: "silence_timeout",
                });
            } else {
                self.reprompted = true;
                self.agent_speaking = true;
                out.push(Action::Say {
                    text: SayKind::Reprompt,
                });
            }
        }
    }

    /// Ends the turn before the endpointer does when the pause has lasted
    /// `complete_turn_silence` and the transcript is a finished sentence.
    fn answer_early_if_complete(&mut self, now: Instant, out: &mut Vec<Action>) {
        let ready = match (&self.pause, &self.speculation) {
            (
                Some((paused, _)),
                Some(Speculation {
                    text: Some(text), ..
                }),
            ) => now >= *paused + self.settings.complete_turn_silence && reads_complete(text),
            _ => false,
        };
        if !ready {
            return;
        }
        let (
            Some((paused, _)),
            Some(Speculation {
                turn,
                text: Some(text),
            }),
        ) = (self.pause.take(), self.speculation.take())
        else {
            return;
        };
        self.answered_early = Some(text.clone());
        let repeats = self.continues.take();
        self.respond(turn, text, repeats, paused, now, out);
    }

    fn commit(&mut self, speech_ended_at: Instant, audio: Arc<Vec<i16>>, out: &mut Vec<Action>) {
        let repeats = self.continues.take();
        match self.speculation.take() {
            Some(Speculation {
                turn,
                text: Some(text),
            }) => self.respond(turn, text, repeats, speech_ended_at, speech_ended_at, out),
            Some(Speculation { turn, text: None }) => {
                // Whisper is still working on exactly this audio: wait for it.
                self.speculation = Some(Speculation { turn, text: None });
                self.committed = Some(Committed {
                    turn,
                    ended: speech_ended_at,
                    repeats,
                });
            }
            None => {
                let turn = self.take_turn();
                out.push(Action::Transcribe { turn, audio });
                self.speculation = Some(Speculation { turn, text: None });
                self.committed = Some(Committed {
                    turn,
                    ended: speech_ended_at,
                    repeats,
                });
            }
        }
    }

    fn respond(
        &mut self,
        turn: u64,
        text: String,
        repeats: Option<String>,
        speech_ended_at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.last_activity = now;
        let text = text.trim().to_string();
        if text.is_empty() || is_noise_transcript(&text) {
            return;
        }
        if self.agent_speaking {
            // A new caller turn while the agent still holds the floor (not
            // interruptible agents excepted): the old reply gives way.
            if !self.settings.interruptible {
                return;
            }
            self.barge_in(out);
        }
        self.release(out);
        self.reprompted = false;
        self.agent_speaking = true;
        out.push(Action::Respond {
            turn,
            text,
            speech_ended_at,
            repeats,
        });
    }

    /// Pauses the agent's playout while the caller's speech is undecided.
    fn hold(&mut self, out: &mut Vec<Action>) {
        self.resume_at = None;
        if !self.held && self.agent_speaking && self.settings.interruptible {
            self.held = true;
            out.push(Action::HoldPlayout);
        }
    }

    /// Lets held playout go on.
    fn release(&mut self, out: &mut Vec<Action>) {
        self.resume_at = None;
        if std::mem::take(&mut self.held) {
            out.push(Action::ResumePlayout);
        }
    }

    /// The caller has the floor: the agent's reply is dropped (a flush also
    /// ends a hold).
    fn barge_in(&mut self, out: &mut Vec<Action>) {
        self.agent_speaking = false;
        self.backchannel = false;
        self.held = false;
        self.resume_at = None;
        out.push(Action::BargeIn);
    }

    fn drop_speculation(&mut self, out: &mut Vec<Action>) {
        if let Some(spec) = self.speculation.take() {
            if self.committed.as_ref().is_some_and(|c| c.turn == spec.turn) {
                // Already committed: the caller spoke again after the end of
                // turn; the committed transcript still gets its answer.
                self.speculation = Some(spec);
                return;
            }
            out.push(Action::CancelTranscription { turn: spec.turn });
        }
    }

    fn take_turn(&mut self) -> u64 {
        let t = self.next_turn;
        self.next_turn += 1;
        t
    }
}

#[cfg(test)]
mod tests;
