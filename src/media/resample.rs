//! Rational-ratio polyphase resampling (8 kHz ↔ 16 kHz ↔ 48 kHz, and any
//! other pair such as espeak's 22 050 Hz) with a Kaiser-windowed sinc
//! low-pass, so neither aliasing nor imaging reaches speech recognition.
//!
//! [`Resampler`] is stateful: feed it 20 ms frames one after another and the
//! filter history carries across frame edges (no clicks). For integer
//! ratios every 20 ms input frame yields exactly one 20 ms output frame.
//! [`resample_all`] converts a whole clip and removes the filter delay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::error::MediaError;

/// Stop-band attenuation of the anti-alias filter, in dB.
const ATTENUATION_DB: f64 = 65.0;
/// The pass band ends at this fraction of the lower Nyquist frequency; the
/// stop band starts at Nyquist (telephone speech ends at 3.4 kHz of 4 kHz).
const PASSBAND_FRACTION: f64 = 0.86;
/// Largest accepted rate: bounds the filter tables a caller can make us build.
const MAX_RATE: u32 = 192_000;
/// Taps per phase are padded with zeros to a multiple of this, so the dot
/// product runs in independent lanes the compiler turns into SIMD. With the
/// division-free loop below, 8→16 kHz costs ~2 µs per 20 ms frame instead
/// of ~7.4 µs (one long chain of dependent adds), the largest per-call cost
/// on the media clock at 1000 calls.
const LANES: usize = 8;

/// The polyphase low-pass of one rate pair. Designing it (tens of
/// thousands of sines and Bessel sums for 22 050 → 8 000 Hz) costs far more
/// than resampling a sentence, so each pair is designed once per process
/// and shared ([`filter`]).
#[derive(Debug)]
struct Filter {
    /// Interpolation factor L and decimation factor M (to/from = L/M).
    up: usize,
    down: usize,
    /// Taps per phase, padded to a multiple of `LANES` (the padding is zero).
    taps_per_phase: usize,
    /// Length of the prototype low-pass (before padding): sets the delay.
    filter_len: usize,
    /// Phase-major coefficients, oldest tap first: phase p uses
    /// `coeffs[p*T..(p+1)*T]` against the T newest history samples in order.
    coeffs: Vec<f32>,
}

/// A streaming polyphase resampler from `from` Hz to `to` Hz.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    filter: Arc<Filter>,
    /// Input history followed by pending input; newest sample last.
    history: Vec<f32>,
    /// Position of the next output on the L-times-upsampled grid, relative
    /// to `history[0]`.
    pos: usize,
}

/// Rate pairs whose filters are kept: the codecs' and voices' rates make a
/// handful; a pair beyond this is designed for its one use.
const MAX_CACHED_FILTERS: usize = 64;

/// The filter for `from` → `to`, designed once per process.
fn filter(from: u32, to: u32) -> Result<Arc<Filter>, MediaError> {
    type Filters = Mutex<HashMap<(u32, u32), Arc<Filter>>>;
    static FILTERS: OnceLock<Filters> = OnceLock::new();
    let filters = FILTERS.get_or_init(Default::default);
    if let Some(f) = lock(filters).get(&(from, to)) {
        return Ok(f.clone());
    }
    let f = Arc::new(Filter::design(from, to)?);
    let mut map = lock(filters);
    if map.len() < MAX_CACHED_FILTERS {
        map.insert((from, to), f.clone());
    }
    Ok(f)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Modified Bessel function of the first kind, order 0 (Kaiser window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= half / k as f64;
        let t2 = term * term;
        sum += t2;
        if t2 < sum * 1e-14 {
            break;
        }
    }
    sum
}

