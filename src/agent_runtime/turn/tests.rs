use super::*;

fn settings() -> TurnSettings {
    TurnSettings {
        end_of_turn_silence: Duration::from_millis(500),
        speculate_after: Duration::from_millis(150),
        complete_turn_silence: Duration::from_millis(800),
        barge_in_min: Duration::from_millis(400),
        backchannel_resume: Duration::from_millis(150),
        speech_onset: Duration::from_millis(100),
        interruptible: true,
        silence_timeout: Duration::from_secs(8),
        max_call: Duration::from_secs(600),
    }
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

fn audio() -> Arc<Vec<i16>> {
    Arc::new(vec![1; 16000])
}

/// A machine that answers a finished sentence after 250 ms of pause.
fn answering_early(t0: Instant) -> TurnMachine {
    TurnMachine::new(
        TurnSettings {
            complete_turn_silence: Duration::from_millis(250),
            ..settings()
        },
        t0,
    )
}

/// Drives ticks every 20 ms of simulated time up to `until`.
fn run_until(m: &mut TurnMachine, from: Instant, until: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= until {
        if now >= m.next_deadline() {
            out.extend(m.handle(Input::Tick, now));
        }
        now += Duration::from_millis(20);
    }
    out
}

#[test]
fn speculative_transcript_is_used_when_the_turn_really_ends() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    assert!(m
        .handle(Input::SpeechStarted { at: ms(t0, 1000) }, ms(t0, 1000))
        .is_empty());
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 3000),
            audio: audio(),
        },
        ms(t0, 3000),
    );
    let acts = run_until(&mut m, ms(t0, 3000), ms(t0, 3200));
    let turn = match acts.as_slice() {
        [Action::Transcribe { turn, .. }] => *turn,
        other => panic!("expected one speculative transcription, got {other:?}"),
    };
    // Whisper answers before the end-of-turn silence has passed...
    assert!(m
        .handle(
            Input::Transcript {
                turn,
                text: "What time do you open?".into()
            },
            ms(t0, 3400)
        )
        .is_empty());
    // ...and the answer starts the moment the endpointer ends the turn.
    let acts = m.handle(
        Input::SpeechEnded {
            at: ms(t0, 3500),
            audio: audio(),
        },
        ms(t0, 3500),
    );
    assert_eq!(
        acts,
        vec![Action::Respond {
            turn,
            text: "What time do you open?".into(),
            speech_ended_at: ms(t0, 3000),
            repeats: None
        }]
    );
    assert!(m.agent_speaking());
}

#[test]
fn caller_going_on_discards_the_speculation() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 1000),
            audio: audio(),
        },
        ms(t0, 1000),
    );
    let acts = run_until(&mut m, ms(t0, 1000), ms(t0, 1200));
    let Action::Transcribe { turn, .. } = acts[0].clone() else {
        panic!("{acts:?}")
    };
    let acts = m.handle(Input::SpeechResumed { at: ms(t0, 1300) }, ms(t0, 1300));
    assert_eq!(acts, vec![Action::CancelTranscription { turn }]);
    // The late result of the cancelled work is ignored.
    assert!(m
        .handle(
            Input::Transcript {
                turn,
                text: "half a question".into()
            },
            ms(t0, 1400)
        )
        .is_empty());
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 2000),
            audio: audio(),
        },
        ms(t0, 2000),
    );
    let acts = run_until(&mut m, ms(t0, 2000), ms(t0, 2200));
    let Action::Transcribe { turn: turn2, .. } = acts[0].clone() else {
        panic!("{acts:?}")
    };
    assert_ne!(turn, turn2);
    // The turn ends before whisper is done: the answer waits for the transcript.
    assert!(m
        .handle(
            Input::SpeechEnded {
                at: ms(t0, 2500),
                audio: audio()
            },
            ms(t0, 2500)
        )
        .is_empty());
    let acts = m.handle(
        Input::Transcript {
            turn: turn2,
            text: "the whole question".into(),
        },
        ms(t0, 2600),
    );
    assert!(matches!(&acts[..], [Action::Respond { text, .. }] if text == "the whole question"));
}

