//! The offline "language model": no network, no weights. It answers from the
//! best retrieved passage (the answer half of a FAQ entry, else the one or
//! two sentences that best match the question, trimmed for speech), says the
//! persona's fallback line when nothing is relevant enough, and recognises a
//! request for a human. It streams word by word like a real model, so the
//! rest of the pipeline (sentence splitting, TTS, barge-in) is the same.

use async_trait::async_trait;
use futures::StreamExt;

use super::llm::{
    estimate_tokens, system_with_passages, LanguageModel, LlmDelta, LlmRequest, LlmStream,
    ProviderError, NO_TRANSFER_ON_WEB, TRANSFER_TOOL,
};
use super::retrieval::RetrievedChunk;
use super::sentences::SentenceSplitter;

/// A passage must be at least this relevant (retrieval's 0..1 score) to be
/// read out; below it the persona's fallback message is said instead.
/// Chosen on the tuning split of `tests/retrieval_paraphrase.rs` (the most
/// right answers plus fallbacks to off-topic questions, all-mpnet-base-v2):
/// most paraphrases score above it; off-topic questions mostly below, but
/// some reach 0.6 ("Do you sell car insurance?" against pet insurance).
pub const ANSWER_FLOOR: f32 = 0.3;
/// What the answerer says to a request for a human: when the prompt offers
/// the transfer tool, when the call cannot be transferred (a browser call),
/// and when there is no one to transfer to.
pub const TRANSFER_LINE: &str = "Of course. I will transfer you to a colleague now.";
pub const NO_TRANSFER_ON_WEB_LINE: &str = "I am sorry, a call from a web page cannot be transferred to a person. To speak with someone, please call us by phone. Until then, I am happy to help you here.";
pub const NO_ONE_LINE: &str =
    "I am sorry, there is no one available to take your call right now, but I can try to help.";
/// Longest spoken answer, in characters.
const MAX_ANSWER_CHARS: usize = 320;

#[derive(Debug, Clone, Default)]
pub struct OfflineAnswerer {
    floor: Option<f32>,
}

impl OfflineAnswerer {
    pub fn new() -> OfflineAnswerer {
        OfflineAnswerer::default()
    }

    /// With a relevance floor other than [`ANSWER_FLOOR`].
    pub fn with_floor(floor: f32) -> OfflineAnswerer {
        OfflineAnswerer { floor: Some(floor) }
    }

    /// The whole reply for a request, and whether it asks for a transfer.
    pub fn answer(&self, req: &LlmRequest) -> (String, bool) {
        let question = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
            .unwrap_or("");
        if wants_human(question) {
            // Like a real model, transfer only when the prompt offers the tool.
            return if req.system.contains(TRANSFER_TOOL) {
                (TRANSFER_LINE.to_string(), true)
            } else if req.system.contains(NO_TRANSFER_ON_WEB) {
                (NO_TRANSFER_ON_WEB_LINE.to_string(), false)
            } else {
                (NO_ONE_LINE.to_string(), false)
            };
        }
        let floor = self.floor.unwrap_or(ANSWER_FLOOR);
        let answer = req
            .passages
            .iter()
            .find(|p| p.score >= floor) // passages come best first
            .and_then(|p| answer_from_passage(p, question));
        match answer {
            Some(a) => (a, false),
            None => (req.fallback_message.trim().to_string(), false),
        }
    }
}

#[async_trait]
impl LanguageModel for OfflineAnswerer {
    async fn stream(&self, req: LlmRequest) -> Result<LlmStream, ProviderError> {
        let (text, transfer) = self.answer(&req);
        let tokens_in = estimate_tokens(&system_with_passages(&req))
            + req
                .messages
                .iter()
                .map(|m| estimate_tokens(&m.content))
                .sum::<u32>();
        let tokens_out = estimate_tokens(&text);
        let mut deltas: Vec<Result<LlmDelta, ProviderError>> = Vec::new();
        if transfer {
            deltas.push(Ok(LlmDelta::Transfer));
        }
        for (i, word) in text.split_whitespace().enumerate() {
            let token = if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            };
            deltas.push(Ok(LlmDelta::Text(token)));
        }
        deltas.push(Ok(LlmDelta::Usage {
            tokens_in,
            tokens_out,
        }));
        Ok(futures::stream::iter(deltas).boxed())
    }

    fn name(&self) -> String {
        "offline".into()
    }
}

