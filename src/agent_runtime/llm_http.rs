//! Networked language models, streamed over SSE with reqwest: OpenAI-style
//! chat completions (OpenAI, Groq, vLLM, Ollama, llama.cpp server, …) and
//! Anthropic Messages. Requests go out through the guarded client (a
//! tenant's `base_url` never reaches the node's network). The prompt is
//! bounded by the context window; the reply by its first-token, stall and
//! whole-reply limits and by its size; dropping the stream drops the
//! response body, which closes the HTTP connection.

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use tokio::time::Instant;

use super::llm::{
    bounded_messages, estimate_tokens, system_with_passages, ChatMessage, LanguageModel, LlmDelta,
    LlmRequest, LlmStream, ProviderError, TRANSFER_MARKER, TRANSFER_TOOL,
};
use super::provider_http::{body, next_piece, send, Body, Budget, CallLimits};
use super::sse::{SseEvent, SseReader};
use crate::outbound::GuardedClient;

/// Most reply text kept from one request: a spoken reply is a few hundred
/// bytes, and a provider that streams on and on must not grow memory.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Settings shared by the HTTP language models.
#[derive(Debug, Clone)]
pub struct HttpLlmSettings {
    /// e.g. `https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    /// `first_byte`: no token within it → [`ProviderError::Timeout`];
    /// `stall`: between two tokens; `total`: the whole reply.
    pub limits: CallLimits,
    /// Prompt budget in tokens (the conversation is trimmed to fit).
    pub context_window: u32,
}

impl HttpLlmSettings {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), path)
    }
}

/// The conversation for a chat API: bounded to what the window leaves after
/// the system prompt and the reply, adjacent turns of one role merged.
fn prompt_messages(req: &LlmRequest, system: &str, context_window: u32) -> Vec<ChatMessage> {
    let budget = context_window
        .saturating_sub(estimate_tokens(system) + req.max_tokens)
        .max(64);
    let mut out: Vec<ChatMessage> = Vec::new();
    for m in bounded_messages(&req.messages, budget) {
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push('\n');
                last.content.push_str(&m.content);
            }
            _ => out.push(m),
        }
    }
    out
}

/// OpenAI-compatible `POST {base}/chat/completions` with `stream: true`.
pub struct OpenAiChat {
    settings: HttpLlmSettings,
    client: GuardedClient,
}

impl OpenAiChat {
    /// `client` is the provider client (`provider_http::provider_client`).
    pub fn new(settings: HttpLlmSettings, client: GuardedClient) -> OpenAiChat {
        OpenAiChat { settings, client }
    }

    pub fn request_body(&self, req: &LlmRequest) -> Value {
        let system = system_with_passages(req);
        let mut messages = vec![json!({ "role": "system", "content": system })];
        for m in prompt_messages(req, &system, self.settings.context_window) {
            messages.push(json!({ "role": m.role, "content": m.content }));
        }
        let mut body = json!({
            "model": self.settings.model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        });
        if req.system.contains(TRANSFER_TOOL) {
            body["tools"] = json!([{
                "type": "function",
                "function": {
                    "name": TRANSFER_TOOL,
                    "description": "Transfer the caller to a human colleague.",
                    "parameters": { "type": "object", "properties": {} }
                }
            }]);
        }
        body
    }
}

#[async_trait]
impl LanguageModel for OpenAiChat {
    async fn stream(&self, req: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = self.request_body(&req);
        let http = self
            .client
            .post(&self.settings.url("chat/completions"))
            .map(|http| {
                let http = http.json(&body);
                if self.settings.api_key.is_empty() {
                    http
                } else {
                    http.bearer_auth(&self.settings.api_key)
                }
            });
        let tokens_in = estimate_tokens(&body.to_string());
        start_stream(http, self.settings.limits, tokens_in, parse_openai).await
    }

    fn name(&self) -> String {
        self.settings.model.clone()
    }
}

fn parse_openai(ev: &SseEvent, st: &mut ParseState) -> Result<Vec<LlmDelta>, ProviderError> {
    let data = ev.data.trim();
    if data == "[DONE]" {
        st.done = true;
        return Ok(Vec::new());
    }
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| ProviderError::Protocol(format!("bad SSE JSON: {e}")))?;
    if let Some(err) = v.get("error") {
        return Err(ProviderError::Protocol(format!(
            "provider error in stream: {err}"
        )));
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        st.usage_in = u["prompt_tokens"]
            .as_u64()
            .map(|n| n as u32)
            .or(st.usage_in);
        st.usage_out = u["completion_tokens"]
            .as_u64()
            .map(|n| n as u32)
            .or(st.usage_out);
    }
    let mut out = Vec::new();
    if let Some(choice) = v["choices"].get(0) {
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str() {
            out.extend(st.marker.push(text));
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            if calls
                .iter()
                .any(|c| c["function"]["name"].as_str() == Some(TRANSFER_TOOL))
            {
                out.push(LlmDelta::Transfer);
            }
        }
    }
    Ok(out)
}

