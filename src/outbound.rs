//! HTTP fetches whose target a tenant chooses (knowledge URL sources): they
//! must not reach the server's own network. Every connection's addresses
//! come from [`GuardedResolver`], which refuses a name that resolves to an
//! internal address, so the address checked is the address connected to
//! (a DNS answer that changes between a check and the connection changes
//! nothing); every redirect hop is checked again, IP literals included.
//! Ranges an operator allows (its own document server) pass.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Most redirects followed for one fetch.
pub const MAX_REDIRECTS: usize = 5;
/// Said (and found again in reqwest's error chain) when a target is refused.
pub const REFUSED: &str = "resolves to an internal address; refused";

/// Loopback, private, link-local, unique-local, shared (CGNAT), unspecified,
/// broadcast and IPv4-mapped forms of these: the server's own network and
/// the cloud metadata address (169.254.169.254).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// Which internal addresses may still be fetched.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    ranges: Vec<IpNet>,
}

impl Allowed {
    /// No internal address (the default).
    pub fn none() -> Allowed {
        Allowed::default()
    }

    /// Every address (tests that serve documents on 127.0.0.1, or a
    /// deployment whose documents live on its own network).
    pub fn all() -> Allowed {
        Allowed {
            ranges: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        }
    }

    pub fn ranges(ranges: Vec<IpNet>) -> Allowed {
        Allowed { ranges }
    }

    /// May `ip` be connected to?
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.ranges.iter().any(|r| r.contains(&ip))
    }
}

/// Resolves with the system resolver and refuses the whole name when any
/// of its addresses is internal (an answer mixing a public and a private
/// address is refused, not filtered).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allowed: Arc<Allowed>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if addrs.iter().any(|a| !allowed.permits(a.ip())) {
                return Err(format!("{host} {REFUSED}").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The host of `url` when it is an IP literal.
/// (The URL parser has already normalised `127.1` to `127.0.0.1`.)
fn literal(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_matches(['[', ']']).parse().ok()
}

/// Refuses a URL that is not http(s) or names an internal address literally
/// (names are checked when resolved, at connection time).
pub fn check_url(url: &reqwest::Url, allowed: &Allowed) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{} URLs are not fetched", url.scheme()));
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    match literal(url) {
        Some(ip) if !allowed.permits(ip) => Err(format!("{host} {REFUSED}")),
        _ => Ok(()),
    }
}

/// A client for tenant-chosen URLs: guarded resolution, every redirect hop
/// checked, at most [`MAX_REDIRECTS`] hops, `timeout` for the whole fetch.
pub fn client(
    allowed: Allowed,
    timeout: Duration,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    let allowed = Arc::new(allowed);
    let hops = allowed.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(attempt.url(), &hops) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(format!("redirect refused: {e}")),
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .redirect(policy)
        .dns_resolver(Arc::new(GuardedResolver { allowed }))
        .user_agent(user_agent)
        .build()
}

/// The refusal in an error's chain, if the error is one.
pub fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains(REFUSED) {
            return Some(
                text.rsplit(": ")
                    .find(|part| part.contains(REFUSED))
                    .unwrap_or(&text)
                    .to_string(),
            );
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2001:4860:4860::8888", "100.128.0.1"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn urls_are_checked_by_scheme_and_literal_address() {
        let none = Allowed::none();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&url("http://127.0.0.1/x"), &none).is_err());
        assert!(check_url(&url("http://127.1/x"), &none).is_err());
        assert!(check_url(&url("http://[::ffff:127.0.0.1]/x"), &none).is_err());
        assert!(check_url(&url("http://[::ffff:7f00:1]/x"), &none).is_err());
        assert!(check_url(&url("file:///etc/passwd"), &none).is_err());
        assert!(check_url(&url("http://example.com/x"), &none).is_ok());
        let some = Allowed::ranges(vec!["127.0.0.2/32".parse().unwrap()]);
        assert!(check_url(&url("http://127.0.0.2/x"), &some).is_ok());
        assert!(check_url(&url("http://127.0.0.1/x"), &some).is_err());
        assert!(check_url(&url("http://127.0.0.1/x"), &Allowed::all()).is_ok());
    }
}
