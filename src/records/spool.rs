//! The spill file: append-only segments `records-<seq>.jsonl` in the spool
//! folder, one JSON record per line, read back oldest first. A segment is
//! deleted once every record read from it is in the database. A damaged line
//! (cut by a crash, or a disk error) is skipped with a log. `spool.lock`
//! (an exclusive lock) keeps two live nodes off one folder.
//!
//! Durability: each record is one `write` to the file (whole lines, so a
//! process crash leaves at most a cut last line); the driver `fsync`s at
//! most once a second, and at stop. A power cut may lose the last second.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::kinds::Record;

/// A record line longer than this is taken as damage and skipped.
pub const MAX_LINE_BYTES: usize = 4 << 20;
/// The sequence number of the first segment in an empty folder; the stop
/// dump takes numbers below the oldest, so there is room on both sides.
const FIRST_SEQ: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spill folder {0} is in use by another node (spool.lock)")]
    Locked(PathBuf),
    #[error("spill file is at its cap of {0} bytes")]
    Full(u64),
    #[error("spill file: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    len: u64,
}

#[derive(Debug)]
struct Reader {
    seq: u64,
    file: BufReader<File>,
    offset: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
    max_bytes: u64,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// The segment this run appends to (the newest), while open.
    active: Option<(u64, File)>,
    reader: Option<Reader>,
    /// Segments at or below this are read to their end.
    read_past: u64,
    /// The segment of each record read back and not yet in the database.
    loaded: VecDeque<u64>,
    total_bytes: u64,
    dirty: bool,
}

