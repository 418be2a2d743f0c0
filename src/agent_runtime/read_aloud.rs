//! How a voice reads what the agent wrote: prices as they are said ("$65"
//! is "65 dollars": the voice said "dollar sixty-five", which the caller's
//! recognizer wrote "$1.65"), house numbers in pairs ("214 Canal Street" is
//! "two fourteen"), hyphenated words as words ("tune-up" was "tuno"), and
//! telephone numbers digit by digit, in their groups. A speech engine
//! reads digits as quantities, so "call 555 0180" became "five hundred fifty-five, zero one eight zero" and
//! "617-492-3041" "six hundred seventeen dash four hundred ninety-two dash
//! three thousand forty-one": no caller can write that down. The written
//! text (messages, records) is left as it was; only what is spoken changes.
//! Pure text in, text out.

use std::borrow::Cow;

/// Digits in a telephone number: a local number has 7, E.164 at most 15.
const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 15;
/// One unbroken run of digits reads as a telephone number from this many
/// (a US number written without separators); shorter runs are quantities.
const MIN_UNBROKEN_DIGITS: usize = 10;

/// `text` as the voice should read it: prices, house numbers, telephone
/// numbers and hyphenated words (each pass below), in that order; `text`
/// itself when no pass changes anything.
pub fn read_aloud(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for pass in [prices, house_numbers, telephone_numbers, hyphens] {
        let changed = match pass(&out) {
            Cow::Owned(t) => Some(t),
            Cow::Borrowed(_) => None,
        };
        if let Some(t) = changed {
            out = Cow::Owned(t);
        }
    }
    out
}

/// Words that end a street address ("214 Canal Street", "1520 N Main St.").
const STREET_WORDS: &[&str] = &[
    "street",
    "st",
    "avenue",
    "ave",
    "road",
    "rd",
    "lane",
    "ln",
    "drive",
    "dr",
    "boulevard",
    "blvd",
    "way",
    "place",
    "pl",
    "court",
    "ct",
    "parkway",
    "pkwy",
    "highway",
    "hwy",
    "square",
    "sq",
    "terrace",
    "circle",
    "plaza",
    "pike",
    "trail",
    "row",
    "crescent",
    "close",
    "walk",
];

/// House numbers as said: "214 Canal Street" is "2 14 Canal Street" (two
/// fourteen; the voice said "two hundred fourteen", which the caller's
/// recognizer wrote "200 fording"), "1520 Main St" "15 20", "105" "1 oh
/// 5", "1005" "10 oh 5"; round hundreds stay ("300 Main Street"). A house
/// number is three or four digits followed by up to three capitalised
/// words and a street word.
fn house_numbers(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut copied = 0;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && is_word_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let said = (b.get(end) == Some(&b' ') && street_follows(&text[end..]))
            .then(|| house_number_said(&text[i..end]))
            .flatten();
        if let Some(said) = said {
            out.push_str(&text[copied..i]);
            out.push_str(&said);
            copied = end;
        }
        i = end;
    }
    rewritten(text, out, copied)
}

/// Whether `rest` (after a number) is a street's name: up to three
/// capitalised words or ordinals ("5th"), then a street word.
fn street_follows(rest: &str) -> bool {
    for (n, word) in rest.split_whitespace().take(4).enumerate() {
        let bare = word.trim_end_matches(['.', ',', ';', ':', '!', '?', ')']);
        if n > 0 && STREET_WORDS.contains(&bare.to_ascii_lowercase().as_str()) {
            return true;
        }
        let capitalised = bare.chars().next().is_some_and(char::is_uppercase);
        let ordinal = bare.chars().next().is_some_and(|c| c.is_ascii_digit())
            && ["st", "nd", "rd", "th"].iter().any(|s| bare.ends_with(s));
        if !(capitalised || ordinal) || bare.len() != word.len() {
            return false;
        }
    }
    false
}

