//! The one durable writer of everything a call writes: `call_logs` (from the
//! SIP layer), sessions, messages, usage, leads, recordings (from the
//! runtime). One task per node applies one ordered log of typed records, so
//! a call's `call_logs` insert lands before its session and messages and
//! updates after inserts; it retries while PostgreSQL is away, drops (and
//! logs) what the database refuses for good, and when its bounded queue is
//! full, or the node stops with records unwritten, it spills them to an
//! append-only file under `records.spool_dir` that the next start replays.
//!
//! Below `sip` and `agent_runtime`: it knows PostgreSQL and the records,
//! nothing of SIP or agents.

mod batch;
mod journal;
mod kinds;
mod spool;
mod sql;
mod writer;

pub use journal::{RecordStats, FIRST_RETRY_DELAY, MAX_RETRY_DELAY};
pub use kinds::{
    CallEnd, CallLogStart, HangupBy, MessageRecord, Record, UsageRecord, CALL_DIRECTIONS,
    CALL_STATUSES,
};
pub use spool::MAX_LINE_BYTES;
pub use writer::{Closed, RecordWriter};
