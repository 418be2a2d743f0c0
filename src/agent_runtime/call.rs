//! The call task: one per accepted call, owning its state. It feeds the
//! caller's audio to the endpointer and the turn machine, runs
//! transcriptions and replies as abortable tasks, tracks what was actually
//! played, and writes the call's records when it ends — on every path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::ledger::CallLedger;
use super::profile::AgentProfile;
use super::providers::Providers;
use super::registry::{ControlRequest, LiveCallInfo};
use super::reply::{ReplyContext, ReplyEvent};
use super::turn::{Action, Input, SayKind, TurnMachine, TurnSettings};
use super::Runtime;
use crate::media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use crate::media::session::{MediaEvent, MediaSession, SessionConfig};
use crate::records::Record;
use crate::sip::call::{CallCommand, CallDirection, CallEvent, HangupBy, IncomingCall};

/// How long each digit sent through the API lasts (RFC 4733 events).
const DTMF_DIGIT_MS: u32 = 100;

enum Ending {
    Caller(String),
    Agent(&'static str),
    System(String),
    Transferred,
}

/// Runs one call to its end. Never panics on peer input; every exit path
/// writes the records and frees the media.
pub async fn run_call(rt: Arc<Runtime>, call: IncomingCall) {
    let span =
        tracing::info_span!("call", call_id = %call.sip_call_id, call_log_id = %call.call_log_id);
    let _guard = span.enter();
    drop(_guard);
    let fut = run_call_inner(rt, call);
    tracing::Instrument::instrument(fut, span).await
}

async fn run_call_inner(rt: Arc<Runtime>, call: IncomingCall) {
    let IncomingCall {
        call_log_id,
        direction,
        variables,
        sip_call_id,
        workspace_id,
        agent_id,
        from_number,
        to_number,
        media,
        rtp_socket,
        rtp_port,
        mut events,
        commands,
        ..
    } = call;
    // Both at once: while the database is away each waits out the pool's
    // acquire timeout, and the caller waits for the greeting.
    let (profile, credentials) = tokio::join!(
        load_profile(&rt, agent_id),
        load_credentials(&rt, workspace_id)
    );
    let profile = match profile {
        Some(mut p) => {
            p.fill_variables(&variables);
            Arc::new(p)
        }
        None => {
            tracing::error!("agent could not be loaded; ending the call");
            let _ = commands
                .send(CallCommand::Hangup {
                    by: HangupBy::System,
                    reason: "agent unavailable".into(),
                })
                .await;
            return;
        }
    };
    let providers = rt.providers.for_agent(&rt.config, &profile, &credentials);
    // The first question then retrieves from memory, database or not.
    rt.knowledge
        .warm((profile.workspace_id, Some(profile.agent_id)));
    let session_id = Uuid::new_v4();
    let started_wall = Utc::now();
    let started = Instant::now();
    rt.records.submit(Record::StartSession {
        id: session_id,
        workspace_id,
        agent_id,
        channel: "phone".into(),
        // The person on the line: who called us, or whom we called.
        caller: match direction {
            CallDirection::Inbound => from_number.clone(),
            CallDirection::Outbound => to_number.clone(),
        },
        call_log_id: Some(call_log_id),
        at: started_wall,
    });
    rt.records.submit(Record::CountConversation {
        id: Uuid::new_v4(),
        workspace_id,
    });

    let recording_path = profile
        .recording_enabled
        .then(|| rt.config.recording.dir.join(format!("{call_log_id}.wav")));
    if let Some(dir) = recording_path.as_ref().and_then(|p| p.parent()) {
        if let Err(err) = std::fs::create_dir_all(dir) {
            tracing::warn!(error = %err, "recording folder unavailable");
        }
    }
    let mut session_config = SessionConfig::new(
        media.remote_addr,
        media.codec,
        media.payload_type,
        media.telephone_event_pt,
    );
    session_config.record_path = recording_path.clone();
    session_config.sources = media.sources;
    session_config.srtp = media.srtp.clone();
    let (session, mut media_rx) = match MediaSession::start(rtp_socket, session_config) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "media session failed to start");
            let _ = commands
                .send(CallCommand::Hangup {
                    by: HangupBy::System,
                    reason: "media failure".into(),
                })
                .await;
            rt.records.submit(Record::EndSession {
                id: session_id,
                status: "failed".into(),
                summary: None,
                at: Utc::now(),
            });
            return;
        }
    };
    let playout = session.playout();

    let (control_tx, mut control_rx) = mpsc::channel(4);
    let _registration = rt.registry.register(
        LiveCallInfo {
            call_log_id,
            session_id,
            workspace_id,
            agent_id,
            sip_call_id: sip_call_id.clone(),
            from_number: from_number.clone(),
            to_number: to_number.clone(),
            direction: direction.as_str(),
            started_at: started_wall,
            dtmf: media.telephone_event_pt.is_some(),
        },
        control_tx,
    );

    let turn_cfg = &rt.config.turn;
    let mut turns = TurnMachine::new(
        TurnSettings {
            end_of_turn_silence: Duration::from_millis(turn_cfg.end_of_turn_silence_ms as u64),
            speculate_after: Duration::from_millis(turn_cfg.speculate_after_ms as u64),
            complete_turn_silence: Duration::from_millis(turn_cfg.complete_turn_silence_ms as u64),
            barge_in_min: Duration::from_millis(turn_cfg.barge_in_min_ms as u64),
            backchannel_resume: Duration::from_millis(turn_cfg.backchannel_resume_ms as u64),
            speech_onset: Duration::from_millis(turn_cfg.speech_onset_ms as u64),
            interruptible: profile.interruptible,
            silence_timeout: Duration::from_millis(profile.silence_timeout_ms),
            max_call: Duration::from_secs(profile.max_call_seconds),
        },
        started,
    );
    let mut endpointer = Endpointer::new(EndpointConfig {
        onset_ms: turn_cfg.speech_onset_ms,
        end_of_turn_silence_ms: turn_cfg.end_of_turn_silence_ms,
        ..EndpointConfig::default()
    });
    let mut ledger = CallLedger::new(workspace_id, session_id, call_log_id, profile.clone())
        .traced(rt.telemetry.clone(), &sip_call_id);

    let (reply_tx, mut reply_rx) = mpsc::channel::<ReplyEvent>(64);
    let (stt_tx, mut stt_rx) = mpsc::channel::<(u64, Result<super::stt::Transcript, String>)>(8);
    let mut stt_tasks: HashMap<u64, JoinHandle<()>> = HashMap::new();
    let mut next_utt_base: u64 = 1 << 20;
    let mut pending_hangup: Option<&'static str> = None;
    let mut transfer_pending = false;
    // Asked for, sent once the announcement ("I will transfer you…") has
    // played: a trunk transfers at once, so an early REFER cuts it off.
    let mut transfer_wanted = false;

    // The greeting.
    turns.agent_started_speaking(Instant::now());
    ledger.begin_reply(0, None);
    let mut reply_task: Option<JoinHandle<()>> = Some(spawn_say(
        &rt,
        &providers,
        &profile,
        &playout,
        &reply_tx,
        0,
        &mut next_utt_base,
        profile.greeting.clone(),
    ));

    let ending = loop {
        let deadline = tokio::time::Instant::from_std(turns.next_deadline());
        let mut actions = Vec::new();
        tokio::select! {
            ev = media_rx.recv() => match ev {
                Some(MediaEvent::Audio(frame)) => {
                    let now = Instant::now();
                    for ev in endpointer.push(&frame.samples, now) {
                        let input = match ev {
                            EndpointEvent::VoiceDetected { at } => Input::VoiceDetected { at },
                            EndpointEvent::SpeechStarted { at } => Input::SpeechStarted { at },
                            EndpointEvent::PauseStarted { at, audio } => Input::PauseStarted { at, audio },
                            EndpointEvent::SpeechResumed { at } => Input::SpeechResumed { at },
                            EndpointEvent::SpeechEnded { at, audio, .. } => Input::SpeechEnded { at, audio: Arc::new(audio) },
                        };
                        actions.extend(turns.handle(input, now));
                    }
                }
                Some(MediaEvent::Dtmf { digit, .. }) => actions.extend(turns.handle(Input::Dtmf { digit }, Instant::now())),
                Some(MediaEvent::PlayoutStarted { id, at }) => ledger.playout_started(id, at),
                Some(MediaEvent::PlayoutFinished { id, .. }) => {
                    ledger.playout_finished(id);
                    if ledger.reply_complete() { actions.extend(turns.handle(Input::ReplyFinished, Instant::now())); }
                }
                Some(MediaEvent::PlayoutFlushed { id, played_ms }) => ledger.playout_flushed(id, played_ms),
                // The peer's RTCP BYE is advisory; the SIP BYE ends the call.
                Some(MediaEvent::RtcpBye) => tracing::debug!("RTCP BYE from the caller"),
                None => break Ending::System("media stopped".into()),
            },
            ev = events.recv() => match ev {
                Some(CallEvent::Hangup { by, reason }) => break match by {
                    HangupBy::Caller => Ending::Caller(reason),
                    _ => Ending::System(reason),
                },
                Some(CallEvent::Dtmf { digit, .. }) => actions.extend(turns.handle(Input::Dtmf { digit }, Instant::now())),
                Some(CallEvent::MediaChanged { media, .. }) => session.update_remote(media.remote_addr, media.codec, media.payload_type),
                Some(CallEvent::TransferResult { accepted, sip_code }) => {
                    tracing::info!(accepted, sip_code, "transfer result");
                    if accepted { break Ending::Transferred; }
                    transfer_pending = false;
                }
                None => break Ending::System("signalling gone".into()),
            },
            req = control_rx.recv() => match req {
                Some(ControlRequest::Hangup { reason }) => {
                    tracing::info!(%reason, "hangup requested from outside the call");
                    break Ending::Agent("ended by API");
                }
                Some(ControlRequest::Dtmf { digits }) => {
                    for digit in digits.chars() {
                        if let Err(err) = playout.send_dtmf(digit, DTMF_DIGIT_MS) {
                            tracing::warn!(%err, %digit, "DTMF digit not sent");
                        }
                    }
                    tracing::info!(%digits, "DTMF sent");
                }
                None => {}
            },
            ev = reply_rx.recv() => if let Some(ev) = ev {
                if ledger.on_reply_event(ev) && ledger.reply_complete() {
                    actions.extend(turns.handle(Input::ReplyFinished, Instant::now()));
                }
                if ledger.take_transfer_request() && !transfer_pending {
                    transfer_wanted = profile.transfer_to.is_some();
                }
            },
            res = stt_rx.recv() => if let Some((turn, result)) = res {
                stt_tasks.remove(&turn);
                let input = match result {
                    Ok(t) => { tracing::debug!(turn, text = %t.text, ms = t.elapsed_ms, "transcript"); ledger.transcribed(turn, t.elapsed_ms, t.audio_ms); Input::Transcript { turn, text: t.text } }
                    Err(err) => { tracing::warn!(%err, turn, "transcription failed"); Input::TranscriptFailed { turn } }
                };
                actions.extend(turns.handle(input, Instant::now()));
            },
            _ = tokio::time::sleep_until(deadline) => actions.extend(turns.handle(Input::Tick, Instant::now())),
        }
        ledger.flush_to(&rt.records);
        if transfer_wanted && ledger.reply_complete() {
            transfer_wanted = false;
            if let Some(target) = profile.transfer_to.clone() {
                transfer_pending = true;
                let _ = commands.send(CallCommand::Transfer { target }).await;
            }
        }
        if let Some(reason) = pending_hangup {
            if ledger.reply_complete() {
                break Ending::Agent(reason);
            }
        }
        for action in actions {
            match action {
                Action::Transcribe { turn, audio } => {
                    tracing::debug!(turn, samples = audio.len(), "transcribing");
                    let stt = providers.stt.clone();
                    let embedder = providers.embedder.clone();
                    let tx = stt_tx.clone();
                    let language = profile.stt_language.clone();
                    stt_tasks.insert(
                        turn,
                        tokio::spawn(async move {
                            let result = stt
                                .transcribe(&audio, language.as_deref())
                                .await
                                .map_err(|e| e.to_string());
                            // The question's vector is computed while the
                            // turn waits for its end; the reply finds it ready.
                            if let Ok(t) = &result {
                                embedder.prefetch(&t.text);
                            }
                            let _ = tx.send((turn, result)).await;
                        }),
                    );
                }
                Action::CancelTranscription { turn } => {
                    if let Some(task) = stt_tasks.remove(&turn) {
                        task.abort();
                    }
                }
                Action::Respond {
                    turn,
                    text,
                    speech_ended_at,
                    repeats,
                } => {
                    if let Some(task) = reply_task.take() {
                        task.abort();
                    }
                    let history = ledger.history(profile.context_window_size);
                    ledger.user_turn(turn, &text, repeats.as_deref(), speech_ended_at);
                    let ctx = reply_context(
                        &rt,
                        &providers,
                        &profile,
                        &playout,
                        &reply_tx,
                        turn,
                        &mut next_utt_base,
                    );
                    reply_task = Some(tokio::spawn(ctx.answer(text, history)));
                }
                Action::BargeIn => {
                    playout.flush();
                    if let Some(task) = reply_task.take() {
                        task.abort();
                    }
                    ledger.interrupted();
                    crate::metrics::metrics().barge_in();
                    tracing::info!("barge-in: playout flushed, reply cancelled");
                }
                Action::HoldPlayout => {
                    playout.pause();
                    tracing::debug!("caller speech over the agent: playout held");
                }
                Action::ResumePlayout => {
                    playout.resume();
                    tracing::debug!("backchannel: playout resumed");
                }
                Action::Say { text } => {
                    let line = match text {
                        SayKind::Reprompt => profile.reprompt(),
                        SayKind::Goodbye => profile.goodbye(),
                    };
                    if let Some(task) = reply_task.take() {
                        task.abort();
                    }
                    let turn = ledger.next_fixed_turn();
                    ledger.begin_reply(turn, None);
                    reply_task = Some(spawn_say(
                        &rt,
                        &providers,
                        &profile,
                        &playout,
                        &reply_tx,
                        turn,
                        &mut next_utt_base,
                        line,
                    ));
                }
                Action::Hangup { reason } => pending_hangup = Some(reason),
            }
        }
    };

    // Cancel everything in flight at once: nothing keeps running or billing.
    if let Some(task) = reply_task.take() {
        task.abort();
    }
    for (_, task) in stt_tasks.drain() {
        task.abort();
    }
    playout.flush();
    let report = session.close().await;
    let stats = serde_json::to_value(report.stats).ok();
    if let Some(err) = &report.recording_error {
        tracing::warn!(%err, "recording failed");
    }

    let (status, hangup_by, reason) = match &ending {
        Ending::Caller(r) => ("completed", HangupBy::Caller, r.clone()),
        Ending::Agent(r) => ("completed", HangupBy::Agent, r.to_string()),
        Ending::System(r) => ("failed", HangupBy::System, r.clone()),
        Ending::Transferred => ("escalated", HangupBy::Agent, "transferred".into()),
    };
    if !matches!(ending, Ending::Caller(_) | Ending::Transferred) {
        let _ = commands
            .send(CallCommand::Hangup {
                by: hangup_by,
                reason: reason.clone(),
            })
            .await;
    }
    let call_seconds = started.elapsed().as_secs_f64();
    ledger.write_all(
        &rt.records,
        status,
        call_seconds,
        stats.as_ref(),
        report.recording.as_ref(),
    );
    tracing::info!(status, hangup_by = hangup_by.as_str(), %reason, call_seconds, "call ended");
    drop(rtp_port);
}

