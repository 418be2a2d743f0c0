//! A transcript made clean of whisper's repetitions: a small model on a
//! phone line sometimes loops, or reads the audio again after its last
//! sentence ("Can I pay by card? Can I pay"). Text in, text out: the
//! recognizer (`stt`) applies it to every transcript, and the turn loop
//! compares words with [`norm_word`].

/// Tiny models sometimes loop, writing the same sentence (or the same few
/// words) again and again until the token bound, or start reading the
/// audio over again after its last sentence ("Can I pay by card? Can I
/// pay"). A caller who really said a sentence twice in a row loses nothing
/// the agent needs, so consecutive repeats are kept once: whole sentences,
/// runs of 3 or more words, and a restart: everything after a sentence end
/// that only repeats the transcript's own beginning.
pub fn collapse_repeats(text: &str) -> String {
    drop_restart(&collapse_runs(text))
}

/// "Do you do grooming? Do" → "Do you do grooming?": the words after a
/// sentence end, when they are all a prefix of the text's first words.
/// Whisper also restarts after a comma it put where the sentence ended
/// ("Do you wash dogs, do you"): the same, and the comma becomes a full stop.
///
/// A decode cut off by the token budget (the text ends mid-sentence) may
/// also have read the audio again a little differently ("Where can I leave
/// my car? and what does it cost. What can i leave my car and what does it
/// cost. What"): a tail of four words or more, after a sentence end, that
/// has the first words' words in at least four places of five goes too.
/// A finished second sentence is never dropped for being alike ("Is there
/// parking at the gym? Is there parking at the pool?").
fn drop_restart(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| norm_word(w)).collect();
    let cut_off = !text.trim_end().ends_with(['.', '?', '!']);
    for p in 1..words.len() {
        let before = words[p - 1];
        let ends_sentence = before.ends_with(['.', '?', '!']);
        let ends_clause = before.ends_with([',', ';']);
        let same = (p..words.len()).filter(|&i| keys[i] == keys[i - p]).count();
        let tail = words.len() - p;
        let nearly = cut_off && ends_sentence && tail >= 4 && tail <= p + 1 && same * 5 >= tail * 4;
        if (ends_sentence || ends_clause) && (same == tail || nearly) {
            let mut kept = words[..p].join(" ");
            if ends_clause {
                kept.pop();
                kept.push('.');
            }
            return kept;
        }
    }
    // Cut off after a sentence end, the tail only begins an earlier
    // sentence again ("…inspection. Can you do that? Can you do").
    if cut_off {
        if let Some(p) = (1..words.len())
            .rev()
            .find(|&p| words[p - 1].ends_with(['.', '?', '!']))
        {
            let tail = &keys[p..];
            let begins_again = (0..p).any(|s| {
                (s == 0 || words[s - 1].ends_with(['.', '?', '!']))
                    && s + tail.len() < p
                    && keys[s..s + tail.len()] == *tail
            });
            if begins_again {
                return words[..p].join(" ");
            }
        }
    }
    // No punctuation at all, and the last two words or more are the first
    // ones again ("do you take blue cross do you take"): the same restart,
    // written without a sentence end.
    let unpunctuated = !words.iter().any(|w| w.ends_with(['.', '?', '!', ',', ';']));
    if unpunctuated {
        let n = words.len();
        if let Some(k) = (2..n)
            .rev()
            .find(|&k| n - k > k && keys[n - k..] == keys[..k])
        {
            return words[..n - k].join(" ");
        }
    }
    text.to_string()
}

/// A word or a pair said three times or more in a row is kept once
/// ("Is there a playground, playground, playground,"): whisper stuck on it.
/// Twice is speech ("No, no, I said nine").
fn collapse_stutter(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| norm_word(w)).collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let run = (1..=2).find_map(|n| {
            let unit = &keys[i..(i + n).min(keys.len())];
            if unit.len() < n || unit.iter().any(String::is_empty) {
                return None;
            }
            let mut copies = 1;
            while i + (copies + 1) * n <= keys.len()
                && keys[i + copies * n..i + (copies + 1) * n] == *unit
            {
                copies += 1;
            }
            (copies >= 3).then_some((n, copies))
        });
        match run {
            Some((n, copies)) => {
                out.extend_from_slice(&words[i..i + n]);
                i += n * copies;
            }
            None => {
                out.push(words[i]);
                i += 1;
            }
        }
    }
    out.join(" ")
}

