//! What a call did, kept as it happens: the conversation (with what was
//! actually played when the agent was interrupted), per-turn latency (also
//! into the process's metrics as each turn's first audio plays), and usage.
//! At the end it becomes the call's records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::leads::LeadCollector;
use super::llm::ChatMessage;
use super::profile::AgentProfile;
use super::reply::ReplyEvent;
use super::turn::continuation_after;
use crate::metrics::{metrics, TurnTimes};
use crate::records::{MessageRecord, Record, RecordWriter, UsageRecord};
use crate::telemetry::TurnTrace;

use super::transcript::{Speaker, TranscriptFeed};

/// One sentence queued for playout.
#[derive(Debug)]
struct Utterance {
    text: String,
    audio_ms: u32,
    played_ms: Option<u32>,
    done: bool,
}

/// The agent's reply to one turn (or a fixed line).
#[derive(Debug, Default)]
struct Reply {
    turn: u64,
    started: Option<Instant>,
    speech_ended_at: Option<Instant>,
    stt_ms: Option<u32>,
    retrieval_ms: Option<u32>,
    /// Whether the question's embedding took part in retrieval.
    query_embedded: Option<bool>,
    first_token_ms: Option<u32>,
    tts_first_byte_ms: Option<u32>,
    first_packet_at: Option<Instant>,
    /// Playout of a sentence that started before its `Queued` event was
    /// seen: media and reply events arrive on different channels, and a
    /// pre-rendered sentence starts within one 20 ms slot of being queued.
    early_start: Option<(u64, Instant)>,
    utterances: BTreeMap<u64, Utterance>,
    done: bool,
    interrupted: bool,
    tokens_in: u32,
    tokens_out: u32,
    generated: String,
    written: bool,
}

pub struct CallLedger {
    workspace_id: Uuid,
    session_id: Uuid,
    call_log_id: Uuid,
    profile: Arc<AgentProfile>,
    history: Vec<ChatMessage>,
    reply: Option<Reply>,
    /// A reply cut by barge-in, with when it was cut: kept until playout
    /// reports how much of each sentence played (the flush events arrive
    /// after the barge-in), then written with only the words heard.
    cut: Option<(Reply, DateTime<Utc>)>,
    stt_ms: HashMap<u64, u32>,
    latency: Vec<serde_json::Value>,
    transfer_requested: bool,
    fixed_turns: u64,
    stt_audio_ms: u64,
    tts_characters: u64,
    tokens_in: u64,
    tokens_out: u64,
    messages: u64,
    records: Vec<Record>,
    /// Contact details the caller gave, for the call's `leads` row.
    leads: LeadCollector,
    /// Where each turn is traced, with the call's SIP Call-ID.
    telemetry: Option<(crate::telemetry::Telemetry, String)>,
    /// The live transcript watchers see (the console's live calls).
    transcript: Option<TranscriptFeed>,
}

impl CallLedger {
    pub fn new(
        workspace_id: Uuid,
        session_id: Uuid,
        call_log_id: Uuid,
        profile: Arc<AgentProfile>,
    ) -> CallLedger {
        CallLedger {
            workspace_id,
            session_id,
            call_log_id,
            profile,
            history: Vec::new(),
            reply: None,
            cut: None,
            stt_ms: HashMap::new(),
            latency: Vec::new(),
            transfer_requested: false,
            fixed_turns: 0,
            stt_audio_ms: 0,
            tts_characters: 0,
            tokens_in: 0,
            tokens_out: 0,
            messages: 0,
            records: Vec::new(),
            leads: LeadCollector::default(),
            telemetry: None,
            transcript: None,
        }
    }

    /// Publishes the conversation to `feed` as it happens.
    pub fn with_transcript(mut self, feed: TranscriptFeed) -> CallLedger {
        self.transcript = Some(feed);
        self
    }

    fn publish(&self, role: Speaker, text: &str) {
        if let Some(feed) = &self.transcript {
            feed.publish(role, text);
        }
    }

    /// Traces each answered turn to `telemetry` (when there is one).
    pub fn traced(
        mut self,
        telemetry: Option<crate::telemetry::Telemetry>,
        sip_call_id: &str,
    ) -> CallLedger {
        self.telemetry = telemetry.map(|t| (t, sip_call_id.to_string()));
        self
    }

