//! SIP over WebSocket (RFC 7118) with a real browser SIP library: SIP.js
//! (npm `sip.js`, what SIP.js-based softphones run) under Node, its
//! signalling over `ws://` with the `sip` subprotocol and plain RTP PCMU
//! media from its session-description handler (a browser would bring
//! WebRTC; that leg is not SIP's). The call is answered over the
//! WebSocket, a tone goes each way, and the node's BYE (the agent hanging
//! up) reaches SIP.js on the same connection: responses and in-dialog
//! requests reuse it (the client's Via is `WS <name>.invalid`, which no
//! one could connect to). A client that does not ask for the `sip`
//! subprotocol is refused. `scripts/setup` installs the npm packages
//! (`tests/fixtures/sipjs`). The same over `wss://` (TLS with the test
//! CA's certificate). Ports 53500–53599 and 53900–53999.

use crate::secure_support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use secure_support::*;

fn sipjs_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sipjs");
    assert!(
        dir.join("node_modules/sip.js").exists(),
        "SIP.js is not installed: run scripts/setup (npm ci in {})",
        dir.display()
    );
    dir
}

/// Runs the SIP.js caller; returns its JSON result. `ca`: a CA Node must
/// trust for `wss://`.
async fn sipjs_call(
    ws_url: &str,
    target: &str,
    rtp_port: u16,
    talk_secs: u32,
    ca: Option<&std::path::Path>,
) -> serde_json::Value {
    let dir = sipjs_dir();
    let mut cmd = tokio::process::Command::new("node");
    if let Some(ca) = ca {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(u64::from(talk_secs) + 30),
        cmd.arg(dir.join("call.mjs"))
            .args([
                ws_url,
                target,
                &rtp_port.to_string(),
                &talk_secs.to_string(),
            ])
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("SIP.js caller finished")
    .expect("node (Debian nodejs) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "SIP.js printed no result ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipjs_calls_over_websocket_and_the_node_hangs_up_on_the_same_connection() {
    init_logs();
    let base = ports(53_500, 61);
    let handler = MediaHandler {
        hangup_after: Some(Duration::from_secs(4)),
        ..Default::default()
    };
    let node = SecureNode::start(
        base,
        handler,
        &[(
            "SWITCHBOARD_SIP__WS_LISTEN",
            format!("127.0.0.1:{}", base + 2),
        )],
    )
    .await;
    assert_eq!(
        node.server.listeners().ws,
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], base + 2)))
    );
    let ws_url = format!("ws://127.0.0.1:{}", base + 2);
    let result = sipjs_call(
        &ws_url,
        "sip:+15555550100@127.0.0.1",
        ports(53_580, 2),
        20,
        None,
    )
    .await;
    println!("SIP.js: {result}");
    assert_eq!(result["answered"], true, "{result}");
    // The agent's hang-up (BYE) came to SIP.js over its WebSocket.
    assert_eq!(result["ended_by"], "node", "{result}");
    assert!(
        result["voiced_received"].as_u64().unwrap_or(0) >= 100,
        "{result}"
    );
    let rows = node.final_rows(1, Duration::from_secs(10)).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].hangup_by.as_deref()),
        ("completed", Some("agent")),
        "{rows:?}"
    );
    let call = node.handler.call(0);
    assert!(
        call.voiced.load(Ordering::Relaxed) >= 100,
        "SIP.js's tone reached the node"
    );
    assert!(
        result["answer_sdp"]
            .as_str()
            .is_some_and(|s| s.contains("RTP/AVP 0")),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipjs_calls_over_secure_websocket() {
    let base = ports(53_900, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let handler = MediaHandler {
        hangup_after: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let node = SecureNode::start(
        base,
        handler,
        &[
            (
                "SWITCHBOARD_SIP__WSS_LISTEN",
                format!("127.0.0.1:{}", base + 3),
            ),
            (
                "SWITCHBOARD_SIP__TLS_CERT_FILE",
                pki.node_cert.display().to_string(),
            ),
            (
                "SWITCHBOARD_SIP__TLS_KEY_FILE",
                pki.node_key.display().to_string(),
            ),
        ],
    )
    .await;
    let url = format!("wss://127.0.0.1:{}", base + 3);
    let result = sipjs_call(
        &url,
        "sip:+15555550100@127.0.0.1",
        ports(53_980, 2),
        20,
        Some(&pki.ca),
    )
    .await;
    println!("SIP.js over WSS: {result}");
    assert_eq!(
        (result["answered"].as_bool(), result["ended_by"].as_str()),
        (Some(true), Some("node")),
        "{result}"
    );
    assert!(
        result["voiced_received"].as_u64().unwrap_or(0) >= 50,
        "{result}"
    );
    let rows = node.final_rows(1, Duration::from_secs(10)).await;
    assert_eq!(rows[0].status, "completed", "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_without_the_sip_subprotocol_is_refused() {
    let base = ports(53_590, 3);
    let node = SecureNode::start(
        base,
        MediaHandler::default(),
        &[
            (
                "SWITCHBOARD_SIP__WS_LISTEN",
                format!("127.0.0.1:{}", base + 2),
            ),
            ("SWITCHBOARD_RTP__PORT_MIN", "53594".to_string()),
            ("SWITCHBOARD_RTP__PORT_MAX", "53599".to_string()),
            ("SWITCHBOARD_SIP__TLS_LISTEN", String::new()),
        ],
    )
    .await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://127.0.0.1:{}", base + 2);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], base + 2));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let plain = tokio_tungstenite::client_async(url.as_str(), tcp).await;
    assert!(plain.is_err(), "no subprotocol: refused");
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("sip subprotocol");
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "sip");
    // One SIP message per WebSocket message: OPTIONS answered on the socket.
    use futures::{SinkExt, StreamExt};
    let options = "OPTIONS sip:+15555550100@127.0.0.1 SIP/2.0\r\n\
                   Via: SIP/2.0/WS abc.invalid;branch=z9hG4bKws1\r\n\
                   From: <sip:probe@abc.invalid>;tag=1\r\nTo: <sip:+15555550100@127.0.0.1>\r\n\
                   Call-ID: ws-options-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    ws.send(tokio_tungstenite::tungstenite::Message::text(options))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer")
        .expect("a message")
        .expect("no error");
    let text = reply.into_text().expect("text");
    assert!(text.starts_with("SIP/2.0 200 OK"), "{text}");
    assert!(
        text.contains("Via: SIP/2.0/WS abc.invalid;branch=z9hG4bKws1"),
        "{text}"
    );
    drop(node);
}
