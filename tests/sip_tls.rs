//! SIP over TLS with SRTP, against baresip (a real softphone with SDES
//! SRTP): a call over TLS whose media is RTP/SAVP both ways (a tone each
//! way, heard decrypted on the other side); a plain-RTP offer on a trunk
//! that requires SRTP, and an SRTP offer over plain UDP (SIPp), refused
//! 488; mutual TLS: without a client certificate the handshake fails, with
//! one signed by the configured CA the call goes through; and an outbound
//! call placed over TLS with SRTP to baresip answering. Ports 53000–53199.

use crate::secure_support;

use std::time::Duration;

use secure_support::*;
use switchboard::sip::outbound_leg::DialRequest;
use switchboard::sip::transport::Transport;

fn tls_env(pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        (
            "SWITCHBOARD_SIP__TLS_CERT_FILE",
            pki.node_cert.display().to_string(),
        ),
        (
            "SWITCHBOARD_SIP__TLS_KEY_FILE",
            pki.node_key.display().to_string(),
        ),
        (
            "SWITCHBOARD_SIP__TLS_TRUST_FILE",
            pki.ca.display().to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_over_tls_with_srtp_both_ways() {
    init_logs();
    let base = ports(53_000, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let node = SecureNode::start(base, MediaHandler::default(), &tls_env(&pki)).await;
    node.sql("update sip_trunks set srtp = 'required'").await;
    let phone = Softphone {
        sip_port: ports(53_070, 2),
        rtp_port: ports(53_080, 10),
        srtp: true,
        ca: Some(pki.ca.clone()),
        ..Default::default()
    };
    let wav = tone_wav(dir.path(), 8000, 3, 7);
    let bs_dir = dir.path().join("baresip");
    let uri = format!("sip:+15555550100@127.0.0.1:{};transport=tls", base + 1);
    let phone_run =
        tokio::task::spawn_blocking(move || Baresip::dial(&bs_dir, &phone, &uri, &wav, 14))
            .await
            .expect("baresip");
    let rows = node.final_rows(1, Duration::from_secs(20)).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}\n{}", phone_run.log());
    let call = node.handler.call(0);
    let media = call.media();
    assert!(media.srtp.is_some(), "the call's media is SRTP");
    let report = node.handler.finished(0, Duration::from_secs(10)).await;
    let stats = report.stats;
    println!(
        "SRTP call: {} packets in, {} out, {} malformed, {} voiced frames of {}",
        stats.packets_in,
        stats.packets_out,
        stats.malformed,
        call.voiced.load(std::sync::atomic::Ordering::Relaxed),
        call.frames.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        stats.packets_in >= 150,
        "SRTP from baresip decrypted: {stats:?}"
    );
    // One unreadable packet was seen in one run of many (not reproduced
    // with tracing on); anything more is a key or cipher mismatch.
    assert!(
        stats.malformed <= 2,
        "SRTP packets failed to authenticate: {stats:?}"
    );
    assert!(
        call.voiced.load(std::sync::atomic::Ordering::Relaxed) >= 100,
        "the caller's tone was heard through SRTP"
    );
    let heard = Baresip::received_wav(&phone_run.dir)
        .unwrap_or_else(|| panic!("baresip wrote no dump:\n{}", phone_run.log()));
    let rms = loudest_second_rms(&heard);
    assert!(
        rms > 1000.0,
        "baresip heard our tone through SRTP (RMS {rms:.0})"
    );
    let log = phone_run.log();
    assert!(log.contains("SRTP") || log.contains("srtp"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rtp_where_srtp_is_required_and_sdes_over_udp_are_refused() {
    let base = ports(53_100, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let node = SecureNode::start(base, MediaHandler::default(), &tls_env(&pki)).await;
    node.sql("update sip_trunks set srtp = 'required'").await;
    // Over TLS but plain RTP/AVP: 488.
    let phone = Softphone {
        sip_port: ports(53_170, 2),
        rtp_port: ports(53_180, 10),
        ca: Some(pki.ca.clone()),
        ..Default::default()
    };
    let wav = tone_wav(dir.path(), 8000, 1, 3);
    let bs_dir = dir.path().join("baresip");
    let uri = format!("sip:+15555550100@127.0.0.1:{};transport=tls", base + 1);
    let run = tokio::task::spawn_blocking(move || Baresip::dial(&bs_dir, &phone, &uri, &wav, 6))
        .await
        .expect("baresip");
    let rows = node.final_rows(1, Duration::from_secs(10)).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].sip_code),
        ("rejected", Some(488)),
        "{rows:?}\n{}",
        run.log()
    );
    assert!(run.log().contains("488"), "{}", run.log());
    // RTP/SAVP with a key over plain UDP (SIPp): the key would be in the
    // clear, so 488 whatever the trunk says.
    node.sql("update sip_trunks set srtp = 'optional'").await;
    let sipp = sipp_run(
        std::net::SocketAddr::from(([127, 0, 0, 1], base)),
        "uac_savp_over_udp.xml",
        ports(53_190, 2),
        ports(53_192, 4),
    )
    .await;
    sipp.assert_ok();
    let rows = node.final_rows(2, Duration::from_secs(10)).await;
    assert_eq!(rows[1].sip_code, Some(488), "{rows:?}");
    assert!(node.handler.calls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_the_ca_signed() {
    let base = ports(53_200, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let mut env = tls_env(&pki);
    env.push((
        "SWITCHBOARD_SIP__TLS_CLIENT_CA_FILE",
        pki.ca.display().to_string(),
    ));
    let handler = MediaHandler::default();
    let node = SecureNode::start(base, handler, &env).await;
    let uri = format!("sip:+15555550100@127.0.0.1:{};transport=tls", base + 1);
    // No client certificate: the handshake fails, no call is recorded.
    let phone = Softphone {
        sip_port: ports(53_270, 2),
        rtp_port: ports(53_280, 10),
        ca: Some(pki.ca.clone()),
        ..Default::default()
    };
    let wav = tone_wav(dir.path(), 8000, 1, 3);
    let (d, p, u, w) = (
        dir.path().join("anonymous"),
        phone.clone(),
        uri.clone(),
        wav.clone(),
    );
    let run = tokio::task::spawn_blocking(move || Baresip::dial(&d, &p, &u, &w, 5))
        .await
        .expect("baresip");
    assert!(node.rows().await.is_empty(), "{}", run.log());
    // With the CA-signed certificate: the call goes through (plain RTP is
    // fine on an `optional` trunk).
    let phone = Softphone {
        certificate: Some(pki.client_bundle.clone()),
        ..phone
    };
    let d = dir.path().join("signed");
    let run = tokio::task::spawn_blocking(move || Baresip::dial(&d, &phone, &uri, &wav, 8))
        .await
        .expect("baresip");
    let rows = node.final_rows(1, Duration::from_secs(15)).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}\n{}", run.log());
    assert!(node.handler.call(0).media().srtp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_over_tls_with_srtp_to_baresip() {
    let base = ports(53_300, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let handler = MediaHandler {
        hangup_after: Some(Duration::from_secs(4)),
        ..Default::default()
    };
    let node = SecureNode::start(base, handler, &tls_env(&pki)).await;
    // baresip answers on TLS at its sip_listen port + 1, with the
    // node-signed certificate of the test CA (SAN 127.0.0.1).
    let bundle = dir.path().join("callee.pem");
    std::fs::write(
        &bundle,
        [
            std::fs::read(&pki.node_cert).unwrap(),
            std::fs::read(&pki.node_key).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let phone = Softphone {
        sip_port: ports(53_370, 2),
        rtp_port: ports(53_380, 10),
        srtp: true,
        auto_answer: true,
        user: Some("+15551230000".into()),
        certificate: Some(bundle),
        ca: Some(pki.ca.clone()),
        ..Default::default()
    };
    let wav = tone_wav(dir.path(), 8000, 6, 20);
    let callee_dir = dir.path().join("callee");
    let mut callee = Baresip::listen(&callee_dir, &phone, &wav, 20);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (agent_id, workspace_id): (uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("select id, workspace_id from agents where name = 'Reception' limit 1")
            .fetch_one(&node.db.pool)
            .await
            .expect("demo agent");
    let trunk_id: uuid::Uuid = sqlx::query_scalar("select id from sip_trunks limit 1")
        .fetch_one(&node.db.pool)
        .await
        .expect("trunk");
    let e164 = |s: &str| switchboard::sip::number::E164::parse(s).expect("E.164");
    let request = DialRequest {
        workspace_id,
        agent_id,
        sip_trunk_id: trunk_id,
        from: e164("+15555550100"),
        phone_number_id: None,
        to: e164("+15551230000"),
        target: std::net::SocketAddr::from(([127, 0, 0, 1], phone.sip_port + 1)),
        transport: Transport::Tls,
        host: "127.0.0.1".into(),
        port: phone.sip_port + 1,
        from_domain: None,
        credentials: None,
        codecs: vec![switchboard::media::Codec::Pcmu],
        srtp: true,
        max_concurrent_calls: 1,
        variables: Vec::new(),
    };
    node.server.dial(request).await.expect("dial");
    let rows = node.final_rows(1, Duration::from_secs(20)).await;
    let log = || {
        std::fs::read_to_string(callee_dir.join("stdout.log")).unwrap_or_default()
            + &std::fs::read_to_string(callee_dir.join("stderr.log")).unwrap_or_default()
    };
    assert_eq!(rows[0].status, "completed", "{rows:?}\n{}", log());
    let call = node.handler.call(0);
    assert!(call.media().srtp.is_some(), "outbound media is SRTP");
    let report = node.handler.finished(0, Duration::from_secs(10)).await;
    assert!(report.stats.packets_in >= 100, "{:?}", report.stats);
    assert!(report.stats.malformed <= 2, "{:?}", report.stats);
    assert!(call.voiced.load(std::sync::atomic::Ordering::Relaxed) >= 50);
    let _ = callee.kill().await;
}
