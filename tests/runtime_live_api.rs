//! The live-call registry through the API while a real call is up: `GET
//! /v1/workspaces/{id}/calls/live` lists it (with an API key, over HTTP),
//! `DELETE …/calls/live/{call_id}` ends it — the caller gets the BYE — and
//! afterwards the list is empty and the call's records are finished.

use crate::common;

use std::time::Duration;

use common::node::{demo_agent, poll, start_node};
use common::sip_caller::SipCaller;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_call_is_listed_and_ended_through_the_api() {
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let (_, workspace) = demo_agent(&db.pool).await;
    let (key, prefix, hash) = switchboard::api::auth::generate_api_key();
    sqlx::query(
        "insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, 'test', $2, $3, 'MANAGER')",
    )
    .bind(workspace)
    .bind(&prefix)
    .bind(&hash)
    .execute(&db.pool)
    .await
    .expect("api key");
    let node = start_node(&db.url, &db.pool, 46400, &[]).await;
    let api = format!(
        "http://{}/v1/workspaces/{workspace}/calls/live",
        node.api_addr
    );
    let http = reqwest::Client::new();
    let list = || async {
        let r = http
            .get(&api)
            .header("x-api-key", &key)
            .send()
            .await
            .expect("GET live");
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.expect("json")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(list().await.is_empty(), "no call yet");

    let caller = SipCaller::dial(node.sip.local_addr(), "+15555550100").await;
    caller
        .wait_agent_voice(caller.answered_at, Duration::from_secs(10))
        .await
        .expect("the greeting started");
    let items = list().await;
    assert_eq!(items.len(), 1, "{items:?}");
    let call_log_id: Uuid = sqlx::query_scalar("select id from call_logs")
        .fetch_one(&db.pool)
        .await
        .expect("call_logs");
    assert_eq!(items[0]["call_log_id"], call_log_id.to_string());
    assert_eq!(items[0]["to"], "+15555550100");
    assert_eq!(items[0]["from"], "+15550007777");

    let r = http
        .delete(format!("{api}/{call_log_id}"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("DELETE live");
    assert_eq!(r.status(), 202);
    let bye = caller
        .wait_request("BYE", Duration::from_secs(5))
        .await
        .expect("the caller got no BYE within 5 s of the DELETE");
    println!(
        "BYE {} ms after the call was answered",
        bye.at
            .saturating_duration_since(caller.answered_at)
            .as_millis()
    );
    let empty = poll(Duration::from_secs(5), || async {
        list().await.is_empty().then_some(())
    })
    .await;
    assert!(empty.is_some(), "the call is still listed after it ended");
    let r = http
        .delete(format!("{api}/{call_log_id}"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("DELETE again");
    assert_eq!(r.status(), 404, "an ended call is no longer live");

    let (status, ended, session_status): (
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
    ) = poll(Duration::from_secs(10), || async {
        sqlx::query_as(
            "select c.status, c.ended_at, s.status from call_logs c
                 join agent_sessions s on s.id = c.session_id
                 where c.ended_at is not null and s.ended_at is not null",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("records")
    })
    .await
    .expect("the call's records were finished");
    assert_eq!(status, "completed");
    assert!(ended.is_some());
    assert_eq!(session_status.as_deref(), Some("completed"));
    node.stop(Duration::from_secs(1)).await;
}
