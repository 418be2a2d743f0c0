//! WAV in both directions for providers: an incremental reader that finds
//! the format and the `data` chunk in a byte stream (espeak-ng writes its
//! header with unknown sizes, HTTP bodies arrive in pieces) and yields 16-bit
//! mono samples as they arrive; and a writer for upload bodies.

/// Largest header accepted before the `data` chunk (bounded memory).
const MAX_HEADER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits: u16,
}

#[derive(Debug, Default)]
pub struct WavReader {
    pending: Vec<u8>,
    format: Option<WavFormat>,
    in_data: bool,
}

impl WavReader {
    pub fn new() -> WavReader {
        WavReader::default()
    }

    pub fn format(&self) -> Option<WavFormat> {
        self.format
    }

    /// Feeds bytes; returns the mono 16-bit samples now complete (channels
    /// after the first are dropped). Errors on anything but 16-bit PCM.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<i16>, String> {
        self.pending.extend_from_slice(bytes);
        if !self.in_data {
            self.parse_header()?;
            if !self.in_data {
                return Ok(Vec::new());
            }
        }
        let Some(fmt) = self.format else {
            return Ok(Vec::new());
        };
        let frame = 2 * fmt.channels.max(1) as usize;
        let whole = self.pending.len() / frame * frame;
        let samples = self.pending[..whole]
            .chunks_exact(frame)
            .map(|f| i16::from_le_bytes([f[0], f[1]]))
            .collect();
        self.pending.drain(..whole);
        Ok(samples)
    }

    fn parse_header(&mut self) -> Result<(), String> {
        if self.pending.len() < 12 {
            return Ok(());
        }
        if &self.pending[0..4] != b"RIFF" || &self.pending[8..12] != b"WAVE" {
            return Err("not a RIFF/WAVE stream".into());
        }
        let mut at = 12;
        loop {
            if self.pending.len() < at + 8 {
                break;
            }
            let id = &self.pending[at..at + 4];
            let size = u32::from_le_bytes([
                self.pending[at + 4],
                self.pending[at + 5],
                self.pending[at + 6],
                self.pending[at + 7],
            ]) as usize;
            if id == b"data" {
                let fmt = self.format.ok_or("data chunk before fmt chunk")?;
                if fmt.bits != 16 {
                    return Err(format!(
                        "{}-bit WAV not supported (16-bit PCM only)",
                        fmt.bits
                    ));
                }
                // The size is ignored: streaming writers put 0 or 0xFFFFFFFF there.
                self.pending.drain(..at + 8);
                self.in_data = true;
                return Ok(());
            }
            let padded = size + (size & 1);
            if self.pending.len() < at + 8 + padded {
                break;
            }
            if id == b"fmt " {
                if size < 16 {
                    return Err("short fmt chunk".into());
                }
                let b = &self.pending[at + 8..];
                let audio_format = u16::from_le_bytes([b[0], b[1]]);
                if audio_format != 1 && audio_format != 0xFFFE {
                    return Err(format!(
                        "WAV format {audio_format} not supported (PCM only)"
                    ));
                }
                self.format = Some(WavFormat {
                    channels: u16::from_le_bytes([b[2], b[3]]),
                    sample_rate: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    bits: u16::from_le_bytes([b[14], b[15]]),
                });
            }
            at += 8 + padded;
        }
        if self.pending.len() > MAX_HEADER {
            return Err("WAV header too large".into());
        }
        Ok(())
    }
}

/// A complete 16-bit mono WAV file.
pub fn encode_wav(pcm: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Little-endian 16-bit PCM bytes to samples, keeping an odd trailing byte
/// in `carry` for the next piece.
pub fn pcm_from_le_bytes(carry: &mut Option<u8>, bytes: &[u8]) -> Vec<i16> {
    let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
    let mut iter = bytes.iter().copied();
    if let Some(lo) = carry.take() {
        match iter.next() {
            Some(hi) => out.push(i16::from_le_bytes([lo, hi])),
            None => {
                *carry = Some(lo);
                return out;
            }
        }
    }
    loop {
        match (iter.next(), iter.next()) {
            (Some(lo), Some(hi)) => out.push(i16::from_le_bytes([lo, hi])),
            (Some(lo), None) => {
                *carry = Some(lo);
                break;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_odd_pieces() {
        let pcm: Vec<i16> = (0..1000).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        let wav = encode_wav(&pcm, 22050);
        let mut r = WavReader::new();
        let mut got = Vec::new();
        for piece in wav.chunks(7) {
            got.extend(r.push(piece).unwrap());
        }
        assert_eq!(got, pcm);
        assert_eq!(r.format().unwrap().sample_rate, 22050);
    }

    #[test]
    fn streaming_sizes_and_garbage() {
        let mut wav = encode_wav(&[1, 2, 3], 16000);
        wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(WavReader::new().push(&wav).unwrap(), vec![1, 2, 3]);
        assert!(WavReader::new().push(b"NOT A WAVE FILE AT ALL").is_err());
        let mut big = b"RIFF\0\0\0\0WAVEjunk".to_vec();
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        big.extend(vec![0u8; MAX_HEADER + 10]);
        assert!(WavReader::new().push(&big).is_err());
    }

    #[test]
    fn pcm_carry() {
        let mut carry = None;
        let a = pcm_from_le_bytes(&mut carry, &[1, 0, 2]);
        let b = pcm_from_le_bytes(&mut carry, &[0, 3, 0]);
        assert_eq!((a, b, carry), (vec![1], vec![2, 3], None));
    }
}
