//! A browser call from the console, as a person makes one: headless
//! Chromium with a fake microphone playing a question in the Piper test
//! voice signs in, opens "Talk to an agent" and calls the demo agent over
//! WebRTC (WHIP). The page must show the live transcript of the question
//! and of the answer; the answer's audio the page recorded must be
//! understood by whisper (the caller's recognizer, not the agent's); the
//! ICE pairs the browser formed are all on loopback (each test runs in a
//! network namespace with only `lo`: `console_support::netns`); `call_logs`
//! has a `web` row whose session holds the question and the answer, and the
//! turn's latency; no page error.
//!
//! A caller of an agent that transfers phone calls asks for a person: the
//! browser call cannot be transferred, the agent says so and the call goes
//! on; a key pressed on the page (RFC 4733 from Chromium's `RTCDTMFSender`)
//! reaches the agent as a SIP caller's digit does.
//!
//! The widget does the same from a business's page: on a static page
//! served from a loopback origin its allowed domains list, a click on its
//! button calls the agent through WHIP with the widget's public key, and
//! the call is recorded as the widget's (`from_number` names the origin).
//!
//! Ports (52000–52999): console call: SIP 52040, API 52041, DevTools
//! 52042, ICE 52800–52849, RTP 52900–52949 (unused by a web call); widget
//! call: SIP 52050, API 52051, DevTools 52052, static page 52053, ICE
//! 52850–52899, RTP 52950–52999; digits and transfer: SIP 53040, API
//! 53041, DevTools 53042, ICE 53800–53849, RTP 53850–53999 (the web2 range).

use crate::common;
use crate::console_support;

use std::time::Duration;

use common::caller_voice::{hear_16k, key_word_recall};
use console_support::browser_call::{microphone_wav, open_talk_page, talk, talk_then, BrowserCall};
use console_support::cdp::{Chromium, ChromiumOptions};
use console_support::netns::in_loopback_namespace;

const QUESTION: &str = "What time do you open on Saturday?";
/// Silence before the question: the greeting plays first (about 5 s, after
/// the call is set up).
const LEAD_MS: u32 = 8000;

