//! One agent reply: retrieval → streaming LLM → sentences → TTS → playout,
//! as a task the call can abort at any moment (barge-in, hangup). Dropping
//! the task drops the LLM stream and the TTS process or request with it.
//! Fixed lines (greeting, reprompt, fallback) take the same path minus the LLM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::embeddings::{embed_query, Embedder};
use super::llm::{ChatMessage, LanguageModel, LlmDelta, LlmRequest};
use super::profile::AgentProfile;
use super::retrieval::{self, KnowledgeIndex, RetrievedChunk, SearchOptions};
use super::sentences::SentenceSplitter;
use super::tts::TextToSpeech;
use crate::media::session::Playout;

/// Knowledge passages put into the prompt.
const PASSAGES: usize = 4;

/// What the reply task reports to its call, in order.
#[derive(Debug)]
pub enum ReplyEvent {
    Retrieved {
        turn: u64,
        ms: u32,
        passages: usize,
        /// The question's embedding arrived within its budget and took part
        /// (hybrid retrieval); false means full-text only.
        embedded: bool,
    },
    FirstToken {
        turn: u64,
        ms: u32,
    },
    /// A sentence was synthesised and queued for playout as utterance `utt`.
    Queued {
        turn: u64,
        utt: u64,
        text: String,
        audio_ms: u32,
        tts_first_byte_ms: u32,
    },
    /// The model (or the answerer) asked to transfer the caller to a human.
    TransferRequested {
        turn: u64,
    },
    /// Everything is queued. `text` is the whole reply as generated.
    Done {
        turn: u64,
        text: String,
        tokens_in: u32,
        tokens_out: u32,
        tts_characters: u32,
        failed: Option<String>,
    },
}

/// Everything a reply needs, cloned out of the call so the task owns it.
pub struct ReplyContext {
    pub turn: u64,
    pub profile: Arc<AgentProfile>,
    /// The agent's knowledge, in memory.
    pub knowledge: Arc<KnowledgeIndex>,
    pub llm: Arc<dyn LanguageModel>,
    pub tts: Arc<dyn TextToSpeech>,
    pub playout: Playout,
    pub events: mpsc::Sender<ReplyEvent>,
    pub first_token_timeout: Duration,
    /// Utterance ids of this reply start here (one per sentence).
    pub utt_base: u64,
    /// Embeds the question for hybrid retrieval (the process's embedder,
    /// the one the knowledge was embedded with); `None`: full-text only.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Longest the question's embedding may take (see [`embed_query`]).
    pub embed_budget: Duration,
}

impl ReplyContext {
    /// Answers `user_text` given the conversation so far.
    pub async fn answer(self, user_text: String, history: Vec<ChatMessage>) {
        let started = Instant::now();
        let p = self.profile.clone();
        let (passages, embedded) = self.retrieve(&user_text).await;
        let _ = self
            .events
            .send(ReplyEvent::Retrieved {
                turn: self.turn,
                ms: elapsed_ms(started),
                passages: passages.len(),
                embedded,
            })
            .await;
        let mut messages = history;
        messages.push(ChatMessage::user(&user_text));
        let request = LlmRequest {
            system: system_prompt(&p),
            messages,
            passages,
            temperature: p.temperature,
            max_tokens: p.max_tokens,
            fallback_message: p.fallback_message.clone(),
        };
        let mut attempts = p.escalation_policy.attempts();
        let mut speaker = Speaker::new(&self);
        loop {
            attempts -= 1;
            match self
                .stream_reply(request.clone(), started, &mut speaker)
                .await
            {
                Ok((tokens_in, tokens_out)) => {
                    speaker.finish(self.turn, tokens_in, tokens_out, None).await;
                    return;
                }
                Err(err) if attempts > 0 && speaker.text.is_empty() => {
                    tracing::warn!(error = %err, "LLM failed; retrying once (persona policy)");
                }
                Err(err) => {
                    tracing::warn!(error = %err, policy = %p.escalation_policy, "LLM failed; persona fallback");
                    if speaker.text.is_empty() {
                        speaker.say(&p.fallback_message).await;
                        if p.escalation_policy.transfers() && p.transfer_to.is_some() {
                            let _ = self
                                .events
                                .send(ReplyEvent::TransferRequested { turn: self.turn })
                                .await;
                        }
                    }
                    speaker.finish(self.turn, 0, 0, Some(err)).await;
                    return;
                }
            }
        }
    }

