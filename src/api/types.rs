//! Validated values parsed at the edge: once a request body has become one of
//! these, the inside never sees a malformed number, address or enum.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::name_enum;
pub use crate::domain::{EscalationPolicy, Transport, E164};

/// An IPv4 or IPv6 network (`203.0.113.0/24`); a bare address is a /32 or /128.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(Cidr(ipnet::IpNet::from(ip))),
            Err(_) => Err("must be an IP address or CIDR such as 203.0.113.0/24".into()),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A SIP host: a DNS name (RFC 1123 labels) or an IP address, no port, no
/// scheme. Ports are a separate field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipHost(String);

impl SipHost {
    pub fn parse(s: &str) -> Result<SipHost, String> {
        if s.parse::<std::net::IpAddr>().is_ok() {
            return Ok(SipHost(s.to_string()));
        }
        let bad = || "must be a host name or IP address (no scheme, no port)".to_string();
        if s.is_empty() || s.len() > 253 {
            return Err(bad());
        }
        for label in s.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad());
            }
        }
        Ok(SipHost(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

name_enum!(
    /// Codec names a trunk may list, in preference order (the media layer
    /// speaks these).
    CodecName { Pcmu = "PCMU", Pcma = "PCMA", TelephoneEvent = "telephone-event", Opus = "opus", G722 = "G722" }
);

name_enum!(
    /// Workspace role: OWNER ⊃ MANAGER ⊃ VIEWER.
    Role { Viewer = "VIEWER", Manager = "MANAGER", Owner = "OWNER" }
);

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Manager => 1,
            Role::Owner => 2,
        }
    }

    /// True when this role includes everything `min` may do.
    pub fn at_least(self, min: Role) -> bool {
        self.rank() >= min.rank()
    }
}

/// The SQL enums of SCHEMA.md, by type name, with their values.
pub const SQL_ENUMS: &[(&str, &[&str])] = &[
    ("agent_status", &["draft", "live"]),
    ("app_role", Role::ALL),
    (
        "business_domain",
        &[
            "healthcare",
            "retail",
            "finance",
            "realestate",
            "hospitality",
            "other",
        ],
    ),
    (
        "persona_tone",
        &["professional", "friendly", "casual", "formal"],
    ),
    ("fallback_policy", EscalationPolicy::ALL),
    ("knowledge_type", &["PDF", "URL", "TEXT", "FAQ"]),
    (
        "subscription_status",
        &[
            "trialing", "active", "past_due", "canceled", "unpaid", "paused",
        ],
    ),
];

/// A transfer target: an E.164 number, a `tel:` URI of one (RFC 3966,
/// parameters allowed) or a `sip:`/`sips:` URI. Kept as written: the
/// REFER's Refer-To carries it unchanged.
pub fn parse_transfer_target(s: &str) -> Result<String, String> {
    if s.starts_with('+') {
        return E164::parse(s).map(E164::into_string);
    }
    if let Some(rest) = s.strip_prefix("tel:") {
        let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
        let params_ok = params.len() <= 200
            && params
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=;-_.+%".contains(c));
        return match (E164::parse(number), params_ok) {
            (Ok(_), true) => Ok(s.to_string()),
            _ => Err("a tel: target must be tel:+ then an E.164 number".into()),
        };
    }
    if let Some(rest) = s.strip_prefix("sip:").or_else(|| s.strip_prefix("sips:")) {
        let host = rest.rsplit('@').next().unwrap_or("");
        let host = host.split([';', '?']).next().unwrap_or("");
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() => h,
            _ => host,
        };
        if !rest.is_empty() && rest.len() <= 256 && !rest.contains(char::is_whitespace) {
            SipHost::parse(host.trim_start_matches('[').trim_end_matches(']'))?;
            return Ok(s.to_string());
        }
    }
    Err("must be an E.164 number, a tel: URI or a sip: URI".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        assert_eq!(Cidr::parse("10.0.0.7/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert!(Cidr::parse("::1").is_ok());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }

    #[test]
    fn sip_host() {
        assert!(SipHost::parse("sip.telnyx.com").is_ok());
        assert!(SipHost::parse("127.0.0.1").is_ok());
        for bad in ["", "sip:x.com", "x.com:5060", "-a.com", "a..b", "a b"] {
            assert!(SipHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_and_roles() {
        assert_eq!("tls".parse::<Transport>().unwrap(), Transport::Tls);
        assert!("TLS".parse::<Transport>().is_err());
        assert_eq!("PCMU".parse::<CodecName>().unwrap().as_str(), "PCMU");
        assert!(Role::Owner.at_least(Role::Manager));
        assert!(!Role::Viewer.at_least(Role::Manager));
    }

    #[test]
    fn transfer_target() {
        assert!(parse_transfer_target("+15555550100").is_ok());
        assert!(parse_transfer_target("sip:desk@pbx.example.com").is_ok());
        assert!(parse_transfer_target("sip:desk@10.0.0.1:5070;transport=tcp").is_ok());
        assert!(parse_transfer_target("http://x").is_err());
        assert_eq!(
            parse_transfer_target("tel:+15555550199").as_deref(),
            Ok("tel:+15555550199")
        );
        assert!(parse_transfer_target("tel:+15555550199;ext=12").is_ok());
        assert!(parse_transfer_target("tel:5550199").is_err());
        assert!(parse_transfer_target("tel:+15555550199;a b").is_err());
        assert!(parse_transfer_target("sip:a@bad host").is_err());
    }
}
