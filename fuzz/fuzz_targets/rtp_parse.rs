//! Any datagram on the RTP port — RTP of any payload type, muxed RTCP,
//! garbage — must be counted or dropped, never panic; the playout tick
//! after it must still yield a whole 16 kHz frame.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::media::jitter::JitterConfig;
use switchboard::media::receiver::{Receiver, ReceiverConfig, FRAME_SAMPLES_16K};
use switchboard::media::Codec;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let cfg = ReceiverConfig {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
        remote: "127.0.0.1:4000".parse().unwrap(),
        symmetric_rtp: true,
        sources: Default::default(),
        jitter: JitterConfig::default(),
    };
    let mut rx = Receiver::new(cfg, t0).unwrap();
    let from = "127.0.0.1:4000".parse().unwrap();
    // The input is a sequence of datagrams, each prefixed by a length byte.
    let mut rest = data;
    let mut i = 0u32;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let now = t0 + Duration::from_millis(20 * i as u64);
        rx.handle_datagram(&tail[..n], from, now);
        if let Some(frame) = rx.tick(now) {
            assert_eq!(frame.len(), FRAME_SAMPLES_16K);
        }
        rest = &tail[n..];
        i += 1;
    }
});
