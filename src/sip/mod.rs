//! SIP over UDP, TCP, TLS and WebSocket: message parsing (rsip), sans-IO
//! transactions, dialogs and session timers, SDP offer/answer with SDES
//! keys for SRTP, digest authentication, inbound routing,
//! outbound INVITEs (`dial`, `outbound_leg`), and the narrow call interface
//! handed to the agent runtime.
pub mod call;
mod calls;
mod core;
pub mod decide;
pub mod dial;
pub mod dialog;
pub mod digest;
mod error;
pub mod guard;
pub mod header;
mod in_dialog;
pub mod message;
pub mod number;
pub mod outbound_leg;
pub mod records;
pub mod refer;
pub mod replaces;
pub mod routing;
pub mod sdes;
pub mod sdp;
pub mod server;
pub mod session_timer;
mod strangers;
pub mod stream;
pub mod tls;
pub mod transaction;
pub mod transport;
pub mod trunk_profile;
mod websocket;

pub use error::SipError;
pub use server::{SipOptions, SipServer, SipServerHandle};
