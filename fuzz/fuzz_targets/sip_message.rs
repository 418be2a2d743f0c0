//! SIP message parsing and stream framing must never panic, and whatever
//! parses must survive serialise → parse with the same start line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::message::{frame, Message, MAX_MESSAGE_BYTES};

fuzz_target!(|data: &[u8]| {
    let _ = frame(data, MAX_MESSAGE_BYTES);
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
