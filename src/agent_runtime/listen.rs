//! Hearing one turn of the caller: the recognizer's transcript and, when
//! those words match nothing in the agent's knowledge well, a second
//! hearing of the same audio with the knowledge's own words as the
//! recognizer's hint (`retrieval::vocabulary`). A small model spells a
//! business's words by sound ("Can you make my teeth wider?"); told
//! "whitening" first, it writes "whiter". The hint costs decoder time
//! (tiny.en 170 → 309 ms p50), so only the turns that need it pay: the
//! transcript kept is the one the knowledge matches better.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::embeddings::{embed_query, QueryCache};
use super::llm_offline::wants_human;
use super::retrieval::{self, KnowledgeIndex, Scope, SearchOptions};
use super::stt::{ProviderError, SpeechToText, SttHints, Transcript};

/// When the recognizer is given the knowledge's words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HintPolicy {
    /// Never: one hearing, no hint.
    Never,
    /// On every turn (one hearing, always hinted).
    Always,
    /// A second, hinted hearing when the first one's best match in the
    /// knowledge scores below this (retrieval's 0..1 score).
    Below(f32),
}

impl HintPolicy {
    /// From the configuration: `knowledge_hint` on every turn, else a
    /// second hearing below `relisten_below` (0 = never).
    pub fn from_config(always: bool, relisten_below: f32) -> HintPolicy {
        if always {
            HintPolicy::Always
        } else if relisten_below > 0.0 {
            HintPolicy::Below(relisten_below)
        } else {
            HintPolicy::Never
        }
    }
}

/// Fewest words in a transcript worth a second hearing: "yes", "thank
/// you" and "bye" match no knowledge and need none.
const MIN_WORDS: usize = 3;

/// What one call needs to hear its caller's turns.
pub struct Listener {
    pub stt: Arc<dyn SpeechToText>,
    pub embedder: Arc<QueryCache>,
    pub knowledge: Arc<KnowledgeIndex>,
    pub scope: Scope,
    pub language: Option<String>,
    pub policy: HintPolicy,
    /// Longest wait for a question's vector before scoring on words alone.
    pub embed_budget: Duration,
}

impl Listener {
    /// The transcript of one utterance (16 kHz mono). Its `elapsed_ms` is
    /// the whole time spent hearing, both hearings and their scoring.
    pub async fn hear(&self, audio: &[i16]) -> Result<Transcript, ProviderError> {
        let started = Instant::now();
        let plain = SttHints {
            language: self.language.clone(),
            prompt: None,
        };
        let hint = match self.policy {
            HintPolicy::Never => None,
            _ => self
                .knowledge
                .cached(self.scope)
                .and_then(|k| k.recognizer_hint().map(str::to_string)),
        };
        let Some(hint) = hint else {
            return self.stt.transcribe(audio, &plain).await;
        };
        let hinted = SttHints {
            prompt: Some(hint),
            ..plain.clone()
        };
        let floor = match self.policy {
            HintPolicy::Below(floor) => floor,
            _ => return self.stt.transcribe(audio, &hinted).await,
        };
        let first = self.stt.transcribe(audio, &plain).await?;
        if !worth_another_hearing(&first.text) {
            return Ok(first);
        }
        let first_score = self.best_score(&first.text).await;
        if first_score >= floor {
            return Ok(first);
        }
        let second = match self.stt.transcribe(audio, &hinted).await {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(error = %err, "second hearing failed; the first is kept");
                return Ok(took(first, started));
            }
        };
        let second_score = self.best_score(&second.text).await;
        let keep_second = second_score > first_score;
        tracing::debug!(
            first = %first.text,
            first_score,
            second = %second.text,
            second_score,
            keep_second,
            "heard again with the knowledge's words"
        );
        Ok(took(if keep_second { second } else { first }, started))
    }

    /// How well `text` matches the knowledge: the best passage's score, 0
    /// when nothing matches or the knowledge cannot be read.
    async fn best_score(&self, text: &str) -> f32 {
        let embedding = embed_query(self.embedder.as_ref(), text, self.embed_budget);
        let opts = SearchOptions {
            limit: 1,
            floor: 0.0,
        };
        match retrieval::search(&self.knowledge, self.scope, text, embedding, opts).await {
            Ok((found, _)) => found.first().map_or(0.0, |c| c.score),
            Err(_) => 0.0,
        }
    }
}

/// A transcript that may have been misheard in the business's words: a
/// question of a few words, not a request for a person.
fn worth_another_hearing(text: &str) -> bool {
    text.split_whitespace().count() >= MIN_WORDS && !wants_human(text)
}

fn took(mut t: Transcript, started: Instant) -> Transcript {
    t.elapsed_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_from_configuration() {
        assert_eq!(HintPolicy::from_config(true, 0.5), HintPolicy::Always);
        assert_eq!(HintPolicy::from_config(false, 0.5), HintPolicy::Below(0.5));
        assert_eq!(HintPolicy::from_config(false, 0.0), HintPolicy::Never);
    }

    #[test]
    fn short_replies_and_requests_for_a_person_are_heard_once() {
        assert!(!worth_another_hearing("Thank you."));
        assert!(!worth_another_hearing("Can I speak to a person, please?"));
        assert!(worth_another_hearing("Can you service my taphla?"));
    }
}
