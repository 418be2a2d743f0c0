//! SDP parsing and offer/answer must never panic; an answer we build from
//! any offer must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::media::Codec;
use switchboard::sip::sdp;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = sdp::parse(data) {
        if let Ok(n) = sdp::negotiate(&offer, &[Codec::Pcmu, Codec::Pcma]) {
            let answer = sdp::build_answer(&offer, &n, "127.0.0.1:20000".parse().unwrap(), 1, 1);
            sdp::parse(answer.as_bytes()).expect("our answer parses");
        }
    }
});
