//! RFC 4733 telephone-event payloads with arbitrary timestamps, in any
//! order: never a panic, and redundancy changes nothing — sending every
//! packet twice (as trunks do with end packets) yields exactly the digits
//! that sending it once does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::media::dtmf::{DtmfDetector, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    let mut once = DtmfDetector::new(8000);
    let mut twice = DtmfDetector::new(8000);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // 6-byte records: 2-byte timestamp selector + 4-byte payload.
    for (i, rec) in data.chunks(6).enumerate() {
        if rec.len() < 6 {
            let _ = TelephoneEvent::parse(rec);
            break;
        }
        let ts = u16::from_be_bytes([rec[0], rec[1]]) as u32 * 160;
        let now = i as u64 * 20;
        if let Ok(d) = once.push(ts, &rec[2..], now) {
            a.extend(d);
        }
        for _ in 0..2 {
            if let Ok(d) = twice.push(ts, &rec[2..], now) {
                b.extend(d);
            }
        }
        a.extend(once.flush_stale(now, 300));
        b.extend(twice.flush_stale(now, 300));
    }
    assert_eq!(a, b, "a repeated packet changed the digits");
});