/// Anthropic `POST {base}/messages` with `stream: true`.
pub struct AnthropicMessages {
    settings: HttpLlmSettings,
    client: GuardedClient,
}

impl AnthropicMessages {
    /// `client` is the provider client (`provider_http::provider_client`).
    pub fn new(settings: HttpLlmSettings, client: GuardedClient) -> AnthropicMessages {
        AnthropicMessages { settings, client }
    }

    pub fn request_body(&self, req: &LlmRequest) -> Value {
        let system = system_with_passages(req);
        let messages: Vec<Value> = prompt_messages(req, &system, self.settings.context_window)
            .into_iter()
            .map(|m| json!({ "role": m.role, "content": m.content }))
            .collect();
        let mut body = json!({
            "model": self.settings.model,
            "system": system,
            "messages": messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature.min(1.0),
            "stream": true,
        });
        if req.system.contains(TRANSFER_TOOL) {
            body["tools"] = json!([{
                "name": TRANSFER_TOOL,
                "description": "Transfer the caller to a human colleague.",
                "input_schema": { "type": "object", "properties": {} }
            }]);
        }
        body
    }
}

#[async_trait]
impl LanguageModel for AnthropicMessages {
    async fn stream(&self, req: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = self.request_body(&req);
        let http = self
            .client
            .post(&self.settings.url("messages"))
            .map(|http| {
                http.header("x-api-key", &self.settings.api_key)
                    .header("anthropic-version", "2023-06-01")
                    .json(&body)
            });
        let tokens_in = estimate_tokens(&body.to_string());
        start_stream(http, self.settings.limits, tokens_in, parse_anthropic).await
    }

    fn name(&self) -> String {
        self.settings.model.clone()
    }
}

fn parse_anthropic(ev: &SseEvent, st: &mut ParseState) -> Result<Vec<LlmDelta>, ProviderError> {
    if ev.data.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(&ev.data)
        .map_err(|e| ProviderError::Protocol(format!("bad SSE JSON: {e}")))?;
    let kind = v["type"].as_str().or(ev.event.as_deref()).unwrap_or("");
    let mut out = Vec::new();
    match kind {
        "message_start" => {
            st.usage_in = v["message"]["usage"]["input_tokens"]
                .as_u64()
                .map(|n| n as u32);
        }
        "content_block_start" => {
            let block = &v["content_block"];
            if block["type"] == "tool_use" && block["name"].as_str() == Some(TRANSFER_TOOL) {
                out.push(LlmDelta::Transfer);
            }
        }
        "content_block_delta" => {
            if let Some(text) = v["delta"]["text"].as_str() {
                out.extend(st.marker.push(text));
            }
        }
        "message_delta" => {
            st.usage_out = v["usage"]["output_tokens"]
                .as_u64()
                .map(|n| n as u32)
                .or(st.usage_out);
        }
        "message_stop" => st.done = true,
        "error" => {
            return Err(ProviderError::Protocol(format!(
                "provider error in stream: {}",
                v["error"]
            )))
        }
        _ => {}
    }
    Ok(out)
}

/// Holds back a possible start of `[TRANSFER]` split across tokens.
#[derive(Debug, Default)]
pub(crate) struct MarkerFilter {
    pending: String,
}

impl MarkerFilter {
    pub(crate) fn push(&mut self, text: &str) -> Vec<LlmDelta> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        while let Some(i) = self.pending.find(TRANSFER_MARKER) {
            if i > 0 {
                out.push(LlmDelta::Text(self.pending[..i].to_string()));
            }
            out.push(LlmDelta::Transfer);
            self.pending.drain(..i + TRANSFER_MARKER.len());
        }
        // Keep the longest suffix that could still become the marker.
        let keep = (1..TRANSFER_MARKER.len())
            .rev()
            .find(|&n| {
                self.pending.len() >= n
                    && self.pending.is_char_boundary(self.pending.len() - n)
                    && TRANSFER_MARKER.starts_with(&self.pending[self.pending.len() - n..])
            })
            .unwrap_or(0);
        let emit = self.pending.len() - keep;
        if emit > 0 {
            out.push(LlmDelta::Text(self.pending[..emit].to_string()));
            self.pending.drain(..emit);
        }
        out
    }

    pub(crate) fn finish(&mut self) -> Option<LlmDelta> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then_some(LlmDelta::Text(rest))
    }
}

