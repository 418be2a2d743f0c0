//! SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for one
//! audio stream: pick the first codec of our preference list the offer has,
//! keep the offer's payload types, answer `telephone-event` at the chosen
//! codec's clock rate (8 kHz, or 48 kHz beside Opus) when offered, and for
//! RTP/SAVP take the first usable SDES key (`sdes`).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::sdes::{self, Crypto};
use crate::media::srtp::SrtpKey;
use crate::media::Codec;

const MAX_FORMATS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP malformed: {0}")]
    Malformed(&'static str),
    #[error("no audio stream with a common codec")]
    NoCommonCodec,
    /// RTP/SAVP offered without an `a=crypto` line this node can use.
    #[error("SRTP offered without a usable crypto line (AES_CM_128_HMAC_SHA1_80, one inline key)")]
    NoUsableCrypto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer's direction for an offered one (RFC 3264 §6.1).
    fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    pub payload_type: u8,
    pub name: String,
    pub clock_rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Formats as written on the m= line (payload types for RTP).
    pub formats: Vec<String>,
    pub rtpmaps: Vec<Rtpmap>,
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub ptime: Option<u32>,
    /// Usable SDES keys, in the offer's order (unusable lines skipped).
    pub crypto: Vec<Crypto>,
    /// `a=crypto` lines seen, usable or not.
    pub crypto_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin_session: String,
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaDescription>,
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut parts = value.split_whitespace();
    let (net, _addrtype, addr) = (parts.next(), parts.next(), parts.next());
    if net != Some("IN") {
        return Err(SdpError::Malformed("c= not IN"));
    }
    let addr = addr.ok_or(SdpError::Malformed("c= without address"))?;
    addr.split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| SdpError::Malformed("c= address not an IP"))
}

fn parse_direction(attr: &str) -> Option<Direction> {
    Some(match attr {
        "sendrecv" => Direction::SendRecv,
        "sendonly" => Direction::SendOnly,
        "recvonly" => Direction::RecvOnly,
        "inactive" => Direction::Inactive,
        _ => return None,
    })
}

/// Parses an SDP body. Unknown lines are ignored (RFC 4566 §5).
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8"))?;
    let mut sdp = SessionDescription {
        origin_session: String::new(),
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut seen_version = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line
            .split_once('=')
            .ok_or(SdpError::Malformed("line without ="))?;
        match kind {
            "v" => {
                if value.trim() != "0" {
                    return Err(SdpError::Malformed("v= not 0"));
                }
                seen_version = true;
            }
            "o" => sdp.origin_session = value.split_whitespace().nth(1).unwrap_or("").to_string(),
            "c" => {
                let ip = parse_connection(value)?;
                match sdp.media.last_mut() {
                    Some(m) => m.connection = Some(ip),
                    None => sdp.connection = Some(ip),
                }
            }
            "m" => {
                if sdp.media.len() >= 16 {
                    return Err(SdpError::Malformed("too many m= lines"));
                }
                let mut parts = value.split_whitespace();
                let kind = parts
                    .next()
                    .ok_or(SdpError::Malformed("m= empty"))?
                    .to_string();
                let port = parts.next().ok_or(SdpError::Malformed("m= without port"))?;
                let port: u16 = port
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| SdpError::Malformed("m= port"))?;
                let proto = parts
                    .next()
                    .ok_or(SdpError::Malformed("m= without proto"))?
                    .to_string();
                let formats: Vec<String> = parts.take(MAX_FORMATS).map(str::to_string).collect();
                sdp.media.push(MediaDescription {
                    kind,
                    port,
                    proto,
                    formats,
                    rtpmaps: Vec::new(),
                    connection: None,
                    direction: None,
                    ptime: None,
                    crypto: Vec::new(),
                    crypto_lines: 0,
                });
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                if let Some(d) = parse_direction(name) {
                    match sdp.media.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => sdp.direction = Some(d),
                    }
                    continue;
                }
                let Some(m) = sdp.media.last_mut() else {
                    continue;
                };
                match name {
                    "rtpmap" => {
                        let (pt, enc) = arg.split_once(' ').ok_or(SdpError::Malformed("rtpmap"))?;
                        let payload_type: u8 = pt
                            .trim()
                            .parse()
                            .map_err(|_| SdpError::Malformed("rtpmap pt"))?;
                        let mut enc = enc.trim().split('/');
                        let name = enc.next().unwrap_or("").to_string();
                        let clock_rate = enc.next().and_then(|c| c.parse().ok()).unwrap_or(8000);
                        if m.rtpmaps.len() < MAX_FORMATS {
                            m.rtpmaps.push(Rtpmap {
                                payload_type,
                                name,
                                clock_rate,
                            });
                        }
                    }
                    "ptime" => m.ptime = arg.trim().parse().ok().filter(|p| (10..=200).contains(p)),
                    "crypto" if m.crypto_lines < sdes::MAX_CRYPTO_LINES => {
                        m.crypto_lines += 1;
                        m.crypto.extend(sdes::parse_crypto(arg));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::Malformed("no v= line"));
    }
    Ok(sdp)
}

