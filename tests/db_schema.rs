//! The migrations against real PostgreSQL: they apply to an empty database
//! and to one that already has a Supabase-style `auth` schema, re-running
//! them is a no-op, and the schema holds the invariants SCHEMA.md promises
//! (tenant-safe references, E.164 numbers, generated full-text vectors,
//! atomic usage counting, plan limits).

use futures::future::join_all;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use switchboard::db::testing::{admin_url, TestDb};
use uuid::Uuid;

/// A database created by hand (not from the migrated template), dropped on exit.
struct BareDb {
    name: String,
    pool: PgPool,
}

impl BareDb {
    async fn new() -> BareDb {
        let admin_opts: PgConnectOptions = admin_url().parse().expect("admin url");
        let mut admin = PgConnection::connect_with(&admin_opts.clone().database("postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required ({}): {e}", admin_url()));
        let name = format!("sbbare_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let _ = admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(admin_opts.database(&name))
            .await
            .expect("connect");
        BareDb { name, pool }
    }
}

impl Drop for BareDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    let opts: PgConnectOptions = admin_url().parse().expect("admin url");
                    if let Ok(mut admin) =
                        PgConnection::connect_with(&opts.database("postgres")).await
                    {
                        let _ =
                            sqlx::query(&format!("drop database if exists {name} with (force)"))
                                .execute(&mut admin)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

async fn applied_migrations(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await
        .expect("count migrations")
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_rerun_is_a_noop() {
    let db = BareDb::new().await;
    switchboard::db::migrate(&db.pool).await.expect("first run");
    let n = applied_migrations(&db.pool).await;
    assert_eq!(n as usize, switchboard::db::MIGRATOR.migrations.len());
    let before: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = 'public' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    switchboard::db::migrate(&db.pool)
        .await
        .expect("second run is a no-op");
    assert_eq!(applied_migrations(&db.pool).await, n);
    let after: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = 'public' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(before, after);
    assert!(switchboard::db::ready(&db.pool).await);
    // auth.users was created by us (there was none)
    let has_users: bool = sqlx::query_scalar("select to_regclass('auth.users') is not null")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(has_users);
}

#[tokio::test]
async fn migrations_keep_an_existing_supabase_auth_schema() {
    let db = BareDb::new().await;
    // A minimal Supabase-style auth schema, with columns ours does not have
    // and Supabase's own auth.uid(), which must survive untouched.
    sqlx::raw_sql(
        "create schema auth;
         create table auth.users (
             instance_id uuid,
             id uuid primary key,
             aud varchar(255),
             role varchar(255),
             email varchar(255),
             encrypted_password varchar(255),
             last_sign_in_at timestamptz,
             raw_user_meta_data jsonb,
             created_at timestamptz,
             updated_at timestamptz);
         create function auth.uid() returns uuid language sql stable as $$
             select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                             (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
             -- supabase original
         $$;",
    )
    .execute(&db.pool)
    .await
    .expect("pre-existing auth schema");
    switchboard::db::migrate(&db.pool)
        .await
        .expect("migrations over Supabase auth");
    switchboard::db::migrate(&db.pool)
        .await
        .expect("second run");
    let cols: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns
         where table_schema = 'auth' and table_name = 'users' order by ordinal_position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        cols.contains(&"raw_user_meta_data".to_string()),
        "auth.users was replaced: {cols:?}"
    );
    let src: String =
        sqlx::query_scalar("select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        src.contains("supabase original"),
        "auth.uid() was replaced: {src}"
    );
    // and the schema works on top of it: a user, a workspace, a membership
    let user = Uuid::new_v4();
    sqlx::query("insert into auth.users (id, email) values ($1, 'x@example.com')")
        .bind(user)
        .execute(&db.pool)
        .await
        .unwrap();
    let ws: Uuid =
        sqlx::query_scalar("insert into workspaces (name, slug) values ('X', 'x') returning id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    sqlx::query("insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'OWNER')")
        .bind(user)
        .bind(ws)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("set local role authenticated")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("select set_config('request.jwt.claims', $1, true)")
        .bind(serde_json::json!({ "sub": user, "role": "authenticated" }).to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let role: Option<String> = sqlx::query_scalar("select get_user_role($1)::text")
        .bind(ws)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(role.as_deref(), Some("OWNER"));
}

#[tokio::test]
async fn every_public_table_has_rls_and_the_catalogues_are_seeded() {
    let db = TestDb::new().await;
    let without_rls: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity
           and c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        without_rls.is_empty(),
        "tables without RLS: {without_rls:?}"
    );
    let defaults: Vec<String> =
        sqlx::query_scalar("select provider || '/' || model_id from llm_models where is_default")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(defaults, vec!["offline/retrieval-answerer".to_string()]);
    let models: i64 = sqlx::query_scalar("select count(*) from llm_models")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(models >= 5);
    let plan = sqlx::query(
        "select name, conversation_limit, minute_limit from pricing_plans where is_default",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(plan.get::<String, _>("name"), "Free");
    assert!(plan.get::<Option<i32>, _>("conversation_limit").is_some());
    // the seed is idempotent: running the catalogue migration again changes nothing
    let seed = switchboard::db::MIGRATOR
        .migrations
        .iter()
        .find(|m| m.description.contains("seed"))
        .expect("seed migration");
    sqlx::raw_sql(&seed.sql)
        .execute(&db.pool)
        .await
        .expect("seed again");
    let again: i64 = sqlx::query_scalar("select count(*) from llm_models")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(again, models);
    // the _sqlx_migrations bookkeeping table itself is not reachable by API roles
    let view: bool = sqlx::query_scalar("select has_table_privilege('anon', 'agents', 'select')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!view, "anon must not have table privileges");
}

async fn workspace(pool: &PgPool, slug: &str) -> Uuid {
    sqlx::query_scalar("insert into workspaces (name, slug) values ($1, $1) returning id")
        .bind(slug)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn references_cannot_cross_workspaces() {
    let db = TestDb::new().await;
    let a = workspace(&db.pool, "a").await;
    let b = workspace(&db.pool, "b").await;
    let agent_b: Uuid =
        sqlx::query_scalar("insert into agents (workspace_id, name) values ($1, 'B') returning id")
            .bind(b)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let persona_b: Uuid = sqlx::query_scalar(
        "insert into personas (workspace_id, name) values ($1, 'P') returning id",
    )
    .bind(b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // a number of A routed to B's agent
    let err = sqlx::query(
        "insert into phone_numbers (workspace_id, e164, agent_id) values ($1, '+15555550111', $2)",
    )
    .bind(a)
    .bind(agent_b)
    .execute(&db.pool)
    .await
    .expect_err("cross-workspace routing must fail");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23503")
    );
    // an agent of A with B's persona
    let err =
        sqlx::query("insert into agents (workspace_id, name, persona_id) values ($1, 'A', $2)")
            .bind(a)
            .bind(persona_b)
            .execute(&db.pool)
            .await
            .expect_err("cross-workspace persona must fail");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23503")
    );
    // a chunk of A under B's source
    let source_b: Uuid = sqlx::query_scalar(
        "insert into knowledge_sources (workspace_id, agent_id, name, type) values ($1, $2, 'S', 'FAQ') returning id",
    )
    .bind(b)
    .bind(agent_b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let err = sqlx::query(
        "insert into knowledge_chunks (workspace_id, source_id, content, chunk_index) values ($1, $2, 'x', 0)",
    )
    .bind(a)
    .bind(source_b)
    .execute(&db.pool)
    .await
    .expect_err("cross-workspace chunk must fail");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23503")
    );
    // the same-workspace chunk works; it follows its source's agent and gets a tsvector
    sqlx::query(
        "insert into knowledge_chunks (workspace_id, source_id, content, chunk_index) values ($1, $2, 'Q: When do you open?\nA: We open at nine.', 0)",
    )
    .bind(b)
    .bind(source_b)
    .execute(&db.pool)
    .await
    .unwrap();
    let row = sqlx::query("select agent_id, tsv @@ plainto_tsquery('english', 'opening') as hit from knowledge_chunks")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<Option<Uuid>, _>("agent_id"), Some(agent_b));
    assert!(row.get::<bool, _>("hit"));
    // moving the source to another agent of the workspace takes its chunks along
    let agent_b2: Uuid = sqlx::query_scalar(
        "insert into agents (workspace_id, name) values ($1, 'B2') returning id",
    )
    .bind(b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("update knowledge_sources set agent_id = $1 where id = $2")
        .bind(agent_b2)
        .bind(source_b)
        .execute(&db.pool)
        .await
        .unwrap();
    let moved: Option<Uuid> = sqlx::query_scalar("select agent_id from knowledge_chunks")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(moved, Some(agent_b2));
    // deleting the persona keeps the agent (and its workspace_id)
    sqlx::query("update agents set persona_id = $1 where id = $2")
        .bind(persona_b)
        .bind(agent_b)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("delete from personas where id = $1")
        .bind(persona_b)
        .execute(&db.pool)
        .await
        .unwrap();
    let row = sqlx::query("select persona_id, workspace_id from agents where id = $1")
        .bind(agent_b)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<Option<Uuid>, _>("persona_id"), None);
    assert_eq!(row.get::<Uuid, _>("workspace_id"), b);
}

#[tokio::test]
async fn checks_reject_bad_values() {
    let db = TestDb::new().await;
    let a = workspace(&db.pool, "a").await;
    for bad in [
        "15555550100",
        "+1555",
        "+1555555010012345678",
        "+1 555 555 0100",
        "sip:+15555550100",
    ] {
        let r = sqlx::query("insert into phone_numbers (workspace_id, e164) values ($1, $2)")
            .bind(a)
            .bind(bad)
            .execute(&db.pool)
            .await;
        assert!(r.is_err(), "{bad} accepted as E.164");
    }
    sqlx::query("insert into phone_numbers (workspace_id, e164) values ($1, '+15555550100')")
        .bind(a)
        .execute(&db.pool)
        .await
        .expect("a valid number");
    let dup =
        sqlx::query("insert into phone_numbers (workspace_id, e164) values ($1, '+15555550100')")
            .bind(a)
            .execute(&db.pool)
            .await;
    assert!(dup.is_err(), "e164 must be unique");
    for t in [-0.1f64, 2.1] {
        let r = sqlx::query(
            "insert into agents (workspace_id, name, temperature) values ($1, 'x', $2)",
        )
        .bind(a)
        .bind(t)
        .execute(&db.pool)
        .await;
        assert!(r.is_err(), "temperature {t} accepted");
    }
    let r = sqlx::query("insert into sip_trunks (workspace_id, name, inbound_cidrs) values ($1, 't', '{not-an-address}')")
        .bind(a)
        .execute(&db.pool)
        .await;
    assert!(r.is_err(), "bad CIDR accepted");
    let r = sqlx::query("insert into call_logs (workspace_id, direction, status) values ($1, 'inbound', 'exploded')")
        .bind(a)
        .execute(&db.pool)
        .await;
    assert!(r.is_err(), "bad call status accepted");
    // updated_at follows updates
    let (c, u0): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select created_at, updated_at from workspaces where id = $1")
            .bind(a)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(c, u0);
    let u1: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "update workspaces set name = 'renamed' where id = $1 returning updated_at",
    )
    .bind(a)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(u1 > u0);
}

#[tokio::test]
async fn increment_conversation_count_loses_no_update_under_50_concurrent_callers() {
    let db = TestDb::new().await;
    let ws = workspace(&db.pool, "busy").await;
    let calls = (0..50).map(|_| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            sqlx::query_scalar::<_, i32>("select increment_conversation_count($1)")
                .bind(ws)
                .fetch_one(&pool)
                .await
        })
    });
    let mut seen: Vec<i32> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("increment"))
        .collect();
    seen.sort_unstable();
    // each caller got a distinct new count: 1..=50
    assert_eq!(seen, (1..=50).collect::<Vec<i32>>());
    let total: i32 = sqlx::query_scalar(
        "select conversations from workspace_usage where workspace_id = $1 and month = current_usage_month()",
    )
    .bind(ws)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(total, 50);
    let rows: i64 =
        sqlx::query_scalar("select count(*) from workspace_usage where workspace_id = $1")
            .bind(ws)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn check_usage_limit_flips_at_the_plan_limit() {
    let db = TestDb::new().await;
    let ws = workspace(&db.pool, "limited").await;
    let (free_limit, free_minutes): (i32, i32) = sqlx::query_as(
        "select conversation_limit, minute_limit from pricing_plans where is_default",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let ok = |pool: PgPool| async move {
        sqlx::query_scalar::<_, bool>("select check_usage_limit($1)")
            .bind(ws)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert!(
        ok(db.pool.clone()).await,
        "a new workspace is under its limit"
    );
    // no subscription: the default plan's conversation limit applies
    for _ in 0..free_limit - 1 {
        sqlx::query("select increment_conversation_count($1)")
            .bind(ws)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    assert!(ok(db.pool.clone()).await, "one conversation left");
    sqlx::query("select increment_conversation_count($1)")
        .bind(ws)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(!ok(db.pool.clone()).await, "limit reached at {free_limit}");
    // a subscription to a bigger plan lifts it
    sqlx::query(
        "insert into workspace_subscriptions (workspace_id, plan_id, status)
         select $1, id, 'active' from pricing_plans where name = 'Starter'",
    )
    .bind(ws)
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(ok(db.pool.clone()).await, "Starter allows more");
    // a canceled subscription falls back to the default plan
    sqlx::query("update workspace_subscriptions set status = 'canceled' where workspace_id = $1")
        .bind(ws)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(!ok(db.pool.clone()).await);
    // minutes count too
    let other = workspace(&db.pool, "talkative").await;
    sqlx::query("insert into workspace_usage (workspace_id, month, call_seconds) values ($1, current_usage_month(), $2)")
        .bind(other)
        .bind(free_minutes as i64 * 60 - 1)
        .execute(&db.pool)
        .await
        .unwrap();
    let under: bool = sqlx::query_scalar("select check_usage_limit($1)")
        .bind(other)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(under);
    sqlx::query(
        "update workspace_usage set call_seconds = call_seconds + 1 where workspace_id = $1",
    )
    .bind(other)
    .execute(&db.pool)
    .await
    .unwrap();
    let under: bool = sqlx::query_scalar("select check_usage_limit($1)")
        .bind(other)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!under, "minute limit reached");
    // get_workspace_usage reports the month's row
    let (conv, secs): (i32, i64) =
        sqlx::query_as("select conversations, call_seconds from get_workspace_usage($1)")
            .bind(other)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((conv, secs), (0, free_minutes as i64 * 60));
}
