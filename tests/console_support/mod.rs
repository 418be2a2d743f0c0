//! What the console tests share: a node with the demo workspace, known
//! passwords for a MANAGER (the demo OWNER) and a VIEWER, the API over
//! HTTP, headless Chromium (`cdp`) and a browser call (`browser_call`).

#![allow(dead_code)]

pub mod browser_call;
pub mod cdp;
pub mod netns;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

pub const PASSWORD: &str = "console-test-password";
pub const OWNER_EMAIL: &str = "demo@example.com";
pub const VIEWER_EMAIL: &str = "viewer@example.com";

pub struct Setup {
    pub db: TestDb,
    pub node: switchboard::serve::Services,
    pub base: String,
    pub workspace: Uuid,
    pub agent: Uuid,
    pub owner_token: String,
}

/// Ports: `base` SIP, `base + 1` API; RTP from `rtp_base` (200 ports).
pub async fn start(sip_port: u16, rtp_base: u16, extra: &[(&str, &str)]) -> Setup {
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let mut env = vec![
        ("SWITCHBOARD_SIP__LISTEN", format!("127.0.0.1:{sip_port}")),
        (
            "SWITCHBOARD_API__LISTEN",
            format!("127.0.0.1:{}", sip_port + 1),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = crate::common::node::start_node(&db.url, &db.pool, rtp_base, &env).await;
    let base = format!("http://{}", node.api_addr);
    let (agent, workspace) = crate::common::node::demo_agent(&db.pool).await;
    let phc = switchboard::api::auth::hash_password(PASSWORD).expect("hash");
    sqlx::query("update auth.users set encrypted_password = $1 where email = $2")
        .bind(&phc)
        .bind(OWNER_EMAIL)
        .execute(&db.pool)
        .await
        .expect("owner password");
    let viewer: Uuid = sqlx::query_scalar(
        "insert into auth.users (email, encrypted_password) values ($1, $2) returning id",
    )
    .bind(VIEWER_EMAIL)
    .bind(&phc)
    .fetch_one(&db.pool)
    .await
    .expect("viewer");
    sqlx::query("insert into profiles (id, full_name) values ($1, 'Viewer')")
        .bind(viewer)
        .execute(&db.pool)
        .await
        .expect("profile");
    sqlx::query("insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'VIEWER')")
        .bind(viewer)
        .bind(workspace)
        .execute(&db.pool)
        .await
        .expect("viewer role");
    let owner_token = login(&base, OWNER_EMAIL).await;
    Setup {
        db,
        node,
        base,
        workspace,
        agent,
        owner_token,
    }
}

pub async fn login(base: &str, email: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/v1/auth/token"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("token");
    r["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

impl Setup {
    /// An API call as the owner; (status, JSON body or null).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.owner_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("api");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub fn ws(&self, rest: &str) -> String {
        format!("/v1/workspaces/{}/{rest}", self.workspace)
    }

    /// A web widget for the demo agent; returns (widget id, public key).
    pub async fn widget(&self, body: Value) -> (Uuid, String) {
        let (status, w) = self
            .api(reqwest::Method::POST, &self.ws("web-widgets"), Some(body))
            .await;
        assert_eq!(status, 201, "{w}");
        assert!(
            w.get("public_key").is_none(),
            "the generic view hides the key: {w}"
        );
        let id: Uuid = w["id"].as_str().unwrap().parse().unwrap();
        let (status, k) = self
            .api(
                reqwest::Method::GET,
                &self.ws(&format!("web-widgets/{id}/public-key")),
                None,
            )
            .await;
        assert_eq!(status, 200, "{k}");
        (id, k["public_key"].as_str().unwrap().to_string())
    }
}

/// Where screenshots go: the test's folder, and also
/// `SWITCHBOARD_SCREENSHOTS` when set (to refresh docs/console/).
pub fn keep_screenshot(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.png"));
    if let Some(out) = std::env::var_os("SWITCHBOARD_SCREENSHOTS") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).ok();
        return out.join(format!("{name}.png"));
    }
    path
}
