//! Test harness for the API: `app(state)` served on 127.0.0.1:0 over a fresh
//! PostgreSQL database, and a small reqwest client that records every
//! response body (the secrets test greps them all).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard::api::{ApiState, LiveCalls, LoginLimits};
use switchboard::config::Config;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub config: Arc<Config>,
    pub bodies: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

#[derive(Default)]
pub struct Options {
    pub limits: LoginLimits,
    pub live: Option<Arc<dyn LiveCalls>>,
    pub env: Vec<(String, String)>,
    /// A node's start-up stages, as `serve` hands them to the API.
    pub warm_up: Option<Arc<switchboard::readiness::WarmUp>>,
}

impl Api {
    pub async fn start() -> Api {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Api {
        let db = TestDb::new().await;
        let mut env = vec![("DATABASE_URL".to_string(), db.url.clone())];
        env.extend(opts.env);
        let config = Arc::new(Config::load_from(None, &env).expect("config"));
        let mut state = ApiState::with_login_limits(db.pool.clone(), config.clone(), opts.limits)
            .expect("state")
            .allow_private_urls();
        if let Some(live) = opts.live {
            state = state.with_live_calls(live);
        }
        if let Some(warm_up) = opts.warm_up {
            state = state.with_warm_up(warm_up);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(switchboard::api::serve(listener, state, async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap();
        Api {
            base,
            client,
            db,
            config,
            bodies: Arc::new(Mutex::new(Vec::new())),
            stop: Some(tx),
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        self.bodies.lock().unwrap().push(text.clone());
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        self.raw(method, path, auth, body).await
    }

    pub async fn get(&self, path: &str, auth: &str) -> Resp {
        self.call(Method::GET, path, Some(auth), None).await
    }
    pub async fn post(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(auth), Some(body)).await
    }
    pub async fn patch(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(auth), Some(body)).await
    }
    pub async fn delete(&self, path: &str, auth: &str) -> Resp {
        self.call(Method::DELETE, path, Some(auth), None).await
    }

    /// Signs up and signs in; returns (user id, access token).
    pub async fn user(&self, email: &str) -> (Uuid, String) {
        let r = self
            .call(
                Method::POST,
                "/v1/auth/signup",
                None,
                Some(json!({"email": email, "password": "password-123"})),
            )
            .await;
        assert_eq!(r.status, 201, "signup: {}", r.text);
        let id = Uuid::parse_str(r.body["id"].as_str().unwrap()).unwrap();
        let r = self
            .call(
                Method::POST,
                "/v1/auth/token",
                None,
                Some(json!({"email": email, "password": "password-123"})),
            )
            .await;
        assert_eq!(r.status, 200, "token: {}", r.text);
        (id, r.body["access_token"].as_str().unwrap().to_string())
    }

    /// Creates a workspace as `token`'s user; returns its id.
    pub async fn workspace(&self, token: &str, name: &str) -> Uuid {
        let r = self
            .post("/v1/workspaces", token, json!({"name": name}))
            .await;
        assert_eq!(r.status, 201, "workspace: {}", r.text);
        Uuid::parse_str(r.body["id"].as_str().unwrap()).unwrap()
    }

    /// Creates an API key with `role`; returns the full key.
    pub async fn key(&self, owner_token: &str, ws: Uuid, role: &str) -> String {
        let r = self
            .post(
                &format!("/v1/workspaces/{ws}/api-keys"),
                owner_token,
                json!({"name": format!("{role} key"), "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "api key: {}", r.text);
        r.body["key"].as_str().unwrap().to_string()
    }

    /// Creates a row through the API and returns its id.
    pub async fn create(&self, token: &str, ws: Uuid, path: &str, body: Value) -> Uuid {
        let r = self
            .post(&format!("/v1/workspaces/{ws}/{path}"), token, body)
            .await;
        assert_eq!(r.status, 201, "create {path}: {}", r.text);
        Uuid::parse_str(r.body["id"].as_str().unwrap()).unwrap()
    }

    /// A table's rows as JSON, read with the superuser pool (bypasses RLS).
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        sqlx::query_scalar::<_, Value>(&format!("select to_jsonb(t) from ({sql}) t"))
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!("select count(*) from ({sql}) t"))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
