//! Cutting documents into retrieval chunks of about 80–200 words on
//! paragraph and sentence boundaries, and FAQ pairs into one chunk each in
//! the `Q: …\nA: …` form the offline answerer reads.

pub const MIN_WORDS: usize = 80;
pub const MAX_WORDS: usize = 200;

/// One FAQ pair as stored: the answerer speaks what follows `A: `.
pub fn faq_chunk(question: &str, answer: &str) -> String {
    format!("Q: {}\nA: {}", question.trim(), answer.trim())
}

/// A rough token count (English averages ~0.75 words per token).
pub fn token_estimate(text: &str) -> i32 {
    let words = text.split_whitespace().count();
    ((words * 4).div_ceil(3)).min(i32::MAX as usize) as i32
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Sentences of a paragraph: cut after `.`, `!` or `?` followed by a space.
fn sentences(paragraph: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let words: Vec<&str> = paragraph.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        let ends =
            word.ends_with(['.', '!', '?']) || word.ends_with(".\"") || word.ends_with("?\"");
        // "e.g." or "Dr." followed by a lower-case word is not an end.
        let next_lower = words
            .get(i + 1)
            .and_then(|w| w.chars().next())
            .is_some_and(|c| c.is_lowercase());
        if ends && !next_lower {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits `text` into chunks. A chunk closes at a paragraph end once it has
/// `MIN_WORDS`, and before a sentence that would take it past `MAX_WORDS`;
/// a sentence longer than `MAX_WORDS` on its own is cut between words.
pub fn chunk_text(text: &str) -> Vec<String> {
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_words = 0;
    let flush = |chunks: &mut Vec<String>, current: &mut String, words: &mut usize| {
        if !current.trim().is_empty() {
            chunks.push(std::mem::take(current));
        }
        current.clear();
        *words = 0;
    };
    let paragraphs = text
        .split("\n\n")
        .flat_map(|p| p.split("\r\n\r\n"))
        .map(str::trim)
        .filter(|p| !p.is_empty());
    for paragraph in paragraphs {
        for sentence in sentences(paragraph) {
            let n = word_count(&sentence);
            if n > MAX_WORDS {
                flush(&mut chunks, &mut current, &mut current_words);
                let words: Vec<&str> = sentence.split_whitespace().collect();
                for piece in words.chunks(MAX_WORDS) {
                    chunks.push(piece.join(" "));
                }
                continue;
            }
            if current_words + n > MAX_WORDS {
                flush(&mut chunks, &mut current, &mut current_words);
            }
            if !current.is_empty() && !current.ends_with('\n') {
                current.push(' ');
            }
            current.push_str(&sentence);
            current_words += n;
        }
        if current_words >= MIN_WORDS {
            flush(&mut chunks, &mut current, &mut current_words);
        } else if !current.is_empty() {
            // A short paragraph joins the next one in the same chunk, but
            // keeps its break so the text still reads as written.
            current.push('\n');
        }
    }
    let tail = current.trim().to_string();
    if !tail.is_empty() {
        // A short tail joins the previous chunk when that stays in bounds.
        match chunks.last_mut() {
            Some(last) if word_count(last) + word_count(&tail) <= MAX_WORDS => {
                last.push('\n');
                last.push_str(&tail);
            }
            _ => chunks.push(tail),
        }
    }
    chunks.into_iter().map(|c| c.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(i: usize, words: usize) -> String {
        let mut s: Vec<String> = (0..words).map(|w| format!("w{i}x{w}")).collect();
        s[0] = format!("Start{i}");
        format!("{}.", s.join(" "))
    }

    #[test]
    fn chunks_stay_in_bounds_and_keep_sentences_whole() {
        // 30 sentences of 17 words in paragraphs of 3 sentences.
        let paragraphs: Vec<String> = (0..10)
            .map(|p| {
                (0..3)
                    .map(|s| sentence(p * 3 + s, 17))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let text = paragraphs.join("\n\n");
        let chunks = chunk_text(&text);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        let total: usize = chunks.iter().map(|c| word_count(c)).sum();
        assert_eq!(total, 30 * 17, "no word lost or duplicated");
        for c in &chunks {
            let n = word_count(c);
            assert!((MIN_WORDS..=MAX_WORDS).contains(&n), "{n} words: {c}");
            assert!(c.starts_with("Start"), "starts at a sentence: {c}");
            assert!(c.ends_with('.'), "ends at a sentence: {c}");
        }
    }

    #[test]
    fn short_text_is_one_chunk_and_long_sentence_is_cut() {
        assert_eq!(
            chunk_text("Hello there. We open at nine."),
            vec!["Hello there. We open at nine."]
        );
        assert!(chunk_text("  \n\n ").is_empty());
        let long = sentence(0, 450);
        let chunks = chunk_text(&long);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| word_count(c) <= MAX_WORDS));
    }

    #[test]
    fn abbreviations_do_not_end_sentences() {
        assert_eq!(
            sentences("See e.g. the menu. Then order."),
            vec!["See e.g. the menu.", "Then order."]
        );
    }

    #[test]
    fn faq_format() {
        assert_eq!(faq_chunk(" When? ", "At nine. "), "Q: When?\nA: At nine.");
        assert_eq!(token_estimate("one two three"), 4);
    }
}
