//! HTTP digest authentication for SIP (RFC 2617 MD5, RFC 8760 SHA-256,
//! qop=auth), failing closed: nonces carry their issue time and the address
//! they were issued to under an HMAC (an expired one is answered
//! `stale=true`), the digest `uri` must be the Request-URI, and each
//! nonce's count only goes up ([`NonceCounts`], sans-IO), so a captured
//! header cannot be replayed. Also the client side (answering a trunk's
//! 401/407) for outbound calls.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

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
    /// The right password over a nonce count already used (a replayed
    /// header, or a client that reuses counts): challenge again.
    Replayed,
    /// Wrong user, password or uri, a nonce we never issued or issued to
    /// another address, no password to check against: 403.
    Invalid,
}

/// What the request itself says, to check the digest against.
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    pub method: &'a str,
    pub request_uri: &'a str,
    pub source: IpAddr,
}

/// Nonces remembered at most. When full of live nonces the oldest is
/// dropped and every nonce issued up to it becomes stale, so forgetting a
/// nonce can never make its counts usable again.
const MAX_TRACKED_NONCES: usize = 65_536;

/// The highest nonce count seen per nonce, sans-IO (time passed in).
#[derive(Debug, Default)]
pub struct NonceCounts {
    seen: HashMap<String, (u64, u32)>,
    /// Nonces issued at or before this second are stale (see above).
    floor: Option<u64>,
}

impl NonceCounts {
    /// Records count `nc` of `nonce` (issued at `issued`); `false` if that
    /// count, or a higher one, was already used.
    pub fn advance(&mut self, nonce: &str, issued: u64, nc: u32, now: u64, ttl: u64) -> bool {
        if let Some((_, last)) = self.seen.get_mut(nonce) {
            if nc <= *last {
                return false;
            }
            *last = nc;
            return true;
        }
        if self.floor.is_some_and(|f| issued <= f) {
            return false;
        }
        if self.seen.len() >= MAX_TRACKED_NONCES {
            self.seen
                .retain(|_, (at, _)| now.saturating_sub(*at) <= ttl);
        }
        if self.seen.len() >= MAX_TRACKED_NONCES {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, (at, _))| (k.clone(), *at));
            if let Some((k, at)) = oldest {
                self.seen.remove(&k);
                self.floor = Some(self.floor.map_or(at, |f| f.max(at)));
                if issued <= at {
                    return false;
                }
            }
        }
        self.seen.insert(nonce.to_string(), (issued, nc));
        true
    }

    pub fn is_stale(&self, issued: u64) -> bool {
        self.floor.is_some_and(|f| issued <= f)
    }
}

