//! Cross-tenant attack suite: user B and an OWNER API key of workspace B try
//! to read, list, patch and delete every kind of workspace A's rows, by A's
//! path and by their own path with A's ids, and to create rows pointing into
//! A. Everything answers 404/403/405/422, and A's rows are unchanged,
//! checked in SQL. Then RLS alone (no handler filter) is shown to hold.

use crate::api_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use api_support::{Api, Options};
use serde_json::{json, Value};
use switchboard::api::{LiveCallView, LiveCalls};
use uuid::Uuid;

const TABLES: &[&str] = &[
    "personas",
    "agents",
    "sip_trunks",
    "phone_numbers",
    "channel_configs",
    "agent_web_widget_config",
    "workspace_llm_config",
    "leads",
    "knowledge_sources",
    "knowledge_chunks",
    "api_keys",
    "user_roles",
    "agent_sessions",
    "messages",
    "call_logs",
    "call_recordings",
    "usage_logs",
    "workspace_usage",
    "billing_invoices",
    "workspace_subscriptions",
];

async fn snapshot(api: &Api, ws: Uuid) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        let rows: Value = sqlx::query_scalar(&format!(
            "select coalesce(jsonb_agg(to_jsonb(t) order by t.id), '[]') from {t} t where t.workspace_id = $1"
        ))
        .bind(ws)
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
        out.insert(t.to_string(), rows);
    }
    let w: Value = sqlx::query_scalar("select to_jsonb(w) from workspaces w where id = $1")
        .bind(ws)
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    out.insert("workspaces".into(), w);
    out
}

/// A live-call registry with one call in each of two workspaces.
struct FakeLive {
    calls: Vec<(Uuid, LiveCallView)>,
    hung_up: Mutex<Vec<Uuid>>,
}

impl LiveCalls for FakeLive {
    fn list(&self, ws: Uuid) -> Vec<LiveCallView> {
        self.calls
            .iter()
            .filter(|(w, _)| *w == ws)
            .map(|(_, c)| c.clone())
            .collect()
    }
    fn hangup(&self, ws: Uuid, call: Uuid) -> bool {
        let found = self
            .calls
            .iter()
            .any(|(w, c)| *w == ws && c.call_log_id == call);
        if found {
            self.hung_up.lock().unwrap().push(call);
        }
        found
    }
}

fn view(id: Uuid) -> LiveCallView {
    LiveCallView {
        call_log_id: id,
        agent_id: Uuid::new_v4(),
        from: "+15555550111".into(),
        to: "+15555550100".into(),
        direction: "inbound".into(),
        started_at: chrono::Utc::now(),
        state: "in_progress".into(),
        node_id: None,
    }
}

