//! The node under test as users run it: the release `switchboard serve`
//! binary in its own process, on a database this benchmark creates, with
//! the benchmark's knowledge bases set up through the HTTP API alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub struct Faq {
    pub id: String,
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Deserialize)]
pub struct Document {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
pub struct Question {
    pub said: String,
    /// The FAQ entry's id, or "fallback" for an off-topic question.
    pub expected: String,
}

/// One knowledge base of the benchmark (`kb/*.json`, `heldout/*.json`).
#[derive(Debug, Deserialize)]
pub struct KnowledgeBase {
    pub name: String,
    pub number: String,
    pub greeting: String,
    pub fallback: String,
    pub faqs: Vec<Faq>,
    pub documents: Vec<Document>,
    pub questions: Vec<Question>,
    #[serde(skip)]
    pub heldout: bool,
}

/// The benchmark's knowledge bases: `kb/` (tuned on) and `heldout/` (never
/// tuned on). `CONVERSATION_TUNING=1` leaves the held-out ones out, for the
/// runs that compare settings, so their results are never seen while tuning.
/// `CONVERSATION_BASES=hotel,vet` runs only the bases of those file names.
pub fn load_kbs(root: &Path) -> Vec<KnowledgeBase> {
    let tuning = std::env::var("CONVERSATION_TUNING").is_ok_and(|v| v == "1");
    let only: Option<Vec<String>> = std::env::var("CONVERSATION_BASES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|b| b.trim().to_string()).collect());
    let mut out = Vec::new();
    for (dir, heldout) in [("kb", false), ("heldout", true)] {
        if heldout && tuning {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| {
                only.as_ref().is_none_or(|only| {
                    p.file_stem()
                        .is_some_and(|stem| only.iter().any(|b| stem == b.as_str()))
                })
            })
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read kb");
            let mut kb: KnowledgeBase =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            kb.heldout = heldout;
            out.push(kb);
        }
    }
    out
}

/// A running `switchboard serve` process; killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub sip: std::net::SocketAddr,
    pub api: String,
    pub database_url: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SIGTERM first: the node finishes its records and exits cleanly.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release binary beside this benchmark's own (`target/release`).
fn switchboard_binary() -> PathBuf {
    // `CONVERSATION_NODE=target/release/switchboard` runs that node from a
    // caller built in another profile (`cargo bench --profile dev`).
    if let Some(bin) = std::env::var_os("CONVERSATION_NODE") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/release");
    let bin = release.join("switchboard");
    assert!(
        bin.is_file(),
        "{} missing: bench/conversation/run.sh builds it (cargo build --release)",
        bin.display()
    );
    bin
}

/// Creates a fresh database and starts the node on it (it migrates first).
pub async fn start(log: &Path) -> NodeProcess {
    let admin = switchboard::db::testing::admin_url();
    let name = format!("bench_conversation_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("PostgreSQL (scripts/setup starts it)");
    sqlx::query(&format!("drop database if exists {name}"))
        .execute(&pool)
        .await
        .expect("drop old bench database");
    sqlx::query(&format!("create database {name}"))
        .execute(&pool)
        .await
        .expect("create bench database");
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("admin url");
    let database_url = format!("{base}/{name}");

    let sip_port = super::common::node::free_port();
    let api_port = super::common::node::free_port();
    // Its own spill folder: records another node left in data/spool belong
    // to another database, and replaying them here (each refused) would hold
    // up this node's own records past the moment they are read.
    let spool = log.with_extension("spool");
    let _ = std::fs::remove_dir_all(&spool);
    let log_file = std::fs::File::create(log).expect("node log");
    let child = Command::new(switchboard_binary())
        .arg("serve")
        .env("DATABASE_URL", &database_url)
        .env("SWITCHBOARD_SIP__LISTEN", format!("127.0.0.1:{sip_port}"))
        .env("SWITCHBOARD_API__LISTEN", format!("127.0.0.1:{api_port}"))
        .env("SWITCHBOARD_RTP__PORT_MIN", "37600")
        .env("SWITCHBOARD_RTP__PORT_MAX", "37800")
        .env("SWITCHBOARD_RECORDS__SPOOL_DIR", &spool)
        .env(
            "RUST_LOG",
            std::env::var("CONVERSATION_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start switchboard serve");
    let node = NodeProcess {
        child,
        sip: format!("127.0.0.1:{sip_port}").parse().expect("addr"),
        api: format!("http://127.0.0.1:{api_port}"),
        database_url,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("{}/readyz", node.api))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not become ready in 60 s; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node
}

/// Drops the benchmark's database once the node has stopped.
pub async fn drop_database(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(pool) = sqlx::PgPool::connect(&switchboard::db::testing::admin_url()).await {
        let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&pool)
            .await;
    }
}

/// An admin's session with the node's HTTP API.
pub struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    pub async fn sign_up(base: &str) -> Admin {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .expect("client");
        let login = json!({"email": "bench@example.com", "password": "bench-password-123"});
        let mut admin = Admin {
            client,
            base: base.to_string(),
            token: String::new(),
        };
        admin.post("/v1/auth/signup", login.clone()).await;
        let token = admin.post("/v1/auth/token", login).await;
        admin.token = token["access_token"].as_str().expect("token").to_string();
        admin
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn id(v: &Value) -> String {
        v["id"].as_str().expect("id").to_string()
    }

    /// One workspace and trunk, then per knowledge base a persona, a live
    /// agent, its number, its FAQ and its documents (ingested by the API).
    pub async fn set_up(&self, kbs: &[KnowledgeBase]) {
        let ws = Self::id(
            &self
                .post("/v1/workspaces", json!({"name": "Conversation bench"}))
                .await,
        );
        let w = |p: &str| format!("/v1/workspaces/{ws}/{p}");
        let trunk = Self::id(
            &self
                .post(
                    &w("sip-trunks"),
                    json!({"name": "loopback", "inbound_cidrs": ["127.0.0.0/8"],
                           "codecs": ["PCMU", "PCMA"], "max_concurrent_calls": 10}),
                )
                .await,
        );
        for kb in kbs {
            let persona = Self::id(
                &self
                    .post(
                        &w("personas"),
                        json!({"name": kb.name, "greeting": kb.greeting,
                               "fallback_message": kb.fallback}),
                    )
                    .await,
            );
            let agent = Self::id(
                &self
                    .post(
                        &w("agents"),
                        json!({"name": kb.name, "status": "live", "persona_id": persona,
                               "stt_language": "en"}),
                    )
                    .await,
            );
            self.post(
                &w("phone-numbers"),
                json!({"e164": kb.number, "sip_trunk_id": trunk, "agent_id": agent}),
            )
            .await;
            let faqs: Vec<Value> = kb
                .faqs
                .iter()
                .map(|f| json!({"question": f.question, "answer": f.answer}))
                .collect();
            let r = self
                .post(
                    &w("knowledge"),
                    json!({"name": "FAQ", "type": "FAQ", "agent_id": agent, "faqs": faqs}),
                )
                .await;
            assert_eq!(r["status"], "ready", "FAQ ingestion: {r}");
            for d in &kb.documents {
                let r = self
                    .post(
                        &w("knowledge"),
                        json!({"name": d.name, "type": "TEXT", "agent_id": agent,
                               "content": d.content}),
                    )
                    .await;
                assert_eq!(r["status"], "ready", "document ingestion: {r}");
            }
        }
    }
}
