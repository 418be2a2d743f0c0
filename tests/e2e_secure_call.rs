//! The whole product over a secure trunk: `switchboard serve`'s services
//! (SIP, the agent runtime, Piper voice) with TLS, and baresip calling
//! over TLS with SDES SRTP on a trunk that requires it. The agent's
//! greeting must reach baresip as voice through SRTP (the runtime starts
//! its media session with the keys SIP negotiated), and the call is
//! recorded as an SRTP-protected, completed call. Ports 53676–53699 and
//! 53876–53899.

use crate::common;
use crate::secure_support;

use std::time::Duration;

use secure_support::{loudest_second_rms, ports, tone_wav, Baresip, Pki, Softphone};
use switchboard::db::testing::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_greets_a_caller_over_tls_and_srtp() {
    secure_support::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    sqlx::query("update sip_trunks set srtp = 'required'")
        .execute(&db.pool)
        .await
        .expect("trunk");
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(&dir.path().join("pki"));
    let base = ports(53_876, 24);
    let extra = [
        ("SWITCHBOARD_SIP__LISTEN", format!("127.0.0.1:{base}")),
        (
            "SWITCHBOARD_SIP__TLS_LISTEN",
            format!("127.0.0.1:{}", base + 1),
        ),
        (
            "SWITCHBOARD_SIP__TLS_CERT_FILE",
            pki.node_cert.display().to_string(),
        ),
        (
            "SWITCHBOARD_SIP__TLS_KEY_FILE",
            pki.node_key.display().to_string(),
        ),
        (
            "SWITCHBOARD_API__LISTEN",
            format!("127.0.0.1:{}", base + 23),
        ),
        ("SWITCHBOARD_RTP__PORT_MAX", (base + 22).to_string()),
    ];
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = common::node::start_node(&db.url, &db.pool, base + 4, &extra).await;
    let phone = Softphone {
        sip_port: ports(53_676, 2),
        rtp_port: ports(53_680, 10),
        srtp: true,
        ca: Some(pki.ca.clone()),
        ..Default::default()
    };
    // The caller stays quiet and listens to the greeting.
    let wav = tone_wav(dir.path(), 8000, 0, 9);
    let bs_dir = dir.path().join("baresip");
    let uri = format!("sip:+15555550100@127.0.0.1:{};transport=tls", base + 1);
    let run = tokio::task::spawn_blocking(move || Baresip::dial(&bs_dir, &phone, &uri, &wav, 16))
        .await
        .expect("baresip");
    let log = run.log();
    assert!(log.contains("Call established"), "{log}");
    let heard = Baresip::received_wav(&run.dir).unwrap_or_else(|| panic!("no dump:\n{log}"));
    let rms = loudest_second_rms(&heard);
    println!("greeting over SRTP: loudest second RMS {rms:.0}");
    assert!(
        rms > 500.0,
        "the greeting reached baresip through SRTP (RMS {rms:.0})\n{log}"
    );
    let row: (String, Option<String>) = common::node::poll(Duration::from_secs(15), || async {
        sqlx::query_as("select status, codec from call_logs where ended_at is not null")
            .fetch_optional(&db.pool)
            .await
            .expect("call_logs")
    })
    .await
    .expect("the call ended");
    assert_eq!(row.0, "completed");
    drop(node);
}
