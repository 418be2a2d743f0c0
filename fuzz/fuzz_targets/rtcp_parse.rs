//! RTCP from a peer (compound or not, well-formed or not) must never
//! panic, and a report we build afterwards must parse again.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::media::control::{RtcpSession, Sending, REPORT_INTERVAL};
use switchboard::media::jitter::Reception;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = RtcpSession::new(1234, "fuzz@switchboard".into(), 8000, t0);
    let _ = s.handle(data, t0 + Duration::from_millis(10));
    let rec = Reception {
        ssrc: 99,
        extended_highest_seq: 1000,
        expected: 100,
        received: 90,
    };
    if let Some(report) = s.poll(t0 + REPORT_INTERVAL * 2, Sending::default(), Some(rec), 2.0) {
        let mut other = RtcpSession::new(99, "peer".into(), 8000, t0);
        other
            .handle(&report, t0 + REPORT_INTERVAL * 2)
            .expect("our report parses");
    }
});
