//! How the turn machine reads a transcript: whether it is a finished
//! question, what a whole utterance adds to its early-answered opening,
//! and whether it is whisper's rendering of no speech at all.

use crate::agent_runtime::spelling::distances_to_prefixes;
use crate::agent_runtime::stt_clean::norm_word;

/// Whisper punctuates: a transcript whose last sentence or clause is a
/// question is taken as a finished turn ("What time do you open on
/// Saturday?"), also when whisper closed it with a full stop ("…in the
/// morning, can anybody get here right now."). A statement is not: callers
/// pause at a comma about as long as the early answer waits ("My brakes
/// are squeaking, how much to replace the pads?"), and answering "My
/// brakes are squeaking." there talks over the question that follows. A
/// statement that really is the whole turn is answered at the endpointer's
/// end of turn.
pub(super) fn reads_complete(text: &str) -> bool {
    let t = text.trim_end();
    if !t.ends_with(['?', '.', '!']) || t.ends_with("...") || t.split_whitespace().count() < 2 {
        return false;
    }
    if t.ends_with('?') {
        return true;
    }
    // The last clause: whisper often keeps the comma before a question
    // ("…in the morning, can anybody get here right now.").
    let body = &t[..t.len() - 1];
    let last = body
        .rfind(['.', '?', '!', ',', ';'])
        .map_or(body, |i| &body[i + 1..]);
    last.split_whitespace()
        .next()
        .map(norm_word)
        .is_some_and(|w| QUESTION_OPENERS.contains(&w.as_str()))
}

/// First words of a question in English: interrogatives and the auxiliaries
/// of inverted questions ("Is there…", "Could I…").
const QUESTION_OPENERS: &[&str] = &[
    "what", "whats", "when", "where", "wheres", "who", "whos", "whom", "whose", "which", "why",
    "how", "hows", "can", "could", "do", "does", "did", "is", "isnt", "are", "arent", "was",
    "were", "will", "would", "should", "shall", "may", "might", "must", "have", "has", "had", "am",
    "any", "anything", "anyone", "dont", "doesnt", "cant", "wont",
];

/// What `full` (the transcript of a whole utterance) says after `early`
/// (the transcript of its opening, already answered), in `full`'s own
/// words and punctuation. The two transcripts come from different audio
/// lengths and may differ in a word or two ("My sea is blowing warm air."
/// against "My AC is blowing warm air, can you fix it?"), so the opening is
/// the prefix of `full` closest to `early` by word edit distance, accepted
/// within a third of its words. `None`: `full` does not start with `early`,
/// or adds nothing to it.
pub fn continuation_after<'a>(early: &str, full: &'a str) -> Option<&'a str> {
    let early: Vec<String> = early
        .split_whitespace()
        .map(norm_word)
        .filter(|w| !w.is_empty())
        .collect();
    // (normalized word, byte offset just past it) for each word of `full`.
    let mut words: Vec<(String, usize)> = Vec::new();
    let mut pos = 0;
    for token in full.split_whitespace() {
        let start = pos + full[pos..].find(token)?;
        pos = start + token.len();
        let w = norm_word(token);
        if !w.is_empty() {
            words.push((w, pos));
        }
    }
    if early.is_empty() || words.len() <= 1 {
        return None;
    }
    // Edit distance of `early` against every prefix of `full`.
    let full_words: Vec<&str> = words.iter().map(|(w, _)| w.as_str()).collect();
    let early_words: Vec<&str> = early.iter().map(String::as_str).collect();
    let row = distances_to_prefixes(&early_words, &full_words);
    let (cut, distance) = (1..=words.len())
        .map(|c| (c, row[c]))
        .min_by_key(|&(c, d)| (d, c.abs_diff(early.len())))?;
    if distance * 3 > early.len() || cut >= words.len() {
        return None;
    }
    let rest = full[words[cut - 1].1..].trim_start_matches(|c: char| !c.is_alphanumeric());
    (!rest.is_empty()).then_some(rest)
}

/// Whisper's renderings of non-speech ("[BLANK_AUDIO]", "(coughs)") are not a turn.
pub(super) fn is_noise_transcript(text: &str) -> bool {
    let t = text.trim();
    (t.starts_with('[') && t.ends_with(']'))
        || (t.starts_with('(') && t.ends_with(')'))
        || !t.chars().any(|c| c.is_alphanumeric())
}
