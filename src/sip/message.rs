//! SIP messages as values: framing (`Content-Length`, the 64 KiB limit),
//! parsing into a start line + ordered header list + body, typed views of the
//! headers the stack needs (Via, From/To, CSeq), and serialisation.
//!
//! Why not `rsip::SipMessage` directly: rsip 0.4 takes everything after the
//! blank line as the body (ignoring `Content-Length`, so it cannot frame a TCP
//! stream or a datagram with trailing bytes), does not expand compact header
//! names (`v:`, `i:`, `f:`...), rejects extension methods, and prints a `tel:`
//! URI as `tel://...`. So framing and header splitting are done here and rsip
//! is used for what it does well: SIP URIs (`rsip::Uri`, see [`parse_sip_uri`]).

use std::fmt::Write as _;

use bytes::Bytes;

pub use super::header::{
    host_port, parse_sip_uri, split_host_port, split_list, uri_user, CSeq, NameAddr, Params, Via,
};

/// Largest message accepted on any transport (also `sip.max_message_bytes`).
pub const MAX_MESSAGE_BYTES: usize = 65536;
/// More header lines than this is hostile (1,000 Vias), not a real message.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message incomplete")]
    Incomplete,
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("Content-Length missing or wrong")]
    BadContentLength,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Refer,
    Notify,
    Subscribe,
    Message,
    Publish,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(is_token_byte) {
            return None;
        }
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A parsed SIP message. Header names are stored in their long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Compact forms (RFC 3261 §7.3.3 and extensions) to long names.
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'f' => "From",
        b't' => "To",
        b'v' => "Via",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'k' => "Supported",
        b's' => "Subject",
        b'e' => "Content-Encoding",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'x' => "Session-Expires",
        b'u' => "Allow-Events",
        _ => name,
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Where the blank line ending a head is, searching `buf` from `from` only:
/// a stream reader that remembers how far it looked scans each byte once
/// (three bytes of overlap find a `\r\n\r\n` split across reads).
pub(crate) fn find_head_end_from(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3).min(buf.len());
    find_head_end(&buf[start..]).map(|end| start + end)
}

/// The size of a stream message whose head (through the blank line) is
/// `head`: head plus `Content-Length`. Missing, not a number, or over `max`
/// is an error (over TCP the length is the only frame boundary).
pub(crate) fn framed_size(head: &[u8], max: usize) -> Result<usize, ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::Malformed("head not UTF-8"))?;
    let mut length = None;
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if expand_compact(name.trim()).eq_ignore_ascii_case("Content-Length") {
                let n: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| ParseError::BadContentLength)?;
                length = Some(n);
            }
        }
    }
    let length = length.ok_or(ParseError::BadContentLength)?;
    let total = head
        .len()
        .checked_add(length)
        .ok_or(ParseError::TooLarge(max))?;
    if total > max {
        return Err(ParseError::TooLarge(max));
    }
    Ok(total)
}

/// Stream framing (TCP): how many bytes the first message in `buf` takes.
/// `Ok(None)` is a short read, not an error. A missing Content-Length, a
/// non-number, or a message over `max` is an error: the connection closes.
/// Scans `buf` from its start; a connection uses `stream::StreamFramer`,
/// which remembers how far it has looked.
pub fn frame(buf: &[u8], max: usize) -> Result<Option<usize>, ParseError> {
    let head_end = match find_head_end(buf) {
        Some(end) => end,
        None if buf.len() > max => return Err(ParseError::TooLarge(max)),
        None => return Ok(None),
    };
    let total = framed_size(&buf[..head_end], max)?;
    Ok((buf.len() >= total).then_some(total))
}

