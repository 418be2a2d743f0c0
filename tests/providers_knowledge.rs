//! Retrieval and the offline answerer on the seeded demo knowledge base,
//! from the in-memory index loaded out of real PostgreSQL: spoken,
//! paraphrased questions find the right FAQ entry (full text alone, and
//! fused with the default sentence embeddings, all-mpnet-base-v2-q8), the answerer speaks that
//! entry's answer, off-topic questions fall below the floor to the persona's
//! fallback line, and the index follows changes of the knowledge (and keeps
//! its last state when the database is gone).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use switchboard::agent_runtime::embeddings::{embed_missing_chunks, Embedder};
use switchboard::agent_runtime::llm::{
    ChatMessage, LanguageModel, LlmDelta, LlmRequest, OfflineAnswerer,
};
use switchboard::agent_runtime::retrieval::{self, KnowledgeIndex, RetrievedChunk, SearchOptions};
use switchboard::agent_runtime::sentence_embedder::SentenceEmbedder;
use switchboard::db::seed::{seed_demo, DEMO_AGENT, DEMO_FAQ};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

fn local_embedder() -> Arc<SentenceEmbedder> {
    let config = switchboard::config::Config::load_from(None, &[]).expect("config");
    switchboard::agent_runtime::sentence_embedder::shared(
        &config.embeddings.local_model_dir,
        &config.tts.onnxruntime_path,
    )
    .expect("the embedding model in data/models")
}

/// `limit` chunks for `q` from memory, with `embedder`'s vector of `q` when given.
async fn search(
    k: &KnowledgeIndex,
    ws: Uuid,
    agent: Option<Uuid>,
    q: &str,
    embedder: Option<&SentenceEmbedder>,
    opts: SearchOptions,
) -> Vec<RetrievedChunk> {
    let v = match embedder {
        Some(e) => e
            .embed(&[q.to_string()])
            .await
            .ok()
            .and_then(|mut v| v.pop()),
        None => None,
    };
    retrieval::search(k, (ws, agent), q, std::future::ready(v), opts)
        .await
        .expect("search")
        .0
}

const FOUR: SearchOptions = SearchOptions {
    limit: 4,
    floor: retrieval::DEFAULT_FLOOR,
    off_topic_too: false,
};

async fn demo(pool: &PgPool) -> (Uuid, Uuid) {
    seed_demo(pool).await.expect("seed demo");
    sqlx::query_as("select workspace_id, id from agents where name = $1")
        .bind(DEMO_AGENT)
        .fetch_one(pool)
        .await
        .expect("demo agent")
}

/// The FAQ answer a chunk holds.
fn answer_of(c: &RetrievedChunk) -> &str {
    c.content.split("\nA: ").nth(1).unwrap_or("")
}

fn faq_answer(prefix: &str) -> &'static str {
    DEMO_FAQ
        .iter()
        .find(|(_, a)| a.starts_with(prefix))
        .map(|(_, a)| *a)
        .expect("FAQ entry")
}

/// (spoken question, start of the answer it must retrieve first)
const PARAPHRASES: &[(&str, &str)] = &[
    ("What time do you open on Saturday?", "On Saturday we open"),
    ("when do you guys open on saturdays", "On Saturday we open"),
    ("Are you open on Sunday?", "We are closed on Sunday"),
    ("What's your address?", "We are at 214 Maple Avenue"),
    (
        "Is there somewhere I can park?",
        "Yes, we have free parking",
    ),
    (
        "How much is a cleaning?",
        "A check-up with a cleaning costs",
    ),
    (
        "Do you take Cigna insurance?",
        "We accept most major dental insurance",
    ),
    (
        "I need to cancel my appointment tomorrow",
        "Please cancel or reschedule",
    ),
    (
        "I have a terrible toothache, what should I do?",
        "For a dental emergency",
    ),
    ("Can I pay with a credit card?", "We accept cash"),
    ("Do you treat kids?", "Yes, we treat patients of all ages"),
    (
        "How do I make an appointment?",
        "You can book an appointment",
    ),
    (
        "How much does whitening cost?",
        "Professional teeth whitening",
    ),
    (
        "Are you taking new patients?",
        "Yes, we are happy to welcome new patients",
    ),
    (
        "Can I come in a wheelchair?",
        "Yes, the office is on the ground floor",
    ),
];

