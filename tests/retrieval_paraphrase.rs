//! Paraphrase retrieval on knowledge bases used only by tests
//! (`tests/fixtures/knowledge/`: a vet clinic and a day care, FAQ entries
//! asked in callers' words, and off-topic questions). Through the real path:
//! FAQ sources ingested by the API into PostgreSQL and embedded with the
//! default embedder (all-mpnet-base-v2-q8), then the runtime's in-memory
//! retrieval and the offline answerer. Each fixture has a tuning split
//! (`questions`: the floor and the weights were chosen on it; its results
//! are printed) and an untouched split (`untouched`: written before tuning
//! and never looked at question by question while tuning). An untouched
//! split whose misses have been read joins the tuning split, and a new one
//! is written before the next round of tuning. The third split was written
//! on 2026-12-04 (after the weights for all-mpnet-base-v2 were chosen; the
//! second, whose misses were read, joined tuning) and only its totals have
//! been read.
//!
//! The goal is ≥ 90 % of the untouched split right, off-topic questions
//! included. Measured with all-mpnet-base-v2 on the third split: 31 of 36
//! paraphrases (86 %) and 10 of 16 off-topic questions, 41 of 52 in all
//! (79 %). With the everyday requests as the off-topic reference
//! (`retrieval::everyday`, its margin chosen on the tuning split, where
//! off-topic fallbacks went from 34 to 42 of 48 and paraphrases stayed at
//! 106 of 117), the third split's totals read once more: 31 of 36 and 13 of
//! 16, 44 of 52 (85 %). Ranked by the mean of the whole entry's, its
//! question's and its answer's cosine (2026-12-06; chosen on the tuning
//! split and the conversation benchmark's tuning bases, where it took
//! `benches/retrieval_accuracy` from 180 to 185 of 202), the third split's
//! totals read once more: 32 of 36 and 13 of 16, 45 of 52 (87 %). On
//! 2026-12-07 a failing run (the 8-bit MPNet, 31 of 36) printed the third
//! split's misses, so it joined the tuning split, and a fourth was written
//! the same day by a writer who saw only these fixtures (one new question
//! per FAQ entry, 8 new off-topic questions), not the code. Its totals
//! (read once, never its questions one by one), with the 8-bit MPNet: 29 of
//! 36 paraphrases (81 %) and 9 of 16 off-topic questions, 38 of 52 (73 %):
//! a harder split than the third, its off-topic questions mostly near the
//! businesses' own topics (its 8 off-topic questions were seen once, in a
//! diff, while the split was put in place; nothing was tuned since). The
//! test holds that level (a regression fails it); the README lists the
//! goal as not met.

use crate::api_support;

use api_support::Api;
use serde_json::{json, Value};
use switchboard::agent_runtime::embeddings::{embed_query, Embedder};
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
    /// (question, FAQ index) of the tuning and the untouched split.
    splits: [Vec<(String, usize)>; 2],
}

fn questions(v: &Value) -> Vec<(String, usize)> {
    v.as_array()
        .expect("questions")
        .iter()
        .map(|q| {
            (
                q["q"].as_str().unwrap().to_string(),
                q["faq"].as_u64().unwrap() as usize,
            )
        })
        .collect()
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
        splits: [questions(&kb["questions"]), questions(&kb["untouched"])],
    }
}

