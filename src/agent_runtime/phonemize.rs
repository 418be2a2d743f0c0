//! Text → Piper phoneme ids, as the reference `piper-phonemize` does it:
//! IPA phonemes per clause from libespeak-ng (loaded with dlopen, so a
//! machine without it falls back to the espeak-ng program), clause
//! punctuation kept, decomposed to code points, then mapped through the
//! voice's `phoneme_id_map` with BOS `^`, EOS `$` and pad `_` after each id.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use unicode_normalization::UnicodeNormalization;

/// The shared library's soname (Debian `libespeak-ng1`).
const LIBRARY: &str = "libespeak-ng.so.1";
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const CHARS_UTF8: c_int = 1;
const PHONEMES_IPA: c_int = 0x02;
/// espeak-ng keeps at most this much of one call's text; longer input is
/// refused here rather than truncated silently.
const MAX_TEXT_BYTES: usize = 4000;

type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetVoiceFn = unsafe extern "C" fn(*const c_char) -> c_int;
type TextToPhonemesFn = unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char;

struct Espeak {
    // Keeps the library mapped for as long as the function pointers live.
    _lib: libloading::Library,
    set_voice: SetVoiceFn,
    text_to_phonemes: TextToPhonemesFn,
    voice: Option<String>,
}

/// libespeak-ng keeps global state (voice, translator, buffers) and is not
/// thread-safe: one instance per process, behind one lock.
static ESPEAK: OnceLock<Result<Mutex<Espeak>, String>> = OnceLock::new();

/// The espeak-ng data folder (the one holding `espeak-ng-data`); unset or
/// empty means the library's own (Debian: /usr/lib/x86_64-linux-gnu).
static DATA_DIR: OnceLock<Option<CString>> = OnceLock::new();

/// Chooses espeak-ng's data folder; only before the first phonemization,
/// and only once per process. Returns whether it took effect.
pub fn use_data_dir(dir: &std::path::Path) -> bool {
    if ESPEAK.get().is_some() {
        return false;
    }
    let dir = (!dir.as_os_str().is_empty())
        .then(|| CString::new(dir.display().to_string()).ok())
        .flatten();
    DATA_DIR.set(dir).is_ok()
}

fn espeak() -> Result<&'static Mutex<Espeak>, String> {
    ESPEAK
        .get_or_init(|| load().map(Mutex::new))
        .as_ref()
        .map_err(Clone::clone)
}

fn load() -> Result<Espeak, String> {
    // SAFETY: loading a C library with no initialisers that misbehave; the
    // symbols are looked up with the signatures of espeak-ng's speak_lib.h.
    unsafe {
        let lib = libloading::Library::new(LIBRARY).map_err(|e| format!("{LIBRARY}: {e}"))?;
        let initialize: InitializeFn = *lib
            .get::<InitializeFn>(b"espeak_Initialize\0")
            .map_err(|e| e.to_string())?;
        let set_voice: SetVoiceFn = *lib
            .get::<SetVoiceFn>(b"espeak_SetVoiceByName\0")
            .map_err(|e| e.to_string())?;
        let text_to_phonemes: TextToPhonemesFn = *lib
            .get::<TextToPhonemesFn>(b"espeak_TextToPhonemes\0")
            .map_err(|e| e.to_string())?;
        // DONT_EXIT: a missing data directory must be an error, not exit(1).
        let data = DATA_DIR
            .get()
            .and_then(Option::as_ref)
            .map_or(std::ptr::null(), |d| d.as_ptr());
        let rate = initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, INITIALIZE_DONT_EXIT);
        if rate <= 0 {
            return Err(format!("espeak_Initialize failed ({rate})"));
        }
        Ok(Espeak {
            _lib: lib,
            set_voice,
            text_to_phonemes,
            voice: None,
        })
    }
}

/// Whether libespeak-ng loads on this machine.
pub fn available() -> Result<(), String> {
    espeak().map(|_| ())
}

/// IPA phonemes of `text` for espeak voice `voice`, one list per sentence,
/// each phoneme one Unicode code point (NFD), punctuation kept.
pub fn phonemize(voice: &str, text: &str) -> Result<Vec<Vec<char>>, String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!("text longer than {MAX_TEXT_BYTES} bytes"));
    }
    let clauses = clauses(voice, text)?;
    let mut sentences = Vec::new();
    let mut current: Vec<char> = Vec::new();
    for (phonemes, terminator) in clauses {
        let mut s = strip_language_flags(&phonemes);
        if let Some(t) = terminator {
            s.push(t);
            if matches!(t, ',' | ':' | ';') {
                s.push(' ');
            }
        }
        current.extend(s.nfd());
        if matches!(terminator, Some('.' | '?' | '!')) {
            sentences.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        sentences.push(current);
    }
    sentences.retain(|s| !s.is_empty());
    Ok(sentences)
}

