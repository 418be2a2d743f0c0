//! The call's policy on a simulated clock: frames are voiced or silent by
//! pattern (one char per 20 ms, `#` voice, `.` silence), and the reply
//! tasks and playout the driver would run are played by the test.

use std::time::Duration;

use super::*;
use crate::agent_runtime::amd::{test_signals, AmdPolicy, AmdSettings, OnMachine};
use crate::agent_runtime::turn::TurnSettings;

const F: Duration = Duration::from_millis(20);

fn profile(transfer_to: Option<&str>) -> Arc<AgentProfile> {
    Arc::new(agent(transfer_to))
}

fn agent(transfer_to: Option<&str>) -> AgentProfile {
    AgentProfile::for_tests(transfer_to)
}

struct Sim {
    m: CallMachine,
    now: Instant,
    next_utt: u64,
}

fn turn_settings() -> TurnSettings {
    TurnSettings {
        end_of_turn_silence: Duration::from_millis(500),
        speculate_after: Duration::from_millis(150),
        complete_turn_silence: Duration::from_millis(250),
        barge_in_min: Duration::from_millis(400),
        backchannel_resume: Duration::from_millis(150),
        speech_onset: Duration::from_millis(100),
        interruptible: true,
        silence_timeout: Duration::from_secs(8),
        max_call: Duration::from_secs(600),
    }
}

fn ledger(p: &Arc<AgentProfile>) -> CallLedger {
    CallLedger::new(
        uuid::Uuid::nil(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        p.clone(),
    )
}

impl Sim {
    fn new(transfer_to: Option<&str>) -> Sim {
        let now = Instant::now();
        let p = profile(transfer_to);
        let ledger = ledger(&p);
        Sim {
            m: CallMachine::new(p, turn_settings(), EndpointConfig::default(), ledger, now),
            now,
            next_utt: 1,
        }
    }

    /// An outbound call whose agent detects answering machines.
    fn outbound(on_machine: OnMachine) -> Sim {
        let now = Instant::now();
        let mut a = agent(None);
        a.amd = AmdPolicy {
            enabled: true,
            on_machine,
        };
        let p = Arc::new(a);
        let ledger = ledger(&p);
        Sim {
            m: CallMachine::detecting_machines(
                p,
                turn_settings(),
                EndpointConfig::default(),
                AmdSettings::default(),
                ledger,
                now,
            ),
            now,
            next_utt: 1,
        }
    }

    /// The called party's audio by script (`v` voice, `b` beep, `s`
    /// silence; 20 ms each) through the VAD, with the driver's ticks.
    fn audio(&mut self, script: &str) -> Vec<CallAction> {
        let mut out = Vec::new();
        for (k, c) in script.chars().enumerate() {
            self.now += F;
            self.m
                .handle(CallInput::Audio(test_signals::frame(c, k)), self.now);
            if self.m.next_deadline() <= self.now {
                self.m.handle(CallInput::Tick, self.now);
            }
            out.extend(self.drain());
        }
        out
    }

    /// The verdicts the call's row will get.
    fn amd_results(&self) -> Vec<(String, i64)> {
        self.m
            .ledger()
            .queued_records()
            .iter()
            .filter_map(|r| match r {
                crate::records::Record::AmdResult {
                    result,
                    decision_ms,
                    ..
                } => Some((result.clone(), *decision_ms)),
                _ => None,
            })
            .collect()
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
    assert!(sim
        .handle(CallInput::TransferResult { accepted: true })
        .is_empty());
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

fn silence(ms: usize) -> String {
    "s".repeat(ms / 20)
}

fn speech(ms: usize) -> String {
    "v".repeat(ms / 20)
}

#[test]
fn a_person_answering_gets_the_greeting_once_they_have_said_hello() {
    let mut sim = Sim::outbound(OnMachine::Voicemail("Call us back.".into()));
    assert!(sim.drain().is_empty(), "nothing said before the verdict");
    let actions = sim.audio(&(silence(400) + &speech(600) + &silence(1000)));
    let said: Vec<&CallAction> = actions
        .iter()
        .filter(|a| matches!(a, CallAction::Say { .. }))
        .collect();
    assert!(
        matches!(said[..], [CallAction::Say { turn: 0, text }] if text == "Hello, how can I help?"),
        "{:?}",
        names(&actions)
    );
    // The "Hello?" went to the recognizer for the detector, not as a turn.
    assert!(!actions
        .iter()
        .any(|a| matches!(a, CallAction::Respond { .. })));
    let results = sim.amd_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].0, "human");
    assert!(results[0].1 >= 1000 && results[0].1 <= 2200, "{results:?}");
    // From here on the conversation runs as on any call.
    sim.greeting_played();
    let actions = sim.frames(&("#".repeat(30) + &".".repeat(30)));
    assert!(names(&actions).contains(&"transcribe"), "{actions:?}");
}

#[test]
fn a_machine_gets_the_voicemail_after_its_beep_then_the_call_ends() {
    let mut sim = Sim::outbound(OnMachine::Voicemail("Hi Ada, please call us back.".into()));
    let greeting = silence(300) + &speech(1200) + &silence(200) + &speech(2500) + &silence(300);
    let actions = sim.audio(&greeting);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, CallAction::Say { .. } | CallAction::End(_))),
        "the agent waits through the machine's greeting: {:?}",
        names(&actions)
    );
    assert_eq!(
        sim.amd_results().first().map(|r| r.0.as_str()),
        Some("machine")
    );
    let actions = sim.audio(&"b".repeat(20));
    let said: Vec<usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, CallAction::Say { turn: 0, text } if text == "Hi Ada, please call us back."))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        said.len(),
        1,
        "the voicemail once, at the beep: {:?}",
        names(&actions)
    );
    // The machine records on: its audio is not a turn and cannot barge in.
    let actions = sim.audio(&speech(2000));
    assert!(actions.is_empty(), "{:?}", names(&actions));
    let utt = sim.reply_queued(0, "Hi Ada, please call us back.", None);
    let end = sim.played(utt);
    assert!(
        matches!(&end[..], [CallAction::End(Ending::Agent("voicemail left"))]),
        "{end:?}"
    );
}

