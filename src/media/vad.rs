//! Voice activity detection on 16 kHz frames with `earshot` (a small neural
//! VAD over mel features, ~3600× real time). Our 20 ms frames are re-cut into
//! the 16 ms (256-sample) blocks the detector wants; a frame's score is the
//! highest score of the blocks that completed inside it. A level gate keeps
//! near-digital silence from ever counting as speech.

use earshot::Detector;

/// Samples per earshot block (16 ms at 16 kHz).
const BLOCK: usize = 256;
/// Frames quieter than this RMS (about −60 dBFS) are never speech.
const MIN_SPEECH_RMS: f64 = 33.0;

pub struct Vad {
    detector: Box<Detector>,
    carry: Vec<i16>,
    threshold: f32,
    last_score: f32,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("threshold", &self.threshold)
            .field("last_score", &self.last_score)
            .finish()
    }
}

impl Default for Vad {
    fn default() -> Self {
        Vad::new(0.5)
    }
}

impl Vad {
    /// `threshold` in 0..1; 0.5 is earshot's recommended default.
    pub fn new(threshold: f32) -> Vad {
        Vad {
            detector: Detector::default_boxed(),
            carry: Vec::with_capacity(BLOCK),
            threshold,
            last_score: 0.0,
        }
    }

    pub fn reset(&mut self) {
        self.detector.reset();
        self.carry.clear();
        self.last_score = 0.0;
    }

    /// Voice score (0..1) of one frame of 16 kHz audio (any length; 320
    /// samples = 20 ms is the norm).
    pub fn score(&mut self, frame: &[i16]) -> f32 {
        let mut best: Option<f32> = None;
        let mut rest = frame;
        while !rest.is_empty() {
            let take = (BLOCK - self.carry.len()).min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.carry.len() == BLOCK {
                let s = self.detector.predict_i16(&self.carry);
                best = Some(best.map_or(s, |b: f32| b.max(s)));
                self.carry.clear();
            }
        }
        if let Some(b) = best {
            self.last_score = b;
        }
        let rms = (frame.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>()
            / frame.len().max(1) as f64)
            .sqrt();
        if rms < MIN_SPEECH_RMS {
            return 0.0;
        }
        self.last_score
    }

    pub fn is_speech(&mut self, frame: &[i16]) -> bool {
        self.score(frame) >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_white_noise_are_not_speech() {
        let mut vad = Vad::default();
        let silence = vec![0i16; 320];
        for _ in 0..50 {
            assert!(!vad.is_speech(&silence));
        }
        // Deterministic white noise at about −20 dBFS.
        let mut x: u32 = 12345;
        let mut voiced = 0;
        for _ in 0..100 {
            let frame: Vec<i16> = (0..320)
                .map(|_| {
                    x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                    ((x >> 16) as i16) / 10
                })
                .collect();
            voiced += vad.is_speech(&frame) as usize;
        }
        assert!(voiced <= 5, "{voiced} of 100 noise frames called speech");
    }
}