#[derive(Default)]
struct ParseState {
    marker: MarkerFilter,
    usage_in: Option<u32>,
    usage_out: Option<u32>,
    done: bool,
}

type Parser = fn(&SseEvent, &mut ParseState) -> Result<Vec<LlmDelta>, ProviderError>;

struct StreamState {
    body: Body,
    sse: SseReader,
    parse: Parser,
    st: ParseState,
    queue: VecDeque<Result<LlmDelta, ProviderError>>,
    /// Text tokens are progress: the first within `first_byte`, then each
    /// within `stall`, all within `total` (keep-alive comments are not).
    budget: Budget,
    estimated_in: u32,
    text_out: String,
    finished: bool,
}

/// Sends the request (headers within the first-token deadline) and returns
/// the delta stream.
async fn start_stream(
    http: Result<reqwest::RequestBuilder, String>,
    limits: CallLimits,
    estimated_in: u32,
    parse: Parser,
) -> Result<LlmStream, ProviderError> {
    let budget = Budget::start(limits, Instant::now());
    let resp = send(http, &budget).await?;
    let state = StreamState {
        body: body(resp),
        sse: SseReader::new(),
        parse,
        st: ParseState::default(),
        queue: VecDeque::new(),
        budget,
        estimated_in,
        text_out: String::new(),
        finished: false,
    };
    Ok(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.queue.pop_front() {
                if let Ok(LlmDelta::Text(t)) = &item {
                    if s.text_out.len() + t.len() > MAX_REPLY_BYTES {
                        s.finished = true;
                        s.queue.clear();
                        let e = format!("reply longer than {MAX_REPLY_BYTES} bytes");
                        return Some((Err(ProviderError::Protocol(e)), s));
                    }
                    s.budget.progress(Instant::now());
                    s.text_out.push_str(t);
                }
                return Some((item, s));
            }
            if s.finished {
                return None;
            }
            if s.st.done {
                s.finish();
                continue;
            }
            let bytes = match next_piece(&mut s.body, &s.budget).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    s.finish();
                    continue;
                }
                Err(e) => {
                    s.finished = true;
                    return Some((Err(e), s));
                }
            };
            match s.sse.push(&bytes) {
                Err(e) => {
                    s.finished = true;
                    return Some((Err(ProviderError::Protocol(e)), s));
                }
                Ok(events) => {
                    for ev in events {
                        match (s.parse)(&ev, &mut s.st) {
                            Ok(deltas) => s.queue.extend(deltas.into_iter().map(Ok)),
                            Err(e) => {
                                s.queue.push_back(Err(e));
                                s.finished = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
    })
    .boxed())
}

impl StreamState {
    /// End of the reply: flush held-back text, then usage (the provider's
    /// figures, else estimates).
    fn finish(&mut self) {
        self.finished = true;
        if let Some(rest) = self.st.marker.finish() {
            if let LlmDelta::Text(t) = &rest {
                self.text_out.push_str(t);
            }
            self.queue.push_back(Ok(rest));
        }
        let tokens_in = self.st.usage_in.unwrap_or(self.estimated_in);
        let tokens_out = self
            .st
            .usage_out
            .unwrap_or_else(|| estimate_tokens(&self.text_out));
        self.queue.push_back(Ok(LlmDelta::Usage {
            tokens_in,
            tokens_out,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_split_across_tokens() {
        let mut f = MarkerFilter::default();
        let mut out = Vec::new();
        for t in ["Sure, one moment. [TRA", "NSF", "ER] Bye [not a marker]"] {
            out.extend(f.push(t));
        }
        out.extend(f.finish());
        let text: String = out
            .iter()
            .filter_map(|d| {
                if let LlmDelta::Text(t) = d {
                    Some(t.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(text, "Sure, one moment.  Bye [not a marker]");
        assert_eq!(out.iter().filter(|d| **d == LlmDelta::Transfer).count(), 1);
    }

    #[test]
    fn prompt_is_bounded_and_merged() {
        let req = LlmRequest {
            system: "sys".into(),
            messages: (0..200)
                .map(|i| ChatMessage::user(&format!("message number {i} with some words")))
                .collect(),
            passages: vec![],
            temperature: 0.2,
            max_tokens: 50,
            fallback_message: String::new(),
        };
        let msgs = prompt_messages(&req, "sys", 300);
        assert_eq!(msgs.len(), 1, "one merged user turn");
        assert!(estimate_tokens(&msgs[0].content) < 300);
        assert!(msgs[0]
            .content
            .ends_with("message number 199 with some words"));
    }
}