/// The node's settings for browser calls in this suite: ICE on loopback
/// only, from `ice` (50 ports); RTP up to `rtp_max`.
pub fn webrtc_env(ice: u16, rtp_max: u16) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHBOARD_WEBRTC__ICE_IPS", r#"["127.0.0.0/8"]"#.into()),
        ("SWITCHBOARD_WEBRTC__INCLUDE_LOOPBACK", "true".into()),
        ("SWITCHBOARD_WEBRTC__PORT_MIN", ice.to_string()),
        ("SWITCHBOARD_WEBRTC__PORT_MAX", (ice + 49).to_string()),
        ("SWITCHBOARD_RTP__PORT_MAX", rtp_max.to_string()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_talks_to_the_demo_agent_from_the_browser() {
    if !in_loopback_namespace(
        "console_browser_call::the_console_talks_to_the_demo_agent_from_the_browser",
    )
    .await
    {
        return;
    }
    common::node::init_logs();
    let env = webrtc_env(52800, 52949);
    let s = console_support::start(52040, 52900, &env_refs(&env)).await;
    let dir = tempfile::tempdir().expect("tmp");
    let mic = microphone_wav(dir.path(), QUESTION, LEAD_MS, 1000);
    let browser = Chromium::start(ChromiumOptions {
        port: 52042,
        profile_dir: dir.path(),
        microphone: Some(&mic),
    })
    .await;
    let page = browser.page().await;
    open_talk_page(&page, &s.base, s.agent).await;

    let call = talk(
        &page,
        "saturday",
        Duration::from_secs(90),
        Duration::from_secs(6),
    )
    .await;
    page.screenshot(&console_support::keep_screenshot(dir.path(), "talk-call"))
        .await;
    let errors: Vec<String> = page
        .take_errors()
        .iter()
        .map(|e| format!("{}: {}", e.source, e.text))
        .collect();
    assert!(
        errors.is_empty(),
        "the talk page logged errors: {errors:#?}"
    );

    // The transcript: the greeting, then the question, then the answer.
    assert!(
        call.transcript[0].starts_with("assistant:"),
        "{:?}",
        call.transcript
    );

    assert_loopback(&call);

    // The records: a web call with its conversation.
    let call_log: (uuid::Uuid, String, Option<uuid::Uuid>) = common::node::poll(Duration::from_secs(20), || async {
        sqlx::query_as("select id, status, session_id from call_logs where direction = 'web' and ended_at is not null")
            .fetch_optional(&s.db.pool)
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("a finished web call in call_logs");
    assert_eq!(
        Some(call_log.0.to_string()),
        call.call_log_id,
        "the page followed this call"
    );
    let messages: Vec<(String, String)> = common::node::poll(Duration::from_secs(20), || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select role, content from messages where session_id = $1 order by created_at",
        )
        .bind(call_log.2)
        .fetch_all(&s.db.pool)
        .await
        .ok()?;
        rows.iter()
            .any(|(r, c)| r == "user" && c.to_lowercase().contains("saturday"))
            .then_some(rows)
    })
    .await
    .expect("the question among the session's messages");
    assert!(
        messages
            .iter()
            .any(|(r, c)| r == "assistant" && c.to_lowercase().contains("saturday")),
        "{messages:?}"
    );
    // What the page heard after the question, as whisper understands it,
    // against what the agent said (its message).
    let said = messages
        .iter()
        .rev()
        .find(|(r, c)| r == "assistant" && c.to_lowercase().contains("saturday"))
        .map(|(_, c)| c.clone())
        .expect("the agent's answer");
    let heard = hear_16k(&call.answer_16k()).await;
    let recall = key_word_recall(&said, &heard);
    assert!(
        recall >= 0.6,
        "the page heard {heard:?} for {said:?} (recall {recall:.2})"
    );
    let v2v = call
        .voice_to_voice_ms()
        .expect("an answer after the question");
    println!("voice-to-voice at the browser: {v2v} ms (heard: {heard:?})");
    // The node's own figures of the turn, as for a SIP call.
    let latency: Option<serde_json::Value> =
        common::node::poll(Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, Option<serde_json::Value>>(
                "select latency from call_logs where id = $1",
            )
            .bind(call_log.0)
            .fetch_one(&s.db.pool)
            .await
            .ok()
            .flatten()
        })
        .await;
    let inside = latency
        .as_ref()
        .and_then(|l| l["turns"].as_array())
        .and_then(|turns| turns.iter().find_map(|t| t["voice_to_voice_ms"].as_u64()));
    assert!(
        inside.is_some_and(|ms| ms > 0),
        "call_logs.latency of the web call has no answered turn: {latency:?}"
    );
    let channel: String = sqlx::query_scalar("select channel from agent_sessions where id = $1")
        .bind(call_log.2)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(channel, "web");
    drop(page);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_calls_the_agent_from_an_allowed_page() {
    if !in_loopback_namespace(
        "console_browser_call::the_widget_calls_the_agent_from_an_allowed_page",
    )
    .await
    {
        return;
    }
    common::node::init_logs();
    let env = webrtc_env(52850, 52999);
    let s = console_support::start(52050, 52950, &env_refs(&env)).await;
    let dir = tempfile::tempdir().expect("tmp");
    let origin = "http://127.0.0.1:52053";
    let (_, key) = s
        .widget(
            serde_json::json!({"agent_id": s.agent, "welcome_message": "Talk to us",
                                   "allowed_domains": [origin]}),
        )
        .await;
    let html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Shop</title><link rel=icon href='data:,'></head>
         <body><h1>A business's own page</h1>
         <script src=\"{}/widget.js\" data-agent=\"{}\" data-key=\"{key}\"></script></body></html>",
        s.base, s.agent
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 52053))
        .await
        .expect("page port");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mic = microphone_wav(dir.path(), QUESTION, LEAD_MS, 1000);
    let browser = Chromium::start(ChromiumOptions {
        port: 52052,
        profile_dir: dir.path(),
        microphone: Some(&mic),
    })
    .await;
    let page = browser.page().await;
    page.navigate(&format!("{origin}/")).await;
    page.wait_for(
        "window.SwitchboardWidget && SwitchboardWidget.state === 'ready'",
        Duration::from_secs(30),
        "the widget",
    )
    .await;
    page.eval("SwitchboardWidget.button.click(); true")
        .await
        .unwrap();
    page.wait_for(
        "SwitchboardWidget.state === 'live' || SwitchboardWidget.error",
        Duration::from_secs(30),
        "the widget's call connects",
    )
    .await;
    assert_eq!(
        page.eval("SwitchboardWidget.error").await.unwrap(),
        serde_json::Value::Null
    );
    // The question is asked and answered: the session holds both.
    let from = format!("web:widget:{origin}");
    let messages: Vec<(String, String)> = common::node::poll(Duration::from_secs(90), || {
        let from = from.clone();
        let pool = s.db.pool.clone();
        async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "select m.role, m.content from messages m join call_logs c on c.session_id = m.session_id
                  where c.direction = 'web' and c.from_number = $1 order by m.created_at",
            )
            .bind(&from)
            .fetch_all(&pool)
            .await
            .ok()?;
            rows.iter()
                .any(|(r, c)| r == "user" && c.to_lowercase().contains("saturday"))
                .then_some(rows)
        }
    })
    .await
    .expect("the widget's call took the question");
    page.eval("SwitchboardWidget.hangup(); true").await.unwrap();
    let ended: Option<String> = common::node::poll(Duration::from_secs(20), || {
        let from = from.clone();
        let pool = s.db.pool.clone();
        async move {
            sqlx::query_scalar(
                "select status from call_logs where from_number = $1 and ended_at is not null",
            )
            .bind(&from)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
        }
    })
    .await;
    assert!(
        ended.is_some(),
        "the widget's hang-up (DELETE on the Location) ends the call: {messages:?}"
    );
    let errors: Vec<String> = page
        .take_errors()
        .iter()
        .map(|e| format!("{}: {}", e.source, e.text))
        .collect();
    assert!(
        errors.is_empty(),
        "the widget's page logged errors: {errors:#?}"
    );
    drop(page);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}

