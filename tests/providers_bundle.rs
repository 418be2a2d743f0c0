//! The provider bundle: offline defaults from the configuration, and an
//! agent's networked LLM chosen from its model with the workspace's
//! credentials read from `workspace_llm_config` and decrypted in memory.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use switchboard::agent_runtime::llm::{ChatMessage, LlmDelta, LlmRequest};
use switchboard::agent_runtime::profile::AgentProfile;
use switchboard::agent_runtime::providers::Providers;
use switchboard::config::Config;
use switchboard::db::seed::{seed_demo, DEMO_AGENT};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

async fn mock() -> (String, Arc<Mutex<Vec<String>>>) {
    let auth = Arc::new(Mutex::new(Vec::new()));
    let seen = auth.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let a = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                seen.lock().unwrap().push(a);
                let body = "data: {\"choices\":[{\"delta\":{\"content\":\"From the network.\"}}]}\n\ndata: [DONE]\n\n";
                Response::builder().header("content-type", "text/event-stream").body(Body::from(body)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_llm_comes_from_the_workspace_credentials() {
    let db = TestDb::new().await;
    seed_demo(&db.pool).await.unwrap();
    let (ws, agent): (Uuid, Uuid) =
        sqlx::query_as("select workspace_id, id from agents where name = $1")
            .bind(DEMO_AGENT)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    // The mock model listens on loopback: the operator allows that address.
    let allow = [(
        "SWITCHBOARD_OUTBOUND__ALLOW".to_string(),
        r#"["127.0.0.1/32"]"#.to_string(),
    )];
    let config = Config::load_from(None, &allow).unwrap();
    let base = Providers::from_config(&config).expect("offline defaults (whisper model present)");
    assert_eq!(base.llm.name(), "offline");
    assert_eq!(base.tts.name(), "piper");
    assert_eq!(base.espeak.name(), "espeak-ng");

    sqlx::query("update agents set llm_model_id = (select id from llm_models where model_id = 'gpt-4o-mini') where id = $1")
        .bind(agent)
        .execute(&db.pool)
        .await
        .unwrap();
    let profile = AgentProfile::load(&db.pool, agent).await.unwrap();
    assert_eq!(profile.llm_provider, "openai");

    // No credentials: the remote provider is not used, the call still works offline.
    let key = config.encryption_key_bytes();
    let creds = Providers::load_credentials(&db.pool, ws, &key)
        .await
        .unwrap();
    assert!(creds.is_empty());
    assert_eq!(
        base.for_agent(&config, &profile, &creds).llm.name(),
        "offline"
    );

    let (url, auth) = mock().await;
    let sealed = switchboard::api::secrets::encrypt(&key, "sk-live-123");
    sqlx::query("insert into workspace_llm_config (workspace_id, provider, base_url, api_key) values ($1, 'openai', $2, $3)")
        .bind(ws)
        .bind(&url)
        .bind(&sealed)
        .execute(&db.pool)
        .await
        .unwrap();
    let creds = Providers::load_credentials(&db.pool, ws, &key)
        .await
        .unwrap();
    assert_eq!(creds.len(), 1);
    assert!(
        !format!("{creds:?}").contains("sk-live-123"),
        "keys are redacted in Debug"
    );
    let p = base.for_agent(&config, &profile, &creds);
    assert_eq!(p.llm.name(), "gpt-4o-mini");
    let req = LlmRequest {
        system: "sys".into(),
        messages: vec![ChatMessage::user("hi")],
        passages: vec![],
        temperature: 0.2,
        max_tokens: 50,
        fallback_message: "sorry".into(),
    };
    let deltas: Vec<_> = p.llm.stream(req).await.unwrap().collect().await;
    assert!(matches!(&deltas[0], Ok(LlmDelta::Text(t)) if t == "From the network."));
    assert_eq!(auth.lock().unwrap().as_slice(), ["Bearer sk-live-123"]);

    // A key sealed with another key does not decrypt: skipped, offline again.
    let wrong = switchboard::api::secrets::encrypt(&[9u8; 32], "sk-other");
    sqlx::query("update workspace_llm_config set api_key = $2 where workspace_id = $1")
        .bind(ws)
        .bind(&wrong)
        .execute(&db.pool)
        .await
        .unwrap();
    let creds = Providers::load_credentials(&db.pool, ws, &key)
        .await
        .unwrap();
    assert!(creds.is_empty());
    assert_eq!(
        base.for_agent(&config, &profile, &creds).llm.name(),
        "offline"
    );
}
