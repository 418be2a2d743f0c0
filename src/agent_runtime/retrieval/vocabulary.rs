//! The words a caller of this agent is likely to say, as a hint for the
//! recognizer. A small model spells an unknown domain by sound ("Can you
//! make my teeth wider?", "my taphla"); told the knowledge's own words
//! first (whisper's initial prompt), it writes "whiter" and "Tesla". The
//! hint is built from the knowledge itself: the topic words of its FAQ
//! questions, then the words its answers and documents use most.

use std::collections::{HashMap, HashSet};

use super::normalize::is_topic_word;

/// Most words in a hint: about 70 whisper tokens with the commas, well
/// inside whisper's prompt budget (`stt::MAX_PROMPT_TOKENS`).
pub const MAX_HINT_WORDS: usize = 50;
/// Most words of the knowledge read to count the frequent ones.
const MAX_SCANNED_WORDS: usize = 200_000;
/// Shortest word counted from answers and documents ("oil", "gas" and
/// the like are known to any recognizer).
const MIN_FREQUENT_LEN: usize = 4;

/// The surface words of `text` (case kept, split on anything that is not
/// a letter, digit or hyphen: "what's" is "what" and "s").
fn surface_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .map(|w| w.trim_matches('-'))
        .filter(|w| !w.is_empty() && w.len() <= 40)
}

/// A recognizer hint for a knowledge base: the topic words of each FAQ
/// question as a phrase ("teeth whitening"), then the most frequent topic
/// words of `texts` (answers, documents) not named yet, at most
/// [`MAX_HINT_WORDS`] words in all. `None` when the knowledge has no topic
/// words.
pub fn recognizer_hint<'a>(
    faq_questions: impl IntoIterator<Item = &'a str>,
    texts: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    recognizer_hint_within(faq_questions, texts, MAX_HINT_WORDS)
}

/// [`recognizer_hint`] in at most `max_words` words (a short hint costs the
/// recognizer less decoder time).
pub fn recognizer_hint_within<'a>(
    faq_questions: impl IntoIterator<Item = &'a str>,
    texts: impl IntoIterator<Item = &'a str>,
    max_words: usize,
) -> Option<String> {
    let mut phrases: Vec<String> = Vec::new();
    let mut named: HashSet<String> = HashSet::new();
    let mut budget = max_words.min(MAX_HINT_WORDS);
    if budget == 0 {
        return None;
    }
    for question in faq_questions {
        let mut words: Vec<&str> = Vec::new();
        for w in surface_words(question).filter(|w| is_topic_word(w)) {
            let lower = w.to_lowercase();
            if words.len() < budget && !named.contains(&lower) {
                named.insert(lower);
                words.push(w);
            }
        }
        if words.is_empty() {
            continue;
        }
        budget -= words.len();
        phrases.push(words.join(" "));
        if budget == 0 {
            break;
        }
    }
    if budget > 0 {
        // Counted by lower case; written as first seen ("X-rays", "Patel").
        let mut counts: HashMap<String, (usize, usize, &str)> = HashMap::new();
        let mut seen = 0usize;
        for text in texts {
            for w in surface_words(text) {
                seen += 1;
                if seen > MAX_SCANNED_WORDS {
                    break;
                }
                if w.len() < MIN_FREQUENT_LEN
                    || w.chars().any(|c| c.is_ascii_digit())
                    || !is_topic_word(w)
                {
                    continue;
                }
                let order = counts.len();
                counts.entry(w.to_lowercase()).or_insert((0, order, w)).0 += 1;
            }
        }
        let mut frequent: Vec<(String, (usize, usize, &str))> = counts
            .into_iter()
            .filter(|(lower, _)| !named.contains(lower))
            .collect();
        frequent.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
        phrases.extend(
            frequent
                .into_iter()
                .take(budget)
                .map(|(_, (_, _, w))| w.to_string()),
        );
    }
    if phrases.is_empty() {
        return None;
    }
    Some(format!("{}.", phrases.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faq_topics_come_first_then_frequent_words() {
        let hint = recognizer_hint(
            [
                "Do you offer teeth whitening?",
                "Do you do braces?",
                "Do you work on electric cars?",
            ],
            [
                "We offer clear aligners; for metal braces we refer you to an orthodontist.",
                "Our orthodontist fits aligners on Tuesdays.",
            ],
        )
        .expect("hint");
        assert!(
            hint.starts_with("offer teeth whitening, braces, work electric cars, "),
            "{hint}"
        );
        // Frequent words of the answers follow, most used first, none twice.
        let rest = hint.split(", ").skip(3).collect::<Vec<_>>();
        assert_eq!(rest[0], "aligners");
        assert_eq!(rest[1], "orthodontist");
        assert_eq!(hint.matches("braces").count(), 1, "{hint}");
    }

    #[test]
    fn the_hint_is_bounded_and_empty_knowledge_has_none() {
        let many: Vec<String> = (0..200).map(|i| format!("Topic{i} question")).collect();
        let hint = recognizer_hint(many.iter().map(String::as_str), []).expect("hint");
        assert_eq!(hint.split_whitespace().count(), MAX_HINT_WORDS, "{hint}");
        assert_eq!(recognizer_hint(["Is it?", "What do you do?"], []), None);
        assert_eq!(recognizer_hint([], [""]), None);
        let short = recognizer_hint_within(many.iter().map(String::as_str), [], 6).expect("hint");
        assert_eq!(short.split_whitespace().count(), 6, "{short}");
        assert_eq!(recognizer_hint_within(["Do you do braces?"], [], 0), None);
    }
}
