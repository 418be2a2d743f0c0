//! SIP over TCP from a hostile host, black-box against a real node: one
//! source cannot hold more than its share of connections (the next one is
//! closed while another address still connects), a message trickled in a
//! byte at a time is cut off at its deadline however recent its last byte
//! (while a quiet connection stays open), and a normal INVITE over TCP —
//! cut into small writes, or from SIPp — still makes a call.

use crate::security_support;
use crate::sip_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use security_support::{offer, status, Request};
use sip_support::{sipp, Node, Script};
use switchboard::sip::stream::{StreamFramer, StreamLimits};
use switchboard::sip::SipOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `sip.tcp_max_connections_per_source` for these nodes.
const PER_SOURCE: usize = 4;
/// `sip.tcp_message_deadline_ms` for these nodes.
const DEADLINE: Duration = Duration::from_millis(2000);

async fn node() -> Node {
    Node::start_env(
        SipOptions::default(),
        Script::Hold,
        &[
            (
                "SWITCHBOARD_SIP__TCP_MAX_CONNECTIONS_PER_SOURCE",
                &PER_SOURCE.to_string(),
            ),
            (
                "SWITCHBOARD_SIP__TCP_MESSAGE_DEADLINE_MS",
                &DEADLINE.as_millis().to_string(),
            ),
        ],
    )
    .await
}

async fn connect_from(ip: [u8; 4], server: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((ip, 0))).expect("bind source");
    tokio::time::timeout(Duration::from_secs(5), sock.connect(server))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Reads SIP messages off a TCP connection with the node's own framer.
struct Reader {
    framer: StreamFramer,
}

impl Reader {
    fn new() -> Reader {
        let limits = StreamLimits {
            max_message: 65536,
            message_deadline: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        };
        Reader {
            framer: StreamFramer::new(Instant::now(), limits),
        }
    }

    /// The next message within `limit`, as text.
    async fn next(&mut self, conn: &mut TcpStream, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 8192];
        loop {
            if let Some(m) = self.framer.poll_message() {
                return Some(String::from_utf8_lossy(&m.ok()?).to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, conn.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.framer.handle_input(Instant::now(), &buf[..n]);
        }
    }

    /// The first final response (provisional ones skipped).
    async fn final_response(&mut self, conn: &mut TcpStream) -> Option<String> {
        loop {
            let m = self.next(conn, Duration::from_secs(5)).await?;
            if status(&m).is_some_and(|c| c >= 200) {
                return Some(m);
            }
        }
    }
}

/// Sends OPTIONS on `conn` and returns the status line of the answer.
async fn ask(conn: &mut TcpStream, server: SocketAddr) -> Option<String> {
    let local = conn.local_addr().ok()?;
    let options = Request::options(server, local, "TCP").text();
    conn.write_all(options.as_bytes()).await.ok()?;
    let answer = Reader::new().next(conn, Duration::from_secs(5)).await?;
    answer.lines().next().map(str::to_string)
}

/// True when the server has closed `conn` (EOF or reset) within `within`.
async fn closed(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(within, conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_more_than_its_connections() {
    let node = node().await;
    let server = node.addr();
    let mut held = Vec::new();
    for _ in 0..PER_SOURCE {
        held.push(connect_from([127, 0, 0, 1], server).await);
    }
    // Every held connection is served.
    for conn in held.iter_mut() {
        let status = ask(conn, server).await;
        assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"), "{status:?}");
    }
    // One more from the same source is closed at once, unanswered.
    let mut extra = connect_from([127, 0, 0, 1], server).await;
    assert!(
        closed(&mut extra, Duration::from_secs(3)).await,
        "connection {} from one source was kept",
        PER_SOURCE + 1
    );
    // Another source still gets in.
    let mut other = connect_from([127, 0, 0, 2], server).await;
    let status = ask(&mut other, server).await;
    assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"), "{status:?}");
    // A slot given back can be taken again.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = None;
    while Instant::now() < deadline {
        let mut c = connect_from([127, 0, 0, 1], server).await;
        if let Some(s) = ask(&mut c, server).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again.as_deref(), Some("SIP/2.0 200 OK"), "the freed slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_message_is_cut_off_at_its_deadline_and_a_quiet_connection_is_not() {
    let node = node().await;
    let server = node.addr();
    let mut quiet = connect_from([127, 0, 0, 1], server).await;
    let mut slow = connect_from([127, 0, 0, 1], server).await;
    let local = slow.local_addr().unwrap();
    let message = Request::options(server, local, "TCP").text();
    let started = Instant::now();
    // A byte every 200 ms: every read is recent, the message is not.
    let mut cut_after = None;
    for b in message.as_bytes() {
        if slow.write_all(&[*b]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        if closed(&mut slow, Duration::from_millis(200)).await {
            cut_after = Some(started.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the trickled message was never cut off");
    println!("trickled message cut off after {cut_after:?} (deadline {DEADLINE:?})");
    assert!(
        cut_after >= DEADLINE - Duration::from_millis(100)
            && cut_after <= DEADLINE + Duration::from_millis(1500),
        "cut off after {cut_after:?} (deadline {DEADLINE:?})"
    );
    // The quiet connection, open longer than the deadline, is still served.
    let line = ask(&mut quiet, server).await;
    assert_eq!(line.as_deref(), Some("SIP/2.0 200 OK"), "{line:?}");
    // A message that trickles but is whole in time is answered.
    let mut patient = connect_from([127, 0, 0, 1], server).await;
    let local = patient.local_addr().unwrap();
    let message = Request::options(server, local, "TCP").text();
    for piece in message.as_bytes().chunks(message.len() / 4 + 1) {
        patient.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answer = Reader::new()
        .next(&mut patient, Duration::from_secs(5))
        .await;
    assert_eq!(answer.as_deref().and_then(status), Some(200), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_over_tcp_in_small_writes_makes_a_call() {
    let node = node().await;
    let server = node.addr();
    let mut conn = connect_from([127, 0, 0, 1], server).await;
    let local = conn.local_addr().unwrap();
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut invite = Request::invite(
        "+15555550100",
        server,
        local,
        offer(rtp.local_addr().unwrap()),
    );
    invite.via = invite.via.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    invite.extra = vec![format!("Contact: <sip:caller@{local};transport=tcp>")];
    // Cut into 16-byte writes (a head split anywhere, a blank line split).
    for piece in invite.text().as_bytes().chunks(16) {
        conn.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut reader = Reader::new();
    let ok = reader.final_response(&mut conn).await.expect("an answer");
    assert_eq!(status(&ok), Some(200), "{ok}");
    // ACK and BYE pipelined in one write.
    let ack = invite.ack(&ok);
    let mut bye = invite.bye(&ok, local);
    bye.via = bye.via.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    conn.write_all(format!("{}{}", ack.text(), bye.text()).as_bytes())
        .await
        .unwrap();
    let bye_ok = reader.final_response(&mut conn).await.expect("BYE answer");
    assert_eq!(status(&bye_ok), Some(200), "{bye_ok}");
    assert!(bye_ok.contains("CSeq: 2 BYE"), "{bye_ok}");
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}");
    assert_eq!(node.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sipp_call_over_tcp_still_completes() {
    let node = node().await;
    sipp(
        node.addr(),
        "uac_call.xml",
        "+15555550100",
        &["-t", "t1", "-d", "1000"],
    )
    .await
    .assert_ok();
    let rows = node.final_rows(1).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}");
}
