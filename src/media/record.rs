//! Call recording to WAV with `hound`: stereo, caller on the left and the
//! agent on the right, at the codec's PCM rate, one 20 ms frame per side
//! per tick so both directions stay aligned. The header is rewritten every
//! second, so a crash loses at most a second; `finish` closes it cleanly.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::error::MediaError;

/// What `call_recordings` needs to know about a finished file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordingInfo {
    pub path: PathBuf,
    pub bytes: u64,
    pub duration_ms: u64,
    pub sample_rate: u32,
    pub channels: u16,
}

pub struct Recorder {
    writer: hound::WavWriter<BufWriter<File>>,
    path: PathBuf,
    sample_rate: u32,
    frames_since_flush: u32,
    flush_every_frames: u32,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .finish()
    }
}

fn rec_err(e: hound::Error) -> MediaError {
    MediaError::Recording(e.to_string())
}

impl Recorder {
    pub fn create(path: &Path, sample_rate: u32) -> Result<Recorder, MediaError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(rec_err)?;
        Ok(Recorder {
            writer,
            path: path.to_path_buf(),
            sample_rate,
            frames_since_flush: 0,
            flush_every_frames: 50,
        })
    }

    /// Writes one tick: `caller` and `agent` frames of equal length (the
    /// shorter one is padded with silence).
    pub fn write(&mut self, caller: &[i16], agent: &[i16]) -> Result<(), MediaError> {
        let n = caller.len().max(agent.len());
        for i in 0..n {
            self.writer
                .write_sample(caller.get(i).copied().unwrap_or(0))
                .map_err(rec_err)?;
            self.writer
                .write_sample(agent.get(i).copied().unwrap_or(0))
                .map_err(rec_err)?;
        }
        self.frames_since_flush += 1;
        if self.frames_since_flush >= self.flush_every_frames {
            self.frames_since_flush = 0;
            self.writer.flush().map_err(rec_err)?;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<RecordingInfo, MediaError> {
        let samples = self.writer.duration() as u64;
        let rate = self.sample_rate;
        self.writer.finalize().map_err(rec_err)?;
        let bytes = std::fs::metadata(&self.path)?.len();
        Ok(RecordingInfo {
            path: self.path,
            bytes,
            duration_ms: samples * 1000 / rate as u64,
            sample_rate: rate,
            channels: 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_file_is_readable_midway_and_complete_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/call.wav");
        let mut r = Recorder::create(&path, 8000).unwrap();
        for _ in 0..60 {
            r.write(&[100; 160], &[-200; 160]).unwrap();
        }
        // After 50 frames the header was rewritten: a crash now keeps ~1 s.
        let mid = hound::WavReader::open(&path).unwrap();
        assert_eq!(mid.duration(), 50 * 160);
        let info = r.finish().unwrap();
        assert_eq!(info.duration_ms, 1200);
        assert_eq!(info.bytes, 44 + 60 * 160 * 4);
        let mut rd = hound::WavReader::open(&path).unwrap();
        assert_eq!(rd.spec().channels, 2);
        let s: Vec<i16> = rd.samples::<i16>().take(4).map(|s| s.unwrap()).collect();
        assert_eq!(s, vec![100, -200, 100, -200]);
    }
}