#[test]
fn long_speech_during_playout_barges_in_but_a_backchannel_does_not() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    m.agent_started_speaking(t0);
    // "mm-hm": 300 ms of voice while the agent talks. Playout holds at
    // the onset, before anyone knows whether it is an interruption.
    let acts = m.handle(Input::SpeechStarted { at: ms(t0, 1000) }, ms(t0, 1000));
    assert_eq!(acts, vec![Action::HoldPlayout]);
    let acts = run_until(&mut m, ms(t0, 1000), ms(t0, 1300));
    assert!(acts.is_empty(), "{acts:?}");
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 1300),
            audio: audio(),
        },
        ms(t0, 1300),
    );
    // 150 ms of quiet after it: the agent plays on, nothing transcribed.
    assert!(run_until(&mut m, ms(t0, 1300), ms(t0, 1440)).is_empty());
    let acts = run_until(&mut m, ms(t0, 1440), ms(t0, 1800));
    assert_eq!(
        acts,
        vec![Action::ResumePlayout],
        "a backchannel is never transcribed, and the agent plays on"
    );
    assert!(m
        .handle(
            Input::SpeechEnded {
                at: ms(t0, 1800),
                audio: audio()
            },
            ms(t0, 1800)
        )
        .is_empty());
    assert!(m.agent_speaking());
    // A real interruption: held at once, flushed after 400 ms of voice.
    let acts = m.handle(Input::SpeechStarted { at: ms(t0, 3000) }, ms(t0, 3000));
    assert_eq!(acts, vec![Action::HoldPlayout]);
    let acts = run_until(&mut m, ms(t0, 3000), ms(t0, 3400));
    assert_eq!(acts, vec![Action::BargeIn]);
    assert!(!m.agent_speaking());
    // What the caller says after interrupting is a turn like any other.
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 4000),
            audio: audio(),
        },
        ms(t0, 4000),
    );
    let acts = run_until(&mut m, ms(t0, 4000), ms(t0, 4200));
    assert!(matches!(acts[..], [Action::Transcribe { .. }]), "{acts:?}");
}

#[test]
fn a_backchannel_that_ends_before_the_resume_time_is_released_by_the_endpointer() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(
        TurnSettings {
            backchannel_resume: Duration::from_secs(5),
            ..settings()
        },
        t0,
    );
    m.agent_started_speaking(t0);
    assert_eq!(
        m.handle(Input::SpeechStarted { at: ms(t0, 1000) }, ms(t0, 1000)),
        vec![Action::HoldPlayout]
    );
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 1200),
            audio: audio(),
        },
        ms(t0, 1200),
    );
    // Voice again within the pause keeps the hold (no resume/hold flapping).
    assert!(m
        .handle(Input::SpeechResumed { at: ms(t0, 1260) }, ms(t0, 1260))
        .is_empty());
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 1300),
            audio: audio(),
        },
        ms(t0, 1300),
    );
    assert!(run_until(&mut m, ms(t0, 1300), ms(t0, 1780)).is_empty());
    let acts = m.handle(
        Input::SpeechEnded {
            at: ms(t0, 1800),
            audio: audio(),
        },
        ms(t0, 1800),
    );
    assert_eq!(acts, vec![Action::ResumePlayout]);
    assert!(m.agent_speaking());
}

