//! Pure-tone detection on 16 kHz frames: the beep of an answering machine
//! (a single sine, somewhere between 400 Hz and 2.1 kHz, held 100 ms to
//! over a second). Each 20 ms frame is measured with a bank of Goertzel
//! filters 25 Hz apart; a frame is tonal when one filter holds most of the
//! frame's energy, and a beep is several tonal frames in a row at the same
//! pitch. Speech spreads its energy over harmonics and formants and never
//! holds one pitch that purely for that long.

/// Lowest and highest beep pitch looked for, and the filter spacing.
const LOW_HZ: f32 = 400.0;
const HIGH_HZ: f32 = 2100.0;
const STEP_HZ: f32 = 25.0;
/// Share of a frame's energy one filter must hold for the frame to be tonal.
const TONAL_SHARE: f32 = 0.6;
/// Frames quieter than this RMS (about −46 dBFS) are not a beep.
const MIN_RMS: f32 = 160.0;
/// Neighbouring filters count as the same pitch (a beep's pitch measured
/// frame by frame wanders by a bin).
const PITCH_TOLERANCE_BINS: usize = 1;

/// What one frame was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneFrame {
    /// The strongest filter's pitch in Hz, when the frame is tonal.
    pub pitch_hz: Option<f32>,
}

/// Finds a held tone in a stream of equal frames.
#[derive(Debug, Clone)]
pub struct ToneDetector {
    sample_rate: f32,
    /// 2·cos(ω) of each filter.
    coeffs: Vec<f32>,
    /// Consecutive tonal frames at about the same pitch, and that pitch's bin.
    run: usize,
    run_bin: Option<usize>,
    /// Frames a beep must last.
    min_frames: usize,
}

impl ToneDetector {
    /// A detector for frames of `sample_rate` Hz that reports a tone held
    /// for `min_frames` frames in a row.
    pub fn new(sample_rate: u32, min_frames: usize) -> ToneDetector {
        let sample_rate = sample_rate.max(8000) as f32;
        let high = HIGH_HZ.min(sample_rate / 2.0 - STEP_HZ);
        let mut coeffs = Vec::new();
        let mut f = LOW_HZ;
        while f <= high {
            coeffs.push(2.0 * (2.0 * std::f32::consts::PI * f / sample_rate).cos());
            f += STEP_HZ;
        }
        ToneDetector {
            sample_rate,
            coeffs,
            run: 0,
            run_bin: None,
            min_frames: min_frames.max(1),
        }
    }

    /// Measures one frame.
    pub fn measure(&self, frame: &[i16]) -> ToneFrame {
        let n = frame.len();
        if n < 64 {
            return ToneFrame { pitch_hz: None };
        }
        let x: Vec<f32> = frame.iter().map(|&s| s as f32).collect();
        let energy: f32 = x.iter().map(|v| v * v).sum();
        let rms = (energy / n as f32).sqrt();
        if rms < MIN_RMS {
            return ToneFrame { pitch_hz: None };
        }
        let (mut best, mut best_power) = (0usize, 0f32);
        for (i, &c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0f32, 0f32);
            for &v in &x {
                let s0 = v + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - c * s1 * s2;
            if power > best_power {
                best_power = power;
                best = i;
            }
        }
        // A sine of amplitude A over n samples: power (A·n/2)², energy A²·n/2.
        let share = best_power / (energy * n as f32 / 2.0);
        ToneFrame {
            pitch_hz: (share >= TONAL_SHARE).then_some(LOW_HZ + best as f32 * STEP_HZ),
        }
    }

    /// Feeds one frame; true on the frame that completes a held tone (once
    /// per tone: the run must break before another is reported).
    pub fn push(&mut self, frame: &[i16]) -> bool {
        let bin = self
            .measure(frame)
            .pitch_hz
            .map(|p| ((p - LOW_HZ) / STEP_HZ).round() as usize);
        match (bin, self.run_bin) {
            (Some(b), Some(r)) if b.abs_diff(r) <= PITCH_TOLERANCE_BINS => self.run += 1,
            (Some(b), _) => {
                self.run = 1;
                self.run_bin = Some(b);
            }
            (None, _) => {
                self.run = 0;
                self.run_bin = None;
            }
        }
        self.run == self.min_frames
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, amp: f32, start: usize, n: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| (amp * (2.0 * std::f32::consts::PI * freq * i as f32 / 16000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn beeps_at_any_pitch_in_range_are_found_once() {
        for freq in [440.0, 812.0, 1000.0, 1400.0, 2000.0] {
            let mut d = ToneDetector::new(16000, 5);
            let hits: Vec<usize> = (0..20)
                .filter(|k| d.push(&sine(freq, 6000.0, k * 320, 320)))
                .collect();
            assert_eq!(hits, vec![4], "{freq} Hz");
            let pitch = d.measure(&sine(freq, 6000.0, 0, 320)).pitch_hz.unwrap();
            assert!(
                (pitch - freq).abs() <= STEP_HZ,
                "{freq} Hz measured {pitch}"
            );
        }
    }

    #[test]
    fn short_tones_quiet_tones_noise_and_chords_are_not_beeps() {
        let mut d = ToneDetector::new(16000, 5);
        // 60 ms of tone, then silence: too short.
        for k in 0..3 {
            assert!(!d.push(&sine(1000.0, 6000.0, k * 320, 320)));
        }
        assert!(!d.push(&[0i16; 320]));
        // Very quiet.
        for k in 0..10 {
            assert!(!d.push(&sine(1000.0, 100.0, k * 320, 320)));
        }
        // White noise.
        let mut x: u32 = 7;
        for _ in 0..20 {
            let frame: Vec<i16> = (0..320)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((x >> 16) as i16) / 4
                })
                .collect();
            assert!(!d.push(&frame));
        }
        // A vowel-like sound: a 150 Hz voice with many harmonics.
        for k in 0..20 {
            let frame: Vec<i16> = (0..320)
                .map(|i| {
                    let t = (k * 320 + i) as f32 / 16000.0;
                    (1..20)
                        .map(|h| {
                            1500.0 / h as f32
                                * (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin()
                        })
                        .sum::<f32>() as i16
                })
                .collect();
            assert!(!d.push(&frame));
        }
    }
}
