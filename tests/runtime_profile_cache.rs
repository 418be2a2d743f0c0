//! Agents' profiles and workspaces' credentials between calls: a second
//! load of an unchanged agent does not query (the cache's pool has one
//! connection besides the listener's, and the test holds it: a query would
//! time out), a change made with SQL is seen by the next load within a
//! second, and while the listener is away every load queries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use switchboard::agent_runtime::profiles::Profiles;
use switchboard::db::seed::{seed_demo, DEMO_AGENT};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

/// Longest wait for a change to reach the cache (the notification's trip).
const SEEN_WITHIN: Duration = Duration::from_secs(1);

/// The cache's pool: the listener's connection and one more. New
/// connections fail while `reachable` is false.
async fn cache_pool(url: &str, reachable: Arc<AtomicBool>) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .after_connect(move |_, _| {
            let reachable = reachable.clone();
            Box::pin(async move {
                if reachable.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(sqlx::Error::Protocol("test: database unreachable".into()))
                }
            })
        })
        .connect(url)
        .await
        .expect("cache pool")
}

/// Polls `check` every 10 ms until it holds; how long that took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn listening(profiles: &Profiles) {
    within(Duration::from_secs(10), "listener connected", || async {
        profiles.is_listening()
    })
    .await;
}

async fn demo_agent(pool: &PgPool) -> (Uuid, Uuid) {
    seed_demo(pool).await.expect("seed");
    sqlx::query_as("select workspace_id, id from agents where name = $1")
        .bind(DEMO_AGENT)
        .fetch_one(pool)
        .await
        .expect("demo agent")
}

