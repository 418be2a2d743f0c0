//! PostgreSQL: the connection pool, migrations, the demo seed, and a fresh
//! database per test. Typed queries live beside their users (`api`,
//! `sip::routing`, `agent_runtime::records`).

pub mod cluster;
pub mod notify;
pub mod seed;
pub mod testing;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How long a surplus connection may stay idle.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Idle time after which a pooled connection is checked before it is used.
pub const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Opens the pool. Connections are made lazily after the first one, which is
/// tried at once so a wrong URL is reported at start-up.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = config.url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // Connections opened for a burst close once idle: each holds its
        // buffers and statement cache here and a backend in PostgreSQL.
        .idle_timeout(IDLE_CONNECTION)
        // A connection is checked before use only when it has been idle:
        // a check is a round trip, which a busy pool would pay on every
        // statement, while a server restart (the reason for checking) takes
        // longer than `CHECK_AFTER_IDLE` and leaves every connection idle
        // that long.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < CHECK_AFTER_IDLE {
                    return Ok(true);
                }
                // A dead connection is dropped and another one made.
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies every pending migration; a no-op when all are applied.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// True when the database answers and every embedded migration is applied.
pub async fn ready(pool: &PgPool) -> bool {
    let applied: Result<i64, _> =
        sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
            .fetch_one(pool)
            .await;
    matches!(applied, Ok(n) if n as usize >= MIGRATOR.migrations.len())
}

/// Whether a write that failed with `err` will fail again however often it
/// is retried (a constraint, data or SQL error), rather than succeed once
/// the database is back (a lost connection, a timeout, a shutdown).
pub fn is_permanent_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // 08 connection exception, 53 insufficient resources, 57 operator
            // intervention (shutdown), 40 transaction rollback: transient.
            !(code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code.starts_with("40"))
        }
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

/// A foreign-key violation: the row referred to may still be on its way
/// (another writer retrying through an outage).
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23503"))
}
