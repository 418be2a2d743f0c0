//! One agent's knowledge in memory: its chunks (its own and the workspace-wide
//! ones), an inverted index for BM25-style full-text scoring, each chunk's
//! vector and, for FAQ chunks, each question's vector. A search touches no
//! database, so it takes about a millisecond and works during an outage.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::everyday::{Everyday, Reference};
use super::normalize::{query_terms, terms, Term, Vocabulary};
use super::vocabulary::recognizer_hint;
use super::RetrievedChunk;

/// BM25 term-frequency saturation and length normalisation (the usual values).
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Most words of a chunk that are indexed (chunks hold about 200).
const MAX_CHUNK_WORDS: usize = 2000;
/// Weights of the vector and the full-text part of the absolute score. The
/// text part counts in proportion to the vector's evidence (nothing below
/// a cosine of `GATE_LOW`, all above `GATE_HIGH`): a shared word in an
/// unrelated entry ("file my taxes" / "file the claim") is not relevance.
/// Chosen on the tuning split of `tests/retrieval_paraphrase.rs` with
/// all-mpnet-base-v2 (with MiniLM it was 0.7 / 0.3): the stronger model
/// carries the paraphrases, and the words mostly help what the recognizer
/// spells oddly.
const VECTOR_WEIGHT: f32 = 0.87;
const TEXT_WEIGHT: f32 = 0.13;
const GATE_LOW: f32 = 0.1;
const GATE_HIGH: f32 = 0.4;
/// Longest vocabulary scanned for a compound ending with a question's word.
const MAX_SUFFIX_SCAN: usize = 50_000;
/// A FAQ question with (nearly) the caller's words: its score is lifted to
/// at least this, above any paraphrase's.
const NEAR_EXACT_SCORE: f32 = 0.95;
/// Share of words two questions must have in common to count as the same
/// question (Jaccard over their terms), or the cosine of their vectors.
const NEAR_EXACT_JACCARD: f32 = 0.8;
const NEAR_EXACT_COSINE: f32 = 0.93;

/// One chunk as loaded from `knowledge_chunks`.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub id: Uuid,
    pub source_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub chunk_index: i32,
    pub content: String,
    pub embedding: Option<Vec<f32>>,
    pub question_embedding: Option<Vec<f32>>,
    pub answer_embedding: Option<Vec<f32>>,
}

struct Doc {
    row: ChunkRow,
    len: f32,
    question_len: f32,
    /// The term sets of each question of a FAQ chunk ("Are you open on
    /// Tuesday? What are your hours on Tuesday?" is two questions).
    questions: Vec<HashSet<String>>,
}

/// A posting: document number and term frequency.
type Postings = HashMap<String, Vec<(u32, u16)>>;

pub struct AgentIndex {
    docs: Vec<Doc>,
    /// Terms of whole chunks, and of their FAQ questions alone.
    postings: Postings,
    question_postings: Postings,
    avg_len: f32,
    avg_question_len: f32,
    dims: usize,
    /// `docs.len() × dims`, zeros where a chunk has no vector.
    vectors: Vec<f32>,
    question_vectors: Vec<f32>,
    answer_vectors: Vec<f32>,
    has_vector: Vec<bool>,
    has_question_vector: Vec<bool>,
    has_answer_vector: Vec<bool>,
    /// Everyday requests this knowledge does not cover: a match they beat
    /// is off-topic (empty until the requests are embedded).
    reference: Reference,
    /// The knowledge's own words, for the recognizer (`vocabulary`),
    /// built when first asked for (never while the hint is off).
    recognizer_hint: std::sync::OnceLock<Option<String>>,
}

/// The question lines of a `Q: …\nA: …` chunk, if it is one.
pub fn faq_question(content: &str) -> Option<&str> {
    let first = content.lines().next()?.trim();
    first
        .strip_prefix("Q:")
        .or_else(|| first.strip_prefix("Question:"))
        .map(str::trim)
        .filter(|q| !q.is_empty())
}

/// The answer of a `Q: …\nA: …` chunk: what follows the question line,
/// without its `A:` label.
pub fn faq_answer(content: &str) -> Option<&str> {
    faq_question(content)?;
    let (_, rest) = content.split_once('\n')?;
    let rest = rest.trim();
    let answer = rest
        .strip_prefix("A:")
        .or_else(|| rest.strip_prefix("Answer:"))
        .unwrap_or(rest)
        .trim();
    (!answer.is_empty()).then_some(answer)
}

