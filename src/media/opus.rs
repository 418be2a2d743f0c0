//! Opus (RFC 6716) through Debian's libopus (the `opus` crate), for the
//! WebRTC leg and softphones that prefer it: 20 ms mono frames with PCM at
//! the agent's 16 kHz (libopus resamples to and from its internal rate; the
//! RTP clock is always 48 kHz, RFC 7587), packet-loss concealment, and
//! in-band FEC. Corrupt packets are errors, never panics.

use super::error::MediaError;

/// RTP clock rate of Opus, whatever the audio bandwidth (RFC 7587 §4.1).
pub const OPUS_RTP_CLOCK: u32 = 48_000;
/// Frame length on the wire.
pub const OPUS_FRAME_MS: u32 = 20;
/// The longest packet libopus may produce or accept (RFC 6716 §3.2.1 allows
/// up to 120 ms; one 20 ms voice frame is far below this).
const MAX_PACKET: usize = 1500;
/// The most samples one packet can decode to: 120 ms.
const MAX_FRAME_MS: u32 = 120;

fn opus_err(what: &str, e: opus::Error) -> MediaError {
    MediaError::Opus(format!("{what}: {e}"))
}

fn check_rate(pcm_rate: u32) -> Result<(), MediaError> {
    match pcm_rate {
        8000 | 12000 | 16000 | 24000 | 48000 => Ok(()),
        other => Err(MediaError::UnsupportedRate(other)),
    }
}

/// Encodes 20 ms mono frames of PCM at `pcm_rate` into Opus packets.
pub struct OpusEncoder {
    enc: opus::Encoder,
    frame: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("frame", &self.frame)
            .finish()
    }
}

impl OpusEncoder {
    /// A VoIP-tuned encoder at `bitrate_bps` (6,000–510,000), with in-band
    /// FEC on so a receiver can rebuild a lost frame from the next packet.
    pub fn new(pcm_rate: u32, bitrate_bps: i32) -> Result<OpusEncoder, MediaError> {
        check_rate(pcm_rate)?;
        let mut enc = opus::Encoder::new(pcm_rate, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| opus_err("encoder", e))?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate_bps.clamp(6_000, 510_000)))
            .map_err(|e| opus_err("bitrate", e))?;
        enc.set_inband_fec(true).map_err(|e| opus_err("fec", e))?;
        enc.set_packet_loss_perc(5)
            .map_err(|e| opus_err("loss", e))?;
        Ok(OpusEncoder {
            enc,
            frame: (pcm_rate * OPUS_FRAME_MS / 1000) as usize,
            buf: vec![0; MAX_PACKET],
        })
    }

    /// PCM samples in one frame.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Encodes exactly one 20 ms frame, appending the packet to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        if pcm.len() != self.frame {
            return Err(MediaError::Opus(format!(
                "frame of {} samples, expected {}",
                pcm.len(),
                self.frame
            )));
        }
        let n = self
            .enc
            .encode(pcm, &mut self.buf)
            .map_err(|e| opus_err("encode", e))?;
        out.extend_from_slice(&self.buf[..n]);
        Ok(())
    }
}

/// Decodes Opus packets into mono PCM at `pcm_rate`.
pub struct OpusDecoder {
    dec: opus::Decoder,
    frame: usize,
    buf: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("frame", &self.frame)
            .finish()
    }
}

impl OpusDecoder {
    pub fn new(pcm_rate: u32) -> Result<OpusDecoder, MediaError> {
        check_rate(pcm_rate)?;
        let dec = opus::Decoder::new(pcm_rate, opus::Channels::Mono)
            .map_err(|e| opus_err("decoder", e))?;
        Ok(OpusDecoder {
            dec,
            frame: (pcm_rate * OPUS_FRAME_MS / 1000) as usize,
            buf: vec![0; (pcm_rate * MAX_FRAME_MS / 1000) as usize],
        })
    }

