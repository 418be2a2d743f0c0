//! G.711 µ-law (PCMU) and A-law (PCMA): table-driven encode and decode of
//! 16-bit linear PCM. The tables are built at compile time from the ITU-T
//! G.711 segment rules (the same arithmetic as the Sun reference `g711.c`).

/// µ-law code for digital silence (the "zero" a trunk expects in gaps).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code for digital silence (+0, even bits inverted).
pub const ALAW_SILENCE: u8 = 0xD5;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

/// Encodes a 14-bit magnitude-and-sign value (`sample >> 2`).
const fn linear14_to_ulaw(v: i32) -> u8 {
    let (mut mag, mask) = if v < 0 { (-v, 0x7Fu8) } else { (v, 0xFFu8) };
    if mag > ULAW_CLIP {
        mag = ULAW_CLIP;
    }
    mag += ULAW_BIAS >> 2;
    // Segment = position of the highest set bit above the 6-bit floor.
    let ends = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut seg = 0;
    while seg < 8 && mag > ends[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as i32) << 4) | ((mag >> (seg as i32 + 1)) & 0x0F);
    (u as u8) ^ mask
}

/// Encodes a 13-bit value (`sample >> 3`).
const fn linear13_to_alaw(v: i32) -> u8 {
    let (mag, mask) = if v >= 0 {
        (v, 0xD5u8)
    } else {
        (-v - 1, 0x55u8)
    };
    let ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut seg = 0;
    while seg < 8 && mag > ends[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut a = (seg as i32) << 4;
    if seg < 2 {
        a |= (mag >> 1) & 0x0F;
    } else {
        a |= (mag >> seg as i32) & 0x0F;
    }
    (a as u8) ^ mask
}

const fn build_ulaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
}

/// Indexed by `(sample >> 2) + 8192`: every 14-bit input.
const fn build_ulaw_encode() -> [u8; 16384] {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        t[i] = linear14_to_ulaw(i as i32 - 8192);
        i += 1;
    }
    t
}

/// Indexed by `(sample >> 3) + 4096`: every 13-bit input.
const fn build_alaw_encode() -> [u8; 8192] {
    let mut t = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        t[i] = linear13_to_alaw(i as i32 - 4096);
        i += 1;
    }
    t
}

static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
static ALAW_DECODE: [i16; 256] = build_alaw_decode();
static ULAW_ENCODE: [u8; 16384] = build_ulaw_encode();
static ALAW_ENCODE: [u8; 8192] = build_alaw_encode();

#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    ULAW_ENCODE[((sample as i32 >> 2) + 8192) as usize]
}

#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[((sample as i32 >> 3) + 4096) as usize]
}

#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Appends the µ-law codes of `pcm` to `out`.
pub fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| ulaw_encode(s)));
}

/// Appends the A-law codes of `pcm` to `out`.
pub fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| alaw_encode(s)));
}

/// Appends the linear samples of µ-law `codes` to `out`.
pub fn decode_ulaw(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| ulaw_decode(c)));
}

/// Appends the linear samples of A-law `codes` to `out`.
pub fn decode_alaw(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| alaw_decode(c)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference points of ITU-T G.711 tables 1a/2a (expressed on the 16-bit
    /// scale: µ-law values ×4, A-law values ×8 of the 14/13-bit tables).
    #[test]
    fn ulaw_decode_matches_itu_reference_points() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124); // +8031 × 4
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xFE), 8); // +2 × 4: first step
        assert_eq!(ulaw_decode(0xF0), 120); // end of segment 0: +30 × 4
        assert_eq!(ulaw_decode(0xEF), 132); // segment 1 starts at +33 × 4
        assert_eq!(ulaw_decode(0x8F), 16764); // segment 7 first code: +4191 × 4
    }

    #[test]
    fn alaw_decode_matches_itu_reference_points() {
        assert_eq!(alaw_decode(0xD5), 8); // +1 × 8
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256); // +4032 × 8
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xD4), 24); // +3 × 8
        assert_eq!(alaw_decode(0xC5), 264); // segment 1 first: +33 × 8
        assert_eq!(alaw_decode(0xA5), 16896); // segment 7 first: +2112 × 8
    }

    #[test]
    fn encoding_reference_points() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-4), 0x7E); // -1 on the 14-bit scale
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_survives_decode_encode() {
        for code in 0..=255u8 {
            // µ-law has two zeros (0x7F, 0xFF); both decode to 0, which encodes to 0xFF.
            let back = ulaw_encode(ulaw_decode(code));
            assert_eq!(ulaw_decode(back), ulaw_decode(code), "ulaw {code:#x}");
            if code != 0x7F {
                assert_eq!(back, code, "ulaw {code:#x}");
            }
            assert_eq!(alaw_encode(alaw_decode(code)), code, "alaw {code:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        // Sweep the whole 16-bit range: the decoded value must be the nearest
        // reconstruction level within that segment's step size.
        for s in (i16::MIN as i32..=i16::MAX as i32).step_by(7) {
            let s = s as i16;
            let u = ulaw_decode(ulaw_encode(s)) as i32;
            let a = alaw_decode(alaw_encode(s)) as i32;
            let mag = (s as i32).abs();
            // Step sizes double per segment; largest is 1024 (µ) / 1024 (A) on the 16-bit scale.
            let max_err = (mag / 16).max(16) + 8;
            assert!((u - s as i32).abs() <= max_err.min(1100), "ulaw {s} -> {u}");
            assert!((a - s as i32).abs() <= max_err.min(1100), "alaw {s} -> {a}");
        }
    }

    #[test]
    fn monotonic_decoding_over_codes() {
        // Within one sign, larger magnitude codes decode to larger values.
        let mut prev = -1;
        for code in (0x80..=0xFFu8).rev() {
            let v = ulaw_decode(code) as i32;
            assert!(
                v > prev || (code == 0xFF && v == 0),
                "ulaw not monotonic at {code:#x}"
            );
            prev = v;
        }
    }
}
