//! A call's `call_logs` row as records for the node's writer
//! (`crate::records`): the insert when routing decides, then the answer and
//! the end as updates, in that order behind any record queued before them.
//! The SIP loop never waits on the database.

use crate::metrics::metrics;
pub use crate::records::{CallEnd, CallLogStart};
use crate::records::{Record, RecordWriter};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The writer of one call's row.
#[derive(Clone)]
pub struct CallRecorder {
    id: Uuid,
    direction: String,
    writer: RecordWriter,
}

impl CallRecorder {
    /// Inserts the row (`ringing`) and returns the writer for the rest.
    pub fn start(writer: &RecordWriter, start: CallLogStart) -> CallRecorder {
        let (id, direction) = (start.id, start.direction.clone());
        writer.submit(Record::CallLog { start, end: None });
        CallRecorder {
            id,
            direction,
            writer: writer.clone(),
        }
    }

    /// One row for a call refused at routing (`rejected`, `busy`, ...).
    pub fn rejected(writer: &RecordWriter, start: CallLogStart, end: CallEnd) {
        metrics().call_ended(&start.direction, &end.status);
        writer.submit(Record::CallLog {
            start,
            end: Some(end),
        });
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn answered(&self, codec: &str, at: DateTime<Utc>) {
        self.writer.submit(Record::CallAnswered {
            call_log_id: self.id,
            codec: codec.to_string(),
            at,
        });
    }

    /// A blind transfer's outcome (the call may go on after a failed one).
    pub fn transfer(&self, target: &str, outcome: &str, sip_code: Option<u16>) {
        self.writer.submit(Record::CallTransfer {
            call_log_id: self.id,
            target: target.to_string(),
            mode: "blind".into(),
            outcome: outcome.to_string(),
            sip_code,
        });
    }

    pub fn ended(&self, end: CallEnd) {
        metrics().call_ended(&self.direction, &end.status);
        self.writer.submit(Record::CallEnded {
            call_log_id: self.id,
            end,
        });
    }
}
