//! Contact details a caller gives during a call — "my name is …", an email
//! address (written by the transcriber or spoken: "mary at mail dot com"),
//! a phone number (digits, grouped or one by one, or number words) — found
//! in the caller's transcripts, for one `leads` row per call. Pure text in,
//! values out: no I/O, so every phrasing is a unit test.

use super::spelling::{edit_distance, soundex};

/// What the caller said about themselves. Later statements win (a caller
/// who corrects their number is right the second time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lead {
    pub name: Option<String>,
    pub email: Option<String>,
    /// E.164 when the number reads as one (NANP for 10 digits), else the
    /// digits as given.
    pub phone: Option<String>,
    /// The address as the recognizer wrote it, when `email` was respelled
    /// after the caller's name (see [`spelled_after_name`]).
    pub email_heard: Option<String>,
}

impl Lead {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.email.is_none() && self.phone.is_none()
    }
}

/// Gathers a lead over a call's transcripts.
#[derive(Debug, Default)]
pub struct LeadCollector {
    lead: Lead,
}

/// Only the start of a very long transcript is read (bounded work).
const MAX_TRANSCRIPT_CHARS: usize = 2000;
const MAX_NAME_WORDS: usize = 3;
const MAX_NAME_CHARS: usize = 100;
const MAX_EMAIL_CHARS: usize = 254;
/// Phone numbers: a local number has 7 digits, E.164 at most 15.
const MIN_PHONE_DIGITS: usize = 7;
const MAX_PHONE_DIGITS: usize = 15;

impl LeadCollector {
    /// Reads one caller transcript.
    pub fn observe(&mut self, transcript: &str) {
        let found = extract(transcript);
        if found.name.is_some() {
            self.lead.name = found.name;
        }
        if found.email.is_some() {
            self.lead.email = found.email;
        }
        if found.phone.is_some() {
            self.lead.phone = found.phone;
        }
    }

    /// The lead so far, if the caller gave anything. An address whose
    /// local part sounds like the caller's name is spelled as the name.
    pub fn lead(&self) -> Option<Lead> {
        if self.lead.is_empty() {
            return None;
        }
        let mut lead = self.lead.clone();
        if let (Some(email), Some(name)) = (&lead.email, &lead.name) {
            let spelled = spelled_after_name(email, name);
            if spelled != *email {
                lead.email_heard = lead.email.replace(spelled);
            }
        }
        Some(lead)
    }
}

/// `email` with each word of its local part that sounds like a word of the
/// caller's `name` but is spelled otherwise written as the name writes it:
/// "mari@example.com" after "my name is Mary Smith" is "mary@example.com".
/// A recognizer spells a name it hears inside an address by sound alone,
/// while the introduction ("my name is …") is the caller's own spelling,
/// heard in a sentence that gives it context; a receptionist makes the
/// same guess. Words must share their sound key (American Soundex) and
/// differ by at most two letters, so "mark" never becomes "mary".
pub fn spelled_after_name(email: &str, name: &str) -> String {
    let Some((local, domain)) = email.split_once('@') else {
        return email.to_string();
    };
    let name_words: Vec<String> = name
        .split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    let mut out = String::with_capacity(email.len());
    for piece in local.split_inclusive(['.', '_', '-']) {
        let (word, sep) = match piece.char_indices().last() {
            Some((i, c)) if ".-_".contains(c) => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        let respelled = name_words.iter().find(|n| {
            *n != word
                && word.chars().all(|c| c.is_ascii_alphabetic())
                && soundex(n) == soundex(word)
                && edit_distance(n, word) <= 2
        });
        out.push_str(respelled.map_or(word, String::as_str));
        out.push_str(sep);
    }
    format!("{out}@{domain}")
}

/// The contact details in one transcript.
pub fn extract(transcript: &str) -> Lead {
    let text: String = transcript.chars().take(MAX_TRANSCRIPT_CHARS).collect();
    Lead {
        name: name(&text),
        email: email(&text),
        phone: phone(&text),
        email_heard: None,
    }
}

/// Words that end (or cannot start) a name after "my name is".
const NOT_NAME: &[&str] = &[
    "a", "an", "and", "at", "but", "by", "calling", "from", "here", "i", "i'm", "is", "it", "my",
    "not", "of", "on", "or", "please", "so", "speaking", "the", "to", "uh", "um", "with",
    "actually", "just", "going", "looking", "trying", "was", "will", "would", "can", "could",
];

fn name(text: &str) -> Option<String> {
    // ASCII lower-casing keeps byte offsets, so they index `text` as well.
    let lower = text.to_ascii_lowercase();
    // The last statement wins: "my name is Jon, sorry, my name is John".
    let mut best = None;
    for cue in ["my name is ", "my name's ", "the name is ", "name's "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(cue) {
            let start = from + i + cue.len();
            if let Some(n) = name_at(&text[start..]) {
                if best.as_ref().is_none_or(|(at, _)| *at < start) {
                    best = Some((start, n));
                }
            }
            from = start;
        }
    }
    // "This is Mary Smith calling/speaking/here": only with the closing word,
    // since "this is …" starts many sentences that are not introductions.
    let mut from = 0;
    while let Some(i) = lower[from..].find("this is ") {
        let start = from + i + "this is ".len();
        if let Some(n) = name_at(&text[start..]) {
            let after = lower[start..]
                .split_whitespace()
                .nth(n.split_whitespace().count())
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()));
            if matches!(after, Some("calling" | "speaking" | "here"))
                && best.as_ref().is_none_or(|(at, _)| *at < start)
            {
                best = Some((start, n));
            }
        }
        from = start;
    }
    best.map(|(_, n)| n)
}