/// Both ends of the pair the browser selected, and of every pair it
/// formed, are on 127.0.0.0/8.
fn assert_loopback(call: &BrowserCall) {
    let loopback = |a: &str| {
        a.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    };
    assert!(
        loopback(&call.pair.0) && loopback(&call.pair.1),
        "selected ICE pair {:?}",
        call.pair
    );
    assert!(!call.pairs.is_empty(), "no candidate pairs in the stats");
    for (local, remote) in &call.pairs {
        assert!(
            loopback(local) && loopback(remote),
            "candidate pair {local} -> {remote} is not on loopback: {:?}",
            call.pairs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_caller_asks_for_a_person_and_presses_a_key() {
    if !in_loopback_namespace(
        "console_browser_call::a_browser_caller_asks_for_a_person_and_presses_a_key",
    )
    .await
    {
        return;
    }
    common::node::init_logs();
    let env = webrtc_env(53800, 53999);
    let s = console_support::start(53040, 53850, &env_refs(&env)).await;
    // The agent transfers phone calls to the front desk.
    sqlx::query("update agents set transfer_to = '+15555550199' where id = $1")
        .bind(s.agent)
        .execute(&s.db.pool)
        .await
        .expect("transfer_to");
    let dir = tempfile::tempdir().expect("tmp");
    let mic = microphone_wav(
        dir.path(),
        "Can I speak to a real person, please?",
        LEAD_MS,
        1000,
    );
    let browser = Chromium::start(ChromiumOptions {
        port: 53042,
        profile_dir: dir.path(),
        microphone: Some(&mic),
    })
    .await;
    let page = browser.page().await;
    open_talk_page(&page, &s.base, s.agent).await;

    // The request for a person gets its answer ("…cannot be transferred to
    // a person…"); once it has played, the page presses 1 on the call.
    let refused = || async {
        sqlx::query_scalar::<_, String>(
            "select content from messages where role = 'assistant' and content like '%cannot be transferred%'",
        )
        .fetch_optional(&s.db.pool)
        .await
        .ok()
        .flatten()
    };
    // The session's messages once the digit and an answer after it are in.
    let answered_digit = || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select m.role, m.content from messages m join call_logs c on c.session_id = m.session_id \
              where c.direction = 'web' order by m.created_at",
        )
        .fetch_all(&s.db.pool)
        .await
        .ok()?;
        let digit = rows
            .iter()
            .position(|(r, c)| r == "user" && c == "The caller pressed 1.")?;
        rows[digit..]
            .iter()
            .any(|(r, _)| r == "assistant")
            .then_some(rows)
    };
    let call = talk_then(&page, "person", Duration::from_secs(90), Duration::from_secs(2), || async {
        common::node::poll(Duration::from_secs(30), refused)
            .await
            .expect("the agent said the call cannot be transferred");
        // Digits go from the browser to the agent, not to the browser.
        let live: uuid::Uuid = sqlx::query_scalar("select id from call_logs where direction = 'web'")
            .fetch_one(&s.db.pool)
            .await
            .expect("the web call");
        let r = reqwest::Client::new()
            .post(format!("{}/v1/workspaces/{}/calls/live/{live}/dtmf", s.base, s.workspace))
            .bearer_auth(&s.owner_token)
            .json(&serde_json::json!({"digits": "1"}))
            .send()
            .await
            .expect("POST dtmf");
        assert_eq!(r.status(), 409, "digits to a browser");
        let can = page
            .eval("SB.talk.call.pc.getSenders().find(x => x.track && x.track.kind === 'audio').dtmf.canInsertDTMF")
            .await
            .expect("RTCDTMFSender");
        assert_eq!(can, serde_json::Value::Bool(true), "telephone-event was not negotiated");
        page.eval("SB.talk.call.pc.getSenders().find(x => x.track && x.track.kind === 'audio').dtmf.insertDTMF('1', 200); true")
            .await
            .expect("insertDTMF");
        page.wait_for(
            "(() => { const l = [...document.querySelectorAll('#talk-transcript .line')];
                      const d = l.findIndex(e => e.dataset.role === 'user' && e.lastChild.textContent.includes('pressed 1'));
                      return d >= 0 && l.slice(d + 1).some(e => e.dataset.role === 'assistant'); })()",
            Duration::from_secs(30),
            "the digit and the agent's answer to it in the live transcript",
        )
        .await;
        // …and that answer has played (its message is written then).
        common::node::poll(Duration::from_secs(30), answered_digit)
            .await
            .expect("the agent's answer to the digit played");
    })
    .await;
    assert_loopback(&call);
    let errors: Vec<String> = page
        .take_errors()
        .iter()
        .map(|e| format!("{}: {}", e.source, e.text))
        .collect();
    assert!(
        errors.is_empty(),
        "the talk page logged errors: {errors:#?}"
    );

    // The records: not transferred, the refusal said, the digit taken.
    let (status, hangup_by, session): (String, Option<String>, Option<uuid::Uuid>) =
        common::node::poll(Duration::from_secs(20), || async {
            sqlx::query_as(
                "select status, hangup_by, session_id from call_logs where direction = 'web' and ended_at is not null",
            )
            .fetch_optional(&s.db.pool)
            .await
            .ok()
            .flatten()
        })
        .await
        .expect("a finished web call");
    assert_eq!(
        (status.as_str(), hangup_by.as_deref()),
        ("completed", Some("caller"))
    );
    let session = session.expect("session");
    let messages = common::node::poll(Duration::from_secs(20), answered_digit)
        .await
        .expect("the digit and the agent's answer to it among the session's messages");
    let refusal = messages
        .iter()
        .position(|(r, c)| r == "assistant" && c.contains("cannot be transferred"))
        .unwrap_or_else(|| {
            panic!("the agent did not say the call cannot be transferred: {messages:?}")
        });
    let digit = messages
        .iter()
        .position(|(r, c)| r == "user" && c == "The caller pressed 1.")
        .expect("digit");
    assert!(
        refusal < digit,
        "the call went on after the refusal: {messages:?}"
    );
    let session_status: String =
        sqlx::query_scalar("select status from agent_sessions where id = $1")
            .bind(session)
            .fetch_one(&s.db.pool)
            .await
            .expect("session status");
    assert_eq!(session_status, "completed", "not escalated");
    drop(page);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}