/// What the offline answerer says to `question` for this agent.
async fn answer(
    knowledge: &KnowledgeIndex,
    embedder: &dyn Embedder,
    ws: Uuid,
    agent: Uuid,
    question: &str,
    show: bool,
) -> (String, f32) {
    // The question's vector as a turn makes it (once: the tuning view
    // below searches with it again).
    let vector = embed_query(embedder, question, std::time::Duration::from_secs(60)).await;
    let opts = SearchOptions {
        limit: 4,
        floor: retrieval::DEFAULT_FLOOR,
        off_topic_too: false,
    };
    let (passages, embedded) = retrieval::search(
        knowledge,
        (ws, Some(agent)),
        question,
        std::future::ready(vector.clone()),
        opts,
    )
    .await
    .expect("search");
    assert!(embedded, "the question's embedding took part");
    let top = passages.first().map(|p| p.score).unwrap_or(0.0);
    if show && std::env::var("RETRIEVAL_TUNE").is_ok() {
        let (all, _) = retrieval::search(
            knowledge,
            (ws, Some(agent)),
            question,
            std::future::ready(vector),
            SearchOptions {
                limit: 3,
                floor: 0.0,
                off_topic_too: false,
            },
        )
        .await
        .expect("search");
        for p in all {
            println!(
                "      {:.3} t{:.3} v{:.3} {:?}",
                p.score,
                p.text_score,
                p.vector_score.unwrap_or(0.0),
                p.content.lines().next().unwrap_or("")
            );
        }
    }
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
        .count("select id from knowledge_chunks where embedding_model = 'all-mpnet-base-v2-q8' and question_embedding is not null and cardinality(answer_embedding) = 768")
        .await;
    assert_eq!(
        embedded, 36,
        "every FAQ chunk, its question and its answer embedded at ingest"
    );
    let embedder = switchboard::agent_runtime::sentence_embedder::shared(
        &api.config.embeddings.local_model_dir,
        &api.config.tts.onnxruntime_path,
    )
    .expect("the embedding model loads");
    let knowledge = KnowledgeIndex::new(api.db.pool.clone(), &embedder.name());
    // As a node does at start: the everyday requests off-topic questions
    // are closer to.
    let requests = knowledge
        .learn_everyday(embedder.as_ref())
        .await
        .expect("everyday requests embedded");
    assert!(requests >= 100, "{requests}");

    let mut splits = [Tally::default(), Tally::default()]; // tuning, untouched
    let mut off_topic = [Tally::default(), Tally::default()];
    let mut misses: [Vec<String>; 2] = Default::default();
    let off = fixture("off_topic.json");
    let off_splits: Vec<Vec<String>> = ["questions", "untouched"]
        .iter()
        .map(|k| {
            off[*k]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    for split in 0..2 {
        // Only the tuning split is shown question by question.
        let show = split == 0;
        for kb in &kbs {
            for (q, faq) in &kb.splits[split] {
                let (said, top) =
                    answer(&knowledge, embedder.as_ref(), ws, kb.agent, q, show).await;
                let ok = said == for_speech(&kb.answers[*faq]);
                if show {
                    println!(
                        "{top:.3} {} {q:?} -> {said:?}",
                        if ok { "ok  " } else { "MISS" }
                    );
                }
                splits[split].add(ok);
                if !ok {
                    misses[split].push(format!("{q:?} -> {said:?}"));
                }
            }
        }
        for q in &off_splits[split] {
            for kb in &kbs {
                let (said, top) =
                    answer(&knowledge, embedder.as_ref(), ws, kb.agent, q, show).await;
                let ok = said == FALLBACK;
                if show {
                    println!(
                        "{top:.3} {} off-topic {q:?} -> {said:?}",
                        if ok { "ok  " } else { "MISS" }
                    );
                }
                off_topic[split].add(ok);
                if !ok {
                    misses[split].push(format!("off-topic {q:?} -> {said:?}"));
                }
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
        false,
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
    assert!(splits[1].total >= 30 && off_topic[1].total >= 5);
    assert!(
        splits[1].share() >= 0.8,
        "untouched paraphrases {}/{} right; misses: {:#?}",
        splits[1].right,
        splits[1].total,
        misses[1]
    );
    assert!(
        untouched.share() >= 0.73,
        "untouched split {}/{} right; misses: {:#?}",
        untouched.right,
        untouched.total,
        misses[1]
    );
    assert!(
        off_topic[1].share() >= 0.56,
        "off-topic questions must get the fallback; misses: {:#?}",
        misses[1]
    );
}
