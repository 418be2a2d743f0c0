//! The one narrow interface between the SIP layer and whoever runs the call
//! (the agent runtime). SIP hands over an accepted call with its negotiated
//! media and a pair of channels; it knows nothing of agents.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::media::Codec;

/// Media parameters agreed in the SDP offer/answer.
#[derive(Debug, Clone)]
pub struct NegotiatedMedia {
    /// Our RTP address (the port is held by `rtp_port` until the call ends).
    pub local_addr: SocketAddr,
    /// Where the peer asked us to send RTP (from its SDP `c=`/`m=`).
    pub remote_addr: SocketAddr,
    pub codec: Codec,
    /// The payload type the offer used for `codec` (kept as offered).
    pub payload_type: u8,
    /// RFC 4733 `telephone-event` payload type, when both sides have it.
    pub telephone_event_pt: Option<u8>,
    pub ptime_ms: u32,
    /// Which sources the call's media may come from: the SDP address, or
    /// (latched as `rtp.latch` says) the IP the INVITE came from.
    pub sources: crate::media::receiver::SourcePolicy,
    /// SRTP keys (SDES, on a TLS leg), when the media is encrypted; the
    /// media session must be started with them (`SessionConfig::srtp`).
    pub srtp: Option<crate::media::srtp::SrtpKeys>,
}

/// Who ended a call (`call_logs.hangup_by`); a record's value.
pub use crate::records::HangupBy;

/// What SIP tells the call while it runs.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// The call is over (BYE received, ACK timeout, transport failure...).
    /// The receiver should stop media and finish its records.
    Hangup { by: HangupBy, reason: String },
    /// A digit from SIP INFO (`application/dtmf-relay`). RFC 4733 digits
    /// arrive through the media engine instead.
    Dtmf { digit: char, duration_ms: u32 },
    /// A re-INVITE changed the media (new address, codec, or hold).
    MediaChanged {
        media: NegotiatedMedia,
        on_hold: bool,
    },
    /// Outcome of a transfer the call asked for (REFER accepted or refused).
    TransferResult { accepted: bool, sip_code: u16 },
}

/// What the call asks of SIP.
#[derive(Debug, Clone)]
pub enum CallCommand {
    /// Send BYE and finish the call (`hangup_by = agent` or `system`).
    Hangup { by: HangupBy, reason: String },
    /// Blind transfer (REFER) to an E.164 number or a SIP URI.
    Transfer { target: String },
    /// A warm transfer's completion (RFC 5589 §7): this call (the caller's)
    /// is bridged to the node's call with the person (`person`, its
    /// call_logs id); ask the caller's phone to call the person itself,
    /// replacing the node's call with them (REFER with Replaces), when
    /// both phones said they can. Nothing changes when they cannot or the
    /// REFER fails: the bridge goes on. When it succeeds, both calls end
    /// (the caller's `transferred`).
    TransferReplacing { person: Uuid },
}

/// Which way a call was set up (`call_logs.direction`).
pub use crate::domain::CallDirection;

/// An answered call, handed to the runtime: inbound once our 200 OK is
/// sent, outbound once the far end's 2xx is ACKed. The runtime runs both
/// alike (the agent speaks first).
#[derive(Debug)]
pub struct IncomingCall {
    pub call_log_id: Uuid,
    pub direction: CallDirection,
    pub sip_call_id: String,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub phone_number_id: Option<Uuid>,
    pub sip_trunk_id: Option<Uuid>,
    /// E.164 when it could be normalised, else the raw user part. On an
    /// outbound call `from` is our number and `to` the person called.
    pub from_number: String,
    pub to_number: String,
    /// Outbound calls: the API request's `variables`, for the agent's
    /// prompt and greeting (`{{name}}`). Empty for inbound calls.
    pub variables: Vec<(String, String)>,
    pub media: NegotiatedMedia,
    /// The bound RTP socket for `media.local_addr`; the runtime's media
    /// session takes it. Dropping it (and the port lease) frees the port.
    pub rtp_socket: std::net::UdpSocket,
    pub rtp_port: crate::media::ports::PortLease,
    pub events: mpsc::Receiver<CallEvent>,
    pub commands: mpsc::Sender<CallCommand>,
}

/// A call the runner cannot take now: answered 503 with Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// For the call_logs row, e.g. `overloaded`.
    pub reason: &'static str,
    pub retry_after_secs: u32,
}

/// Implemented by whoever runs accepted calls. `on_call` must not block:
/// spawn the call's task and return.
pub trait CallHandler: Send + Sync + 'static {
    fn on_call(&self, call: IncomingCall);
    /// Asked before a call is answered: can it be served now?
    fn admits(&self) -> Result<(), Busy> {
        Ok(())
    }
}

impl<F> CallHandler for F
where
    F: Fn(IncomingCall) + Send + Sync + 'static,
{
    fn on_call(&self, call: IncomingCall) {
        self(call)
    }
}

pub type SharedCallHandler = Arc<dyn CallHandler>;