#[test]
fn a_machine_is_hung_up_on_when_the_agent_leaves_no_message() {
    let mut sim = Sim::outbound(OnMachine::HangUp);
    let actions = sim.audio(&(silence(200) + &speech(2500)));
    assert!(
        matches!(
            actions.last(),
            Some(CallAction::End(Ending::Agent("answering machine")))
        ),
        "{:?}",
        names(&actions)
    );
    assert!(!actions.iter().any(|a| matches!(a, CallAction::Say { .. })));
    assert_eq!(sim.amd_results()[0].0, "machine");
    assert!(sim.m.is_ended());
}

#[test]
fn greeting_words_from_the_recognizer_decide_a_machine() {
    let mut sim = Sim::outbound(OnMachine::HangUp);
    let actions = sim.audio(&(silence(300) + &speech(700) + &silence(100)));
    let turn = actions
        .iter()
        .find_map(|a| match a {
            CallAction::Transcribe { turn, .. } => Some(*turn),
            _ => None,
        })
        .expect("the first words go to the recognizer");
    sim.handle(CallInput::Transcribed {
        turn,
        result: transcript("You've reached Sam."),
    });
    assert!(sim.m.is_ended());
    assert_eq!(sim.amd_results()[0].0, "machine");
}

#[test]
fn a_silent_answer_is_unknown_and_greeted_after_three_seconds_even_without_rtp() {
    let mut sim = Sim::outbound(OnMachine::HangUp);
    let start = sim.now;
    let actions = sim.wait(Duration::from_secs(5));
    assert!(
        matches!(&actions[..], [CallAction::Say { turn: 0, .. }]),
        "{actions:?}"
    );
    assert_eq!(sim.amd_results(), vec![("unknown".to_string(), 3000)]);
    assert!(sim.now >= start + Duration::from_secs(3));
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