#[test]
fn the_first_voiced_frame_holds_playout_and_a_blip_lets_it_go_on() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    // Nothing to hold while the agent is silent.
    assert!(m
        .handle(Input::VoiceDetected { at: ms(t0, 100) }, ms(t0, 100))
        .is_empty());
    m.agent_started_speaking(ms(t0, 200));
    // A blip: voice for a frame or two, no onset.
    assert_eq!(
        m.handle(Input::VoiceDetected { at: ms(t0, 1000) }, ms(t0, 1000)),
        vec![Action::HoldPlayout]
    );
    assert!(run_until(&mut m, ms(t0, 1000), ms(t0, 1140)).is_empty());
    // Onset (100 ms) plus grace (60 ms) without speech: play on.
    assert_eq!(
        run_until(&mut m, ms(t0, 1160), ms(t0, 1400)),
        vec![Action::ResumePlayout]
    );
    // Real speech: the hold from the first frame stays through the onset
    // and becomes the barge-in 400 ms after it.
    assert_eq!(
        m.handle(Input::VoiceDetected { at: ms(t0, 2000) }, ms(t0, 2000)),
        vec![Action::HoldPlayout]
    );
    assert!(m
        .handle(Input::SpeechStarted { at: ms(t0, 2000) }, ms(t0, 2100))
        .is_empty());
    assert!(run_until(&mut m, ms(t0, 2100), ms(t0, 2380)).is_empty());
    assert_eq!(
        run_until(&mut m, ms(t0, 2400), ms(t0, 2420)),
        vec![Action::BargeIn]
    );
}

#[test]
fn a_hold_never_outlives_the_reply() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    m.agent_started_speaking(t0);
    assert_eq!(
        m.handle(Input::SpeechStarted { at: ms(t0, 100) }, ms(t0, 100)),
        vec![Action::HoldPlayout]
    );
    // The reply had already finished playing when the hold came.
    assert_eq!(
        m.handle(Input::ReplyFinished, ms(t0, 120)),
        vec![Action::ResumePlayout]
    );
    // The caller's speech is now an ordinary turn: no barge-in.
    assert!(run_until(&mut m, ms(t0, 120), ms(t0, 900)).is_empty());
}

#[test]
fn non_interruptible_agents_ignore_barge_in() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(
        TurnSettings {
            interruptible: false,
            ..settings()
        },
        t0,
    );
    m.agent_started_speaking(t0);
    assert!(m
        .handle(Input::SpeechStarted { at: ms(t0, 100) }, ms(t0, 100))
        .is_empty());
    let acts = run_until(&mut m, ms(t0, 100), ms(t0, 2000));
    assert!(acts.is_empty(), "{acts:?}");
    assert!(m.agent_speaking());
}

#[test]
fn silence_reprompts_once_then_says_goodbye_and_hangs_up() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    m.agent_started_speaking(t0);
    m.handle(Input::ReplyFinished, ms(t0, 2000));
    let acts = run_until(&mut m, ms(t0, 2000), ms(t0, 10_100));
    assert_eq!(
        acts,
        vec![Action::Say {
            text: SayKind::Reprompt
        }]
    );
    m.handle(Input::ReplyFinished, ms(t0, 12_000));
    let acts = run_until(&mut m, ms(t0, 12_000), ms(t0, 20_100));
    assert_eq!(
        acts,
        vec![
            Action::Say {
                text: SayKind::Goodbye
            },
            Action::Hangup {
                reason: "silence_timeout"
            }
        ]
    );
    assert!(run_until(&mut m, ms(t0, 20_100), ms(t0, 40_000)).is_empty());
}

#[test]
fn max_call_seconds_ends_the_call() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(
        TurnSettings {
            max_call: Duration::from_secs(5),
            ..settings()
        },
        t0,
    );
    m.agent_started_speaking(t0);
    let acts = run_until(&mut m, t0, ms(t0, 6000));
    assert_eq!(
        acts,
        vec![Action::Hangup {
            reason: "max_call_seconds"
        }]
    );
}

#[test]
fn dtmf_reaches_the_agent_as_text() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    let acts = m.handle(Input::Dtmf { digit: '1' }, ms(t0, 500));
    assert!(
        matches!(&acts[..], [Action::Respond { text, .. }] if text == "The caller pressed 1."),
        "{acts:?}"
    );
}

