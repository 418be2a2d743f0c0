//! The outbound INVITE machine against a scripted far end, on a simulated
//! clock (no sockets, no sleeping): challenges, refusals, ringing into the
//! ring timeout, CANCEL races and retransmissions.

use std::time::{Duration, Instant};

use super::*;
use crate::sip::digest::{DigestRequest, DigestServer, Verdict};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

fn invite() -> Message {
    let mut m = Message::parse(
        b"INVITE sip:+15551230000@127.0.0.1:5099 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfirst;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:+15555550100@127.0.0.1>;tag=ours\r\nTo: <sip:+15551230000@127.0.0.1>\r\n\
Call-ID: out-1\r\nCSeq: 1 INVITE\r\nContact: <sip:switchboard@127.0.0.1:5060>\r\n\r\n",
    )
    .unwrap();
    m.set_body("application/sdp", SDP.as_bytes().to_vec());
    m
}

fn settings(credentials: bool) -> DialSettings {
    DialSettings {
        timers: Timers::default(),
        reliable: false,
        ring_timeout: Duration::from_secs(30),
        credentials: credentials.then(|| ("acct".to_string(), "secret".to_string())),
        via: "127.0.0.1:5060".into(),
        transport: "UDP",
    }
}

fn sent(out: &[DialOutput]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            DialOutput::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn response(req: &Message, code: u16, tag: Option<&str>) -> Message {
    let mut r = Message::response_to(req, code, "Reason");
    if let Some(t) = tag {
        r.set_to_tag(t);
    }
    r
}

fn ok(req: &Message) -> Message {
    let mut r = response(req, 200, Some("them"));
    r.add_header("Contact", "<sip:gw@127.0.0.1:5099>");
    r.set_body("application/sdp", SDP.as_bytes().to_vec());
    r
}

fn failure(out: &[DialOutput]) -> Option<DialFailure> {
    out.iter().find_map(|o| match o {
        DialOutput::Failed(f) => Some(f.clone()),
        _ => None,
    })
}

/// Runs the machine's timers up to `until`, collecting everything.
fn run_until(m: &mut OutboundInvite, until: Instant) -> Vec<(Instant, DialOutput)> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        match m.next_wake() {
            Some(at) if at <= until => {
                for o in m.on_timer(at) {
                    all.push((at, o));
                }
            }
            _ => break,
        }
    }
    all
}

fn challenge(req: &Message, code: u16, server: &DigestServer) -> Message {
    let mut r = response(req, code, Some("gw"));
    let name = if code == 401 {
        "WWW-Authenticate"
    } else {
        "Proxy-Authenticate"
    };
    for c in server.challenges(1000, "127.0.0.1".parse().unwrap(), false) {
        r.add_header(name, c);
    }
    r
}

