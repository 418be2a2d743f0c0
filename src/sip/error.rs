//! The SIP layer's error type: what can fail when starting the server or
//! handling a message (a peer's mistake is a value here, never a panic).

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("binding SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] super::message::ParseError),
    #[error(transparent)]
    Sdp(#[from] super::sdp::SdpError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("SIP over TLS: {0}")]
    Tls(#[from] super::tls::TlsError),
}