#[test]
fn blank_transcripts_are_not_turns() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    let acts = m.handle(
        Input::SpeechEnded {
            at: ms(t0, 800),
            audio: audio(),
        },
        ms(t0, 800),
    );
    let Action::Transcribe { turn, .. } = acts[0].clone() else {
        panic!("{acts:?}")
    };
    assert!(m
        .handle(
            Input::Transcript {
                turn,
                text: "[BLANK_AUDIO]".into()
            },
            ms(t0, 900)
        )
        .is_empty());
    assert!(!m.agent_speaking());
}

#[test]
fn a_finished_sentence_is_answered_before_the_full_end_of_turn_silence() {
    let t0 = Instant::now();
    let mut m = answering_early(t0);
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 2000),
            audio: audio(),
        },
        ms(t0, 2000),
    );
    let acts = run_until(&mut m, ms(t0, 2000), ms(t0, 2160));
    let Action::Transcribe { turn, .. } = acts[0].clone() else {
        panic!("{acts:?}")
    };
    // Ready at 2 200 ms but only 200 ms of pause: not yet.
    assert!(m
        .handle(
            Input::Transcript {
                turn,
                text: "What time do you open?".into()
            },
            ms(t0, 2200)
        )
        .is_empty());
    let acts = run_until(&mut m, ms(t0, 2200), ms(t0, 2260));
    assert_eq!(
        acts,
        vec![Action::Respond {
            turn,
            text: "What time do you open?".into(),
            speech_ended_at: ms(t0, 2000),
            repeats: None
        }]
    );
    // The endpointer's later end of turn for the same speech is not a second turn.
    assert!(m
        .handle(
            Input::SpeechEnded {
                at: ms(t0, 2500),
                audio: audio()
            },
            ms(t0, 2500)
        )
        .is_empty());
}

#[test]
fn an_unfinished_sentence_waits_for_the_endpointer() {
    let t0 = Instant::now();
    let mut m = answering_early(t0);
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 2000),
            audio: audio(),
        },
        ms(t0, 2000),
    );
    let acts = run_until(&mut m, ms(t0, 2000), ms(t0, 2160));
    let Action::Transcribe { turn, .. } = acts[0].clone() else {
        panic!("{acts:?}")
    };
    assert!(m
        .handle(
            Input::Transcript {
                turn,
                text: "I would like to".into()
            },
            ms(t0, 2200)
        )
        .is_empty());
    assert!(run_until(&mut m, ms(t0, 2200), ms(t0, 2480)).is_empty());
    let acts = m.handle(
        Input::SpeechEnded {
            at: ms(t0, 2500),
            audio: audio(),
        },
        ms(t0, 2500),
    );
    assert!(
        matches!(&acts[..], [Action::Respond { text, .. }] if text == "I would like to"),
        "{acts:?}"
    );
}

#[test]
fn speech_with_gaps_between_words_still_barges_in_from_its_onset() {
    let t0 = Instant::now();
    let mut m = TurnMachine::new(settings(), t0);
    m.agent_started_speaking(t0);
    // "Sorry to interrupt": voice with short silences between the words.
    assert_eq!(
        m.handle(Input::SpeechStarted { at: ms(t0, 1000) }, ms(t0, 1000)),
        vec![Action::HoldPlayout]
    );
    assert!(run_until(&mut m, ms(t0, 1000), ms(t0, 1150)).is_empty());
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 1150),
            audio: audio(),
        },
        ms(t0, 1150),
    );
    m.handle(Input::SpeechResumed { at: ms(t0, 1200) }, ms(t0, 1200));
    assert!(run_until(&mut m, ms(t0, 1200), ms(t0, 1340)).is_empty());
    m.handle(
        Input::PauseStarted {
            at: ms(t0, 1340),
            audio: audio(),
        },
        ms(t0, 1340),
    );
    m.handle(Input::SpeechResumed { at: ms(t0, 1380) }, ms(t0, 1380));
    let acts = run_until(&mut m, ms(t0, 1380), ms(t0, 1420));
    assert_eq!(acts, vec![Action::BargeIn], "400 ms after the onset");
}

