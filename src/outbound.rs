//! HTTP fetches whose target a tenant chooses (knowledge URL sources, the
//! `base_url` of a workspace's STT, LLM and TTS providers): they must not
//! reach the server's own network. [`GuardedClient`] is the one way out:
//! every connection's addresses come from [`GuardedResolver`], which refuses
//! a name that resolves to an internal address, so the address checked is
//! the address connected to (a DNS answer that changes between a check and
//! the connection changes nothing); IP literals are checked before the
//! request and every redirect hop is checked again. What the operator
//! allows (`[outbound] allow`: ranges, or named hosts such as a local vLLM)
//! passes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
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

/// Which internal addresses may still be fetched: ranges, and host names
/// whose addresses are all admitted whatever they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    ranges: Vec<IpNet>,
    /// Lower-case, without a trailing dot.
    hosts: Vec<String>,
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
            // The defaults are 0.0.0.0/0 and ::/0.
            ranges: vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())],
            hosts: Vec::new(),
        }
    }

    pub fn ranges(ranges: Vec<IpNet>) -> Allowed {
        Allowed {
            ranges,
            hosts: Vec::new(),
        }
    }

    /// The operator's list (`[outbound] allow`): each entry a range
    /// (`10.0.0.0/8`, `fd00::/8`), an address (`10.1.2.3`, one host), or a
    /// host name (`vllm.internal`, `localhost`) whose addresses are admitted
    /// whatever they are. Anything else is an error naming the entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowed, String> {
        let mut allowed = Allowed::none();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                allowed.ranges.push(net.trunc());
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                allowed.ranges.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                allowed
                    .hosts
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is neither a range (10.0.0.0/8), an address nor a host name"
                ));
            }
        }
        Ok(allowed)
    }

    /// May `ip` be connected to?
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.ranges.iter().any(|r| r.contains(&ip))
    }

    /// Is `host` (a name, as in a URL) one the operator admits by name?
    pub fn permits_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// Letters, digits, `-` and `.` in labels of 1 to 63 characters.
fn is_host_name(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // All digits and dots would be an address the parsers refused.
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Resolves with the system resolver and refuses the whole name when any
/// of its addresses is internal (an answer mixing a public and a private
/// address is refused, not filtered), unless the operator admits the name.
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
            if !allowed.permits_host(&host) && addrs.iter().any(|a| !allowed.permits(a.ip())) {
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

/// The one client for tenant-chosen URLs: guarded resolution, literal
/// addresses checked before the request, every redirect hop checked, at
/// most [`MAX_REDIRECTS`] hops. Cheap to clone (connections are pooled and
/// shared between clones).
#[derive(Debug, Clone)]
pub struct GuardedClient {
    http: reqwest::Client,
    allowed: Arc<Allowed>,
}

impl GuardedClient {
    /// `timeout` bounds each whole fetch unless a request sets its own.
    pub fn new(allowed: Allowed, timeout: Duration, user_agent: &str) -> reqwest::Result<Self> {
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
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver {
                allowed: allowed.clone(),
            }))
            .user_agent(user_agent)
            .build()?;
        Ok(GuardedClient { http, allowed })
    }

    /// What this client may still reach inside.
    pub fn allowed(&self) -> &Allowed {
        &self.allowed
    }

    /// A request to `url`, or why it is refused (not http(s), not a URL,
    /// or an internal address given literally; names are checked when
    /// resolved, at connection time).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = reqwest::Url::parse(url).map_err(|_| "not a valid URL".to_string())?;
        check_url(&url, &self.allowed)?;
        Ok(self.http.request(method, url))
    }

    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        self.request(reqwest::Method::GET, url)
    }

    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        self.request(reqwest::Method::POST, url)
    }
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
        assert!(check_url(&url("http://[::1]/x"), &Allowed::all()).is_ok());
    }

    #[test]
    fn the_operator_list_is_ranges_addresses_and_names() {
        let allowed = Allowed::parse(&[
            "10.0.0.0/8",
            "192.168.1.7",
            "[fd00::1]",
            "vLLM.internal.",
            "localhost",
        ])
        .unwrap();
        assert!(allowed.permits("10.9.8.7".parse().unwrap()));
        assert!(allowed.permits("192.168.1.7".parse().unwrap()));
        assert!(!allowed.permits("192.168.1.8".parse().unwrap()));
        assert!(allowed.permits("fd00::1".parse().unwrap()));
        assert!(!allowed.permits("127.0.0.1".parse().unwrap()));
        assert!(allowed.permits_host("vllm.internal"));
        assert!(allowed.permits_host("LOCALHOST"));
        assert!(!allowed.permits_host("internal"));
        // A name admits nothing by address.
        let url = reqwest::Url::parse("http://127.0.0.1/x").unwrap();
        assert!(check_url(&url, &allowed).is_err());
        for bad in ["10.0.0.0/33", "http://x", "a b", "-x.example", "1.2.3", ""] {
            assert!(Allowed::parse(&[bad]).is_err(), "{bad:?}");
        }
        assert_eq!(Allowed::parse::<&str>(&[]).unwrap(), Allowed::none());
    }

    #[tokio::test]
    async fn a_literal_internal_address_is_refused_before_any_request() {
        let client = GuardedClient::new(Allowed::none(), Duration::from_secs(1), "test").unwrap();
        let err = client.post("http://127.0.0.1:9/v1").unwrap_err();
        assert!(err.contains(REFUSED), "{err}");
        assert!(client.get("ftp://example.com/").is_err());
        assert!(client.get("not a url").is_err());
        assert!(client.get("https://example.com/").is_ok());
    }
}