/// Does the caller ask for a person?
pub fn wants_human(text: &str) -> bool {
    let t: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let t = format!(" {} ", t.split_whitespace().collect::<Vec<_>>().join(" "));
    const DIRECT: &[&str] = &[
        " transfer me ",
        " representative ",
        " operator ",
        " real person ",
        " live person ",
        " human being ",
        " live agent ",
        " human agent ",
    ];
    if DIRECT.iter().any(|p| t.contains(p)) {
        return true;
    }
    const VERBS: &[&str] = &[
        " speak to ",
        " speak with ",
        " talk to ",
        " talk with ",
        " connect me ",
        " put me through ",
        " get me ",
        " transfer ",
    ];
    const WHO: &[&str] = &[
        " person ",
        " human ",
        " agent ",
        " someone ",
        " somebody ",
        " staff ",
        " manager ",
        " people ",
        " employee ",
    ];
    VERBS.iter().any(|v| match t.find(v) {
        Some(i) => WHO.iter().any(|w| t[i..].contains(w)),
        None => false,
    })
}

/// What to say from one passage, or None if it has nothing to say.
fn answer_from_passage(p: &RetrievedChunk, question: &str) -> Option<String> {
    let q = content_words(question);
    let faqs = parse_faq(&p.content);
    let raw = if !faqs.is_empty() {
        // A chunk may hold several entries: take the one whose question matches best.
        faqs.into_iter()
            .max_by(|a, b| overlap(&q, &a.0).total_cmp(&overlap(&q, &b.0)))
            .map(|(_, answer)| answer)?
    } else {
        best_sentences(&p.content, &q)?
    };
    let spoken = for_speech(&raw);
    (!spoken.is_empty()).then_some(spoken)
}

/// Every answer a FAQ chunk can make the answerer say, as it says it
/// (what pre-rendering synthesises).
pub fn spoken_faq_answers(content: &str) -> Vec<String> {
    parse_faq(content)
        .into_iter()
        .map(|(_, answer)| for_speech(&answer))
        .filter(|a| !a.is_empty())
        .collect()
}

/// "Q: ...\nA: ..." entries as (question, answer).
fn parse_faq(content: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut question: Option<String> = None;
    let mut answer: Option<String> = None;
    for line in content.lines() {
        let l = line.trim();
        if let Some(q) = l.strip_prefix("Q:").or_else(|| l.strip_prefix("Question:")) {
            if let (Some(qq), Some(aa)) = (question.take(), answer.take()) {
                out.push((qq, aa));
            }
            question = Some(q.trim().to_string());
            answer = None;
        } else if let Some(a) = l.strip_prefix("A:").or_else(|| l.strip_prefix("Answer:")) {
            answer = Some(a.trim().to_string());
        } else if let Some(a) = answer.as_mut() {
            if !l.is_empty() {
                a.push(' ');
                a.push_str(l);
            }
        }
    }
    if let (Some(q), Some(a)) = (question, answer) {
        out.push((q, a));
    }
    out.retain(|(_, a)| !a.is_empty());
    out
}

/// The sentence that best matches the question, plus the next one when both
/// fit in a short spoken answer.
fn best_sentences(content: &str, q: &[String]) -> Option<String> {
    let mut splitter = SentenceSplitter::new();
    let mut sentences = splitter.push(content);
    sentences.extend(splitter.finish());
    let (best, _) = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| (i, overlap(q, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
    let mut out = sentences[best].clone();
    if let Some(next) = sentences.get(best + 1) {
        if out.len() + next.len() < MAX_ANSWER_CHARS * 2 / 3 {
            out.push(' ');
            out.push_str(next);
        }
    }
    Some(out)
}

/// Share of the question's content words found in `text`.
fn overlap(q: &[String], text: &str) -> f32 {
    if q.is_empty() {
        return 0.0;
    }
    let words = content_words(text);
    q.iter().filter(|w| words.contains(w)).count() as f32 / q.len() as f32
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "do", "does", "did", "you", "your", "i", "we", "our",
    "to", "of", "on", "in", "at", "for", "and", "or", "what", "when", "how", "can", "could",
    "would", "me", "my", "it", "be", "there", "any", "with", "about", "please", "tell", "know",
    "like", "have", "has", "this", "that", "which", "who", "where", "will",
];

fn content_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .map(|w| stem(w).to_string())
        .collect()
}

fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "s"] {
        if word.len() > suffix.len() + 2 {
            if let Some(s) = word.strip_suffix(suffix) {
                return s;
            }
        }
    }
    word
}

