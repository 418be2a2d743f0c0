//! The record writer's decisions, without I/O: where a record goes (the
//! bounded memory queue or the spill file), what to write next and when,
//! what a failure means. The driver (`writer.rs`) does the database and
//! file work and reports back; time is an argument.
//!
//! Order. The records form one log: the memory queue holds its head, the
//! spill file its tail. A record goes to the file when the queue is full
//! or when the file still holds records not yet taken back (so nothing
//! overtakes them); the file is read back only into an empty queue. So
//! records reach the database in the order they were submitted, and a
//! call's `call_logs` insert lands before its session, messages and usage.
//!
//! Stop. The queue's records are written to a spill segment placed before
//! every other, so the next start replays them first: queue order, then
//! the file's unread records, is still submission order. Records read back
//! from the file stay in it until written, so that dump may repeat them;
//! records are idempotent (see `Record`), a repeat changes nothing.

use std::collections::VecDeque;

/// Queue slots kept after a burst drains (a few seconds of records at
/// hundreds of calls a second).
const KEPT_ROOM: usize = 4096;
use std::time::{Duration, Instant};

use super::kinds::Record;

/// First pause after a failed write; it doubles up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between two tries while the database is away.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Capped exponential back-off.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_RETRY_DELAY,
        }
    }
}

impl Backoff {
    /// The pause before the next try; the one after is longer, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_RETRY_DELAY);
        d
    }

    pub fn reset(&mut self) {
        self.next = FIRST_RETRY_DELAY;
    }
}

/// What became of a submitted record.
#[derive(Debug)]
pub enum Submitted {
    Queued,
    /// Append it to the spill file, then report [`Journal::spilled`] or
    /// [`Journal::spill_failed`].
    Spill(Record),
    /// Not kept: the queue is full and there is no spill file, or the
    /// writer is closed. Counted as dropped.
    Refused(Record),
}

/// What the driver should do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Write these records, in this order, in one transaction; then report
    /// [`Journal::written`] or [`Journal::failed`].
    Write(Vec<Record>),
    /// Read up to this many records from the spill file into the queue
    /// ([`Journal::loaded`]).
    Load(usize),
    /// Nothing before this instant (back-off after a failure).
    WaitUntil(Instant),
    /// Nothing to do until a record is submitted.
    Idle,
    /// A write or a load is under way.
    Busy,
}

/// How a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is away (connection lost, shutdown, timeout): retry.
    Transient,
    /// The database refused it and always will (a constraint, bad data).
    Permanent,
}

/// The answer to a failure.
#[derive(Debug, PartialEq)]
pub enum AfterFailure {
    RetryAt(Instant),
    /// A batch was refused: its records are retried one per transaction to
    /// find the one that is refused.
    Isolate,
    /// This record was refused on its own and is dropped.
    Dropped {
        record: Box<Record>,
        from_spool: bool,
    },
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Records the database committed.
    pub written: u64,
    /// Of those, records read back from the spill file.
    pub replayed: u64,
    /// Records appended to the spill file.
    pub spilled: u64,
    /// Records refused by the database for good (logged with the record).
    pub refused: u64,
    /// Records lost: queue full with no room in the spill file, or submitted
    /// after the writer closed.
    pub lost: u64,
}

impl RecordStats {
    pub fn dropped(&self) -> u64 {
        self.refused + self.lost
    }
}

#[derive(Debug)]
struct Entry {
    record: Record,
    from_spool: bool,
}

#[derive(Debug)]
pub struct Journal {
    queue: VecDeque<Entry>,
    capacity: usize,
    batch_max: usize,
    has_spool: bool,
    /// Records in the spill file not yet read back (an upper bound: a
    /// damaged line counts until the file is read past it).
    unread: u64,
    /// Records at the queue's head being written; 0 when none.
    in_flight: usize,
    loading: bool,
    /// Records still to be written one per transaction (after a refused batch).
    isolate: usize,
    retry_at: Option<Instant>,
    backoff: Backoff,
    closed: bool,
    stats: RecordStats,
}

impl Journal {
    /// `unread`: the records the spill file holds at start (earlier runs').
    pub fn new(capacity: usize, batch_max: usize, has_spool: bool, unread: u64) -> Journal {
        Journal {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            batch_max: batch_max.max(1),
            has_spool,
            unread: if has_spool { unread } else { 0 },
            in_flight: 0,
            loading: false,
            isolate: 0,
            retry_at: None,
            backoff: Backoff::default(),
            closed: false,
            stats: RecordStats::default(),
        }
    }

