//! Cuts streamed LLM text into sentences as soon as each one ends, so the
//! first sentence is synthesised while the model is still writing. Handles
//! abbreviations ("Dr.", "e.g.", "a.m."), decimals ("3.5"), times ("9:30"),
//! numbered lists ("1. ...") and bounds the length of any one sentence.

/// A sentence longer than this is cut at a comma or space (bounded latency
/// and buffer for models that never write a full stop).
const MAX_SENTENCE_CHARS: usize = 300;

/// Words that a full stop follows without ending the sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "eg", "ie", "approx",
    "tel", "ext", "ave", "blvd", "mt", "fig", "cf",
];
/// Words after "a.m."/"p.m." or an initial that continue the sentence even
/// though they are capitalised.
const CAPITALISED_CONTINUATIONS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "est",
    "pst",
    "cet",
    "gmt",
    "utc",
];

#[derive(Debug, Default)]
pub struct SentenceSplitter {
    buf: String,
}

impl SentenceSplitter {
    pub fn new() -> SentenceSplitter {
        SentenceSplitter::default()
    }

    /// Adds a token; returns the sentences it completed, in order.
    pub fn push(&mut self, token: &str) -> Vec<String> {
        self.buf.push_str(token);
        self.drain(false)
    }

    /// The text left over at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<String> {
        let mut out = self.drain(true);
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
        // Everything emitted at the end is one utterance: the caller asked
        // for "the rest".
        let joined = out.join(" ");
        (!joined.is_empty()).then_some(joined)
    }

    fn drain(&mut self, at_end: bool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let cut = match boundary(&self.buf, at_end) {
                Some(end) => Some(end),
                None if self.buf.len() > MAX_SENTENCE_CHARS => Some(forced_cut(&self.buf)),
                None => None,
            };
            let Some(end) = cut else { break };
            let sentence = self.buf[..end].trim().to_string();
            self.buf = self.buf[end..].trim_start().to_string();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            if self.buf.is_empty() {
                break;
            }
        }
        out
    }
}

/// The sentences a reply of `text` is spoken in when it streams word by
/// word (as the offline answerer streams it): what reaches TTS, one by one.
pub fn spoken_sentences(text: &str) -> Vec<String> {
    let mut splitter = SentenceSplitter::new();
    let mut out = Vec::new();
    for (i, word) in text.split_whitespace().enumerate() {
        let token = if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        };
        out.extend(splitter.push(&token));
    }
    out.extend(splitter.finish());
    out
}

/// Byte index just past the first complete sentence, or None if the text
/// seen so far does not yet say where it ends.
fn boundary(buf: &str, at_end: bool) -> Option<usize> {
    let chars: Vec<(usize, char)> = buf.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c == '\n' {
            if !buf[..pos].trim().is_empty() {
                return Some(pos);
            }
            i += 1;
            continue;
        }
        if !matches!(c, '.' | '!' | '?' | '…') {
            i += 1;
            continue;
        }
        // Take the whole run of terminators and closing quotes/brackets.
        let mut j = i + 1;
        while j < chars.len()
            && matches!(
                chars[j].1,
                '.' | '!' | '?' | '…' | '"' | '\'' | ')' | ']' | '”' | '’'
            )
        {
            j += 1;
        }
        let end = chars.get(j).map_or(buf.len(), |(p, _)| *p);
        if j == chars.len() {
            // Nothing after the terminator yet: "3." may become "3.5".
            return at_end.then_some(end);
        }
        if !chars[j].1.is_whitespace() {
            i = j; // "3.5", "e.g", "a.m", "www.example.com"
            continue;
        }
        if c != '.' || j > i + 1 {
            return Some(end);
        }
        match full_stop_kind(buf, pos) {
            FullStop::Ends => return Some(end),
            FullStop::Continues => {}
            FullStop::EndsIfCapitalised => match next_word(buf, end) {
                Some((word, complete)) => {
                    if !complete && !at_end {
                        return None;
                    }
                    let capital = word.chars().next().is_some_and(char::is_uppercase);
                    let lower = word.to_lowercase();
                    if capital && !CAPITALISED_CONTINUATIONS.contains(&lower.as_str()) {
                        return Some(end);
                    }
                }
                None if at_end => return Some(end),
                None => return None,
            },
        }
        i = j;
    }
    None
}

enum FullStop {
    Ends,
    Continues,
    EndsIfCapitalised,
}