/// espeak-ng's phonemes of each clause of `text` and the punctuation that
/// ended it. Debian's library has no terminator-reporting call (piper's fork
/// adds one) and phonemizes a whole text in one call, so the text is cut
/// into clauses here with espeak-ng's own rule: clause punctuation followed
/// by a space or the end, a full stop before a lower-case word excepted.
fn clauses(voice: &str, text: &str) -> Result<Vec<(String, Option<char>)>, String> {
    let voice_c = CString::new(voice).map_err(|e| e.to_string())?;
    let mut espeak = espeak()?
        .lock()
        .map_err(|_| "espeak-ng lock poisoned".to_string())?;
    if espeak.voice.as_deref() != Some(voice) {
        // SAFETY: a NUL-terminated string; the lock serialises all calls.
        let rc = unsafe { (espeak.set_voice)(voice_c.as_ptr()) };
        if rc != 0 {
            return Err(format!("espeak-ng has no voice {voice:?} ({rc})"));
        }
        espeak.voice = Some(voice.to_string());
    }
    let mut out = Vec::new();
    for (clause, terminator) in split_clauses(text) {
        let mut phonemes = String::new();
        let text_c = CString::new(clause.replace('\0', " ")).map_err(|e| e.to_string())?;
        let base = text_c.as_ptr();
        let mut ptr: *const c_void = base.cast();
        // Every call consumes at least one byte, so this bounds the loop.
        for _ in 0..=text_c.as_bytes().len() {
            if ptr.is_null() {
                break;
            }
            // SAFETY: `ptr` points into `text_c`, which outlives the call;
            // the result is espeak-ng's static buffer, copied at once.
            unsafe {
                let p = (espeak.text_to_phonemes)(&mut ptr, CHARS_UTF8, PHONEMES_IPA);
                if !p.is_null() {
                    if !phonemes.is_empty() {
                        phonemes.push(' ');
                    }
                    phonemes.push_str(CStr::from_ptr(p).to_string_lossy().trim());
                }
            }
        }
        out.push((phonemes.trim().to_string(), terminator));
    }
    Ok(out)
}

/// `text` cut into clauses, each with its clause punctuation (removed from
/// the clause text; espeak-ng would only drop it).
fn split_clauses(text: &str) -> Vec<(String, Option<char>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let terminator = match c {
            '.' | '?' | '!' | ',' | ':' | ';' => Some(c),
            '…' => Some('.'),
            _ => None,
        };
        let Some(t) = terminator else {
            current.push(c);
            i += 1;
            continue;
        };
        // Closing quotes and brackets and repeated marks belong to the clause.
        let mut j = i + 1;
        while j < chars.len()
            && matches!(
                chars[j],
                '.' | '?' | '!' | '"' | '\'' | ')' | ']' | '”' | '’'
            )
        {
            j += 1;
        }
        let at_end = j >= chars.len();
        let spaced = at_end || chars[j].is_whitespace();
        let next_word_lower = chars[j..]
            .iter()
            .find(|c| !c.is_whitespace())
            .is_some_and(|c| c.is_lowercase());
        let ends = spaced && !(t == '.' && next_word_lower);
        if ends {
            out.push((std::mem::take(&mut current), Some(t)));
        } else {
            current.extend(&chars[i..j]);
        }
        i = j;
    }
    if !current.trim().is_empty() {
        out.push((current, None));
    }
    out.retain(|(c, _)| !c.trim().is_empty());
    out
}

/// Drops espeak-ng's language-switch flags such as "(fr)" around foreign words.
fn strip_language_flags(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut depth = 0usize;
    for c in phonemes.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A voice's phoneme → ids table (the `.json`'s `phoneme_id_map`).
pub type PhonemeIdMap = HashMap<String, Vec<i64>>;

/// Ids for one sentence: BOS, pad, then each known phoneme followed by pad,
/// then EOS. Phonemes missing from the map are skipped, as piper does.
pub fn phoneme_ids(phonemes: &[char], map: &PhonemeIdMap) -> Vec<i64> {
    let get = |s: &str| map.get(s).map(Vec::as_slice).unwrap_or(&[]);
    let pad = get("_");
    let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
    ids.extend_from_slice(get("^"));
    ids.extend_from_slice(pad);
    let mut key = [0u8; 4];
    for c in phonemes {
        if let Some(id) = map.get(&*c.encode_utf8(&mut key)) {
            ids.extend_from_slice(id);
            ids.extend_from_slice(pad);
        }
    }
    ids.extend_from_slice(get("$"));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_and_flags() {
        let c = split_clauses("Hello, we open at 9:30 a.m. on Monday. Bye");
        assert_eq!(
            c,
            [
                ("Hello".to_string(), Some(',')),
                (" we open at 9:30 a.m. on Monday".to_string(), Some('.')),
                (" Bye".to_string(), None)
            ]
        );
        assert_eq!(strip_language_flags("a(fr)bc(en)d"), "abcd");
    }

    #[test]
    fn ids_are_padded_and_framed() {
        let map: PhonemeIdMap = [("_", 0), ("^", 1), ("$", 2), ("a", 14), ("b", 15)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), vec![v]))
            .collect();
        assert_eq!(phoneme_ids(&['a', 'x', 'b'], &map), [1, 0, 14, 0, 15, 0, 2]);
    }
}