/// Markdown, bullets and URLs do not read aloud; long text is cut at a
/// sentence (or word) boundary.
pub fn for_speech(text: &str) -> String {
    let mut s: String = text
        .split_whitespace()
        .filter(|w| !w.starts_with("http://") && !w.starts_with("https://"))
        .map(|w| w.trim_matches(|c| matches!(c, '*' | '#' | '`' | '_' | '|')))
        .filter(|w| !w.is_empty() && *w != "-" && *w != "•")
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > MAX_ANSWER_CHARS {
        let mut cut = MAX_ANSWER_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &s[..cut];
        let end = head
            .rfind(['.', '!', '?'])
            .map(|p| p + 1)
            .filter(|&p| p > MAX_ANSWER_CHARS / 3);
        let end = end.or_else(|| head.rfind(' ')).unwrap_or(cut);
        s.truncate(end);
    }
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_runtime::llm::ChatMessage;

    fn chunk(content: &str, score: f32) -> RetrievedChunk {
        RetrievedChunk {
            chunk_id: uuid::Uuid::new_v4(),
            source_id: uuid::Uuid::nil(),
            agent_id: None,
            chunk_index: 0,
            content: content.into(),
            score,
            text_score: score,
            vector_score: None,
        }
    }

    fn req(q: &str, passages: Vec<RetrievedChunk>, system: &str) -> LlmRequest {
        LlmRequest {
            system: system.into(),
            messages: vec![ChatMessage::user(q)],
            passages,
            temperature: 0.0,
            max_tokens: 100,
            fallback_message: "Sorry, I do not know that.".into(),
        }
    }

    #[test]
    fn faq_answer_half_of_the_matching_entry() {
        let c = chunk("Q: Do you deliver?\nA: Yes, within ten miles.\nQ: What are your hours on Saturday?\nA: On Saturday we open from 9 a.m. to 5 p.m.", 0.8);
        let (text, transfer) =
            OfflineAnswerer::new().answer(&req("What time do you open on Saturday?", vec![c], ""));
        assert_eq!(text, "On Saturday we open from 9 a.m. to 5 p.m.");
        assert!(!transfer);
    }

    #[test]
    fn prose_gives_best_sentences_and_floor_gives_fallback() {
        let c = chunk("Our shop was founded in 1990. Parking is free behind the building for all customers. We love dogs.", 0.5);
        let (text, _) =
            OfflineAnswerer::new().answer(&req("Is there parking?", vec![c.clone()], ""));
        assert!(
            text.starts_with("Parking is free behind the building"),
            "{text}"
        );
        let low = chunk(&c.content, 0.1);
        let (text, _) = OfflineAnswerer::new().answer(&req("Is there parking?", vec![low], ""));
        assert_eq!(text, "Sorry, I do not know that.");
    }

    #[test]
    fn human_requests() {
        for q in [
            "Can I speak to a person?",
            "transfer me please",
            "I want to talk to a real person",
            "Let me speak with an agent.",
            "representative",
        ] {
            assert!(wants_human(q), "{q}");
        }
        for q in [
            "What time do you open?",
            "Do agents work on Saturday?",
            "Is the person who answers helpful?",
        ] {
            assert!(!wants_human(q), "{q}");
        }
        let (_, transfer) = OfflineAnswerer::new().answer(&req(
            "Can I speak to a person?",
            vec![],
            "call the transfer_call tool",
        ));
        assert!(transfer);
        let (_, transfer) =
            OfflineAnswerer::new().answer(&req("Can I speak to a person?", vec![], "no tool"));
        assert!(!transfer);
    }

    #[test]
    fn a_browser_call_to_a_transferring_agent_is_told_it_cannot_be_transferred() {
        let mut p = crate::agent_runtime::profile::AgentProfile::for_tests(Some("+15555550199"));
        let phone = crate::agent_runtime::reply::system_prompt(&p);
        let (text, transfer) =
            OfflineAnswerer::new().answer(&req("Can I speak to a person?", vec![], &phone));
        assert!(transfer && text == TRANSFER_LINE);
        p.without_transfer();
        assert!(p.transfer_to.is_none() && p.transfer_unavailable);
        let web = crate::agent_runtime::reply::system_prompt(&p);
        assert!(!web.contains(TRANSFER_TOOL) && web.contains(NO_TRANSFER_ON_WEB));
        let (text, transfer) =
            OfflineAnswerer::new().answer(&req("Can I speak to a person?", vec![], &web));
        assert!(!transfer);
        assert_eq!(text, NO_TRANSFER_ON_WEB_LINE);
        // An agent with no one to transfer to says what it always said.
        p.without_transfer();
        let (text, _) =
            OfflineAnswerer::new().answer(&req("Can I speak to a person?", vec![], "no tool"));
        assert_eq!(text, NO_ONE_LINE);
    }

    #[test]
    fn speech_cleanup() {
        assert_eq!(
            for_speech("**Open** daily - see https://x.y #hours"),
            "Open daily see hours"
        );
        let long = "This is a sentence. ".repeat(40);
        let s = for_speech(&long);
        assert!(s.len() <= MAX_ANSWER_CHARS && s.ends_with('.'));
    }
}
