//! Phone numbers as `E164` values (`+` and 1–15 digits): normalised from
//! whatever a trunk writes in a `sip:`/`tel:` user part — with or without
//! `+`, `00`/`011` international prefixes, visual separators, `%2B`, and
//! national forms interpreted with the trunk's country code.

use super::message::uri_user;

pub use crate::domain::E164;

/// How a trunk writes national numbers: its country calling code and the
/// national significant number length (NANP: "1" and 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberingPlan {
    pub country_code: String,
    pub national_length: usize,
}

impl Default for NumberingPlan {
    fn default() -> Self {
        NumberingPlan {
            country_code: "1".into(),
            national_length: 10,
        }
    }
}

/// Normalises a dialed or calling number (the raw user part) to E.164.
pub fn normalise(raw: &str, plan: &NumberingPlan) -> Option<E164> {
    let raw = raw.split(';').next().unwrap_or("").trim();
    let raw = raw.replace("%2B", "+").replace("%2b", "+");
    if raw.len() > 64 {
        return None;
    }
    let plus = raw.starts_with('+');
    let mut digits = String::with_capacity(16);
    for c in raw.chars().skip(usize::from(plus)) {
        match c {
            '0'..='9' => digits.push(c),
            // RFC 3966 visual separators.
            '-' | '.' | ' ' | '(' | ')' => {}
            _ => return None,
        }
    }
    if digits.is_empty() {
        return None;
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits
        .strip_prefix("011")
        .filter(|_| plan.country_code == "1")
    {
        rest.to_string()
    } else if digits.len() == plan.national_length && !digits.starts_with('0') {
        format!("{}{digits}", plan.country_code)
    } else if let Some(rest) = digits
        .strip_prefix('0')
        .filter(|r| r.len() == plan.national_length)
    {
        // Trunk prefix "0" + national number (most of the world).
        format!("{}{rest}", plan.country_code)
    } else {
        // Twilio/Telnyx style "15555550100": already international.
        digits
    };
    E164::parse(&format!("+{international}")).ok()
}

/// The number from a URI (`sip:`, `sips:`, `tel:`), E.164 when possible.
pub fn from_uri(uri: &str, plan: &NumberingPlan) -> Option<E164> {
    normalise(&uri_user(uri)?, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_trunks_send_all_normalise_to_one_e164() {
        let nanp = NumberingPlan::default();
        for raw in [
            "+15555550100",
            "15555550100",
            "5555550100",
            "+1 (555) 555-0100",
            "1.555.555.0100",
            "%2B15555550100",
            "0015555550100",
            "01115555550100",
            "+15555550100;npdi",
        ] {
            assert_eq!(
                normalise(raw, &nanp).map(E164::into_string),
                Some("+15555550100".into()),
                "{raw}"
            );
        }
        let uk = NumberingPlan {
            country_code: "44".into(),
            national_length: 10,
        };
        assert_eq!(
            normalise("02079460000", &uk).unwrap().as_str(),
            "+442079460000"
        );
        assert_eq!(
            from_uri("tel:+1-555-555-0100", &nanp).unwrap().as_str(),
            "+15555550100"
        );
        assert_eq!(
            from_uri("sip:5555550100@trunk;user=phone", &nanp)
                .unwrap()
                .as_str(),
            "+15555550100"
        );
    }

    #[test]
    fn non_numbers_are_refused() {
        let nanp = NumberingPlan::default();
        for raw in [
            "",
            "alice",
            "+",
            "+0123456789",
            "12",
            "+1234567890123456",
            "555*1",
            "sipp",
        ] {
            assert_eq!(normalise(raw, &nanp), None, "{raw}");
        }
        assert!(E164::parse("15555550100").is_err());
    }
}
