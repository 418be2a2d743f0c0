//! The node's pool (`db::connect`) across a restart of PostgreSQL: a busy
//! pool does not check its connections before each statement (a round trip
//! each), so the ones that died with the server must be found out when
//! they are next taken after idling, not by the request that takes them.

use std::time::Duration;

use crate::common::pgcluster::TempCluster;
use switchboard::config::DatabaseConfig;
use switchboard::db::CHECK_AFTER_IDLE;

const CONNECTIONS: usize = 4;

#[tokio::test]
async fn every_statement_after_a_server_restart_succeeds() {
    let cluster = TempCluster::start();
    let pool = switchboard::db::connect(&DatabaseConfig {
        url: cluster.admin_url(),
        max_connections: CONNECTIONS as u32,
    })
    .await
    .expect("pool");
    // Every connection of the pool opened and back in it.
    let busy = (0..CONNECTIONS).map(|_| sqlx::query("select pg_sleep(0.2)").execute(&pool));
    for r in futures::future::join_all(busy).await {
        r.expect("statement before the restart");
    }
    assert_eq!(pool.size() as usize, CONNECTIONS);

    cluster.stop();
    cluster.resume();
    tokio::time::sleep(CHECK_AFTER_IDLE + Duration::from_millis(300)).await;

    // Each pooled connection is dead; none of them reaches a statement.
    for i in 0..2 * CONNECTIONS {
        let one: i32 = sqlx::query_scalar("select 1")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("statement {i} after the restart: {e}"));
        assert_eq!(one, 1);
    }
}
