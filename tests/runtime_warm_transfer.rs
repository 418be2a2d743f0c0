//! Warm transfer against real peers: the demo agent's `transfer_mode` is
//! `warm` and its `transfer_to` a number reached through an outbound trunk
//! that is a SIPp UAS (the person's phone). The caller (a SIP caller in the
//! test, PCMU) asks for a person; the node calls the person, briefs them
//! (they hear speech), then bridges: the caller's speech reaches the
//! person's RTP socket and the person's 1 kHz tone reaches the caller. A
//! person who is busy (486) makes the agent say so, and the call goes on.

use crate::common;
use crate::sip_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::node::{poll, speech_8k};
use common::sip_caller::SipCaller;
use common::warm::{person_trunk, setup};
use sip_support::Uas;
use switchboard::db::testing::TestDb;
use switchboard::media::g711::{ulaw_decode, ulaw_encode};
use tokio::net::UdpSocket;

/// What the person's RTP socket got: (arrival, RMS) per packet.
type Heard = Arc<Mutex<Vec<(Instant, f64)>>>;

fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / pcm.len() as f64)
        .sqrt()
}

/// The person's media: logs what arrives; once `talk_after` has passed
/// since the first voiced packet and a second of quiet followed (the
/// briefing is over), answers with a 1 kHz tone, 20 ms PCMU packets,
/// toward where the node's packets come from.
async fn person_media(socket: Arc<UdpSocket>, heard: Heard) {
    let mut buf = vec![0u8; 2048];
    let mut node: Option<SocketAddr> = None;
    let mut first_voice: Option<Instant> = None;
    let mut last_voice = Instant::now();
    let mut talking = false;
    let (mut seq, mut ts, mut phase) = (1u16, 0u32, 0f64);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { return };
                if n <= 12 || buf[1] & 0x7f != 0 {
                    continue;
                }
                node = Some(from);
                let pcm: Vec<i16> = buf[12..n].iter().map(|&c| ulaw_decode(c)).collect();
                let level = rms(&pcm);
                let now = Instant::now();
                if level > 300.0 {
                    first_voice.get_or_insert(now);
                    last_voice = now;
                }
                heard.lock().unwrap().push((now, level));
                if first_voice.is_some() && now.duration_since(last_voice) > Duration::from_secs(1) {
                    talking = true;
                }
            }
            _ = tick.tick() => {
                let (true, Some(to)) = (talking, node) else { continue };
                let mut pkt = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
                pkt.extend_from_slice(&ts.to_be_bytes());
                pkt.extend_from_slice(&0x5eed_u32.to_be_bytes());
                for _ in 0..160 {
                    phase += 2.0 * std::f64::consts::PI * 1000.0 / 8000.0;
                    pkt.push(ulaw_encode((phase.sin() * 8000.0) as i16));
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                let _ = socket.send_to(&pkt, to).await;
            }
        }
    }
}