fn segment_name(seq: u64) -> String {
    format!("records-{seq:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("records-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Lines (newline-terminated) in a file, without parsing them.
fn count_lines(path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

enum Line {
    /// A whole line (its bytes in the buffer, without the newline).
    Whole(u64),
    /// Too long: consumed to its newline and dropped.
    TooLong(u64),
    /// Bytes at the end with no newline (a cut line, or nothing: 0).
    Tail(u64),
}

/// Reads one line of at most `max` bytes into `buf`, never holding more.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut consumed = 0u64;
    let mut too_long = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok(Line::Tail(consumed));
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        let used = done.unwrap_or(available.len());
        r.consume(used);
        consumed += used as u64;
        if done.is_some() {
            return Ok(if too_long {
                Line::TooLong(consumed)
            } else {
                Line::Whole(consumed)
            });
        }
    }
}

impl Spool {
    /// Opens (creating) the folder, takes its lock and lists the segments
    /// earlier runs left. Returns the spool and how many lines they hold.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, u64), SpoolError> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("spool.lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(parse_segment_name) else {
                continue;
            };
            segments.push(Segment {
                seq,
                len: entry.metadata()?.len(),
            });
        }
        segments.sort_by_key(|s| s.seq);
        let mut lines = 0;
        for s in &segments {
            lines += count_lines(&dir.join(segment_name(s.seq)))?;
        }
        let total_bytes = segments.iter().map(|s| s.len).sum();
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                _lock: lock,
                max_bytes,
                segments: segments.into(),
                active: None,
                reader: None,
                read_past: 0,
                loaded: VecDeque::new(),
                total_bytes,
                dirty: false,
            },
            lines,
        ))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    /// Bytes on disk in all segments.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Appends one record as one line. Earlier runs' segments are never
    /// appended to (their last line may be cut).
    pub fn append(&mut self, record: &Record) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.total_bytes + line.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full(self.max_bytes));
        }
        if self.active.is_none() {
            // Above every segment, and above any this run read and deleted.
            let seq = self
                .segments
                .back()
                .map_or(0, |s| s.seq)
                .max(self.read_past)
                .max(FIRST_SEQ - 1)
                + 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.path(seq))?;
            self.segments.push_back(Segment { seq, len: 0 });
            self.active = Some((seq, file));
        }
        let Some((seq, file)) = self.active.as_mut() else {
            return Err(SpoolError::Io(io::Error::other("no active segment")));
        };
        let seq = *seq;
        if let Err(e) = file.write_all(&line) {
            // A part of the line may be in the file: never append after it.
            self.active = None;
            return Err(e.into());
        }
        if let Some(s) = self.segments.back_mut().filter(|s| s.seq == seq) {
            s.len += line.len() as u64;
        }
        self.total_bytes += line.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Reads up to `max` records, oldest first, skipping damaged lines.
    /// `true` with them when nothing is left to read.
    pub fn read(&mut self, max: usize) -> (Vec<Record>, bool) {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while out.len() < max {
            if self.reader.is_none() {
                let Some(seq) = self
                    .segments
                    .iter()
                    .map(|s| s.seq)
                    .find(|s| *s > self.read_past)
                else {
                    return (out, true);
                };
                match File::open(self.path(seq)) {
                    Ok(file) => {
                        self.reader = Some(Reader {
                            seq,
                            file: BufReader::new(file),
                            offset: 0,
                        })
                    }
                    Err(err) => {
                        tracing::error!(error = %err, seq, "spill segment unreadable; skipped");
                        self.read_past = seq;
                        continue;
                    }
                }
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            let seq = reader.seq;
            let is_active = self.active.as_ref().is_some_and(|(a, _)| *a == seq);
            match read_line(&mut reader.file, &mut buf, MAX_LINE_BYTES) {
                Ok(Line::Whole(n)) => {
                    reader.offset += n;
                    match serde_json::from_slice::<Record>(&buf) {
                        Ok(record) => {
                            out.push(record);
                            self.loaded.push_back(seq);
                        }
                        Err(err) => tracing::warn!(
                            error = %err, seq, offset = reader.offset - n,
                            "damaged line in the spill file skipped"
                        ),
                    }
                }
                Ok(Line::TooLong(n)) => {
                    reader.offset += n;
                    tracing::warn!(seq, bytes = n, "over-long line in the spill file skipped");
                }
                Ok(Line::Tail(n)) if is_active => {
                    // This run writes whole lines: nothing more yet.
                    if n > 0 {
                        let _ = reader.file.seek(SeekFrom::Start(reader.offset));
                    }
                    return (out, true);
                }
                Ok(Line::Tail(n)) => {
                    if n > 0 {
                        tracing::warn!(
                            seq,
                            bytes = n,
                            "cut last line in the spill file skipped (a crash while writing)"
                        );
                    }
                    self.read_past = seq;
                    self.reader = None;
                    self.release();
                }
                Err(err) => {
                    tracing::error!(error = %err, seq, "spill segment read failed; rest of it skipped");
                    self.read_past = seq;
                    self.reader = None;
                    self.release();
                }
            }
        }
        let exhausted = self.reader.is_none()
            && !self.segments.iter().any(|s| s.seq > self.read_past)
            || self.active_read_to_end();
        (out, exhausted)
    }

    fn active_read_to_end(&self) -> bool {
        match (&self.reader, &self.active) {
            (Some(r), Some((a, _))) if r.seq == *a => self
                .segments
                .back()
                .is_some_and(|s| s.seq == *a && s.len == r.offset),
            _ => false,
        }
    }

    /// The oldest `n` records read back are in the database (or refused):
    /// segments read to their end with none of theirs pending go.
    pub fn applied(&mut self, n: usize) {
        for _ in 0..n {
            self.loaded.pop_front();
        }
        self.release();
    }

    fn release(&mut self) {
        while let Some(front) = self.segments.front() {
            let seq = front.seq;
            let active_done =
                self.active_read_to_end() && self.active.as_ref().is_some_and(|(a, _)| *a == seq);
            let read = seq <= self.read_past || active_done;
            if !read || self.loaded.front() == Some(&seq) {
                return;
            }
            if let Err(err) = std::fs::remove_file(self.path(seq)) {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::error!(error = %err, seq, "spill segment not deleted");
                    return;
                }
            }
            self.total_bytes = self.total_bytes.saturating_sub(front.len);
            self.segments.pop_front();
            if active_done {
                self.active = None;
            }
            if self.reader.as_ref().is_some_and(|r| r.seq == seq) {
                self.reader = None;
            }
            self.read_past = self.read_past.max(seq);
        }
    }

    /// At stop: `records` (the memory queue, in order) into a segment
    /// before every other, synced. Not capped: the queue is bounded.
    pub fn dump_first(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let seq = self
            .segments
            .front()
            .map_or(FIRST_SEQ, |s| s.seq.saturating_sub(1));
        let mut bytes = Vec::new();
        for r in records {
            serde_json::to_writer(&mut bytes, r).map_err(io::Error::other)?;
            bytes.push(b'\n');
        }
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(self.path(seq))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        self.total_bytes += bytes.len() as u64;
        self.segments.push_front(Segment {
            seq,
            len: bytes.len() as u64,
        });
        Ok(())
    }

    /// A handle to sync, when something was appended since the last one
    /// (the driver syncs it off the lock).
    pub fn take_unsynced(&mut self) -> Option<File> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        self.active.as_ref().and_then(|(_, f)| f.try_clone().ok())
    }

    /// Syncs the folder's entries and the active segment (at stop).
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some((_, f)) = &self.active {
            f.sync_data()?;
        }
        self.dirty = false;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rec(i: u128) -> Record {
        Record::CountConversation {
            id: Uuid::from_u128(i),
            workspace_id: Uuid::nil(),
        }
    }

    fn id(r: &Record) -> u128 {
        match r {
            Record::CountConversation { id, .. } => id.as_u128(),
            _ => u128::MAX,
        }
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("records-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appended_records_read_back_in_order_and_the_file_goes_once_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut spool, lines) = Spool::open(dir.path(), 1 << 20).expect("open");
        assert_eq!(lines, 0);
        for i in 0..5 {
            spool.append(&rec(i)).expect("append");
        }
        let (first, done) = spool.read(3);
        assert_eq!(first.iter().map(id).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(!done);
        spool.append(&rec(5)).expect("append while reading");
        let (rest, done) = spool.read(10);
        assert_eq!(rest.iter().map(id).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(done);
        spool.applied(5);
        assert_eq!(segments(dir.path()).len(), 1, "one record still pending");
        spool.applied(1);
        assert!(segments(dir.path()).is_empty(), "all written: deleted");
        assert_eq!(spool.bytes(), 0);
        // Appending again starts a new segment.
        spool.append(&rec(6)).expect("append");
        assert_eq!(segments(dir.path()).len(), 1);
    }

    #[test]
    fn a_second_open_of_a_held_folder_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_held, _) = Spool::open(dir.path(), 1 << 20).expect("open");
        assert!(matches!(
            Spool::open(dir.path(), 1 << 20),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn the_cap_refuses_appends() {
        let dir = tempfile::tempdir().expect("tmp");
        let one = serde_json::to_vec(&rec(0)).expect("json").len() as u64 + 1;
        let (mut spool, _) = Spool::open(dir.path(), 2 * one).expect("open");
        spool.append(&rec(0)).expect("first");
        spool.append(&rec(1)).expect("second");
        assert!(matches!(spool.append(&rec(2)), Err(SpoolError::Full(_))));
    }

    #[test]
    fn a_restart_replays_the_dump_first_and_skips_damaged_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (mut spool, _) = Spool::open(dir.path(), 1 << 20).expect("open");
            spool.append(&rec(10)).expect("append");
            spool.append(&rec(11)).expect("append");
            spool.dump_first(&[rec(1), rec(2)]).expect("dump");
            spool.sync().expect("sync");
        }
        // A crash cut the last line of the newest segment, and a line in
        // the middle is garbage.
        let names = segments(dir.path());
        assert_eq!(names.len(), 2);
        let newest = dir.path().join(&names[1]);
        let mut f = OpenOptions::new().append(true).open(&newest).expect("open");
        f.write_all(b"{\"record\":\"count_conv").expect("cut");
        let oldest = dir.path().join(&names[0]);
        let text = std::fs::read_to_string(&oldest).expect("read");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(1, "not json at all");
        std::fs::write(&oldest, lines.join("\n") + "\n").expect("write");

        let (mut spool, lines) = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(lines, 5, "newline-terminated lines counted");
        let (all, done) = spool.read(100);
        assert!(done);
        assert_eq!(all.iter().map(id).collect::<Vec<_>>(), [1, 2, 10, 11]);
        // This run's appends go to a new segment after the old ones.
        spool.append(&rec(12)).expect("append");
        let (more, _) = spool.read(100);
        assert_eq!(more.iter().map(id).collect::<Vec<_>>(), [12]);
        spool.applied(5);
        assert!(segments(dir.path()).is_empty());
    }

    #[test]
    fn an_over_long_line_is_skipped_without_holding_it() {
        let mut data = vec![b'x'; 100];
        data.push(b'\n');
        data.extend_from_slice(b"ok\n");
        let mut r = BufReader::with_capacity(16, &data[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf, 10),
            Ok(Line::TooLong(101))
        ));
        assert!(buf.len() <= 16);
        assert!(matches!(
            read_line(&mut r, &mut buf, 10),
            Ok(Line::Whole(3))
        ));
        assert_eq!(buf, b"ok");
        assert!(matches!(read_line(&mut r, &mut buf, 10), Ok(Line::Tail(0))));
    }
}