/// Words of a spoken address: a "name" they follow was an address misheard
/// ("my email is mary at example dot com" heard "my name is Mary had
/// example dot com").
const ADDRESS_WORDS: &[&str] = &["at", "dot"];

/// Up to three name-like words at the start of `rest`, title-cased. None
/// when the clause goes on with more such words (a sentence, not a name) or
/// with the words of a spoken address.
fn name_at(rest: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    let mut tokens = rest.split_whitespace();
    let mut clause_ended = false;
    for raw in tokens.by_ref() {
        let ends_clause = raw.ends_with([',', '.', '!', '?', ';', ':']);
        let word = raw.trim_matches(|c: char| !c.is_alphabetic());
        if !name_like(word) {
            // The word after the name: an address's "at" or "dot" is no
            // end of a name.
            if ADDRESS_WORDS.contains(&word.to_lowercase().as_str()) {
                return None;
            }
            clause_ended = true;
            break;
        }
        words.push(title_case(word));
        if ends_clause || words.len() == MAX_NAME_WORDS {
            clause_ended = ends_clause;
            break;
        }
    }
    if !clause_ended {
        if let Some(next) = tokens.next() {
            let next = next.trim_matches(|c: char| !c.is_alphabetic());
            if name_like(next) || ADDRESS_WORDS.contains(&next.to_lowercase().as_str()) {
                return None;
            }
        }
    }
    let name = words.join(" ");
    (!name.is_empty() && name.len() <= MAX_NAME_CHARS).then_some(name)
}

fn name_like(word: &str) -> bool {
    !word.is_empty()
        && word.chars().count() <= 30
        && word
            .chars()
            .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        && !NOT_NAME.contains(&word.to_lowercase().as_str())
}

/// "mary" → "Mary"; a word with capitals inside ("McDonald") is kept.
fn title_case(word: &str) -> String {
    if word.chars().skip(1).any(char::is_uppercase) {
        return word.to_string();
    }
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// Words before "at" that are not the local part of an address.
const NOT_LOCAL_PART: &[&str] = &[
    "is", "me", "email", "e-mail", "mail", "address", "it's", "its", "reach", "contact", "write",
    "us", "you", "be", "it", "here", "there", "that", "this", "and",
];

fn email(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    // Written by the transcriber: "mary@mail.com".
    let written = lower
        .split_whitespace()
        .filter(|t| t.contains('@'))
        .filter_map(|t| {
            let t = t.trim_matches(|c: char| !c.is_alphanumeric());
            let (local, domain) = t.split_once('@')?;
            valid_email(local, domain)
        })
        .next_back();
    if written.is_some() {
        return written;
    }
    // Spoken: "mary dot smith at mail dot com", or half-written by the
    // transcriber: "Mary at Mail.com".
    let tokens = spoken_email_tokens(&lower);
    // Recognizers hear a spoken "at" before a vowel as "had" or "add"
    // ("Mary had example.com"); those count when the caller is giving an
    // email address: they say so, or they dictate the domain ("example dot
    // com", which nobody says of anything but an address).
    let about_email = tokens
        .iter()
        .any(|t| matches!(t.text.as_str(), "email" | "e-mail" | "mail" | "address"));
    let mut found = None;
    for i in 1..tokens.len().saturating_sub(1) {
        let domain = &tokens[i + 1];
        let at = match tokens[i].text.as_str() {
            "at" => true,
            "had" | "add" => about_email || domain.dictated,
            _ => false,
        };
        if !at {
            continue;
        }
        let local = tokens[i - 1].text.as_str();
        if NOT_LOCAL_PART.contains(&local) {
            continue;
        }
        if let Some(e) = valid_email(local, &domain.text) {
            found = Some(e);
        }
    }
    found
}

/// A word of a possibly spoken address.
struct Token {
    text: String,
    /// Joined from words by a spoken separator ("example dot com").
    dictated: bool,
}

/// Words with surrounding punctuation removed and the spoken separators
/// ("dot", "underscore", "dash"/"hyphen") joined into the words around them.
fn spoken_email_tokens(lower: &str) -> Vec<Token> {
    let words: Vec<String> = lower
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<Token> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let sep = match words[i].as_str() {
            "dot" | "period" | "point" => Some('.'),
            "underscore" => Some('_'),
            "dash" | "hyphen" => Some('-'),
            _ => None,
        };
        match (sep, out.last_mut(), words.get(i + 1)) {
            (Some(sep), Some(prev), Some(next)) if prev.text != "at" && next != "at" => {
                prev.text.push(sep);
                prev.text.push_str(next);
                prev.dictated = true;
                i += 2;
            }
            _ => {
                out.push(Token {
                    text: words[i].clone(),
                    dictated: false,
                });
                i += 1;
            }
        }
    }
    out
}