async fn transfer_row(db: &TestDb) -> (Option<String>, Option<String>, Option<i32>) {
    poll(Duration::from_secs(10), || async {
        sqlx::query_as::<_, (Option<String>, Option<String>, Option<i32>)>(
            "select transfer_mode, transfer_outcome, transfer_sip_code from call_logs \
             where direction = 'inbound' and transfer_outcome is not null",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("call_logs")
    })
    .await
    .expect("the transfer's outcome was recorded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_is_briefed_then_bridged_both_ways() {
    let person_rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("rtp"));
    let rtp_port = person_rtp.local_addr().expect("addr").port().to_string();
    let s = setup(55400).await;
    let heard: Heard = Arc::default();
    let media = tokio::spawn(person_media(person_rtp, heard.clone()));

    let question = speech_8k(s.dir.path(), "q", "Can I speak to a person, please?");
    let words = speech_8k(
        s.dir.path(),
        "w",
        "Hello, I would like to book an appointment for my dog.",
    );
    let caller = SipCaller::dial_after_greeting(s.node.sip.local_addr(), "+15555550100").await;
    let uas = Uas::start("uas_answer.xml", "u1", &["-key", "rtp_port", &rtp_port]).await;
    person_trunk(&s.db, uas.port).await;
    let asked = caller.say_and_wait(&question).await;

    // The person is called and hears the briefing.
    let briefed = poll(Duration::from_secs(40), || async {
        let h = heard.lock().unwrap();
        let first = h.iter().find(|(_, level)| *level > 300.0)?.0;
        let last = h.iter().rev().find(|(_, level)| *level > 300.0)?.0;
        (h.last()?.0.duration_since(last) > Duration::from_secs(1)).then_some((first, last))
    })
    .await
    .expect("the person heard no briefing within 40 s of the question");
    println!(
        "briefing at the person {} ms after the question, {} ms long",
        briefed.0.saturating_duration_since(asked).as_millis(),
        briefed.1.duration_since(briefed.0).as_millis()
    );
    // The person's tone reaches the caller through the bridge.
    let tone_at = caller
        .wait_agent_voice(briefed.1, Duration::from_secs(10))
        .await
        .expect("the person's audio never reached the caller");
    println!(
        "person → caller: first audio {} ms after the briefing ended",
        tone_at.saturating_duration_since(briefed.1).as_millis()
    );
    // The caller's speech reaches the person.
    let said = Instant::now();
    caller.say_and_wait(&words).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let voiced = heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, level)| *at > said && *level > 300.0)
        .count();
    println!("caller → person: {voiced} voiced packets");
    assert!(
        voiced > 50,
        "the caller's speech did not reach the person ({voiced} voiced packets)"
    );
    assert!(caller.request("BYE").is_none(), "the caller was hung up on");

    // The caller hangs up: the node ends the person's call (SIPp gets BYE).
    caller.hangup().await;
    uas.finish().await.assert_ok();
    media.abort();
    assert_eq!(
        transfer_row(&s.db).await,
        (Some("warm".into()), Some("transferred".into()), Some(200))
    );
    s.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_person_is_said_and_the_call_goes_on() {
    let s = setup(55600).await;
    let question = speech_8k(s.dir.path(), "q", "Can I speak to a person, please?");
    let caller = SipCaller::dial_after_greeting(s.node.sip.local_addr(), "+15555550100").await;
    let uas = Uas::start("uas_busy.xml", "u1", &[]).await;
    person_trunk(&s.db, uas.port).await;
    let asked = caller.say_and_wait(&question).await;
    // The announcement, then (after the 486) the failure line: all the
    // caller heard after the question, until a quiet of 1.5 s after the
    // person's phone refused.
    uas.finish().await.assert_ok();
    // The announcement may still be playing when the 486 comes: listen on
    // through each pause until the failure line is heard (bounded: 20 s of
    // nothing is dead air).
    let refused = Instant::now();
    let deadline = refused + Duration::from_secs(20);
    let mut from = refused;
    let (heard, said_it) = loop {
        let (_, end) = caller
            .wait_agent_speech(
                from,
                Duration::from_millis(1500),
                deadline.saturating_duration_since(Instant::now()),
            )
            .await
            .expect("nothing more said after the busy person: dead air");
        let pcm: Vec<i16> = caller
            .received_pcm(asked, end)
            .iter()
            .flat_map(|&s| [s, s])
            .collect();
        let heard = common::caller_voice::hear_16k(&pcm).await.to_lowercase();
        println!(
            "caller heard by {} ms after the refusal: {heard:?}",
            end.saturating_duration_since(refused).as_millis()
        );
        // Judged by meaning: the recognizer hears the voice's "could not"
        // as "cannot" now and then; the exact line is checked in messages
        // below.
        let failed = [
            "could not transfer",
            "couldn't transfer",
            "cannot transfer",
            "can't transfer",
        ]
        .iter()
        .any(|p| heard.contains(p));
        let said_it = heard.contains("sorry") && failed;
        if said_it || Instant::now() >= deadline {
            break (heard, said_it);
        }
        from = end;
    };
    assert!(said_it, "the failure line was not heard: {heard:?}");
    assert!(caller.request("BYE").is_none(), "the caller was hung up on");
    caller.hangup().await;
    let session = common::node::ended_session(&s.db.pool).await;
    let messages = common::node::session_messages(&s.db.pool, session).await;
    assert!(
        messages.iter().any(|(role, content, _)| role == "assistant"
            && content.starts_with("I am sorry, I could not transfer you")),
        "{messages:?}"
    );
    assert_eq!(
        transfer_row(&s.db).await,
        (Some("warm".into()), Some("busy".into()), Some(486))
    );
    s.node.stop(Duration::from_secs(1)).await;
}
