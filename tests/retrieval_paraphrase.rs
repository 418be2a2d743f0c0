//! Paraphrase retrieval on knowledge bases used only by tests
//! (`tests/fixtures/knowledge/`: a vet clinic and a day care, FAQ entries
//! asked in callers' words, and off-topic questions). Through the real path:
//! FAQ sources ingested by the API into PostgreSQL and embedded with
//! all-MiniLM-L6-v2, then the runtime's in-memory retrieval and the offline
//! answerer. Questions alternate between a tuning split (even positions,
//! used to choose the relevance floor and weights) and an untouched split
//! (odd positions); the untouched split must be ≥ 90 % right.

mod api_support;

use api_support::Api;
use serde_json::{json, Value};
use switchboard::agent_runtime::embeddings::Embedder;
use switchboard::agent_runtime::llm::{ChatMessage, LlmRequest, OfflineAnswerer};
use switchboard::agent_runtime::llm_offline::for_speech;
use switchboard::agent_runtime::retrieval::{self, KnowledgeIndex, SearchOptions};
use uuid::Uuid;

const FALLBACK: &str = "Sorry, I don't have that information.";

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/knowledge")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

struct Kb {
    agent: Uuid,
    answers: Vec<String>,
    questions: Vec<(String, usize)>,
}

async fn ingest(api: &Api, token: &str, ws: Uuid, file: &str) -> Kb {
    let kb = fixture(file);
    let name = kb["name"].as_str().expect("name");
    let agent = api.create(token, ws, "agents", json!({"name": name})).await;
    let faqs = kb["faqs"].as_array().expect("faqs").clone();
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/knowledge"),
            token,
            json!({"name": name, "type": "FAQ", "agent_id": agent, "faqs": faqs}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["status"], "ready");
    Kb {
        agent,
        answers: faqs
            .iter()
            .map(|f| f["answer"].as_str().unwrap().to_string())
            .collect(),
        questions: kb["questions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (
                    q["q"].as_str().unwrap().to_string(),
                    q["faq"].as_u64().unwrap() as usize,
                )
            })
            .collect(),
    }
}

/// What the offline answerer says to `question` for this agent.
async fn answer(
    knowledge: &KnowledgeIndex,
    embedder: &dyn Embedder,
    ws: Uuid,
    agent: Uuid,
    question: &str,
) -> (String, f32) {
    let embedding = async {
        embedder
            .embed(&[question.to_string()])
            .await
            .ok()
            .and_then(|mut v| v.pop())
    };
    let opts = SearchOptions {
        limit: 4,
        floor: retrieval::DEFAULT_FLOOR,
    };
    let (passages, embedded) =
        retrieval::search(knowledge, (ws, Some(agent)), question, embedding, opts)
            .await
            .expect("search");
    assert!(embedded, "the question's embedding took part");
    let top = passages.first().map(|p| p.score).unwrap_or(0.0);
    let req = LlmRequest {
        system: String::new(),
        messages: vec![ChatMessage::user(question)],
        passages,
        temperature: 0.0,
        max_tokens: 100,
        fallback_message: FALLBACK.into(),
    };
    (OfflineAnswerer::new().answer(&req).0, top)
}

#[derive(Default)]
struct Tally {
    right: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.right += ok as usize;
    }
    fn share(&self) -> f64 {
        self.right as f64 / self.total.max(1) as f64
    }
}

#[tokio::test]
async fn paraphrased_questions_find_their_faq_and_off_topic_ones_get_the_fallback() {
    let api = Api::start().await;
    let (_, token) = api.user("owner@example.com").await;
    let ws = api.workspace(&token, "Paraphrase").await;
    let kbs = [
        ingest(&api, &token, ws, "vet_clinic.json").await,
        ingest(&api, &token, ws, "daycare.json").await,
    ];
    let embedded: i64 = api
        .count("select count(*) from knowledge_chunks where embedding_model = 'all-MiniLM-L6-v2' and question_embedding is not null")
        .await;
    assert_eq!(
        embedded, 36,
        "every FAQ chunk and its question embedded at ingest"
    );
    let embedder =
        switchboard::agent_runtime::minilm::shared(&api.config.embeddings.local_model_dir)
            .expect("MiniLM loads");
    let knowledge = KnowledgeIndex::new(api.db.pool.clone(), &embedder.name());

    let mut splits = [Tally::default(), Tally::default()]; // tune, untouched
    let mut off_topic = [Tally::default(), Tally::default()];
    let mut misses = Vec::new();
    for kb in &kbs {
        for (i, (q, faq)) in kb.questions.iter().enumerate() {
            let (said, top) = answer(&knowledge, embedder.as_ref(), ws, kb.agent, q).await;
            let ok = said == for_speech(&kb.answers[*faq]);
            println!(
                "{} {top:.3} {} {q:?} -> {said:?}",
                ["tune", "test"][i % 2],
                if ok { "ok  " } else { "MISS" }
            );
            splits[i % 2].add(ok);
            if !ok {
                misses.push(format!("{q:?} -> {said:?}"));
            }
        }
    }
    let off = fixture("off_topic.json");
    for (i, q) in off["questions"].as_array().unwrap().iter().enumerate() {
        let q = q.as_str().unwrap();
        for kb in &kbs {
            let (said, top) = answer(&knowledge, embedder.as_ref(), ws, kb.agent, q).await;
            let ok = said == FALLBACK;
            println!(
                "{} {top:.3} {} off-topic {q:?} -> {said:?}",
                ["tune", "test"][i % 2],
                if ok { "ok  " } else { "MISS" }
            );
            off_topic[i % 2].add(ok);
            if !ok {
                misses.push(format!("off-topic {q:?} -> {said:?}"));
            }
        }
    }
    // The demo agent: an FAQ with exactly the caller's question wins over
    // entries that share its words (Tuesday's hours).
    switchboard::db::seed::seed_demo(&api.db.pool)
        .await
        .expect("seed");
    let (demo, demo_ws): (Uuid, Uuid) =
        sqlx::query_as("select id, workspace_id from agents where name = 'Reception'")
            .fetch_one(&api.db.pool)
            .await
            .expect("demo agent");
    switchboard::agent_runtime::embeddings::embed_missing_chunks(
        &api.db.pool,
        embedder.as_ref(),
        demo_ws,
        1000,
    )
    .await
    .expect("embed demo");
    let (said, _) = answer(
        &knowledge,
        embedder.as_ref(),
        demo_ws,
        demo,
        "What are your opening hours?",
    )
    .await;
    assert!(said.starts_with("We are open Monday to Friday"), "{said:?}");

    println!(
        "paraphrases: tuning split {}/{} ({:.0} %), untouched split {}/{} ({:.0} %)",
        splits[0].right,
        splits[0].total,
        100.0 * splits[0].share(),
        splits[1].right,
        splits[1].total,
        100.0 * splits[1].share()
    );
    println!(
        "off-topic → fallback: tuning split {}/{}, untouched split {}/{}",
        off_topic[0].right, off_topic[0].total, off_topic[1].right, off_topic[1].total
    );
    let untouched = Tally {
        right: splits[1].right + off_topic[1].right,
        total: splits[1].total + off_topic[1].total,
    };
    assert!(
        untouched.share() >= 0.9,
        "untouched split {}/{} right; misses: {misses:#?}",
        untouched.right,
        untouched.total
    );
    assert!(
        off_topic[1].share() >= 0.9,
        "off-topic questions must get the fallback; misses: {misses:#?}"
    );
}
