//! One call's policy, sans-IO: the endpointer, the turn machine, the
//! call's ledger and the rules of hanging up and transferring, behind
//! `handle(input, now)` and `poll_action()`. It decides; the driver
//! (`call.rs`) only spawns and aborts work and talks to the leg. Any leg
//! feeds it the same inputs: 16 kHz frames, digits, playout events.
//!
//! Rules kept here, not in the driver:
//! - a hang-up (goodbye after silence, `max_call_seconds`) waits until
//!   what is queued has played, so the goodbye is heard;
//! - a transfer the reply asked for is sent once its announcement ("I will
//!   transfer you…") has played: a trunk transfers at once, so an early
//!   REFER would cut it off; one at a time, and only to `transfer_to`;
//! - on an outbound call whose agent detects answering machines, nothing
//!   is said before the verdict ([`AmdGate`]): a person (or no verdict)
//!   gets the greeting, a machine a hang-up or, after its beep, the
//!   voicemail message and then a hang-up;
//! - a transfer that fails (refused, the target busy or silent) makes the
//!   agent say `transfer_failed_message`, and the conversation goes on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::amd::AmdSettings;
use super::amd_gate::{AmdGate, GateStep};
use super::ledger::CallLedger;
use super::llm::ChatMessage;
use super::profile::AgentProfile;
use super::reply::ReplyEvent;
use super::stt::Transcript;
use super::turn::{Action, Input, SayKind, TurnMachine, TurnSettings};
use crate::domain::SessionStatus;
use crate::media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use crate::records::{HangupBy, RecordWriter};

/// What happened on the call, as the driver saw it.
#[derive(Debug)]
pub enum CallInput {
    /// 20 ms of the caller's audio at 16 kHz.
    Audio(Vec<i16>),
    /// Tests: a frame whose voice the test decides (no VAD).
    #[cfg(test)]
    Classified {
        samples: Vec<i16>,
        voiced: bool,
    },
    Dtmf(char),
    PlayoutStarted {
        id: u64,
        at: Instant,
    },
    PlayoutFinished {
        id: u64,
    },
    PlayoutFlushed {
        id: u64,
        played_ms: u32,
    },
    /// Progress of the running reply (or fixed line).
    Reply(ReplyEvent),
    /// A transcription the machine asked for came back.
    Transcribed {
        turn: u64,
        result: Result<Transcript, String>,
    },
    /// The leg's answer to a transfer the machine asked for.
    TransferResult {
        accepted: bool,
    },
    /// The leg is gone (the caller hung up, signalling or media failed).
    LegEnded {
        by: HangupBy,
        reason: String,
    },
    /// Someone outside the call (the API) ended it.
    EndRequested,
    /// Time passed (the driver wakes at `next_deadline`).
    Tick,
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Caller(String),
    Agent(&'static str),
    System(String),
    Transferred,
}

impl Ending {
    /// (`agent_sessions.status`, who hung up, why).
    pub fn outcome(&self) -> (SessionStatus, HangupBy, String) {
        match self {
            Ending::Caller(r) => (SessionStatus::Completed, HangupBy::Caller, r.clone()),
            Ending::Agent(r) => (SessionStatus::Completed, HangupBy::Agent, r.to_string()),
            Ending::System(r) => (SessionStatus::Failed, HangupBy::System, r.clone()),
            Ending::Transferred => (
                SessionStatus::Escalated,
                HangupBy::Agent,
                "transferred".into(),
            ),
        }
    }

