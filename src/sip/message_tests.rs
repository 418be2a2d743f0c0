use super::*;

const INVITE: &str = "INVITE sip:+15555550100@127.0.0.1:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-1;rport\r\n\
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-0, SIP/2.0/TCP [::1]:5070;branch=z9hG4bK-00\r\n\
f: \"Alice, A\" <sip:alice@10.0.0.1>;tag=abc\r\n\
To: <sip:+15555550100@127.0.0.1>\r\n\
i: call-1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.1:5062;transport=udp>\r\n\
Subject: folded\r\n  continuation\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\ntrailing";

#[test]
fn parses_compact_folded_and_frames_body_by_content_length() {
    let m = Message::parse(INVITE.as_bytes()).unwrap();
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.call_id(), Some("call-1@10.0.0.1"));
    assert_eq!(&m.body[..], b"v=0\n");
    assert_eq!(m.header("subject"), Some("folded continuation"));
    let via = m.top_via().unwrap();
    assert_eq!(via.host, "10.0.0.1");
    assert_eq!(via.port, Some(5062));
    assert_eq!(via.branch(), Some("z9hG4bK-1"));
    assert_eq!(via.rport(), Some(None));
    assert_eq!(m.header_values("Via").len(), 3);
    let last = Via::parse(m.header_values("Via")[2]).unwrap();
    assert_eq!(
        (last.host.as_str(), last.port, last.transport.as_str()),
        ("::1", Some(5070), "TCP")
    );
    let from = m.from().unwrap();
    assert_eq!(from.tag(), Some("abc"));
    assert_eq!(from.display.as_deref(), Some("Alice, A"));
    assert_eq!(
        m.cseq().unwrap(),
        CSeq {
            seq: 1,
            method: Method::Invite
        }
    );
    m.validate_request().unwrap();
    assert_eq!(
        uri_user(m.request_uri().unwrap()).as_deref(),
        Some("+15555550100")
    );
}

#[test]
fn response_copies_dialog_headers_and_round_trips() {
    let req = Message::parse(INVITE.as_bytes()).unwrap();
    let mut resp = Message::response_to(&req, 180, "Ringing");
    resp.set_to_tag("xyz");
    let bytes = resp.to_bytes();
    let back = Message::parse(&bytes).unwrap();
    assert_eq!(back.status(), Some(180));
    assert_eq!(back.to().unwrap().tag(), Some("xyz"));
    assert_eq!(back.header_values("Via").len(), 3);
    assert_eq!(back.call_id(), req.call_id());
    assert!(back.body.is_empty());
}

#[test]
fn stream_framing_handles_short_reads_and_refuses_lies() {
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcOPTIONS";
    assert_eq!(frame(&msg[..10], 65536), Ok(None));
    assert_eq!(frame(&msg[..45], 65536), Ok(None));
    let n = frame(msg, 65536).unwrap().unwrap();
    assert_eq!(&msg[n..], b"OPTIONS");
    assert_eq!(
        frame(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", 65536),
        Err(ParseError::BadContentLength)
    );
    assert_eq!(
        frame(b"X a:b SIP/2.0\r\nl: x\r\n\r\n", 65536),
        Err(ParseError::BadContentLength)
    );
    assert_eq!(
        frame(b"X a:b SIP/2.0\r\nl: 1000000\r\n\r\n", 65536),
        Err(ParseError::TooLarge(65536))
    );
    assert!(frame(&vec![b'a'; 70000], 65536).is_err());
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"INVITE\r\n\r\n".to_vec(),
        b"SIP/2.0 99999 x\r\n\r\n".to_vec(),
        b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"INVITE sip:a@b SIP/2.0\r\n bad fold\r\n\r\n".to_vec(),
        vec![0xff; 100],
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\n{}\r\n",
            "Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n".repeat(1000)
        )
        .into_bytes(),
    ];
    for c in cases {
        assert!(
            Message::parse(&c).is_err(),
            "{:?}",
            String::from_utf8_lossy(&c)
        );
    }
    // Parses but lacks what a request needs.
    let m = Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n").unwrap();
    assert!(m.validate_request().is_err());
}

#[test]
fn uri_users_from_sip_and_tel() {
    assert_eq!(
        uri_user("tel:+1-555-555-0100;phone-context=x").as_deref(),
        Some("+1-555-555-0100")
    );
    assert_eq!(
        uri_user("sip:15555550100@trunk.example.com;user=phone").as_deref(),
        Some("15555550100")
    );
    assert_eq!(uri_user("sip:trunk.example.com"), None);
    assert_eq!(
        split_host_port("[2001:db8::1]:5060"),
        Some(("2001:db8::1".into(), Some(5060)))
    );
    assert_eq!(split_host_port("host:x"), None);
}

#[test]
fn a_dialog_creating_answer_copies_record_route_in_order() {
    let invite = Message::parse(
        b"INVITE sip:+15555550100@h SIP/2.0\r\nVia: SIP/2.0/UDP p:5070;branch=z9hG4bK1\r\n\
Record-Route: <sip:p2;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n\
CSeq: 1 INVITE\r\nRecord-Route: <sip:p1;lr>, <sip:p0;lr>\r\n\r\n",
    )
    .unwrap();
    let mut ok = Message::response_to(&invite, 200, "OK");
    ok.copy_record_route(&invite);
    assert_eq!(
        ok.header_values("Record-Route"),
        vec!["<sip:p2;lr>", "<sip:p1;lr>", "<sip:p0;lr>"]
    );
    let plain = Message::response_to(&invite, 100, "Trying");
    assert!(plain.header_values("Record-Route").is_empty());
}