/// `local@domain` when both parts are well formed and the domain ends in an
/// alphabetic top-level label.
fn valid_email(local: &str, domain: &str) -> Option<String> {
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        })
        && labels.last().is_some_and(|tld| {
            (2..=24).contains(&tld.len()) && tld.chars().all(|c| c.is_ascii_alphabetic())
        });
    let email = format!("{local}@{domain}");
    (local_ok && domain_ok && email.len() <= MAX_EMAIL_CHARS).then_some(email)
}

/// Words that say a long number is not a phone number.
const NOT_PHONE: &[&str] = &[
    "order",
    "account",
    "card",
    "confirmation",
    "reference",
    "policy",
    "member",
    "invoice",
    "tracking",
    "zip",
    "postal",
    "social",
    "ssn",
    "pin",
    "passcode",
    "password",
    "credit",
    "routing",
    "booking",
    "ticket",
    "claim",
];
/// Words that say it is one.
const PHONE_CUES: &[&str] = &[
    "phone", "number", "cell", "mobile", "call", "reach", "contact", "text", "whatsapp", "landline",
];

fn phone(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    if words.iter().any(|w| NOT_PHONE.contains(w)) {
        return None;
    }
    let cued = words.iter().any(|w| PHONE_CUES.contains(w));
    let mut found = None;
    for (plus, digits) in digit_runs(&lower) {
        let long_enough = digits.len() >= 10 || (cued && digits.len() >= MIN_PHONE_DIGITS);
        if long_enough && digits.len() <= MAX_PHONE_DIGITS {
            found = Some(format_phone(plus, &digits));
        }
    }
    found
}

/// Runs of digits said together: numerals with the separators people and
/// transcribers put between groups ("617-492-3041", "6, 1, 7", "(617) 492"),
/// and number words ("six one seven", "oh", "double two").
fn digit_runs(lower: &str) -> Vec<(bool, String)> {
    let mut runs = Vec::new();
    let mut digits = String::new();
    let mut plus = false;
    let mut repeat = 1;
    let close = |runs: &mut Vec<(bool, String)>, digits: &mut String, plus: &mut bool| {
        if !digits.is_empty() {
            runs.push((*plus, std::mem::take(digits)));
        }
        *plus = false;
    };
    for raw in lower.split_whitespace() {
        let token = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '+' && c != '(');
        let word = token.trim_matches(|c: char| !c.is_alphanumeric());
        if let Some(d) = digit_word(word) {
            for _ in 0..repeat {
                digits.push(d);
            }
            repeat = 1;
        } else if word == "double" || word == "triple" {
            repeat = if word == "double" { 2 } else { 3 };
        } else if word == "plus" && digits.is_empty() {
            plus = true;
        } else if !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_digit() || "+-.,()".contains(c))
            && token.chars().any(|c| c.is_ascii_digit())
        {
            if digits.is_empty() && token.starts_with('+') {
                plus = true;
            }
            for _ in 1..repeat {
                if let Some(first) = token.chars().find(char::is_ascii_digit) {
                    digits.push(first);
                }
            }
            repeat = 1;
            digits.extend(token.chars().filter(char::is_ascii_digit));
        } else {
            repeat = 1;
            close(&mut runs, &mut digits, &mut plus);
        }
        if digits.len() > MAX_PHONE_DIGITS * 2 {
            close(&mut runs, &mut digits, &mut plus); // bounded: a long run is no phone
        }
        // A sentence ends the number: "…4567. 12 people" are two things.
        if raw.ends_with(['.', '!', '?', ';']) && !raw.ends_with("..") {
            close(&mut runs, &mut digits, &mut plus);
        }
    }
    close(&mut runs, &mut digits, &mut plus);
    runs
}