impl Message {
    /// Parses one whole message (a datagram, or a frame cut by [`frame`]).
    /// Over UDP a missing Content-Length means "the rest of the datagram"
    /// (RFC 3261 §18.3); a Content-Length larger than what arrived is an error.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge(MAX_MESSAGE_BYTES));
        }
        let head_end = find_head_end(buf).ok_or(ParseError::Incomplete)?;
        let head = std::str::from_utf8(&buf[..head_end - 4])
            .map_err(|_| ParseError::Malformed("head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let start = parse_start_line(lines.next().unwrap_or(""))?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation line (RFC 3261 §7.3.1).
                let last = headers
                    .last_mut()
                    .ok_or(ParseError::Malformed("fold before any header"))?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or(ParseError::Malformed("header without colon"))?;
            let name = name.trim_end();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(ParseError::Malformed("bad header name"));
            }
            if headers.len() >= MAX_HEADERS {
                return Err(ParseError::Malformed("too many headers"));
            }
            headers.push((expand_compact(name).to_string(), value.trim().to_string()));
        }
        let rest = &buf[head_end..];
        let body = match header_in(&headers, "Content-Length") {
            Some(v) => {
                let n: usize = v.trim().parse().map_err(|_| ParseError::BadContentLength)?;
                if n > rest.len() {
                    return Err(ParseError::BadContentLength);
                }
                &rest[..n]
            }
            None => rest,
        };
        Ok(Message {
            start,
            headers,
            body: Bytes::copy_from_slice(body),
        })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every value of a header, comma-separated lists split, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| split_list(v))
            .collect()
    }

    /// Whether a list header (`Allow`, `Supported`, `Require`…, every
    /// line of it) names `token`, case-insensitively.
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID").filter(|v| !v.is_empty())
    }

    pub fn cseq(&self) -> Option<CSeq> {
        CSeq::parse(self.header("CSeq")?)
    }

    pub fn top_via(&self) -> Option<Via> {
        Via::parse(self.header_values("Via").first()?)
    }

    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("From")?)
    }

    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("To")?)
    }

    pub fn contact(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header_values("Contact").first()?)
    }

    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(h) = self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            h.1 = value;
        } else {
            self.headers.push((name.to_string(), value));
        }
    }

    pub fn add_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Checks the headers every request needs to be processed (RFC 3261
    /// §8.1.1). Responses to such a request cannot be built, so it is
    /// answered 400 (when Via allows) or dropped.
    pub fn validate_request(&self) -> Result<(), ParseError> {
        self.top_via()
            .ok_or(ParseError::Malformed("no usable Via"))?;
        self.call_id().ok_or(ParseError::Malformed("no Call-ID"))?;
        let cseq = self.cseq().ok_or(ParseError::Malformed("no CSeq"))?;
        self.from().ok_or(ParseError::Malformed("no From"))?;
        self.to().ok_or(ParseError::Malformed("no To"))?;
        match self.method() {
            Some(m) if *m == cseq.method => Ok(()),
            _ => Err(ParseError::Malformed("CSeq method differs")),
        }
    }

    /// A response to `req`: Via, From, To, Call-ID and CSeq copied (§8.2.6).
    pub fn response_to(req: &Message, code: u16, reason: &str) -> Message {
        let mut headers = Vec::with_capacity(8);
        for (name, value) in &req.headers {
            if ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
            {
                headers.push((name.clone(), value.clone()));
            }
        }
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers,
            body: Bytes::new(),
        }
    }

    /// Copies `req`'s Record-Route headers, in order (a UAS's dialog-creating
    /// response, RFC 3261 §12.1.1).
    pub fn copy_record_route(&mut self, req: &Message) {
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case("Record-Route") {
                self.headers
                    .push(("Record-Route".to_string(), value.clone()));
            }
        }
    }

    /// Adds `;tag=` to To unless it has one.
    pub fn set_to_tag(&mut self, tag: &str) {
        if let Some(h) = self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case("To"))
        {
            let has_tag = NameAddr::parse(&h.1)
                .map(|na| na.tag().is_some())
                .unwrap_or(false);
            if !has_tag {
                h.1.push_str(";tag=");
                h.1.push_str(tag);
            }
        }
    }

    pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) {
        self.set_header("Content-Type", content_type);
        self.body = body.into();
    }

    /// Serialises with a freshly computed Content-Length.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(out, "{} {} SIP/2.0\r\n", method.as_str(), uri);
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        Bytes::from(bytes)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .map_err(|_| ParseError::Malformed("bad status code"))?;
        if !(100..700).contains(&code) {
            return Err(ParseError::Malformed("status code out of range"));
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v), None) => (m, u, v),
        _ => return Err(ParseError::Malformed("bad request line")),
    };
    if version != "SIP/2.0" {
        return Err(ParseError::Malformed("not SIP/2.0"));
    }
    let method = Method::parse(method).ok_or(ParseError::Malformed("bad method"))?;
    if uri.is_empty() || !uri.contains(':') {
        return Err(ParseError::Malformed("bad Request-URI"));
    }
    Ok(StartLine::Request {
        method,
        uri: uri.to_string(),
    })
}

/// A random token for tags and branches.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new RFC 3261 branch (magic cookie first).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_token(16))
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
