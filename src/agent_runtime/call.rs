//! The call driver: one task per call. It loads the agent, starts the
//! leg's media, and then only carries out what the [`CallMachine`] decides
//! — transcriptions and replies as abortable tasks, playout commands,
//! transfer and hang-up on the leg — and writes the call's records when it
//! ends, on every path. Any leg (SIP, WebRTC) drives it through [`LegSetup`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::call_machine::{CallAction, CallInput, CallMachine};
use super::ledger::CallLedger;
use super::leg::{LegEvent, LegSetup, SipLegSetup};
use super::profile::AgentProfile;
use super::providers::Providers;
use super::registry::{ControlRequest, LiveCallInfo};
use super::reply::{ReplyContext, ReplyEvent};
use super::turn::TurnSettings;
use super::warm;
use super::Runtime;
use crate::domain::{CallDirection, SessionStatus, TransferMode};
use crate::media::endpoint::EndpointConfig;
use crate::media::Playout;
use crate::records::{HangupBy, Record};
use crate::sip::call::IncomingCall;

/// How long each digit sent through the API lasts (RFC 4733 events).
const DTMF_DIGIT_MS: u32 = 100;

/// Runs one SIP call to its end.
pub async fn run_call(rt: Arc<Runtime>, call: IncomingCall) {
    run_leg(rt, Box::new(SipLegSetup::new(call))).await
}

/// Runs one call on any leg to its end. Never panics on peer input; every
/// exit path writes the records and frees the media.
pub async fn run_leg(rt: Arc<Runtime>, leg: Box<dyn LegSetup>) {
    let info = leg.info();
    let span = tracing::info_span!("call", call_id = %info.call_ref, call_log_id = %info.call_log_id, direction = info.direction.as_str());
    tracing::Instrument::instrument(drive(rt, leg), span).await
}

/// The running call's tasks: at most one reply, the transcriptions the
/// machine asked for, and a warm transfer's call to the person.
struct Work {
    reply: Option<JoinHandle<()>>,
    stt: HashMap<u64, JoinHandle<()>>,
    next_utt_base: u64,
    consult: Option<(
        String,
        JoinHandle<Result<warm::Consulted, warm::NotReached>>,
    )>,
}

impl Work {
    fn cancel_reply(&mut self) {
        if let Some(task) = self.reply.take() {
            task.abort();
        }
    }

    /// Cancels everything in flight at once: nothing keeps running or billing.
    fn cancel_all(&mut self) {
        self.cancel_reply();
        for (_, task) in self.stt.drain() {
            task.abort();
        }
        if let Some((_, task)) = self.consult.take() {
            task.abort();
        }
    }

    /// The warm transfer's outcome, once its task is done.
    async fn consulted(&mut self) -> (String, Result<warm::Consulted, warm::NotReached>) {
        let Some((_, task)) = self.consult.as_mut() else {
            return std::future::pending().await;
        };
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(warm::NotReached {
                outcome: "failed",
                sip_code: None,
                reason: format!("transfer task failed: {e}"),
            }),
        };
        let target = self.consult.take().map(|(t, _)| t).unwrap_or_default();
        (target, result)
    }
}

