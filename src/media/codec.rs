//! Codec plumbing for the SIP leg: what sample rate a codec's PCM has, and
//! stateful encoders/decoders behind one type so the session and the pacer
//! need not match on the codec for every frame. G.711 is ours (`g711`);
//! G.722 (64 kbit/s, 16 kHz audio on an 8 kHz RTP clock) is the `ezk-g722`
//! crate's port of the public-domain spandsp/libg722 codec. Opus (the
//! WebRTC leg's) is libopus through [`super::opus`], with its PCM at 16 kHz.

use super::error::MediaError;
use super::g711;
use super::opus::{OpusDecoder, OpusEncoder};
use super::Codec;

/// Opus bit rate for the agent's voice: wideband speech is clear at 24–32
/// kbit/s; in-band FEC needs a little headroom.
const OPUS_BITRATE: i32 = 32_000;

impl Codec {
    /// Sample rate of the PCM this codec carries (G.722 is wideband).
    pub fn pcm_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 | Codec::Opus => 16000,
        }
    }

    /// PCM samples in one frame of `frame_ms`.
    pub fn samples_per_frame(self, frame_ms: u32) -> usize {
        (self.pcm_rate() * frame_ms / 1000) as usize
    }

    /// RTP timestamp units in one frame of `frame_ms`.
    pub fn rtp_units_per_frame(self, frame_ms: u32) -> u32 {
        self.rtp_clock_rate() * frame_ms / 1000
    }
}

/// Decodes payloads of one codec into PCM at `codec.pcm_rate()`.
pub struct Decoder {
    codec: Codec,
    g722: Option<ezk_g722::libg722::decoder::Decoder>,
    opus: Option<OpusDecoder>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("codec", &self.codec)
            .finish()
    }
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Decoder, MediaError> {
        let g722 = (codec == Codec::G722).then(|| {
            ezk_g722::libg722::decoder::Decoder::new(
                ezk_g722::libg722::Bitrate::Mode1_64000,
                false,
                false,
            )
        });
        let opus = match codec {
            Codec::Opus => Some(OpusDecoder::new(codec.pcm_rate())?),
            _ => None,
        };
        Ok(Decoder { codec, g722, opus })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the decoded samples of `payload` to `out`. A payload the
    /// codec cannot read (a corrupt Opus packet) appends nothing: the
    /// receiver conceals the gap.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        match self.codec {
            Codec::Pcmu => g711::decode_ulaw(payload, out),
            Codec::Pcma => g711::decode_alaw(payload, out),
            Codec::G722 => {
                if let Some(d) = self.g722.as_mut() {
                    out.extend(d.decode(payload));
                }
            }
            Codec::Opus => {
                if let Some(d) = self.opus.as_mut() {
                    if let Err(e) = d.decode(payload, out) {
                        tracing::trace!(error = %e, "Opus packet dropped");
                    }
                }
            }
        }
    }

    /// Fills a lost frame of `samples` the codec's own way when it has one
    /// (Opus packet-loss concealment); `false` leaves it to the caller.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> bool {
        let Some(d) = self.opus.as_mut() else {
            return false;
        };
        let start = out.len();
        match d.recover(None, out) {
            Ok(_) => {
                out.resize(start + samples, 0);
                true
            }
            Err(_) => {
                out.truncate(start);
                false
            }
        }
    }
}

/// Encodes PCM at `codec.pcm_rate()` into payloads.
pub struct Encoder {
    codec: Codec,
    g722: Option<ezk_g722::libg722::encoder::Encoder>,
    opus: Option<OpusEncoder>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("codec", &self.codec)
            .finish()
    }
}