fn count(terms: &[Term]) -> HashMap<&str, u16> {
    let mut tf: HashMap<&str, u16> = HashMap::new();
    for t in terms {
        let e = tf.entry(t.stem.as_str()).or_insert(0);
        *e = e.saturating_add(1);
    }
    tf
}

fn stem_set(text: &str) -> HashSet<String> {
    terms(text, MAX_CHUNK_WORDS)
        .into_iter()
        .map(|t| t.stem)
        .collect()
}

impl AgentIndex {
    /// Builds the index; vectors of a length other than the first one seen
    /// (another model) are left out.
    pub fn build(rows: Vec<ChunkRow>) -> AgentIndex {
        let dims = rows
            .iter()
            .find_map(|r| r.embedding.as_ref().map(Vec::len))
            .unwrap_or(0);
        let n = rows.len();
        let mut idx = AgentIndex {
            docs: Vec::with_capacity(n),
            postings: HashMap::new(),
            question_postings: HashMap::new(),
            avg_len: 1.0,
            avg_question_len: 1.0,
            dims,
            vectors: vec![0.0; n * dims],
            question_vectors: vec![0.0; n * dims],
            answer_vectors: vec![0.0; n * dims],
            has_vector: vec![false; n],
            has_question_vector: vec![false; n],
            has_answer_vector: vec![false; n],
            reference: Reference::default(),
            recognizer_hint: std::sync::OnceLock::new(),
        };
        let (mut total_len, mut total_qlen, mut questions_seen) = (0f32, 0f32, 0f32);
        for (i, row) in rows.into_iter().enumerate() {
            let doc_terms = terms(&row.content, MAX_CHUNK_WORDS);
            for (stem, tf) in count(&doc_terms) {
                idx.postings
                    .entry(stem.to_string())
                    .or_default()
                    .push((i as u32, tf));
            }
            let question = faq_question(&row.content);
            let question_terms = question
                .map(|q| terms(q, MAX_CHUNK_WORDS))
                .unwrap_or_default();
            for (stem, tf) in count(&question_terms) {
                idx.question_postings
                    .entry(stem.to_string())
                    .or_default()
                    .push((i as u32, tf));
            }
            let questions = question
                .map(|q| {
                    q.split_inclusive(['?', '.', '!'])
                        .map(stem_set)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let put = |flag: &mut bool, dst: &mut [f32], v: &Option<Vec<f32>>| {
                if let Some(v) = v.as_ref().filter(|v| v.len() == dims && dims > 0) {
                    dst.copy_from_slice(v);
                    *flag = true;
                }
            };
            let span = i * dims..(i + 1) * dims;
            put(
                &mut idx.has_vector[i],
                &mut idx.vectors[span.clone()],
                &row.embedding,
            );
            put(
                &mut idx.has_question_vector[i],
                &mut idx.question_vectors[span.clone()],
                &row.question_embedding,
            );
            put(
                &mut idx.has_answer_vector[i],
                &mut idx.answer_vectors[span],
                &row.answer_embedding,
            );
            total_len += doc_terms.len() as f32;
            if question.is_some() {
                total_qlen += question_terms.len() as f32;
                questions_seen += 1.0;
            }
            idx.docs.push(Doc {
                len: doc_terms.len() as f32,
                question_len: question_terms.len() as f32,
                questions,
                row,
            });
        }
        if n > 0 {
            idx.avg_len = (total_len / n as f32).max(1.0);
        }
        if questions_seen > 0.0 {
            idx.avg_question_len = (total_qlen / questions_seen).max(1.0);
        }
        idx
    }

    /// The knowledge's own words as a hint for the recognizer: whisper's
    /// initial prompt for this agent's callers.
    pub fn recognizer_hint(&self) -> Option<&str> {
        self.recognizer_hint
            .get_or_init(|| {
                recognizer_hint(
                    self.docs
                        .iter()
                        .filter_map(|d| faq_question(&d.row.content)),
                    self.docs
                        .iter()
                        .map(|d| match faq_question(&d.row.content) {
                            Some(_) => faq_answer(&d.row.content).unwrap_or(""),
                            None => d.row.content.as_str(),
                        }),
                )
            })
            .as_deref()
    }

    /// With the everyday requests of `everyday` (same model as the
    /// chunks' vectors) that this knowledge does not cover.
    pub fn with_everyday(mut self, everyday: &Everyday) -> AgentIndex {
        if everyday.dims() != self.dims || self.dims == 0 {
            return self;
        }
        let own: Vec<&[f32]> = (0..self.docs.len())
            .flat_map(|i| {
                let span = i * self.dims..(i + 1) * self.dims;
                [
                    self.has_vector[i].then(|| &self.vectors[span.clone()]),
                    self.has_question_vector[i].then(|| &self.question_vectors[span]),
                ]
            })
            .flatten()
            .collect();
        self.reference = everyday.reference_for(&own);
        self
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Vector length of the chunks (0 when none has a vector).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Chunks whose vector is missing (not yet embedded, or embedded with
    /// another model and cleared).
    pub fn missing_vectors(&self) -> usize {
        self.has_vector.iter().filter(|h| !**h).count()
    }

    /// The best-fitting `limit` chunks for `query` whose score reaches
    /// `floor`, best first. Chunks are ranked by how well the caller's
    /// question fits the whole entry, its question and its answer (the mean
    /// of the three cosines, each view catching paraphrases the others
    /// miss); whether a chunk is relevant at all is judged by `score` (the
    /// closer of the whole entry and its question), whose scale the floors
    /// and the everyday reference were chosen on.
    /// `query_vector` must come from the model the chunks were embedded
    /// with; without it (or with another length) scores are full-text only.
    pub fn search(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        limit: usize,
        floor: f32,
        off_topic_too: bool,
    ) -> Vec<RetrievedChunk> {
        let n = self.docs.len();
        if n == 0 || limit == 0 {
            return Vec::new();
        }
        let qterms = query_terms(query, self);
        let mut weights: HashMap<&str, f32> = HashMap::new();
        for t in &qterms {
            let w = weights.entry(t.stem.as_str()).or_insert(0.0);
            *w = w.max(t.weight);
        }
        // IDF in the agent's scope; a word the knowledge never uses counts
        // half, so an off-topic question does not look covered.
        let idf = |df: usize| ((n as f32 - df as f32 + 0.5) / (df as f32 + 0.5)).ln_1p();
        let mut total = 0f32;
        let mut text = vec![0f32; n];
        let mut question_text = vec![0f32; n];
        for (stem, w) in &weights {
            let postings = self.postings.get(*stem);
            let df = postings.map_or(0, Vec::len);
            let weight = w * if df == 0 { 0.5 * idf(0) } else { idf(df) };
            total += weight;
            let saturate = |tf: u16, len: f32, avg: f32| {
                let tf = tf as f32;
                (tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg))).min(1.0)
            };
            for &(d, tf) in postings.into_iter().flatten() {
                let doc = &self.docs[d as usize];
                text[d as usize] += weight * saturate(tf, doc.len, self.avg_len);
            }
            for &(d, tf) in self.question_postings.get(*stem).into_iter().flatten() {
                let doc = &self.docs[d as usize];
                question_text[d as usize] +=
                    weight * saturate(tf, doc.question_len, self.avg_question_len);
            }
        }
        let qset: HashSet<&str> = weights.keys().copied().collect();
        let qv = query_vector.filter(|v| v.len() == self.dims && self.dims > 0);
        if qset.is_empty() && qv.is_none() {
            return Vec::new(); // nothing to match (empty, or stop words only)
        }
        let everyday = qv
            .filter(|_| !off_topic_too)
            .and_then(|q| self.reference.nearest(q));
        let mut scored: Vec<Scored> = Vec::with_capacity(n);
        let blend = |v: f32, text_score: f32| {
            let gate = ((v - GATE_LOW) / (GATE_HIGH - GATE_LOW)).clamp(0.0, 1.0);
            VECTOR_WEIGHT * v.max(0.0) + TEXT_WEIGHT * text_score * gate
        };
        for (i, doc) in self.docs.iter().enumerate() {
            let text_score = if total > 0.0 {
                (text[i].max(question_text[i]) / total).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let span = i * self.dims..(i + 1) * self.dims;
            let cos = |has: &[bool], vectors: &[f32]| {
                qv.filter(|_| has[i])
                    .map(|q| dot(q, &vectors[span.clone()]))
            };
            let chunk_cos = cos(&self.has_vector, &self.vectors);
            let question_cos = cos(&self.has_question_vector, &self.question_vectors);
            let answer_cos = cos(&self.has_answer_vector, &self.answer_vectors);
            let vector_score = match (chunk_cos, question_cos) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let mut score = vector_score.map_or(text_score, |v| blend(v, text_score));
            let (sum, views) = [chunk_cos, question_cos, answer_cos]
                .into_iter()
                .flatten()
                .fold((0f32, 0u8), |(sum, n), c| (sum + c, n + 1));
            let mut fit = if views == 0 {
                text_score
            } else {
                blend(sum / f32::from(views), text_score)
            };
            let same_words = question_text[i] > 0.0
                && doc
                    .questions
                    .iter()
                    .any(|q| jaccard(&qset, q) >= NEAR_EXACT_JACCARD);
            if same_words || question_cos.is_some_and(|c| c >= NEAR_EXACT_COSINE) {
                score = score.max(NEAR_EXACT_SCORE + 0.05 * question_cos.unwrap_or(0.0));
                fit = 1.0 + score; // above every entry that is not the caller's question
            } else if Reference::beats(everyday, vector_score) {
                continue; // an everyday request, not this entry, is what was asked
            }
            if score >= floor {
                scored.push(Scored {
                    fit,
                    score,
                    doc: i,
                    text_score,
                    vector_score,
                });
            }
        }
        let by_fit = |a: &Scored, b: &Scored| {
            b.fit
                .total_cmp(&a.fit)
                .then(b.text_score.total_cmp(&a.text_score))
                .then(a.doc.cmp(&b.doc))
        };
        if scored.len() > limit {
            scored.select_nth_unstable_by(limit - 1, by_fit);
            scored.truncate(limit);
        }
        scored.sort_by(by_fit);
        scored
            .into_iter()
            .map(|s| {
                let r = &self.docs[s.doc].row;
                RetrievedChunk {
                    chunk_id: r.id,
                    source_id: r.source_id,
                    agent_id: r.agent_id,
                    chunk_index: r.chunk_index,
                    content: r.content.clone(),
                    score: s.score,
                    text_score: s.text_score,
                    vector_score: s.vector_score,
                }
            })
            .collect()
    }
}

/// A chunk that reached the floor: ranked by `fit`, judged by `score`.
struct Scored {
    fit: f32,
    score: f32,
    doc: usize,
    text_score: f32,
    vector_score: Option<f32>,
}

impl Vocabulary for AgentIndex {
    fn contains(&self, stem: &str) -> bool {
        self.postings.contains_key(stem)
    }
    fn ending_with(&self, stem: &str) -> Option<String> {
        if self.postings.len() > MAX_SUFFIX_SCAN {
            return None;
        }
        self.postings
            .keys()
            .filter(|k| k.len() > stem.len() + 2 && k.ends_with(stem))
            .min_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)))
            .cloned()
    }
}

