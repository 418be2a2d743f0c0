//! Answer accuracy of retrieval alone, in seconds: the knowledge of the
//! conversation benchmark's tuning bases and of the paraphrase fixtures is
//! indexed in memory as the runtime indexes it (FAQ chunks `Q: …\nA: …`,
//! their vectors and their questions' and answers' vectors from the default embedder,
//! the everyday requests as the off-topic reference), each question is
//! searched, and the offline answerer's rule decides: the best passage at
//! or above its floor, else the fallback. Prints the misses of the tuning
//! questions and only the totals of the untouched splits; the benchmark's
//! held-out base is never read. The end-to-end figures are the paraphrase
//! test's and the conversation benchmark's.
//!
//! Run: `cargo bench --bench retrieval_accuracy` (after scripts/setup).

use std::path::Path;

use serde_json::Value;
use switchboard::agent_runtime::embeddings::{embed_query, Embedder};
use switchboard::agent_runtime::llm_offline::ANSWER_FLOOR;
use switchboard::agent_runtime::retrieval::index::ChunkRow;
use switchboard::agent_runtime::retrieval::{AgentIndex, Everyday};
use uuid::Uuid;

const FALLBACK: &str = "fallback";
/// The conversation benchmark's tuning bases (`bench/conversation/kb`).
const TUNING_BASES: [&str; 4] = [
    "dental.json",
    "garage.json",
    "plumbing.json",
    "pharmacy.json",
];

/// (best score, lead over the second) of each question answered right
/// with an entry (not the fallback).
static MARGINS: std::sync::Mutex<Vec<(f32, f32)>> = std::sync::Mutex::new(Vec::new());

struct Case {
    said: String,
    /// FAQ position, or None for the fallback.
    expected: Option<usize>,
}

