//! How close two spellings are: the edit distance of one sequence against
//! every prefix of another (words of two transcripts, letters of two
//! words), and the sound key of a word.

/// The Levenshtein distance of `a` against each prefix of `b`: element `k`
/// is the distance between `a` and `b[..k]`, so the last element is the
/// distance between `a` and `b`.
pub fn distances_to_prefixes<T: PartialEq>(a: &[T], b: &[T]) -> Vec<usize> {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diag + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row
}

/// The Levenshtein distance between two words, letter by letter.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    distances_to_prefixes(&a, &b)[b.len()]
}

/// American Soundex of an ASCII word ("mary" and "mari" are both M600);
/// empty for an empty word.
pub fn soundex(word: &str) -> String {
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => Some('1'),
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => Some('2'),
        'd' | 't' => Some('3'),
        'l' => Some('4'),
        'm' | 'n' => Some('5'),
        'r' => Some('6'),
        _ => None,
    };
    let mut chars = word.chars().map(|c| c.to_ascii_lowercase());
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut key = first.to_ascii_uppercase().to_string();
    let mut last = code(first);
    for c in chars {
        let this = code(c);
        if let Some(d) = this {
            if this != last {
                key.push(d);
            }
        }
        // 'h' and 'w' do not separate equal codes; vowels do.
        if c != 'h' && c != 'w' {
            last = this;
        }
        if key.len() == 4 {
            break;
        }
    }
    while key.len() < 4 {
        key.push('0');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_sound_keys() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("mary", "mary"), 0);
        assert_eq!(
            distances_to_prefixes(&["a", "b"], &["a", "x", "b"]),
            vec![2, 1, 1, 1]
        );
        assert_eq!(soundex("mary"), "M600");
        assert_eq!(soundex("mari"), "M600");
        assert_eq!(soundex("Ashcraft"), "A261");
        assert_eq!(soundex("Tymczak"), "T522");
        assert_eq!(soundex("Pfister"), "P236");
        assert_eq!(soundex(""), "");
    }
}