    /// Whether the leg must still be told to hang up (the caller's own
    /// hang-up and a completed transfer already ended it).
    pub fn leg_must_hang_up(&self) -> bool {
        !matches!(self, Ending::Caller(_) | Ending::Transferred)
    }
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum CallAction {
    Transcribe {
        turn: u64,
        audio: Arc<Vec<i16>>,
    },
    CancelTranscription {
        turn: u64,
    },
    /// Answer the caller's turn: cancel any running reply, start this one.
    Respond {
        turn: u64,
        text: String,
        history: Vec<ChatMessage>,
    },
    /// Speak a fixed line (greeting, reprompt, goodbye) as reply `turn`:
    /// cancel any running reply first.
    Say {
        turn: u64,
        text: String,
    },
    /// Flush playout and cancel the running reply now.
    BargeIn,
    HoldPlayout,
    ResumePlayout,
    /// Hand the caller to `target` (blind or warm, as the agent says);
    /// `summary` is what the caller said so far, for a warm transfer's
    /// briefing of the person.
    Transfer {
        target: String,
        summary: String,
    },
    /// The call is over: cancel everything, close the leg, `finish`.
    End(Ending),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferState {
    Idle,
    /// Asked for; sent once the announcement has played.
    Wanted,
    /// Sent; waiting for the leg's answer.
    Pending,
}

pub struct CallMachine {
    profile: Arc<AgentProfile>,
    turns: TurnMachine,
    endpointer: Endpointer,
    ledger: CallLedger,
    pending_hangup: Option<&'static str>,
    transfer: TransferState,
    actions: VecDeque<CallAction>,
    ended: bool,
    /// Answering-machine detection still deciding how the call opens.
    amd: Option<AmdGate>,
    /// The voicemail is being left: the machine's audio is not a turn.
    leaving_voicemail: bool,
}

impl CallMachine {
    /// A call that starts now with the agent's greeting.
    pub fn new(
        profile: Arc<AgentProfile>,
        settings: TurnSettings,
        endpoint: EndpointConfig,
        ledger: CallLedger,
        now: Instant,
    ) -> CallMachine {
        let mut m = CallMachine::silent(profile, settings, endpoint, ledger, now);
        m.greet(now);
        m
    }

    /// An outbound call answered now whose agent waits for the
    /// answering-machine verdict before it speaks.
    pub fn detecting_machines(
        profile: Arc<AgentProfile>,
        settings: TurnSettings,
        endpoint: EndpointConfig,
        amd: AmdSettings,
        ledger: CallLedger,
        now: Instant,
    ) -> CallMachine {
        let on_machine = profile.amd.on_machine.clone();
        let mut m = CallMachine::silent(profile, settings, endpoint, ledger, now);
        m.amd = Some(AmdGate::new(amd, on_machine, endpoint, now));
        m
    }

    fn silent(
        profile: Arc<AgentProfile>,
        settings: TurnSettings,
        endpoint: EndpointConfig,
        ledger: CallLedger,
        now: Instant,
    ) -> CallMachine {
        CallMachine {
            turns: TurnMachine::new(settings, now),
            endpointer: Endpointer::new(endpoint),
            ledger,
            pending_hangup: None,
            transfer: TransferState::Idle,
            actions: VecDeque::new(),
            ended: false,
            amd: None,
            leaving_voicemail: false,
            profile,
        }
    }

    /// The agent's first words: the greeting.
    fn greet(&mut self, now: Instant) {
        let text = self.profile.greeting.clone();
        self.open_with(text, now);
    }

    fn open_with(&mut self, text: String, now: Instant) {
        self.turns.agent_started_speaking(now);
        self.ledger.begin_reply(0, None);
        self.actions.push_back(CallAction::Say { turn: 0, text });
    }

    /// When `Tick` next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let turns = self.turns.next_deadline();
        match self.amd.as_ref().and_then(AmdGate::next_deadline) {
            Some(at) => at.min(turns),
            None => turns,
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next thing to do, in order; `None` when nothing is left.
    pub fn poll_action(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    pub fn handle(&mut self, input: CallInput, now: Instant) {
        if self.ended {
            return;
        }
        let input = match self.amd_input(input, now) {
            Some(input) => input,
            None => return,
        };
        let mut turn_actions = Vec::new();
        match input {
            CallInput::Audio(samples) => {
                for ev in self.endpointer.push(&samples, now) {
                    turn_actions.extend(self.turns.handle(turn_input(ev), now));
                }
            }
            #[cfg(test)]
            CallInput::Classified { samples, voiced } => {
                for ev in self.endpointer.push_classified(&samples, voiced, now) {
                    turn_actions.extend(self.turns.handle(turn_input(ev), now));
                }
            }
            CallInput::Dtmf(digit) => {
                turn_actions.extend(self.turns.handle(Input::Dtmf { digit }, now))
            }
            CallInput::PlayoutStarted { id, at } => self.ledger.playout_started(id, at),
            CallInput::PlayoutFinished { id } => {
                self.ledger.playout_finished(id);
                if self.ledger.reply_complete() {
                    turn_actions.extend(self.turns.handle(Input::ReplyFinished, now));
                }
            }
            CallInput::PlayoutFlushed { id, played_ms } => {
                self.ledger.playout_flushed(id, played_ms)
            }
            CallInput::Reply(ev) => {
                if self.ledger.on_reply_event(ev) && self.ledger.reply_complete() {
                    turn_actions.extend(self.turns.handle(Input::ReplyFinished, now));
                }
                if self.ledger.take_transfer_request()
                    && self.transfer == TransferState::Idle
                    && self.profile.transfer_to.is_some()
                {
                    self.transfer = TransferState::Wanted;
                }
            }
            CallInput::Transcribed { turn, result } => {
                let input = match result {
                    Ok(t) => {
                        tracing::debug!(turn, text = %t.text, ms = t.elapsed_ms, "transcript");
                        self.ledger.transcribed(turn, t.elapsed_ms, t.audio_ms);
                        Input::Transcript { turn, text: t.text }
                    }
                    Err(err) => {
                        tracing::warn!(%err, turn, "transcription failed");
                        Input::TranscriptFailed { turn }
                    }
                };
                turn_actions.extend(self.turns.handle(input, now));
            }
            CallInput::TransferResult { accepted } => {
                if self.transfer != TransferState::Pending {
                    return;
                }
                if accepted {
                    return self.end(Ending::Transferred);
                }
                self.transfer = TransferState::Idle;
                // No dead air: the caller hears why nothing happened.
                let turn = self.ledger.next_fixed_turn();
                self.ledger.begin_reply(turn, None);
                self.turns.agent_started_speaking(now);
                self.actions.push_back(CallAction::Say {
                    turn,
                    text: self.profile.transfer_failed_message.clone(),
                });
            }
            CallInput::LegEnded { by, reason } => {
                return self.end(match by {
                    HangupBy::Caller => Ending::Caller(reason),
                    _ => Ending::System(reason),
                });
            }
            CallInput::EndRequested => return self.end(Ending::Agent("ended by API")),
            CallInput::Tick => turn_actions.extend(self.turns.handle(Input::Tick, now)),
        }
        // Gates first, on what has played so far: a hang-up or transfer
        // decided earlier goes once the agent's last words are out.
        if self.transfer == TransferState::Wanted && self.ledger.reply_complete() {
            if let Some(target) = self.profile.transfer_to.clone() {
                self.transfer = TransferState::Pending;
                let summary =
                    caller_summary(&self.ledger.history(self.profile.context_window_size));
                self.actions
                    .push_back(CallAction::Transfer { target, summary });
            }
        }
        if let Some(reason) = self.pending_hangup {
            if self.ledger.reply_complete() {
                return self.end(Ending::Agent(reason));
            }
        }
        for action in turn_actions {
            self.apply(action);
        }
    }

    /// Gives the gate what is its own while it decides how the call opens
    /// (and drops the machine's audio while the voicemail is left); the
    /// rest goes on to the conversation.
    fn amd_input(&mut self, input: CallInput, now: Instant) -> Option<CallInput> {
        let steps = match (&mut self.amd, input) {
            (Some(gate), CallInput::Transcribed { turn, result }) if AmdGate::owns_turn(turn) => {
                let text = result.ok().map(|t| {
                    // The recognizer's time is billed like any turn's.
                    self.ledger.transcribed(turn, t.elapsed_ms, t.audio_ms);
                    t.text
                });
                gate.transcribed(turn, text.as_deref(), now)
            }
            // A late answer to the gate's question, after it opened the call.
            (None, CallInput::Transcribed { turn, .. }) if AmdGate::owns_turn(turn) => return None,
            (Some(gate), CallInput::Audio(samples)) if !gate.is_done() => gate.audio(&samples, now),
            #[cfg(test)]
            (Some(gate), CallInput::Classified { samples, .. }) if !gate.is_done() => {
                gate.audio(&samples, now)
            }
            (Some(gate), CallInput::Tick) if !gate.is_done() => gate.tick(now),
            (Some(gate), CallInput::Dtmf(_)) if !gate.is_done() => gate.tick(now),
            (_, CallInput::Audio(_) | CallInput::Dtmf(_)) if self.leaving_voicemail => {
                return None;
            }
            #[cfg(test)]
            (_, CallInput::Classified { .. }) if self.leaving_voicemail => return None,
            (_, input) => return Some(input),
        };
        for step in steps {
            match step {
                GateStep::Transcribe { turn, audio } => self
                    .actions
                    .push_back(CallAction::Transcribe { turn, audio }),
                GateStep::CancelTranscription { turn } => self
                    .actions
                    .push_back(CallAction::CancelTranscription { turn }),
                GateStep::Decided {
                    verdict,
                    reason,
                    after,
                } => {
                    tracing::info!(
                        verdict = verdict.as_str(),
                        reason,
                        ms = after.as_millis() as u64,
                        "answering-machine detection"
                    );
                    self.ledger.amd_result(verdict, after);
                }
                GateStep::Greet => self.greet(now),
                GateStep::HangUp => {
                    self.end(Ending::Agent("answering machine"));
                    return None;
                }
                GateStep::LeaveVoicemail(message) => {
                    self.leaving_voicemail = true;
                    self.open_with(message, now);
                    self.pending_hangup = Some("voicemail left");
                }
            }
        }
        if self.amd.as_ref().is_some_and(AmdGate::is_done) {
            self.amd = None;
        }
        None
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Transcribe { turn, audio } => {
                self.actions
                    .push_back(CallAction::Transcribe { turn, audio });
            }
            Action::CancelTranscription { turn } => {
                self.actions
                    .push_back(CallAction::CancelTranscription { turn });
            }
            Action::Respond {
                turn,
                text,
                speech_ended_at,
                repeats,
            } => {
                let history = self.ledger.history(self.profile.context_window_size);
                self.ledger
                    .user_turn(turn, &text, repeats.as_deref(), speech_ended_at);
                self.actions.push_back(CallAction::Respond {
                    turn,
                    text,
                    history,
                });
            }
            Action::BargeIn => {
                self.ledger.interrupted();
                self.actions.push_back(CallAction::BargeIn);
            }
            Action::HoldPlayout => self.actions.push_back(CallAction::HoldPlayout),
            Action::ResumePlayout => self.actions.push_back(CallAction::ResumePlayout),
            Action::Say { text } => {
                let text = match text {
                    SayKind::Reprompt => self.profile.reprompt(),
                    SayKind::Goodbye => self.profile.goodbye(),
                };
                let turn = self.ledger.next_fixed_turn();
                self.ledger.begin_reply(turn, None);
                self.actions.push_back(CallAction::Say { turn, text });
            }
            Action::Hangup { reason } => self.pending_hangup = Some(reason),
        }
    }

    fn end(&mut self, ending: Ending) {
        self.ended = true;
        self.actions.push_back(CallAction::End(ending));
    }

    /// Hands the records gathered so far to the writer (done after every
    /// input, so a crash loses little).
    pub fn flush_records(&mut self, writer: &RecordWriter) {
        self.ledger.flush_to(writer);
    }

    /// The call's last records: messages, session end, usage, figures.
    pub fn finish(
        mut self,
        writer: &RecordWriter,
        status: SessionStatus,
        call_seconds: f64,
        media_stats: Option<&serde_json::Value>,
        recording: Option<&crate::media::record::RecordingInfo>,
    ) {
        self.ledger.write_all(
            writer,
            status.as_str(),
            call_seconds,
            media_stats,
            recording,
        );
    }

    #[cfg(test)]
    fn ledger(&self) -> &CallLedger {
        &self.ledger
    }
}

/// A plain extractive summary of the conversation for the person a warm
/// transfer reaches: the caller's last few turns, as they said them.
pub fn caller_summary(history: &[ChatMessage]) -> String {
    const TURNS: usize = 3;
    const MAX_CHARS: usize = 400;
    let said: Vec<&str> = history
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.content.trim())
        .filter(|c| !c.is_empty())
        .collect();
    let recent = &said[said.len().saturating_sub(TURNS)..];
    let mut out = recent.join(" ");
    if out.len() > MAX_CHARS {
        let cut = (0..=MAX_CHARS)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(cut);
    }
    out
}

fn turn_input(ev: EndpointEvent) -> Input {
    match ev {
        EndpointEvent::VoiceDetected { at } => Input::VoiceDetected { at },
        EndpointEvent::SpeechStarted { at } => Input::SpeechStarted { at },
        EndpointEvent::PauseStarted { at, audio } => Input::PauseStarted { at, audio },
        EndpointEvent::SpeechResumed { at } => Input::SpeechResumed { at },
        EndpointEvent::SpeechEnded { at, audio, .. } => Input::SpeechEnded {
            at,
            audio: Arc::new(audio),
        },
    }
}

#[cfg(test)]
#[path = "call_machine_tests.rs"]
mod tests;