struct Kb {
    name: String,
    faqs: Vec<(String, String)>,
    documents: Vec<String>,
    tuning: Vec<Case>,
    untouched: Vec<Case>,
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn faqs(v: &Value) -> Vec<(String, String)> {
    v["faqs"]
        .as_array()
        .expect("faqs")
        .iter()
        .map(|f| {
            (
                f["question"].as_str().unwrap_or_default().to_string(),
                f["answer"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A conversation benchmark base: questions name the FAQ by id.
fn bench_kb(path: &Path) -> Kb {
    let v = read(path);
    let ids: Vec<&str> = v["faqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap_or_default())
        .collect();
    let tuning = v["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| Case {
            said: q["said"].as_str().unwrap().to_string(),
            expected: ids
                .iter()
                .position(|id| Some(*id) == q["expected"].as_str()),
        })
        .collect();
    Kb {
        name: v["name"].as_str().unwrap_or("?").into(),
        faqs: faqs(&v),
        documents: v["documents"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|x| x["content"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        tuning,
        untouched: Vec::new(),
    }
}

/// A paraphrase fixture: questions name the FAQ by position; the
/// off-topic questions are asked of every fixture base.
fn fixture_kb(path: &Path, off_topic: &Value) -> Kb {
    let v = read(path);
    let split = |key: &str| -> Vec<Case> {
        let mut cases: Vec<Case> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| Case {
                said: q["q"].as_str().unwrap().to_string(),
                expected: q["faq"].as_u64().map(|f| f as usize),
            })
            .collect();
        cases.extend(off_topic[key].as_array().unwrap().iter().map(|q| Case {
            said: q.as_str().unwrap().to_string(),
            expected: None,
        }));
        cases
    };
    Kb {
        name: v["name"].as_str().unwrap_or("?").into(),
        faqs: faqs(&v),
        documents: Vec::new(),
        tuning: split("questions"),
        untouched: split("untouched"),
    }
}

async fn index(kb: &Kb, embedder: &dyn Embedder, everyday: &Everyday) -> AgentIndex {
    let contents: Vec<String> = kb
        .faqs
        .iter()
        .map(|(q, a)| format!("Q: {q}\nA: {a}"))
        .chain(kb.documents.iter().cloned())
        .collect();
    let vectors = embedder.embed(&contents).await.expect("embed chunks");
    let questions: Vec<String> = kb.faqs.iter().map(|(q, _)| q.clone()).collect();
    let question_vectors = embedder.embed(&questions).await.expect("embed questions");
    let answers: Vec<String> = kb.faqs.iter().map(|(_, a)| a.clone()).collect();
    let answer_vectors = embedder.embed(&answers).await.expect("embed answers");
    let rows: Vec<ChunkRow> = contents
        .into_iter()
        .zip(vectors)
        .enumerate()
        .map(|(i, (content, v))| ChunkRow {
            id: Uuid::from_u128(i as u128 + 1),
            source_id: Uuid::nil(),
            agent_id: None,
            chunk_index: i as i32,
            content,
            embedding: Some(v),
            question_embedding: question_vectors.get(i).cloned(),
            answer_embedding: answer_vectors.get(i).cloned(),
        })
        .collect();
    AgentIndex::build(rows).with_everyday(everyday)
}

/// (right, total) over `cases`, printing each miss when `show`; the best
/// score of each question answered right goes to `right_scores`, of each
/// miss to `miss_scores` (how sure retrieval is decides whether a turn is
/// heard again with the knowledge's words, `agent_runtime::listen`).
async fn score(
    kb: &Kb,
    idx: &AgentIndex,
    embedder: &dyn Embedder,
    cases: &[Case],
    show: bool,
    right_scores: &mut Vec<f32>,
    miss_scores: &mut Vec<f32>,
) -> (usize, usize) {
    let mut right = 0;
    let floor = floor();
    for case in cases {
        // The question's vector as the runtime makes it.
        let qv = embed_query(embedder, &case.said, std::time::Duration::from_secs(60)).await;
        let found = idx.search(&case.said, qv.as_deref(), 4, 0.0, false);
        let answered = found
            .iter()
            .find(|c| c.score >= floor)
            .map(|c| c.chunk_index as usize);
        let ok = answered == case.expected;
        right += ok as usize;
        let best = found.first().map_or(0.0, |c| c.score);
        let second = found.get(1).map_or(0.0, |c| c.score);
        if ok && case.expected.is_some() {
            let mut m = MARGINS.lock().unwrap();
            m.push((best, best - second));
        }
        if ok {
            right_scores.push(best);
        } else {
            miss_scores.push(best);
        }
        if show && !ok {
            let name = |i: Option<usize>| {
                i.and_then(|i| kb.faqs.get(i)).map_or_else(
                    || match i {
                        Some(d) => format!("document {d}"),
                        None => FALLBACK.to_string(),
                    },
                    |(q, _)| q.clone(),
                )
            };
            let top: Vec<String> = found
                .iter()
                .take(3)
                .map(|c| {
                    format!(
                        "{:.3} (t {:.2} v {:.3}) {}",
                        c.score,
                        c.text_score,
                        c.vector_score.unwrap_or(0.0),
                        name(Some(c.chunk_index as usize))
                    )
                })
                .collect();
            println!(
                "  MISS {:?}: want {:?}, got {:?}\n       {}",
                case.said,
                name(case.expected),
                name(answered),
                top.join("\n       ")
            );
        }
    }
    (right, cases.len())
}

/// The agent's transcripts of the benchmark's questions on the tuning
/// bases, with the base's position in `kbs`.
fn heard_cases(path: &Path, kbs: &[Kb]) -> Vec<(usize, Case)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&text).unwrap_or_default();
    let ids_of = |name: &str| -> Option<(usize, Vec<String>)> {
        let k = kbs.iter().position(|kb| kb.name == name)?;
        let file = TUNING_BASES
            .iter()
            .map(|f| {
                read(
                    &Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("bench/conversation/kb")
                        .join(f),
                )
            })
            .find(|b| b["name"].as_str() == Some(name))?;
        let ids = file["faqs"]
            .as_array()?
            .iter()
            .map(|f| f["id"].as_str().unwrap_or_default().to_string())
            .collect();
        Some((k, ids))
    };
    v["turns"]
        .as_array()
        .map(|turns| {
            turns
                .iter()
                .filter_map(|t| {
                    let (k, ids) = ids_of(t["kb"].as_str()?)?;
                    Some((
                        k,
                        Case {
                            said: t["heard_by_agent"].as_str()?.to_string(),
                            expected: ids
                                .iter()
                                .position(|id| Some(id.as_str()) == t["expected"].as_str()),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = switchboard::config::Config::load(None).expect("config");
    let embedder = switchboard::agent_runtime::sentence_embedder::shared(
        &root.join(&config.embeddings.local_model_dir),
        &root.join(&config.tts.onnxruntime_path),
    )
    .expect("the embedding model loads (run scripts/setup)");
    let everyday = Everyday::embed(embedder.as_ref()).await.expect("everyday");
    let off_topic = read(&root.join("tests/fixtures/knowledge/off_topic.json"));
    let mut kbs: Vec<Kb> = TUNING_BASES
        .iter()
        .map(|f| bench_kb(&root.join("bench/conversation/kb").join(f)))
        .collect();
    for f in ["vet_clinic.json", "daycare.json"] {
        kbs.push(fixture_kb(
            &root.join("tests/fixtures/knowledge").join(f),
            &off_topic,
        ));
    }
    // The untouched splits are scored only when asked (`UNTOUCHED=1`), once
    // tuning is over: reading their totals after every change would tune
    // on them too.
    let with_untouched = std::env::var("UNTOUCHED").is_ok();
    let (mut tuning, mut untouched) = ((0, 0), (0, 0));
    let (mut right_scores, mut miss_scores) = (Vec::new(), Vec::new());
    let (mut unused_right, mut unused_miss) = (Vec::new(), Vec::new());
    // What the agent heard in the last conversation benchmark run, asked
    // of the same tuning bases (the held-out base is not among them).
    let heard = heard_cases(&root.join("bench/results/conversation.json"), &kbs);
    for (k, kb) in kbs.iter().enumerate() {
        let idx = index(kb, embedder.as_ref(), &everyday).await;
        println!("{}", kb.name);
        let t = score(
            kb,
            &idx,
            embedder.as_ref(),
            &kb.tuning,
            true,
            &mut right_scores,
            &mut miss_scores,
        )
        .await;
        let mine: Vec<Case> = heard
            .iter()
            .filter(|(i, _)| *i == k)
            .map(|(_, c)| Case {
                said: c.said.clone(),
                expected: c.expected,
            })
            .collect();
        if !mine.is_empty() {
            println!("  as heard by the agent in bench/results/conversation.json:");
            let h = score(
                kb,
                &idx,
                embedder.as_ref(),
                &mine,
                true,
                &mut unused_right,
                &mut unused_miss,
            )
            .await;
            println!("  heard {}/{}", h.0, h.1);
        }
        let u = if with_untouched {
            score(
                kb,
                &idx,
                embedder.as_ref(),
                &kb.untouched,
                false,
                &mut unused_right,
                &mut unused_miss,
            )
            .await
        } else {
            (0, 0)
        };
        println!("  tuning {}/{}, untouched {}/{}", t.0, t.1, u.0, u.1);
        tuning = (tuning.0 + t.0, tuning.1 + t.1);
        untouched = (untouched.0 + u.0, untouched.1 + u.1);
    }
    let pct = |(r, t): (usize, usize)| 100.0 * r as f64 / t.max(1) as f64;
    // More bases in the conversation benchmark's form, scored apart with
    // only their totals: `EXTRA_BASES="a.json b.json"` (the query adapter's
    // training bases, for a split the adapter was not trained on).
    let extra_paths = std::env::var("EXTRA_BASES").unwrap_or_default();
    let mut extra = (0, 0);
    let show = std::env::var("EXTRA_MISSES").is_ok();
    for path in extra_paths.split_whitespace() {
        let kb = bench_kb(Path::new(path));
        let idx = index(&kb, embedder.as_ref(), &everyday).await;
        let (mut r, mut m) = (Vec::new(), Vec::new());
        let e = score(
            &kb,
            &idx,
            embedder.as_ref(),
            &kb.tuning,
            show,
            &mut r,
            &mut m,
        )
        .await;
        println!("extra {}: {}/{}", kb.name, e.0, e.1);
        extra = (extra.0 + e.0, extra.1 + e.1);
    }
    if extra.1 > 0 {
        println!("extra bases {}/{} ({:.1} %)", extra.0, extra.1, pct(extra));
    }
    let answered = MARGINS.lock().unwrap().clone();
    println!(
        "answered right with an entry ({}): how many a second hearing would cost",
        answered.len()
    );
    for level in [0.4f32, 0.45, 0.5] {
        for lead in [0.0f32, 0.02, 0.03, 0.05] {
            let n = answered
                .iter()
                .filter(|(b, m)| *b < level || *m < lead)
                .count();
            println!("  best < {level:.2} or lead < {lead:.2}: {n}");
        }
    }
    println!("best score of the tuning questions: how many fall below each level");
    for level in [0.35f32, 0.4, 0.45, 0.5, 0.55, 0.6] {
        let below = |v: &[f32]| v.iter().filter(|s| **s < level).count();
        println!(
            "  below {level:.2}: {} of {} answered right, {} of {} missed",
            below(&right_scores),
            right_scores.len(),
            below(&miss_scores),
            miss_scores.len()
        );
    }
    println!(
        "tuning {}/{} ({:.1} %), untouched {}/{} ({:.1} %)",
        tuning.0,
        tuning.1,
        pct(tuning),
        untouched.0,
        untouched.1,
        pct(untouched)
    );
}

/// The offline answerer's floor, or `FLOOR` to see what another would do.
fn floor() -> f32 {
    std::env::var("FLOOR")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(ANSWER_FLOOR)
}