    /// Decodes one packet (any frame length up to 120 ms), appending the
    /// PCM to `out`; returns the number of samples. A corrupt packet is an
    /// error and leaves `out` as it was.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, MediaError> {
        if payload.is_empty() {
            return Err(MediaError::Opus("empty packet".into()));
        }
        let n = self
            .dec
            .decode(payload, &mut self.buf, false)
            .map_err(|e| opus_err("decode", e))?;
        out.extend_from_slice(&self.buf[..n]);
        Ok(n)
    }

    /// A lost frame: rebuilt from the FEC data in `next` (the packet after
    /// the gap) when there is one, else concealed (PLC). Appends 20 ms.
    pub fn recover(
        &mut self,
        next: Option<&[u8]>,
        out: &mut Vec<i16>,
    ) -> Result<usize, MediaError> {
        let frame = self.frame;
        let n = match next {
            Some(p) if !p.is_empty() => self
                .dec
                .decode(p, &mut self.buf[..frame], true)
                .map_err(|e| opus_err("fec", e))?,
            _ => self
                .dec
                .decode(&[], &mut self.buf[..frame], false)
                .map_err(|e| opus_err("plc", e))?,
        };
        out.extend_from_slice(&self.buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 440 Hz + 1 kHz at 16 kHz, `ms` long.
    fn tones(ms: usize) -> Vec<i16> {
        (0..ms * 16)
            .map(|i| {
                let t = i as f64 / 16000.0;
                (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 4000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin())
                    as i16
            })
            .collect()
    }

    /// Best SNR of `out` against `inp` over delays up to 20 ms (the codec's
    /// look-ahead), measured after the first 100 ms.
    fn snr_db(inp: &[i16], out: &[i16]) -> (f64, usize) {
        let mut best = (f64::NEG_INFINITY, 0);
        for d in 0..320 {
            let (mut sig, mut err) = (0.0f64, 0.0f64);
            for i in 1600..inp.len() - 320 {
                let x = inp[i] as f64;
                let y = out[i + d] as f64;
                sig += x * x;
                err += (x - y) * (x - y);
            }
            let snr = 10.0 * (sig / err.max(1.0)).log10();
            if snr > best.0 {
                best = (snr, d);
            }
        }
        best
    }

    fn round_trip(pcm: &[i16], bitrate: i32) -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(16000, bitrate).unwrap();
        pcm.chunks_exact(enc.frame_samples())
            .map(|f| {
                let mut p = Vec::new();
                enc.encode(f, &mut p).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn tones_survive_a_round_trip_at_24_kbps() {
        let inp = tones(2000);
        let packets = round_trip(&inp, 24_000);
        assert_eq!(packets.len(), 100);
        let bytes: usize = packets.iter().map(Vec::len).sum();
        // 24 kbit/s is 60 bytes per 20 ms frame (VBR: around it).
        assert!((2000..=9000).contains(&bytes), "{bytes} bytes for 2 s");
        let mut dec = OpusDecoder::new(16000).unwrap();
        let mut out = Vec::new();
        for p in &packets {
            assert_eq!(dec.decode(p, &mut out).unwrap(), 320);
        }
        let (snr, delay) = snr_db(&inp, &out);
        println!("opus 24 kbit/s tones: SNR {snr:.1} dB at {delay} samples delay");
        assert!(snr > 12.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn lost_frames_are_rebuilt_from_fec_or_concealed() {
        let inp = tones(1000);
        let packets = round_trip(&inp, 32_000);
        let mut dec = OpusDecoder::new(16000).unwrap();
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            match i {
                // One lost packet, the next one carries its FEC.
                20 => {
                    dec.recover(Some(&packets[21]), &mut out).unwrap();
                }
                // Two in a row: the first has no FEC to use.
                30 => {
                    dec.recover(None, &mut out).unwrap();
                }
                31 => {
                    dec.recover(Some(&packets[32]), &mut out).unwrap();
                }
                _ => {
                    dec.decode(p, &mut out).unwrap();
                }
            }
        }
        assert_eq!(out.len(), inp.len(), "every frame, lost or not, is 20 ms");
        // Concealed audio is not silence: the tone carries on.
        let rms = |s: &[i16]| {
            (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        assert!(rms(&out[20 * 320..21 * 320]) > 1000.0);
        assert!(rms(&out[30 * 320..31 * 320]) > 1000.0);
    }

    #[test]
    fn corrupt_or_wrong_input_is_an_error_not_a_panic() {
        let mut dec = OpusDecoder::new(16000).unwrap();
        let mut out = Vec::new();
        assert!(dec.decode(&[], &mut out).is_err());
        // TOC byte for code 3 with a frame count of 0: invalid (RFC 6716 §3.2.5).
        assert!(dec.decode(&[0x03, 0x00], &mut out).is_err());
        assert!(out.is_empty(), "nothing appended on error");
        let mut rng = 0x1234_5678u32;
        for len in 1..200 {
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    rng as u8
                })
                .collect();
            let _ = dec.decode(&p, &mut out);
        }
        assert!(out.len() <= 199 * 1920, "bounded output");
        let mut enc = OpusEncoder::new(16000, 24_000).unwrap();
        assert!(enc.encode(&[0; 100], &mut Vec::new()).is_err());
        assert!(matches!(
            OpusEncoder::new(44_100, 24_000),
            Err(MediaError::UnsupportedRate(44_100))
        ));
    }
}