fn answers_a_challenge_then_is_answered(code: u16, header: &str) {
    let t0 = Instant::now();
    let server = DigestServer::new("trunk", [7; 32], 300);
    let (mut m, out) = OutboundInvite::start(invite(), settings(true), t0);
    assert_eq!(sent(&out).len(), 1);
    let first = sent(&out)[0].clone();
    let out = m.handle_response(
        &challenge(&first, code, &server),
        t0 + Duration::from_millis(20),
    );
    let msgs = sent(&out);
    // The challenge's ACK (by its transaction), then the authorized INVITE.
    assert_eq!(msgs.len(), 2, "{out:?}");
    assert_eq!(msgs[0].method(), Some(&Method::Ack));
    let retry = &msgs[1];
    assert_eq!(retry.method(), Some(&Method::Invite));
    assert_eq!(retry.cseq().unwrap().seq, 2);
    assert_ne!(
        retry.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    assert_eq!(
        server.verify(
            retry.header(header).expect("credentials"),
            DigestRequest {
                method: "INVITE",
                request_uri: retry.request_uri().unwrap(),
                source: "127.0.0.1".parse().unwrap(),
            },
            "acct",
            "secret",
            1001
        ),
        Verdict::Valid
    );
    assert_eq!(m.state(), DialState::Calling);
    // A retransmitted challenge is re-ACKed, not answered twice.
    let again = m.handle_response(
        &challenge(&first, code, &server),
        t0 + Duration::from_millis(600),
    );
    assert!(matches!(&sent(&again)[..], [a] if a.method() == Some(&Method::Ack)));
    let ringing = response(retry, 180, Some("them"));
    let out = m.handle_response(&ringing, t0 + Duration::from_millis(50));
    assert!(matches!(
        out[..],
        [DialOutput::Progress {
            code: 180,
            sdp: None
        }]
    ));
    assert_eq!(m.state(), DialState::Early);
    let out = m.handle_response(&ok(retry), t0 + Duration::from_millis(80));
    let ack = match &out[..] {
        [DialOutput::Send(ack), DialOutput::Answered { dialog, sdp, .. }] => {
            assert_eq!(dialog.remote_tag, "them");
            assert_eq!(dialog.remote_target, "sip:gw@127.0.0.1:5099");
            assert!(sdp.is_some());
            ack.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().unwrap().seq, 2);
    assert_eq!(ack.request_uri(), Some("sip:gw@127.0.0.1:5099"));
    assert_eq!(m.state(), DialState::Answered);
    // The 2xx again: the same ACK again.
    let out = m.handle_response(&ok(retry), t0 + Duration::from_millis(600));
    assert_eq!(sent(&out), vec![ack]);
    // After 64*T1 nothing is left to absorb.
    run_until(&mut m, t0 + Duration::from_secs(40));
    assert!(m.is_done());
}

#[test]
fn a_401_challenge_is_answered_once_then_the_call_is_answered() {
    answers_a_challenge_then_is_answered(401, "Authorization");
}

#[test]
fn a_407_challenge_is_answered_with_proxy_authorization() {
    answers_a_challenge_then_is_answered(407, "Proxy-Authorization");
}

#[test]
fn a_second_challenge_or_none_to_answer_fails_with_its_code() {
    let t0 = Instant::now();
    let server = DigestServer::new("trunk", [7; 32], 300);
    let (mut m, out) = OutboundInvite::start(invite(), settings(true), t0);
    let out = m.handle_response(&challenge(&sent(&out)[0], 401, &server), t0);
    let retry = sent(&out)[1].clone();
    let out = m.handle_response(&challenge(&retry, 401, &server), t0);
    let f = failure(&out).expect("fails");
    assert_eq!((f.outcome, f.sip_code), (DialOutcome::Failed, Some(401)));
    assert_eq!(m.state(), DialState::Failed);

    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let out = m.handle_response(&challenge(&sent(&out)[0], 407, &server), t0);
    let f = failure(&out).expect("fails without credentials");
    assert_eq!((f.outcome, f.sip_code), (DialOutcome::Failed, Some(407)));
}

#[test]
fn refusals_map_to_call_status() {
    for (code, outcome, status) in [
        (486, DialOutcome::Busy, "busy"),
        (600, DialOutcome::Busy, "busy"),
        (404, DialOutcome::Failed, "failed"),
        (503, DialOutcome::Failed, "failed"),
        (603, DialOutcome::Failed, "failed"),
    ] {
        let t0 = Instant::now();
        let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
        let req = sent(&out)[0].clone();
        m.handle_response(&response(&req, 100, None), t0);
        let out = m.handle_response(&response(&req, code, Some("x")), t0);
        assert!(
            matches!(&sent(&out)[..], [a] if a.method() == Some(&Method::Ack)),
            "{code}: the refusal is ACKed"
        );
        let f = failure(&out).expect("fails");
        assert_eq!((f.outcome, f.sip_code), (outcome, Some(code)));
        assert_eq!(f.outcome.status(), status);
    }
}

#[test]
fn ringing_past_the_ring_timeout_is_cancelled_and_ends_no_answer() {
    let t0 = Instant::now();
    let mut s = settings(false);
    s.ring_timeout = Duration::from_secs(2);
    let (mut m, out) = OutboundInvite::start(invite(), s, t0);
    let req = sent(&out)[0].clone();
    m.handle_response(
        &response(&req, 180, Some("them")),
        t0 + Duration::from_millis(30),
    );
    let out = run_until(&mut m, t0 + Duration::from_secs(5));
    let cancels: Vec<_> = out
        .iter()
        .filter_map(|(at, o)| match o {
            DialOutput::Send(c) if c.method() == Some(&Method::Cancel) => Some((*at, c.clone())),
            _ => None,
        })
        .collect();
    let (at, cancel) = cancels.first().expect("a CANCEL").clone();
    assert_eq!(at, t0 + Duration::from_secs(2), "sent at the ring timeout");
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        req.top_via().unwrap().branch()
    );
    assert_eq!(cancel.cseq().unwrap().seq, 1);
    assert_eq!(cancel.request_uri(), req.request_uri());
    assert_eq!(m.cancel_reason(), Some(CancelReason::RingTimeout));
    // The far end confirms the CANCEL and ends the INVITE with 487.
    m.handle_response(
        &response(&cancel, 200, Some("them")),
        t0 + Duration::from_secs(3),
    );
    let out = m.handle_response(
        &response(&req, 487, Some("them")),
        t0 + Duration::from_secs(3),
    );
    let f = failure(&out).expect("ends");
    assert_eq!((f.outcome, f.sip_code), (DialOutcome::NoAnswer, Some(487)));
    assert_eq!(f.outcome.status(), "no_answer");
}

#[test]
fn ringing_longer_than_timer_b_is_not_a_timeout() {
    let t0 = Instant::now();
    let mut s = settings(false);
    s.ring_timeout = Duration::from_secs(60);
    let (mut m, out) = OutboundInvite::start(invite(), s, t0);
    let req = sent(&out)[0].clone();
    m.handle_response(
        &response(&req, 180, Some("them")),
        t0 + Duration::from_millis(30),
    );
    let out = run_until(&mut m, t0 + Duration::from_secs(50));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(m.state(), DialState::Early);
}

#[test]
fn a_hangup_before_any_provisional_waits_for_one_to_cancel() {
    let t0 = Instant::now();
    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let req = sent(&out)[0].clone();
    assert!(
        m.cancel(CancelReason::Hangup, t0).is_empty(),
        "§9.1: not yet"
    );
    let out = m.handle_response(&response(&req, 100, None), t0 + Duration::from_millis(10));
    let msgs = sent(&out);
    assert!(matches!(&msgs[..], [c] if c.method() == Some(&Method::Cancel)));
    // The answer crosses the CANCEL: it is ACKed and the owner must BYE.
    let out = m.handle_response(&ok(&req), t0 + Duration::from_millis(20));
    assert!(matches!(
        &out[..],
        [DialOutput::Send(_), DialOutput::Answered { .. }]
    ));
    assert_eq!(m.cancel_reason(), Some(CancelReason::Hangup));
}

#[test]
fn no_response_retransmits_then_fails_408_at_timer_b() {
    let t0 = Instant::now();
    let mut s = settings(false);
    s.ring_timeout = Duration::from_secs(60);
    let (mut m, _) = OutboundInvite::start(invite(), s, t0);
    let out = run_until(&mut m, t0 + Duration::from_secs(40));
    let retransmits = out
        .iter()
        .filter(|(_, o)| matches!(o, DialOutput::Send(r) if r.method() == Some(&Method::Invite)))
        .count();
    assert_eq!(retransmits, 6, "Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s");
    let (at, f) = out
        .iter()
        .find_map(|(at, o)| match o {
            DialOutput::Failed(f) => Some((*at, f.clone())),
            _ => None,
        })
        .expect("Timer B");
    assert_eq!(at, t0 + Duration::from_secs(32));
    assert_eq!((f.outcome, f.sip_code), (DialOutcome::Failed, Some(408)));
}

#[test]
fn an_unanswered_cancel_gives_up_after_64_t1() {
    let t0 = Instant::now();
    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let req = sent(&out)[0].clone();
    m.handle_response(&response(&req, 180, Some("them")), t0);
    m.cancel(CancelReason::Hangup, t0 + Duration::from_secs(1));
    let out = run_until(&mut m, t0 + Duration::from_secs(40));
    let f = out
        .iter()
        .find_map(|(_, o)| match o {
            DialOutput::Failed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("gives up");
    assert_eq!((f.outcome, f.sip_code), (DialOutcome::Cancelled, None));
    assert!(m.is_done() || m.next_wake().is_some());
}

#[test]
fn early_media_sdp_is_the_answer_when_the_2xx_has_none() {
    let t0 = Instant::now();
    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let req = sent(&out)[0].clone();
    let mut progress = response(&req, 183, Some("them"));
    progress.set_body("application/sdp", SDP.as_bytes().to_vec());
    let out = m.handle_response(&progress, t0);
    assert!(matches!(
        &out[..],
        [DialOutput::Progress {
            code: 183,
            sdp: Some(_)
        }]
    ));
    let mut answer = response(&req, 200, Some("them"));
    answer.add_header("Contact", "<sip:gw@127.0.0.1:5099>");
    let out = m.handle_response(&answer, t0);
    match &out[..] {
        [DialOutput::Send(_), DialOutput::Answered { sdp: Some(s), .. }] => {
            assert_eq!(&s[..], SDP.as_bytes())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_and_foreign_responses_change_nothing() {
    let t0 = Instant::now();
    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let req = sent(&out)[0].clone();
    let mut foreign = response(&req, 486, Some("x"));
    foreign.set_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother");
    assert!(m.handle_response(&foreign, t0).is_empty());
    let mut no_cseq = response(&req, 486, Some("x"));
    no_cseq.remove_header("CSeq");
    assert!(m.handle_response(&no_cseq, t0).is_empty());
    // A 2xx without To tag or Contact cannot make a dialog.
    let bare = response(&req, 200, None);
    let f = failure(&m.handle_response(&bare, t0)).expect("fails");
    assert_eq!(f.sip_code, Some(200));
}

#[test]
fn a_422_is_retried_once_with_the_far_ends_min_se() {
    let t0 = Instant::now();
    let mut first = invite();
    first.add_header("Session-Expires", "300");
    first.add_header("Min-SE", "90");
    let (mut m, out) = OutboundInvite::start(first, settings(false), t0);
    let req = sent(&out)[0].clone();
    let mut too_small = response(&req, 422, Some("gw"));
    too_small.add_header("Min-SE", "1800");
    let out = m.handle_response(&too_small, t0);
    let msgs = sent(&out);
    // The 422 is ACKed by its transaction; the INVITE goes again.
    assert_eq!(msgs[0].method(), Some(&Method::Ack));
    let retry = msgs
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .expect("the INVITE again")
        .clone();
    assert!(failure(&out).is_none());
    assert_eq!(retry.header("Session-Expires"), Some("1800"));
    assert_eq!(retry.header("Min-SE"), Some("1800"));
    assert_eq!(retry.cseq().unwrap().seq, 2);
    assert_eq!(retry.call_id(), req.call_id());
    assert_eq!(retry.from().unwrap().tag(), Some("ours"));
    assert_ne!(
        retry.top_via().unwrap().branch(),
        req.top_via().unwrap().branch(),
        "a new transaction"
    );
    assert_eq!(retry.body, req.body, "the same offer");
    assert_eq!(m.state(), DialState::Calling);
    // The retransmitted 422 of the first attempt is ACKed again, nothing more.
    let again = m.handle_response(&too_small, t0 + Duration::from_millis(100));
    assert!(matches!(&sent(&again)[..], [a] if a.method() == Some(&Method::Ack)));
    assert!(failure(&again).is_none());
    // A second 422 ends the call: retried once only.
    let out = m.handle_response(&too_small_to(&retry), t0 + Duration::from_millis(200));
    let f = failure(&out).expect("fails");
    assert_eq!((f.outcome, f.sip_code), (DialOutcome::Failed, Some(422)));

    // Answered after the retry: an ordinary call.
    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let req = sent(&out)[0].clone();
    let out = m.handle_response(&too_small_to(&req), t0);
    let retry = sent(&out)
        .into_iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .expect("retry");
    let out = m.handle_response(&ok(&retry), t0 + Duration::from_millis(50));
    assert!(out.iter().any(|o| matches!(o, DialOutput::Answered { .. })));
    assert_eq!(m.state(), DialState::Answered);

    // A 422 without a Min-SE cannot be met.
    let (mut m, out) = OutboundInvite::start(invite(), settings(false), t0);
    let req = sent(&out)[0].clone();
    let out = m.handle_response(&response(&req, 422, Some("gw")), t0);
    assert_eq!(failure(&out).map(|f| f.sip_code), Some(Some(422)));
}

fn too_small_to(req: &Message) -> Message {
    let mut r = response(req, 422, Some("gw2"));
    r.add_header("Min-SE", "1800");
    r
}