/// What the offer/answer agreed, ready for `call::NegotiatedMedia`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the accepted m= line in the offer.
    pub media_index: usize,
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    pub ptime_ms: u32,
    pub remote: SocketAddr,
    /// The answer's direction; anything but sendrecv means hold.
    pub direction: Direction,
    pub on_hold: bool,
    /// RTP/SAVP: the peer's SDES key (its tag is echoed in our answer).
    pub srtp: Option<Crypto>,
}

impl Negotiated {
    /// The RTP profile of the accepted stream.
    pub fn proto(&self) -> &'static str {
        if self.srtp.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        }
    }
}

fn payload_type_for(m: &MediaDescription, codec: Codec) -> Option<u8> {
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let mapped = m.rtpmaps.iter().find(|r| r.payload_type == pt);
        let matches = match mapped {
            Some(r) => {
                r.name.eq_ignore_ascii_case(codec.sdp_name())
                    && r.clock_rate == codec.rtp_clock_rate()
            }
            // Static payload types need no rtpmap (RFC 3551).
            None => Some(pt) == codec.static_payload_type(),
        };
        if matches {
            return Some(pt);
        }
    }
    None
}

/// Picks the first offered audio stream that has one of `prefs`, in our
/// order: plain RTP/AVP, or RTP/SAVP with a usable SDES key.
pub fn negotiate(offer: &SessionDescription, prefs: &[Codec]) -> Result<Negotiated, SdpError> {
    let mut keyless_savp = false;
    for (index, m) in offer.media.iter().enumerate() {
        let secure = m.proto.eq_ignore_ascii_case("RTP/SAVP");
        if m.kind != "audio" || m.port == 0 || !(m.proto.starts_with("RTP/AVP") || secure) {
            continue;
        }
        let Some((codec, payload_type)) = prefs
            .iter()
            .find_map(|c| payload_type_for(m, *c).map(|pt| (*c, pt)))
        else {
            continue;
        };
        let srtp = match (secure, m.crypto.first()) {
            (false, _) => None,
            (true, Some(c)) => Some(c.clone()),
            (true, None) => {
                keyless_savp = true;
                continue;
            }
        };
        // RFC 4733 §2.1: the event clock is the audio codec's.
        let telephone_event_pt = m
            .rtpmaps
            .iter()
            .find(|r| {
                r.name.eq_ignore_ascii_case("telephone-event")
                    && r.clock_rate == codec.rtp_clock_rate()
            })
            .map(|r| r.payload_type)
            .filter(|pt| m.formats.iter().any(|f| f == &pt.to_string()));
        let ip = m
            .connection
            .or(offer.connection)
            .ok_or(SdpError::Malformed("no c= line"))?;
        let offered = m
            .direction
            .or(offer.direction)
            .unwrap_or(Direction::SendRecv);
        let on_hold =
            ip.is_unspecified() || matches!(offered, Direction::SendOnly | Direction::Inactive);
        return Ok(Negotiated {
            media_index: index,
            codec,
            payload_type,
            telephone_event_pt,
            ptime_ms: m.ptime.unwrap_or(20),
            remote: SocketAddr::new(ip, m.port),
            direction: offered.answer(),
            on_hold,
            srtp,
        });
    }
    Err(if keyless_savp {
        SdpError::NoUsableCrypto
    } else {
        SdpError::NoCommonCodec
    })
}

fn rtpmap_line(out: &mut String, pt: u8, codec: Codec) {
    let _ = write!(
        out,
        "a=rtpmap:{pt} {}/{}",
        codec.sdp_name(),
        codec.rtp_clock_rate()
    );
    if let Some(ch) = codec.rtpmap_channels() {
        let _ = write!(out, "/{ch}");
    }
    out.push_str("\r\n");
    if codec == Codec::Opus {
        // Mono speech with in-band FEC (RFC 7587 §6.1).
        let _ = write!(out, "a=fmtp:{pt} useinbandfec=1; stereo=0\r\n");
    }
}

fn header(out: &mut String, local: IpAddr, session_id: u64, version: u64) {
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let _ = write!(
        out,
        "v=0\r\no=switchboard {session_id} {version} IN {family} {local}\r\ns=switchboard\r\nc=IN {family} {local}\r\nt=0 0\r\n"
    );
}