    /// Fixed lines get turn numbers far from the caller's.
    pub fn next_fixed_turn(&mut self) -> u64 {
        self.fixed_turns += 1;
        u64::MAX / 2 + self.fixed_turns
    }

    pub fn begin_reply(&mut self, turn: u64, speech_ended_at: Option<Instant>) {
        self.close_reply();
        self.reply = Some(Reply {
            turn,
            started: Some(Instant::now()),
            speech_ended_at,
            ..Reply::default()
        });
    }

    pub fn transcribed(&mut self, turn: u64, elapsed_ms: u32, audio_ms: u32) {
        self.stt_ms.insert(turn, elapsed_ms);
        self.stt_audio_ms += audio_ms as u64;
    }

    /// The caller's turn, committed: stored at once, and a reply begins.
    /// `repeats`: the transcript of this utterance's opening, already a turn
    /// of its own (answered early); only the words after it are stored, so
    /// the conversation holds each thing the caller said once.
    pub fn user_turn(
        &mut self,
        turn: u64,
        text: &str,
        repeats: Option<&str>,
        speech_ended_at: Instant,
    ) {
        // The agent's previous reply is written first, so the conversation
        // reads in order (it was stamped after the caller's turn before).
        self.close_reply();
        let text = repeats
            .and_then(|early| continuation_after(early, text))
            .unwrap_or(text);
        let stt_ms = self.stt_ms.get(&turn).copied();
        self.push_message(
            "user",
            text,
            false,
            stt_ms,
            None,
            None,
            None,
            None,
            now_utc(),
        );
        self.history.push(ChatMessage::user(text));
        self.publish(Speaker::User, text);
        self.leads.observe(text);
        self.begin_reply(turn, Some(speech_ended_at));
        if let Some(r) = self.reply.as_mut() {
            r.stt_ms = stt_ms;
        }
    }

    /// Returns true when the event may have completed the reply.
    pub fn on_reply_event(&mut self, ev: ReplyEvent) -> bool {
        let Some(r) = self.reply.as_mut() else {
            return false;
        };
        match ev {
            ReplyEvent::Retrieved {
                turn, ms, embedded, ..
            } if turn == r.turn => {
                r.retrieval_ms = Some(ms);
                r.query_embedded = Some(embedded);
            }
            ReplyEvent::FirstToken { turn, ms } if turn == r.turn => r.first_token_ms = Some(ms),
            ReplyEvent::Queued {
                turn,
                utt,
                text,
                audio_ms,
                tts_first_byte_ms,
            } if turn == r.turn => {
                r.tts_first_byte_ms.get_or_insert(tts_first_byte_ms);
                self.tts_characters += text.chars().count() as u64;
                if let Some(feed) = &self.transcript {
                    feed.publish(Speaker::Assistant, &text);
                }
                r.utterances.insert(
                    utt,
                    Utterance {
                        text,
                        audio_ms,
                        played_ms: None,
                        done: false,
                    },
                );
                if let Some((_, at)) = r.early_start.filter(|(u, _)| *u == utt) {
                    r.early_start = None;
                    self.playout_started(utt, at);
                }
            }
            ReplyEvent::TransferRequested { turn } if turn == r.turn => {
                self.transfer_requested = true
            }
            ReplyEvent::Done {
                turn,
                text,
                tokens_in,
                tokens_out,
                failed,
                ..
            } if turn == r.turn => {
                if let Some(err) = failed {
                    tracing::warn!(%err, turn, "reply ended with a provider failure");
                }
                r.done = true;
                r.generated = text;
                r.tokens_in = tokens_in;
                r.tokens_out = tokens_out;
                self.tokens_in += tokens_in as u64;
                self.tokens_out += tokens_out as u64;
                return true;
            }
            _ => {} // an event of a reply already cancelled
        }
        false
    }

    pub fn take_transfer_request(&mut self) -> bool {
        std::mem::take(&mut self.transfer_requested)
    }