    pub fn submit(&mut self, record: Record) -> Submitted {
        if self.closed {
            self.stats.lost += 1;
            return Submitted::Refused(record);
        }
        if self.unread == 0 && self.queue.len() < self.capacity {
            self.queue.push_back(Entry {
                record,
                from_spool: false,
            });
            return Submitted::Queued;
        }
        if self.has_spool {
            Submitted::Spill(record)
        } else {
            self.stats.lost += 1;
            Submitted::Refused(record)
        }
    }

    /// The record the last [`Submitted::Spill`] named is in the file.
    pub fn spilled(&mut self) {
        self.unread += 1;
        self.stats.spilled += 1;
    }

    /// It could not be appended (the file is at its cap, or a disk error).
    pub fn spill_failed(&mut self) {
        self.stats.lost += 1;
    }

    pub fn poll(&mut self, now: Instant) -> Action {
        if self.in_flight > 0 || self.loading {
            return Action::Busy;
        }
        if self.closed {
            return Action::Idle;
        }
        if let Some(at) = self.retry_at {
            if now < at {
                return Action::WaitUntil(at);
            }
            self.retry_at = None;
        }
        if self.queue.is_empty() {
            if self.unread > 0 {
                self.loading = true;
                return Action::Load(self.batch_max.min(self.capacity));
            }
            return Action::Idle;
        }
        let n = if self.isolate > 0 {
            1
        } else {
            self.batch_max.min(self.queue.len())
        };
        self.in_flight = n;
        Action::Write(
            self.queue
                .iter()
                .take(n)
                .map(|e| e.record.clone())
                .collect(),
        )
    }

    /// Records read back from the spill file, in its order; `exhausted`
    /// when it holds no more.
    pub fn loaded(&mut self, records: Vec<Record>, exhausted: bool) {
        self.loading = false;
        self.unread = self.unread.saturating_sub(records.len() as u64);
        if exhausted || records.is_empty() {
            self.unread = 0;
        }
        for record in records {
            self.queue.push_back(Entry {
                record,
                from_spool: true,
            });
        }
    }

    /// The batch was committed. Returns how many of its records came from
    /// the spill file (the driver lets the file forget them).
    pub fn written(&mut self) -> usize {
        let n = std::mem::take(&mut self.in_flight);
        let mut from_spool = 0;
        for _ in 0..n {
            if let Some(e) = self.queue.pop_front() {
                from_spool += usize::from(e.from_spool);
            }
        }
        // A queue that grew in a burst gives its room back once drained.
        if self.queue.capacity() > KEPT_ROOM && self.queue.len() < self.queue.capacity() / 4 {
            self.queue.shrink_to(self.queue.len().max(KEPT_ROOM));
        }
        self.stats.written += n as u64;
        self.stats.replayed += from_spool as u64;
        self.isolate = self.isolate.saturating_sub(n);
        self.backoff.reset();
        from_spool
    }

    pub fn failed(&mut self, failure: Failure, now: Instant) -> AfterFailure {
        let n = std::mem::take(&mut self.in_flight);
        match failure {
            Failure::Transient => {
                let at = now + self.backoff.next_delay();
                self.retry_at = Some(at);
                AfterFailure::RetryAt(at)
            }
            Failure::Permanent if n > 1 => {
                self.backoff.reset();
                self.isolate = n;
                AfterFailure::Isolate
            }
            Failure::Permanent => {
                self.backoff.reset();
                self.isolate = self.isolate.saturating_sub(1);
                match self.queue.pop_front() {
                    Some(e) => {
                        self.stats.refused += 1;
                        AfterFailure::Dropped {
                            record: Box::new(e.record),
                            from_spool: e.from_spool,
                        }
                    }
                    // Closed meanwhile: the record went to the dump.
                    None => AfterFailure::Isolate,
                }
            }
        }
    }

    /// Stops taking records; returns the queue (in order) for the dump.
    /// A write still under way may yet commit: its records are then both
    /// in the database and in the dump, which replays as a no-op.
    pub fn close(&mut self) -> Vec<Record> {
        self.closed = true;
        self.in_flight = 0;
        self.queue.drain(..).map(|e| e.record).collect()
    }