/// "214" → "2 14", "105" → "1 oh 5", "1520" → "15 20", "1005" → "10 oh
/// 5", "1900" → "19 hundred"; `None` for other lengths and round hundreds
/// of three digits or thousands, which the voice says well.
fn house_number_said(digits: &str) -> Option<String> {
    let (head, tail) = match digits.len() {
        3 => digits.split_at(1),
        4 => digits.split_at(2),
        _ => return None,
    };
    match tail.as_bytes() {
        _ if head.starts_with('0') => None,
        b"00" if digits.len() == 3 || head.ends_with('0') => None,
        b"00" => Some(format!("{head} hundred")),
        [b'0', d] => Some(format!("{head} oh {}", *d as char)),
        _ => Some(format!("{head} {tail}")),
    }
}

/// A hyphen between a letter and a letter or digit is a pause: the voice
/// ran "tune-up" into "tuno" and "trade-ins" into one word; "90-minute"
/// is "90 minute". Hyphens between digits (telephone numbers, ranges) stay.
fn hyphens(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let joins = |i: usize| {
        b[i] == b'-'
            && i > 0
            && i + 1 < b.len()
            && b[i - 1].is_ascii_alphanumeric()
            && b[i + 1].is_ascii_alphanumeric()
            && (b[i - 1].is_ascii_alphabetic() || b[i + 1].is_ascii_alphabetic())
    };
    if !(0..b.len()).any(joins) {
        return Cow::Borrowed(text);
    }
    let mut out = text.as_bytes().to_vec();
    for (i, c) in out.iter_mut().enumerate() {
        if joins(i) {
            *c = b' ';
        }
    }
    // Only ASCII '-' was replaced by ASCII ' ': still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| text.to_string()))
}

/// Dollar amounts as said: "$65" → "65 dollars", "$1,800" → "1,800
/// dollars", "$1" → "1 dollar", "$15.50" → "15 dollars 50"; a "$" not
/// followed by a digit stays.
fn prices(text: &str) -> Cow<'_, str> {
    if !text.contains('$') {
        return Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' || !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            continue;
        }
        // The whole part: digits, with commas between groups of three.
        let mut j = i + 1;
        while j < b.len()
            && (b[j].is_ascii_digit()
                || (b[j] == b',' && b.get(j + 1).is_some_and(u8::is_ascii_digit)))
        {
            j += 1;
        }
        let whole = &text[i + 1..j];
        // Digits after a dot: two are cents; any other count is no price
        // ("$2.5 million" is left as written).
        let decimals = match b.get(j) {
            Some(b'.') => b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count(),
            _ => 0,
        };
        let cents = match decimals {
            0 => None,
            2 => Some(&text[j + 1..j + 3]),
            _ => {
                i = j;
                continue;
            }
        };
        let end = j + if cents.is_some() { 3 } else { 0 };
        out.push_str(&text[copied..i]);
        out.push_str(whole);
        out.push_str(if whole == "1" { " dollar" } else { " dollars" });
        if let Some(c) = cents.filter(|c| *c != "00") {
            out.push(' ');
            out.push_str(c);
        }
        copied = end;
        i = end;
    }
    rewritten(text, out, copied)
}

/// `text` with every telephone number spelled as digits: "555 0180" is "5
/// 5 5, 0 1 8 0", "+44 20 7946 0123" is "plus 4 4, 2 0, 7 9 4 6, 0 1 2 3".
/// A number is digit groups joined by one space, hyphen, dot or
/// parenthesis: groups of three or four digits (a leading "1" or, after
/// "+", a country code and groups of two too), seven to fifteen digits in
/// all; or one unbroken run of ten to fifteen digits. Prices, times,
/// years, counts ("12 cars", "10,000 miles") and decimals are not numbers
/// of this kind and stay as written.
fn telephone_numbers(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts_number = (bytes[i].is_ascii_digit() || matches!(bytes[i], b'+' | b'('))
            && (i == 0 || !is_word_byte(bytes[i - 1]));
        if starts_number {
            if let Some((end, spoken)) = number_at(text, i) {
                out.push_str(&text[copied..i]);
                out.push_str(&spoken);
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    rewritten(text, out, copied)
}

/// A pass's result: `out` (the text up to byte `copied`, spans replaced)
/// with the rest of `text`, or `text` itself when nothing was replaced.
fn rewritten(text: &str, mut out: String, copied: usize) -> Cow<'_, str> {
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'$' | b'.' | b',' | b':' | b'/' | b'-' | b'+')
}