impl Filter {
    fn design(from: u32, to: u32) -> Result<Filter, MediaError> {
        for r in [from, to] {
            if !(1000..=MAX_RATE).contains(&r) {
                return Err(MediaError::UnsupportedRate(r));
            }
        }
        let g = gcd(from, to);
        let up = (to / g) as usize;
        let down = (from / g) as usize;
        if up > 1024 || down > 1024 {
            return Err(MediaError::UnsupportedRate(if up > 1024 {
                to
            } else {
                from
            }));
        }
        // Design the prototype low-pass at the upsampled rate L·from.
        let fs = from as f64 * up as f64;
        let nyquist_low = from.min(to) as f64 / 2.0;
        let pass = nyquist_low * PASSBAND_FRACTION;
        let stop = nyquist_low;
        let cutoff = (pass + stop) / 2.0;
        let transition = (stop - pass) / fs * 2.0 * std::f64::consts::PI;
        // Kaiser's estimates for length and beta.
        let n_est = ((ATTENUATION_DB - 8.0) / (2.285 * transition)).ceil() as usize + 1;
        let real_taps = n_est.div_ceil(up).max(4);
        let n = real_taps * up;
        let taps_per_phase = real_taps.next_multiple_of(LANES);
        let beta = 0.1102 * (ATTENUATION_DB - 8.7);
        let i0_beta = bessel_i0(beta);
        let centre = (n - 1) as f64 / 2.0;
        let fc = cutoff / fs; // cycles per sample at fs
        let mut proto = vec![0f64; n];
        for (i, h) in proto.iter_mut().enumerate() {
            let t = i as f64 - centre;
            let sinc = if t.abs() < 1e-9 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / centre;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            // Gain L restores the level lost by zero-stuffing.
            *h = sinc * w * up as f64;
        }
        // Tap k of phase p multiplies x[i−k]; stored reversed (newest last)
        // so the dot product walks history and coefficients forwards.
        let mut coeffs = vec![0f32; taps_per_phase * up];
        for p in 0..up {
            for k in 0..real_taps {
                coeffs[p * taps_per_phase + taps_per_phase - 1 - k] = proto[p + k * up] as f32;
            }
        }
        Ok(Filter {
            up,
            down,
            taps_per_phase,
            filter_len: n,
            coeffs,
        })
    }
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Result<Resampler, MediaError> {
        let filter = filter(from, to)?;
        let (t, up) = (filter.taps_per_phase, filter.up);
        Ok(Resampler {
            from,
            to,
            filter,
            history: vec![0.0; t - 1],
            pos: (t - 1) * up,
        })
    }

    pub fn from_rate(&self) -> u32 {
        self.from
    }

    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Filter delay in output samples (linear phase: half the prototype).
    pub fn delay_output_samples(&self) -> usize {
        ((self.filter.filter_len - 1) as f64 / 2.0 / self.filter.down as f64).round() as usize
    }

    /// Forgets the history (a new stream begins).
    pub fn reset(&mut self) {
        self.history.clear();
        self.history.resize(self.filter.taps_per_phase - 1, 0.0);
        self.pos = (self.filter.taps_per_phase - 1) * self.filter.up;
    }

    /// Resamples `input`, appending to `out`. Output length is exact over
    /// time: `out` grows by `input.len() * to / from` on average.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let f = &*self.filter;
        let (up, down) = (f.up, f.down);
        if up == 1 && down == 1 {
            out.extend_from_slice(input);
            return;
        }
        self.history.extend(input.iter().map(|&s| s as f32));
        let t = f.taps_per_phase;
        let len = self.history.len();
        // Walk the output grid as (input index, phase) without a division
        // per sample: each output advances `down` upsampled steps.
        let (step_i, step_p) = (down / up, down % up);
        let (mut i, mut p) = (self.pos / up, self.pos % up);
        while i < len {
            let h = &f.coeffs[p * t..(p + 1) * t];
            // y = Σ h[k]·x[i−k]; i ≥ T−1 always holds thanks to the history.
            let x = &self.history[i + 1 - t..=i];
            out.push(to_i16(dot(h, x)));
            i += step_i;
            p += step_p;
            if p >= up {
                p -= up;
                i += 1;
            }
        }
        self.pos = i * up + p;
        // Keep only the T−1 samples the next output can still reach.
        let keep_from = (self.pos / up).saturating_sub(t - 1).min(len);
        if keep_from > 0 {
            self.history.drain(..keep_from);
            self.pos -= keep_from * up;
        }
    }
}

