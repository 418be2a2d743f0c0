//! `seed-demo` against real PostgreSQL: it builds a callable demo, and
//! running it again (even concurrently) changes nothing that matters.

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use sqlx::PgPool;
use switchboard::db::seed::{seed_demo, DEMO_EMAIL, DEMO_FAQ, DEMO_NUMBER};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

async fn counts(pool: &PgPool) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (what, sql) in [
        ("workspaces", "select count(*) from workspaces where slug = 'demo'"),
        ("users", "select count(*) from auth.users where email = 'demo@example.com'"),
        ("agents", "select count(*) from agents a join workspaces w on w.id = a.workspace_id where w.slug = 'demo'"),
        ("numbers", "select count(*) from phone_numbers where e164 = '+15555550100'"),
        ("trunks", "select count(*) from sip_trunks where name = 'local'"),
        ("personas", "select count(*) from personas"),
        ("roles", "select count(*) from user_roles"),
        ("sources", "select count(*) from knowledge_sources"),
        ("chunks", "select count(*) from knowledge_chunks"),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        out.push((what.to_string(), n));
    }
    out
}

/// The password line of a first-run report.
fn password_in(report: &str) -> Option<String> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
}

/// The demo number's route: agent status and name, the trunk's CIDRs,
/// codecs, call limit and switch, the model provider, the transfer target,
/// the owner's role and the number's switch.
type DemoRoute = (
    String,
    String,
    Vec<String>,
    Vec<String>,
    i32,
    bool,
    String,
    String,
    String,
    bool,
);