fn digit_word(word: &str) -> Option<char> {
    Some(match word {
        "zero" | "oh" | "o" => '0',
        "one" => '1',
        "two" => '2',
        "three" => '3',
        "four" => '4',
        "five" => '5',
        "six" => '6',
        "seven" => '7',
        "eight" => '8',
        "nine" => '9',
        _ => return None,
    })
}

/// E.164 with the SIP layer's rules (NANP for ten digits), else the digits.
fn format_phone(plus: bool, digits: &str) -> String {
    let raw = if plus {
        format!("+{digits}")
    } else {
        digits.to_string()
    };
    match crate::sip::number::normalise(&raw, &crate::sip::number::NumberingPlan::default()) {
        Some(e164) if plus || digits.len() >= 10 => e164.to_string(),
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(texts: &[&str]) -> Lead {
        let mut c = LeadCollector::default();
        for t in texts {
            c.observe(t);
        }
        c.lead().unwrap_or_default()
    }

    #[test]
    fn names_after_an_introduction() {
        let n = |t: &str| extract(t).name;
        assert_eq!(n("My name is Sarah Johnson."), Some("Sarah Johnson".into()));
        assert_eq!(
            n("Hi, my name is john smith and my email is john at mail dot com"),
            Some("John Smith".into())
        );
        assert_eq!(n("my name's Peter."), Some("Peter".into()));
        assert_eq!(
            n("The name is O'Brien, Pat O'Brien"),
            Some("O'Brien".into())
        );
        assert_eq!(
            n("Hello, this is Maria Garcia calling about my appointment"),
            Some("Maria Garcia".into())
        );
        assert_eq!(n("This is Maria speaking."), Some("Maria".into()));
        // Not introductions.
        assert_eq!(n("This is a question about parking"), None);
        assert_eq!(n("My name is not important"), None);
        assert_eq!(n("What is your name?"), None);
        assert_eq!(n("my name is"), None);
        assert_eq!(n("my name is 42"), None);
        // An address misheard as an introduction.
        assert_eq!(n("My name is Mary had example dot com."), None);
        assert_eq!(n("My name is Mary at example dot com."), None);
        assert_eq!(
            n("My name is Mary Ann Smith."),
            Some("Mary Ann Smith".into())
        );
        // The last introduction wins (a correction).
        assert_eq!(
            n("My name is Jon, sorry, my name is John."),
            Some("John".into())
        );
        // Non-ASCII text never panics and keeps its letters.
        assert_eq!(n("İİİ my name is Zoë Çelik"), Some("Zoë Çelik".into()));
    }

    #[test]
    fn emails_written_or_spoken() {
        let e = |t: &str| extract(t).email;
        assert_eq!(
            e("My email is mary@mail.com."),
            Some("mary@mail.com".into())
        );
        assert_eq!(
            e("My email is Mary at Mail.com."),
            Some("mary@mail.com".into())
        );
        assert_eq!(
            e("it's john dot smith at example dot co dot uk"),
            Some("john.smith@example.co.uk".into())
        );
        assert_eq!(
            e("you can reach me at anna underscore lee at gmail dot com"),
            Some("anna_lee@gmail.com".into())
        );
        assert_eq!(e("Email me at (bob@acme.io)"), Some("bob@acme.io".into()));
        // Not addresses.
        assert_eq!(e("We are at 214 Maple Avenue."), None);
        assert_eq!(e("I'll be there at five."), None);
        assert_eq!(e("my email is at mail.com"), None);
        // "at" misheard, in an email address only.
        assert_eq!(
            e("My email is Mary had example.com"),
            Some("mary@example.com".into())
        );
        assert_eq!(e("Mary had example.com"), None);
        // A dictated domain says it is an address (heard for "My email is
        // mary at example dot com." in one run of `runtime_leads`).
        assert_eq!(
            e("My name is Mary had example dot com."),
            Some("mary@example.com".into())
        );
        assert_eq!(e("we had amazon.com deliver it"), None);
        assert_eq!(e("reach me at home dot 42"), None);
        assert_eq!(e("a@b"), None);
    }

    #[test]
    fn phone_numbers_in_digits_groups_and_words() {
        let p = |t: &str| extract(t).phone;
        let us = Some("+16174923041".to_string());
        assert_eq!(p("My phone number is 6, 1, 7, 4, 9, 2, 3, 0, 4, 1."), us);
        assert_eq!(p("My phone number is 6174923 041"), us);
        assert_eq!(p("call me on (617) 492-3041"), us);
        assert_eq!(p("it's 617.492.3041"), us);
        assert_eq!(
            p("my number is 2-1-2-6-3-4-7-1-9-0"),
            Some("+12126347190".into())
        );
        assert_eq!(
            p("my cell is six one seven, four nine two, three oh four one"),
            us
        );
        assert_eq!(
            p("my number is six one seven four nine two three zero four one"),
            us
        );
        assert_eq!(p("it's 1 617 492 3041"), us);
        assert_eq!(
            p("plus four four two zero seven nine four six zero one two three"),
            Some("+442079460123".into())
        );
        assert_eq!(p("+44 20 7946 0123"), Some("+442079460123".into()));
        assert_eq!(
            p("my number is double two three four five six seven"),
            Some("2234567".into())
        );
        // A short local number needs a cue; digits as given.
        assert_eq!(p("call me at 555 0199"), Some("5550199".into()));
        assert_eq!(p("555 0199"), None);
        // Not phone numbers.
        assert_eq!(p("My order number is 6174923041"), None);
        assert_eq!(p("my credit card is 4111 1111 1111 1111"), None);
        assert_eq!(p("We are at 214 Maple Avenue"), None);
        assert_eq!(p("I need an appointment at 9 30 on Saturday"), None);
        assert_eq!(p("the number is 12345678901234567890"), None);
        assert_eq!(
            p("my phone number is 2, 1, 2, 6, 3, 4, M and 1, 9, 0."),
            None
        );
    }

    #[test]
    fn an_address_heard_as_an_introduction_keeps_the_name() {
        // What whisper made of "My email is mary at example dot com." in
        // one run of `runtime_leads`.
        let l = lead(&[
            "Hello, my name is Mary Smith.",
            "My name is Mary had example dot com.",
        ]);
        assert_eq!(l.name.as_deref(), Some("Mary Smith"));
    }

    #[test]
    fn a_call_gathers_one_lead_and_later_statements_win() {
        assert_eq!(LeadCollector::default().lead(), None);
        let mut c = LeadCollector::default();
        c.observe("What time do you open on Saturday?");
        assert_eq!(c.lead(), None, "no contact details, no lead");
        let l = lead(&[
            "My name is Mary Smith.",
            "What time do you open on Saturday?",
            "My email is Mary at Mail.com.",
            "My phone number is 6, 1, 7, 4, 9, 2, 3, 0, 4, 1.",
            "Sorry, my number is 6, 1, 7, 4, 9, 2, 3, 0, 4, 2.",
        ]);
        assert_eq!(
            l,
            Lead {
                name: Some("Mary Smith".into()),
                email: Some("mary@mail.com".into()),
                phone: Some("+16174923042".into()),
                email_heard: None,
            }
        );
    }

    #[test]
    fn an_address_that_sounds_like_the_callers_name_is_spelled_as_the_name() {
        let l = lead(&[
            "Hello, my name is Mary Smith.",
            "My email is mari had example dot com.",
        ]);
        assert_eq!(l.email.as_deref(), Some("mary@example.com"));
        assert_eq!(l.email_heard.as_deref(), Some("mari@example.com"));
        let s = |e: &str, n: &str| spelled_after_name(e, n);
        assert_eq!(s("jon.smyth@acme.io", "John Smith"), "john.smith@acme.io");
        assert_eq!(s("mary@example.com", "Mary Smith"), "mary@example.com");
        assert_eq!(s("mark@example.com", "Mary Smith"), "mark@example.com");
        assert_eq!(s("sales@example.com", "Mary Smith"), "sales@example.com");
        assert_eq!(s("mari42@example.com", "Mary"), "mari42@example.com");
        assert_eq!(s("m@x.io", ""), "m@x.io");
        // Without a name, or without a respelling, nothing is noted.
        let plain = lead(&["My email is mary at example dot com."]);
        assert_eq!(plain.email_heard, None);
    }

    #[test]
    fn any_input_is_bounded_and_never_panics() {
        let long = "my number is 1 ".repeat(10_000);
        assert_eq!(extract(&long).phone, None, "a 10,000-digit run is no phone");
        for s in [
            "",
            " ",
            "@",
            "at at at",
            "dot dot",
            "my name is",
            "+",
            "((((",
            "double",
            "ǅ my name is ǅǆ",
        ] {
            let _ = extract(s);
        }
        let many_names = "my name is Al ".repeat(5_000);
        assert!(extract(&many_names).name.is_some());
    }
}
