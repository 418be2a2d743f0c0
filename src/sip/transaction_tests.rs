use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::Message;

fn request(method: &str) -> Message {
    let raw = format!(
        "{method} sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:+15555550100@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

fn ms(t0: Instant, t: Instant) -> u64 {
    (t - t0).as_millis() as u64
}

/// Steps a simulated clock from wake-up to wake-up until `until`, recording
/// when each message was sent and whether a timeout fired.
fn drive_server(tx: &mut ServerTx, t0: Instant, until: Duration) -> (Vec<u64>, Option<u64>) {
    let (mut sends, mut timeout) = (Vec::new(), None);
    for _ in 0..1000 {
        let Some(at) = tx.next_wake() else { break };
        if at > t0 + until {
            break;
        }
        for out in tx.on_timer(at) {
            match out {
                TxOutput::Send(_) => sends.push(ms(t0, at)),
                TxOutput::Timeout => timeout = Some(ms(t0, at)),
                TxOutput::Deliver(_) => {}
            }
        }
    }
    (sends, timeout)
}

fn drive_client(tx: &mut ClientTx, t0: Instant, until: Duration) -> (Vec<u64>, Option<u64>) {
    let (mut sends, mut timeout) = (Vec::new(), None);
    for _ in 0..1000 {
        let Some(at) = tx.next_wake() else { break };
        if at > t0 + until {
            break;
        }
        for out in tx.on_timer(at) {
            match out {
                TxOutput::Send(_) => sends.push(ms(t0, at)),
                TxOutput::Timeout => timeout = Some(ms(t0, at)),
                TxOutput::Deliver(_) => {}
            }
        }
    }
    (sends, timeout)
}

#[test]
fn invite_server_retransmits_final_with_backoff_until_timer_h() {
    let t0 = Instant::now();
    let invite = request("INVITE");
    let mut tx = ServerTx::new(&invite, false, Timers::default());
    let out = tx.respond(Message::response_to(&invite, 100, "Trying"), t0);
    assert_eq!(out.len(), 1);
    // A retransmitted INVITE in Proceeding gets the 100 again.
    assert!(
        matches!(tx.on_request(&invite, t0)[..], [TxOutput::Send(ref m)] if m.status() == Some(100))
    );
    tx.respond(Message::response_to(&invite, 486, "Busy Here"), t0);
    assert_eq!(tx.state(), ServerState::Completed);
    let (sends, timeout) = drive_server(&mut tx, t0, Duration::from_secs(40));
    // Timer G: T1, 2T1, 4T1, then capped at T2, until Timer H = 64*T1.
    assert_eq!(&sends[..5], &[500, 1500, 3500, 7500, 11500]);
    assert!(sends.iter().all(|&t| t < 32_000));
    assert_eq!(timeout, Some(32_000));
    assert!(tx.is_terminated());
}

#[test]
fn ack_stops_retransmission_and_timer_i_ends_the_transaction() {
    let t0 = Instant::now();
    let invite = request("INVITE");
    let mut tx = ServerTx::new(&invite, false, Timers::default());
    tx.respond(Message::response_to(&invite, 487, "Request Terminated"), t0);
    let (sends, _) = drive_server(&mut tx, t0, Duration::from_millis(1600));
    assert_eq!(sends, vec![500, 1500]);
    let ack = request("ACK");
    assert!(tx
        .on_request(&ack, t0 + Duration::from_millis(1700))
        .is_empty());
    assert_eq!(tx.state(), ServerState::Confirmed);
    let (sends, timeout) = drive_server(&mut tx, t0, Duration::from_secs(40));
    assert!(sends.is_empty());
    assert_eq!(timeout, None);
    assert!(tx.is_terminated());
}

#[test]
fn accepted_invite_absorbs_retransmissions_over_tcp_final_not_retransmitted() {
    let t0 = Instant::now();
    let invite = request("INVITE");
    let mut tx = ServerTx::new(&invite, false, Timers::default());
    tx.respond(Message::response_to(&invite, 200, "OK"), t0);
    assert_eq!(tx.state(), ServerState::Accepted);
    assert!(tx
        .on_request(&invite, t0 + Duration::from_millis(10))
        .is_empty());
    let (sends, timeout) = drive_server(&mut tx, t0, Duration::from_secs(40));
    assert!(sends.is_empty() && timeout.is_none());
    assert!(tx.is_terminated());

    let mut tcp = ServerTx::new(&invite, true, Timers::default());
    tcp.respond(
        Message::response_to(&invite, 480, "Temporarily Unavailable"),
        t0,
    );
    let (sends, timeout) = drive_server(&mut tcp, t0, Duration::from_secs(40));
    assert!(
        sends.is_empty(),
        "no retransmission over a reliable transport"
    );
    assert_eq!(timeout, Some(32_000), "Timer H still guards the ACK");
}

#[test]
fn non_invite_server_repeats_final_and_lingers_for_timer_j() {
    let t0 = Instant::now();
    let bye = request("BYE");
    let mut tx = ServerTx::new(&bye, false, Timers::default());
    assert_eq!(tx.state(), ServerState::Trying);
    assert!(tx.on_request(&bye, t0).is_empty(), "absorbed while Trying");
    tx.respond(Message::response_to(&bye, 200, "OK"), t0);
    assert!(matches!(
        tx.on_request(&bye, t0 + Duration::from_secs(1))[..],
        [TxOutput::Send(_)]
    ));
    let (sends, timeout) = drive_server(&mut tx, t0, Duration::from_secs(40));
    assert!(sends.is_empty() && timeout.is_none());
    assert!(tx.is_terminated());
    let mut tcp = ServerTx::new(&bye, true, Timers::default());
    tcp.respond(Message::response_to(&bye, 200, "OK"), t0);
    assert!(tcp.is_terminated());
}

#[test]
fn invite_client_timer_a_doubles_and_timer_b_times_out() {
    let t0 = Instant::now();
    let (mut tx, out) = ClientTx::new(request("INVITE"), false, Timers::default(), t0);
    assert_eq!(out.len(), 1);
    let (sends, timeout) = drive_client(&mut tx, t0, Duration::from_secs(40));
    assert_eq!(sends, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(timeout, Some(32_000));
}

#[test]
fn invite_client_acks_non_2xx_and_re_acks_retransmissions() {
    let t0 = Instant::now();
    let invite = request("INVITE");
    let (mut tx, _) = ClientTx::new(invite.clone(), false, Timers::default(), t0);
    let mut resp = Message::response_to(&invite, 407, "Proxy Authentication Required");
    resp.set_to_tag("remote");
    let out = tx.on_response(&resp, t0 + Duration::from_millis(100));
    let ack = match &out[..] {
        [TxOutput::Send(ack), TxOutput::Deliver(d)] => {
            assert_eq!(d.status(), Some(407));
            ack.clone()
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.to().unwrap().tag(), Some("remote"));
    assert!(matches!(
        tx.on_response(&resp, t0 + Duration::from_millis(600))[..],
        [TxOutput::Send(_)]
    ));
    let (sends, timeout) = drive_client(&mut tx, t0, Duration::from_secs(40));
    assert!(sends.is_empty() && timeout.is_none());
    assert!(tx.is_terminated(), "Timer D ended it");
}

#[test]
fn non_invite_client_timer_e_caps_at_t2_and_timer_f_times_out() {
    let t0 = Instant::now();
    let (mut tx, _) = ClientTx::new(request("BYE"), false, Timers::default(), t0);
    let (sends, timeout) = drive_client(&mut tx, t0, Duration::from_secs(40));
    assert_eq!(&sends[..5], &[500, 1500, 3500, 7500, 11500]);
    assert_eq!(timeout, Some(32_000));

    let bye = request("BYE");
    let (mut tx, _) = ClientTx::new(bye.clone(), true, Timers::default(), t0);
    let out = tx.on_response(&Message::response_to(&bye, 200, "OK"), t0);
    assert!(matches!(out[..], [TxOutput::Deliver(_)]));
    assert!(tx.is_terminated(), "Timer K is zero over TCP");
}
