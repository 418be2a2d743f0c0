//! Arbitrary arrival patterns into the jitter buffer: sequence numbers,
//! SSRCs and timing all chosen by the fuzzer. Memory must stay bounded and
//! nothing may panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::media::jitter::{JitterBuffer, JitterConfig, JitterPacket};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let cfg = JitterConfig::default();
    let mut jb = JitterBuffer::new(cfg);
    let mut now = t0;
    for op in data.chunks(5) {
        if op.len() < 5 {
            break;
        }
        now += Duration::from_millis(op[0] as u64 % 64);
        if op[0] & 0x80 != 0 {
            let _ = jb.pop(now);
        } else {
            let seq = u16::from_be_bytes([op[1], op[2]]);
            let ssrc = (op[3] & 3) as u32;
            let ts = (seq as u32).wrapping_mul(160).wrapping_add(op[4] as u32);
            jb.push(JitterPacket::new(ssrc, seq, ts, vec![0xFFu8; 160]), now);
        }
        assert!(jb.len() <= cfg.capacity);
    }
});
