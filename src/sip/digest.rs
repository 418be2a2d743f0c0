//! HTTP digest authentication for SIP (RFC 2617 MD5, RFC 8760 SHA-256,
//! qop=auth): stateless nonces that carry their issue time under an HMAC,
//! so expiry needs no table and an expired nonce is answered `stale=true`.
//! Also the client side (answering a trunk's 401/407) for outbound calls.

use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::message::split_list;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn hash(self, input: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(input.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(input.as_bytes())),
        }
    }
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// A nonce we issued, correctly signed, but expired: challenge again with `stale=true`.
    Stale,
    /// Wrong user or password (or a nonce we never issued): 403.
    Invalid,
}

/// Server-side digest state: a random key for nonces and the realm.
#[derive(Clone)]
pub struct DigestServer {
    key: [u8; 32],
    realm: String,
    nonce_ttl_secs: u64,
}

/// Parsed `Digest k=v, ...` parameters.
#[derive(Debug, Clone, Default)]
pub struct DigestParams {
    pub params: Vec<(String, String)>,
}

impl DigestParams {
    pub fn parse(header: &str) -> Option<DigestParams> {
        let rest = header.trim();
        let (scheme, rest) = rest.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut params = Vec::new();
        for item in split_list(rest).into_iter().take(32) {
            let (k, v) = item.split_once('=')?;
            params.push((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ));
        }
        Some(DigestParams { params })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn response_hash(
    alg: Algorithm,
    ha1: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce)) => alg.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => alg.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DigestServer {
    pub fn new(realm: &str, key: [u8; 32], nonce_ttl_secs: u64) -> DigestServer {
        DigestServer {
            key,
            realm: realm.to_string(),
            nonce_ttl_secs,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn sign(&self, stamp: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(stamp.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// A nonce issued at `now_secs` (Unix time).
    pub fn nonce(&self, now_secs: u64) -> String {
        let stamp = format!("{now_secs:x}");
        format!("{stamp}.{}", self.sign(&stamp))
    }

    /// `None`: not ours (forged/garbled); `Some(false)`: ours but expired.
    fn check_nonce(&self, nonce: &str, now_secs: u64) -> Option<bool> {
        let (stamp, sig) = nonce.split_once('.')?;
        if !constant_time_eq(sig.as_bytes(), self.sign(stamp).as_bytes()) {
            return None;
        }
        let issued = u64::from_str_radix(stamp, 16).ok()?;
        Some(now_secs.saturating_sub(issued) <= self.nonce_ttl_secs && issued <= now_secs + 5)
    }

    /// `WWW-Authenticate` values, most preferred first. MD5 goes first on
    /// purpose: many trunks (and SIPp) only read the first challenge and only
    /// know MD5; RFC 8760 clients pick the SHA-256 one.
    pub fn challenges(&self, now_secs: u64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now_secs);
        [Algorithm::Md5, Algorithm::Sha256]
            .iter()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    alg.name()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Checks an `Authorization` value against the trunk's credentials.
    pub fn verify(
        &self,
        authorization: &str,
        method: &str,
        username: &str,
        password: &str,
        now_secs: u64,
    ) -> Verdict {
        let Some(p) = DigestParams::parse(authorization) else {
            return Verdict::Invalid;
        };
        let alg = match p.get("algorithm") {
            Some(a) => match Algorithm::parse(a) {
                Some(a) => a,
                None => return Verdict::Invalid,
            },
            None => Algorithm::Md5,
        };
        let (Some(user), Some(nonce), Some(uri), Some(response)) = (
            p.get("username"),
            p.get("nonce"),
            p.get("uri"),
            p.get("response"),
        ) else {
            return Verdict::Invalid;
        };
        if user != username || p.get("realm") != Some(self.realm.as_str()) {
            return Verdict::Invalid;
        }
        let fresh = match self.check_nonce(nonce, now_secs) {
            None => return Verdict::Invalid,
            Some(fresh) => fresh,
        };
        let qop = match p.get("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => match (p.get("nc"), p.get("cnonce")) {
                (Some(nc), Some(cnonce)) => Some((nc, cnonce)),
                _ => return Verdict::Invalid,
            },
            Some(_) => return Verdict::Invalid,
            None => None,
        };
        let ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        let expected = response_hash(alg, &ha1, method, uri, nonce, qop);
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Invalid;
        }
        // The password was right: an old nonce only needs a fresh challenge.
        if fresh {
            Verdict::Valid
        } else {
            Verdict::Stale
        }
    }
}

/// Client side: the `Authorization`/`Proxy-Authorization` value answering
/// one `WWW-Authenticate`/`Proxy-Authenticate` challenge.
pub fn answer_challenge(
    challenge: &str,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Option<String> {
    let p = DigestParams::parse(challenge)?;
    let realm = p.get("realm")?;
    let nonce = p.get("nonce")?;
    let alg = match p.get("algorithm") {
        Some(a) => Algorithm::parse(a)?,
        None => Algorithm::Md5,
    };
    let qop_auth = p
        .get("qop")
        .map(|q| q.split(',').any(|v| v.trim().eq_ignore_ascii_case("auth")))
        .unwrap_or(false);
    let ha1 = alg.hash(&format!("{username}:{realm}:{password}"));
    let nc = format!("{nc:08x}");
    let response = response_hash(
        alg,
        &ha1,
        method,
        uri,
        nonce,
        qop_auth.then_some((nc.as_str(), cnonce)),
    );
    let mut v = format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        alg.name()
    );
    if qop_auth {
        v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = p.get("opaque") {
        v.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> DigestServer {
        DigestServer::new("switchboard", [7; 32], 300)
    }

    #[test]
    fn rfc2617_md5_response_known_value() {
        // RFC 2617 §3.5 example (qop=auth): Mufasa / Circle Of Life.
        let ha1 = Algorithm::Md5.hash("Mufasa:testrealm@host.com:Circle Of Life");
        let r = response_hash(
            Algorithm::Md5,
            &ha1,
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn round_trip_md5_and_sha256_wrong_password_and_stale() {
        let s = server();
        let now = 1_700_000_000;
        for challenge in s.challenges(now, false) {
            let auth = answer_challenge(
                &challenge,
                "INVITE",
                "sip:+1@127.0.0.1",
                "trunk",
                "secret",
                "abc",
                1,
            )
            .unwrap();
            assert_eq!(
                s.verify(&auth, "INVITE", "trunk", "secret", now + 10),
                Verdict::Valid,
                "{challenge}"
            );
            assert_eq!(
                s.verify(&auth, "INVITE", "trunk", "other", now + 10),
                Verdict::Invalid
            );
            assert_eq!(
                s.verify(&auth, "INVITE", "bob", "secret", now + 10),
                Verdict::Invalid
            );
            assert_eq!(
                s.verify(&auth, "INVITE", "trunk", "secret", now + 301),
                Verdict::Stale
            );
        }
        assert!(s.challenges(now, true)[0].contains("stale=true"));
    }

    #[test]
    fn forged_nonce_and_garbage_are_invalid() {
        let s = server();
        let other = DigestServer::new("switchboard", [8; 32], 300);
        let challenge = &other.challenges(100, false)[0];
        let auth =
            answer_challenge(challenge, "INVITE", "sip:x@y", "trunk", "secret", "c", 1).unwrap();
        assert_eq!(
            s.verify(&auth, "INVITE", "trunk", "secret", 100),
            Verdict::Invalid
        );
        for garbage in [
            "",
            "Basic abc",
            "Digest",
            "Digest username",
            "Digest nonce=\"zz.zz\"",
        ] {
            assert_eq!(
                s.verify(garbage, "INVITE", "trunk", "secret", 100),
                Verdict::Invalid
            );
        }
    }
}
