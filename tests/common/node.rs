//! A whole Switchboard node (SIP, RTP, runtime, API) on free loopback ports
//! for runtime tests, with extra configuration from the environment list;
//! speech fixtures as samples; whisper on what the caller heard; polling.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard::config::Config;

/// A port free on both UDP and TCP, in 20000–25999: below the kernel's
/// ephemeral range (32768–60999), so no connection of a test running
/// beside this one (a database pool, a browser) is given it between this
/// check and the node's bind; the test RTP ranges (36000–56999) and
/// SIPp's ports (`sip_support`, 26000–31999) are elsewhere too. Each port
/// goes out once per test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..500 {
        let port = 20_000 + rand::random::<u16>() % 6_000;
        if handed.contains(&port) {
            continue;
        }
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            handed.push(port);
            return port;
        }
    }
    panic!("no free port");
}

/// The node's configuration: loopback SIP/API, RTP in `rtp_base..+200`,
/// `database_url`, records in memory only (no spill folder shared between
/// test nodes), the models on one thread ([`one_core_models`]), then
/// `extra` (`SWITCHBOARD_…` keys) on top.
pub fn node_config(database_url: &str, rtp_base: u16, extra: &[(&str, &str)]) -> Config {
    let sip_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        (
            "SWITCHBOARD_SIP__LISTEN".into(),
            format!("127.0.0.1:{sip_port}"),
        ),
        ("SWITCHBOARD_API__LISTEN".into(), "127.0.0.1:0".into()),
        ("SWITCHBOARD_RTP__PORT_MIN".into(), rtp_base.to_string()),
        (
            "SWITCHBOARD_RTP__PORT_MAX".into(),
            (rtp_base + 200).to_string(),
        ),
        ("DATABASE_URL".into(), database_url.to_string()),
        // Admission on load is for the product's machine, not a test
        // machine running suites side by side (tests/runtime_admission.rs
        // turns it on).
        ("SWITCHBOARD_ADMISSION__MAX_STT_WAIT_MS".into(), "0".into()),
        ("SWITCHBOARD_RECORDS__SPOOL_DIR".into(), String::new()),
    ];
    env.extend(one_core_models());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_from(None, &env).expect("config")
}

/// whisper and Piper on one thread each. The whisper-bound suites run two
/// at a time (`.config/nextest.toml`): single-threaded runs only share the
/// two cores, where two-thread runs spin at their barriers against each
/// other. A test that runs alone and judges time puts 2 back in `extra`.
pub fn one_core_models() -> [(String, String); 2] {
    [
        ("SWITCHBOARD_STT__THREADS".into(), "1".into()),
        ("SWITCHBOARD_TTS__PIPER_THREADS".into(), "1".into()),
    ]
}

pub async fn start_node(
    database_url: &str,
    pool: &sqlx::PgPool,
    rtp_base: u16,
    extra: &[(&str, &str)],
) -> switchboard::serve::Services {
    let config = node_config(database_url, rtp_base, extra);
    let node = switchboard::serve::start(Arc::new(config), pool.clone())
        .await
        .expect("node starts");
    warmed_up(&node).await;
    node
}

/// Waits until the node's start-up stages are done (what `/readyz`
/// reports), as a balancer would before sending it calls.
pub async fn warmed_up(node: &switchboard::serve::Services) {
    tokio::time::timeout(Duration::from_secs(120), node.warm_up.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the node did not finish warming up within 120 s: {:?}",
                node.warm_up.pending()
            )
        });
}

/// The caller's speech (Piper voice) as 8 kHz samples (no padding).
pub fn speech_8k(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let wav = super::speech_wav(dir, name, text, 0, 0);
    let (pcm, rate) = super::read_wav(&wav);
    assert_eq!(rate, 8000);
    pcm
}

/// What the caller's recognizer (whisper base, not the node's model) hears
/// in an 8 kHz WAV, lower-cased.
pub async fn transcribe_wav(path: &Path) -> String {
    super::caller_voice::hear_16k(&super::wav_16k(path)).await
}

/// Polls `f` every 100 ms until it returns `Some`, for up to `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, f: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The id of the (only) agent session once it has ended.
pub async fn ended_session(pool: &sqlx::PgPool) -> uuid::Uuid {
    poll(Duration::from_secs(10), || async {
        sqlx::query_scalar("select id from agent_sessions where ended_at is not null")
            .fetch_optional(pool)
            .await
            .expect("sessions")
    })
    .await
    .expect("the session ended within 10 s")
}

/// A session's messages in order: (role, content, interrupted).
pub async fn session_messages(
    pool: &sqlx::PgPool,
    session: uuid::Uuid,
) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "select role, content, interrupted from messages where session_id = $1 order by created_at",
    )
    .bind(session)
    .fetch_all(pool)
    .await
    .expect("messages")
}

/// A session's messages with when they were written (seconds after the
/// session started) and their stage timings, one line each: what a failed
/// conversation test prints so a slow turn can be told from a wrong one.
pub async fn session_timeline(pool: &sqlx::PgPool, session: uuid::Uuid) -> String {
    // role, content, interrupted, seconds in, stt, llm and tts ms
    type Row = (
        String,
        String,
        bool,
        f64,
        Option<i32>,
        Option<i32>,
        Option<i32>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select m.role, m.content, m.interrupted, \
                    extract(epoch from m.created_at - s.started_at)::float8, \
                    m.stt_ms, m.llm_first_token_ms, m.tts_first_byte_ms \
             from messages m join agent_sessions s on s.id = m.session_id \
             where m.session_id = $1 order by m.created_at",
    )
    .bind(session)
    .fetch_all(pool)
    .await
    .expect("messages");
    rows.iter()
        .map(|(role, content, cut, at, stt, llm, tts)| {
            format!(
                "{at:6.2}s {role}{}: {content:?} (stt {stt:?} ms, llm {llm:?} ms, tts {tts:?} ms)\n",
                if *cut { " (cut)" } else { "" }
            )
        })
        .collect()
}

/// A new API key of `workspace` with `role` (`OWNER`, `MANAGER`, `VIEWER`).
pub async fn api_key(pool: &sqlx::PgPool, workspace: uuid::Uuid, role: &str) -> String {
    let (key, prefix, hash) = switchboard::api::auth::generate_api_key();
    sqlx::query(
        "insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, $2, $3, $4, $5::app_role)",
    )
    .bind(workspace)
    .bind(format!("{role} key"))
    .bind(&prefix)
    .bind(&hash)
    .bind(role)
    .execute(pool)
    .await
    .expect("api key");
    key
}

/// The demo agent's id and workspace.
pub async fn demo_agent(pool: &sqlx::PgPool) -> (uuid::Uuid, uuid::Uuid) {
    sqlx::query_as("select id, workspace_id from agents where name = 'Reception' limit 1")
        .fetch_one(pool)
        .await
        .expect("demo agent")
}

/// Logs of the node to the test's output when `RUST_LOG` is set (debugging).
pub fn init_logs() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