/// Server-side digest state: a random key for nonces, the realm, and the
/// counts used per nonce.
pub struct DigestServer {
    key: [u8; 32],
    realm: String,
    nonce_ttl_secs: u64,
    counts: Mutex<NonceCounts>,
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

/// RFC 3261 §22.4: the digest `uri` is the Request-URI. Also accepted:
/// the Request-URI's `sip:host[:port]` without its user part, which SIPp
/// (and some older user agents) send; it still binds the digest to this
/// node, and replay is stopped by the nonce counts and source binding.
fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    let (digest_uri, request_uri) = (digest_uri.trim(), request_uri.trim());
    if digest_uri == request_uri {
        return true;
    }
    let Some(rest) = request_uri.strip_prefix("sip:") else {
        return false;
    };
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '?']).next().unwrap_or("");
    !host_port.is_empty() && digest_uri.strip_prefix("sip:") == Some(host_port)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            counts: Mutex::new(NonceCounts::default()),
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

    /// A nonce issued at `now_secs` (Unix time) to `source`.
    pub fn nonce(&self, now_secs: u64, source: IpAddr) -> String {
        let stamp = format!("{now_secs:x}");
        format!("{stamp}.{}", self.sign(&format!("{stamp}|{source}")))
    }

    /// `None`: not ours, or issued to another address; else its issue time
    /// and whether it is still fresh.
    fn check_nonce(&self, nonce: &str, source: IpAddr, now_secs: u64) -> Option<(u64, bool)> {
        let (stamp, sig) = nonce.split_once('.')?;
        let expected = self.sign(&format!("{stamp}|{source}"));
        if !constant_time_eq(sig.as_bytes(), expected.as_bytes()) {
            return None;
        }
        let issued = u64::from_str_radix(stamp, 16).ok()?;
        let fresh = now_secs.saturating_sub(issued) <= self.nonce_ttl_secs
            && issued <= now_secs + 5
            && !lock(&self.counts).is_stale(issued);
        Some((issued, fresh))
    }

    /// `WWW-Authenticate` values, most preferred first. MD5 goes first on
    /// purpose: many trunks (and SIPp) only read the first challenge and only
    /// know MD5; RFC 8760 clients pick the SHA-256 one.
    pub fn challenges(&self, now_secs: u64, source: IpAddr, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now_secs, source);
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

    /// Checks an `Authorization` value of `req` against the trunk's
    /// credentials. No password (empty) is never a match.
    pub fn verify(
        &self,
        authorization: &str,
        req: DigestRequest<'_>,
        username: &str,
        password: &str,
        now_secs: u64,
    ) -> Verdict {
        if username.is_empty() || password.is_empty() {
            return Verdict::Invalid;
        }
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
        if !constant_time_eq(user.as_bytes(), username.as_bytes())
            || p.get("realm") != Some(self.realm.as_str())
            || !uri_matches(uri, req.request_uri)
        {
            return Verdict::Invalid;
        }
        let Some((issued, fresh)) = self.check_nonce(nonce, req.source, now_secs) else {
            return Verdict::Invalid;
        };
        // Without qop a nonce is good for one request (count 0).
        let (qop, count) = match p.get("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => match (p.get("nc"), p.get("cnonce")) {
                (Some(nc), Some(cnonce)) => match u32::from_str_radix(nc, 16) {
                    Ok(n) if nc.len() == 8 && n > 0 => (Some((nc, cnonce)), n),
                    _ => return Verdict::Invalid,
                },
                _ => return Verdict::Invalid,
            },
            Some(_) => return Verdict::Invalid,
            None => (None, 0),
        };
        let ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        let expected = response_hash(alg, &ha1, req.method, uri, nonce, qop);
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Invalid;
        }
        // The password was right: an old nonce only needs a fresh challenge.
        if !fresh {
            return Verdict::Stale;
        }
        // Counted only now, so a wrong password cannot use up a count.
        let advanced =
            lock(&self.counts).advance(nonce, issued, count, now_secs, self.nonce_ttl_secs);
        if advanced {
            Verdict::Valid
        } else {
            Verdict::Replayed
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

    const URI: &str = "sip:+1@127.0.0.1";

    fn req(source: &str) -> DigestRequest<'static> {
        DigestRequest {
            method: "INVITE",
            request_uri: URI,
            source: source.parse().unwrap(),
        }
    }

    fn answer(challenge: &str, uri: &str, password: &str, nc: u32) -> String {
        answer_challenge(challenge, "INVITE", uri, "trunk", password, "abc", nc).unwrap()
    }

    #[test]
    fn round_trip_md5_and_sha256_wrong_password_and_stale() {
        let s = server();
        let now = 1_700_000_000;
        let src = req("192.0.2.1");
        // Both challenges carry one nonce: each use takes the next count.
        for (i, challenge) in s.challenges(now, src.source, false).iter().enumerate() {
            let auth = answer(challenge, URI, "secret", i as u32 + 1);
            assert_eq!(
                s.verify(&auth, src, "trunk", "other", now + 10),
                Verdict::Invalid
            );
            assert_eq!(
                s.verify(&auth, src, "bob", "secret", now + 10),
                Verdict::Invalid
            );
            assert_eq!(
                s.verify(&auth, src, "trunk", "secret", now + 301),
                Verdict::Stale
            );
            assert_eq!(
                s.verify(&auth, src, "trunk", "secret", now + 10),
                Verdict::Valid,
                "{challenge}"
            );
        }
        assert!(s.challenges(now, src.source, true)[0].contains("stale=true"));
    }

    #[test]
    fn no_password_never_matches() {
        let s = server();
        let src = req("192.0.2.1");
        let challenge = &s.challenges(100, src.source, false)[0];
        let auth = answer(challenge, URI, "", 1);
        assert_eq!(s.verify(&auth, src, "trunk", "", 100), Verdict::Invalid);
        assert_eq!(s.verify(&auth, src, "", "", 100), Verdict::Invalid);
    }

    #[test]
    fn counts_only_go_up_and_a_replay_is_refused() {
        let s = server();
        let src = req("192.0.2.1");
        let challenge = &s.challenges(100, src.source, false)[0];
        let first = answer(challenge, URI, "secret", 1);
        assert_eq!(
            s.verify(&first, src, "trunk", "secret", 100),
            Verdict::Valid
        );
        assert_eq!(
            s.verify(&first, src, "trunk", "secret", 101),
            Verdict::Replayed
        );
        let third = answer(challenge, URI, "secret", 3);
        assert_eq!(
            s.verify(&third, src, "trunk", "secret", 102),
            Verdict::Valid
        );
        let second = answer(challenge, URI, "secret", 2);
        assert_eq!(
            s.verify(&second, src, "trunk", "secret", 103),
            Verdict::Replayed,
            "a lower count after a higher one"
        );
        // A wrong password does not use up a count.
        let other = &s.challenges(200, src.source, false)[0];
        let wrong = answer(other, URI, "guess", 1);
        assert_eq!(
            s.verify(&wrong, src, "trunk", "secret", 200),
            Verdict::Invalid
        );
        let right = answer(other, URI, "secret", 1);
        assert_eq!(
            s.verify(&right, src, "trunk", "secret", 200),
            Verdict::Valid
        );
    }

    #[test]
    fn the_uri_and_the_source_address_are_bound() {
        let s = server();
        let src = req("192.0.2.1");
        let challenge = &s.challenges(100, src.source, false)[0];
        for elsewhere in [
            "sip:+1@198.51.100.1",
            "sip:+2@127.0.0.1",
            "sip:198.51.100.1",
        ] {
            let auth = answer(challenge, elsewhere, "secret", 1);
            assert_eq!(
                s.verify(&auth, src, "trunk", "secret", 100),
                Verdict::Invalid,
                "{elsewhere}"
            );
        }
        assert!(uri_matches("sip:127.0.0.1", URI), "SIPp's form");
        assert!(uri_matches(
            "sip:10.0.0.1:5080",
            "sip:+1@10.0.0.1:5080;transport=udp"
        ));
        let auth = answer(challenge, URI, "secret", 1);
        assert_eq!(
            s.verify(&auth, req("192.0.2.2"), "trunk", "secret", 100),
            Verdict::Invalid,
            "a nonce issued to another address"
        );
        assert_eq!(s.verify(&auth, src, "trunk", "secret", 100), Verdict::Valid);
    }

    #[test]
    fn a_full_count_table_makes_forgotten_nonces_stale() {
        let mut c = NonceCounts::default();
        for i in 0..MAX_TRACKED_NONCES as u64 {
            assert!(c.advance(&format!("n{i}"), 1000 + i, 1, 1000 + i, 1_000_000));
        }
        // The next new nonce pushes out the oldest (issued at 1000).
        assert!(c.advance("late", 5_000_000, 1, 5_000_000 - 10, 100_000_000));
        assert!(c.is_stale(1000));
        assert!(!c.advance("n0", 1000, 2, 5_000_000, 100_000_000));
        assert!(c.seen.len() <= MAX_TRACKED_NONCES);
    }

    #[test]
    fn forged_nonce_and_garbage_are_invalid() {
        let s = server();
        let src = req("192.0.2.1");
        let other = DigestServer::new("switchboard", [8; 32], 300);
        let challenge = &other.challenges(100, src.source, false)[0];
        let auth = answer(challenge, URI, "secret", 1);
        assert_eq!(
            s.verify(&auth, src, "trunk", "secret", 100),
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
                s.verify(garbage, src, "trunk", "secret", 100),
                Verdict::Invalid
            );
        }
    }
}