async fn drive(rt: Arc<Runtime>, setup: Box<dyn LegSetup>) {
    let info = setup.info().clone();
    // Both at once: while the database is away each waits out the pool's
    // acquire timeout, and the caller waits for the greeting.
    let (profile, credentials) = tokio::join!(
        load_profile(&rt, info.agent_id),
        load_credentials(&rt, info.workspace_id)
    );
    let profile = match profile {
        Some(mut p) => {
            p.fill_variables(&info.variables);
            if !info.can_transfer {
                p.without_transfer();
            }
            Arc::new(p)
        }
        None => {
            tracing::error!("agent could not be loaded; ending the call");
            setup.refuse("agent unavailable");
            return;
        }
    };
    let providers = rt.providers.for_agent(&rt.config, &profile, &credentials);
    // The first question then retrieves from memory, database or not, and
    // finds the recognizer's decoding state ready.
    rt.knowledge
        .warm((profile.workspace_id, Some(profile.agent_id)));
    providers.stt.prepare();
    let session_id = Uuid::new_v4();
    let started_wall = Utc::now();
    let started = Instant::now();
    rt.records.submit(Record::StartSession {
        id: session_id,
        workspace_id: info.workspace_id,
        agent_id: info.agent_id,
        channel: info.direction.channel().into(),
        caller: info.caller().to_string(),
        call_log_id: Some(info.call_log_id),
        at: started_wall,
    });
    rt.records.submit(Record::CountConversation {
        id: Uuid::new_v4(),
        workspace_id: info.workspace_id,
    });

    let recording_path = profile.recording_enabled.then(|| {
        rt.config
            .recording
            .dir
            .join(format!("{}.wav", info.call_log_id))
    });
    if let Some(dir) = recording_path.as_ref().and_then(|p| p.parent()) {
        if let Err(err) = std::fs::create_dir_all(dir) {
            tracing::warn!(error = %err, "recording folder unavailable");
        }
    }
    let mut leg = match setup.start(recording_path) {
        Ok(leg) => leg,
        Err(err) => {
            tracing::error!(error = %err, "media session failed to start");
            rt.records.submit(Record::EndSession {
                id: session_id,
                status: SessionStatus::Failed.as_str().into(),
                summary: None,
                at: Utc::now(),
            });
            return;
        }
    };
    let playout = leg.playout();

    let (control_tx, mut control_rx) = mpsc::channel(4);
    let _registration = rt.registry.register(
        LiveCallInfo {
            call_log_id: info.call_log_id,
            session_id,
            workspace_id: info.workspace_id,
            agent_id: info.agent_id,
            sip_call_id: info.call_ref.clone(),
            from_number: info.from_number.clone(),
            to_number: info.to_number.clone(),
            direction: info.direction.as_str(),
            started_at: started_wall,
            dtmf: info.dtmf,
        },
        control_tx,
    );

    let turn_cfg = &rt.config.turn;
    let ms = |v: u32| Duration::from_millis(v as u64);
    let settings = TurnSettings {
        end_of_turn_silence: ms(turn_cfg.end_of_turn_silence_ms),
        speculate_after: ms(turn_cfg.speculate_after_ms),
        complete_turn_silence: ms(turn_cfg.complete_turn_silence_ms),
        barge_in_min: ms(turn_cfg.barge_in_min_ms),
        backchannel_resume: ms(turn_cfg.backchannel_resume_ms),
        speech_onset: ms(turn_cfg.speech_onset_ms),
        interruptible: profile.interruptible,
        silence_timeout: Duration::from_millis(profile.silence_timeout_ms),
        max_call: Duration::from_secs(profile.max_call_seconds),
    };
    let endpoint = EndpointConfig {
        onset_ms: turn_cfg.speech_onset_ms,
        end_of_turn_silence_ms: turn_cfg.end_of_turn_silence_ms,
        ..EndpointConfig::default()
    };
    let ledger = CallLedger::new(
        info.workspace_id,
        session_id,
        info.call_log_id,
        profile.clone(),
    )
    .traced(rt.telemetry.clone(), &info.call_ref)
    .with_transcript(_registration.transcript());
    // The agent speaks first on outbound calls, after the verdict when it
    // detects answering machines.
    let mut machine =
        if info.direction == crate::domain::CallDirection::Outbound && profile.amd.enabled {
            tracing::info!("answering-machine detection before the greeting");
            CallMachine::detecting_machines(
                profile.clone(),
                settings,
                endpoint,
                super::amd::AmdSettings::default(),
                ledger,
                started,
            )
        } else {
            CallMachine::new(profile.clone(), settings, endpoint, ledger, started)
        };

    let (reply_tx, mut reply_rx) = mpsc::channel::<ReplyEvent>(64);
    let (stt_tx, mut stt_rx) = mpsc::channel::<(u64, Result<super::stt::Transcript, String>)>(8);
    let mut work = Work {
        reply: None,
        stt: HashMap::new(),
        next_utt_base: 1 << 20,
        consult: None,
    };
    // A warm transfer's person, reached and briefed: bridged at the end.
    let mut person: Option<warm::Consulted> = None;

    // A reply's context: an answer or a fixed line of `turn`.
    let new_reply = |turn: u64, utt_base: &mut u64| {
        reply_context(
            &rt, &providers, &profile, &playout, &reply_tx, turn, utt_base,
        )
    };

    let ending = loop {
        // Carry out what the machine decided, up to the end.
        let mut ending = None;
        while let Some(action) = machine.poll_action() {
            match action {
                CallAction::Transcribe { turn, audio } => {
                    tracing::debug!(turn, samples = audio.len(), "transcribing");
                    let listener = super::listen::Listener {
                        stt: providers.stt.clone(),
                        embedder: providers.embedder.clone(),
                        knowledge: rt.knowledge.clone(),
                        scope: (profile.workspace_id, Some(profile.agent_id)),
                        language: profile.stt_language.clone(),
                        policy: super::listen::HintPolicy::from_config(
                            rt.config.stt.knowledge_hint,
                            rt.config.stt.relisten_below,
                        ),
                        embed_budget: Duration::from_millis(rt.config.embeddings.query_budget_ms),
                    };
                    let embedder = providers.embedder.clone();
                    let tx = stt_tx.clone();
                    work.stt.insert(
                        turn,
                        tokio::spawn(async move {
                            let result = listener.hear(&audio).await.map_err(|e| e.to_string());
                            // The question's vector is computed while the
                            // turn waits for its end; the reply finds it ready.
                            if let Ok(t) = &result {
                                embedder.prefetch(&t.text);
                            }
                            let _ = tx.send((turn, result)).await;
                        }),
                    );
                }
                CallAction::CancelTranscription { turn } => {
                    if let Some(task) = work.stt.remove(&turn) {
                        task.abort();
                    }
                }
                CallAction::Respond {
                    turn,
                    text,
                    history,
                } => {
                    work.cancel_reply();
                    let ctx = new_reply(turn, &mut work.next_utt_base);
                    work.reply = Some(tokio::spawn(ctx.answer(text, history)));
                }
                CallAction::Say { turn, text } => {
                    work.cancel_reply();
                    let ctx = new_reply(turn, &mut work.next_utt_base);
                    work.reply = Some(tokio::spawn(ctx.say(text)));
                }
                CallAction::BargeIn => {
                    playout.flush();
                    work.cancel_reply();
                    crate::metrics::metrics().barge_in();
                    tracing::info!("barge-in: playout flushed, reply cancelled");
                }
                CallAction::HoldPlayout => {
                    playout.pause();
                    tracing::debug!("caller speech over the agent: playout held");
                }
                CallAction::ResumePlayout => {
                    playout.resume();
                    tracing::debug!("backchannel: playout resumed");
                }
                CallAction::Transfer { target, summary }
                    if profile.transfer_mode == TransferMode::Warm
                        && info.direction != CallDirection::Web =>
                {
                    tracing::info!(%target, "warm transfer: calling the person");
                    let task = tokio::spawn(warm::consult(
                        rt.clone(),
                        info.clone(),
                        profile.clone(),
                        providers.tts.clone(),
                        target.clone(),
                        summary,
                    ));
                    work.consult = Some((target, task));
                }
                CallAction::Transfer { target, .. } => {
                    if !leg.transfer(target).await {
                        tracing::info!("this leg cannot transfer");
                        machine.handle(
                            CallInput::TransferResult { accepted: false },
                            Instant::now(),
                        );
                    }
                }
                CallAction::End(e) => ending = Some(e),
            }
        }
        machine.flush_records(&rt.records);
        if let Some(e) = ending {
            break e;
        }

        let deadline = tokio::time::Instant::from_std(machine.next_deadline());
        let input = tokio::select! {
            ev = leg.next_event() => match ev {
                Some(LegEvent::Audio(samples)) => CallInput::Audio(samples),
                Some(LegEvent::Dtmf(digit)) => CallInput::Dtmf(digit),
                Some(LegEvent::PlayoutStarted { id, at }) => CallInput::PlayoutStarted { id, at },
                Some(LegEvent::PlayoutFinished { id }) => CallInput::PlayoutFinished { id },
                Some(LegEvent::PlayoutFlushed { id, played_ms }) => CallInput::PlayoutFlushed { id, played_ms },
                Some(LegEvent::TransferResult { accepted }) => CallInput::TransferResult { accepted },
                Some(LegEvent::Ended { by, reason }) => CallInput::LegEnded { by, reason },
                None => CallInput::LegEnded { by: crate::records::HangupBy::System, reason: "leg gone".into() },
            },
            req = control_rx.recv() => match req {
                Some(ControlRequest::Hangup { reason }) => {
                    tracing::info!(%reason, "hangup requested from outside the call");
                    CallInput::EndRequested
                }
                Some(ControlRequest::Dtmf { digits }) => {
                    for digit in digits.chars() {
                        if let Err(err) = playout.send_dtmf(digit, DTMF_DIGIT_MS) {
                            tracing::warn!(%err, %digit, "DTMF digit not sent");
                        }
                    }
                    tracing::info!(%digits, "DTMF sent");
                    continue;
                }
                None => continue,
            },
            ev = reply_rx.recv() => match ev {
                Some(ev) => CallInput::Reply(ev),
                None => continue,
            },
            (target, result) = work.consulted() => {
                let (outcome, sip_code) = match result {
                    Ok(consulted) => {
                        person = Some(consulted);
                        ("transferred", Some(200))
                    }
                    Err(why) => {
                        tracing::info!(outcome = why.outcome, sip_code = ?why.sip_code, reason = %why.reason, "warm transfer failed");
                        (why.outcome, why.sip_code)
                    }
                };
                rt.records.submit(Record::CallTransfer {
                    call_log_id: info.call_log_id,
                    target,
                    mode: TransferMode::Warm.as_str().into(),
                    outcome: outcome.into(),
                    sip_code,
                });
                CallInput::TransferResult { accepted: person.is_some() }
            },
            res = stt_rx.recv() => match res {
                Some((turn, result)) => {
                    work.stt.remove(&turn);
                    CallInput::Transcribed { turn, result }
                }
                None => continue,
            },
            _ = tokio::time::sleep_until(deadline) => CallInput::Tick,
        };
        machine.handle(input, Instant::now());
    };

    work.cancel_all();
    playout.flush();
    let (status, hangup_by, reason) = ending.outcome();
    if ending.leg_must_hang_up() {
        leg.hang_up(hangup_by, reason.clone()).await;
    }
    if let Some(warm::Consulted {
        leg: mut person,
        call_log_id: person_id,
    }) = person
    {
        // Warm transfer: the node relays between the two until one leaves,
        // then ends the other. Where the phones can take the call over
        // between themselves (REFER with Replaces), both legs end once
        // they have; where they cannot or fail to, the relay goes on.
        tracing::info!("warm transfer: caller and person bridged");
        if rt.config.sip.warm_transfer_replaces && !leg.complete_transfer(person_id).await {
            tracing::debug!("this leg cannot complete a transfer; bridging");
        }
        let first = warm::bridge(&mut leg, &mut person).await;
        tracing::info!(?first, "bridge over");
        let why = "the other party hung up".to_string();
        match first {
            warm::Side::Caller => person.hang_up(HangupBy::Agent, why).await,
            warm::Side::Person => leg.hang_up(HangupBy::Agent, why).await,
        }
        person.close().await;
    }
    let report = leg.close().await;
    let stats = serde_json::to_value(report.stats).ok();
    if let Some(err) = &report.recording_error {
        tracing::warn!(%err, "recording failed");
    }
    let call_seconds = started.elapsed().as_secs_f64();
    machine.finish(
        &rt.records,
        status,
        call_seconds,
        stats.as_ref(),
        report.recording.as_ref(),
    );
    tracing::info!(status = status.as_str(), hangup_by = hangup_by.as_str(), %reason, call_seconds, "call ended");
}