    pub fn playout_started(&mut self, utt: u64, at: Instant) {
        let Some(r) = self.reply.as_mut() else { return };
        if r.first_packet_at.is_some() {
            return;
        }
        if !r.utterances.contains_key(&utt) {
            // Its `Queued` event may still be on its way. Utterance ids only
            // grow, so a late start of an older reply's sentence is replaced.
            if r.early_start.is_none_or(|(u, _)| utt > u) {
                r.early_start = Some((utt, at));
            }
            return;
        }
        r.first_packet_at = Some(at);
        if let Some(ended) = r.speech_ended_at {
            let ms = |i: Option<Instant>| {
                i.map(|i| i.saturating_duration_since(ended).as_millis() as u64)
            };
            let stage = |ms: Option<u32>| ms.map(|ms| Duration::from_millis(ms.into()));
            metrics().turn(&TurnTimes {
                voice_to_voice: Some(at.saturating_duration_since(ended)),
                stt: stage(r.stt_ms),
                retrieval: stage(r.retrieval_ms),
                llm_first_token: stage(r.first_token_ms),
                tts_first_audio: stage(r.tts_first_byte_ms),
            });
            if let Some((telemetry, sip_call_id)) = &self.telemetry {
                telemetry.turn(&TurnTrace {
                    sip_call_id: sip_call_id.clone(),
                    call_log_id: self.call_log_id,
                    turn: r.turn,
                    speech_ended_at: ended,
                    reply_started_at: r.started.unwrap_or(ended),
                    first_audio_at: at,
                    stt: stage(r.stt_ms),
                    retrieval: stage(r.retrieval_ms),
                    llm_first_token: stage(r.first_token_ms),
                    tts_first_audio: stage(r.tts_first_byte_ms),
                });
            }
            self.latency.push(json!({
                "turn": r.turn,
                "voice_to_voice_ms": ms(Some(at)),
                "respond_after_ms": ms(r.started),
                "stt_ms": r.stt_ms,
                "retrieval_ms": r.retrieval_ms,
                "query_embedded": r.query_embedded,
                "llm_first_token_ms": r.first_token_ms,
                "tts_first_audio_ms": r.tts_first_byte_ms,
                // When the answer was decided (its first token), on the wall
                // clock, so a caller can measure first audio against it.
                "decided_at_unix_ms": decided_at_unix_ms(r.started, r.first_token_ms),
            }));
        }
    }

    pub fn playout_finished(&mut self, utt: u64) {
        if let Some(u) = self.utterance_mut(utt) {
            u.done = true;
            u.played_ms = Some(u.audio_ms);
        }
        self.write_cut_when_known();
    }

    pub fn playout_flushed(&mut self, utt: u64, played_ms: u32) {
        if let Some(u) = self.utterance_mut(utt) {
            u.done = true;
            u.played_ms = Some(played_ms.min(u.audio_ms));
        }
        self.write_cut_when_known();
    }

    fn utterance_mut(&mut self, utt: u64) -> Option<&mut Utterance> {
        let in_reply = self
            .reply
            .as_ref()
            .is_some_and(|r| r.utterances.contains_key(&utt));
        if in_reply {
            return self.reply.as_mut()?.utterances.get_mut(&utt);
        }
        self.cut.as_mut()?.0.utterances.get_mut(&utt)
    }

    /// Writes the cut reply once every sentence of it is accounted for.
    fn write_cut_when_known(&mut self) {
        if self
            .cut
            .as_ref()
            .is_some_and(|(r, _)| r.utterances.values().all(|u| u.done))
        {
            self.write_cut();
        }
    }

    fn write_cut(&mut self) {
        if let Some((r, at)) = self.cut.take() {
            self.write_reply(r, at);
        }
    }

    /// The reply is fully generated and every queued sentence has played.
    pub fn reply_complete(&self) -> bool {
        self.reply
            .as_ref()
            .is_none_or(|r| r.done && r.utterances.values().all(|u| u.done))
    }

    /// Barge-in: the reply stops where the caller cut in.
    pub fn interrupted(&mut self) {
        let Some(mut r) = self.reply.take() else {
            return;
        };
        r.interrupted = true;
        r.done = true;
        self.publish(Speaker::Event, "the caller interrupted the agent");
        self.write_cut(); // an earlier cut still waiting: write what is known
        self.cut = Some((r, now_utc()));
        self.write_cut_when_known();
    }

