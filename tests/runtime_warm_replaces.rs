//! A warm transfer completed with REFER + Replaces (RFC 5589 §7, RFC 3891)
//! against real peers. The demo agent's `transfer_mode` is `warm` and its
//! `transfer_to` a number reached through an outbound trunk that is a SIPp
//! UAS advertising `replaces` (the person's phone,
//! `uas_person_replaces.xml`).
//!
//! - The caller is a SIPp UAC (`uac_warm_replaces.xml`) advertising REFER
//!   and `replaces`. It asks for a person (a capture of the Piper-voiced
//!   question); the node calls the person, briefs them, bridges, then sends
//!   a REFER whose Refer-To is the person's Contact carrying the escaped
//!   Replaces of the node's dialog with the person. The caller's phone
//!   calls the person with that Replaces header (built from the Refer-To
//!   with `ereg`), the person's phone ends the node's call (BYE), the
//!   caller reports 200 (NOTIFY sipfrag) and the node ends the caller's
//!   call: both of the node's legs are gone, the caller's row says
//!   `transferred`.
//! - A caller that advertises neither (the test's SIP caller) gets no
//!   REFER: the node keeps bridging as before, until the caller hangs up.
//! - A caller that advertises both but refuses the REFER (603) keeps the
//!   bridge: nothing is hung up, until the caller hangs up.

use crate::common;
use crate::sip_support;

use std::time::Duration;

use common::node::{poll, speech_8k};
use common::sip_caller::SipCaller;
use common::warm::{person_trunk, setup, Setup};
use sip_support::{free_media_port, free_port, sipp_with, Uas};
use switchboard::db::testing::TestDb;

const DEMO: &str = "+15555550100";

/// A call_logs row once ended: direction, status, hangup_by, transfer
/// mode, outcome and SIP code.
type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
);

/// Both rows (the caller's inbound, the person's outbound) once ended.
async fn ended_rows(db: &TestDb) -> Vec<Row> {
    poll(Duration::from_secs(15), || async {
        let rows: Vec<Row> = sqlx::query_as(
            "select direction, status, hangup_by, transfer_mode, transfer_outcome, transfer_sip_code \
             from call_logs where ended_at is not null order by direction",
        )
        .fetch_all(&db.pool)
        .await
        .expect("call_logs");
        (rows.len() == 2).then_some(rows)
    })
    .await
    .expect("both calls ended within 15 s")
}

/// One message in a SIPp `-trace_msg` log.
#[derive(Debug)]
struct Logged {
    sent: bool,
    text: String,
}

