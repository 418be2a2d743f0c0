//! Words for full-text matching: lower-cased, split on anything that is not
//! a letter or digit, compounds the recognizer spells apart joined ("check
//! up", "check-up" → "checkup"), number words as digits, stop words dropped,
//! Snowball-stemmed. Questions and chunks go through the same function.

use std::collections::HashSet;
use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};

/// Most words of a question that are looked at (a question, not a document).
pub const MAX_QUERY_WORDS: usize = 48;
const MAX_WORD_LEN: usize = 40;

/// Compounds written as one word, two words or with a hyphen; every form
/// becomes the joined one.
const COMPOUNDS: &[(&str, &str)] = &[
    ("check", "up"),
    ("e", "mail"),
    ("day", "care"),
    ("web", "site"),
    ("on", "line"),
    ("walk", "in"),
    ("drop", "off"),
    ("pick", "up"),
    ("health", "care"),
    ("week", "end"),
    ("x", "ray"),
    ("tooth", "brush"),
    ("after", "care"),
    ("home", "work"),
    ("set", "up"),
    ("log", "in"),
    ("sign", "up"),
    ("wheel", "chair"),
    ("book", "keeping"),
    ("over", "night"),
    ("birth", "day"),
    ("micro", "chip"),
    ("de", "worming"),
    ("de", "sexing"),
    ("re", "schedule"),
    ("pre", "paid"),
    ("post", "code"),
    ("zip", "code"),
];

/// Words callers use for what a knowledge base names otherwise, mapped to
/// one word before stemming.
const SYNONYMS: &[(&str, &str)] = &[
    ("address", "location"),
    ("located", "location"),
    ("locate", "location"),
];

const UNITS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: &[&str] = &[
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// English stop words (close to PostgreSQL's list): they say nothing of
/// the topic of a question.
const STOP_WORDS: &str =
    "a an the is are was were be been being am do does did doing have has had \
    having i me my myself we us our ours you your yours he him his she her hers it its they them \
    their what which who whom whose this that these those there here of on in at to for from by \
    with about against between into through during before after above below up down out off over \
    under again further then once and or but if because as until while so than too very can could \
    will would shall should may might must just don t s ll re ve d m o y any some all both each \
    few more most other such no nor not only own same how when where why";

/// Conversational words that say little about the topic of a spoken
/// question ("can I *come* in a wheelchair", "what *time* do you open");
/// they weigh [`GENERIC_WEIGHT`] of a topic word.
const GENERIC_WORDS: &str =
    "time get go need want make take see know like tell let help please thing \
    come call ask say look find way day today tomorrow yesterday question guy right okay ok well \
    really also much many lot something anything someone anyone somewhere anywhere use try give \
    think sure good great hello hi thanks thank wonder maybe kind able possible usual normal \
    regular standard typical";
pub const GENERIC_WEIGHT: f32 = 0.3;

struct Tables {
    stop: HashSet<&'static str>,
    generic: HashSet<String>,
    stemmer: Stemmer,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let stemmer = Stemmer::create(Algorithm::English);
        let generic = GENERIC_WORDS
            .split_whitespace()
            .map(|w| stemmer.stem(w).into_owned())
            .collect();
        Tables {
            stop: STOP_WORDS.split_whitespace().collect(),
            generic,
            stemmer,
        }
    })
}

/// Lower-cased words split on non-alphanumerics, compounds joined and
/// number words turned into digits; nothing else changed.
pub fn words(text: &str, max: usize) -> Vec<String> {
    let raw: Vec<String> = text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() <= MAX_WORD_LEN)
        .take(max)
        .map(str::to_string)
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let w = raw[i].as_str();
        let next = raw.get(i + 1).map(String::as_str);
        if let Some(n) = next {
            if COMPOUNDS.iter().any(|(a, b)| *a == w && *b == n) {
                out.push(format!("{w}{n}"));
                i += 2;
                continue;
            }
        }
        if let Some(t) = TENS.iter().position(|t| !t.is_empty() && *t == w) {
            // "twenty four" → 24, "twenty" → 20.
            match next.and_then(|n| UNITS[1..10].iter().position(|u| *u == n)) {
                Some(u) => {
                    out.push((t * 10 + u + 1).to_string());
                    i += 2;
                }
                None => {
                    out.push((t * 10).to_string());
                    i += 1;
                }
            }
            continue;
        }
        match UNITS.iter().position(|u| *u == w) {
            // "one" is as often a pronoun as a number.
            Some(n) if w != "one" => out.push(n.to_string()),
            _ => match SYNONYMS.iter().find(|(from, _)| *from == w) {
                Some((_, to)) => out.push(to.to_string()),
                None => out.push(w.to_string()),
            },
        }
        i += 1;
    }
    out
}

/// Whether a single word says something of a topic: not a stop word nor
/// a conversational one ("need", "time").
pub fn is_topic_word(word: &str) -> bool {
    let t = tables();
    let lower = word.to_lowercase();
    !t.stop.contains(lower.as_str()) && !t.generic.contains(t.stemmer.stem(&lower).as_ref())
}

/// A matching term of a text, with its weight in a question (1 for topic
/// words, [`GENERIC_WEIGHT`] for conversational ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub stem: String,
    pub weight: f32,
}

/// The terms of `text` for full-text matching: [`words`] minus stop words,
/// stemmed. Order is kept and repeats stay (term frequency counts them).
pub fn terms(text: &str, max_words: usize) -> Vec<Term> {
    let t = tables();
    words(text, max_words)
        .into_iter()
        .filter(|w| !t.stop.contains(w.as_str()))
        .map(|w| {
            let stem = t.stemmer.stem(&w).into_owned();
            let weight = if t.generic.contains(&stem) {
                GENERIC_WEIGHT
            } else {
                1.0
            };
            Term { stem, weight }
        })
        .collect()
}

