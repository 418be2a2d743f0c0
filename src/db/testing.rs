//! A fresh PostgreSQL database for each test, cloned from a template that has
//! every migration applied. The template is rebuilt when the migrations
//! change; building it is serialised across processes with an advisory lock
//! (nextest runs each test in its own process). Tests fail loudly when
//! PostgreSQL is absent: they never skip.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

const TEMPLATE: &str = "switchboard_template";
const LOCK_KEY: i64 = 0x0053_5742_5445_5354; // "SWBTEST"

/// Where tests find the server: `SWITCHBOARD_TEST_DATABASE_URL` (an admin URL,
/// database part ignored), else `DATABASE_URL`, else the private cluster.
pub fn admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".to_string())
}

fn options_for(db: &str) -> PgConnectOptions {
    let opts: PgConnectOptions = admin_url()
        .parse()
        .expect("SWITCHBOARD_TEST_DATABASE_URL is not a valid URL");
    opts.database(db).disable_statement_logging()
}

/// A database that exists for one test and is dropped with it.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `sbtest_<uuid>` from the migrated template.
    pub async fn new() -> TestDb {
        let mut admin = PgConnection::connect_with(&options_for("postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for this test ({}): {e}. Run scripts/setup.",
                    admin_url()
                )
            });
        sqlx::query("select pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut admin)
            .await
            .expect("advisory lock");
        ensure_template(&mut admin).await;
        let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("create database {name} template {TEMPLATE}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        sqlx::query("select pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut admin)
            .await
            .ok();
        let _ = admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(60)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options_for(&name))
            .await
            .expect("connect to test database");
        let url = options_url(&name);
        TestDb { name, url, pool }
    }
}

fn options_url(db: &str) -> String {
    let base = admin_url();
    match base.rfind('/') {
        Some(i) if base[..i].contains("://") && base[i + 1..].chars().all(|c| c != '@') => {
            let (head, tail) = base.split_at(i);
            // keep any ?query after the database name
            let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
            format!("{head}/{db}{query}")
        }
        _ => format!("{base}/{db}"),
    }
}

async fn ensure_template(admin: &mut PgConnection) {
    let fingerprint: String = super::MIGRATOR
        .migrations
        .iter()
        .map(|m| format!("{}:{}", m.version, hex::encode(&m.checksum[..8])))
        .collect::<Vec<_>>()
        .join(",");
    let current: Option<String> = sqlx::query_scalar(
        "select shobj_description(oid, 'pg_database') from pg_database where datname = $1",
    )
    .bind(TEMPLATE)
    .fetch_optional(&mut *admin)
    .await
    .expect("query template")
    .flatten();
    if current.as_deref() == Some(fingerprint.as_str()) {
        return;
    }
    sqlx::query(&format!("drop database if exists {TEMPLATE} with (force)"))
        .execute(&mut *admin)
        .await
        .expect("drop template");
    sqlx::query(&format!("create database {TEMPLATE}"))
        .execute(&mut *admin)
        .await
        .expect("create template");
    {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options_for(TEMPLATE))
            .await
            .expect("connect template");
        super::migrate(&pool)
            .await
            .expect("migrations must apply to an empty database");
        pool.close().await;
    }
    sqlx::query(&format!(
        "comment on database {TEMPLATE} is '{fingerprint}'"
    ))
    .execute(&mut *admin)
    .await
    .expect("mark template");
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside the test's runtime, which cannot be blocked on;
        // a short-lived thread with its own runtime removes the database
        // (`with (force)` ends the pool's connections) so tests leave nothing.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut admin) =
                        PgConnection::connect_with(&options_for("postgres")).await
                    {
                        let _ =
                            sqlx::query(&format!("drop database if exists {name} with (force)"))
                                .execute(&mut admin)
                                .await;
                        let _ = admin.close().await;
                    }
                });
            }
        })
        .join();
    }
}