async fn exec(pool: &PgPool, sql: &str, id: Uuid) {
    sqlx::query(sql)
        .bind(id)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_profile_is_not_queried_and_a_change_is_seen_by_the_next_load() {
    let db = TestDb::new().await;
    let (_, agent) = demo_agent(&db.pool).await;
    let pool = cache_pool(&db.url, Arc::new(AtomicBool::new(true))).await;
    let profiles = Profiles::new(pool.clone());
    profiles.spawn_listener();
    listening(&profiles).await;

    let first = profiles.profile(agent).await.expect("first load queries");
    {
        let _held = pool.acquire().await.expect("the spare connection");
        let again = profiles.profile(agent).await.expect("served from memory");
        assert_eq!(again.instructions, first.instructions);
        assert_eq!(again.greeting, first.greeting);
    }

    // The agent's own row.
    exec(
        &db.pool,
        "update agents set instructions = 'Answer like a pirate.' where id = $1",
        agent,
    )
    .await;
    let took = within(SEEN_WITHIN, "agent change", || async {
        profiles.profile(agent).await.expect("load").instructions == "Answer like a pirate."
    })
    .await;
    println!("agent change seen after {took:?}");

    // Its persona (the greeting), through the workspace.
    exec(
        &db.pool,
        "update personas set greeting = 'Ahoy, thanks for calling.'
         where id = (select persona_id from agents where id = $1)",
        agent,
    )
    .await;
    let took = within(SEEN_WITHIN, "persona change", || async {
        profiles.profile(agent).await.expect("load").greeting == "Ahoy, thanks for calling."
    })
    .await;
    println!("persona change seen after {took:?}");

    // The model catalogue.
    exec(
        &db.pool,
        "update agents set llm_model_id = (select id from llm_models where model_id = 'gpt-4o-mini')
         where id = $1",
        agent,
    )
    .await;
    within(SEEN_WITHIN, "model chosen", || async {
        profiles.profile(agent).await.expect("load").llm_model == "gpt-4o-mini"
    })
    .await;
    sqlx::query("update llm_models set output_cost_per_1k = 0.75 where model_id = 'gpt-4o-mini'")
        .execute(&db.pool)
        .await
        .expect("price change");
    within(SEEN_WITHIN, "catalogue change", || async {
        profiles
            .profile(agent)
            .await
            .expect("load")
            .output_cost_per_1k
            == 0.75
    })
    .await;

    // Current again: no query.
    let _held = pool.acquire().await.expect("the spare connection");
    let p = profiles.profile(agent).await.expect("served from memory");
    assert_eq!(p.greeting, "Ahoy, thanks for calling.");
    assert_eq!(p.instructions, "Answer like a pirate.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_not_queried_until_they_change() {
    let db = TestDb::new().await;
    let (ws, _) = demo_agent(&db.pool).await;
    let pool = cache_pool(&db.url, Arc::new(AtomicBool::new(true))).await;
    let profiles = Profiles::new(pool.clone());
    profiles.spawn_listener();
    listening(&profiles).await;
    let key = [7u8; 32];

    assert!(profiles
        .credentials(ws, &key)
        .await
        .expect("load")
        .is_empty());
    {
        let _held = pool.acquire().await.expect("the spare connection");
        let again = profiles.credentials(ws, &key).await;
        assert!(again.expect("served from memory").is_empty());
    }

    let sealed = switchboard::api::secrets::encrypt(&key, "sk-live-1");
    sqlx::query(
        "insert into workspace_llm_config (workspace_id, provider, api_key) values ($1, 'openai', $2)",
    )
    .bind(ws)
    .bind(&sealed)
    .execute(&db.pool)
    .await
    .expect("add a key");
    let took = within(SEEN_WITHIN, "key added", || async {
        let creds = profiles.credentials(ws, &key).await.expect("load");
        creds.len() == 1 && creds[0].api_key == "sk-live-1"
    })
    .await;
    println!("credentials change seen after {took:?}");

    let resealed = switchboard::api::secrets::encrypt(&key, "sk-live-2");
    sqlx::query("update workspace_llm_config set api_key = $2 where workspace_id = $1")
        .bind(ws)
        .bind(&resealed)
        .execute(&db.pool)
        .await
        .expect("rotate the key");
    within(SEEN_WITHIN, "key rotated", || async {
        let creds = profiles.credentials(ws, &key).await.expect("load");
        creds.len() == 1 && creds[0].api_key == "sk-live-2"
    })
    .await;
    {
        let _held = pool.acquire().await.expect("the spare connection");
        let creds = profiles.credentials(ws, &key).await.expect("from memory");
        assert_eq!(creds[0].api_key, "sk-live-2");
    }

    exec(
        &db.pool,
        "delete from workspace_llm_config where workspace_id = $1",
        ws,
    )
    .await;
    within(SEEN_WITHIN, "key removed", || async {
        profiles
            .credentials(ws, &key)
            .await
            .expect("load")
            .is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_listener_every_load_queries_and_its_return_forgets_the_past() {
    let db = TestDb::new().await;
    let (_, agent) = demo_agent(&db.pool).await;
    let reachable = Arc::new(AtomicBool::new(true));
    let pool = cache_pool(&db.url, reachable.clone()).await;
    let profiles = Profiles::new(pool.clone());
    profiles.spawn_listener();
    listening(&profiles).await;
    profiles.profile(agent).await.expect("first load");

    // The listener's connection ends and it cannot get another: no new
    // connection opens, and the test holds the spare one.
    reachable.store(false, Ordering::SeqCst);
    let held = pool.acquire().await.expect("the spare connection");
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and query ilike 'listen%'",
    )
    .execute(&db.pool)
    .await
    .expect("end the listener's connection");
    within(Duration::from_secs(10), "listener lost", || async {
        !profiles.is_listening()
    })
    .await;
    // Unchanged as far as anyone knows, yet the load goes to the database
    // (and cannot get a connection).
    assert!(
        profiles.profile(agent).await.is_err(),
        "no profile is served while changes are not heard"
    );
    let last = profiles.last_profile(agent).expect("kept for outages");
    assert_eq!(last.agent_id, agent);

    // A change (heard or not), then the listener is back.
    drop(held);
    exec(
        &db.pool,
        "update agents set instructions = 'Unheard change.' where id = $1",
        agent,
    )
    .await;
    reachable.store(true, Ordering::SeqCst);
    listening(&profiles).await;
    {
        let _held = pool.acquire().await.expect("the spare connection");
        assert!(
            profiles.profile(agent).await.is_err(),
            "a load after the reconnect must query"
        );
    }
    let p = profiles.profile(agent).await.expect("reloaded");
    assert_eq!(p.instructions, "Unheard change.");
    let _held = pool.acquire().await.expect("the spare connection");
    let p = profiles
        .profile(agent)
        .await
        .expect("served from memory again");
    assert_eq!(p.instructions, "Unheard change.");
}