impl Encoder {
    pub fn new(codec: Codec) -> Result<Encoder, MediaError> {
        let g722 = (codec == Codec::G722).then(|| {
            ezk_g722::libg722::encoder::Encoder::new(
                ezk_g722::libg722::Bitrate::Mode1_64000,
                false,
                false,
            )
        });
        let opus = match codec {
            Codec::Opus => Some(OpusEncoder::new(codec.pcm_rate(), OPUS_BITRATE)?),
            _ => None,
        };
        Ok(Encoder { codec, g722, opus })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the encoding of `pcm` (one frame) to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        match self.codec {
            Codec::Pcmu => g711::encode_ulaw(pcm, out),
            Codec::Pcma => g711::encode_alaw(pcm, out),
            Codec::G722 => {
                if let Some(e) = self.g722.as_mut() {
                    out.extend(e.encode(pcm));
                }
            }
            Codec::Opus => {
                if let Some(Err(e)) = self.opus.as_mut().map(|enc| enc.encode(pcm, out)) {
                    tracing::debug!(error = %e, "Opus frame not encoded");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snr_db(reference: &[i16], got: &[i16]) -> f64 {
        let sig: f64 = reference.iter().map(|&s| (s as f64).powi(2)).sum();
        let err: f64 = reference
            .iter()
            .zip(got)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        10.0 * (sig / err.max(1.0)).log10()
    }

    /// G.722's QMF and ADPCM delay the signal; find the lag that fits best.
    fn best_snr(input: &[i16], output: &[i16]) -> (usize, f64) {
        (0..64)
            .map(|lag| {
                (
                    lag,
                    snr_db(&input[1000..15000], &output[1000 + lag..15000 + lag]),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
    }

    #[test]
    fn g722_round_trip_keeps_wideband_audio() {
        // 1 s at 16 kHz: 440 Hz plus 5 kHz (above G.711's band).
        let input: Vec<i16> = (0..16_000)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 3000.0 * (2.0 * std::f64::consts::PI * 5000.0 * t).sin())
                    as i16
            })
            .collect();
        let mut enc = Encoder::new(Codec::G722).unwrap();
        let mut dec = Decoder::new(Codec::G722).unwrap();
        let mut output = Vec::new();
        for frame in input.chunks(320) {
            let mut payload = Vec::new();
            enc.encode(frame, &mut payload);
            // 64 kbit/s: 160 bytes per 20 ms, 320 samples back.
            assert_eq!(payload.len(), 160);
            let before = output.len();
            dec.decode(&payload, &mut output);
            assert_eq!(output.len() - before, 320);
        }
        output.extend(std::iter::repeat_n(0, 64));
        let (lag, snr) = best_snr(&input, &output);
        assert!(snr > 20.0, "G.722 round trip SNR {snr:.1} dB at lag {lag}");
        // The 5 kHz component survives (it would not through 8 kHz G.711).
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &x) in output[1000 + lag..15000 + lag].iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * 5000.0 * (i + 1000) as f64 / 16_000.0;
            s += x as f64 * ph.sin();
            c += x as f64 * ph.cos();
        }
        let amp = 2.0 * (s * s + c * c).sqrt() / 14_000.0;
        assert!((amp - 3000.0).abs() < 600.0, "5 kHz amplitude {amp:.0}");
    }

    #[test]
    fn g711_codecs_are_one_byte_per_sample() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = Encoder::new(codec).unwrap();
            let mut dec = Decoder::new(codec).unwrap();
            let mut p = Vec::new();
            enc.encode(&[1000; 160], &mut p);
            assert_eq!(p.len(), 160);
            let mut out = Vec::new();
            dec.decode(&p, &mut out);
            assert!(out.iter().all(|&s| (s - 1000).abs() < 40));
        }
    }

    #[test]
    fn opus_goes_through_the_common_encoder_and_decoder() {
        assert_eq!(Codec::Opus.pcm_rate(), 16_000);
        assert_eq!(Codec::Opus.rtp_units_per_frame(20), 960);
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut out = Vec::new();
        for k in 0..50 {
            let frame: Vec<i16> = (0..320)
                .map(|i| {
                    let t = (k * 320 + i) as f64 / 16_000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            let mut p = Vec::new();
            enc.encode(&frame, &mut p);
            assert!(!p.is_empty() && p.len() < 200, "{} bytes", p.len());
            dec.decode(&p, &mut out);
        }
        assert_eq!(out.len(), 50 * 320);
        let tail = &out[out.len() - 3200..];
        let rms = (tail.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 3200.0).sqrt();
        assert!(rms > 3000.0, "the tone survives: rms {rms:.0}");
        // A corrupt packet adds nothing and does not panic.
        let before = out.len();
        dec.decode(&[0x03, 0x00], &mut out);
        assert_eq!(out.len(), before);
    }
}