/// Σ h·x over slices whose length is a multiple of `LANES`, in `LANES`
/// independent partial sums (vectorised; order fixed, so deterministic).
#[inline]
fn dot(h: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (hc, xc) in h.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += hc[l] * xc[l];
        }
    }
    let mut half = [0f32; 4];
    for l in 0..4 {
        half[l] = acc[l] + acc[l + 4];
    }
    (half[0] + half[2]) + (half[1] + half[3])
}

/// Rounds half away from zero and saturates (`as` saturates), without the
/// libm `roundf` call `f32::round` costs on baseline x86-64.
#[inline]
fn to_i16(v: f32) -> i16 {
    (v + 0.5f32.copysign(v)) as i16
}

/// Resamples a whole clip, compensating the filter delay so the output is
/// time-aligned with the input and `len * to / from` samples long.
pub fn resample_all(input: &[i16], from: u32, to: u32) -> Result<Vec<i16>, MediaError> {
    if from == to {
        return Ok(input.to_vec());
    }
    let mut r = Resampler::new(from, to)?;
    let want = (input.len() as u64 * to as u64 / from as u64) as usize;
    // Start the output grid half a filter later: output n is then centred on
    // input time n·from/to exactly (to within half an upsampled sample).
    let centre = (r.filter.filter_len - 1) / 2;
    r.pos += centre;
    let mut out = Vec::with_capacity(want + 8);
    r.process(input, &mut out);
    // Push zeros through to flush the tail of the filter.
    r.process(&vec![0i16; r.filter.taps_per_phase + 2], &mut out);
    out.truncate(want);
    out.resize(want, 0);
    Ok(out)
}

/// Distinct clips remembered as seen once (a clip is kept on its second play).
const MEMO_SEEN: usize = 4096;
/// Samples of resampled clips kept: 8 MB, about 8 minutes of 8 kHz speech.
const MEMO_SAMPLES: usize = 4 << 20;

/// A clip's identity: its rates, length and a keyed 64-bit hash of its
/// samples (SipHash with the process's random keys: a peer or tenant
/// cannot aim a collision it cannot compute).
type ClipKey = (u32, u32, usize, u64);

/// Resampled clips that are played again and again — a greeting, a
/// pre-rendered answer, a reprompt — so each is resampled once per
/// process, not once per call (22 050 → 8 000 Hz costs about 1.5 ms of CPU
/// per 3 s clip; at 240 calls/s that was a fifth of the node's CPU). A clip
/// is kept on its second play, so a sentence spoken once (an answer made
/// for one caller) passes through without taking memory; the oldest kept
/// clips go first beyond [`MEMO_SAMPLES`].
#[derive(Debug, Default)]
pub struct ClipMemo {
    hasher: std::hash::RandomState,
    seen: std::collections::HashSet<ClipKey>,
    seen_order: std::collections::VecDeque<ClipKey>,
    kept: HashMap<ClipKey, Arc<[i16]>>,
    kept_order: std::collections::VecDeque<ClipKey>,
    kept_samples: usize,
}