#[tokio::test]
async fn workspace_b_cannot_touch_workspace_a() {
    let api = Api::start().await;

    let (_, ta) = api.user("a@example.com").await;
    let (_, tb) = api.user("b@example.com").await;
    let a = api.workspace(&ta, "A").await;
    let b = api.workspace(&tb, "B").await;
    let key_b = api.key(&tb, b, "OWNER").await;

    // A's configuration, through the API
    let persona = api.create(&ta, a, "personas", json!({"name": "P"})).await;
    let agent = api
        .create(
            &ta,
            a,
            "agents",
            json!({"name": "Agent A", "persona_id": persona}),
        )
        .await;
    let trunk = api
        .create(
            &ta,
            a,
            "sip-trunks",
            json!({"name": "T", "inbound_password": "a-trunk-secret"}),
        )
        .await;
    let number = api
        .create(
            &ta,
            a,
            "phone-numbers",
            json!({"e164": "+15555550100", "agent_id": agent, "sip_trunk_id": trunk}),
        )
        .await;
    let channel = api
        .create(
            &ta,
            a,
            "channel-configs",
            json!({"agent_id": agent, "channel": "phone"}),
        )
        .await;
    let widget = api
        .create(&ta, a, "web-widgets", json!({"agent_id": agent}))
        .await;
    let provider = api
        .create(
            &ta,
            a,
            "provider-configs",
            json!({"provider": "openai", "api_key": "sk-a-secret"}),
        )
        .await;
    let lead = api
        .create(&ta, a, "leads", json!({"name": "L", "agent_id": agent}))
        .await;
    let source = api
        .create(&ta, a, "knowledge", json!({"name": "K", "type": "TEXT", "agent_id": agent, "content": "We open at nine. Parking is free."}))
        .await;
    let a_key = api
        .post(
            &format!("/v1/workspaces/{a}/api-keys"),
            &ta,
            json!({"name": "k", "role": "VIEWER"}),
        )
        .await;
    let a_key_id: Uuid = a_key.body["id"].as_str().unwrap().parse().unwrap();
    // A's runtime rows
    let pool = &api.db.pool;
    let session: Uuid = sqlx::query_scalar("insert into agent_sessions (workspace_id, agent_id, channel) values ($1, $2, 'phone') returning id")
        .bind(a).bind(agent).fetch_one(pool).await.unwrap();
    sqlx::query("insert into messages (workspace_id, session_id, role, content) values ($1, $2, 'user', 'hi')")
        .bind(a).bind(session).execute(pool).await.unwrap();
    let call: Uuid = sqlx::query_scalar("insert into call_logs (workspace_id, agent_id, direction, session_id) values ($1, $2, 'inbound', $3) returning id")
        .bind(a).bind(agent).bind(session).fetch_one(pool).await.unwrap();
    let rec: Uuid = sqlx::query_scalar("insert into call_recordings (workspace_id, call_log_id, storage_path) values ($1, $2, '/etc/hostname') returning id")
        .bind(a).bind(call).fetch_one(pool).await.unwrap();
    let usage_log: Uuid = sqlx::query_scalar("insert into usage_logs (workspace_id, kind, quantity) values ($1, 'call_seconds', 5) returning id")
        .bind(a).fetch_one(pool).await.unwrap();
    sqlx::query("select increment_conversation_count($1)")
        .bind(a)
        .execute(pool)
        .await
        .unwrap();
    let usage: Uuid = sqlx::query_scalar("select id from workspace_usage where workspace_id = $1")
        .bind(a)
        .fetch_one(pool)
        .await
        .unwrap();
    let invoice: Uuid = sqlx::query_scalar(
        "insert into billing_invoices (workspace_id, amount) values ($1, 10) returning id",
    )
    .bind(a)
    .fetch_one(pool)
    .await
    .unwrap();
    let sub: Uuid = sqlx::query_scalar("insert into workspace_subscriptions (workspace_id, plan_id) select $1, id from pricing_plans where is_default returning id")
        .bind(a).fetch_one(pool).await.unwrap();
    // B has a row of each writable kind too, so its lists are not trivially empty
    let b_agent = api
        .create(&tb, b, "agents", json!({"name": "Agent B"}))
        .await;

    let before = snapshot(&api, a).await;
    assert_eq!(before["knowledge_chunks"].as_array().unwrap().len(), 1);

    // (path, id, a valid patch body or None when the resource is read-only)
    let targets: Vec<(&str, Uuid, Option<Value>)> = vec![
        ("personas", persona, Some(json!({"name": "pwned"}))),
        (
            "agents",
            agent,
            Some(json!({"name": "pwned", "status": "live"})),
        ),
        (
            "sip-trunks",
            trunk,
            Some(json!({"inbound_cidrs": ["0.0.0.0/0"]})),
        ),
        ("phone-numbers", number, Some(json!({"agent_id": b_agent}))),
        ("channel-configs", channel, Some(json!({"enabled": false}))),
        (
            "web-widgets",
            widget,
            Some(json!({"allowed_domains": ["evil.example"]})),
        ),
        (
            "provider-configs",
            provider,
            Some(json!({"base_url": "https://evil.example"})),
        ),
        ("leads", lead, Some(json!({"name": "pwned"}))),
        ("knowledge", source, None),
        (
            "sessions",
            session,
            Some(json!({"internal_notes": "pwned"})),
        ),
        ("call-logs", call, None),
        ("call-recordings", rec, None),
        ("usage-logs", usage_log, None),
        ("usage", usage, None),
        ("invoices", invoice, None),
        ("subscriptions", sub, None),
    ];
    let denied = |status: u16| [403, 404, 405].contains(&status);
    for attacker in [&tb, &key_b] {
        for (path, id, patch) in &targets {
            for ws in [a, b] {
                let item = format!("/v1/workspaces/{ws}/{path}/{id}");
                let r = api.get(&item, attacker).await;
                assert_eq!(r.status, 404, "GET {item}: {}", r.text);
                let body = patch.clone().unwrap_or(json!({"name": "pwned"}));
                let r = api.patch(&item, attacker, body).await;
                assert!(denied(r.status), "PATCH {item}: {} {}", r.status, r.text);
                let r = api.delete(&item, attacker).await;
                assert!(denied(r.status), "DELETE {item}: {} {}", r.status, r.text);
            }
            let r = api
                .get(&format!("/v1/workspaces/{a}/{path}"), attacker)
                .await;
            assert_eq!(r.status, 404, "list A's {path}");
            let r = api
                .get(&format!("/v1/workspaces/{b}/{path}"), attacker)
                .await;
            assert_eq!(r.status, 200);
            assert!(
                !r.text.contains(&id.to_string()),
                "B's {path} list shows A's row"
            );
        }
        // rows of B pointing into A
        let pointing: Vec<(&str, Value)> = vec![
            (
                "phone-numbers",
                json!({"e164": "+15555550177", "agent_id": agent}),
            ),
            (
                "phone-numbers",
                json!({"e164": "+15555550178", "sip_trunk_id": trunk}),
            ),
            ("agents", json!({"name": "x", "persona_id": persona})),
            (
                "channel-configs",
                json!({"agent_id": agent, "channel": "web"}),
            ),
            ("web-widgets", json!({"agent_id": agent})),
            ("leads", json!({"agent_id": agent})),
            ("leads", json!({"session_id": session})),
            (
                "knowledge",
                json!({"name": "x", "type": "TEXT", "agent_id": agent, "content": "x"}),
            ),
        ];
        for (path, body) in pointing {
            let r = api
                .post(
                    &format!("/v1/workspaces/{b}/{path}"),
                    attacker,
                    body.clone(),
                )
                .await;
            assert_eq!(
                (r.status, r.code()),
                (422, "unprocessable"),
                "B {path} → A: {}",
                r.text
            );
            let r = api
                .post(&format!("/v1/workspaces/{a}/{path}"), attacker, body)
                .await;
            assert_eq!(r.status, 404, "POST into A's {path}");
        }
        // B's own number re-pointed at A's agent
        let b_num = api
            .create(
                &tb,
                b,
                "phone-numbers",
                json!({"e164": format!("+1555555{:04}", rand_suffix())}),
            )
            .await;
        let r = api
            .patch(
                &format!("/v1/workspaces/{b}/phone-numbers/{b_num}"),
                attacker,
                json!({"agent_id": agent}),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
        // the workspace itself, members, keys, knowledge, live calls, audio
        let ws_a = format!("/v1/workspaces/{a}");
        assert_eq!(api.get(&ws_a, attacker).await.status, 404);
        assert!(denied(
            api.patch(&ws_a, attacker, json!({"name": "pwned"}))
                .await
                .status
        ));
        assert!(denied(api.delete(&ws_a, attacker).await.status));
        assert_eq!(
            api.get(&format!("{ws_a}/members"), attacker).await.status,
            404
        );
        let r = api
            .post(
                &format!("{ws_a}/members"),
                attacker,
                json!({"email": "b@example.com", "role": "OWNER"}),
            )
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(
            api.get(&format!("{ws_a}/api-keys"), attacker).await.status,
            404
        );
        assert_eq!(
            api.post(
                &format!("{ws_a}/api-keys"),
                attacker,
                json!({"name": "x", "role": "OWNER"})
            )
            .await
            .status,
            404
        );
        assert_eq!(
            api.delete(&format!("{ws_a}/api-keys/{a_key_id}"), attacker)
                .await
                .status,
            404
        );
        assert_eq!(
            api.delete(&format!("/v1/workspaces/{b}/api-keys/{a_key_id}"), attacker)
                .await
                .status,
            404
        );
        assert_eq!(
            api.get(&format!("{ws_a}/knowledge/{source}/chunks"), attacker)
                .await
                .status,
            404
        );
        assert_eq!(
            api.get(
                &format!("/v1/workspaces/{b}/knowledge/{source}/chunks"),
                attacker
            )
            .await
            .status,
            404
        );
        let r = api
            .post(
                &format!("/v1/workspaces/{b}/agents/{agent}/knowledge/search"),
                attacker,
                json!({"query": "nine"}),
            )
            .await;
        assert_eq!(r.status, 404);
        let r = api
            .post(
                &format!("{ws_a}/agents/{agent}/knowledge/search"),
                attacker,
                json!({"query": "nine"}),
            )
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(
            api.get(&format!("{ws_a}/call-recordings/{rec}/audio"), attacker)
                .await
                .status,
            404
        );
        assert_eq!(
            api.get(
                &format!("/v1/workspaces/{b}/call-recordings/{rec}/audio"),
                attacker
            )
            .await
            .status,
            404
        );
        assert_eq!(
            api.get(&format!("{ws_a}/calls/live"), attacker)
                .await
                .status,
            404
        );
        assert_eq!(
            api.delete(&format!("/v1/workspaces/{b}/calls/live/{call}"), attacker)
                .await
                .status,
            404
        );
    }
    let after = snapshot(&api, a).await;
    for (table, rows) in &before {
        assert_eq!(rows, &after[table], "{table} of A changed");
    }
}

fn rand_suffix() -> u32 {
    rand::random::<u32>() % 10_000
}

/// Live calls: each workspace sees and ends only its own.
#[tokio::test]
async fn live_calls_are_per_workspace() {
    // Workspace ids are only known after creation, so the registry is
    // shared through a cell filled in afterwards.
    struct Cell(Mutex<Option<Arc<FakeLive>>>);
    impl LiveCalls for Cell {
        fn list(&self, ws: Uuid) -> Vec<LiveCallView> {
            self.0
                .lock()
                .unwrap()
                .as_ref()
                .map(|l| l.list(ws))
                .unwrap_or_default()
        }
        fn hangup(&self, ws: Uuid, call: Uuid) -> bool {
            self.0
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|l| l.hangup(ws, call))
        }
    }
    let cell = Arc::new(Cell(Mutex::new(None)));
    let api = Api::start_with(Options {
        live: Some(cell.clone()),
        ..Default::default()
    })
    .await;
    let (_, ta) = api.user("a@example.com").await;
    let (_, tb) = api.user("b@example.com").await;
    let a = api.workspace(&ta, "A").await;
    let b = api.workspace(&tb, "B").await;
    let (call_a, call_b) = (Uuid::new_v4(), Uuid::new_v4());
    let fake = Arc::new(FakeLive {
        calls: vec![(a, view(call_a)), (b, view(call_b))],
        hung_up: Mutex::new(vec![]),
    });
    *cell.0.lock().unwrap() = Some(fake.clone());

    let r = api
        .get(&format!("/v1/workspaces/{a}/calls/live"), &ta)
        .await;
    assert_eq!(r.status, 200);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["call_log_id"], call_a.to_string());
    assert_eq!(items[0]["from"], "+15555550111");
    assert_eq!(items[0]["state"], "in_progress");
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{a}/calls/live/{call_b}"), &ta)
            .await
            .status,
        404
    );
    let viewer = api.key(&ta, a, "VIEWER").await;
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{a}/calls/live/{call_a}"), &viewer)
            .await
            .status,
        403
    );
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{a}/calls/live/{call_a}"), &ta)
            .await
            .status,
        202
    );
    assert_eq!(*fake.hung_up.lock().unwrap(), vec![call_a]);
}