/// The answer to `offer`: the accepted stream with our RTP port, every other
/// stream refused with port 0 (RFC 3264 §6). On RTP/SAVP `local_key` is our
/// SDES key, answered under the offer's chosen tag.
pub fn build_answer(
    offer: &SessionDescription,
    n: &Negotiated,
    local: SocketAddr,
    session_id: u64,
    version: u64,
    local_key: Option<&SrtpKey>,
) -> String {
    let mut out = String::with_capacity(400);
    header(&mut out, local.ip(), session_id, version);
    for (i, m) in offer.media.iter().enumerate() {
        if i != n.media_index {
            let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
            let _ = write!(out, "m={} 0 {} {}\r\n", m.kind, m.proto, fmt);
            continue;
        }
        let _ = write!(
            out,
            "m=audio {} {} {}",
            local.port(),
            n.proto(),
            n.payload_type
        );
        if let Some(te) = n.telephone_event_pt {
            let _ = write!(out, " {te}");
        }
        out.push_str("\r\n");
        rtpmap_line(&mut out, n.payload_type, n.codec);
        if let Some(te) = n.telephone_event_pt {
            let _ = write!(
                out,
                "a=rtpmap:{te} telephone-event/{}\r\na=fmtp:{te} 0-16\r\n",
                n.codec.rtp_clock_rate()
            );
        }
        if let (Some(theirs), Some(key)) = (&n.srtp, local_key) {
            let _ = write!(
                out,
                "a=crypto:{}\r\n",
                sdes::crypto_attribute(theirs.tag, key)
            );
        }
        let _ = write!(
            out,
            "a=ptime:{}\r\na={}\r\n",
            n.ptime_ms,
            n.direction.attr()
        );
    }
    out
}

/// The `telephone-event` payload types of our offers, per clock rate.
const OFFER_EVENTS: [(u32, u8); 2] = [(8000, 101), (48_000, 102)];