fn jaccard(a: &HashSet<&str>, b: &HashSet<String>) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let common = b.iter().filter(|t| a.contains(t.as_str())).count();
    common as f32 / (a.len() + b.len() - common) as f32
}

/// Dot product of unit vectors (their cosine), in eight lanes so the
/// compiler vectorises it.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(content: &str, v: Option<Vec<f32>>) -> ChunkRow {
        ChunkRow {
            id: Uuid::new_v4(),
            source_id: Uuid::nil(),
            agent_id: None,
            chunk_index: 0,
            content: content.into(),
            embedding: v,
            question_embedding: None,
            answer_embedding: None,
        }
    }

    #[test]
    fn full_text_finds_compounds_and_ranks_by_coverage() {
        let idx = AgentIndex::build(vec![
            row(
                "Q: How much does a routine checkup cost?\nA: A checkup is 60 dollars.",
                None,
            ),
            row(
                "Q: Do you offer vaccines?\nA: Yes, all core vaccines.",
                None,
            ),
            row(
                "Q: Do you do dental cleaning?\nA: Yes, under anaesthesia.",
                None,
            ),
        ]);
        let found = idx.search(
            "What do you charge for a normal check up?",
            None,
            3,
            0.1,
            false,
        );
        assert!(found[0].content.contains("routine checkup"), "{found:?}");
        assert!(idx
            .search("pizza delivery downtown", None, 3, 0.1, false)
            .is_empty());
        assert!(idx.search("", None, 3, 0.0, false).is_empty());
    }

    #[test]
    fn the_faq_with_the_callers_question_wins() {
        let idx = AgentIndex::build(vec![
            row("Q: Are you open on Tuesday? What are your hours on Tuesday?\nA: On Tuesday we open at 8.", None),
            row("Q: What are your opening hours?\nA: Monday to Friday, 8 to 6.", None),
        ]);
        let found = idx.search("What are your opening hours?", None, 2, 0.0, false);
        assert!(found[0].content.contains("Monday to Friday"), "{found:?}");
        assert!(found[0].score >= NEAR_EXACT_SCORE);
        let found = idx.search("what are your hours on tuesday", None, 2, 0.0, false);
        assert!(found[0].content.contains("On Tuesday"), "{found:?}");
    }

    #[test]
    fn vectors_fuse_with_text_and_other_lengths_are_ignored() {
        let idx = AgentIndex::build(vec![
            row(
                "Q: Do you make house calls?\nA: Yes, within town.",
                Some(vec![1.0, 0.0]),
            ),
            row(
                "Q: Where is the clinic located?\nA: On Main Street.",
                Some(vec![0.0, 1.0]),
            ),
        ]);
        let found = idx.search(
            "Can the vet come to my home?",
            Some(&[0.9, 0.1]),
            2,
            0.0,
            false,
        );
        assert!(found[0].content.contains("house calls"), "{found:?}");
        assert!(found[0].vector_score.unwrap() > 0.8);
        // A query vector of another model's length: full-text only.
        let found = idx.search(
            "Where is the clinic?",
            Some(&[1.0, 0.0, 0.0]),
            2,
            0.0,
            false,
        );
        assert!(found[0].content.contains("Main Street"));
        assert_eq!(found[0].vector_score, None);
        assert_eq!(idx.missing_vectors(), 0);
    }

    #[test]
    fn an_entry_whose_answer_fits_outranks_one_whose_question_alone_is_close() {
        // The caller's question is closer to the waiting room's question
        // and whole entry (0.75, 0.7 against 0.6, 0.65), but far from its
        // answer (0.1), while the loaner entry fits in all three views.
        let unit = |v: [f32; 3]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.map(|x| x / n).to_vec()
        };
        let faq = |content: &str, chunk: [f32; 3], question: [f32; 3], answer: [f32; 3]| ChunkRow {
            question_embedding: Some(unit(question)),
            answer_embedding: Some(unit(answer)),
            ..row(content, Some(unit(chunk)))
        };
        let idx = AgentIndex::build(vec![
            faq(
                "Q: Can I wait while my car is serviced?\nA: Yes, our waiting room has coffee.",
                [0.7, 0.714, 0.0],
                [0.75, 0.661, 0.0],
                [0.1, 0.995, 0.0],
            ),
            faq(
                "Q: Do you have loaner cars?\nA: We have two loaner cars.",
                [0.65, 0.0, 0.76],
                [0.6, 0.0, 0.8],
                [0.7, 0.0, 0.714],
            ),
        ]);
        let query = unit([1.0, 0.0, 0.0]);
        let ask = |idx: &AgentIndex| {
            idx.search(
                "borrow one while mine is fixed",
                Some(&query),
                2,
                0.0,
                false,
            )
        };
        let found = ask(&idx);
        assert!(found[0].content.contains("loaner"), "{found:?}");
        // The relevance the floors judge stays the closer of the entry and
        // its question, which here favours the waiting room.
        assert!(found[1].score > found[0].score, "{found:?}");
        // Without the answers' vectors the waiting room would have won.
        let plain = AgentIndex::build(vec![
            row(
                "Q: Can I wait while my car is serviced?\nA: Yes.",
                Some(unit([0.7, 0.714, 0.0])),
            ),
            row(
                "Q: Do you have loaner cars?\nA: Two.",
                Some(unit([0.65, 0.0, 0.76])),
            ),
        ]);
        let found = ask(&plain);
        assert!(found[0].content.contains("wait"), "{found:?}");
    }

    #[test]
    fn faq_answers_are_read_without_their_label() {
        assert_eq!(faq_answer("Q: Hours?\nA: 8 to 6."), Some("8 to 6."));
        assert_eq!(
            faq_answer("Q: Hours?\nWe open at 8."),
            Some("We open at 8.")
        );
        assert_eq!(faq_answer("Q: Hours?"), None);
        assert_eq!(faq_answer("We open at 8.\nA: no"), None);
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }
}
