//! The language-model stage: a request (persona prompt, passages, the
//! conversation so far) in, a stream of text tokens out, ending with usage.
//! A model's wish to hand the caller to a human is a distinct delta.
//! Implementations: [`OfflineAnswerer`] (no network) and the HTTP providers.

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use super::llm_http::{AnthropicMessages, OpenAiChat};
pub use super::llm_offline::OfflineAnswerer;
pub use super::provider_error::ProviderError;
use super::retrieval::RetrievedChunk;
use crate::domain::EscalationPolicy;

/// The marker a model may write instead of calling the `transfer_call` tool.
pub const TRANSFER_MARKER: &str = "[TRANSFER]";
/// Name of the tool offered to models for a transfer to a human.
pub const TRANSFER_TOOL: &str = "transfer_call";
/// How the system prompt of a call that cannot be transferred (a browser
/// call to an agent that transfers phone calls) begins its rule.
pub const NO_TRANSFER_ON_WEB: &str =
    "This call comes from a web page and cannot be transferred to a person";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "user" or "assistant" ("system" lines go into `LlmRequest::system`).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: text.to_string(),
        }
    }
    pub fn assistant(text: &str) -> ChatMessage {
        ChatMessage {
            role: "assistant".into(),
            content: text.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// Persona, tone and agent instructions.
    pub system: String,
    /// The conversation so far, oldest first; the last one is the caller's turn.
    pub messages: Vec<ChatMessage>,
    /// Retrieved knowledge, best first.
    pub passages: Vec<RetrievedChunk>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// The persona's line for "I do not know" (used by the offline answerer).
    pub fallback_message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmDelta {
    /// A piece of the reply text (a word, a token), to be concatenated.
    Text(String),
    /// The model asked to transfer the caller to a human.
    Transfer,
    /// Token counts, sent once at the end.
    Usage { tokens_in: u32, tokens_out: u32 },
}

pub type LlmStream = BoxStream<'static, Result<LlmDelta, ProviderError>>;

#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// Starts a reply. Dropping the returned stream cancels it (and closes
    /// the HTTP connection of networked providers).
    async fn stream(&self, req: LlmRequest) -> Result<LlmStream, ProviderError>;
    /// Provider/model name for usage records.
    fn name(&self) -> String;
}

/// What the caller hears when the provider fails, per persona policy
/// (`apologize`, `retry`, `escalate`, `transfer`): the fallback message, and
/// whether a transfer should follow (only when there is somewhere to go).
pub fn fallback_text(
    policy: EscalationPolicy,
    fallback_message: &str,
    has_transfer_target: bool,
) -> (String, bool) {
    let base = if fallback_message.trim().is_empty() {
        "I am sorry, I cannot answer that right now."
    } else {
        fallback_message.trim()
    };
    if policy.transfers() && has_transfer_target {
        (format!("{base} Let me transfer you to a colleague."), true)
    } else {
        (base.to_string(), false)
    }
}

/// Rough token count (~1.3 tokens a word), for offline usage figures and
/// prompt budgeting.
pub fn estimate_tokens(text: &str) -> u32 {
    let words = text.split_whitespace().count() as u32;
    (words * 13).div_ceil(10)
}

/// The system prompt with the passages appended, as networked models get it.
pub fn system_with_passages(req: &LlmRequest) -> String {
    let mut s = req.system.clone();
    if !req.passages.is_empty() {
        s.push_str("\n\nKnowledge (answer from this):");
        for (i, p) in req.passages.iter().enumerate() {
            s.push_str(&format!("\n[{}] {}", i + 1, p.content.trim()));
        }
    }
    s
}

/// The conversation trimmed from the oldest end to fit `budget_tokens`
/// (always keeping the last message, cut if it alone is too long), so a long
/// call cannot grow the prompt without bound.
pub fn bounded_messages(messages: &[ChatMessage], budget_tokens: u32) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    let mut used = 0u32;
    for m in messages.iter().rev() {
        let cost = estimate_tokens(&m.content) + 4;
        if !out.is_empty() && used + cost > budget_tokens {
            break;
        }
        used += cost;
        out.push(m.clone());
    }
    out.reverse();
    if let Some(last) = out.last_mut() {
        let max_chars = (budget_tokens as usize).saturating_mul(4).max(200);
        if last.content.len() > max_chars {
            let mut cut = max_chars;
            while !last.content.is_char_boundary(cut) {
                cut -= 1;
            }
            last.content.truncate(cut);
        }
    }
    // Chat APIs want the first turn to be the user's.
    while out.first().is_some_and(|m| m.role != "user") && out.len() > 1 {
        out.remove(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_keeps_latest_and_starts_with_user() {
        let msgs: Vec<ChatMessage> = (0..50)
            .flat_map(|i| {
                [
                    ChatMessage::user(&format!("question {i} about the opening hours")),
                    ChatMessage::assistant(&format!("answer {i} we open at nine")),
                ]
            })
            .chain([ChatMessage::user("last one")])
            .collect();
        let b = bounded_messages(&msgs, 60);
        assert!(b.len() < msgs.len());
        assert_eq!(b.last().unwrap().content, "last one");
        assert_eq!(b.first().unwrap().role, "user");
        let total: u32 = b.iter().map(|m| estimate_tokens(&m.content) + 4).sum();
        assert!(total <= 60, "{total}");
    }

    #[test]
    fn fallback_policy() {
        assert_eq!(
            fallback_text(EscalationPolicy::Apologize, "Sorry.", true),
            ("Sorry.".into(), false)
        );
        assert!(fallback_text(EscalationPolicy::Transfer, "Sorry.", true).1);
        assert!(!fallback_text(EscalationPolicy::Transfer, "Sorry.", false).1);
        assert!(!fallback_text(EscalationPolicy::Retry, "", false)
            .0
            .is_empty());
    }
}