/// A transcript's word for comparing: letters and digits, lower case.
pub(crate) fn norm_word(w: &str) -> String {
    w.chars()
        .filter(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

fn collapse_runs(text: &str) -> String {
    fn norm(s: &str) -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
    // Sentences, each with its end punctuation.
    let mut sentences: Vec<&str> = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '?' | '!') {
            let end = i + c.len_utf8();
            let next_is_space = text[end..].chars().next().is_none_or(char::is_whitespace);
            if next_is_space {
                sentences.push(text[start..end].trim());
                start = end;
            }
        }
    }
    if start < text.len() && !text[start..].trim().is_empty() {
        sentences.push(text[start..].trim());
    }
    // A sentence, or a block of up to three, said again right after itself
    // ("…inspection. Can you do that? …inspection. Can you do that?").
    let norms: Vec<String> = sentences.iter().map(|s| norm(s)).collect();
    let mut kept: Vec<usize> = Vec::new();
    let mut j = 0;
    while j < sentences.len() {
        let again = (1..=3).find(|&k| {
            j + k <= sentences.len()
                && kept.len() >= k
                && !norms[j].is_empty()
                && kept[kept.len() - k..]
                    .iter()
                    .zip(j..j + k)
                    .all(|(&a, b)| norms[a] == norms[b])
        });
        match again {
            Some(k) => j += k,
            None => {
                kept.push(j);
                j += 1;
            }
        }
    }
    // Word runs: "my name is my name is my name is" → "my name is".
    let joined = kept
        .iter()
        .map(|&k| sentences[k])
        .collect::<Vec<_>>()
        .join(" ");
    let joined = collapse_stutter(&joined);
    let words: Vec<&str> = joined.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| norm(w)).collect();
    // Indices into `words` of the words kept.
    let mut out: Vec<usize> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        // Shorter runs only as the text's last words: a decode stuck on its
        // final word ("…wheelchair accessible, accessible").
        let repeat = (1..=8).rev().find(|&n| {
            (n >= 3 || i + n == words.len())
                && out.len() >= n
                && i + n <= words.len()
                && out[out.len() - n..]
                    .iter()
                    .zip(i..i + n)
                    .all(|(&a, b)| keys[a] == keys[b])
        });
        match repeat {
            Some(n) => {
                if i + n == words.len() {
                    // The last copy keeps its punctuation ("accessible?").
                    let from = out.len() - n;
                    for (k, slot) in out[from..].iter_mut().enumerate() {
                        *slot = i + k;
                    }
                }
                i += n;
            }
            None => {
                out.push(i);
                i += 1;
            }
        }
    }
    let out: Vec<&str> = out.into_iter().map(|k| words[k]).collect();
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_after_a_comma_is_dropped_and_real_clauses_kept() {
        assert_eq!(
            collapse_repeats("Do you wash dogs, do you"),
            "Do you wash dogs."
        );
        assert_eq!(
            collapse_repeats("Is your staff trained in first aid, is your staff trained"),
            "Is your staff trained in first aid."
        );
        assert_eq!(
            collapse_repeats("I want, I want a refund"),
            "I want, I want a refund"
        );
        assert_eq!(
            collapse_repeats("Yes, please book it for Monday"),
            "Yes, please book it for Monday"
        );
    }

    #[test]
    fn repeated_sentences_and_word_runs_are_kept_once() {
        assert_eq!(
            collapse_repeats(
                "My name is Mary Smith. My name is Mary Smith. my name is Mary Smith! My name is"
            ),
            "My name is Mary Smith."
        );
        assert_eq!(
            collapse_repeats("I want to I want to I want to book a table"),
            "I want to book a table"
        );
        // Whisper reading the audio again after the sentence: the tails
        // callers' transcripts showed.
        for (heard, meant) in [
            ("Can I pay by card? Can I pay", "Can I pay by card?"),
            ("Do you do grooming? Do", "Do you do grooming?"),
            (
                "I need to cancel my appointment, how does that work? I need to cancel my appointment, how does that work? I need to",
                "I need to cancel my appointment, how does that work?",
            ),
            (
                "I need to cancel my appointment. How does that work? I need to cancel",
                "I need to cancel my appointment. How does that work?",
            ),
            (
                "Is the office wheelchair accessible, accessible",
                "Is the office wheelchair accessible",
            ),
            ("Where are you located? Where are", "Where are you located?"),
            // Heard that way in the conversation benchmark: no punctuation.
            ("do you take blue cross do you take", "do you take blue cross"),
            // Read again a little differently, and cut off.
            (
                "Where can I leave my car? and what does it cost. What can i leave my car and what does it cost. What",
                "Where can I leave my car? and what does it cost.",
            ),
        ] {
            assert_eq!(collapse_repeats(heard), meant);
        }
        // Stuck on a word, on a pair of sentences, restarting the last one.
        for (heard, meant) in [
            ("Is there a playground, playground, playground,", "Is there a playground,"),
            (
                "My car needs its yearly inspection. Can you do that? My car needs its yearly inspection. Can you do that? Can you do",
                "My car needs its yearly inspection. Can you do that?",
            ),
            ("It's late. Can you come out tonight? Can you", "It's late. Can you come out tonight?"),
        ] {
            assert_eq!(collapse_repeats(heard), meant);
        }
        // Ordinary text is untouched, short repeats included.
        for t in [
            "Do you do grooming? Do you do boarding?",
            "What time do you open on Saturday?",
            "No, no, I said nine. Nine in the morning.",
            "It costs 3.50 dollars. Thank you.",
            "Is there parking at the gym? Is there parking at the pool?",
            "I have two questions. I have a dog and",
            "Thanks. Thanks a lot. Bye. Bye now.",
            "It is very, very cold.",
            "do you do it for you",
            "can you come can",
            "",
        ] {
            assert_eq!(collapse_repeats(t), t);
        }
    }
}
