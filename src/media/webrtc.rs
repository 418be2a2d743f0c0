//! The WebRTC leg's transport, with the `webrtc` crate: an SDP offer in
//! (WHIP), an answer out with every ICE candidate in it (no trickle), then
//! DTLS-SRTP with the peer and its audio track as plain RTP packets. Our
//! own media path does the rest: [`MediaSession::start_channel`] runs the
//! same jitter buffer, decoding, 20 ms pacing, flush and recording as a SIP
//! call's, on the packets this module carries. One codec is negotiated per
//! call: Opus (48 kHz RTP clock) when offered, else PCMU; digits come as
//! RFC 4733 telephone-event at that codec's clock when the offer has it
//! (browsers send them with `RTCDTMFSender`), as on a SIP call.
//!
//! ICE offers host candidates only from the configured addresses, plus the
//! public address of a 1:1 NAT or a STUN server's reflexive one. Knows
//! nothing of agents or the database.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT,
};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc_util::marshal::Marshal;

use super::session::{MediaEvent, MediaSession, SessionConfig};
use super::{Codec, MediaError};

/// Largest SDP offer read (a browser's is 3–6 KB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// How long gathering may take before the answer goes out with what it has.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Packets queued between the stack and the media clock, each way (2 s of
/// 20 ms packets inbound; our side sends one per slot).
const INBOUND_QUEUE: usize = 100;
const OUTBOUND_QUEUE: usize = 50;
/// The payload type our media path knows the peer's RFC 4733 events by,
/// whatever number the peer gave them (unlike any audio codec's).
const EVENT_PT: u8 = 101;

/// How ICE is set up on this node (`[webrtc]`).
#[derive(Debug, Clone, Default)]
pub struct IceSettings {
    /// Host candidates only from these ranges; empty: every address.
    pub allowed: Vec<ipnet::IpNet>,
    pub include_loopback: bool,
    pub public_ips: Vec<String>,
    pub stun_servers: Vec<String>,
    pub port_min: u16,
    pub port_max: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    /// The offer is not an SDP offer we can answer (the peer's mistake).
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// The offer has no audio in a codec we speak.
    #[error("no common codec: offer Opus/48000 or PCMU/8000 audio")]
    NoCommonCodec,
    #[error("WebRTC: {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> WebRtcError {
    WebRtcError::Internal(e.to_string())
}

/// The offer's first audio section: its `m=` line (after `m=audio `) and
/// its `a=rtpmap:` values. One pass over the lines of an offer the caller
/// has capped at `MAX_OFFER_BYTES`.
fn first_audio(offer: &str) -> Option<(&str, Vec<&str>)> {
    let mut section: Option<(&str, Vec<&str>)> = None;
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if section.is_some() {
                break;
            }
            section = m.strip_prefix("audio ").map(|m| (m, Vec::new()));
        } else if let (Some((_, maps)), Some(map)) =
            (section.as_mut(), line.strip_prefix("a=rtpmap:"))
        {
            maps.push(map);
        }
    }
    section
}

/// An `a=rtpmap:` value: (payload type, encoding, clock rate).
fn rtpmap(map: &str) -> Option<(u8, &str, u32)> {
    let mut words = map.split_whitespace();
    let pt = words.next()?.parse::<u8>().ok().filter(|pt| *pt < 128)?;
    let mut parts = words.next()?.split('/');
    let enc = parts.next()?;
    let rate = parts.next()?.parse().ok()?;
    Some((pt, enc, rate))
}

/// The codec we answer with: Opus when the offer's first audio section
/// has it, else PCMU.
pub fn pick_codec(offer: &str) -> Result<Codec, WebRtcError> {
    if !offer.starts_with("v=0") {
        return Err(WebRtcError::BadOffer(
            "not an SDP session description".into(),
        ));
    }
    let (mline, maps) =
        first_audio(offer).ok_or_else(|| WebRtcError::BadOffer("no audio section".into()))?;
    // m=audio <port> <proto> <fmt>...: PCMU may be the static 0.
    let mut pcmu = mline.split_whitespace().skip(2).any(|f| f == "0");
    let mut opus = false;
    for (_, enc, rate) in maps.iter().filter_map(|m| rtpmap(m)) {
        opus |= enc.eq_ignore_ascii_case("opus") && rate == 48_000;
        pcmu |= enc.eq_ignore_ascii_case("PCMU") && rate == 8000;
    }
    match (opus, pcmu) {
        (true, _) => Ok(Codec::Opus),
        (false, true) => Ok(Codec::Pcmu),
        _ => Err(WebRtcError::NoCommonCodec),
    }
}

