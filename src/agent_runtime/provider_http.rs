//! What every networked provider call (STT, LLM, TTS) shares: the guarded
//! client it goes out through, so a tenant's `base_url` never reaches the
//! node's own network, and its time limits. [`Budget`] is sans-IO (it is
//! told the instants and says when the call is given up); the helpers below
//! await the request and each body piece against it, so a provider that
//! never answers, drips or never ends costs a bounded time.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use super::provider_error::{status_error, ProviderError};
use crate::outbound::{Allowed, GuardedClient};

/// Bounds a request that sets no limit of its own (each provider request
/// sets its [`CallLimits::total`]).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The client every provider request goes out through: internal addresses
/// refused unless `allowed` (`[outbound] allow`) admits them.
pub fn provider_client(allowed: Allowed) -> Result<GuardedClient, ProviderError> {
    GuardedClient::new(allowed, CLIENT_TIMEOUT, "switchboard-providers/0.1")
        .map_err(|e| ProviderError::Config(format!("HTTP client: {e}")))
}

/// Time limits of one provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// To the first progress: the response headers, then (for a stream)
    /// its first token or audio.
    pub first_byte: Duration,
    /// Longest silence between two pieces of progress once started.
    pub stall: Duration,
    /// The whole call, however steadily the provider drips.
    pub total: Duration,
}

impl CallLimits {
    /// A transcription: the provider works before it answers, so the
    /// headers may take the whole time; the small JSON body follows at once.
    pub const STT: CallLimits = CallLimits {
        first_byte: Duration::from_secs(20),
        stall: Duration::from_secs(5),
        total: Duration::from_secs(20),
    };
    /// One sentence's speech, streamed as it is synthesised.
    pub const TTS: CallLimits = CallLimits {
        first_byte: Duration::from_secs(10),
        stall: Duration::from_secs(10),
        total: Duration::from_secs(60),
    };
    /// Between two tokens of a reply (the first token's limit and the
    /// whole reply's are configured: `[llm]`).
    pub const LLM_STALL: Duration = Duration::from_secs(15);
}

/// The deadlines of one provider call in progress.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limits: CallLimits,
    started: Instant,
    progressed: Option<Instant>,
}

impl Budget {
    pub fn start(limits: CallLimits, now: Instant) -> Budget {
        Budget {
            limits,
            started: now,
            progressed: None,
        }
    }

    /// The provider made progress at `now` (headers are not progress for a
    /// stream: its first token or audio is).
    pub fn progress(&mut self, now: Instant) {
        self.progressed = Some(now);
    }

    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// When the call is given up, and the limit that then runs out.
    pub fn deadline(&self) -> (Instant, Duration) {
        let whole = (self.started + self.limits.total, self.limits.total);
        let next = match self.progressed {
            None => (
                self.started + self.limits.first_byte,
                self.limits.first_byte,
            ),
            Some(at) => (at + self.limits.stall, self.limits.stall),
        };
        if next.0 < whole.0 {
            next
        } else {
            whole
        }
    }

    /// Awaits `work` until the deadline; past it, the timeout of the limit
    /// that ran out.
    pub async fn within<T>(&self, work: impl Future<Output = T>) -> Result<T, ProviderError> {
        let (at, limit) = self.deadline();
        tokio::time::timeout_at(at, work)
            .await
            .map_err(|_| ProviderError::Timeout(limit))
    }
}

/// Sends `req` (or says why it was refused before it left) and waits for
/// the response headers within `budget`; an error status becomes
/// [`ProviderError::Status`] with its body read to a bounded size.
pub(crate) async fn send(
    req: Result<reqwest::RequestBuilder, String>,
    budget: &Budget,
) -> Result<reqwest::Response, ProviderError> {
    let req = req.map_err(ProviderError::Refused)?;
    let total = budget.limits.total;
    let resp = budget
        .within(req.timeout(total).send())
        .await?
        .map_err(|e| ProviderError::from_http(e, total))?;
    if !resp.status().is_success() {
        return Err(status_error(resp).await);
    }
    Ok(resp)
}

/// A response body as a stream of pieces.
pub(crate) type Body = BoxStream<'static, reqwest::Result<Bytes>>;

pub(crate) fn body(resp: reqwest::Response) -> Body {
    resp.bytes_stream().boxed()
}

/// The next piece of `body` within `budget` (`None` at its end).
pub(crate) async fn next_piece(
    body: &mut Body,
    budget: &Budget,
) -> Result<Option<Bytes>, ProviderError> {
    match budget.within(body.next()).await? {
        None => Ok(None),
        Some(Ok(bytes)) => Ok(Some(bytes)),
        Some(Err(e)) => Err(ProviderError::from_http(e, budget.limits.total)),
    }
}

/// A whole (small) body: at most `max` bytes, each piece within the
/// budget's stall limit and all within its total.
pub(crate) async fn read_body(
    resp: reqwest::Response,
    max: usize,
    budget: &mut Budget,
) -> Result<Vec<u8>, ProviderError> {
    budget.progress(Instant::now());
    let mut body = body(resp);
    let mut out = Vec::new();
    while let Some(piece) = next_piece(&mut body, budget).await? {
        if out.len() + piece.len() > max {
            return Err(ProviderError::Protocol(format!(
                "answer longer than {max} bytes"
            )));
        }
        out.extend_from_slice(&piece);
        budget.progress(Instant::now());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CallLimits = CallLimits {
        first_byte: Duration::from_secs(2),
        stall: Duration::from_secs(3),
        total: Duration::from_secs(10),
    };

    #[test]
    fn the_first_byte_then_each_stall_then_the_whole_call() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Budget::start(LIMITS, t0);
        assert_eq!(
            b.deadline(),
            (t0 + s(2), s(2)),
            "waiting for the first byte"
        );
        b.progress(t0 + s(1));
        assert_eq!(b.deadline(), (t0 + s(4), s(3)), "a stall after progress");
        // A slow drip: progress every 2.9 s never stalls, but the whole
        // call ends at 10 s.
        b.progress(t0 + s(8));
        assert_eq!(b.deadline(), (t0 + s(10), s(10)), "the whole call");
    }

    #[tokio::test]
    async fn work_past_the_deadline_is_a_timeout_naming_the_limit() {
        let limits = CallLimits {
            first_byte: Duration::from_millis(20),
            ..LIMITS
        };
        let b = Budget::start(limits, Instant::now());
        let never = futures::future::pending::<()>();
        match b.within(never).await {
            Err(ProviderError::Timeout(limit)) => assert_eq!(limit, limits.first_byte),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.within(async { 7 }).await.unwrap(), 7);
    }
}
