//! A warm transfer's test set-up: the demo agent transfers warm to
//! `PERSON` through an outbound trunk to the person's phone.

use switchboard::db::testing::TestDb;

/// The number the demo agent transfers to.
pub const PERSON: &str = "+15555550199";

/// The database, the node and a folder for the test's files.
pub struct Setup {
    pub db: TestDb,
    pub node: switchboard::serve::Services,
    pub dir: tempfile::TempDir,
}

/// The demo workspace seeded, its agent set to transfer warm to
/// [`PERSON`], and a node on RTP ports from `rtp_base`.
pub async fn setup(rtp_base: u16) -> Setup {
    super::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    sqlx::query(
        "update agents set transfer_to = $1, transfer_mode = 'warm' where name = 'Reception'",
    )
    .bind(PERSON)
    .execute(&db.pool)
    .await
    .expect("agent");
    let node = super::node::start_node(
        &db.url,
        &db.pool,
        rtp_base,
        &[("SWITCHBOARD_OUTBOUND__ALLOW", "[\"127.0.0.0/8\"]")],
    )
    .await;
    Setup {
        db,
        node,
        dir: tempfile::tempdir().expect("tmp"),
    }
}

/// The workspace's outbound trunk: the person's phone at `port`.
pub async fn person_trunk(db: &TestDb, port: u16) {
    sqlx::query(
        "insert into sip_trunks (workspace_id, name, direction, outbound_host, outbound_port, outbound_transport)
         select workspace_id, 'carrier out', 'outbound', '127.0.0.1', $1, 'udp' from agents where name = 'Reception'",
    )
    .bind(i32::from(port))
    .execute(&db.pool)
    .await
    .expect("trunk");
}
