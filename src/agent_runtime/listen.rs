//! Hearing one turn of the caller: the recognizer's transcript and, when
//! retrieval is unsure what those words ask (the best passage scores low),
//! a second hearing of the same audio with
//! the candidates' own words as the recognizer's hint
//! (`retrieval::vocabulary`). A small model spells a business's words by
//! sound ("Can you make my teeth wider?", where "braces" and "teeth
//! whitening" both score low); told those words first, it can write
//! "whiter". The
//! transcript kept is the one the knowledge matches better. Only unsure
//! turns pay for a second hearing, and its short hint costs little decoder
//! time (the whole knowledge's 50-word hint took tiny.en from 170 to 309 ms
//! p50).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::embeddings::{embed_query, QueryCache};
use super::llm_offline::wants_human;
use super::retrieval::index::faq_question;
use super::retrieval::vocabulary::recognizer_hint_within;
use super::retrieval::{self, KnowledgeIndex, RetrievedChunk, Scope, SearchOptions};
use super::stt::{ProviderError, SpeechToText, SttHints, Transcript};

/// When the recognizer is given the knowledge's words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HintPolicy {
    /// Never: one hearing, no hint.
    Never,
    /// On every turn, the whole knowledge's words (one hearing).
    Always,
    /// A second hearing, hinted with the candidates' words, when the first
    /// one's best passage scores below this (retrieval's 0..1 score).
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
/// Passages whose words make the second hearing's hint.
const CANDIDATES: usize = 3;
/// Most words in that hint.
const CANDIDATE_HINT_WORDS: usize = 16;

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
        let floor = match self.policy {
            HintPolicy::Never => return self.stt.transcribe(audio, &plain).await,
            HintPolicy::Always => {
                let hint = self
                    .knowledge
                    .cached(self.scope)
                    .and_then(|k| k.recognizer_hint().map(str::to_string));
                let hinted = SttHints {
                    prompt: hint,
                    ..plain
                };
                return self.stt.transcribe(audio, &hinted).await;
            }
            HintPolicy::Below(floor) => floor,
        };
        let first = self.stt.transcribe(audio, &plain).await?;
        if !worth_another_hearing(&first.text) {
            return Ok(first);
        }
        let found = self.candidates(&first.text).await;
        let first_score = best(&found);
        if !unsure(&found, floor) {
            tracing::debug!(text = %first.text, first_score, candidates = found.len(), "heard once: retrieval is sure, or has nothing");
            return Ok(first);
        }
        let Some(hint) = candidates_hint(&found) else {
            return Ok(first);
        };
        let hinted = SttHints {
            prompt: Some(hint),
            ..plain
        };
        let second = match self.stt.transcribe(audio, &hinted).await {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(error = %err, "second hearing failed; the first is kept");
                return Ok(took(first, started));
            }
        };
        let second_score = if second.text == first.text {
            first_score
        } else {
            best(&self.candidates(&second.text).await)
        };
        let keep_second = second_score > first_score;
        tracing::debug!(
            first = %first.text,
            first_score,
            second = %second.text,
            second_score,
            keep_second,
            "heard again with the candidates' words"
        );
        Ok(took(if keep_second { second } else { first }, started))
    }

    /// The passages `text` matches best (none when the knowledge cannot
    /// be read).
    async fn candidates(&self, text: &str) -> Vec<RetrievedChunk> {
        let embedding = embed_query(self.embedder.as_ref(), text, self.embed_budget);
        let opts = SearchOptions {
            limit: CANDIDATES,
            floor: 0.0,
            off_topic_too: true,
        };
        match retrieval::search(&self.knowledge, self.scope, text, embedding, opts).await {
            Ok((found, _)) => found,
            Err(_) => Vec::new(),
        }
    }
}

/// The highest relevance among `found` (which come best-fitting first, not
/// by relevance).
fn best(found: &[RetrievedChunk]) -> f32 {
    found.iter().map(|c| c.score).fold(0.0, f32::max)
}

/// Retrieval is unsure: nothing scores `floor`. (A tie between two
/// entries well above it is not: on the demo knowledge "What time do you
/// open on Saturday?" ties the opening hours with the Saturday hours, and
/// hearing it again changes nothing.)
fn unsure(found: &[RetrievedChunk], floor: f32) -> bool {
    // No knowledge: no words to hint with.
    !found.is_empty() && found.iter().all(|c| c.score < floor)
}

/// The candidates' own words: their FAQ questions' topic words, else the
/// words their passages use most.
fn candidates_hint(found: &[RetrievedChunk]) -> Option<String> {
    let questions = found.iter().filter_map(|c| faq_question(&c.content));
    let passages = found
        .iter()
        .filter(|c| faq_question(&c.content).is_none())
        .map(|c| c.content.as_str());
    recognizer_hint_within(questions, passages, CANDIDATE_HINT_WORDS)
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

    fn chunk(content: &str, score: f32) -> RetrievedChunk {
        RetrievedChunk {
            chunk_id: uuid::Uuid::nil(),
            source_id: uuid::Uuid::nil(),
            agent_id: None,
            chunk_index: 0,
            content: content.into(),
            score,
            text_score: 0.0,
            vector_score: None,
        }
    }

    #[test]
    fn unsure_is_a_low_best() {
        let braces = chunk("Q: Do you do braces?\nA: We offer clear aligners.", 0.393);
        let whitening = chunk("Q: Do you offer teeth whitening?\nA: Yes.", 0.390);
        assert!(unsure(&[braces.clone(), whitening.clone()], 0.45));
        let sure = chunk("Q: Do you do braces?\nA: Yes.", 0.62);
        assert!(!unsure(&[sure.clone(), whitening.clone()], 0.45));
        let tied = chunk("Q: Can I wait while my car is serviced?\nA: Yes.", 0.559);
        let inspection = chunk("Q: Do you do state inspections?\nA: Yes.", 0.543);
        assert!(!unsure(&[tied, inspection], 0.45));
        assert!(!unsure(&[], 0.45));
        assert!(unsure(&[chunk("Q: Where are you?\nA: Here.", 0.2)], 0.45));
        assert!(!unsure(&[sure], 0.45));
    }

    #[test]
    fn the_hint_is_the_candidates_words() {
        let hint = candidates_hint(&[
            chunk("Q: Do you do braces?\nA: We offer clear aligners.", 0.39),
            chunk("Q: Do you offer teeth whitening?\nA: Yes.", 0.39),
            chunk(
                "Our orthodontist fits aligners on Tuesdays; aligners cost more.",
                0.3,
            ),
        ])
        .expect("hint");
        assert!(
            hint.starts_with("braces, offer teeth whitening, aligners"),
            "{hint}"
        );
        assert!(
            hint.split_whitespace().count() <= CANDIDATE_HINT_WORDS,
            "{hint}"
        );
    }

    #[test]
    fn short_replies_and_requests_for_a_person_are_heard_once() {
        assert!(!worth_another_hearing("Thank you."));
        assert!(!worth_another_hearing("Can I speak to a person, please?"));
        assert!(worth_another_hearing("Can you service my taphla?"));
    }
}
