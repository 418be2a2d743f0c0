//! Row Level Security as the API uses it: each request is a transaction that
//! does `set local role authenticated` and sets `request.jwt.claims`; the
//! runtime bypasses RLS. Everything here runs against real PostgreSQL.

use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

struct World {
    db: TestDb,
    a: Uuid,
    b: Uuid,
    owner_a: Uuid,
    manager_a: Uuid,
    viewer_a: Uuid,
    owner_b: Uuid,
    outsider: Uuid,
    agent_a: Uuid,
    agent_b: Uuid,
    key_a: Uuid,
}

async fn user(pool: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("insert into auth.users (email) values ($1) returning id")
        .bind(email)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn member(pool: &PgPool, user: Uuid, ws: Uuid, role: &str) {
    sqlx::query(
        "insert into user_roles (user_id, workspace_id, role) values ($1, $2, $3::app_role)",
    )
    .bind(user)
    .bind(ws)
    .bind(role)
    .execute(pool)
    .await
    .unwrap();
}

/// Two workspaces with members, agents, a call record and an API key,
/// written as the runtime would (superuser, RLS bypassed).
async fn world() -> World {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a: Uuid =
        sqlx::query_scalar("insert into workspaces (name, slug) values ('A', 'a') returning id")
            .fetch_one(p)
            .await
            .unwrap();
    let b: Uuid =
        sqlx::query_scalar("insert into workspaces (name, slug) values ('B', 'b') returning id")
            .fetch_one(p)
            .await
            .unwrap();
    let owner_a = user(p, "owner-a@example.com").await;
    let manager_a = user(p, "manager-a@example.com").await;
    let viewer_a = user(p, "viewer-a@example.com").await;
    let owner_b = user(p, "owner-b@example.com").await;
    let outsider = user(p, "outsider@example.com").await;
    member(p, owner_a, a, "OWNER").await;
    member(p, manager_a, a, "MANAGER").await;
    member(p, viewer_a, a, "VIEWER").await;
    member(p, owner_b, b, "OWNER").await;
    let agent = |ws: Uuid, name: &'static str| async move {
        sqlx::query_scalar::<_, Uuid>(
            "insert into agents (workspace_id, name) values ($1, $2) returning id",
        )
        .bind(ws)
        .bind(name)
        .fetch_one(p)
        .await
        .unwrap()
    };
    let agent_a = agent(a, "Alpha").await;
    let agent_b = agent(b, "Bravo").await;
    for (ws, ag) in [(a, agent_a), (b, agent_b)] {
        let session: Uuid = sqlx::query_scalar(
            "insert into agent_sessions (workspace_id, agent_id, channel) values ($1, $2, 'phone') returning id",
        )
        .bind(ws)
        .bind(ag)
        .fetch_one(p)
        .await
        .unwrap();
        sqlx::query("insert into messages (workspace_id, session_id, role, content) values ($1, $2, 'user', 'hello')")
            .bind(ws)
            .bind(session)
            .execute(p)
            .await
            .unwrap();
        sqlx::query("insert into call_logs (workspace_id, agent_id, session_id, direction, status) values ($1, $2, $3, 'inbound', 'completed')")
            .bind(ws)
            .bind(ag)
            .bind(session)
            .execute(p)
            .await
            .unwrap();
    }
    let key_a: Uuid = sqlx::query_scalar(
        "insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, 'ci', 'sb_aaaa', 'hash', 'MANAGER') returning id",
    )
    .bind(a)
    .fetch_one(p)
    .await
    .unwrap();
    World {
        db,
        a,
        b,
        owner_a,
        manager_a,
        viewer_a,
        owner_b,
        outsider,
        agent_a,
        agent_b,
        key_a,
    }
}

/// A request transaction as the API opens it.
async fn request(pool: &PgPool, role: &str, claims: Value) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("set local role {role}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("select set_config('request.jwt.claims', $1, true)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

async fn as_user(pool: &PgPool, user: Uuid) -> Transaction<'static, Postgres> {
    request(
        pool,
        "authenticated",
        json!({ "sub": user, "role": "authenticated" }),
    )
    .await
}

async fn agent_names(tx: &mut Transaction<'static, Postgres>) -> Vec<String> {
    sqlx::query_scalar("select name from agents order by name")
        .fetch_all(&mut **tx)
        .await
        .unwrap()
}

fn is_denied<T: std::fmt::Debug>(r: Result<T, sqlx::Error>) -> bool {
    match r {
        Err(e) => e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501"),
        Ok(v) => panic!("expected permission denied, got {v:?}"),
    }
}

async fn count(tx: &mut Transaction<'static, Postgres>, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut **tx).await.unwrap()
}