impl Logged {
    fn start(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    fn tag(&self, name: &str) -> Option<&str> {
        let value = self.header(name)?;
        value.split(";tag=").nth(1)?.split([';', ' ']).next()
    }
}

/// A `-trace_msg` log's messages: each after a line of dashes, a line
/// saying sent or received, and a blank line.
fn logged(log: &str) -> Vec<Logged> {
    let log = log.replace("\r\n", "\n");
    let mut blocks = vec![String::new()];
    for line in log.lines() {
        if line.starts_with("-----") {
            blocks.push(String::new());
        } else if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
        .iter()
        .filter_map(|block| {
            let sent = block.contains("message sent");
            if !sent && !block.contains("message received") {
                return None;
            }
            let (_, text) = block.split_once("\n\n")?;
            Some(Logged {
                sent,
                text: text.trim().to_string(),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_phone_takes_the_call_over_and_the_node_leaves() {
    let s = setup(56200).await;
    // The caller listens to the greeting, then asks.
    let mut pcm = vec![0i16; 8 * 8000];
    pcm.extend(speech_8k(
        s.dir.path(),
        "q",
        "Can I speak to a person, please?",
    ));
    pcm.extend(vec![0i16; 2 * 8000]);
    let pcap = s.dir.path().join("question.pcap");
    common::pcap::write_pcmu(&pcap, &pcm);
    let template =
        std::fs::read_to_string(sip_support::scenario("uac_warm_replaces.xml")).expect("scenario");
    let scenario = s.dir.path().join("caller.xml");
    std::fs::write(
        &scenario,
        template.replace("QUESTION_PCAP", pcap.to_str().expect("utf-8 path")),
    )
    .expect("write scenario");

    let person = Uas::start_calls("uas_person_replaces.xml", "u1", 2, 150, &[]).await;
    person_trunk(&s.db, person.port).await;
    let person_port = person.port;
    let node_addr = s.node.sip.local_addr();
    let scenario = scenario.to_str().expect("utf-8 path").to_string();
    let caller = tokio::spawn(async move {
        sipp_with(
            node_addr,
            &scenario,
            DEMO,
            &[],
            (free_port(), free_media_port()),
            150,
        )
        .await
    })
    .await
    .expect("caller task");
    let person = person.finish().await;
    caller.assert_ok();
    person.assert_ok();

    // The node's dialog with the person, as the person's phone saw it.
    let at_person = logged(&person.messages);
    let node_invite = at_person
        .iter()
        .find(|m| !m.sent && m.start().starts_with("INVITE ") && m.header("Replaces").is_none())
        .expect("the node's INVITE to the person");
    let dialog = node_invite.call_id().to_string();
    let node_tag = node_invite.tag("From").expect("the node's tag").to_string();
    let person_tag = at_person
        .iter()
        .find(|m| {
            m.sent
                && m.start().starts_with("SIP/2.0 200")
                && m.call_id() == dialog
                && m.header("CSeq").is_some_and(|c| c.ends_with("INVITE"))
        })
        .and_then(|m| m.tag("To"))
        .expect("the person's answer to the node")
        .to_string();

    // The REFER: Refer-To is the person's Contact with the Replaces of
    // that dialog escaped in its header part (to-tag: the person's own).
    let at_caller = logged(&caller.messages);
    let refer = at_caller
        .iter()
        .find(|m| !m.sent && m.start().starts_with("REFER "))
        .expect("the node sent a REFER");
    let escaped = format!(
        "{}%3Bto-tag%3D{person_tag}%3Bfrom-tag%3D{node_tag}",
        dialog.replace('@', "%40")
    );
    assert_eq!(
        refer.header("Refer-To"),
        Some(
            format!(
                "<sip:person@127.0.0.1:{};transport=UDP?Replaces={escaped}>",
                person_port
            )
            .as_str()
        ),
        "{}",
        refer.text
    );
    assert!(
        refer
            .header("Referred-By")
            .is_some_and(|v| v.contains("sip:")),
        "{}",
        refer.text
    );
    println!("REFER Refer-To: {}", refer.header("Refer-To").unwrap_or(""));

    // The caller's phone called the person with that Replaces.
    let replacing = at_person
        .iter()
        .find(|m| !m.sent && m.start().starts_with("INVITE ") && m.header("Replaces").is_some())
        .expect("the caller's phone called the person");
    assert_eq!(
        replacing.header("Replaces"),
        Some(format!("{dialog};to-tag={person_tag};from-tag={node_tag}").as_str())
    );
    // The person's phone ended the replaced dialog; the node answered 200
    // and sent no BYE of its own there.
    assert!(at_person
        .iter()
        .any(|m| m.sent && m.start().starts_with("BYE ") && m.call_id() == dialog));
    assert!(at_person.iter().any(|m| !m.sent
        && m.start().starts_with("SIP/2.0 200")
        && m.call_id() == dialog
        && m.header("CSeq").is_some_and(|c| c.ends_with("BYE"))));
    assert!(
        !at_person
            .iter()
            .any(|m| !m.sent && m.start().starts_with("BYE ") && m.call_id() == dialog),
        "the node hung up on the person itself"
    );
    // The node ended the caller's call (the scenario waited for its BYE).
    assert!(at_caller
        .iter()
        .any(|m| !m.sent && m.start().starts_with("BYE ")));

    // Both legs are gone from the node, media and all.
    let idle = poll(Duration::from_secs(15), || async {
        (s.node.sip.live_calls() == 0 && s.node.sip.rtp_ports_in_use() == 0).then_some(())
    })
    .await;
    assert!(
        idle.is_some(),
        "calls still live: {}, RTP ports leased: {}",
        s.node.sip.live_calls(),
        s.node.sip.rtp_ports_in_use()
    );
    let rows = ended_rows(&s.db).await;
    println!("call_logs: {rows:?}");
    assert_eq!(
        rows[0],
        (
            "inbound".to_string(),
            "transferred".to_string(),
            Some("agent".to_string()),
            Some("warm".to_string()),
            Some("transferred".to_string()),
            Some(200)
        )
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_deref()),
        ("outbound", "completed", Some("caller")),
        "the person's phone ended the replaced call"
    );
    s.node.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replaces_from_the_caller_the_node_keeps_bridging() {
    let s = setup(56600).await;
    let question = speech_8k(s.dir.path(), "q", "Can I speak to a person, please?");
    // The test's SIP caller advertises neither REFER nor replaces; the
    // person's phone advertises replaces.
    let caller = SipCaller::dial_after_greeting(s.node.sip.local_addr(), DEMO).await;
    let person = person_staying_bridged().await;
    person_trunk(&s.db, person.port).await;
    caller.say_and_wait(&question).await;
    // The person is reached and briefed: the bridge is up.
    let bridged = poll(Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, String>(
            "select transfer_outcome from call_logs where direction = 'inbound' and transfer_outcome is not null",
        )
        .fetch_optional(&s.db.pool)
        .await
        .expect("call_logs")
    })
    .await
    .expect("the person was not reached within 60 s of the question");
    assert_eq!(bridged, "transferred");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        caller.request("REFER").is_none(),
        "a REFER went to a caller that does not support Replaces"
    );
    assert!(caller.request("BYE").is_none(), "the caller was hung up on");
    assert_eq!(s.node.sip.live_calls(), 2, "both legs stay up, bridged");

    caller_leaves_the_bridge(s, caller, person).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refer_leaves_the_bridge_up() {
    let s = setup(56400).await;
    let question = speech_8k(s.dir.path(), "q", "Can I speak to a person, please?");
    // This caller advertises REFER and replaces, then declines the REFER.
    let caller = SipCaller::try_dial_with(
        s.node.sip.local_addr(),
        DEMO,
        &[
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY"),
            ("Supported", "replaces"),
        ],
    )
    .await
    .expect("the call is answered");
    caller.answer_refer_with(603, 0);
    caller.wait_greeting().await;
    let person = person_staying_bridged().await;
    person_trunk(&s.db, person.port).await;
    caller.say_and_wait(&question).await;
    // The bridge is up and the node offers the caller's phone the takeover.
    let refer = poll(Duration::from_secs(60), || async {
        caller.request("REFER")
    })
    .await
    .expect("no REFER reached the caller within 60 s of the question");
    let refer_to = refer.header(&["Refer-To", "r"]).unwrap_or_default();
    assert!(
        refer_to.contains("Replaces="),
        "the REFER names the person's dialog to replace: {refer_to}"
    );
    // Declined: the node goes on bridging and hangs up on nobody.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(caller.request("BYE").is_none(), "the caller was hung up on");
    assert_eq!(s.node.sip.live_calls(), 2, "both legs stay up, bridged");
    let status: String = sqlx::query_scalar(
        "select status from call_logs where direction = 'inbound' and ended_at is null",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("the caller's call is still open");
    assert_eq!(status, "in_progress");

    caller_leaves_the_bridge(s, caller, person).await;
}

/// The person's phone for one call that stays bridged until the node ends
/// it (`-set mode bridged`: the BYE is awaited in one receive, not polled).
async fn person_staying_bridged() -> Uas {
    Uas::start_calls(
        "uas_person_replaces.xml",
        "u1",
        1,
        150,
        &["-set", "mode", "bridged"],
    )
    .await
}

/// The caller of a bridged call hangs up: the node ends the person's call
/// (SIPp gets BYE) and both rows close, the caller's `transferred`.
async fn caller_leaves_the_bridge(s: Setup, caller: SipCaller, person: Uas) {
    caller.hangup().await;
    person.finish().await.assert_ok();
    let rows = ended_rows(&s.db).await;
    println!("call_logs: {rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].4.as_deref()),
        ("inbound", "completed", Some("transferred"))
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_deref()),
        ("outbound", "completed", Some("agent"))
    );
    s.node.stop(Duration::from_secs(1)).await;
}
