//! SIP message parsing and stream framing must never panic, and whatever
//! parses must survive serialise → parse with the same start line. The
//! connection framer, fed the input cut into pieces, frames the first
//! message exactly as the whole-buffer `frame` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

use switchboard::sip::message::{frame, Message, MAX_MESSAGE_BYTES};
use switchboard::sip::stream::{StreamFramer, StreamLimits};

fn first_framed(data: &[u8]) -> Option<Vec<u8>> {
    let t0 = Instant::now();
    let limits = StreamLimits {
        max_message: MAX_MESSAGE_BYTES,
        message_deadline: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };
    let mut framer = StreamFramer::new(t0, limits);
    let cut = 1 + usize::from(data.first().copied().unwrap_or(0)) % 31;
    for piece in data.chunks(cut) {
        framer.handle_input(t0, piece);
        match framer.poll_message() {
            Some(Ok(m)) => return Some(m.to_vec()),
            Some(Err(_)) => return None,
            None => {}
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let whole = frame(data, MAX_MESSAGE_BYTES);
    // The framer skips CRLF keep-alives before a message; `frame` does not.
    if !data.starts_with(b"\r") && !data.starts_with(b"\n") {
        let expected = match whole {
            Ok(Some(n)) => Some(data[..n].to_vec()),
            _ => None,
        };
        assert_eq!(first_framed(data), expected);
    }
    if let Ok(msg) = Message::parse(data) {
        let _ = msg.validate_request();
        let _ = (msg.top_via(), msg.from(), msg.to(), msg.contact(), msg.cseq());
        if let Some(uri) = msg.request_uri() {
            let _ = switchboard::sip::number::from_uri(uri, &Default::default());
        }
        // (Serialising adds Content-Length, which may tip a message at the
        // header limit over it.)
        if msg.headers.len() < switchboard::sip::message::MAX_HEADERS {
            let again = Message::parse(&msg.to_bytes()).expect("a serialised message parses");
            assert_eq!(again.start, msg.start);
            assert_eq!(again.body, msg.body);
        }
        let resp = Message::response_to(&msg, 400, "Bad Request");
        let _ = Message::parse(&resp.to_bytes());
    }
});