impl ClipMemo {
    /// The process's memo, used by every playout.
    pub fn global() -> &'static Mutex<ClipMemo> {
        static MEMO: OnceLock<Mutex<ClipMemo>> = OnceLock::new();
        MEMO.get_or_init(Default::default)
    }

    /// The clip's key, from a copy of the memo's hash keys: the samples
    /// are hashed outside the memo's lock.
    fn key(hasher: &std::hash::RandomState, input: &[i16], from: u32, to: u32) -> ClipKey {
        use std::hash::BuildHasher;
        (from, to, input.len(), hasher.hash_one(input))
    }

    /// The clip's resampled form if it was kept.
    fn get(&self, key: &ClipKey) -> Option<Arc<[i16]>> {
        self.kept.get(key).cloned()
    }

    /// Notes a resampled clip: remembered on its first play, kept on its second.
    fn note(&mut self, key: ClipKey, out: &[i16]) {
        if self.seen.contains(&key) {
            if out.len() > MEMO_SAMPLES / 4 || self.kept.contains_key(&key) {
                return;
            }
            while self.kept_samples + out.len() > MEMO_SAMPLES {
                let Some(old) = self.kept_order.pop_front() else {
                    break;
                };
                if let Some(c) = self.kept.remove(&old) {
                    self.kept_samples -= c.len();
                }
            }
            self.kept.insert(key, out.into());
            self.kept_order.push_back(key);
            self.kept_samples += out.len();
            return;
        }
        if self.seen_order.len() >= MEMO_SEEN {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key);
        self.seen_order.push_back(key);
    }

    /// Clips kept and their samples.
    pub fn kept(&self) -> (usize, usize) {
        (self.kept.len(), self.kept_samples)
    }
}