/// The offer's `telephone-event` payload types and clocks in its first
/// audio section, at most four. The answer keeps every one (webrtc-rs
/// matches them by name), and Chromium sends its digits with the 8 kHz one
/// even on an Opus call, so any of them is a digit.
pub fn telephone_events(offer: &str) -> Vec<(u8, u32)> {
    let Some((_, maps)) = first_audio(offer) else {
        return Vec::new();
    };
    maps.iter()
        .filter_map(|m| rtpmap(m))
        .filter(|(_, enc, _)| enc.eq_ignore_ascii_case("telephone-event"))
        .map(|(pt, _, rate)| (pt, rate))
        .take(4)
        .collect()
}

fn capability(codec: Codec) -> RTCRtpCodecCapability {
    match codec {
        Codec::Opus => RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodecCapability {
            mime_type: MIME_TYPE_PCMU.to_owned(),
            clock_rate: 8000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// Builds peer connections for this node's ICE settings.
pub struct WebRtcEngine {
    ice: IceSettings,
}

impl WebRtcEngine {
    pub fn new(ice: IceSettings) -> Result<WebRtcEngine, WebRtcError> {
        EphemeralUDP::new(ice.port_min, ice.port_max).map_err(internal)?;
        Ok(WebRtcEngine { ice })
    }

    fn settings(&self) -> Result<SettingEngine, WebRtcError> {
        let mut s = SettingEngine::default();
        s.set_udp_network(UDPNetwork::Ephemeral(
            EphemeralUDP::new(self.ice.port_min, self.ice.port_max).map_err(internal)?,
        ));
        s.set_network_types(vec![NetworkType::Udp4, NetworkType::Udp6]);
        s.set_include_loopback_candidate(self.ice.include_loopback);
        if !self.ice.allowed.is_empty() {
            let allowed = self.ice.allowed.clone();
            s.set_ip_filter(Box::new(move |ip: IpAddr| {
                allowed.iter().any(|n| n.contains(&ip))
            }));
        }
        if !self.ice.public_ips.is_empty() {
            s.set_nat_1to1_ips(self.ice.public_ips.clone(), RTCIceCandidateType::Host);
        }
        Ok(s)
    }

    /// Answers `offer`: a peer connection with one audio track each way,
    /// its answer holding every candidate. The media starts later
    /// ([`WebRtcPeer::start_media`]), once the call is ready for it.
    pub async fn answer(&self, offer: &str) -> Result<WebRtcPeer, WebRtcError> {
        if offer.len() > MAX_OFFER_BYTES {
            return Err(WebRtcError::BadOffer("offer too large".into()));
        }
        let codec = pick_codec(offer)?;
        let events: Vec<u8> = telephone_events(offer).iter().map(|(pt, _)| *pt).collect();
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    capability: capability(codec),
                    payload_type: codec.offer_payload_type(),
                    ..Default::default()
                },
                RTPCodecType::Audio,
            )
            .map_err(internal)?;
        if let Some((pt, clock_rate)) = telephone_events(offer).first().copied() {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        capability: RTCRtpCodecCapability {
                            mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
                            clock_rate,
                            channels: 0,
                            sdp_fmtp_line: "0-15".to_owned(),
                            rtcp_feedback: vec![],
                        },
                        payload_type: pt,
                        ..Default::default()
                    },
                    RTPCodecType::Audio,
                )
                .map_err(internal)?;
        }
        let registry =
            register_default_interceptors(Registry::new(), &mut media).map_err(internal)?;
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(self.settings()?)
            .build();
        let ice_servers = if self.ice.stun_servers.is_empty() {
            vec![]
        } else {
            vec![RTCIceServer {
                urls: self.ice.stun_servers.clone(),
                ..Default::default()
            }]
        };
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration {
                ice_servers,
                ..Default::default()
            })
            .await
            .map_err(internal)?,
        );
        match self.negotiate(&pc, codec, events, offer).await {
            Ok(peer) => Ok(peer),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    async fn negotiate(
        &self,
        pc: &Arc<RTCPeerConnection>,
        codec: Codec,
        events: Vec<u8>,
        offer: &str,
    ) -> Result<WebRtcPeer, WebRtcError> {
        let dtmf = !events.is_empty();
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            tracing::debug!(state = %s, "peer connection");
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));
        // The peer's audio, as RTP, to the media clock. Its payload type
        // is set to the one our receiver expects: one codec is negotiated,
        // and its digits (the offer's telephone-event) are `EVENT_PT`.
        let (in_tx, in_rx) = mpsc::channel::<(Vec<u8>, Instant)>(INBOUND_QUEUE);
        let pt = codec.offer_payload_type();
        pc.on_track(Box::new(move |track, _receiver, _transceiver| {
            let tx = in_tx.clone();
            let events = events.clone();
            Box::pin(async move {
                if track.kind() != RTPCodecType::Audio {
                    return;
                }
                tokio::spawn(async move {
                    let mut last_pt = None;
                    loop {
                        let mut pkt = match track.read_rtp().await {
                            Ok((pkt, _)) => pkt,
                            Err(e) => {
                                tracing::debug!(error = %e, "the peer's audio track ended");
                                break;
                            }
                        };
                        if last_pt != Some(pkt.header.payload_type) {
                            last_pt = Some(pkt.header.payload_type);
                            tracing::trace!(
                                pt = pkt.header.payload_type,
                                "the peer's payload type"
                            );
                        }
                        pkt.header.payload_type = if events.contains(&pkt.header.payload_type) {
                            EVENT_PT
                        } else {
                            pt
                        };
                        let Ok(bytes) = pkt.marshal() else { continue };
                        // Full: the media clock is behind; this packet is late anyway.
                        let _ = tx.try_send((bytes.to_vec(), Instant::now()));
                    }
                });
            })
        }));
        // Our track first: set before the offer, it takes the offer's audio
        // section (sendrecv); added after, it would get a section of its own.
        let track = Arc::new(TrackLocalStaticRTP::new(
            capability(codec),
            "audio".to_owned(),
            "switchboard".to_owned(),
        ));
        let local: Arc<dyn TrackLocal + Send + Sync> = track.clone();
        let sender = pc.add_track(local).await.map_err(internal)?;
        // RTCP from the peer must be read for the interceptors (NACK,
        // reports) to work; its content is theirs.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while sender.read(&mut buf).await.is_ok() {}
        });
        let desc = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        pc.set_remote_description(desc)
            .await
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(answer)
            .await
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        if tokio::time::timeout(GATHER_TIMEOUT, gathered.recv())
            .await
            .is_err()
        {
            tracing::warn!("ICE gathering unfinished; answering with the candidates so far");
        }
        let answer_sdp = pc
            .local_description()
            .await
            .ok_or_else(|| internal("no local description"))?
            .sdp;
        tracing::trace!(offer, answer = %answer_sdp, "SDP");
        // Our RTP to the peer, written by one task per call.
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUTBOUND_QUEUE);
        let writer = track.clone();
        tokio::spawn(async move {
            while let Some(packet) = out_rx.recv().await {
                if let Err(e) = writer.write(&packet).await {
                    tracing::trace!(error = %e, "RTP to the peer not sent");
                }
            }
        });
        Ok(WebRtcPeer {
            pc: pc.clone(),
            answer_sdp,
            codec,
            dtmf,
            state: state_rx,
            media: Some((out_tx, in_rx)),
        })
    }
}