const OFF_TOPIC: &[&str] = &[
    "Can you recommend a good pizza place nearby?",
    "What is the weather like tomorrow?",
    "Who won the football game last night?",
];

#[tokio::test]
async fn full_text_ranks_the_right_faq_for_spoken_paraphrases() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    let k = KnowledgeIndex::new(db.pool.clone(), "none");
    let mut misses = Vec::new();
    for (q, expected) in PARAPHRASES {
        let found = search(&k, ws, Some(agent), q, None, FOUR).await;
        let top = found.first().map(answer_of).unwrap_or("");
        println!(
            "{q:50} → {:.2} {}",
            found.first().map_or(0.0, |c| c.score),
            &top[..top.len().min(50)]
        );
        if !top.starts_with(expected) {
            misses.push(*q);
        }
        assert!(found
            .windows(2)
            .all(|w| w[0].score >= 0.0 && w[1].score >= 0.0));
    }
    assert!(misses.is_empty(), "wrong first passage for {misses:?}");
    for q in OFF_TOPIC {
        let found = search(&k, ws, Some(agent), q, None, FOUR).await;
        assert!(
            found.is_empty(),
            "{q} found {:?}",
            found
                .iter()
                .map(|c| (c.score, answer_of(c)))
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn sentence_embeddings_fuse_with_full_text() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    let e = local_embedder();
    let written = embed_missing_chunks(&db.pool, e.as_ref(), ws, 10_000)
        .await
        .unwrap();
    assert_eq!(written, DEMO_FAQ.len());
    let models: Vec<Option<String>> =
        sqlx::query_scalar("select distinct embedding_model from knowledge_chunks")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(models, vec![Some("all-mpnet-base-v2-q8".to_string())]);
    // Nothing left to embed with the same model; another model re-embeds all.
    assert_eq!(
        embed_missing_chunks(&db.pool, e.as_ref(), ws, 10_000)
            .await
            .unwrap(),
        0
    );
    let k = KnowledgeIndex::new(db.pool.clone(), &e.name());
    k.learn_everyday(e.as_ref())
        .await
        .expect("everyday requests embedded");
    let q = "Which buses stop near your office?";
    let with = search(&k, ws, Some(agent), q, Some(&e), FOUR).await;
    assert!(
        answer_of(&with[0]).starts_with("Yes, bus lines"),
        "{:?}",
        with.first().map(answer_of)
    );
    assert!(with[0].vector_score.is_some());
    let mut misses = Vec::new();
    for (q, expected) in PARAPHRASES {
        let found = search(&k, ws, Some(agent), q, Some(&e), FOUR).await;
        if !found
            .first()
            .is_some_and(|c| answer_of(c).starts_with(expected))
        {
            misses.push((
                *q,
                found.first().map(|c| (c.score, answer_of(c).to_string())),
            ));
        }
    }
    assert!(misses.is_empty(), "{misses:?}");
    // Off-topic questions stay below the answerer's floor (the fallback).
    // Without the everyday requests one of them reached it ("a pizza place
    // nearby" / "buses near your office", 0.32): the floor alone cannot
    // tell these apart.
    let mut above = Vec::new();
    for q in OFF_TOPIC {
        let mut found = search(&k, ws, Some(agent), q, Some(&e), FOUR).await;
        found.retain(|c| c.score >= switchboard::agent_runtime::llm_offline::ANSWER_FLOOR);
        if let Some(c) = found.first() {
            above.push((*q, c.score, answer_of(c).to_string()));
        }
    }
    println!("off-topic above the floor: {above:?}");
    assert!(above.is_empty(), "{above:?}");
}

#[tokio::test]
async fn the_index_follows_changes_and_outlives_the_database() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    let k = KnowledgeIndex::new(db.pool.clone(), "none");
    k.spawn_listener();
    let q = "Do you sell gift vouchers?";
    assert!(search(&k, ws, Some(agent), q, None, FOUR).await.is_empty());
    let before = k.cached((ws, Some(agent))).expect("loaded").len();
    // Give the listener time to subscribe, then add a chunk (workspace-wide).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source: Uuid = sqlx::query_scalar(
        "insert into knowledge_sources (workspace_id, name, type, status) values ($1, 'extra', 'FAQ', 'ready') returning id",
    )
    .bind(ws)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("insert into knowledge_chunks (workspace_id, source_id, content, chunk_index) values ($1, $2, $3, 0)")
        .bind(ws)
        .bind(source)
        .bind("Q: Do you sell gift vouchers?\nA: Yes, gift vouchers from 25 dollars.")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut seen = false;
    for _ in 0..50 {
        if k.cached((ws, Some(agent)))
            .is_some_and(|i| i.len() == before + 1)
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the notification rebuilt the index within 5 s");
    let found = search(&k, ws, Some(agent), q, None, FOUR).await;
    assert!(
        answer_of(&found[0]).starts_with("Yes, gift vouchers"),
        "{found:?}"
    );
    // The database goes away: a refresh fails and the index stays.
    db.pool.close().await;
    k.refresh(Some(ws)).await;
    let found = search(&k, ws, Some(agent), q, None, FOUR).await;
    assert!(
        answer_of(&found[0]).starts_with("Yes, gift vouchers"),
        "{found:?}"
    );
    assert_eq!(k.cached((ws, Some(agent))).unwrap().len(), before + 1);
    // A scope never loaded cannot be searched without the database.
    let other = retrieval::search(
        &k,
        (Uuid::new_v4(), None),
        q,
        std::future::ready(None),
        FOUR,
    )
    .await;
    assert!(other.is_err());
}