/// The telephone number starting at byte `start`, if one does: where it
/// ends and how it is read.
fn number_at(text: &str, start: usize) -> Option<(usize, String)> {
    let b = text.as_bytes();
    let mut i = start;
    let plus = b[i] == b'+';
    if plus {
        i += 1;
    }
    let mut groups: Vec<&str> = Vec::new();
    let mut end = i;
    loop {
        // An opening parenthesis may come before a group: "(617) 492".
        let mut j = i;
        if j < b.len() && b[j] == b'(' {
            j += 1;
        }
        let digits_from = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == digits_from {
            break;
        }
        groups.push(&text[digits_from..j]);
        if groups.iter().map(|g| g.len()).sum::<usize>() > MAX_DIGITS {
            return None;
        }
        if j < b.len() && b[j] == b')' {
            j += 1;
        }
        end = j;
        // One separator, then another group; anything else ends the number.
        let mut k = j;
        if k < b.len() && matches!(b[k], b' ' | b'-' | b'.') {
            k += 1;
            if k < b.len() && b[k] == b' ' && b[j] != b' ' {
                k += 1; // "617 - 492"
            }
        }
        let next_is_group = k > j
            && k < b.len()
            && (b[k].is_ascii_digit()
                || (b[k] == b'(' && b.get(k + 1).is_some_and(u8::is_ascii_digit)));
        if !next_is_group {
            break;
        }
        i = k;
    }
    // The number must not run on into a word or a decimal ("3041st", "4.5").
    if end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'%') {
        return None;
    }
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let total: usize = groups.iter().map(|g| g.len()).sum();
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&total) {
        return None;
    }
    let shaped = if groups.len() == 1 {
        total >= MIN_UNBROKEN_DIGITS
    } else {
        groups.iter().enumerate().all(|(n, g)| {
            let lead = n == 0 && (plus && g.len() <= 3 || *g == "1");
            lead || (3..=4).contains(&g.len()) || (plus && g.len() == 2)
        })
    };
    if !shaped {
        return None;
    }
    let mut spoken = String::new();
    if plus {
        spoken.push_str("plus ");
    }
    for (n, g) in groups.iter().enumerate() {
        if n > 0 {
            spoken.push_str(", ");
        }
        for (k, d) in g.chars().enumerate() {
            if k > 0 {
                spoken.push(' ');
            }
            spoken.push(d);
        }
    }
    Some((end, spoken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telephone_numbers_are_read_digit_by_digit_in_their_groups() {
        let r = |t: &str| read_aloud(t).into_owned();
        assert_eq!(
            r("Call the Valley Pet Emergency Hospital on 555 0180, which is open 24 hours."),
            "Call the Valley Pet Emergency Hospital on 5 5 5, 0 1 8 0, which is open 24 hours."
        );
        assert_eq!(r("Call 617-492-3041."), "Call 6 1 7, 4 9 2, 3 0 4 1.");
        assert_eq!(
            r("Call (617) 492-3041 today"),
            "Call 6 1 7, 4 9 2, 3 0 4 1 today"
        );
        assert_eq!(r("or 617.492.3041"), "or 6 1 7, 4 9 2, 3 0 4 1");
        assert_eq!(r("It's 6174923041."), "It's 6 1 7 4 9 2 3 0 4 1.");
        assert_eq!(r("dial 1 800 555 0199"), "dial 1, 8 0 0, 5 5 5, 0 1 9 9");
        assert_eq!(
            r("From abroad: +44 20 7946 0123."),
            "From abroad: plus 4 4, 2 0, 7 9 4 6, 0 1 2 3."
        );
        assert_eq!(r("+16174923041"), "plus 1 6 1 7 4 9 2 3 0 4 1");
    }

    #[test]
    fn quantities_times_and_dates_stay_as_written() {
        for t in [
            "We have free parking for 12 cars out front, with 2 spaces by the door.",
            "A 12 month or 12,000 mile warranty.",
            "The full course is 110 dollars, or 1,250 dollars for 5.",
            "Open from 5:30 am to 10 pm, since 2019.",
            "Drop off at 8 am and 2 4 weeks later, open 9-5.",
            "We are at 300 Main Street, 2000 Oak Avenue, 12 Elm Street.",
            "Room 214 is upstairs and 1520 people came to the Street Fair.",
            "It weighs 1.5 kg; 250 300 people came.",
            "Order 1234567 arrived",
            "Room 101 and 1000000 visitors",
            "Version 3.14.159",
            "No digits at all.",
            "",
        ] {
            assert_eq!(read_aloud(t), t, "{t:?}");
        }
        assert!(matches!(read_aloud("no digits"), Cow::Borrowed(_)));
    }

    #[test]
    fn prices_are_read_as_said() {
        assert_eq!(
            read_aloud("Our Basic Tune-Up costs $65 and a tube is $8."),
            "Our Basic Tune Up costs 65 dollars and a tube is 8 dollars."
        );
        assert_eq!(read_aloud("from $1,800"), "from 1,800 dollars");
        assert_eq!(read_aloud("just $1 a day"), "just 1 dollar a day");
        assert_eq!(
            read_aloud("$15.50 each, $20.00 flat"),
            "15 dollars 50 each, 20 dollars flat"
        );
        // A "$" without an amount, and a decimal that is not cents.
        assert_eq!(read_aloud("Pay in $ or cash"), "Pay in $ or cash");
        assert_eq!(read_aloud("$2.5 million"), "$2.5 million");
        // Prices and a telephone number in one sentence.
        assert_eq!(
            read_aloud("It is $85, call 555 0180."),
            "It is 85 dollars, call 5 5 5, 0 1 8 0."
        );
        assert!(matches!(read_aloud("no price here"), Cow::Borrowed(_)));
    }

    #[test]
    fn house_numbers_are_read_in_pairs() {
        for (written, said) in [
            (
                "We're at 214 Canal Street in Millbrook.",
                "We're at 2 14 Canal Street in Millbrook.",
            ),
            (
                "1520 North Main St. Suite 4",
                "15 20 North Main St. Suite 4",
            ),
            ("at 105 5th Avenue", "at 1 oh 5 5th Avenue"),
            ("1005 Harbor Blvd", "10 oh 5 Harbor Blvd"),
            ("1900 Oak Road", "19 hundred Oak Road"),
            // A house number and a telephone number in one sentence.
            (
                "Visit 214 Canal Street or call 555 0180.",
                "Visit 2 14 Canal Street or call 5 5 5, 0 1 8 0.",
            ),
        ] {
            assert_eq!(read_aloud(written), said, "{written:?}");
        }
    }

    #[test]
    fn hyphenated_words_are_read_as_words() {
        for (written, said) in [
            (
                "We accept trade-ins and do a 90-minute fit in-store.",
                "We accept trade ins and do a 90 minute fit in store.",
            ),
            ("a 24-hour line, e-bikes", "a 24 hour line, e bikes"),
            // Between digits, and at a word's edge, a hyphen stays.
            ("open 9-5 - ask us -", "open 9-5 - ask us -"),
            ("call 617-492-3041", "call 6 1 7, 4 9 2, 3 0 4 1"),
        ] {
            assert_eq!(read_aloud(written), said, "{written:?}");
        }
    }

    #[test]
    fn any_text_is_read_without_panicking() {
        for t in [
            "+",
            "(",
            "((((1",
            "+(617) 492-",
            "9".repeat(100).as_str(),
            "555 0180)",
            "é 555 0180 é",
            "555-0180-",
            "1-1-1-1-1-1-1-1",
            "(555) (0180)",
            "214 ",
            "214 Canal",
            "0214 Canal Street",
            "-a-",
            "é-é 214 Éa Street",
        ] {
            let _ = read_aloud(t);
        }
        assert_eq!(read_aloud(&"9".repeat(100)), "9".repeat(100));
    }
}
