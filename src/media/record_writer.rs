//! Recording files are written by one ordinary thread, never by the media
//! clock: the clock runs at real-time priority, and a disk that stalls
//! (dirty-page throttling can sleep a writer for a good part of a second)
//! must cost a recording its tail, never every call on that clock its
//! audio. A session's [`RecordingFeed`] gathers a second of both sides and
//! hands it over; a slow disk makes blocks wait, up to a process-wide
//! budget, past which a feed drops its oldest second and says so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use super::record::{Recorder, RecordingInfo};

/// Frames per block handed to the writer (1 s).
const BLOCK_FRAMES: usize = 50;
/// Most a feed holds while the writer is over budget (10 s), then it drops.
const MAX_HELD_FRAMES: usize = 500;
/// Samples (both sides) queued to the writer, process-wide: 64 MB.
const MAX_QUEUED_SAMPLES: usize = 32 * 1024 * 1024;

static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// A recording's final outcome: the file's figures and/or what went wrong.
pub(crate) type Finished = (Option<RecordingInfo>, Option<String>);

struct File {
    recorder: Option<Recorder>,
    error: Option<String>,
}

enum Job {
    Write {
        file: Arc<Mutex<File>>,
        caller: Vec<i16>,
        agent: Vec<i16>,
        frame: usize,
    },
    Finish {
        file: Arc<Mutex<File>>,
        dropped_frames: u64,
        reply: oneshot::Sender<Finished>,
    },
}

fn writer() -> Option<&'static Mutex<Sender<Job>>> {
    static WRITER: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    WRITER
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("media-recorder".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        run(job);
                    }
                })
                .map_err(|e| tracing::error!(error = %e, "recording writer not started"))
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

fn send(job: Job) {
    match writer() {
        Some(tx) => {
            let sent = tx.lock().unwrap_or_else(|p| p.into_inner()).send(job);
            // The writer thread is gone (it panicked): write here instead.
            if let Err(std::sync::mpsc::SendError(job)) = sent {
                run(job);
            }
        }
        None => run(job),
    }
}

fn run(job: Job) {
    match job {
        Job::Write {
            file,
            caller,
            agent,
            frame,
        } => {
            QUEUED.fetch_sub(caller.len() + agent.len(), Ordering::Relaxed);
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let Some(rec) = f.recorder.as_mut() else {
                return;
            };
            let frame = frame.max(1);
            for (c, a) in caller.chunks(frame).zip(agent.chunks(frame)) {
                if let Err(e) = rec.write(c, a) {
                    tracing::warn!(error = %e, "recording stopped");
                    f.error = Some(e.to_string());
                    f.recorder = None;
                    return;
                }
            }
        }
        Job::Finish {
            file,
            dropped_frames,
            reply,
        } => {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let mut error = f.error.take();
            let info = match f.recorder.take().map(Recorder::finish) {
                Some(Ok(info)) => Some(info),
                Some(Err(e)) => {
                    error = Some(e.to_string());
                    None
                }
                None => None,
            };
            if dropped_frames > 0 && error.is_none() {
                error = Some(format!(
                    "{} ms of recording dropped: the disk was too slow",
                    dropped_frames * 20
                ));
            }
            let _ = reply.send((info, error));
        }
    }
}

/// One session's side of its recording, fed once per 20 ms slot by the
/// media clock; never blocks on the disk.
pub(crate) struct RecordingFeed {
    file: Arc<Mutex<File>>,
    /// Samples per frame per side.
    frame: usize,
    caller: Vec<i16>,
    agent: Vec<i16>,
    dropped_frames: u64,
}

impl RecordingFeed {
    pub(crate) fn new(recorder: Recorder, frame_samples: usize) -> RecordingFeed {
        RecordingFeed {
            file: Arc::new(Mutex::new(File {
                recorder: Some(recorder),
                error: None,
            })),
            frame: frame_samples.max(1),
            caller: Vec::new(),
            agent: Vec::new(),
            dropped_frames: 0,
        }
    }

    /// One slot: both sides, each padded or cut to one frame.
    pub(crate) fn push(&mut self, caller: &[i16], agent: &[i16]) {
        for (side, buf) in [(caller, &mut self.caller), (agent, &mut self.agent)] {
            let take = side.len().min(self.frame);
            buf.extend_from_slice(&side[..take]);
            buf.resize(buf.len() + self.frame - take, 0);
        }
        let frames = self.caller.len() / self.frame;
        if frames < BLOCK_FRAMES {
            return;
        }
        let samples = self.caller.len() + self.agent.len();
        if QUEUED.load(Ordering::Relaxed) + samples > MAX_QUEUED_SAMPLES {
            if frames >= MAX_HELD_FRAMES {
                // The disk has been behind for 10 s: lose the oldest second.
                let n = BLOCK_FRAMES * self.frame;
                self.caller.drain(..n);
                self.agent.drain(..n);
                self.dropped_frames += BLOCK_FRAMES as u64;
            }
            return;
        }
        self.hand_over();
    }

    fn hand_over(&mut self) {
        if self.caller.is_empty() {
            return;
        }
        let caller = std::mem::take(&mut self.caller);
        let agent = std::mem::take(&mut self.agent);
        QUEUED.fetch_add(caller.len() + agent.len(), Ordering::Relaxed);
        send(Job::Write {
            file: self.file.clone(),
            caller,
            agent,
            frame: self.frame,
        });
    }

    /// Hands over the rest and closes the file (on the writer thread); the
    /// outcome arrives on the returned channel.
    pub(crate) fn finish(mut self) -> oneshot::Receiver<Finished> {
        self.hand_over();
        let (reply, outcome) = oneshot::channel();
        send(Job::Finish {
            file: self.file.clone(),
            dropped_frames: self.dropped_frames,
            reply,
        });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fed_recording_is_complete_and_aligned_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let mut feed = RecordingFeed::new(Recorder::create(&path, 8000).unwrap(), 160);
        for k in 0..120i16 {
            // A short caller frame is padded; the agent's is silence.
            let caller = vec![k; if k == 3 { 100 } else { 160 }];
            feed.push(&caller, &[]);
        }
        let (info, error) = feed.finish().await.unwrap();
        assert_eq!(error, None);
        let info = info.unwrap();
        assert_eq!(info.duration_ms, 2400);
        let mut rd = hound::WavReader::open(&path).unwrap();
        let s: Vec<i16> = rd.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(s.len(), 120 * 160 * 2);
        // Frame 3: 100 caller samples of 3, then padding; agent silent.
        assert_eq!(&s[2 * (3 * 160 + 99)..2 * (3 * 160 + 101)], &[3, 0, 0, 0]);
        assert_eq!(s[2 * (119 * 160)], 119);
        assert!(s.iter().skip(1).step_by(2).all(|&a| a == 0));
    }
}