/// The workspace's provider credentials (the agent's configured providers
/// use them); a database blip means the offline defaults.
async fn load_credentials(
    rt: &Runtime,
    workspace_id: Uuid,
) -> Vec<super::providers::ProviderCredential> {
    let key = rt.config.encryption_key_bytes();
    match Providers::load_credentials(&rt.pool, workspace_id, &key).await {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(error = %err, "provider credentials unavailable; offline defaults");
            Vec::new()
        }
    }
}

/// The agent as the database has it; while the database is unreachable,
/// as it last had it (the runtime keeps the last profile of each agent), so
/// a call to a known agent starts during an outage.
async fn load_profile(rt: &Runtime, agent_id: Uuid) -> Option<AgentProfile> {
    // The agent was just routed from the database; a blip gets two retries.
    for attempt in 0..3u64 {
        match AgentProfile::load(&rt.pool, agent_id).await {
            Ok(p) => {
                rt.remember_profile(&p);
                return Some(p);
            }
            Err(err) => {
                if let Some(p) = rt.last_profile(agent_id) {
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
    playout: &crate::media::session::Playout,
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

fn spawn_say(
    rt: &Arc<Runtime>,
    providers: &Providers,
    profile: &Arc<AgentProfile>,
    playout: &crate::media::session::Playout,
    tx: &mpsc::Sender<ReplyEvent>,
    turn: u64,
    next_utt_base: &mut u64,
    text: String,
) -> JoinHandle<()> {
    let ctx = reply_context(rt, providers, profile, playout, tx, turn, next_utt_base);
    tokio::spawn(ctx.say(text))
}
