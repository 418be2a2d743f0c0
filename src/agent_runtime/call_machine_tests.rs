//! The call's policy on a simulated clock: frames are voiced or silent by
//! pattern (one char per 20 ms, `#` voice, `.` silence), and the reply
//! tasks and playout the driver would run are played by the test.

use std::time::Duration;

use super::*;
use crate::agent_runtime::turn::TurnSettings;
use crate::domain::EscalationPolicy;

const F: Duration = Duration::from_millis(20);

fn profile(transfer_to: Option<&str>) -> Arc<AgentProfile> {
    Arc::new(AgentProfile {
        workspace_id: uuid::Uuid::nil(),
        agent_id: uuid::Uuid::nil(),
        agent_name: "Front desk".into(),
        instructions: String::new(),
        persona_name: "Ada".into(),
        tone: "friendly".into(),
        persona_instructions: String::new(),
        greeting: "Hello, how can I help?".into(),
        fallback_message: "Sorry.".into(),
        escalation_policy: EscalationPolicy::Apologize,
        transfer_to: transfer_to.map(str::to_string),
        transfer_mode: crate::domain::TransferMode::Blind,
        transfer_failed_message: "Sorry, I could not transfer you.".into(),
        interruptible: true,
        silence_timeout_ms: 8000,
        max_call_seconds: 600,
        recording_enabled: false,
        stt_provider: "whisper".into(),
        stt_language: None,
        tts_provider: "piper".into(),
        tts_voice: "en-us".into(),
        tts_speed: 1.0,
        llm_provider: "offline".into(),
        llm_model: "offline".into(),
        temperature: 0.2,
        max_tokens: 200,
        context_window_size: 4000,
        input_cost_per_1k: 0.0,
        output_cost_per_1k: 0.0,
    })
}

struct Sim {
    m: CallMachine,
    now: Instant,
    next_utt: u64,
}

