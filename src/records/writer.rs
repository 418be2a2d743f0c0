//! The thin tokio driver of the [`Journal`]: one task per node writes the
//! queue's batches to PostgreSQL, reads the spill file back, waits out
//! back-offs and syncs the file once a second. Submitting never waits on
//! the database: a record goes to memory, or (queue full) one `write` to
//! the spill file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::journal::{Action, AfterFailure, Failure, Journal, RecordStats, Submitted};
use super::kinds::Record;
use super::spool::Spool;
use crate::config::RecordsConfig;

/// Records per transaction: about 20 short calls, written in about a dozen
/// statements (see `batch`).
const BATCH: usize = 256;
/// How often appended spill lines are synced to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

struct State {
    journal: Journal,
    spool: Option<Spool>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    stop: CancellationToken,
    spool_dir: Option<PathBuf>,
}

/// Handle to the node's record writer. Cheap to clone.
#[derive(Clone)]
pub struct RecordWriter {
    shared: Arc<Shared>,
}

/// What [`RecordWriter::close`] did with what was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Everything reached the database.
    pub flushed: bool,
    /// Records written to the spill file for the next start.
    pub spilled: usize,
    /// Records lost (no spill file, or it failed).
    pub lost: usize,
}

impl RecordWriter {
    /// Opens the spill folder (replaying what earlier runs left in it) and
    /// starts the writer task. With no folder configured, or one another
    /// node holds, records live in memory only and a full queue drops them.
    pub fn start(pool: PgPool, config: &RecordsConfig) -> RecordWriter {
        let spool_dir =
            (!config.spool_dir.as_os_str().is_empty()).then(|| config.spool_dir.clone());
        let (spool, unread) = match &spool_dir {
            None => (None, 0),
            Some(dir) => match Spool::open(dir, config.spool_max_mb.saturating_mul(1 << 20)) {
                Ok((spool, unread)) => {
                    if unread > 0 {
                        tracing::info!(records = unread, dir = %dir.display(), "replaying records spilled by an earlier run");
                    }
                    (Some(spool), unread)
                }
                Err(err) => {
                    tracing::error!(error = %err, dir = %dir.display(), "no spill file: records are kept in memory only");
                    (None, 0)
                }
            },
        };
        let journal = Journal::new(config.queue_capacity, BATCH, spool.is_some(), unread);
        let shared = Arc::new(Shared {
            state: Mutex::new(State { journal, spool }),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            spool_dir,
        });
        tokio::spawn(prune(pool.clone()));
        tokio::spawn(run(shared.clone(), pool));
        RecordWriter { shared }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Queues a record; never waits on the database.
    pub fn submit(&self, record: Record) {
        let mut st = self.state();
        let st = &mut *st;
        match st.journal.submit(record) {
            Submitted::Queued => {
                crate::metrics::metrics().record_queue_depth(st.journal.pending());
                self.shared.wake.notify_one()
            }
            Submitted::Spill(record) => {
                let Some(spool) = st.spool.as_mut() else {
                    st.journal.spill_failed();
                    return;
                };
                match spool.append(&record) {
                    Ok(()) => {
                        st.journal.spilled();
                        let spilled = st.journal.stats().spilled;
                        if spilled == 1 || spilled.is_multiple_of(10_000) {
                            tracing::warn!(
                                spilled,
                                bytes = spool.bytes(),
                                "record queue full: records go to the spill file"
                            );
                        }
                    }
                    Err(err) => {
                        st.journal.spill_failed();
                        let lost = st.journal.stats().lost;
                        if lost == 1 || lost.is_multiple_of(1_000) {
                            tracing::error!(error = %err, lost, kind = record.kind(), "record queue and spill file full: a record was not kept");
                        }
                    }
                }
                self.shared.wake.notify_one();
            }
            Submitted::Refused(record) => {
                let lost = st.journal.stats().lost;
                if lost == 1 || lost.is_multiple_of(1_000) {
                    tracing::error!(
                        lost,
                        ?record,
                        "record not kept (queue full with no spill file, or the writer is closed)"
                    );
                }
            }
        }
    }

    /// Records not yet in the database (queued or in the spill file).
    pub fn pending(&self) -> u64 {
        self.state().journal.pending()
    }

    pub fn stats(&self) -> RecordStats {
        self.state().journal.stats()
    }

    /// Records refused by the database or not kept.
    pub fn dropped(&self) -> u64 {
        self.stats().dropped()
    }

    /// Waits until everything submitted so far is in the database, or `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// At stop: writes to the database for up to `timeout`, then puts what
    /// is left in the spill file (replayed first at the next start), syncs
    /// it and lets the folder go. Later records are refused and counted.
    pub async fn close(&self, timeout: Duration) -> Closed {
        let flushed = self.flush(timeout).await;
        self.shared.stop.cancel();
        let mut st = self.state();
        let left = st.journal.close();
        let mut closed = Closed {
            flushed,
            spilled: 0,
            lost: 0,
        };
        match st.spool.take() {
            Some(mut spool) => match spool.dump_first(&left).and_then(|()| Ok(spool.sync()?)) {
                Ok(()) => closed.spilled = left.len(),
                Err(err) => {
                    tracing::error!(error = %err, records = left.len(), "records could not be spilled at stop: lost");
                    closed.lost = left.len();
                }
            },
            None => closed.lost = left.len(),
        }
        drop(st);
        if closed.spilled > 0 {
            tracing::warn!(
                records = closed.spilled,
                dir = %self.shared.spool_dir.as_deref().unwrap_or_else(|| std::path::Path::new("")).display(),
                "database unreachable at stop: records spilled for the next start"
            );
        }
        if closed.lost > 0 {
            tracing::error!(
                records = closed.lost,
                "records lost at stop (no spill file)"
            );
        }
        closed
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent state (every step
    // is a small in-memory update), so a poisoned lock is used as is.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn prune(pool: PgPool) {
    match super::sql::prune_receipts(&pool).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(receipts = n, "old record receipts pruned"),
        Err(err) => tracing::debug!(error = %err, "record receipts not pruned"),
    }
}

async fn run(shared: Arc<Shared>, pool: PgPool) {
    let mut last_sync = Instant::now();
    let mut failures = 0u64;
    while !shared.stop.is_cancelled() {
        if last_sync.elapsed() >= SYNC_EVERY {
            last_sync = Instant::now();
            let file = lock(&shared).spool.as_mut().and_then(Spool::take_unsynced);
            if let Some(file) = file {
                let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
                if let Ok(Err(err)) = synced {
                    tracing::error!(error = %err, "spill file sync failed");
                }
            }
        }
        let action = {
            let mut st = lock(&shared);
            let st = &mut *st;
            match st.journal.poll(Instant::now()) {
                Action::Load(n) => {
                    let (records, exhausted) = match st.spool.as_mut() {
                        Some(spool) => spool.read(n),
                        None => (Vec::new(), true),
                    };
                    st.journal.loaded(records, exhausted);
                    continue;
                }
                other => other,
            }
        };
        match action {
            Action::Write(batch) => {
                let result = tokio::select! {
                    r = super::batch::apply(&pool, &batch) => r,
                    _ = shared.stop.cancelled() => return,
                };
                let mut st = lock(&shared);
                let st = &mut *st;
                match result {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!(
                                failures,
                                "database back: records are being written again"
                            );
                            failures = 0;
                        }
                        let from_spool = st.journal.written();
                        if let Some(spool) = st.spool.as_mut() {
                            spool.applied(from_spool);
                        }
                        crate::metrics::metrics().record_queue_depth(st.journal.pending());
                    }
                    Err(err) => {
                        crate::metrics::metrics().db_write_failed();
                        let failure = if crate::db::is_permanent_error(&err) {
                            Failure::Permanent
                        } else {
                            Failure::Transient
                        };
                        match st.journal.failed(failure, Instant::now()) {
                            AfterFailure::RetryAt(at) => {
                                failures += 1;
                                if failures <= 3 || failures.is_multiple_of(30) {
                                    tracing::warn!(
                                        error = %err, failures, pending = st.journal.pending(),
                                        retry_in_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64,
                                        "database unavailable: records kept until it returns"
                                    );
                                }
                            }
                            AfterFailure::Isolate => {
                                tracing::debug!(error = %err, "a batch was refused: writing its records one by one");
                            }
                            AfterFailure::Dropped { record, from_spool } => {
                                tracing::error!(error = %err, ?record, "record refused by the database; dropped");
                                if from_spool {
                                    if let Some(spool) = st.spool.as_mut() {
                                        spool.applied(1);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Action::WaitUntil(at) => {
                let at = tokio::time::Instant::from_std(at)
                    .min(tokio::time::Instant::now() + SYNC_EVERY);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.stop.cancelled() => return,
                }
            }
            Action::Idle | Action::Busy => {
                crate::metrics::metrics().record_queue_depth(lock(&shared).journal.pending());
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(SYNC_EVERY) => {}
                    _ = shared.stop.cancelled() => return,
                }
            }
            Action::Load(_) => {}
        }
    }
}
