//! Typed views of the header values the stack needs: comma lists, `;`
//! parameters, CSeq, Via (with RFC 3581 rport/received), name-addr (From,
//! To, Contact) and URIs (SIP URIs through `rsip::Uri`, `tel:` by hand).

use std::fmt::Write as _;

use super::message::Method;

/// Splits a header value on top-level commas (not inside quotes or <>).
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth -= 1,
            b',' if !quoted && depth <= 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = value.get(start..).unwrap_or("").trim();
    if !last.is_empty() {
        out.push(last);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `;name=value;flag` parameters, in order.
pub type Params = Vec<(String, Option<String>)>;

fn parse_params(s: &str) -> Params {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a Option<String>> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(v: &str) -> Option<CSeq> {
        let (n, m) = v.trim().split_once(char::is_whitespace)?;
        Some(CSeq {
            seq: n.parse().ok()?,
            method: Method::parse(m.trim())?,
        })
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(v: &str) -> Option<Via> {
        let (proto, rest) = v.trim().split_once(char::is_whitespace)?;
        let mut proto_parts = proto.split('/');
        let (name, version, transport) = (
            proto_parts.next()?,
            proto_parts.next()?,
            proto_parts.next()?,
        );
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return None;
        }
        let rest = rest.trim();
        let (sent_by, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (host, port) = split_host_port(sent_by.trim())?;
        Some(Via {
            transport: transport.trim().to_ascii_uppercase(),
            host,
            port,
            params: parse_params(params),
        })
    }

    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").and_then(|v| v.as_deref())
    }

    pub fn received(&self) -> Option<&str> {
        param(&self.params, "received").and_then(|v| v.as_deref())
    }

    /// `Some(None)`: rport asked for (RFC 3581); `Some(Some(p))`: filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        param(&self.params, "rport").map(|v| v.as_deref().and_then(|p| p.parse().ok()))
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        if let Some(p) = self.params.iter_mut().find(|(n, _)| n == name) {
            p.1 = value;
        } else {
            self.params.push((name.to_string(), value));
        }
    }

    pub fn to_header(&self) -> String {
        let mut s = format!(
            "SIP/2.0/{} {}",
            self.transport,
            host_port(&self.host, self.port)
        );
        write_params(&mut s, &self.params);
        s
    }
}

fn write_params(s: &mut String, params: &Params) {
    for (n, v) in params {
        match v {
            Some(v) => {
                let _ = write!(s, ";{n}={v}");
            }
            None => {
                let _ = write!(s, ";{n}");
            }
        }
    }
}

pub fn host_port(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// `host`, `host:port`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.parse().ok()?))),
        Some(_) => Some((s.to_string(), None)),
        None => Some((s.to_string(), None)),
    }
}

/// `"Name" <uri;uparams>;hparams` or `uri;hparams` (From, To, Contact...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(v: &str) -> Option<NameAddr> {
        let v = v.trim();
        if let Some(open) = v.find('<') {
            let close = open + v[open..].find('>')?;
            let display = v[..open].trim().trim_matches('"').trim();
            let uri = v[open + 1..close].trim();
            if uri.is_empty() {
                return None;
            }
            let rest = v[close + 1..].trim();
            Some(NameAddr {
                display: (!display.is_empty()).then(|| display.to_string()),
                uri: uri.to_string(),
                params: parse_params(rest),
            })
        } else {
            let (uri, params) = v.split_once(';').unwrap_or((v, ""));
            if uri.is_empty() || !uri.contains(':') {
                return None;
            }
            Some(NameAddr {
                display: None,
                uri: uri.trim().to_string(),
                params: parse_params(params),
            })
        }
    }

    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").and_then(|v| v.as_deref())
    }

    pub fn to_header(&self) -> String {
        let mut s = match &self.display {
            Some(d) => format!("\"{d}\" <{}>", self.uri),
            None => format!("<{}>", self.uri),
        };
        write_params(&mut s, &self.params);
        s
    }
}

/// A `sip:`/`sips:` URI through rsip (user part, host, port, params).
pub fn parse_sip_uri(uri: &str) -> Option<rsip::Uri> {
    if uri.len() > 1024 {
        return None;
    }
    rsip::Uri::try_from(uri).ok()
}

/// The user part of a `sip:`/`sips:`/`tel:` URI (for `tel:` the number).
pub fn uri_user(uri: &str) -> Option<String> {
    let lower = uri.get(..4).map(|s| s.to_ascii_lowercase());
    if lower.as_deref() == Some("tel:") {
        let number = uri[4..].split(';').next().unwrap_or("");
        return (!number.is_empty()).then(|| number.to_string());
    }
    let uri = parse_sip_uri(uri)?;
    uri.user().map(str::to_string)
}
