//! The web console and the widget in a real browser: headless Chromium
//! (Debian `chromium`) driven over the DevTools protocol against a whole
//! node. A MANAGER signs in, visits every page (screenshots kept), adds
//! knowledge with the progress bar, tests a question, hears the voice
//! preview, opens a call's latency chart and transcript; a VIEWER sees the
//! same pages without the controls that change things; no page logs a
//! JavaScript error. The widget script on a static page served from a
//! loopback origin draws its button with the widget's colour, position and
//! welcome message, and refuses an origin the widget does not allow. A real
//! phone call (baresip asking in a Piper voice) shows on the live calls
//! page with its transcript as it happens, and the page's "End call" ends it.
//!
//! Ports (this suite's range, 52000–52999): console test node SIP 52010,
//! API 52011, RTP 52100+, DevTools 52012; widget test node 52020/52021,
//! RTP 52300+, DevTools 52022, static pages 52023 and 52024; live-call
//! test node 52030/52031, RTP 52500+, DevTools 52032, baresip SIP 52033
//! and RTP 52700–52799.

use crate::common;
use crate::console_support;

use std::time::Duration;

use console_support::cdp::{Chromium, ChromiumOptions, Page};
use console_support::{keep_screenshot, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Goes to a console page and waits until it has drawn (`data-ready`).
async fn visit(page: &Page, base: &str, hash: &str) {
    page.eval(&format!("location.href = '{base}/console#/{hash}'"))
        .await
        .expect("navigate");
    page.wait_for(
        &format!(
            "location.hash === '#/{hash}' && document.getElementById('main').dataset.ready === 'true'"
        ),
        WAIT,
        &format!("page {hash} drawn"),
    )
    .await;
}

async fn sign_in(page: &Page, base: &str, email: &str) {
    page.navigate(&format!("{base}/console#/login")).await;
    page.wait_for("!!document.getElementById('email')", WAIT, "login form")
        .await;
    page.eval(&format!(
        "document.getElementById('email').value = '{email}';
         document.getElementById('password').value = '{PASSWORD}';
         document.getElementById('login-submit').click(); true"
    ))
    .await
    .expect("submit");
    page.wait_for(
        "document.getElementById('main').dataset.page === 'agents' && document.getElementById('main').dataset.ready === 'true'",
        WAIT,
        "signed in, on the agents page",
    )
    .await;
}

fn assert_no_errors(page: &Page, what: &str) {
    let errors: Vec<String> = page
        .take_errors()
        .iter()
        .map(|e| format!("{}: {}", e.source, e.text))
        .collect();
    assert!(errors.is_empty(), "{what} logged errors: {errors:#?}");
}

/// A finished call with a conversation and per-turn figures, as the
/// runtime writes them, for the history pages.
async fn finished_call(s: &console_support::Setup) -> uuid::Uuid {
    let session: uuid::Uuid = sqlx::query_scalar(
        "insert into agent_sessions (workspace_id, agent_id, channel, status, caller, started_at, ended_at)
         values ($1, $2, 'phone', 'completed', '+15550001111', now() - interval '2 minutes', now() - interval '1 minute')
         returning id",
    )
    .bind(s.workspace)
    .bind(s.agent)
    .fetch_one(&s.db.pool)
    .await
    .expect("session");
    for (i, (role, text)) in [
        (
            "assistant",
            "Hello, thanks for calling. How can I help you today?",
        ),
        ("user", "What time do you open on Saturday?"),
        (
            "assistant",
            "On Saturday we open at 9 am and close at 1 pm.",
        ),
    ]
    .iter()
    .enumerate()
    {
        sqlx::query(
            "insert into messages (workspace_id, session_id, role, content, created_at)
             values ($1, $2, $3, $4, now() - interval '2 minutes' + $5 * interval '5 seconds')",
        )
        .bind(s.workspace)
        .bind(session)
        .bind(role)
        .bind(text)
        .bind(i as i32)
        .execute(&s.db.pool)
        .await
        .expect("message");
    }
    let latency = json!([
        {"turn": 1, "voice_to_voice_ms": 420, "stt_ms": 150, "retrieval_ms": 12, "llm_first_token_ms": 3, "tts_first_audio_ms": 90},
        {"turn": 2, "voice_to_voice_ms": 310, "stt_ms": 120, "retrieval_ms": 9, "llm_first_token_ms": 2, "tts_first_audio_ms": 0},
    ]);
    sqlx::query_scalar(
        "insert into call_logs (workspace_id, agent_id, session_id, direction, from_number, to_number, status,
                                hangup_by, codec, started_at, answered_at, ended_at, duration_ms, latency)
         values ($1, $2, $3, 'inbound', '+15550001111', '+15555550100', 'completed', 'caller', 'PCMU',
                 now() - interval '2 minutes', now() - interval '2 minutes', now() - interval '1 minute', 60000, $4)
         returning id",
    )
    .bind(s.workspace)
    .bind(s.agent)
    .bind(session)
    .bind(latency)
    .fetch_one(&s.db.pool)
    .await
    .expect("call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_draws_without_errors_for_a_manager_and_a_viewer() {
    common::node::init_logs();
    let s = console_support::start(52010, 52100, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let call = finished_call(&s).await;
    s.widget(json!({"agent_id": s.agent, "primary_color": "#0f766e",
                     "welcome_message": "Questions? Call us from here.",
                     "allowed_domains": ["https://shop.example.com"]}))
        .await;
    let browser = Chromium::start(ChromiumOptions {
        port: 52012,
        profile_dir: dir.path(),
        microphone: None,
    })
    .await;
    let page = browser.page().await;
    let base = s.base.clone();

    // The manager: every page, with the controls that change things.
    sign_in(&page, &base, console_support::OWNER_EMAIL).await;
    let agent = s.agent;
    let pages = [
        ("agents", "agents".to_string()),
        ("agent", format!("agents/{agent}")),
        ("personas", "personas".to_string()),
        ("knowledge", "knowledge".to_string()),
        ("telephony", "telephony".to_string()),
        ("live-calls", "live".to_string()),
        ("call-history", "calls".to_string()),
        ("call", format!("calls/{call}")),
        ("usage", "usage".to_string()),
        ("talk", format!("talk/{agent}")),
    ];
    for (name, hash) in &pages {
        visit(&page, &base, hash).await;
        page.screenshot(&keep_screenshot(dir.path(), name)).await;
        assert_no_errors(&page, name);
    }

    // The agent page: the editor, the voice preview, the widget's key.
    visit(&page, &base, &format!("agents/{agent}")).await;
    let controls = page
        .eval("[!!document.querySelector('[data-editor=agents] button'), document.getElementById('widget-key')?.textContent || '']")
        .await
        .unwrap();
    assert_eq!(controls[0], true, "a manager can save the agent");
    assert!(
        controls[1].as_str().unwrap().starts_with("pk_"),
        "{controls}"
    );
    page.eval("document.getElementById('preview-play').click(); true")
        .await
        .unwrap();
    page.wait_for(
        "(document.getElementById('preview-audio').src || '').startsWith('blob:') && document.querySelector('#preview-audio').nextSibling.textContent.startsWith('Ready')",
        Duration::from_secs(60),
        "the voice preview arrives",
    )
    .await;
    let duration = page
        .wait_for(
            "new Promise(r => { const a = document.getElementById('preview-audio'); if (a.duration > 0) r(a.duration); else { a.onloadedmetadata = () => r(a.duration); a.load(); } })",
            WAIT,
            "the preview's duration",
        )
        .await;
    assert!(duration.as_f64().unwrap() > 1.0, "preview of {duration} s");
    assert_no_errors(&page, "voice preview");

    // Knowledge: a TEXT source with the progress bar, then a question.
    visit(&page, &base, "knowledge").await;
    page.eval(
        "document.getElementById('k-name').value = 'Parking';
         document.getElementById('k-content').value = 'Parking is free for patients in the garage behind the clinic on Elm Street.';
         document.getElementById('k-submit').click(); true",
    )
    .await
    .unwrap();
    page.wait_for(
        "!document.getElementById('k-progress').hidden",
        WAIT,
        "the progress bar shows",
    )
    .await;
    page.wait_for(
        "document.getElementById('main').dataset.ready === 'true' && [...document.querySelectorAll('#sources td')].some(td => td.textContent === 'Parking')",
        Duration::from_secs(60),
        "the new source listed",
    )
    .await;
    let (_, sources) = s.api(Method::GET, &s.ws("knowledge?type=TEXT"), None).await;
    let parking = sources["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "Parking")
        .expect("source row")
        .clone();
    assert_eq!(parking["status"], "ready", "{parking}");
    page.eval(
        "document.getElementById('q-text').value = 'Where can I park my car?';
         document.getElementById('q-ask').click(); true",
    )
    .await
    .unwrap();
    let first = page
        .wait_for(
            "document.getElementById('q-results').textContent",
            WAIT,
            "retrieval results",
        )
        .await;
    assert!(
        first.as_str().unwrap().contains("Parking is free"),
        "first passage: {first}"
    );
    page.screenshot(&keep_screenshot(dir.path(), "knowledge-question"))
        .await;
    assert_no_errors(&page, "knowledge");

    // The call: its latency chart (one bar per turn) and transcript.
    visit(&page, &base, &format!("calls/{call}")).await;
    let facts = page
        .eval("[document.querySelectorAll('#latency-chart rect').length, [...document.querySelectorAll('#call-transcript .line')].map(l => l.dataset.role + ':' + l.lastChild.textContent)]")
        .await
        .unwrap();
    assert!(facts[0].as_u64().unwrap() >= 2, "{facts}");
    assert_eq!(
        facts[1][1], "user:What time do you open on Saturday?",
        "{facts}"
    );

    // /docs: the API reference, offline (Swagger UI from the binary).
    page.navigate(&format!("{base}/docs")).await;
    page.wait_for(
        "document.querySelectorAll('.opblock').length > 20",
        WAIT,
        "the API reference lists operations",
    )
    .await;
    let external = page
        .eval("performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin) && !n.startsWith('data:'))")
        .await
        .unwrap();
    assert_eq!(external, json!([]), "resources from elsewhere");
    page.screenshot(&keep_screenshot(dir.path(), "docs")).await;
    assert_no_errors(&page, "/docs");

    // The viewer: the same pages, no controls that change things.
    page.eval("sessionStorage.clear(); true").await.unwrap();
    sign_in(&page, &base, console_support::VIEWER_EMAIL).await;
    assert_eq!(
        page.eval("document.getElementById('role').textContent")
            .await
            .unwrap(),
        "VIEWER"
    );
    for (name, hash) in &pages {
        visit(&page, &base, hash).await;
        let writable = page
            .eval("[...document.querySelectorAll('main button')].map(b => b.textContent).filter(t => ['Save', 'Create', 'Delete', 'Add source', 'Save widget', 'Rotate key', 'End call'].includes(t))")
            .await
            .unwrap();
        assert_eq!(
            writable,
            json!([]),
            "{name}: a viewer is offered {writable}"
        );
        assert_no_errors(&page, &format!("{name} (viewer)"));
    }
    visit(&page, &base, &format!("agents/{agent}")).await;
    let key_shown = page
        .eval("!!document.getElementById('widget-key')")
        .await
        .unwrap();
    assert_eq!(key_shown, false, "the widget key is for managers");
    page.screenshot(&keep_screenshot(dir.path(), "agent-viewer"))
        .await;
    // The API agrees: a viewer cannot read or rotate the key.
    let viewer = console_support::login(&base, console_support::VIEWER_EMAIL).await;
    let (_, widgets) = s.api(Method::GET, &s.ws("web-widgets"), None).await;
    let widget = widgets["items"][0]["id"].as_str().unwrap().to_string();
    for method in [Method::GET, Method::POST] {
        let r = reqwest::Client::new()
            .request(
                method.clone(),
                format!(
                    "{base}{}",
                    s.ws(&format!("web-widgets/{widget}/public-key"))
                ),
            )
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{method} public-key as a viewer");
    }
    drop(page);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}

/// A static page on its own loopback origin that embeds the widget.
async fn serve_page(port: u16, html: String) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("static page port");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_draws_its_button_on_an_allowed_page_only() {
    common::node::init_logs();
    let s = console_support::start(52020, 52300, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let allowed = "http://127.0.0.1:52023";
    let (widget, key) = s
        .widget(
            json!({"agent_id": s.agent, "primary_color": "#ff5500", "position": "bottom-left",
                       "welcome_message": "Hi! Ask us anything.", "allowed_domains": [allowed]}),
        )
        .await;
    let html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Shop</title><link rel=icon href='data:,'></head>
         <body><h1>A business's own page</h1>
         <script src=\"{}/widget.js\" data-agent=\"{}\" data-key=\"{key}\"></script></body></html>",
        s.base, s.agent
    );
    let _a = serve_page(52023, html.clone()).await;
    let _b = serve_page(52024, html).await;

    // The public endpoint: only to the allowed origin, only with the key.
    let client = reqwest::Client::new();
    let get = |origin: Option<&'static str>, key: String| {
        let mut req = client.get(format!("{}/v1/widgets/{key}", s.base));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send()
    };
    let r = get(Some("http://127.0.0.1:52023"), key.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://127.0.0.1:52023"
    );
    let cfg: Value = r.json().await.unwrap();
    assert_eq!(cfg["primary_color"], "#ff5500");
    assert_eq!(cfg["agent_id"], s.agent.to_string());
    assert_eq!(
        get(Some("http://127.0.0.1:52024"), key.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(get(None, key.clone()).await.unwrap().status(), 403);
    let wrong = format!("pk_{}", "0".repeat(64));
    assert_eq!(
        get(Some("http://127.0.0.1:52023"), wrong)
            .await
            .unwrap()
            .status(),
        401
    );

    let browser = Chromium::start(ChromiumOptions {
        port: 52022,
        profile_dir: dir.path(),
        microphone: None,
    })
    .await;
    let page = browser.page().await;
    page.navigate(&format!("{allowed}/")).await;
    page.wait_for(
        "window.SwitchboardWidget && window.SwitchboardWidget.state === 'ready'",
        WAIT,
        "the widget is ready",
    )
    .await;
    let drawn = page
        .eval(
            "(() => { const root = document.querySelector('switchboard-widget').shadowRoot;
                      const b = root.querySelector('button'), box = root.querySelector('.box');
                      const r = b.getBoundingClientRect();
                      return {colour: getComputedStyle(b).backgroundColor, left: r.left, bottom: innerHeight - r.bottom,
                              welcome: root.querySelector('.welcome').textContent, label: b.getAttribute('aria-label'),
                              position: getComputedStyle(box).position}; })()",
        )
        .await
        .unwrap();
    assert_eq!(drawn["colour"], "rgb(255, 85, 0)", "{drawn}");
    assert_eq!(drawn["welcome"], "Hi! Ask us anything.");
    assert_eq!(drawn["position"], "fixed");
    assert!(
        drawn["left"].as_f64().unwrap() < 40.0,
        "bottom-left: {drawn}"
    );
    assert!(
        drawn["bottom"].as_f64().unwrap() < 40.0,
        "bottom-left: {drawn}"
    );
    page.screenshot(&keep_screenshot(dir.path(), "widget"))
        .await;
    assert_no_errors(&page, "the widget's page");

    // Another origin gets no widget.
    let other = browser.page().await;
    other.navigate("http://127.0.0.1:52024/").await;
    other
        .wait_for(
            "window.SwitchboardWidget && window.SwitchboardWidget.state === 'failed'",
            WAIT,
            "the widget refuses a page it does not allow",
        )
        .await;
    assert_eq!(
        other
            .eval("document.querySelector('switchboard-widget') === null")
            .await
            .unwrap(),
        true
    );

    // Rotation: the page's old key stops working at once.
    let (status, rotated) = s
        .api(
            Method::POST,
            &s.ws(&format!("web-widgets/{widget}/public-key")),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["public_key"], key);
    assert_eq!(
        get(Some("http://127.0.0.1:52023"), key.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    page.navigate(&format!("{allowed}/")).await;
    page.wait_for(
        "window.SwitchboardWidget && window.SwitchboardWidget.state === 'failed'",
        WAIT,
        "the old key no longer draws a widget",
    )
    .await;
    drop(page);
    drop(other);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_calls_page_follows_a_phone_call_and_ends_it() {
    common::node::init_logs();
    let s = console_support::start(52030, 52500, &[]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let browser = Chromium::start(ChromiumOptions {
        port: 52032,
        profile_dir: dir.path(),
        microphone: None,
    })
    .await;
    let page = browser.page().await;
    sign_in(&page, &s.base, console_support::OWNER_EMAIL).await;
    visit(&page, &s.base, "live").await;

    // The caller waits out the greeting, asks, then stays on the line
    // (45 s of silence) until the page hangs up.
    let question = common::speech_wav(
        dir.path(),
        "question",
        "What time do you open on Saturday?",
        6000,
        45_000,
    );
    let uri = format!("sip:+15555550100@127.0.0.1:{}", 52030);
    let caller = tokio::task::spawn_blocking({
        let dir = dir.path().join("baresip");
        move || common::BaresipCall::dial_rtp(&dir, 52033, (52700, 52799), &uri, &question, 70)
    });
    page.wait_for(
        "document.getElementById('live-list').dataset.count === '1'",
        WAIT,
        "the call is listed",
    )
    .await;
    page.eval("document.querySelector('#live-list tr.clickable').click(); true")
        .await
        .unwrap();
    // The transcript so far, until it holds the question and its answer.
    let read = "[...document.querySelectorAll('#live-transcript .line')].map(e => e.dataset.role + ':' + e.lastChild.textContent)";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines = page.eval(read).await.unwrap();
        let has = |role: &str| {
            lines.as_array().unwrap().iter().any(|l| {
                let l = l.as_str().unwrap().to_lowercase();
                l.starts_with(role) && l.contains("saturday")
            })
        };
        if has("user:") && has("assistant:") {
            break lines;
        }
        if std::time::Instant::now() > deadline {
            page.eval("document.getElementById('end-call').click(); true")
                .await
                .ok();
            let log = caller.await.map(|c| c.log()).unwrap_or_default();
            panic!("the live transcript shows no question and answer within 60 s: {lines}\nbaresip:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        lines[0].as_str().unwrap().starts_with("assistant:"),
        "the greeting comes first: {lines}"
    );
    page.screenshot(&keep_screenshot(dir.path(), "live-call"))
        .await;
    page.eval("document.getElementById('end-call').click(); true")
        .await
        .unwrap();
    page.wait_for(
        "document.getElementById('live-state').textContent === 'The call has ended.'",
        WAIT,
        "the transcript stream ends with the call",
    )
    .await;
    let (reason, by): (Option<String>, Option<String>) = common::node::poll(WAIT, || async {
        sqlx::query_as(
            "select hangup_reason, hangup_by from call_logs where status <> 'in_progress' and ended_at is not null",
        )
        .fetch_optional(&s.db.pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .expect("the call ended in call_logs");
    assert_eq!(
        (by.as_deref(), reason.as_deref()),
        (Some("agent"), Some("ended by API"))
    );
    let log = caller.await.expect("baresip ran").log();
    assert!(log.contains("Call established"), "{log}");
    assert_no_errors(&page, "live calls");
    drop(page);
    drop(browser);
    s.node.stop(Duration::from_secs(2)).await;
}