/// The words (stems) a knowledge base uses, for matching a question's
/// compounds against it.
pub trait Vocabulary {
    fn contains(&self, stem: &str) -> bool;
    /// A known stem that ends with `stem` ("chip" → "microchip"), if any.
    fn ending_with(&self, stem: &str) -> Option<String>;
}

/// Shortest stem of a compound the vocabulary may end with ("chip" in
/// "microchip"); shorter ones end too many words by chance.
const MIN_COMPOUND_TAIL: usize = 4;

/// The terms of a caller's question, with adjacent words joined where the
/// joined word is one the knowledge uses ("drop in" finds "dropin", "care
/// taker" finds "caretaker", with no table needed), and a word the
/// knowledge does not use matched to a known compound ending with it ("can
/// you chip my kitten" finds "microchip").
pub fn query_terms(text: &str, vocabulary: &dyn Vocabulary) -> Vec<Term> {
    let t = tables();
    let known = |s: &str| vocabulary.contains(s);
    let ws = words(text, MAX_QUERY_WORDS);
    let mut joined: Vec<String> = Vec::with_capacity(ws.len());
    let mut i = 0;
    while i < ws.len() {
        if let Some(n) = ws.get(i + 1) {
            let cat = format!("{}{}", ws[i], n);
            if known(&t.stemmer.stem(&cat)) {
                joined.push(cat);
                i += 2;
                continue;
            }
        }
        joined.push(ws[i].clone());
        i += 1;
    }
    let mut out = terms(&joined.join(" "), MAX_QUERY_WORDS);
    for term in out.iter_mut() {
        if term.stem.len() >= MIN_COMPOUND_TAIL && !vocabulary.contains(&term.stem) {
            if let Some(compound) = vocabulary.ending_with(&term.stem) {
                term.stem = compound;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stems(text: &str) -> Vec<String> {
        terms(text, 100).into_iter().map(|t| t.stem).collect()
    }

    #[test]
    fn compounds_join_in_every_spelling() {
        for s in ["check up", "check-up", "checkup", "Check Up"] {
            assert_eq!(stems(s), vec!["checkup"], "{s}");
        }
        for s in ["e-mail", "e mail", "email", "E-Mail"] {
            assert_eq!(stems(s), vec!["email"], "{s}");
        }
        for s in ["day care", "day-care", "daycare"] {
            assert_eq!(stems(s), vec!["daycar"], "{s}");
        }
        assert_eq!(
            stems("What do you charge for a normal check up?"),
            stems("charges normal checkup")
        );
    }

    #[test]
    fn number_words_become_digits() {
        assert_eq!(words("twenty four hours", 10), vec!["24", "hours"]);
        assert_eq!(words("open at nine", 10), vec!["open", "at", "9"]);
        assert_eq!(words("thirty", 10), vec!["30"]);
        assert_eq!(
            words("the one on Maple", 10),
            vec!["the", "one", "on", "maple"]
        );
    }

    #[test]
    fn stop_words_go_and_stems_meet() {
        assert_eq!(stems("What are your opening hours?"), vec!["open", "hour"]);
        assert_eq!(stems("When do you open"), vec!["open"]);
        assert_eq!(stems("microchips"), stems("microchip"));
        assert_eq!(stems("micro chip"), stems("microchip"));
        let t = terms("Can I get a normal cleaning", 100);
        let normal = t.iter().find(|t| t.stem == "normal").expect("normal kept");
        assert_eq!(normal.weight, GENERIC_WEIGHT);
        assert_eq!(t.iter().find(|t| t.stem == "clean").unwrap().weight, 1.0);
    }

    struct Known(&'static [&'static str]);
    impl Vocabulary for Known {
        fn contains(&self, stem: &str) -> bool {
            self.0.contains(&stem)
        }
        fn ending_with(&self, stem: &str) -> Option<String> {
            self.0
                .iter()
                .find(|k| k.len() > stem.len() && k.ends_with(stem))
                .map(|k| k.to_string())
        }
    }

    fn query(text: &str, known: &'static [&'static str]) -> Vec<String> {
        query_terms(text, &Known(known))
            .into_iter()
            .map(|t| t.stem)
            .collect()
    }

    #[test]
    fn query_words_meet_the_compounds_the_knowledge_uses() {
        let q = query("Can I drop in today?", &["dropin"]);
        assert!(q.contains(&"dropin".to_string()), "{q:?}");
        let q = query("Can I drop in today?", &[]);
        assert!(q.contains(&"drop".to_string()), "{q:?}");
        assert_eq!(
            query("Can you chip my kitten?", &["microchip", "kitten"]),
            vec!["microchip", "kitten"]
        );
        // A known word is kept, a short one is not stretched.
        assert_eq!(query("chip", &["chip", "microchip"]), vec!["chip"]);
        assert_eq!(query("pet", &["carpet"]), vec!["pet"]);
        assert_eq!(query("What's your address?", &[]), vec!["locat"]);
        assert_eq!(
            stems("Where is the clinic located?"),
            vec!["clinic", "locat"]
        );
    }

    #[test]
    fn bounded_and_safe() {
        assert_eq!(
            words(&"a ".repeat(500), MAX_QUERY_WORDS).len(),
            MAX_QUERY_WORDS
        );
        assert!(words(&"z".repeat(100), 10).is_empty());
        assert_eq!(words("' | & ! (9:30)", 10), vec!["9", "30"]);
    }
}