/// The workspace's provider credentials (the agent's configured providers
/// use them); a database blip means the offline defaults.
async fn load_credentials(
    rt: &Runtime,
    workspace_id: Uuid,
) -> Vec<super::providers::ProviderCredential> {
    let key = rt.config.encryption_key_bytes();
    match rt.profiles.credentials(workspace_id, &key).await {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(error = %err, "provider credentials unavailable; offline defaults");
            Vec::new()
        }
    }
}

/// The agent as the database has it (from memory while unchanged); while
/// the database is unreachable, as it last had it (the runtime keeps the
/// last profile of each agent), so a call to a known agent starts during an
/// outage.
async fn load_profile(rt: &Runtime, agent_id: Uuid) -> Option<AgentProfile> {
    // The agent was just routed from the database; a blip gets two retries.
    for attempt in 0..3u64 {
        match rt.profiles.profile(agent_id).await {
            Ok(p) => return Some(p),
            Err(err) => {
                if let Some(p) = rt.profiles.last_profile(agent_id) {
                    if !crate::db::is_permanent_error(&err) {
                        tracing::warn!(error = %err, "database unreachable: the agent as last loaded");
                        return Some(p);
                    }
                }
                tracing::warn!(error = %err, attempt, "loading the agent failed");
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    None
}

fn reply_context(
    rt: &Arc<Runtime>,
    providers: &Providers,
    profile: &Arc<AgentProfile>,
    playout: &Playout,
    tx: &mpsc::Sender<ReplyEvent>,
    turn: u64,
    next_utt_base: &mut u64,
) -> ReplyContext {
    let utt_base = *next_utt_base;
    *next_utt_base += 1 << 10;
    ReplyContext {
        turn,
        profile: profile.clone(),
        knowledge: rt.knowledge.clone(),
        llm: providers.llm.clone(),
        tts: providers.tts.clone(),
        playout: playout.clone(),
        events: tx.clone(),
        first_token_timeout: Duration::from_secs(rt.config.llm.first_token_timeout_secs),
        utt_base,
        embedder: Some(providers.embedder.clone() as Arc<dyn super::embeddings::Embedder>),
        embed_budget: Duration::from_millis(rt.config.embeddings.query_budget_ms),
    }
}
