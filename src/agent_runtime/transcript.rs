//! A live call's transcript as it happens, for watchers (the console's live
//! view): what the caller said as each turn is committed, and each sentence
//! of the agent as it is queued to play. Bounded: a watcher that falls
//! behind loses lines (it is told how many), and a late watcher gets at
//! most the last [`BACKLOG`] lines first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

/// Lines kept for a watcher that arrives mid-call.
pub const BACKLOG: usize = 200;
/// Lines a slow watcher may lag before it loses some.
const CHANNEL: usize = 64;
/// Characters of one line kept (a turn or a sentence; longer is cut).
const MAX_LINE_CHARS: usize = 4000;

/// Who a transcript line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The caller's committed turn, as the recogniser heard it.
    User,
    /// One sentence of the agent, queued for playout.
    Assistant,
    /// Something that happened to the conversation (a barge-in).
    Event,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptLine {
    /// 1, 2, … in the order of the call; a gap means lines were lost.
    pub seq: u64,
    pub role: Speaker,
    pub text: String,
    pub at: DateTime<Utc>,
}

struct Inner {
    lines: VecDeque<TranscriptLine>,
    next_seq: u64,
}

/// One call's transcript feed. Cheap to clone; the stream ends for
/// watchers when the last clone (the call's) is dropped.
#[derive(Clone)]
pub struct TranscriptFeed {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<TranscriptLine>,
}

impl Default for TranscriptFeed {
    fn default() -> Self {
        TranscriptFeed::new()
    }
}

impl TranscriptFeed {
    pub fn new() -> TranscriptFeed {
        let (tx, _) = broadcast::channel(CHANNEL);
        TranscriptFeed {
            inner: Arc::new(Mutex::new(Inner {
                lines: VecDeque::new(),
                next_seq: 1,
            })),
            tx,
        }
    }

    /// Adds a line (empty text is ignored).
    pub fn publish(&self, role: Speaker, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let line = TranscriptLine {
            seq: inner.next_seq,
            role,
            text: text.chars().take(MAX_LINE_CHARS).collect(),
            at: Utc::now(),
        };
        inner.next_seq += 1;
        if inner.lines.len() == BACKLOG {
            inner.lines.pop_front();
        }
        inner.lines.push_back(line.clone());
        // Sent under the lock, so `subscribe` sees each line exactly once:
        // either in its snapshot or on its receiver. No watcher is no error.
        let _ = self.tx.send(line);
    }

    /// The lines so far and a receiver for the ones to come.
    pub fn subscribe(&self) -> (Vec<TranscriptLine>, broadcast::Receiver<TranscriptLine>) {
        match self.inner.lock() {
            Ok(inner) => (inner.lines.iter().cloned().collect(), self.tx.subscribe()),
            Err(_) => (Vec::new(), self.tx.subscribe()),
        }
    }

    /// A receiver that ends when the feed's owners are gone.
    pub fn watcher(&self) -> TranscriptWatcher {
        let (backlog, rx) = self.subscribe();
        TranscriptWatcher {
            backlog: backlog.into(),
            rx,
        }
    }
}

/// What a watcher reads next.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    Line(TranscriptLine),
    /// This many lines went by while the watcher was too slow.
    Lost(u64),
}

/// Reads a feed from a point in time on: its backlog, then live lines.
/// Holds no sender, so it sees the end of the call.
pub struct TranscriptWatcher {
    backlog: VecDeque<TranscriptLine>,
    rx: broadcast::Receiver<TranscriptLine>,
}

impl TranscriptWatcher {
    /// The next line, or `None` once the call has ended.
    pub async fn next(&mut self) -> Option<Watched> {
        if let Some(line) = self.backlog.pop_front() {
            return Some(Watched::Line(line));
        }
        match self.rx.recv().await {
            Ok(line) => Some(Watched::Line(line)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Watched::Lost(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(w: Option<Watched>) -> String {
        match w {
            Some(Watched::Line(l)) => format!("{}:{:?}:{}", l.seq, l.role, l.text),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn late_watcher_gets_backlog_then_live_lines_then_the_end() {
        let feed = TranscriptFeed::new();
        feed.publish(Speaker::Assistant, "Hello, how can I help?");
        feed.publish(Speaker::User, "  ");
        let mut w = feed.watcher();
        feed.publish(Speaker::User, "When do you open?");
        assert_eq!(text(w.next().await), "1:Assistant:Hello, how can I help?");
        assert_eq!(text(w.next().await), "2:User:When do you open?");
        drop(feed);
        assert_eq!(w.next().await, None);
    }

    #[tokio::test]
    async fn bounded_backlog_and_lines_and_lag_is_reported() {
        let feed = TranscriptFeed::new();
        for i in 0..(BACKLOG + 5) {
            feed.publish(Speaker::Assistant, &format!("line {i}"));
        }
        let (backlog, _) = feed.subscribe();
        assert_eq!(backlog.len(), BACKLOG);
        assert_eq!(backlog[0].seq, 6);
        let long = "x".repeat(MAX_LINE_CHARS * 2);
        let mut w = feed.watcher();
        for _ in 0..BACKLOG {
            w.next().await;
        }
        for _ in 0..(CHANNEL + 3) {
            feed.publish(Speaker::User, &long);
        }
        assert_eq!(w.next().await, Some(Watched::Lost(3)));
        match w.next().await {
            Some(Watched::Line(l)) => assert_eq!(l.text.chars().count(), MAX_LINE_CHARS),
            other => panic!("{other:?}"),
        }
    }
}