/// The caller pauses at `paused` ms; whisper returns `text` (a finished
/// sentence) 200 ms later; what the machine does up to 60 ms after that.
fn pause_with_a_finished_sentence(
    m: &mut TurnMachine,
    t0: Instant,
    paused: u64,
    text: &str,
) -> Vec<Action> {
    m.handle(
        Input::PauseStarted {
            at: ms(t0, paused),
            audio: audio(),
        },
        ms(t0, paused),
    );
    let acts = run_until(m, ms(t0, paused), ms(t0, paused + 160));
    let Some(Action::Transcribe { turn, .. }) = acts.last().cloned() else {
        panic!("{acts:?}")
    };
    m.handle(
        Input::Transcript {
            turn,
            text: text.into(),
        },
        ms(t0, paused + 200),
    );
    run_until(m, ms(t0, paused + 200), ms(t0, paused + 260))
}

/// The turn ends at `ended` ms and whisper returns `text` 200 ms later.
fn end_and_transcribe(m: &mut TurnMachine, t0: Instant, ended: u64, text: &str) -> Vec<Action> {
    let acts = m.handle(
        Input::SpeechEnded {
            at: ms(t0, ended),
            audio: audio(),
        },
        ms(t0, ended),
    );
    let Some(Action::Transcribe { turn, .. }) = acts.last().cloned() else {
        panic!("{acts:?}")
    };
    m.handle(
        Input::Transcript {
            turn,
            text: text.into(),
        },
        ms(t0, ended + 200),
    )
}

#[test]
fn a_caller_who_goes_on_after_an_early_answer_is_recorded_once() {
    let t0 = Instant::now();
    let mut m = answering_early(t0);
    // "Can I come in today?" — pause — answered early.
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    let acts = pause_with_a_finished_sentence(&mut m, t0, 2000, "Can I come in today?");
    assert!(
        matches!(&acts[..], [Action::Respond { repeats: None, .. }]),
        "{acts:?}"
    );
    // "I broke a tooth.": the same utterance goes on over the early answer.
    m.handle(Input::SpeechResumed { at: ms(t0, 2400) }, ms(t0, 2400));
    let acts = run_until(&mut m, ms(t0, 2400), ms(t0, 3180));
    assert!(acts.contains(&Action::BargeIn), "{acts:?}");
    let acts = end_and_transcribe(&mut m, t0, 3200, "Can I come in today? I broke a tooth.");
    let Some(Action::Respond {
        text,
        repeats: Some(r),
        ..
    }) = acts.last()
    else {
        panic!("{acts:?}")
    };
    assert_eq!(text, "Can I come in today? I broke a tooth.");
    assert_eq!(continuation_after(r, text), Some("I broke a tooth."));
    // A fresh utterance after a real end of turn repeats nothing.
    m.handle(Input::ReplyFinished, ms(t0, 5000));
    m.handle(Input::SpeechStarted { at: ms(t0, 6000) }, ms(t0, 6000));
    let acts = end_and_transcribe(&mut m, t0, 7000, "Thanks.");
    assert!(
        matches!(&acts[..], [Action::Respond { repeats: None, .. }]),
        "{acts:?}"
    );
}

#[test]
fn a_continuation_answered_early_also_names_what_it_repeats() {
    let t0 = Instant::now();
    let mut m = answering_early(t0);
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    let acts = pause_with_a_finished_sentence(&mut m, t0, 1000, "Is it too late to book?");
    assert!(
        matches!(&acts[..], [Action::Respond { repeats: None, .. }]),
        "{acts:?}"
    );
    m.handle(Input::SpeechResumed { at: ms(t0, 1400) }, ms(t0, 1400));
    let acts = run_until(&mut m, ms(t0, 1400), ms(t0, 1900));
    assert!(acts.contains(&Action::BargeIn), "{acts:?}");
    // The whole utterance is a finished sentence too: answered early again.
    let acts = pause_with_a_finished_sentence(
        &mut m,
        t0,
        3000,
        "Is it too late to book, or can I come on Saturday?",
    );
    assert!(
        matches!(&acts[..], [Action::Respond { repeats: Some(r), .. }] if r == "Is it too late to book?"),
        "{acts:?}"
    );
}