/// Our offer (offerless INVITE answered in the 200, or outbound calls):
/// `prefs` in order, `telephone-event` at each of their clock rates, and
/// with `key` RTP/SAVP with our SDES key under tag 1.
pub fn build_offer(
    prefs: &[Codec],
    local: SocketAddr,
    session_id: u64,
    version: u64,
    key: Option<&SrtpKey>,
) -> String {
    let mut out = String::with_capacity(500);
    header(&mut out, local.ip(), session_id, version);
    let proto = if key.is_some() { "RTP/SAVP" } else { "RTP/AVP" };
    let events: Vec<(u32, u8)> = OFFER_EVENTS
        .iter()
        .copied()
        .filter(|(rate, _)| prefs.iter().any(|c| c.rtp_clock_rate() == *rate))
        .collect();
    let _ = write!(out, "m=audio {} {proto}", local.port());
    for c in prefs {
        let _ = write!(out, " {}", c.offer_payload_type());
    }
    for (_, pt) in &events {
        let _ = write!(out, " {pt}");
    }
    out.push_str("\r\n");
    for c in prefs {
        rtpmap_line(&mut out, c.offer_payload_type(), *c);
    }
    for (rate, pt) in &events {
        let _ = write!(
            out,
            "a=rtpmap:{pt} telephone-event/{rate}\r\na=fmtp:{pt} 0-16\r\n"
        );
    }
    if let Some(k) = key {
        let _ = write!(out, "a=crypto:{}\r\n", sdes::crypto_attribute(1, k));
    }
    out.push_str("a=ptime:20\r\na=sendrecv\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n\
m=video 6002 RTP/AVP 99\r\na=rtpmap:99 H264/90000\r\n";

    #[test]
    fn picks_our_first_preference_keeps_payload_types_and_dtmf() {
        let offer = parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&offer, &[Codec::Pcma, Codec::Pcmu]).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event_pt),
            (Codec::Pcma, 8, Some(101))
        );
        assert_eq!(
            n.remote,
            "127.0.0.1:6000".parse::<std::net::SocketAddr>().unwrap()
        );
        assert!(!n.on_hold);
        let answer = build_answer(&offer, &n, "127.0.0.1:20000".parse().unwrap(), 1, 1, None);
        assert!(
            answer.contains("m=audio 20000 RTP/AVP 8 101\r\n"),
            "{answer}"
        );
        assert!(answer.contains("m=video 0 RTP/AVP 99\r\n"));
        assert!(answer.contains("a=sendrecv"));
        // The answer parses back.
        let back = parse(answer.as_bytes()).unwrap();
        assert_eq!(back.media.len(), 2);
    }

    #[test]
    fn dynamic_payload_type_by_rtpmap_and_hold() {
        let sdp = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 7000 RTP/AVP 110\r\na=rtpmap:110 PCMU/8000\r\na=sendonly\r\n";
        let n = negotiate(&parse(sdp.as_bytes()).unwrap(), &[Codec::Pcmu]).unwrap();
        assert_eq!(n.payload_type, 110);
        assert!(n.on_hold);
        assert_eq!(n.direction, Direction::RecvOnly);
    }

    #[test]
    fn g729_only_has_no_common_codec_and_garbage_is_an_error() {
        let sdp =
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        assert_eq!(
            negotiate(&parse(sdp.as_bytes()).unwrap(), &[Codec::Pcmu, Codec::Pcma]),
            Err(SdpError::NoCommonCodec)
        );
        assert!(parse(b"hello").is_err());
        assert!(parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
        let no_c = parse(b"v=0\r\nm=audio 5 RTP/AVP 0\r\n").unwrap();
        assert!(negotiate(&no_c, &[Codec::Pcmu]).is_err());
    }

    #[test]
    fn offer_lists_our_codecs() {
        let offer = build_offer(
            &[Codec::Pcmu, Codec::Pcma],
            "127.0.0.1:20002".parse().unwrap(),
            7,
            1,
            None,
        );
        let parsed = parse(offer.as_bytes()).unwrap();
        let n = negotiate(&parsed, &[Codec::Pcma]).unwrap();
        assert_eq!((n.payload_type, n.telephone_event_pt), (8, Some(101)));
    }

    #[test]
    fn savp_takes_the_first_usable_key_and_answers_its_tag() {
        let theirs = SrtpKey::random();
        let offer = format!(
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/SAVP 0 101\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAAA\r\na=crypto:2 {}\r\n",
            sdes::crypto_attribute(9, &theirs)
                .split_once(' ')
                .unwrap()
                .1
        );
        let parsed = parse(offer.as_bytes()).unwrap();
        let n = negotiate(&parsed, &[Codec::Pcmu]).unwrap();
        let chosen = n.srtp.clone().expect("SRTP");
        assert_eq!((chosen.tag, &chosen.key), (2, &theirs));
        let ours = SrtpKey::random();
        let answer = build_answer(
            &parsed,
            &n,
            "127.0.0.1:20000".parse().unwrap(),
            1,
            1,
            Some(&ours),
        );
        assert!(
            answer.contains("m=audio 20000 RTP/SAVP 0 101\r\n"),
            "{answer}"
        );
        let back = parse(answer.as_bytes()).unwrap();
        assert_eq!(back.media[0].crypto[0].tag, 2);
        assert_eq!(back.media[0].crypto[0].key, ours);
        // SAVP with no usable key: refused as such (488), not as codecs.
        let keyless = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/SAVP 0\r\n\
                       a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:AAAA\r\n";
        assert_eq!(
            negotiate(&parse(keyless.as_bytes()).unwrap(), &[Codec::Pcmu]),
            Err(SdpError::NoUsableCrypto)
        );
        // Our own SAVP offer parses back with its key.
        let offer = build_offer(
            &[Codec::Pcmu],
            "127.0.0.1:20002".parse().unwrap(),
            1,
            1,
            Some(&ours),
        );
        let n = negotiate(&parse(offer.as_bytes()).unwrap(), &[Codec::Pcmu]).unwrap();
        assert_eq!(n.srtp.map(|c| (c.tag, c.key)), Some((1, ours)));
    }

    #[test]
    fn opus_negotiates_at_48_khz_with_its_own_telephone_event() {
        let offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 96 0 101 100\r\n\
                     a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
                     a=rtpmap:101 telephone-event/48000\r\na=rtpmap:100 telephone-event/8000\r\n";
        let parsed = parse(offer.as_bytes()).unwrap();
        let n = negotiate(&parsed, &[Codec::Opus, Codec::Pcmu]).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event_pt),
            (Codec::Opus, 96, Some(101))
        );
        let answer = build_answer(&parsed, &n, "127.0.0.1:20000".parse().unwrap(), 1, 1, None);
        assert!(answer.contains("a=rtpmap:96 opus/48000/2\r\n"), "{answer}");
        assert!(
            answer.contains("a=rtpmap:101 telephone-event/48000\r\n"),
            "{answer}"
        );
        // PCMU first: the 8 kHz event type goes with it.
        let n = negotiate(&parsed, &[Codec::Pcmu, Codec::Opus]).unwrap();
        assert_eq!((n.codec, n.telephone_event_pt), (Codec::Pcmu, Some(100)));
        // Our offer lists Opus on a dynamic type and events at both rates.
        let ours = build_offer(
            &[Codec::Opus, Codec::Pcmu],
            "127.0.0.1:20002".parse().unwrap(),
            1,
            1,
            None,
        );
        assert!(
            ours.contains("m=audio 20002 RTP/AVP 111 0 101 102\r\n"),
            "{ours}"
        );
        let n = negotiate(&parse(ours.as_bytes()).unwrap(), &[Codec::Opus]).unwrap();
        assert_eq!((n.payload_type, n.telephone_event_pt), (111, Some(102)));
    }
}