#[tokio::test]
async fn seed_demo_builds_a_routable_demo() {
    let db = TestDb::new().await;
    let report = seed_demo(&db.pool).await.expect("seed");
    assert!(
        report.contains(DEMO_NUMBER) && report.contains(DEMO_EMAIL),
        "{report}"
    );
    let password = password_in(&report).expect("the first run prints the password");
    assert!(password.len() >= 16);

    // the stored hash is argon2id and verifies the printed password
    let hash: String =
        sqlx::query_scalar("select encrypted_password from auth.users where email = $1")
            .bind(DEMO_EMAIL)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let parsed = PasswordHash::new(&hash).unwrap();
    assert!(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok());
    assert!(Argon2::default()
        .verify_password(b"wrong", &parsed)
        .is_err());

    // the number routes through the local trunk to the live agent, in one workspace
    let row: DemoRoute = sqlx::query_as(
        "select a.status::text, a.name, t.inbound_cidrs, t.codecs, t.max_concurrent_calls, t.enabled,
                m.provider, coalesce(a.transfer_to, ''), r.role::text, n.enabled
         from phone_numbers n
         join agents a on a.id = n.agent_id and a.workspace_id = n.workspace_id
         join sip_trunks t on t.id = n.sip_trunk_id and t.workspace_id = n.workspace_id
         join llm_models m on m.id = a.llm_model_id
         join user_roles r on r.workspace_id = n.workspace_id
         join auth.users u on u.id = r.user_id and u.email = $2
         where n.e164 = $1",
    )
    .bind(DEMO_NUMBER)
    .bind(DEMO_EMAIL)
    .fetch_one(&db.pool)
    .await
    .expect("number → trunk → agent → owner");
    assert_eq!(row.0, "live");
    assert_eq!(row.1, "Reception");
    assert_eq!(row.2, vec!["127.0.0.0/8"]);
    assert_eq!(row.3, vec!["PCMU", "PCMA"]);
    assert_eq!(row.4, 100);
    assert!(row.5);
    assert_eq!(row.6, "offline", "the agent uses the offline default model");
    assert!(row.7.starts_with('+'));
    assert_eq!(row.8, "OWNER");
    assert!(row.9);
    let greeting: String = sqlx::query_scalar(
        "select p.greeting from personas p join agents a on a.persona_id = p.id where a.name = 'Reception'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(greeting.contains("Bluebird Dental"));

    // the agent's profile loads the way a call loads it
    let agent_id: Uuid = sqlx::query_scalar("select agent_id from phone_numbers where e164 = $1")
        .bind(DEMO_NUMBER)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let profile = switchboard::agent_runtime::profile::AgentProfile::load(&db.pool, agent_id)
        .await
        .expect("profile of the demo agent");
    assert_eq!(profile.greeting, greeting);

    // knowledge: one ready FAQ source, one "Q: …\nA: …" chunk per pair
    let (status, chunk_count): (String, i32) =
        sqlx::query_as("select status, chunk_count from knowledge_sources where type = 'FAQ'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "ready");
    assert!(DEMO_FAQ.len() >= 15);
    assert_eq!(chunk_count as usize, DEMO_FAQ.len());
    let chunks: Vec<(String, i32, Option<Uuid>)> = sqlx::query_as(
        "select content, token_count, agent_id from knowledge_chunks order by chunk_index",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(chunks.len(), DEMO_FAQ.len());
    for ((content, tokens, agent), (q, a)) in chunks.iter().zip(DEMO_FAQ) {
        assert_eq!(content, &format!("Q: {q}\nA: {a}"));
        assert_eq!(*tokens as usize, content.split_whitespace().count());
        assert_eq!(*agent, Some(agent_id));
        // spoken answers: short, no symbols a TTS would read out oddly
        assert!(
            a.split_whitespace().count() <= 35,
            "answer too long to speak: {a}"
        );
        assert!(
            !a.contains(['$', '&', '/', '#']),
            "answer hard to speak: {a}"
        );
    }
    // full-text search finds the Saturday hours
    let best: String = sqlx::query_scalar(
        "select content from knowledge_chunks
         order by ts_rank(tsv, plainto_tsquery('english', 'when do you open on saturday')) desc limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(best.contains("On Saturday we open at 9 am"), "{best}");
}

#[tokio::test]
async fn seed_demo_twice_changes_nothing_that_matters() {
    let db = TestDb::new().await;
    let first = seed_demo(&db.pool).await.expect("first seed");
    let before = counts(&db.pool).await;
    let chunk_ids: Vec<Uuid> =
        sqlx::query_scalar("select id from knowledge_chunks order by chunk_index")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let hash: String = sqlx::query_scalar("select encrypted_password from auth.users")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let second = seed_demo(&db.pool).await.expect("second seed");
    assert!(
        password_in(&second).is_none(),
        "the password is shown only once: {second}"
    );
    assert!(second.contains("already exists"), "{second}");
    assert_eq!(counts(&db.pool).await, before);
    for (what, n) in &before {
        if what != "chunks" {
            assert_eq!(*n, 1, "exactly one demo {what}");
        }
    }
    let ids_again: Vec<Uuid> =
        sqlx::query_scalar("select id from knowledge_chunks order by chunk_index")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(ids_again, chunk_ids, "chunks are updated in place");
    let hash_again: String = sqlx::query_scalar("select encrypted_password from auth.users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hash_again, hash, "the password is not changed");
    // the ids in both reports are the same
    let id_lines = |r: &str| {
        r.lines()
            .filter(|l| l.contains(" id "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(id_lines(&first), id_lines(&second));

    // an edited agent is put back; concurrent runs still leave one of everything
    sqlx::query("update agents set status = 'draft', tts_voice = 'xx'")
        .execute(&db.pool)
        .await
        .unwrap();
    let runs = (0..4).map(|_| {
        let pool = db.pool.clone();
        tokio::spawn(async move { seed_demo(&pool).await })
    });
    for r in futures::future::join_all(runs).await {
        r.expect("task").expect("concurrent seed");
    }
    assert_eq!(counts(&db.pool).await, before);
    let (status, voice): (String, String) =
        sqlx::query_as("select status::text, tts_voice from agents")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), voice.as_str()),
        ("live", "en_US-joe-medium")
    );
}
