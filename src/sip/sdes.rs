//! SDES (RFC 4568): SRTP keys carried in SDP `a=crypto` lines. Only
//! AES_CM_128_HMAC_SHA1_80 with one inline key, no MKI and no session
//! parameters is usable here; any other line is skipped (the offer may
//! list a usable one further down), so an offer with none is refused 488.
//! Key material is parsed into [`SrtpKey`], whose `Debug` prints `***`.

use base64::Engine as _;

use crate::media::srtp::{SrtpKey, SUITE};

/// The most `a=crypto` lines kept per media line.
pub const MAX_CRYPTO_LINES: usize = 8;

/// One usable crypto attribute: its tag (echoed in the answer) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub key: SrtpKey,
}

/// Parses the value of an `a=crypto:` attribute; `None` when it is not
/// one this node can honour.
/// `1 AES_CM_128_HMAC_SHA1_80 inline:<base64 30 bytes>[|2^31][|1:1]`
pub fn parse_crypto(value: &str) -> Option<Crypto> {
    let mut parts = value.split_whitespace();
    let tag: u32 = parts.next()?.parse().ok().filter(|t| *t < 1_000_000_000)?;
    if !parts.next()?.eq_ignore_ascii_case(SUITE) {
        return None;
    }
    let key_params = parts.next()?;
    // Session parameters (UNENCRYPTED_SRTP, KDR=…) change the protection;
    // none is supported, so the line is not usable.
    if parts.next().is_some() {
        return None;
    }
    // One key: several `;`-separated key-params would need MKIs.
    if key_params.contains(';') {
        return None;
    }
    let inline = key_params.strip_prefix("inline:")?;
    let mut fields = inline.split('|');
    let material = fields.next()?;
    for f in fields {
        // A lifetime (`2^31` or a number) is fine; an MKI (`1:4`) is not.
        if f.contains(':') {
            return None;
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(material)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(material))
        .ok()?;
    let key = SrtpKey::from_material(&bytes)?;
    Some(Crypto { tag, key })
}

/// Our `a=crypto` attribute value for `key` under `tag`.
pub fn crypto_attribute(tag: u32, key: &SrtpKey) -> String {
    let material = base64::engine::general_purpose::STANDARD.encode(key.material());
    format!("{tag} {SUITE} inline:{material}")
}

/// A trunk's media encryption (`sip_trunks.srtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// SRTP offers are refused.
    Off,
    /// RTP/SAVP when a TLS caller offers it, plain RTP otherwise.
    #[default]
    Optional,
    /// Every call on the trunk is SRTP over TLS.
    Required,
}

impl SrtpPolicy {
    pub fn from_name(name: &str) -> SrtpPolicy {
        match name {
            "off" => SrtpPolicy::Off,
            "required" => SrtpPolicy::Required,
            _ => SrtpPolicy::Optional,
        }
    }

    /// May a call whose offer is (or is not) SRTP go ahead, with its
    /// signalling on an encrypted transport (TLS, WSS) or not? The refusal
    /// is the 488's Warning text. SDES keys over plain UDP or TCP are in
    /// the clear for anyone on the path, so they are refused everywhere.
    pub fn check(self, srtp_offered: bool, secure_signalling: bool) -> Result<(), &'static str> {
        match (self, srtp_offered) {
            (_, true) if !secure_signalling => Err("SDES keys need SIP over TLS"),
            (SrtpPolicy::Off, true) => Err("SRTP is off on this trunk"),
            (SrtpPolicy::Required, false) => Err("this trunk requires SRTP (RTP/SAVP over TLS)"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_lines_parse_and_round_trip() {
        let key = SrtpKey::random();
        let line = crypto_attribute(3, &key);
        assert_eq!(
            parse_crypto(&line),
            Some(Crypto {
                tag: 3,
                key: key.clone()
            })
        );
        assert_eq!(
            parse_crypto(&format!("{line}|2^31")).map(|c| c.tag),
            Some(3),
            "a lifetime is fine"
        );
        // baresip's line shape.
        let b = "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        assert_eq!(parse_crypto(b).map(|c| c.tag), Some(1));
    }

    #[test]
    fn trunk_policy_decides_who_may_use_srtp() {
        use SrtpPolicy::*;
        assert!(Optional.check(true, true).is_ok());
        assert!(Optional.check(false, false).is_ok());
        assert!(Optional.check(true, false).is_err(), "keys in the clear");
        assert!(Off.check(true, true).is_err());
        assert!(Off.check(false, true).is_ok());
        assert!(Required.check(false, true).is_err());
        assert!(Required.check(true, true).is_ok());
        assert_eq!(SrtpPolicy::from_name("required"), Required);
        assert_eq!(SrtpPolicy::from_name("anything"), Optional);
    }

    #[test]
    fn unusable_lines_are_skipped_not_errors() {
        let key = crypto_attribute(1, &SrtpKey::random());
        let material = key.rsplit_once(':').unwrap().1;
        for bad in [
            format!("1 AES_CM_128_HMAC_SHA1_32 inline:{material}"),
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{material}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{material}|2^20|1:4"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{material} UNENCRYPTED_SRTP"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{material};inline:{material}"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_string(),
            "x AES_CM_128_HMAC_SHA1_80".to_string(),
            "1".to_string(),
            String::new(),
        ] {
            assert_eq!(parse_crypto(&bad), None, "{bad}");
        }
    }
}
