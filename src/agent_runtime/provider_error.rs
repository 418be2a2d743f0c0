//! The one error type of the provider layer (STT, LLM, TTS, embeddings,
//! retrieval). Callers turn any of these into the persona's fallback policy;
//! none of them is a reason to drop a call.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider is not usable as configured (missing model file, key, URL).
    #[error("provider not configured: {0}")]
    Config(String),
    /// The network request failed before any answer (connect, TLS, reset).
    #[error("provider unreachable: {0}")]
    Network(String),
    /// The provider's URL (or a redirect's) is not fetched: an internal
    /// address the operator has not allowed, or not an http(s) URL.
    #[error("provider URL refused: {0}")]
    Refused(String),
    /// The provider answered with an HTTP error status.
    #[error("provider returned HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// No answer (or no first token) within the deadline.
    #[error("provider timed out after {0:?}")]
    Timeout(Duration),
    /// The provider answered something we cannot read.
    #[error("provider protocol error: {0}")]
    Protocol(String),
    /// A local engine (whisper, espeak-ng) failed.
    #[error("local engine failed: {0}")]
    Engine(String),
    /// The request was cancelled (barge-in, hangup).
    #[error("cancelled")]
    Cancelled,
    /// The knowledge base could not be queried.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ProviderError {
    /// Classifies a reqwest error (timeouts apart from the rest).
    pub(crate) fn from_http(err: reqwest::Error, timeout: Duration) -> ProviderError {
        if let Some(refused) = crate::outbound::refusal(&err) {
            ProviderError::Refused(refused)
        } else if err.is_timeout() {
            ProviderError::Timeout(timeout)
        } else if err.is_decode() || err.is_body() {
            ProviderError::Protocol(err.to_string())
        } else {
            ProviderError::Network(err.without_url().to_string())
        }
    }
}

/// Most of an error response's body that is read: a provider (or anything
/// behind a tenant's `base_url`) that answers an error with an endless body
/// costs at most this much memory and the time it takes to send it.
const ERROR_BODY_MAX: usize = 8 * 1024;
/// Of which this much is kept in the error message.
const ERROR_MESSAGE_MAX: usize = 500;
/// Longest time spent reading an error body.
const ERROR_BODY_TIME: Duration = Duration::from_secs(2);

/// Reads an error response's body (bounded in size and time) into a
/// `Status` error.
pub(crate) async fn status_error(mut resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let mut buf: Vec<u8> = Vec::new();
    let read = async {
        while buf.len() < ERROR_BODY_MAX {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ERROR_BODY_MAX - buf.len();
                    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIME, read).await;
    let mut body = String::from_utf8_lossy(&buf).into_owned();
    if body.len() > ERROR_MESSAGE_MAX {
        let mut cut = ERROR_MESSAGE_MAX;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    ProviderError::Status { status, body }
}
