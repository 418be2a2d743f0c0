//! Hostile input: 10,000 malformed datagrams and a batch of broken TCP
//! streams (garbage, truncation, huge headers, 1 MB bodies, missing
//! Call-ID/CSeq/Via, lying Content-Length, 1,000 Vias). Afterwards a valid
//! OPTIONS still gets 200 on both transports, broken TCP connections are
//! closed, and memory has not grown without bound.

use crate::sip_support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use sip_support::{sipp, Node};
use tokio::io::AsyncWriteExt;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

const INVITE: &str = "INVITE sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKh{n}\r\n\
From: <sip:x@127.0.0.1>;tag={n}\r\nTo: <sip:+15555550100@127.0.0.1>\r\nCall-ID: h{n}\r\nCSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\nContent-Length: 30\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=aud";

/// The n-th hostile message (kinds cycle; sizes and cut points vary).
fn hostile(n: usize, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let invite = INVITE.replace("{n}", &n.to_string());
    match n % 12 {
        0 => (0..rng.gen_range(1..1400)).map(|_| rng.gen()).collect(),
        1 => invite.as_bytes()[..rng.gen_range(0..invite.len())].to_vec(),
        2 => format!("OPTIONS sip:a@b SIP/2.0\r\nX-Big: {}\r\n\r\n", "a".repeat(60_000)).into_bytes(),
        3 => invite.replace("Call-ID: h", "X-Call: h").into_bytes(),
        4 => invite.replace("CSeq: 1 INVITE\r\n", "").into_bytes(),
        5 => invite.replace("Via:", "Vya:").into_bytes(),
        6 => invite.replace("Content-Length: 30", "Content-Length: 1000000").into_bytes(),
        7 => invite.replace("Content-Length: 30", "Content-Length: -5").into_bytes(),
        8 => format!("OPTIONS sip:a@b SIP/2.0\r\n{}Call-ID: v{n}\r\nCSeq: 1 OPTIONS\r\n\r\n", "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKv\r\n".repeat(1000)).into_bytes(),
        9 => format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnone{n}\r\nCSeq: 1 BYE\r\nCall-ID: r{n}\r\n\r\n").into_bytes(),
        10 => invite.replace("SIP/2.0\r\n", "SIP/9.9\r\n").replace("INVITE sip", "INV\u{0}ITE sip").into_bytes(),
        _ => {
            let mut v = invite.into_bytes();
            let i = rng.gen_range(0..v.len());
            v[i] = rng.gen();
            v.truncate(rng.gen_range(i..=v.len()));
            v
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_and_streams_do_not_break_the_node() {
    let node = Node::start().await;
    let addr = node.addr();
    // Warm up (allocator pools, first TCP connection) before measuring.
    sipp(addr, "uac_options.xml", "options", &[])
        .await
        .assert_ok();
    let rss_before = rss_kib();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in 0..10_000 {
        let msg = hostile(n, &mut rng);
        let _ = udp.send_to(&msg, addr).await;
        if n % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let mut streams = Vec::new();
    for n in 0..300usize {
        let payload: Vec<u8> = match n % 6 {
            0 => hostile(n, &mut rng),
            // A real 1 MB body behind an honest Content-Length.
            1 => [
                "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1048576\r\n\r\n"
                    .to_string()
                    .into_bytes(),
                vec![b'x'; 1 << 20],
            ]
            .concat(),
            // A head that never ends.
            2 => vec![b'A'; 100_000],
            // No Content-Length at all.
            3 => b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKt\r\n\r\n"
                .to_vec(),
            // A short read, then the peer leaves.
            4 => INVITE.as_bytes()[..50].to_vec(),
            _ => (0..4096).map(|_| rng.gen()).collect(),
        };
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
        else {
            continue;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&payload)).await;
        // Keep some connections open idle, close the rest.
        if n % 3 == 0 {
            streams.push(s);
        }
    }

    // The node still answers on both transports.
    sipp(addr, "uac_options.xml", "options", &[])
        .await
        .assert_ok();
    sipp(addr, "uac_options.xml", "options", &["-t", "t1"])
        .await
        .assert_ok();

    // Broken streams were closed by the server (the idle ones the test still
    // holds may stay open until they idle out).
    let mut open = usize::MAX;
    for _ in 0..50 {
        open = node.server.tcp_connections();
        if open <= streams.len() + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        open <= streams.len() + 2,
        "{open} TCP connections still open"
    );
    drop(streams);

    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB");
    assert_eq!(
        node.server.live_calls(),
        0,
        "no call was created by malformed input"
    );
}