impl Sim {
    fn new(transfer_to: Option<&str>) -> Sim {
        let now = Instant::now();
        let settings = TurnSettings {
            end_of_turn_silence: Duration::from_millis(500),
            speculate_after: Duration::from_millis(150),
            complete_turn_silence: Duration::from_millis(250),
            barge_in_min: Duration::from_millis(400),
            backchannel_resume: Duration::from_millis(150),
            speech_onset: Duration::from_millis(100),
            interruptible: true,
            silence_timeout: Duration::from_secs(8),
            max_call: Duration::from_secs(600),
        };
        let p = profile(transfer_to);
        let ledger = CallLedger::new(
            uuid::Uuid::nil(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            p.clone(),
        );
        Sim {
            m: CallMachine::new(p, settings, EndpointConfig::default(), ledger, now),
            now,
            next_utt: 1,
        }
    }

    fn handle(&mut self, input: CallInput) -> Vec<CallAction> {
        self.m.handle(input, self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<CallAction> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    /// Caller frames by pattern, each followed by the ticks the driver
    /// would make; returns every action.
    fn frames(&mut self, pattern: &str) -> Vec<CallAction> {
        let mut out = Vec::new();
        for c in pattern.chars() {
            self.now += F;
            let voiced = c == '#';
            let samples = vec![if voiced { 3000 } else { 3 }; 320];
            self.m
                .handle(CallInput::Classified { samples, voiced }, self.now);
            if self.m.next_deadline() <= self.now {
                self.m.handle(CallInput::Tick, self.now);
            }
            out.extend(self.drain());
        }
        out
    }

    /// Time passes with no caller audio.
    fn wait(&mut self, d: Duration) -> Vec<CallAction> {
        let until = self.now + d;
        let mut out = Vec::new();
        while self.now < until {
            self.now = (self.now + F).min(until);
            if self.m.next_deadline() <= self.now {
                out.extend(self.handle(CallInput::Tick));
            }
        }
        out
    }

    /// The reply task queues one sentence and finishes generating; its
    /// playout starts. Returns the utterance id (still playing).
    fn reply_queued(&mut self, turn: u64, text: &str, extra: Option<ReplyEvent>) -> u64 {
        let utt = self.next_utt;
        self.next_utt += 1;
        self.handle(CallInput::Reply(ReplyEvent::Queued {
            turn,
            utt,
            text: text.into(),
            audio_ms: 1000,
            tts_first_byte_ms: 10,
        }));
        self.handle(CallInput::PlayoutStarted {
            id: utt,
            at: self.now,
        });
        if let Some(ev) = extra {
            self.handle(CallInput::Reply(ev));
        }
        self.handle(CallInput::Reply(ReplyEvent::Done {
            turn,
            text: text.into(),
            tokens_in: 1,
            tokens_out: 1,
            tts_characters: text.len() as u32,
            failed: None,
        }));
        utt
    }

    /// The whole line played.
    fn played(&mut self, utt: u64) -> Vec<CallAction> {
        self.now += Duration::from_secs(1);
        self.handle(CallInput::PlayoutFinished { id: utt })
    }

    /// The caller asks `text` (1.2 s of voice, then silence): it is
    /// transcribed and answered. Returns the turn.
    fn ask(&mut self, text: &str) -> u64 {
        let a = self.frames(&format!("{}{}", "#".repeat(30), ".".repeat(30)));
        let turn = match &a[..] {
            [CallAction::Transcribe { turn, .. }, ..] => *turn,
            other => panic!("{other:?}"),
        };
        let a = self.handle(CallInput::Transcribed {
            turn,
            result: transcript(text),
        });
        assert_eq!(names(&a), vec!["respond"]);
        turn
    }

    fn greeting_played(&mut self) {
        let utt = self.reply_queued(0, "Hello, how can I help?", None);
        assert!(self.played(utt).is_empty());
    }
}

fn names(actions: &[CallAction]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            CallAction::Transcribe { .. } => "transcribe",
            CallAction::CancelTranscription { .. } => "cancel_stt",
            CallAction::Respond { .. } => "respond",
            CallAction::Say { .. } => "say",
            CallAction::BargeIn => "barge_in",
            CallAction::HoldPlayout => "hold",
            CallAction::ResumePlayout => "resume",
            CallAction::Transfer { .. } => "transfer",
            CallAction::End(_) => "end",
        })
        .collect()
}

fn transcript(text: &str) -> Result<Transcript, String> {
    Ok(Transcript {
        text: text.into(),
        audio_ms: 1000,
        elapsed_ms: 100,
    })
}

#[test]
fn the_call_opens_with_the_greeting() {
    let mut sim = Sim::new(None);
    let first = sim.drain();
    assert!(
        matches!(&first[..], [CallAction::Say { turn: 0, text }] if text == "Hello, how can I help?"),
        "{first:?}"
    );
}

#[test]
fn a_question_is_transcribed_then_answered_with_the_history() {
    let mut sim = Sim::new(None);
    sim.drain();
    sim.greeting_played();
    // 600 ms of speech, then silence: speculative transcription at the pause.
    let a = sim.frames(&format!("{}{}", "#".repeat(30), ".".repeat(10)));
    let turn = match &a[..] {
        [CallAction::Transcribe { turn, audio }] => {
            assert!(audio.len() >= 30 * 320);
            *turn
        }
        other => panic!("{other:?}"),
    };
    let a = sim.handle(CallInput::Transcribed {
        turn,
        result: transcript("When do you open on Saturday?"),
    });
    // A finished sentence after the short pause is answered early.
    let a = if a.is_empty() { sim.frames("....") } else { a };
    match &a[..] {
        [CallAction::Respond {
            turn: t,
            text,
            history,
        }] => {
            assert_eq!(*t, turn);
            assert_eq!(text, "When do you open on Saturday?");
            // The question is not in its own history (the greeting enters
            // it when the question closes it, as before the machine).
            assert!(history.is_empty(), "{history:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!sim.m.ledger().reply_complete(), "the answer is under way");
}

#[test]
fn long_speech_over_the_agent_holds_then_barges_in() {
    let mut sim = Sim::new(None);
    sim.drain();
    // The greeting is playing when the caller talks over it.
    let _utt = sim.reply_queued(0, "Hello, how can I help?", None);
    let a = sim.frames(&"#".repeat(30));
    assert_eq!(names(&a), vec!["hold", "barge_in"], "{a:?}");
}

#[test]
fn a_short_backchannel_holds_and_resumes_the_agent() {
    let mut sim = Sim::new(None);
    sim.drain();
    let _utt = sim.reply_queued(0, "Hello, how can I help?", None);
    let a = sim.frames(&format!("{}{}", "#".repeat(8), ".".repeat(20)));
    assert_eq!(names(&a), vec!["hold", "resume"], "{a:?}");
}

#[test]
fn the_transfer_waits_for_its_announcement_to_play() {
    let mut sim = Sim::new(Some("+15555550199"));
    sim.drain();
    sim.greeting_played();
    let turn = sim.ask("I want to talk to a person.");
    let utt = sim.reply_queued(
        turn,
        "I will transfer you now.",
        Some(ReplyEvent::TransferRequested { turn }),
    );
    // Generated, not yet heard: no transfer yet.
    assert!(sim.wait(Duration::from_millis(200)).is_empty());
    let a = sim.played(utt);
    assert!(
        matches!(&a[..], [CallAction::Transfer { target, summary }] if target == "+15555550199" && summary == "I want to talk to a person."),
        "{a:?}"
    );
    // The far end accepted: the call is over, as transferred.
    let a = sim.handle(CallInput::TransferResult { accepted: true });
    assert!(
        matches!(&a[..], [CallAction::End(Ending::Transferred)]),
        "{a:?}"
    );
    assert_eq!(Ending::Transferred.outcome().0, SessionStatus::Escalated);
    assert!(!Ending::Transferred.leg_must_hang_up());
}

#[test]
fn a_failed_transfer_is_said_and_the_conversation_goes_on() {
    let mut sim = Sim::new(Some("tel:+15555550199"));
    sim.drain();
    sim.greeting_played();
    let utt = sim.reply_queued(
        0,
        "I will transfer you now.",
        Some(ReplyEvent::TransferRequested { turn: 0 }),
    );
    let a = sim.played(utt);
    assert!(
        matches!(&a[..], [CallAction::Transfer { target, .. }] if target == "tel:+15555550199"),
        "{a:?}"
    );
    let a = sim.handle(CallInput::TransferResult { accepted: false });
    let turn = match &a[..] {
        [CallAction::Say { turn, text }] if text == "Sorry, I could not transfer you." => *turn,
        other => panic!("{other:?}"),
    };
    // A stray second answer is ignored.
    assert!(sim.handle(CallInput::TransferResult { accepted: true }).is_empty());
    let utt = sim.reply_queued(turn, "Sorry, I could not transfer you.", None);
    assert!(sim.played(utt).is_empty());
    // The next question is answered as usual.
    sim.ask("What are your opening hours?");
    assert!(!sim.m.is_ended());
}

#[test]
fn no_transfer_without_a_target() {
    let mut sim = Sim::new(None);
    sim.drain();
    let utt = sim.reply_queued(
        0,
        "I will transfer you now.",
        Some(ReplyEvent::TransferRequested { turn: 0 }),
    );
    assert!(sim.played(utt).is_empty());
}

#[test]
fn silence_reprompts_then_hangs_up_after_the_goodbye_played() {
    let mut sim = Sim::new(None);
    sim.drain();
    sim.greeting_played();
    let a = sim.wait(Duration::from_secs(8) + F);
    let turn = match &a[..] {
        [CallAction::Say { turn, text }] if text.starts_with("Are you still there") => *turn,
        other => panic!("{other:?}"),
    };
    let utt = sim.reply_queued(turn, "Are you still there?", None);
    assert!(sim.played(utt).is_empty());
    let a = sim.wait(Duration::from_secs(8) + F);
    let turn = match &a[..] {
        [CallAction::Say { turn, text }] if text.contains("goodbye") => *turn,
        other => panic!("{other:?}"),
    };
    // The hang-up waits for the goodbye to be heard.
    let utt = sim.reply_queued(turn, "Goodbye.", None);
    assert!(sim.wait(Duration::from_millis(500)).is_empty());
    assert!(!sim.m.is_ended());
    let a = sim.played(utt);
    assert!(
        matches!(&a[..], [CallAction::End(Ending::Agent("silence_timeout"))]),
        "{a:?}"
    );
    assert!(sim.m.is_ended());
}

#[test]
fn the_caller_hanging_up_ends_at_once_and_nothing_follows() {
    let mut sim = Sim::new(None);
    sim.drain();
    let a = sim.handle(CallInput::LegEnded {
        by: HangupBy::Caller,
        reason: "BYE".into(),
    });
    assert!(matches!(&a[..], [CallAction::End(Ending::Caller(r))] if r == "BYE"));
    assert!(!Ending::Caller("BYE".into()).leg_must_hang_up());
    // Late events of a finished call change nothing.
    assert!(sim.frames(&"#".repeat(40)).is_empty());
    assert!(sim.handle(CallInput::EndRequested).is_empty());
}

#[test]
fn a_leg_failure_ends_the_call_as_failed_and_the_api_as_the_agent() {
    let mut sim = Sim::new(None);
    sim.drain();
    let a = sim.handle(CallInput::LegEnded {
        by: HangupBy::System,
        reason: "media stopped".into(),
    });
    let [CallAction::End(e)] = &a[..] else {
        panic!("{a:?}")
    };
    assert_eq!(e.outcome().0, SessionStatus::Failed);
    assert!(e.leg_must_hang_up());
    let mut sim = Sim::new(None);
    sim.drain();
    let a = sim.handle(CallInput::EndRequested);
    assert!(matches!(
        &a[..],
        [CallAction::End(Ending::Agent("ended by API"))]
    ));
}

#[test]
fn the_max_call_time_waits_for_the_current_line() {
    let mut sim = Sim::new(None);
    sim.drain();
    // The greeting is still playing when the call reaches its limit.
    let utt = sim.reply_queued(0, "Hello, how can I help?", None);
    assert!(sim.wait(Duration::from_secs(601)).is_empty());
    let a = sim.played(utt);
    assert!(
        matches!(&a[..], [CallAction::End(Ending::Agent("max_call_seconds"))]),
        "{a:?}"
    );
}

#[test]
fn digits_become_a_turn() {
    let mut sim = Sim::new(None);
    sim.drain();
    sim.greeting_played();
    let a = sim.handle(CallInput::Dtmf('5'));
    assert!(
        matches!(&a[..], [CallAction::Respond { text, .. }] if text == "The caller pressed 5."),
        "{a:?}"
    );
}

#[test]
fn the_summary_is_the_callers_last_turns() {
    let m = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    let history = vec![
        m("assistant", "Hello."),
        m("user", "My cat is sick."),
        m("assistant", "I am sorry to hear that."),
        m("user", "She stopped eating."),
        m("user", " "),
        m("user", "Can I talk to a vet?"),
        m("user", "Please."),
    ];
    assert_eq!(
        caller_summary(&history),
        "She stopped eating. Can I talk to a vet? Please."
    );
    assert_eq!(caller_summary(&[]), "");
    let long = vec![m("user", &"é".repeat(300))];
    assert!(caller_summary(&long).len() <= 400);
}