#[test]
fn the_continuation_is_what_follows_the_early_transcript() {
    assert_eq!(
        continuation_after(
            "My sea is blowing warm air.",
            "My AC is blowing warm air, can you fix it?"
        ),
        Some("can you fix it?")
    );
    assert_eq!(
        continuation_after(
            "The engine warning light came on.",
            "The engine warning light came on. What should I do?"
        ),
        Some("What should I do?")
    );
    // Whisper heard the opening differently: nothing is cut.
    assert_eq!(
        continuation_after("Can I pay by card?", "Do you take cash or checks?"),
        None
    );
    // Nothing new after the opening.
    assert_eq!(
        continuation_after("Can I pay by card?", "Can I pay by card?"),
        None
    );
    assert_eq!(continuation_after("", "Hello there."), None);
    assert_eq!(
        continuation_after(
            "Sorry to interrupt.",
            "Sorry to interrupt, what time do you open on Saturday?"
        ),
        Some("what time do you open on Saturday?")
    );
}

#[test]
fn a_statement_at_a_comma_pause_is_not_answered_early() {
    let t0 = Instant::now();
    let mut m = answering_early(t0);
    // "My brakes are squeaking," — a 300 ms comma pause — "how much…?"
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    let acts = pause_with_a_finished_sentence(&mut m, t0, 1200, "My brakes are squeaking.");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Respond { .. })),
        "{acts:?}"
    );
    m.handle(Input::SpeechResumed { at: ms(t0, 1500) }, ms(t0, 1500));
    // The question that follows is answered early, whole, as one turn.
    let acts = pause_with_a_finished_sentence(
        &mut m,
        t0,
        3000,
        "My brakes are squeaking. How much to replace the pads.",
    );
    assert!(
        matches!(&acts[..], [Action::Respond { text, repeats: None, .. }]
            if text == "My brakes are squeaking. How much to replace the pads."),
        "{acts:?}"
    );
}

#[test]
fn a_statement_alone_is_answered_at_the_end_of_turn() {
    let t0 = Instant::now();
    let mut m = answering_early(t0);
    m.handle(Input::SpeechStarted { at: t0 }, t0);
    let acts = pause_with_a_finished_sentence(&mut m, t0, 1200, "I need to cancel my booking.");
    assert!(acts.is_empty(), "{acts:?}");
    let acts = m.handle(
        Input::SpeechEnded {
            at: ms(t0, 1700),
            audio: audio(),
        },
        ms(t0, 1700),
    );
    assert!(
        matches!(&acts[..], [Action::Respond { text, speech_ended_at, .. }]
            if text == "I need to cancel my booking." && *speech_ended_at == ms(t0, 1200)),
        "{acts:?}"
    );
}

#[test]
fn questions_read_complete_with_or_without_their_question_mark() {
    for q in [
        "What time do you open on Saturday?",
        "It's two in the morning and water is pouring in, can anybody get here right now.",
        "I'm at university. Is there a cheaper deal for people like me.",
        "What's the latest I can come in.",
        "My son is 15. is he allowed to lift weights?",
    ] {
        assert!(reads_complete(q), "{q}");
    }
    for s in [
        "My brakes are squeaking.",
        "I'm at university.",
        "Can I pay by card? I never carry cash.",
        "I would like to...",
        "Thanks!",
        "Hello?",
    ] {
        assert!(!reads_complete(s), "{s}");
    }
}