/// Our RTP to the stack, and the peer's from it with arrival times.
type PacketChannels = (mpsc::Sender<Vec<u8>>, mpsc::Receiver<(Vec<u8>, Instant)>);

/// One answered peer.
pub struct WebRtcPeer {
    pc: Arc<RTCPeerConnection>,
    pub answer_sdp: String,
    pub codec: Codec,
    /// The peer may send digits (RFC 4733 negotiated at the codec's clock).
    pub dtmf: bool,
    state: watch::Receiver<RTCPeerConnectionState>,
    media: Option<PacketChannels>,
}

impl std::fmt::Debug for WebRtcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcPeer")
            .field("codec", &self.codec)
            .finish()
    }
}

/// How a peer connection settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Connected,
    /// ICE or DTLS failed, or the peer closed.
    Gone,
}

impl WebRtcPeer {
    /// Waits until the connection is up (ICE and DTLS done) or gone, at
    /// most `limit`.
    pub async fn connected(&mut self, limit: Duration) -> PeerState {
        let wait = async {
            loop {
                match *self.state.borrow_and_update() {
                    RTCPeerConnectionState::Connected => return PeerState::Connected,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return PeerState::Gone
                    }
                    _ => {}
                }
                if self.state.changed().await.is_err() {
                    return PeerState::Gone;
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .unwrap_or(PeerState::Gone)
    }

    /// Resolves when the connection fails or closes (with why).
    pub async fn gone(&mut self) -> &'static str {
        loop {
            match *self.state.borrow_and_update() {
                RTCPeerConnectionState::Failed => return "ICE failed",
                RTCPeerConnectionState::Closed => return "peer closed",
                _ => {}
            }
            if self.state.changed().await.is_err() {
                return "peer closed";
            }
        }
    }

    /// Starts our media path on this peer's packets (once).
    pub fn start_media(
        &mut self,
        record: Option<std::path::PathBuf>,
    ) -> Result<(MediaSession, mpsc::Receiver<MediaEvent>), MediaError> {
        let (out, inbound) = self
            .media
            .take()
            .ok_or_else(|| MediaError::Io(std::io::Error::other("media already started")))?;
        let pt = self.codec.offer_payload_type();
        // The peer's address as our receiver sees it: the packets are the
        // stack's, authenticated by SRTP; any fixed address does.
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut cfg = SessionConfig::new(peer, self.codec, pt, self.dtmf.then_some(EVENT_PT));
        cfg.record_path = record;
        MediaSession::start_channel(out, inbound, cfg)
    }

    /// The addresses of the selected ICE candidate pair (local, remote).
    pub async fn selected_pair(&self) -> Option<(String, String)> {
        let pair = self
            .pc
            .dtls_transport()
            .ice_transport()
            .get_selected_candidate_pair()
            .await?;
        Some((
            format!("{}:{}", pair.local.address, pair.local.port),
            format!("{}:{}", pair.remote.address, pair.remote.port),
        ))
    }

    /// Ends the connection (DTLS close, ICE stops).
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing the peer connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_AUDIO: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\nc=IN IP4 0.0.0.0\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";

    #[test]
    fn opus_is_preferred_then_pcmu() {
        assert_eq!(pick_codec(CHROME_AUDIO).unwrap(), Codec::Opus);
        let pcmu_only = CHROME_AUDIO
            .replace(" 111 0 8", " 0")
            .replace("a=rtpmap:111 opus/48000/2\r\n", "");
        assert_eq!(pick_codec(&pcmu_only).unwrap(), Codec::Pcmu);
        let pcma_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=rtpmap:8 PCMA/8000\r\n";
        assert!(matches!(
            pick_codec(pcma_only),
            Err(WebRtcError::NoCommonCodec)
        ));
    }

    #[test]
    fn telephone_events_of_the_audio_section_are_found() {
        let chrome = CHROME_AUDIO.replace(" 111 0 8", " 111 0 8 110 126")
            + "a=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-15\r\n\
               a=rtpmap:126 telephone-event/8000\r\n";
        assert_eq!(telephone_events(&chrome), [(110, 48_000), (126, 8_000)]);
        assert!(telephone_events(CHROME_AUDIO).is_empty());
        // Another section's events, a bad number: none.
        let video = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n\
                     m=video 9 X 96\r\na=rtpmap:96 telephone-event/48000\r\n";
        assert!(telephone_events(video).is_empty());
        let bad = "v=0\r\nm=audio 9 X 300\r\na=rtpmap:300 telephone-event/48000\r\n";
        assert!(telephone_events(bad).is_empty());
        // A hostile offer's list is cut.
        let many: String = (96..120)
            .map(|pt| format!("a=rtpmap:{pt} telephone-event/8000\r\n"))
            .collect();
        assert_eq!(
            telephone_events(&format!("v=0\r\nm=audio 9 X 96\r\n{many}")).len(),
            4
        );
    }

    #[test]
    fn offers_without_audio_or_sdp_are_refused() {
        assert!(matches!(pick_codec("hello"), Err(WebRtcError::BadOffer(_))));
        let video = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(matches!(pick_codec(video), Err(WebRtcError::BadOffer(_))));
        // Only the first audio section counts.
        let two =
            format!("{CHROME_AUDIO}m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n");
        assert_eq!(pick_codec(&two).unwrap(), Codec::Opus);
    }
}