#[tokio::test]
async fn members_read_their_workspace_and_nothing_of_another() {
    let w = world().await;
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    assert_eq!(agent_names(&mut tx).await, vec!["Alpha"]);
    assert_eq!(count(&mut tx, "select count(*) from workspaces").await, 1);
    assert_eq!(count(&mut tx, "select count(*) from call_logs").await, 1);
    assert_eq!(count(&mut tx, "select count(*) from messages").await, 1);
    assert_eq!(count(&mut tx, "select count(*) from user_roles").await, 3);
    let chat: Vec<Value> = sqlx::query_scalar("select messages from chat_sessions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(chat.len(), 1, "the view applies the caller's RLS");
    assert_eq!(chat[0][0]["content"], "hello");
    let b_agent: i64 = sqlx::query_scalar("select count(*) from agents where id = $1")
        .bind(w.agent_b)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(b_agent, 0);
    drop(tx);

    let mut tx = as_user(&w.db.pool, w.owner_b).await;
    assert_eq!(agent_names(&mut tx).await, vec!["Bravo"]);
    drop(tx);

    let mut tx = as_user(&w.db.pool, w.outsider).await;
    assert!(agent_names(&mut tx).await.is_empty());
    assert_eq!(count(&mut tx, "select count(*) from workspaces").await, 0);
    assert_eq!(count(&mut tx, "select count(*) from call_logs").await, 0);
    // catalogues are readable by any signed-in user
    assert!(count(&mut tx, "select count(*) from llm_models").await >= 5);
    assert!(count(&mut tx, "select count(*) from pricing_plans").await >= 4);
    drop(tx);

    // no claims at all: authenticated sees nothing
    let mut tx = request(&w.db.pool, "authenticated", json!({})).await;
    assert!(agent_names(&mut tx).await.is_empty());
}

#[tokio::test]
async fn a_viewer_cannot_write() {
    let w = world().await;
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    let r = sqlx::query("insert into agents (workspace_id, name) values ($1, 'Nope')")
        .bind(w.a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    let n = sqlx::query("update agents set name = 'Renamed' where id = $1")
        .bind(w.agent_a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0, "a viewer's update touches nothing");
    let n = sqlx::query("delete from agents where id = $1")
        .bind(w.agent_a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_manager_edits_agents_but_not_keys_or_members() {
    let w = world().await;
    let mut tx = as_user(&w.db.pool, w.manager_a).await;
    let n = sqlx::query("update agents set name = 'Alpha 2', status = 'live' where id = $1")
        .bind(w.agent_a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    sqlx::query("insert into agents (workspace_id, name) values ($1, 'Another')")
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .expect("a manager creates agents");
    // not in another workspace, and not by moving one there
    let n = sqlx::query("update agents set name = 'Hijack' where id = $1")
        .bind(w.agent_b)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0);
    let r = sqlx::query("update agents set workspace_id = $1 where id = $2")
        .bind(w.b)
        .bind(w.agent_a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);

    let mut tx = as_user(&w.db.pool, w.manager_a).await;
    let r = sqlx::query("insert into agents (workspace_id, name) values ($1, 'Intruder')")
        .bind(w.b)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);

    let mut tx = as_user(&w.db.pool, w.manager_a).await;
    assert_eq!(
        count(&mut tx, "select count(*) from api_keys").await,
        0,
        "keys are for owners"
    );
    let r = sqlx::query("insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, 'k', 'sb_mmmm', 'h', 'VIEWER')")
        .bind(w.a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);

    let mut tx = as_user(&w.db.pool, w.manager_a).await;
    let r = sqlx::query(
        "insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'VIEWER')",
    )
    .bind(w.outsider)
    .bind(w.a)
    .execute(&mut *tx)
    .await;
    assert!(is_denied(r));
    drop(tx);

    let mut tx = as_user(&w.db.pool, w.manager_a).await;
    let n = sqlx::query("update user_roles set role = 'OWNER' where user_id = $1")
        .bind(w.manager_a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0, "a manager cannot promote themself");
    let n = sqlx::query("delete from workspaces where id = $1")
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0, "only an owner deletes the workspace");
    // runtime tables are read-only, staff notes excepted
    let r = sqlx::query("insert into call_logs (workspace_id, direction) values ($1, 'inbound')")
        .bind(w.a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);
    let mut tx = as_user(&w.db.pool, w.manager_a).await;
    let n = sqlx::query("update agent_sessions set internal_notes = 'called back'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1, "only the own workspace's session");
    let r = sqlx::query("update agent_sessions set status = 'failed'")
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);
    // catalogues are not writable
    let mut tx = as_user(&w.db.pool, w.owner_a).await;
    let r = sqlx::query("update llm_models set input_cost_per_1k = 0")
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
}

#[tokio::test]
async fn an_owner_manages_keys_members_and_the_workspace() {
    let w = world().await;
    let mut tx = as_user(&w.db.pool, w.owner_a).await;
    assert_eq!(count(&mut tx, "select count(*) from api_keys").await, 1);
    sqlx::query("insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, 'k', 'sb_oooo', 'h', 'VIEWER')")
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .expect("owner adds a key");
    sqlx::query("insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'VIEWER')")
        .bind(w.outsider)
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .expect("owner adds a member");
    let n = sqlx::query(
        "update user_roles set role = 'MANAGER' where user_id = $1 and workspace_id = $2",
    )
    .bind(w.viewer_a)
    .bind(w.a)
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
    let r = sqlx::query("update workspaces set credits_balance = 1000000 where id = $1")
        .bind(w.a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r), "credits are not user-editable");
    drop(tx);
    let mut tx = as_user(&w.db.pool, w.owner_a).await;
    let n = sqlx::query("delete from workspaces where id = $1")
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    let n = sqlx::query("delete from workspaces where id = $1")
        .bind(w.b)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_new_user_creates_a_workspace_and_becomes_its_first_owner() {
    let w = world().await;
    let mut tx = as_user(&w.db.pool, w.outsider).await;
    let ws: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('New', 'new') returning id",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("any signed-in user creates a workspace");
    sqlx::query("insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'OWNER')")
        .bind(w.outsider)
        .bind(ws)
        .execute(&mut *tx)
        .await
        .expect("the creator becomes owner");
    sqlx::query("insert into agents (workspace_id, name) values ($1, 'First')")
        .bind(ws)
        .execute(&mut *tx)
        .await
        .expect("and can configure it");
    tx.commit().await.unwrap();
    // nobody can claim someone else's workspace, even an empty one
    sqlx::query("delete from user_roles where workspace_id = $1")
        .bind(w.b)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let mut tx = as_user(&w.db.pool, w.outsider).await;
    let r = sqlx::query(
        "insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'OWNER')",
    )
    .bind(w.outsider)
    .bind(w.b)
    .execute(&mut *tx)
    .await;
    assert!(is_denied(r));
    drop(tx);
    // nor add a second owner to their own uninvited
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    let r = sqlx::query(
        "insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'OWNER')",
    )
    .bind(w.viewer_a)
    .bind(w.b)
    .execute(&mut *tx)
    .await;
    assert!(is_denied(r));
    drop(tx);
    // profiles: one's own only
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    sqlx::query("insert into profiles (id, workspace_id, full_name) values ($1, $2, 'Vi')")
        .bind(w.viewer_a)
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .expect("own profile");
    let r = sqlx::query("insert into profiles (id, full_name) values ($1, 'Not me')")
        .bind(w.owner_a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
}

#[tokio::test]
async fn anon_reads_nothing() {
    let w = world().await;
    for table in [
        "agents",
        "workspaces",
        "call_logs",
        "api_keys",
        "llm_models",
        "user_roles",
        "chat_sessions",
    ] {
        // even with a member's claims, the anon role has no access
        let mut tx = request(
            &w.db.pool,
            "anon",
            json!({ "sub": w.owner_a, "role": "anon" }),
        )
        .await;
        let r = sqlx::query_scalar::<_, i64>(&format!("select count(*) from {table}"))
            .fetch_one(&mut *tx)
            .await;
        assert!(is_denied(r), "anon reads {table}");
    }
}

#[tokio::test]
async fn the_runtime_and_service_role_bypass_rls() {
    let w = world().await;
    // the pool's own login (superuser), no claims: everything
    let all: i64 = sqlx::query_scalar("select count(*) from agents")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(all, 2);
    let mut tx = request(
        &w.db.pool,
        "service_role",
        json!({ "role": "service_role" }),
    )
    .await;
    assert_eq!(agent_names(&mut tx).await, vec!["Alpha", "Bravo"]);
    sqlx::query("insert into call_logs (workspace_id, direction) values ($1, 'inbound')")
        .bind(w.b)
        .execute(&mut *tx)
        .await
        .expect("service_role writes runtime tables");
    let n: i32 = sqlx::query_scalar("select increment_conversation_count($1)")
        .bind(w.a)
        .fetch_one(&mut *tx)
        .await
        .expect("service_role counts usage");
    assert_eq!(n, 1);
    drop(tx);
    // a user cannot count usage
    let mut tx = as_user(&w.db.pool, w.owner_a).await;
    let r = sqlx::query("select increment_conversation_count($1)")
        .bind(w.a)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
}

#[tokio::test]
async fn api_key_claims_give_the_keys_role_in_its_workspace_only() {
    let w = world().await;
    let claims = |ws: Uuid, role: &str, key: Uuid| {
        json!({ "sub": null, "role": "authenticated", "workspace_id": ws,
                "workspace_role": role, "api_key_id": key })
    };
    let mut tx = request(&w.db.pool, "authenticated", claims(w.a, "MANAGER", w.key_a)).await;
    assert_eq!(agent_names(&mut tx).await, vec!["Alpha"]);
    sqlx::query("insert into agents (workspace_id, name) values ($1, 'ByKey')")
        .bind(w.a)
        .execute(&mut *tx)
        .await
        .expect("a MANAGER key configures agents");
    let r = sqlx::query("insert into agents (workspace_id, name) values ($1, 'Cross')")
        .bind(w.b)
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
    drop(tx);

    // claiming more than the key has is capped at the key's role
    let mut tx = request(&w.db.pool, "authenticated", claims(w.a, "OWNER", w.key_a)).await;
    let role: Option<String> = sqlx::query_scalar("select get_user_role($1)::text")
        .bind(w.a)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(role.as_deref(), Some("MANAGER"));
    drop(tx);

    // a key presented for another workspace opens nothing
    let mut tx = request(&w.db.pool, "authenticated", claims(w.b, "MANAGER", w.key_a)).await;
    assert!(agent_names(&mut tx).await.is_empty());
    drop(tx);

    // a revoked key opens nothing
    sqlx::query("update api_keys set revoked_at = now() where id = $1")
        .bind(w.key_a)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let mut tx = request(&w.db.pool, "authenticated", claims(w.a, "MANAGER", w.key_a)).await;
    assert!(agent_names(&mut tx).await.is_empty());
    drop(tx);

    // a key cannot create workspaces
    sqlx::query("update api_keys set revoked_at = null where id = $1")
        .bind(w.key_a)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let mut tx = request(&w.db.pool, "authenticated", claims(w.a, "MANAGER", w.key_a)).await;
    let r = sqlx::query("insert into workspaces (name, slug) values ('K', 'k')")
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r));
}

#[tokio::test]
async fn api_roles_cannot_touch_the_migration_bookkeeping() {
    let w = world().await;
    for role in ["authenticated", "anon"] {
        let mut tx = request(&w.db.pool, role, json!({ "sub": w.owner_a })).await;
        let r = sqlx::query_scalar::<_, i64>("select count(*) from _sqlx_migrations")
            .fetch_one(&mut *tx)
            .await;
        assert!(is_denied(r), "{role} reads _sqlx_migrations");
    }
}

#[tokio::test]
async fn read_policies_evaluate_membership_once_per_query() {
    let w = world().await;
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    let plan: Vec<String> = sqlx::query_scalar("explain select id from call_logs")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let plan = plan.join("\n");
    // an init plan computes the workspace set once; no per-row function call
    assert!(plan.contains("InitPlan"), "{plan}");
    assert!(!plan.contains("user_has_workspace_access"), "{plan}");
}

#[tokio::test]
async fn billing_is_not_writable_by_any_tenant_role() {
    let w = world().await;
    let starter = "select id from pricing_plans where name = 'Starter'";
    // The owner, the strongest tenant role: no subscription, no invoice.
    let mut tx = as_user(&w.db.pool, w.owner_a).await;
    let r = sqlx::query(&format!(
        "insert into workspace_subscriptions (workspace_id, plan_id, status)
         select $1, id, 'active' from ({starter}) p"
    ))
    .bind(w.a)
    .execute(&mut *tx)
    .await;
    assert!(is_denied(r), "an owner subscribed its own workspace");
    drop(tx);
    let mut tx = as_user(&w.db.pool, w.owner_a).await;
    let r = sqlx::query(
        "insert into billing_invoices (workspace_id, amount, status) values ($1, 0, 'paid')",
    )
    .bind(w.a)
    .execute(&mut *tx)
    .await;
    assert!(is_denied(r), "an owner wrote an invoice");
    drop(tx);
    // Nor an API key of the workspace.
    let mut tx = request(
        &w.db.pool,
        "authenticated",
        json!({ "sub": null, "role": "authenticated", "workspace_id": w.a,
                "workspace_role": "MANAGER", "api_key_id": w.key_a }),
    )
    .await;
    let r = sqlx::query("update workspace_subscriptions set status = 'active'")
        .execute(&mut *tx)
        .await;
    assert!(is_denied(r), "a key updated a subscription");
    drop(tx);
    // The operator's side (service role) writes; members then read it.
    let mut tx = request(
        &w.db.pool,
        "service_role",
        json!({ "role": "service_role" }),
    )
    .await;
    sqlx::query(&format!(
        "insert into workspace_subscriptions (workspace_id, plan_id, status)
         select $1, id, 'active' from ({starter}) p"
    ))
    .bind(w.a)
    .execute(&mut *tx)
    .await
    .expect("the service role subscribes a workspace");
    tx.commit().await.unwrap();
    let mut tx = as_user(&w.db.pool, w.viewer_a).await;
    assert_eq!(
        count(&mut tx, "select count(*) from workspace_subscriptions").await,
        1,
        "members read their subscription"
    );
}
