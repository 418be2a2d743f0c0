//! Media that cannot be hijacked, against a whole node (SIP, media, agent
//! runtime): RTP from a third address (127.0.0.2) neither before the
//! caller's first packet nor mid-call redirects the agent's audio; a NAT'd
//! caller (same IP as its signalling, another port) is still followed; and
//! media ports are not handed out in an order a stranger could guess.

use crate::common;
use crate::security_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use security_support::{count_for, offer, sdp_media, send_rtp, status, RawSip, Request};
use switchboard::db::testing::TestDb;
use tokio::net::UdpSocket;

const DEMO: &str = "+15555550100";

struct Answered {
    sip: RawSip,
    invite: Request,
    ok: String,
    /// Where the node receives this call's RTP.
    media: SocketAddr,
}

/// Dials the demo number offering `sdp_rtp` as the caller's RTP address.
async fn dial(server: SocketAddr, sdp_rtp: SocketAddr) -> Answered {
    let sip = RawSip::bind("127.0.0.1", server).await;
    let invite = Request::invite(DEMO, server, sip.local(), offer(sdp_rtp));
    sip.send(&invite.text()).await;
    let ok = sip
        .final_response(Duration::from_secs(15))
        .await
        .expect("a final answer to the INVITE");
    assert_eq!(status(&ok), Some(200), "{ok}");
    sip.send(&invite.ack(&ok).text()).await;
    let media = sdp_media(&ok).expect("SDP answer");
    Answered {
        sip,
        invite,
        ok,
        media,
    }
}

async fn hang_up(call: &Answered) {
    let bye = call.invite.bye(&call.ok, call.sip.local());
    call.sip.send(&bye.text()).await;
    let _ = call.sip.final_response(Duration::from_secs(3)).await;
}

async fn node(db: &TestDb, rtp_base: u16) -> switchboard::serve::Services {
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    common::node::start_node(&db.url, &db.pool, rtp_base, &[]).await
}

async fn udp(ip: &str) -> Arc<UdpSocket> {
    Arc::new(UdpSocket::bind((ip, 0)).await.expect("bind RTP socket"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_a_stranger_before_the_caller_does_not_take_the_agents_audio() {
    let db = TestDb::new().await;
    let node = node(&db, 47000).await;
    let caller_rtp = udp("127.0.0.1").await;
    let stranger = udp("127.0.0.2").await;
    let call = dial(node.sip.local_addr(), caller_rtp.local_addr().unwrap()).await;
    // The attack: five packets before the caller sends any.
    send_rtp(&stranger, call.media, 5, 0xBAD, 1).await;
    let (to_caller, to_stranger) = tokio::join!(
        count_for(&caller_rtp, Duration::from_secs(3)),
        count_for(&stranger, Duration::from_secs(3))
    );
    hang_up(&call).await;
    eprintln!("before the caller's first packet, 3 s: caller {to_caller}, stranger {to_stranger}");
    assert_eq!(
        to_stranger, 0,
        "the stranger received {to_stranger} packets of the agent's audio (caller {to_caller})"
    );
    assert!(
        to_caller >= 100,
        "the caller's SDP address received only {to_caller} packets in 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_a_stranger_mid_call_does_not_take_the_agents_audio() {
    let db = TestDb::new().await;
    let node = node(&db, 47400).await;
    let caller_rtp = udp("127.0.0.1").await;
    let stranger = udp("127.0.0.2").await;
    let call = dial(node.sip.local_addr(), caller_rtp.local_addr().unwrap()).await;
    // The caller talks for a second, then is silent past the old 2 s
    // re-latch window while the stranger streams.
    send_rtp(&caller_rtp, call.media, 50, 0x600D, 100).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let media = call.media;
    let attacker = stranger.clone();
    let flood = tokio::spawn(async move { send_rtp(&attacker, media, 100, 0xBAD, 1).await });
    let (to_caller, to_stranger) = tokio::join!(
        count_for(&caller_rtp, Duration::from_secs(3)),
        count_for(&stranger, Duration::from_secs(3))
    );
    let _ = flood.await;
    hang_up(&call).await;
    eprintln!("mid-call, 3 s: caller {to_caller}, stranger {to_stranger}");
    assert_eq!(
        to_stranger, 0,
        "mid-call, the stranger received {to_stranger} packets (caller {to_caller})"
    );
    assert!(to_caller >= 100, "caller received only {to_caller} in 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_natted_caller_from_its_signalling_ip_is_still_followed() {
    let db = TestDb::new().await;
    let node = node(&db, 47800).await;
    // The SDP names one port; the caller's NAT sends from another.
    let sdp_socket = udp("127.0.0.1").await;
    let real = udp("127.0.0.1").await;
    let call = dial(node.sip.local_addr(), sdp_socket.local_addr().unwrap()).await;
    let before = count_for(&sdp_socket, Duration::from_millis(600)).await;
    let media = call.media;
    let talker = real.clone();
    let talk = tokio::spawn(async move { send_rtp(&talker, media, 150, 0x600D, 1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_real = count_for(&real, Duration::from_secs(2)).await;
    let _ = talk.await;
    hang_up(&call).await;
    assert!(before >= 20, "the SDP address got {before} packets first");
    assert!(
        to_real >= 80,
        "the caller's real address got {to_real} packets in 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_ports_are_random_and_even() {
    let db = TestDb::new().await;
    let node = node(&db, 48200).await;
    let caller_rtp = udp("127.0.0.1").await;
    let mut ports = Vec::new();
    for _ in 0..6 {
        let call = dial(node.sip.local_addr(), caller_rtp.local_addr().unwrap()).await;
        ports.push(call.media.port());
        hang_up(&call).await;
    }
    eprintln!("media ports of six calls: {ports:?}");
    assert!(ports.iter().all(|p| p % 2 == 0), "odd RTP port: {ports:?}");
    assert!(
        ports.iter().all(|p| (48200..=48400).contains(p)),
        "outside the configured range: {ports:?}"
    );
    let steps: Vec<i32> = ports
        .windows(2)
        .map(|w| i32::from(w[1]) - i32::from(w[0]))
        .collect();
    assert!(
        !steps.iter().all(|s| *s == steps[0]) && !steps.iter().all(|s| (1..=4).contains(s)),
        "ports follow a guessable sequence: {ports:?}"
    );
}