    /// The passages for `question`, from the agent's in-memory index: full
    /// text fused with the question's embedding when it arrives within the
    /// budget. Knowledge never loaded and the database down means no
    /// passages, not no answer.
    async fn retrieve(&self, question: &str) -> (Vec<RetrievedChunk>, bool) {
        let p = &self.profile;
        let embedding = async {
            match &self.embedder {
                Some(e) => embed_query(e.as_ref(), question, self.embed_budget).await,
                None => None,
            }
        };
        let opts = SearchOptions {
            limit: PASSAGES,
            floor: retrieval::DEFAULT_FLOOR,
            off_topic_too: false,
        };
        match retrieval::search(
            &self.knowledge,
            (p.workspace_id, Some(p.agent_id)),
            question,
            embedding,
            opts,
        )
        .await
        {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %err, "retrieval failed; answering without passages");
                (Vec::new(), false)
            }
        }
    }

    /// Speaks a fixed line (greeting, reprompt, goodbye).
    pub async fn say(self, text: String) {
        let mut speaker = Speaker::new(&self);
        speaker.say(&text).await;
        speaker.finish(self.turn, 0, 0, None).await;
    }

    async fn stream_reply(
        &self,
        request: LlmRequest,
        started: Instant,
        speaker: &mut Speaker<'_>,
    ) -> Result<(u32, u32), String> {
        let mut stream =
            match tokio::time::timeout(self.first_token_timeout, self.llm.stream(request)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("LLM did not answer in time".into()),
            };
        let mut splitter = SentenceSplitter::new();
        let (mut tokens_in, mut tokens_out) = (0u32, 0u32);
        let mut first = true;
        loop {
            let next = if first {
                match tokio::time::timeout(self.first_token_timeout, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => return Err("LLM produced no token in time".into()),
                }
            } else {
                match tokio::time::timeout(self.first_token_timeout * 2, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => return Err("LLM stream stalled".into()),
                }
            };
            let Some(delta) = next else { break };
            match delta.map_err(|e| e.to_string())? {
                LlmDelta::Text(token) => {
                    if first {
                        first = false;
                        let _ = self
                            .events
                            .send(ReplyEvent::FirstToken {
                                turn: self.turn,
                                ms: elapsed_ms(started),
                            })
                            .await;
                    }
                    for sentence in splitter.push(&token) {
                        speaker.say(&sentence).await;
                    }
                }
                LlmDelta::Transfer => {
                    let _ = self
                        .events
                        .send(ReplyEvent::TransferRequested { turn: self.turn })
                        .await;
                }
                LlmDelta::Usage {
                    tokens_in: i,
                    tokens_out: o,
                } => {
                    tokens_in = i;
                    tokens_out = o;
                }
            }
        }
        if let Some(rest) = splitter.finish() {
            speaker.say(&rest).await;
        }
        Ok((tokens_in, tokens_out))
    }
}

/// Synthesises sentences in order and queues them for playout.
struct Speaker<'a> {
    ctx: &'a ReplyContext,
    next_utt: u64,
    text: String,
    tts_characters: u32,
}

impl<'a> Speaker<'a> {
    fn new(ctx: &'a ReplyContext) -> Speaker<'a> {
        Speaker {
            ctx,
            next_utt: ctx.utt_base,
            text: String::new(),
            tts_characters: 0,
        }
    }

    async fn say(&mut self, sentence: &str) {
        let sentence = sentence.trim();
        if sentence.is_empty() {
            return;
        }
        let p = &self.ctx.profile;
        let t0 = Instant::now();
        let mut stream = match self
            .ctx
            .tts
            .synthesize(sentence, &p.tts_voice, p.tts_speed)
            .await
        {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "TTS failed for a sentence");
                return;
            }
        };
        let mut pcm: Vec<i16> = Vec::new();
        let mut rate = 0u32;
        let mut first_byte_ms = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    first_byte_ms.get_or_insert_with(|| elapsed_ms(t0));
                    if rate != 0 && chunk.sample_rate != rate {
                        tracing::warn!("TTS changed sample rate mid-sentence; chunk dropped");
                        continue;
                    }
                    rate = chunk.sample_rate;
                    pcm.extend_from_slice(&chunk.pcm);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "TTS stream failed mid-sentence");
                    break;
                }
            }
        }
        if pcm.is_empty() || rate == 0 {
            return;
        }
        let utt = self.next_utt;
        self.next_utt += 1;
        let audio_ms = (pcm.len() as u64 * 1000 / rate as u64) as u32;
        if let Err(err) = self.ctx.playout.play(utt, pcm, rate) {
            tracing::debug!(error = %err, "playout closed; sentence dropped");
            return;
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(sentence);
        self.tts_characters += sentence.chars().count() as u32;
        let _ = self
            .ctx
            .events
            .send(ReplyEvent::Queued {
                turn: self.ctx.turn,
                utt,
                text: sentence.to_string(),
                audio_ms,
                tts_first_byte_ms: first_byte_ms.unwrap_or(0),
            })
            .await;
    }

    async fn finish(self, turn: u64, tokens_in: u32, tokens_out: u32, failed: Option<String>) {
        let _ = self
            .ctx
            .events
            .send(ReplyEvent::Done {
                turn,
                text: self.text,
                tokens_in,
                tokens_out,
                tts_characters: self.tts_characters,
                failed,
            })
            .await;
    }
}

/// Persona, tone and agent instructions, as the system prompt.
pub fn system_prompt(p: &AgentProfile) -> String {
    let mut s = format!(
        "You are {persona}, the voice assistant of {agent}. Speak in a {tone} tone. \
         You are on a phone call: answer in one to three short spoken sentences, no lists, no markdown. \
         Answer only from the provided knowledge; if it does not contain the answer, say so briefly.",
        persona = if p.persona_name.is_empty() { "the assistant" } else { &p.persona_name },
        agent = p.agent_name,
        tone = p.tone,
    );
    if p.transfer_to.is_some() {
        s.push_str(" If the caller asks for a human, call the transfer_call tool.");
    } else if p.transfer_unavailable {
        s.push(' ');
        s.push_str(super::llm::NO_TRANSFER_ON_WEB);
        s.push_str(
            ": if the caller asks for a human, say that a call from a web page cannot be \
             transferred, that they can call by phone, and offer to help here.",
        );
    }
    for extra in [&p.persona_instructions, &p.instructions] {
        if !extra.trim().is_empty() {
            s.push('\n');
            s.push_str(extra.trim());
        }
    }
    s
}

fn elapsed_ms(since: Instant) -> u32 {
    since.elapsed().as_millis().min(u32::MAX as u128) as u32
}
