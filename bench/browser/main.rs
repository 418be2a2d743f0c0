//! Voice-to-voice at the browser: the console's "Talk to an agent" page in
//! headless Chromium calls the demo agent over WebRTC (WHIP) N times (10 by
//! default: `cargo bench --bench browser -- 20`); each call's fake
//! microphone plays "What time do you open on Saturday?" after 8 s of
//! silence. The figure is measured on the page's own recording (microphone
//! and agent on one audio clock): end of the question in the microphone →
//! first agent audio after it, so it includes Chromium's capture, Opus
//! both ways, ICE/DTLS on loopback, our jitter buffer and playout, and the
//! browser's receive path. Beside it, the node's inside figure of the same
//! turn (`call_logs.latency`). Prints JSON and writes
//! `bench/results/browser_voice_to_voice.json`. Needs PostgreSQL
//! (`DATABASE_URL`), Chromium and the models (`scripts/setup`).

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/console_support/mod.rs"]
mod console_support;

use std::time::Duration;

use console_support::browser_call::{microphone_wav, sign_in, talk};
use console_support::cdp::{Chromium, ChromiumOptions};
use serde_json::json;

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn summary(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    json!({"p50": percentile(&v, 50.0), "p95": percentile(&v, 95.0),
           "min": v.first(), "max": v.last(), "all": v})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let env = [
        ("SWITCHBOARD_WEBRTC__ICE_IPS", r#"["127.0.0.0/8"]"#),
        ("SWITCHBOARD_WEBRTC__INCLUDE_LOOPBACK", "true"),
        ("SWITCHBOARD_WEBRTC__PORT_MIN", "52800"),
        ("SWITCHBOARD_WEBRTC__PORT_MAX", "52849"),
        ("SWITCHBOARD_RTP__PORT_MAX", "52949"),
    ];
    let s = console_support::start(52040, 52900, &env).await;
    let dir = tempfile::tempdir().expect("tmp");
    let mic = microphone_wav(dir.path(), "What time do you open on Saturday?", 8000, 1000);
    let browser = Chromium::start(ChromiumOptions {
        port: 52042,
        profile_dir: dir.path(),
        microphone: Some(&mic),
    })
    .await;
    let page = browser.page().await;
    sign_in(&page, &s.base).await;
    let (mut outside, mut inside, mut failed) = (Vec::new(), Vec::new(), 0);
    for i in 0..calls {
        // Away and back: a fresh talk page for each call.
        page.eval("location.hash = '#/usage'; true").await.unwrap();
        page.wait_for(
            "document.getElementById('main').dataset.page === 'usage' && document.getElementById('main').dataset.ready === 'true'",
            Duration::from_secs(30),
            "the usage page",
        )
        .await;
        page.eval(&format!("location.hash = '#/talk/{}'; true", s.agent))
            .await
            .unwrap();
        page.wait_for(
            "document.getElementById('main').dataset.page === 'talk' && document.getElementById('main').dataset.ready === 'true' && !!document.getElementById('talk-start')",
            Duration::from_secs(30),
            "the talk page",
        )
        .await;
        let call = talk(
            &page,
            "saturday",
            Duration::from_secs(90),
            Duration::from_secs(5),
        )
        .await;
        match call.voice_to_voice_ms() {
            Some(ms) => outside.push(ms),
            None => failed += 1,
        }
        let id: Option<uuid::Uuid> = call.call_log_id.as_deref().and_then(|c| c.parse().ok());
        let latency: Option<serde_json::Value> = match id {
            Some(id) => {
                let pool = s.db.pool.clone();
                common::node::poll(Duration::from_secs(20), || {
                    let pool = pool.clone();
                    async move {
                        sqlx::query_scalar(
                            "select latency from call_logs where id = $1 and ended_at is not null",
                        )
                        .bind(id)
                        .fetch_optional(&pool)
                        .await
                        .ok()
                        .flatten()
                    }
                })
                .await
            }
            None => None,
        };
        // The question's turn: the first answered turn after the greeting
        // (`call_logs.latency` is `{"turns": [...], "media": {...}}`).
        let turn_ms = latency
            .as_ref()
            .and_then(|l| l["turns"].as_array())
            .and_then(|turns| turns.iter().find_map(|t| t["voice_to_voice_ms"].as_u64()));
        if let Some(ms) = turn_ms {
            inside.push(ms);
        }
        eprintln!(
            "call {}: at the browser {:?} ms, inside {:?} ms",
            i + 1,
            call.voice_to_voice_ms(),
            turn_ms
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let result = json!({
        "benchmark": "browser voice-to-voice (console Talk page, headless Chromium, WHIP, Opus, loopback)",
        "calls": calls,
        "measured": outside.len(),
        "failed": failed,
        "at_browser_ms": summary(outside),
        "inside_ms": summary(inside),
        "load_average": load.split_whitespace().take(3).collect::<Vec<_>>(),
        "date": chrono::Utc::now().to_rfc3339(),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/results/browser_voice_to_voice.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap() + "\n")
        .expect("write results");
    drop(page);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}