/// [`resample_all`] through `memo`: a clip played before is copied from
/// its kept resampled form instead of being filtered again.
pub fn resample_clip(
    memo: &Mutex<ClipMemo>,
    input: &[i16],
    from: u32,
    to: u32,
) -> Result<Vec<i16>, MediaError> {
    if from == to {
        return Ok(input.to_vec());
    }
    let hasher = lock(memo).hasher.clone();
    let key = ClipMemo::key(&hasher, input, from, to);
    if let Some(kept) = lock(memo).get(&key) {
        return Ok(kept.to_vec());
    }
    // Filtered outside the lock: other calls' clips do not wait on this one.
    let out = resample_all(input, from, to)?;
    lock(memo).note(key, &out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    /// Streams `input` through in 20 ms frames, checking frame sizes.
    fn stream(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to).unwrap();
        let fin = from as usize / 50;
        let fout = to as usize / 50;
        let mut out = Vec::new();
        for chunk in input.chunks(fin) {
            let before = out.len();
            r.process(chunk, &mut out);
            if chunk.len() == fin {
                assert_eq!(
                    out.len() - before,
                    fout,
                    "{from}->{to}: one frame in, one frame out"
                );
            }
        }
        out
    }

    #[test]
    fn passband_tone_keeps_its_level_across_all_pairs() {
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (16000, 48000),
            (48000, 16000),
            (8000, 48000),
            (48000, 8000),
        ] {
            let input = tone(1000.0, from, from as usize, 10000.0);
            let out = stream(from, to, &input);
            // Skip the filter's settling time at the start.
            let steady = &out[out.len() / 4..];
            let ratio = rms(steady) / rms(&input);
            assert!((ratio - 1.0).abs() < 0.02, "{from}->{to}: gain {ratio}");
        }
    }

    #[test]
    fn downsampling_rejects_what_would_alias() {
        // 6 kHz at 16 kHz would fold to 2 kHz at 8 kHz; it must vanish.
        let input = tone(6000.0, 16000, 16000, 10000.0);
        let out = stream(16000, 8000, &input);
        let level_db = 20.0 * (rms(&out[out.len() / 4..]) / rms(&input)).log10();
        assert!(level_db < -55.0, "alias at {level_db} dB");
        // 20 kHz at 48 kHz into 16 kHz.
        let input = tone(20000.0, 48000, 48000, 10000.0);
        let out = stream(48000, 16000, &input);
        let level_db = 20.0 * (rms(&out[out.len() / 4..]) / rms(&input)).log10();
        assert!(level_db < -55.0, "alias at {level_db} dB");
    }

    #[test]
    fn upsampling_rejects_images() {
        // A 3 kHz tone upsampled 8k -> 16k must not leave its 5 kHz image.
        let input = tone(3000.0, 8000, 8000, 10000.0);
        let out = stream(8000, 16000, &input);
        let steady = &out[4000..];
        // Project onto 5 kHz (Goertzel-style correlation).
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &x) in steady.iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * 5000.0 * i as f64 / 16000.0;
            s += x as f64 * ph.sin();
            c += x as f64 * ph.cos();
        }
        let image_amp = 2.0 * (s * s + c * c).sqrt() / steady.len() as f64;
        assert!(
            20.0 * (image_amp / 10000.0).log10() < -55.0,
            "image amplitude {image_amp}"
        );
    }

    #[test]
    fn streaming_equals_one_shot_so_frame_edges_do_not_click() {
        let input = tone(440.0, 8000, 8000, 12000.0);
        let streamed = stream(8000, 16000, &input);
        let mut r = Resampler::new(8000, 16000).unwrap();
        let mut whole = Vec::new();
        r.process(&input, &mut whole);
        assert_eq!(streamed, whole);
    }

    #[test]
    fn resample_all_is_aligned_and_sized() {
        let input = tone(500.0, 22050, 22050, 8000.0);
        let out = resample_all(&input, 22050, 8000).unwrap();
        assert_eq!(out.len(), 8000);
        let expect = tone(500.0, 8000, 8000, 8000.0);
        // Aligned: the middle matches the ideal tone closely.
        let err: f64 = out[1000..7000]
            .iter()
            .zip(&expect[1000..7000])
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let sig: f64 = expect[1000..7000].iter().map(|&b| (b as f64).powi(2)).sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 40.0, "snr {snr} dB");
    }

    #[test]
    fn a_clip_played_twice_is_kept_and_served_the_same() {
        let memo = Mutex::new(ClipMemo::default());
        let clip = tone(500.0, 22050, 22050, 8000.0);
        let direct = resample_all(&clip, 22050, 8000).unwrap();
        assert_eq!(resample_clip(&memo, &clip, 22050, 8000).unwrap(), direct);
        assert_eq!(lock(&memo).kept(), (0, 0), "kept only on the second play");
        assert_eq!(resample_clip(&memo, &clip, 22050, 8000).unwrap(), direct);
        assert_eq!(lock(&memo).kept(), (1, 8000));
        assert_eq!(resample_clip(&memo, &clip, 22050, 8000).unwrap(), direct);
        // Another clip of the same length, or the same clip to another
        // rate, is not mistaken for it.
        let other = tone(700.0, 22050, 22050, 8000.0);
        assert_eq!(
            resample_clip(&memo, &other, 22050, 8000).unwrap(),
            resample_all(&other, 22050, 8000).unwrap()
        );
        assert_eq!(
            resample_clip(&memo, &clip, 22050, 16000).unwrap(),
            resample_all(&clip, 22050, 16000).unwrap()
        );
        assert_eq!(lock(&memo).kept(), (1, 8000));
    }

    #[test]
    fn the_clip_memo_stays_within_its_bound() {
        let memo = Mutex::new(ClipMemo::default());
        // Clips of a quarter of the bound at 8 kHz, each played twice.
        let n = MEMO_SAMPLES / 4 * 2;
        for i in 0..6 {
            let mut clip = vec![0i16; n];
            clip[0] = i;
            for _ in 0..2 {
                resample_clip(&memo, &clip, 16000, 8000).unwrap();
            }
        }
        let (clips, samples) = lock(&memo).kept();
        assert!(samples <= MEMO_SAMPLES, "{samples} samples kept");
        assert_eq!(clips, 4);
    }

    #[test]
    fn unreasonable_rates_are_errors() {
        assert!(Resampler::new(0, 8000).is_err());
        assert!(Resampler::new(8000, 1_000_000).is_err());
        assert!(Resampler::new(8000, 8001).is_err()); // L = 8001 > 1024
    }
}