#[tokio::test]
async fn scope_is_the_agent_and_its_workspace() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    let k = KnowledgeIndex::new(db.pool.clone(), "none");
    // Another workspace's agent sees none of the demo's knowledge.
    let found = search(
        &k,
        Uuid::new_v4(),
        Some(agent),
        "open on Saturday",
        None,
        FOUR,
    )
    .await;
    assert!(found.is_empty());
    let found = search(&k, ws, Some(Uuid::new_v4()), "open on Saturday", None, FOUR).await;
    assert!(
        found.is_empty(),
        "another agent of the workspace does not see agent-scoped chunks"
    );
    // The admin view (no agent) sees them; hostile text is just words.
    let opts = SearchOptions {
        limit: 3,
        floor: 0.0,
        off_topic_too: false,
    };
    let found = search(&k, ws, None, "saturday' | !:* & (", None, opts).await;
    assert!(!found.is_empty() && found.len() <= 3);
    assert!(search(&k, ws, Some(agent), "", None, FOUR).await.is_empty());
    assert!(
        search(&k, ws, Some(agent), "the a of and to", None, FOUR)
            .await
            .is_empty(),
        "stop words only"
    );
}

async fn answer(k: &KnowledgeIndex, ws: Uuid, agent: Uuid, q: &str) -> (String, bool) {
    let passages = search(k, ws, Some(agent), q, None, FOUR).await;
    let req = LlmRequest {
        system: "You are the receptionist.".into(),
        messages: vec![ChatMessage::user(q)],
        passages,
        temperature: 0.0,
        max_tokens: 200,
        fallback_message: "I'm sorry, I don't have that information.".into(),
    };
    let deltas: Vec<LlmDelta> = OfflineAnswerer::new()
        .stream(req)
        .await
        .unwrap()
        .map(|d| d.unwrap())
        .collect()
        .await;
    let text: String = deltas
        .iter()
        .filter_map(|d| {
            if let LlmDelta::Text(t) = d {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    let words = deltas
        .iter()
        .filter(|d| matches!(d, LlmDelta::Text(_)))
        .count();
    match deltas.last() {
        Some(LlmDelta::Usage {
            tokens_in,
            tokens_out,
        }) => {
            assert!(*tokens_in > 0 && *tokens_out as usize >= text.split_whitespace().count());
        }
        other => panic!("usage must come last, got {other:?}"),
    }
    assert_eq!(
        words,
        text.split_whitespace().count(),
        "streamed word by word"
    );
    (text, deltas.contains(&LlmDelta::Transfer))
}

#[tokio::test]
async fn offline_answerer_speaks_the_right_answer_or_the_fallback() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    let k = KnowledgeIndex::new(db.pool.clone(), "none");
    let (text, transfer) = answer(&k, ws, agent, "What time do you open on Saturday?").await;
    assert_eq!(text, faq_answer("On Saturday we open"));
    assert!(!transfer);
    let (text, _) = answer(&k, ws, agent, "Is there somewhere I can park?").await;
    assert_eq!(text, faq_answer("Yes, we have free parking"));
    for q in OFF_TOPIC {
        let (text, _) = answer(&k, ws, agent, q).await;
        assert_eq!(text, "I'm sorry, I don't have that information.", "{q}");
    }
}