/// RLS holds even where a handler would forget its workspace filter: in
/// B's request transaction, unfiltered queries see only B's rows and
/// writes into A are refused by the database.
#[tokio::test]
async fn rls_holds_without_handler_filters() {
    use switchboard::api::{ApiState, Principal};
    let api = Api::start().await;
    let (_, ta) = api.user("a@example.com").await;
    let (b_user, tb) = api.user("b@example.com").await;
    let a = api.workspace(&ta, "A").await;
    let b = api.workspace(&tb, "B").await;
    let agent_a = api.create(&ta, a, "agents", json!({"name": "A"})).await;
    api.create(&tb, b, "agents", json!({"name": "B"})).await;
    let source_a = api
        .create(
            &ta,
            a,
            "knowledge",
            json!({"name": "K", "type": "TEXT", "content": "Secret plans of A."}),
        )
        .await;

    let state = ApiState::new(api.db.pool.clone(), api.config.clone()).unwrap();
    let claims = json!({"sub": b_user, "role": "authenticated", "aud": "authenticated"});
    let as_b = Principal::User {
        user_id: b_user,
        email: None,
        claims,
    };
    let key_b = api.key(&tb, b, "OWNER").await;
    let key_id: Uuid = api.rows("select id from api_keys").await[0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let as_key = Principal::ApiKey {
        key_id,
        workspace_id: b,
        role: switchboard::api::types::Role::Owner,
    };
    let _ = key_b;
    for p in [&as_b, &as_key] {
        let mut tx = state.begin(p).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar("select name from agents")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(names, vec!["B".to_string()]);
        let chunks: i64 = sqlx::query_scalar("select count(*) from knowledge_chunks")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(chunks, 0);
        let updated = sqlx::query("update agents set name = 'pwned' where id = $1")
            .bind(agent_a)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 0);
        // a chunk pointing into A's source: refused by the database
        let err = sqlx::query("insert into knowledge_chunks (source_id, workspace_id, content, chunk_index) values ($1, $2, 'x', 99)")
            .bind(source_a)
            .bind(a)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("row-level security"), "{err}");
        tx.rollback().await.unwrap();
        let mut tx = state.begin(p).await.unwrap();
        let err = sqlx::query("insert into knowledge_chunks (source_id, workspace_id, content, chunk_index) values ($1, $2, 'x', 99)")
            .bind(source_a)
            .bind(b)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("foreign key"), "{err}");
        tx.rollback().await.unwrap();
    }
    assert_eq!(
        api.count(&format!(
            "select 1 from agents where id = '{agent_a}' and name = 'A'"
        ))
        .await,
        1
    );
    assert_eq!(api.count("select 1 from knowledge_chunks").await, 1);
}
