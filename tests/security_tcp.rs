//! SIP over TCP from a hostile host, black-box against a real node: one
//! source cannot hold every connection slot (others still connect), and a
//! message trickled in a byte at a time is cut off at its deadline while a
//! quiet connection stays open.

mod security_support;
mod sip_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use security_support::Request;
use sip_support::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connections one source may hold (`MAX_TCP_PER_SOURCE`).
const PER_SOURCE: usize = 64;

async fn connect_from(ip: [u8; 4], server: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((ip, 0))).expect("bind source");
    tokio::time::timeout(Duration::from_secs(5), sock.connect(server))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Sends OPTIONS on `conn` and returns the status line of the answer.
async fn ask(conn: &mut TcpStream, server: SocketAddr) -> Option<String> {
    let local = conn.local_addr().ok()?;
    let options = Request::options(server, local, "TCP").text();
    conn.write_all(options.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().map(str::to_string)
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
async fn one_source_cannot_hold_every_connection() {
    let node = Node::start().await;
    let server = node.addr();
    let mut held = Vec::new();
    for _ in 0..PER_SOURCE {
        held.push(connect_from([127, 0, 0, 1], server).await);
    }
    // Every held connection is served.
    let status = ask(&mut held[0], server).await;
    assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"), "{status:?}");
    // One more from the same source is closed at once.
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
async fn a_trickled_message_is_cut_off_and_a_quiet_connection_is_not() {
    let node = Node::start().await;
    let server = node.addr();
    let mut quiet = connect_from([127, 0, 0, 1], server).await;
    let mut slow = connect_from([127, 0, 0, 1], server).await;
    let local = slow.local_addr().unwrap();
    let message = Request::options(server, local, "TCP").text();
    let started = Instant::now();
    // One byte a second: every read resets a per-read timer, never this one.
    let mut cut_after = None;
    for b in message.as_bytes().iter().take(30) {
        if slow.write_all(&[*b]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        if closed(&mut slow, Duration::from_secs(1)).await {
            cut_after = Some(started.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the trickled message was never cut off");
    println!("trickled message cut off after {cut_after:?}");
    assert!(
        cut_after >= Duration::from_secs(9) && cut_after <= Duration::from_secs(14),
        "cut off after {cut_after:?} (deadline 10 s)"
    );
    // The quiet connection, open as long, is still served.
    let status = ask(&mut quiet, server).await;
    assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"), "{status:?}");
}