/// Decides what a full stop at byte `dot` means from the word before it.
fn full_stop_kind(buf: &str, dot: usize) -> FullStop {
    let before = &buf[..dot];
    let start = before.rfind(char::is_whitespace).map_or(0, |p| p + 1);
    let word = before[start..].trim_start_matches(['(', '"', '\'', '“', '‘']);
    let lower = word.to_lowercase();
    if lower.is_empty() {
        return FullStop::Ends;
    }
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return FullStop::Continues;
    }
    if lower.chars().all(|c| c.is_ascii_digit()) {
        // "1." opening a sentence is a list marker; "at 10." ends one.
        return if before[..start].trim().is_empty() {
            FullStop::Continues
        } else {
            FullStop::Ends
        };
    }
    if lower.contains('.') || (lower.chars().count() == 1 && lower.chars().all(char::is_alphabetic))
    {
        // a.m., p.m., U.S., initials: end only before a new capitalised sentence.
        return FullStop::EndsIfCapitalised;
    }
    FullStop::Ends
}

/// The word starting after whitespace at `from`, and whether it is complete.
fn next_word(buf: &str, from: usize) -> Option<(&str, bool)> {
    let rest = buf[from..].trim_start();
    if rest.is_empty() {
        return None;
    }
    let end = rest
        .find(|c: char| !c.is_alphanumeric())
        .unwrap_or(rest.len());
    Some((&rest[..end], end < rest.len()))
}

/// Where to cut an over-long sentence: after the last comma/semicolon, else
/// the last space, within the limit.
fn forced_cut(buf: &str) -> usize {
    let mut limit = MAX_SENTENCE_CHARS.min(buf.len());
    while !buf.is_char_boundary(limit) {
        limit -= 1;
    }
    let head = &buf[..limit];
    head.rfind([',', ';', ':'])
        .map(|p| p + 1)
        .filter(|&p| p > MAX_SENTENCE_CHARS / 3)
        .or_else(|| head.rfind(' ').filter(|&p| p > 0))
        .unwrap_or(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` word by word (as a model streams) and collects everything.
    fn split(text: &str) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for (i, w) in text.split(' ').enumerate() {
            let tok = if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            };
            out.extend(s.push(&tok));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn plain_sentences() {
        assert_eq!(
            split("Hello there. How are you? Great!"),
            ["Hello there.", "How are you?", "Great!"]
        );
    }

    #[test]
    fn abbreviations_decimals_times() {
        assert_eq!(
            split("Dr. Smith sees patients at 9:30 a.m. on Monday. The fee is 3.5 dollars, e.g. for a visit. Call us."),
            ["Dr. Smith sees patients at 9:30 a.m. on Monday.", "The fee is 3.5 dollars, e.g. for a visit.", "Call us."]
        );
        assert_eq!(
            split("We close at 5 p.m. See you soon."),
            ["We close at 5 p.m.", "See you soon."]
        );
    }

    #[test]
    fn numbered_lists() {
        assert_eq!(
            split("You need two things. 1. Bring your ID. 2. Arrive early. We open at 10. Thanks."),
            [
                "You need two things.",
                "1. Bring your ID.",
                "2. Arrive early.",
                "We open at 10.",
                "Thanks."
            ]
        );
        assert_eq!(
            split("Steps:\n1. Call\n2. Wait"),
            ["Steps:", "1. Call", "2. Wait"]
        );
    }

    #[test]
    fn emits_as_soon_as_a_sentence_ends() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("We open at nine").is_empty());
        assert!(
            s.push(".").is_empty(),
            "could still be a decimal or abbreviation"
        );
        assert_eq!(s.push(" On"), ["We open at nine."]);
        assert!(s.push(" Sunday we rest!").is_empty());
        assert_eq!(s.push(" "), ["On Sunday we rest!"]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn quotes_ellipsis_and_tokens_split_mid_word() {
        assert_eq!(
            split("He said \"hi.\" Then left... Really?!"),
            ["He said \"hi.\"", "Then left...", "Really?!"]
        );
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for t in ["We o", "pen at 9", ".", "30 on Satur", "days. Bye"] {
            out.extend(s.push(t));
        }
        out.extend(s.finish());
        assert_eq!(out, ["We open at 9.30 on Saturdays.", "Bye"]);
    }

    #[test]
    fn long_text_without_stops_is_cut() {
        let text = "word, ".repeat(200);
        let mut s = SentenceSplitter::new();
        let out = s.push(&text);
        assert!(!out.is_empty());
        assert!(out.iter().all(|x| x.len() <= MAX_SENTENCE_CHARS));
        assert!(s.buf.len() <= MAX_SENTENCE_CHARS);
        assert_eq!(split("   "), Vec::<String>::new());
    }
}