    /// Records not yet in the database: queued or in the spill file.
    pub fn pending(&self) -> u64 {
        self.queue.len() as u64 + self.unread
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn stats(&self) -> RecordStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rec(i: usize) -> Record {
        Record::CountConversation {
            id: Uuid::from_u128(i as u128),
            workspace_id: Uuid::nil(),
        }
    }

    fn ids(records: &[Record]) -> Vec<usize> {
        records
            .iter()
            .map(|r| match r {
                Record::CountConversation { id, .. } => id.as_u128() as usize,
                _ => usize::MAX,
            })
            .collect()
    }

    /// A spill file as the driver would keep it: appended and read in order.
    #[derive(Default)]
    struct File(VecDeque<Record>);

    /// Submits `records`, spilling as told.
    fn submit_all(j: &mut Journal, file: &mut File, records: impl IntoIterator<Item = Record>) {
        for r in records {
            match j.submit(r) {
                Submitted::Queued => {}
                Submitted::Spill(r) => {
                    file.0.push_back(r);
                    j.spilled();
                }
                Submitted::Refused(r) => panic!("refused {r:?}"),
            }
        }
    }

    /// Runs the journal against a database that is up, collecting what it
    /// commits, until it is idle.
    fn drain(j: &mut Journal, file: &mut File, now: Instant) -> Vec<Record> {
        let mut committed = Vec::new();
        for _ in 0..10_000 {
            match j.poll(now) {
                Action::Write(batch) => {
                    committed.extend(batch);
                    j.written();
                }
                Action::Load(n) => {
                    let take: Vec<Record> = (0..n).filter_map(|_| file.0.pop_front()).collect();
                    j.loaded(take, file.0.is_empty());
                }
                Action::Idle => return committed,
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("did not settle");
    }

    #[test]
    fn back_off_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST_RETRY_DELAY);
    }

    #[test]
    fn records_are_written_in_batches_in_order() {
        let now = Instant::now();
        let mut j = Journal::new(100, 4, true, 0);
        let mut file = File::default();
        submit_all(&mut j, &mut file, (0..10).map(rec));
        let Action::Write(first) = j.poll(now) else {
            panic!("write expected");
        };
        assert_eq!(ids(&first), [0, 1, 2, 3]);
        assert_eq!(j.poll(now), Action::Busy, "one write at a time");
        j.written();
        let rest = drain(&mut j, &mut file, now);
        assert_eq!(ids(&rest), (4..10).collect::<Vec<_>>());
        assert_eq!(j.stats().written, 10);
        assert_eq!(j.pending(), 0);
    }

    #[test]
    fn an_outage_is_retried_with_capped_back_off_on_a_simulated_clock() {
        let t0 = Instant::now();
        let mut j = Journal::new(100, 8, false, 0);
        let mut file = File::default();
        submit_all(&mut j, &mut file, (0..3).map(rec));
        let mut now = t0;
        let mut waits = Vec::new();
        // Down for 60 s of simulated time.
        while now < t0 + Duration::from_secs(60) {
            match j.poll(now) {
                Action::Write(batch) => {
                    assert_eq!(ids(&batch), [0, 1, 2], "the same batch each time");
                    let AfterFailure::RetryAt(at) = j.failed(Failure::Transient, now) else {
                        panic!("transient failures are retried");
                    };
                    waits.push((at - now).as_millis() as u64);
                }
                Action::WaitUntil(at) => {
                    assert!(at > now);
                    now = at;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&waits[..6], [100, 200, 400, 800, 1600, 2000]);
        assert!(waits[6..].iter().all(|w| *w == 2000), "capped at 2 s");
        assert!(waits.len() >= 30, "kept trying the whole minute");
        assert_eq!(j.pending(), 3, "nothing lost");
        // The database returns.
        let Action::Write(batch) = j.poll(now) else {
            panic!("write expected");
        };
        assert_eq!(batch.len(), 3);
        j.written();
        assert_eq!(j.stats().dropped(), 0);
        // The next failure starts the back-off again from the bottom.
        submit_all(&mut j, &mut file, [rec(3)]);
        assert!(matches!(j.poll(now), Action::Write(_)));
        assert_eq!(
            j.failed(Failure::Transient, now),
            AfterFailure::RetryAt(now + FIRST_RETRY_DELAY)
        );
    }

    #[test]
    fn a_refused_record_is_found_in_its_batch_dropped_and_the_rest_written() {
        let now = Instant::now();
        let mut j = Journal::new(100, 8, false, 0);
        let mut file = File::default();
        submit_all(&mut j, &mut file, (0..5).map(rec));
        let refused = 2;
        let mut committed = Vec::new();
        let mut dropped = Vec::new();
        for _ in 0..20 {
            match j.poll(now) {
                Action::Write(batch) => {
                    if ids(&batch).contains(&refused) {
                        match j.failed(Failure::Permanent, now) {
                            AfterFailure::Isolate => assert!(batch.len() > 1),
                            AfterFailure::Dropped { record, from_spool } => {
                                assert!(!from_spool);
                                dropped.push(*record)
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    } else {
                        committed.extend(batch);
                        j.written();
                    }
                }
                Action::Idle => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ids(&committed), [0, 1, 3, 4]);
        assert_eq!(ids(&dropped), [2]);
        assert_eq!(j.stats().refused, 1);
        // Past the isolated batch, batching resumes.
        submit_all(&mut j, &mut file, (5..9).map(rec));
        let Action::Write(batch) = j.poll(now) else {
            panic!("write expected");
        };
        assert_eq!(batch.len(), 4);
    }

    #[test]
    fn a_full_queue_spills_and_everything_arrives_in_submission_order() {
        let now = Instant::now();
        let mut j = Journal::new(5, 2, true, 0);
        let mut file = File::default();
        // The database is down: the queue fills, the rest spills.
        submit_all(&mut j, &mut file, (0..12).map(rec));
        assert_eq!(j.queued(), 5);
        assert_eq!(file.0.len(), 7);
        assert_eq!(j.pending(), 12);
        // It comes back: the queue drains, then the file; a record submitted
        // meanwhile goes behind the file's, not ahead of them.
        let Action::Write(batch) = j.poll(now) else {
            panic!("write expected");
        };
        j.written();
        submit_all(&mut j, &mut file, [rec(12)]);
        assert_eq!(
            file.0.back().map(|r| ids(std::slice::from_ref(r))[0]),
            Some(12)
        );
        let mut committed = batch;
        committed.extend(drain(&mut j, &mut file, now));
        assert_eq!(ids(&committed), (0..13).collect::<Vec<_>>());
        assert_eq!(j.stats().replayed, 8);
        // With the file empty, records go to memory again.
        submit_all(&mut j, &mut file, [rec(13)]);
        assert!(file.0.is_empty());
    }

    #[test]
    fn without_a_spill_file_a_full_queue_refuses_and_counts() {
        let mut j = Journal::new(2, 2, false, 0);
        assert!(matches!(j.submit(rec(0)), Submitted::Queued));
        assert!(matches!(j.submit(rec(1)), Submitted::Queued));
        assert!(matches!(j.submit(rec(2)), Submitted::Refused(_)));
        assert_eq!(j.stats().lost, 1);
    }

    #[test]
    fn the_stop_dump_then_the_file_replays_in_submission_order() {
        let now = Instant::now();
        // Queue of 4; records 0..4 in memory, 4..9 spilled.
        let mut j = Journal::new(4, 2, true, 0);
        let mut file = File::default();
        submit_all(&mut j, &mut file, (0..9).map(rec));
        // Two written before the node stops.
        let Action::Write(_) = j.poll(now) else {
            panic!("write expected");
        };
        j.written();
        // A write is under way when the stop comes: its records are dumped.
        let Action::Write(in_flight) = j.poll(now) else {
            panic!("write expected");
        };
        let dump = j.close();
        assert_eq!(ids(&dump), [2, 3]);
        assert_eq!(ids(&in_flight), [2, 3]);
        assert!(matches!(j.submit(rec(99)), Submitted::Refused(_)));
        assert_eq!(j.poll(now), Action::Idle);
        // The next start: the dump is a segment before the others.
        let mut replay = File(dump.into_iter().chain(file.0.drain(..)).collect());
        let mut next = Journal::new(4, 2, true, replay.0.len() as u64);
        submit_all(&mut next, &mut replay, [rec(9)]);
        let committed = drain(&mut next, &mut replay, now);
        assert_eq!(ids(&committed), (2..10).collect::<Vec<_>>());
    }

    #[test]
    fn records_read_back_and_dumped_at_stop_replay_before_what_follows() {
        let now = Instant::now();
        let mut j = Journal::new(2, 2, true, 0);
        let mut file = File::default();
        submit_all(&mut j, &mut file, (0..5).map(rec));
        // 0,1 in memory; 2,3,4 in the file. 0,1 written, 2,3 read back.
        let Action::Write(_) = j.poll(now) else {
            panic!("write expected");
        };
        j.written();
        let Action::Load(n) = j.poll(now) else {
            panic!("load expected");
        };
        let take: Vec<Record> = file.0.iter().take(n).cloned().collect();
        j.loaded(take, false);
        // Read-back records stay in the file until written.
        let dump = j.close();
        assert_eq!(ids(&dump), [2, 3]);
        let replay: Vec<Record> = dump.into_iter().chain(file.0.drain(..)).collect();
        // First applications are in order; the repeats (2, 3) are no-ops.
        let mut seen = std::collections::HashSet::new();
        let first: Vec<usize> = ids(&replay)
            .into_iter()
            .filter(|i| seen.insert(*i))
            .collect();
        assert_eq!(first, [2, 3, 4]);
    }

    #[test]
    fn a_file_shorter_than_counted_ends_the_replay() {
        let now = Instant::now();
        // The start counted 3 lines; one was damaged and is skipped.
        let mut j = Journal::new(10, 10, true, 3);
        let mut file = File(VecDeque::from([rec(0), rec(1)]));
        submit_all(&mut j, &mut file, [rec(2)]);
        let committed = drain(&mut j, &mut file, now);
        assert_eq!(ids(&committed), [0, 1, 2]);
        assert_eq!(j.pending(), 0);
    }
}