    /// The conversation so far, trimmed to about `context_window` tokens.
    pub fn history(&self, context_window: u32) -> Vec<ChatMessage> {
        let budget = (context_window as usize).saturating_mul(3); // ~3 characters a token, leaving room
        let mut used = 0;
        let mut out: Vec<ChatMessage> = Vec::new();
        for m in self.history.iter().rev() {
            used += m.content.len();
            if used > budget {
                break;
            }
            out.push(m.clone());
        }
        out.reverse();
        out
    }

    /// Writes the assistant message of the current reply (what was played).
    fn close_reply(&mut self) {
        if let Some(r) = self.reply.take() {
            self.write_reply(r, now_utc());
        }
    }

    fn write_reply(&mut self, mut r: Reply, at: DateTime<Utc>) {
        if r.written {
            return;
        }
        r.written = true;
        let played = played_text(&r);
        if played.is_empty() && r.generated.is_empty() {
            return;
        }
        let content = if r.interrupted || played.len() < r.generated.len() {
            played
        } else {
            r.generated.clone()
        };
        if content.is_empty() {
            return;
        }
        self.history.push(ChatMessage::assistant(&content));
        let (tin, tout) = (r.tokens_in, r.tokens_out);
        self.push_message(
            "assistant",
            &content,
            r.interrupted,
            None,
            r.first_token_ms,
            r.tts_first_byte_ms,
            Some(tin),
            Some(tout),
            at,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push_message(
        &mut self,
        role: &'static str,
        content: &str,
        interrupted: bool,
        stt_ms: Option<u32>,
        llm_first_token_ms: Option<u32>,
        tts_first_byte_ms: Option<u32>,
        tokens_in: Option<u32>,
        tokens_out: Option<u32>,
        at: DateTime<Utc>,
    ) {
        self.messages += 1;
        let i32_of = |v: Option<u32>| v.map(|v| v.min(i32::MAX as u32) as i32);
        self.records.push(Record::Message(MessageRecord {
            id: Uuid::new_v4(),
            workspace_id: self.workspace_id,
            session_id: self.session_id,
            role: role.into(),
            content: content.to_string(),
            interrupted,
            stt_ms: i32_of(stt_ms),
            llm_first_token_ms: i32_of(llm_first_token_ms),
            tts_first_byte_ms: i32_of(tts_first_byte_ms),
            tokens_in: i32_of(tokens_in),
            tokens_out: i32_of(tokens_out),
            at,
        }));
    }

    /// The answering-machine verdict onto the call's row, and into the
    /// live transcript.
    pub fn amd_result(&mut self, verdict: super::amd::Verdict, after: std::time::Duration) {
        self.publish(
            Speaker::Event,
            &format!("answering-machine detection: {}", verdict.as_str()),
        );
        self.records.push(Record::AmdResult {
            call_log_id: self.call_log_id,
            result: verdict.as_str().into(),
            decision_ms: after.as_millis().min(i64::MAX as u128) as i64,
        });
    }

    /// Sends the messages gathered so far to the writer (called often, so a
    /// crash loses little and an outage is bridged by the writer's queue).
    pub fn flush_to(&mut self, writer: &RecordWriter) {
        for op in self.records.drain(..) {
            writer.submit(op);
        }
    }

    /// Records not yet handed to the writer.
    #[cfg(test)]
    pub fn queued_records(&self) -> &[Record] {
        &self.records
    }

    /// Latency figures so far (for tests and the live view).
    pub fn latency(&self) -> &[serde_json::Value] {
        &self.latency
    }

    /// Final records: last message, session end, usage, call figures.
    pub fn write_all(
        &mut self,
        writer: &RecordWriter,
        session_status: &'static str,
        call_seconds: f64,
        media_stats: Option<&serde_json::Value>,
        recording: Option<&crate::media::record::RecordingInfo>,
    ) {
        self.write_cut();
        self.close_reply();
        self.flush_to(writer);
        let now = now_utc();
        writer.submit(Record::EndSession {
            id: self.session_id,
            status: session_status.into(),
            summary: None,
            at: now,
        });
        let p = &self.profile;
        let usage = [
            ("call_seconds", call_seconds.ceil(), 0.0, None),
            (
                "stt_seconds",
                self.stt_audio_ms as f64 / 1000.0,
                0.0,
                Some(p.stt_provider.clone()),
            ),
            (
                "tts_characters",
                self.tts_characters as f64,
                0.0,
                Some(p.tts_provider.clone()),
            ),
            (
                "llm_tokens_in",
                self.tokens_in as f64,
                p.input_cost_per_1k / 1000.0,
                Some(p.llm_model.clone()),
            ),
            (
                "llm_tokens_out",
                self.tokens_out as f64,
                p.output_cost_per_1k / 1000.0,
                Some(p.llm_model.clone()),
            ),
        ];
        let mut cost = 0.0;
        for (kind, quantity, unit_cost, model) in usage {
            cost += quantity * unit_cost;
            writer.submit(Record::Usage(UsageRecord {
                id: Uuid::new_v4(),
                workspace_id: self.workspace_id,
                session_id: Some(self.session_id),
                call_log_id: Some(self.call_log_id),
                kind: kind.into(),
                quantity,
                unit_cost,
                model,
            }));
        }
        writer.submit(Record::AddWorkspaceUsage {
            id: Uuid::new_v4(),
            workspace_id: self.workspace_id,
            messages: self.messages as i64,
            tokens: (self.tokens_in + self.tokens_out) as i64,
            call_seconds: call_seconds.ceil() as i64,
            stt_seconds: self.stt_audio_ms as f64 / 1000.0,
            tts_characters: self.tts_characters as i64,
        });
        let mut latency = json!({ "turns": self.latency });
        if let Some(stats) = media_stats {
            latency["media"] = stats.clone();
        }
        writer.submit(Record::CallFigures {
            call_log_id: self.call_log_id,
            latency,
            cost,
        });
        if let Some(lead) = self.leads.lead() {
            let mut metadata =
                json!({ "source": "call transcript", "call_log_id": self.call_log_id });
            if let Some(heard) = &lead.email_heard {
                metadata["email_heard"] = json!(heard);
            }
            writer.submit(Record::Lead {
                id: Uuid::new_v4(),
                workspace_id: self.workspace_id,
                agent_id: self.profile.agent_id,
                session_id: self.session_id,
                name: lead.name.clone(),
                email: lead.email.clone(),
                phone: lead.phone.clone(),
                metadata,
            });
        }
        if let Some(rec) = recording {
            writer.submit(Record::Recording {
                id: Uuid::new_v4(),
                workspace_id: self.workspace_id,
                call_log_id: self.call_log_id,
                storage_path: stored_recording_path(&rec.path),
                duration_ms: rec.duration_ms as i64,
                size_bytes: rec.bytes as i64,
            });
        }
    }
}

/// `call_recordings.storage_path`: the file's name, relative to the
/// recording folder (`recording.dir`), where the call writes it and where
/// the API looks for relative paths — so the folder can move, and a relative
/// folder is not prefixed twice.
fn stored_recording_path(path: &std::path::Path) -> String {
    match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    }
}

/// The sentences that played, the last one cut where playout stopped.
fn played_text(r: &Reply) -> String {
    let mut out = Vec::new();
    for u in r.utterances.values() {
        match u.played_ms {
            Some(ms) if ms >= u.audio_ms => out.push(u.text.clone()),
            Some(ms) if ms > 0 && u.audio_ms > 0 => {
                let words: Vec<&str> = u.text.split_whitespace().collect();
                let keep = (words.len() as u64 * ms as u64 / u.audio_ms as u64) as usize;
                if keep > 0 {
                    out.push(words[..keep.min(words.len())].join(" "));
                }
            }
            _ => {}
        }
    }
    out.join(" ")
}

fn now_utc() -> DateTime<Utc> {
    Utc::now()
}

/// `started + first_token_ms` as milliseconds since the Unix epoch.
fn decided_at_unix_ms(started: Option<Instant>, first_token_ms: Option<u32>) -> Option<f64> {
    let decided = started? + std::time::Duration::from_millis(first_token_ms? as u64);
    let ago = Instant::now().saturating_duration_since(decided);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(unix.saturating_sub(ago).as_secs_f64() * 1000.0)
}
