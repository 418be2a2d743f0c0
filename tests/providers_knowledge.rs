//! Retrieval and the offline answerer on the seeded demo knowledge base in
//! real PostgreSQL: spoken, paraphrased questions find the right FAQ entry
//! (full-text with OR semantics, and fused with local embeddings), the
//! answerer speaks that entry's answer, and off-topic questions fall below
//! the floor to the persona's fallback line.

use futures::StreamExt;
use sqlx::PgPool;
use switchboard::agent_runtime::embeddings::{embed_missing_chunks, LocalHashEmbedder};
use switchboard::agent_runtime::llm::{
    ChatMessage, LanguageModel, LlmDelta, LlmRequest, OfflineAnswerer,
};
use switchboard::agent_runtime::retrieval::{search, search_with, RetrievedChunk, SearchOptions};
use switchboard::db::seed::{seed_demo, DEMO_AGENT, DEMO_FAQ};
use switchboard::db::testing::TestDb;
use uuid::Uuid;

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
    let mut misses = Vec::new();
    for (q, expected) in PARAPHRASES {
        let found = search(&db.pool, ws, agent, q, None, 4).await.unwrap();
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
        let found = search(&db.pool, ws, agent, q, None, 4).await.unwrap();
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
async fn local_embeddings_fuse_with_full_text() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    let written = embed_missing_chunks(&db.pool, &LocalHashEmbedder, ws, 10_000)
        .await
        .unwrap();
    assert_eq!(written, DEMO_FAQ.len());
    // "buses" stems differently from "bus" in PostgreSQL's English
    // dictionary; character trigrams of the local embedder still match.
    let q = "Which buses stop near your office?";
    let v = LocalHashEmbedder::embed_one(q);
    let with = search(&db.pool, ws, agent, q, Some(&v), 4).await.unwrap();
    println!(
        "{:?}",
        with.iter()
            .map(|c| (c.score, c.vector_score, answer_of(c)))
            .collect::<Vec<_>>()
    );
    assert!(
        answer_of(&with[0]).starts_with("Yes, bus lines"),
        "{:?}",
        with.first().map(answer_of)
    );
    assert!(with[0].vector_score.is_some());
    // Fusion with the weak local embedder keeps the right entry among the
    // first two passages given to the model (first for all but a few).
    let mut not_first = Vec::new();
    for (q, expected) in PARAPHRASES {
        let v = LocalHashEmbedder::embed_one(q);
        let found = search(&db.pool, ws, agent, q, Some(&v), 4).await.unwrap();
        let pos = found
            .iter()
            .position(|c| answer_of(c).starts_with(expected));
        assert!(
            matches!(pos, Some(0 | 1)),
            "{q}: {:?}",
            found.iter().map(answer_of).collect::<Vec<_>>()
        );
        if pos != Some(0) {
            not_first.push(*q);
        }
    }
    println!("second, not first, with fusion: {not_first:?}");
    assert!(not_first.len() <= 2, "{not_first:?}");
}

#[tokio::test]
async fn scope_is_the_agent_and_its_workspace() {
    let db = TestDb::new().await;
    let (ws, agent) = demo(&db.pool).await;
    // Another workspace's agent sees none of the demo's knowledge.
    let found = search(&db.pool, Uuid::new_v4(), agent, "open on Saturday", None, 4)
        .await
        .unwrap();
    assert!(found.is_empty());
    let found = search(&db.pool, ws, Uuid::new_v4(), "open on Saturday", None, 4)
        .await
        .unwrap();
    assert!(
        found.is_empty(),
        "another agent of the workspace does not see agent-scoped chunks"
    );
    // The admin view (no agent) sees them; hostile text is just words.
    let opts = SearchOptions {
        limit: 3,
        floor: 0.0,
    };
    let found = search_with(&db.pool, ws, None, "saturday' | !:* & (", None, opts)
        .await
        .unwrap();
    assert!(!found.is_empty() && found.len() <= 3);
    assert!(search(&db.pool, ws, agent, "", None, 4)
        .await
        .unwrap()
        .is_empty());
    assert!(
        search(&db.pool, ws, agent, "the a of and to", None, 4)
            .await
            .unwrap()
            .is_empty(),
        "stop words only"
    );
}

async fn answer(db: &TestDb, ws: Uuid, agent: Uuid, q: &str) -> (String, bool) {
    let passages = search(&db.pool, ws, agent, q, None, 4).await.unwrap();
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
    let (text, transfer) = answer(&db, ws, agent, "What time do you open on Saturday?").await;
    assert_eq!(text, faq_answer("On Saturday we open"));
    assert!(!transfer);
    let (text, _) = answer(&db, ws, agent, "Is there somewhere I can park?").await;
    assert_eq!(text, faq_answer("Yes, we have free parking"));
    for q in OFF_TOPIC {
        let (text, _) = answer(&db, ws, agent, q).await;
        assert_eq!(text, "I'm sorry, I don't have that information.", "{q}");
    }
}
