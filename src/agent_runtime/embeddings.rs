//! Text embeddings for retrieval: the trait, an OpenAI-compatible
//! `/v1/embeddings` client (the in-process model is `sentence_embedder`), and the
//! (re-)embedding of stored chunks whose vector is missing or comes from
//! another model.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Deserialize;

use super::provider_error::{status_error, ProviderError};
use super::retrieval::index::{faq_answer, faq_question};

/// Most texts embedded in one call (requests stay bounded).
pub const MAX_BATCH: usize = 256;

#[async_trait]
pub trait Embedder: Send + Sync {
    /// One L2-normalised vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError>;
    fn dims(&self) -> usize;
    /// The model's id, stored with each vector (`embedding_model`).
    fn name(&self) -> String;
    /// The vector a caller's question is searched with (see
    /// [`question_vector`]); `None` when the embedder gave none.
    async fn embed_question(&self, text: &str) -> Result<Option<Vec<f32>>, ProviderError> {
        question_vector(self, text).await
    }
    /// The model runs in this process: its vector is coming, however busy
    /// the cores (see [`IN_PROCESS_WAIT`]).
    fn in_process(&self) -> bool {
        false
    }
}

/// A question's own vector, or for a question said in several clauses
/// ("I'm stuck at home after surgery, is there any way to get my medicine
/// brought to me?") the sum of the whole's and its last clause's vectors,
/// normalised: callers tell the story first and ask last, and the story
/// alone pulls towards entries about the story. One call embeds both.
pub async fn question_vector<E: Embedder + ?Sized>(
    embedder: &E,
    text: &str,
) -> Result<Option<Vec<f32>>, ProviderError> {
    let mut texts = vec![text.to_string()];
    texts.extend(final_clause(text).map(str::to_string));
    let mut vectors = embedder.embed(&texts).await?.into_iter();
    let whole = vectors.next().filter(|v| !v.is_empty());
    Ok(match (whole, vectors.next()) {
        (Some(w), Some(l)) if w.len() == l.len() => {
            Some(normalise(w.iter().zip(&l).map(|(x, y)| x + y).collect()))
        }
        (w, _) => w,
    })
}

/// Stands in when the configured embedder cannot load (its model files are
/// missing): every call fails, so retrieval runs on full text alone.
pub struct UnavailableEmbedder {
    pub reason: String,
}

#[async_trait]
impl Embedder for UnavailableEmbedder {
    async fn embed(&self, _texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Err(ProviderError::Config(self.reason.clone()))
    }
    fn dims(&self) -> usize {
        0
    }
    fn name(&self) -> String {
        "unavailable".into()
    }
}

/// Cosine similarity; 0 when either vector is empty, zero or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// OpenAI-compatible `/v1/embeddings`.
pub struct OpenAiEmbeddings {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    model: String,
    dims: usize,
    timeout: Duration,
}

impl OpenAiEmbeddings {
    /// `base_url` like `https://api.openai.com/v1`.
    pub fn new(base_url: &str, api_key: &str, model: &str, dims: usize) -> OpenAiEmbeddings {
        OpenAiEmbeddings {
            client: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            model: model.to_string(),
            dims,
            timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}
#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait]
impl Embedder for OpenAiEmbeddings {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if texts.len() > MAX_BATCH {
            return Err(ProviderError::Config(format!(
                "at most {MAX_BATCH} texts per call"
            )));
        }
        let resp = self
            .client
            .post(format!("{}/embeddings", self.base_url))
            .bearer_auth(&self.api_key)
            .timeout(self.timeout)
            .json(&serde_json::json!({ "model": self.model, "input": texts }))
            .send()
            .await
            .map_err(|e| ProviderError::from_http(e, self.timeout))?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let body: EmbeddingResponse = resp
            .json()
            .await
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        let mut out = vec![Vec::new(); texts.len()];
        for item in body.data {
            let slot = out
                .get_mut(item.index)
                .ok_or_else(|| ProviderError::Protocol("embedding index out of range".into()))?;
            *slot = item.embedding;
        }
        if out.iter().any(|v| v.is_empty()) {
            return Err(ProviderError::Protocol(
                "missing embeddings in response".into(),
            ));
        }
        Ok(out)
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn name(&self) -> String {
        self.model.clone()
    }
}

/// Questions whose vectors are remembered (a call's turns, a few calls').
const QUERY_CACHE: usize = 64;

type SharedVector = Shared<BoxFuture<'static, Result<Vec<f32>, String>>>;

/// The process's embedder with a memory of the last few questions' vectors:
/// a caller's question is embedded as soon as its transcript arrives (while
/// the turn still waits for the end-of-turn pause) and again when the reply
/// retrieves; the second call gets the first one's vector, or waits for it
/// if it is still being computed. Texts (ingest) pass straight through.
pub struct QueryCache {
    inner: Arc<dyn Embedder>,
    /// Where texts go: `inner` with its vectors kept on disk, if configured.
    documents: Arc<dyn Embedder>,
    recent: Mutex<VecDeque<(String, SharedVector)>>,
}

impl QueryCache {
    pub fn new(inner: Arc<dyn Embedder>) -> QueryCache {
        QueryCache {
            documents: inner.clone(),
            inner,
            recent: Mutex::new(VecDeque::with_capacity(QUERY_CACHE)),
        }
    }

    /// Texts (knowledge, the everyday reference) keep their vectors in
    /// `dir` (see [`super::vector_cache`]); callers' questions never do.
    /// An empty `dir` keeps them nowhere.
    pub fn with_vectors_in(mut self, dir: &std::path::Path) -> QueryCache {
        if dir.as_os_str().is_empty() {
            return self;
        }
        match super::vector_cache::VectorCache::open(self.inner.clone(), dir) {
            Ok(cache) => self.documents = Arc::new(cache),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "knowledge vectors are not kept on disk")
            }
        }
        self
    }

    fn vector_of(&self, text: &str) -> SharedVector {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, v)) = recent.iter().find(|(t, _)| t == text) {
            return v.clone();
        }
        let inner = self.inner.clone();
        let question = text.to_string();
        let v: SharedVector = async move {
            match inner.embed_question(&question).await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err("the embedder returned no vector".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        .boxed()
        .shared();
        if recent.len() == QUERY_CACHE {
            recent.pop_front();
        }
        recent.push_back((text.to_string(), v.clone()));
        v
    }

    fn forget(&self, text: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|(t, _)| t != text);
    }

    /// Starts making the question vector of `text` in the background, for
    /// a later `embed_question`.
    pub fn prefetch(&self, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        tokio::spawn(self.vector_of(text));
    }
}

#[async_trait]
impl Embedder for QueryCache {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.documents.embed(texts).await
    }
    async fn embed_question(&self, text: &str) -> Result<Option<Vec<f32>>, ProviderError> {
        match self.vector_of(text).await {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                // A failure is not remembered: the next turn tries again.
                self.forget(text);
                Err(ProviderError::Protocol(e))
            }
        }
    }
    fn dims(&self) -> usize {
        self.inner.dims()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
    fn in_process(&self) -> bool {
        self.inner.in_process()
    }
}

/// Longest a turn waits for an in-process embedder's question vector
/// (`budget` when that is longer). On a busy host the model takes 150–300
/// ms instead of 20, and ranking by full text alone then answers wrong or
/// not at all where the vector would have been right: a few hundred
/// milliseconds more cost the caller less. Only a wedged model waits this
/// long.
pub const IN_PROCESS_WAIT: Duration = Duration::from_secs(1);

/// The question vector of `text` ([`Embedder::embed_question`]), or
/// `None` when the embedder fails or takes longer than `budget` (an
/// in-process one: [`IN_PROCESS_WAIT`]); retrieval then runs on full text
/// alone, so a slow embedding service never delays an answer by more than
/// `budget`.
pub async fn embed_query(
    embedder: &dyn Embedder,
    text: &str,
    budget: Duration,
) -> Option<Vec<f32>> {
    let budget = if embedder.in_process() {
        budget.max(IN_PROCESS_WAIT)
    } else {
        budget
    };
    match tokio::time::timeout(budget, embedder.embed_question(text)).await {
        Ok(Ok(Some(v))) => Some(v),
        Ok(Ok(None)) => {
            tracing::warn!(embedder = %embedder.name(), "embedder returned no vector; full-text only");
            None
        }
        Ok(Err(err)) => {
            tracing::warn!(embedder = %embedder.name(), error = %err, "query embedding failed; full-text only");
            None
        }
        Err(_) => {
            tracing::warn!(embedder = %embedder.name(), budget_ms = budget.as_millis() as u64, "query embedding over budget; full-text only");
            None
        }
    }
}

/// Fewest words of a clause that counts on its own ("yes, please" is not
/// a question with a story before it).
const CLAUSE_WORDS: usize = 3;

/// The last clause of a question said in two or more clauses of at least
/// [`CLAUSE_WORDS`] words each (split at sentence ends, commas and
/// semicolons), else `None`.
pub fn final_clause(text: &str) -> Option<&str> {
    let mut clauses = text
        .split(['.', '?', '!', ',', ';'])
        .map(str::trim)
        .filter(|c| c.split_whitespace().count() >= CLAUSE_WORDS);
    let first = clauses.next()?;
    let last = clauses.next_back()?;
    (last != first).then_some(last)
}

/// `v` scaled to unit length (a zero vector stays zero).
pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Embeds up to `max` chunks of a workspace whose vector is missing or was
/// made by another model than `embedder` (after ingest, or after switching
/// models), or that is a FAQ entry without its answer's vector: the whole
/// chunk, and a FAQ chunk's question and answer each on its own. Returns
/// how many chunks were written; each write notifies the in-memory indexes.
pub async fn embed_missing_chunks(
    pool: &sqlx::PgPool,
    embedder: &dyn Embedder,
    workspace_id: uuid::Uuid,
    max: usize,
) -> Result<usize, ProviderError> {
    let model = embedder.name();
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select id, content from knowledge_chunks
         where workspace_id = $1 and (embedding is null or embedding_model is distinct from $2
                                      or (question_embedding is not null and answer_embedding is null))
         order by id limit $3",
    )
    .bind(workspace_id)
    .bind(&model)
    .bind(max.min(1_000_000) as i64)
    .fetch_all(pool)
    .await?;
    let mut written = 0;
    for batch in rows.chunks(64) {
        let mut texts: Vec<String> = batch.iter().map(|(_, c)| c.clone()).collect();
        // Per chunk of a FAQ entry: the positions of its question's and its
        // answer's text in `texts`.
        let mut parts: Vec<Option<(usize, Option<usize>)>> = vec![None; batch.len()];
        for ((_, content), part) in batch.iter().zip(&mut parts) {
            if let Some(q) = faq_question(content) {
                let at = texts.len();
                texts.push(q.to_string());
                let answer = faq_answer(content).map(|a| {
                    texts.push(a.to_string());
                    at + 1
                });
                *part = Some((at, answer));
            }
        }
        let vectors = embedder.embed(&texts).await?;
        if vectors.len() != texts.len() {
            return Err(ProviderError::Protocol(
                "embedder returned a wrong count".into(),
            ));
        }
        let mut tx = pool.begin().await?;
        for (i, ((id, _), part)) in batch.iter().zip(&parts).enumerate() {
            let question = part.map(|(at, _)| &vectors[at]);
            // A question without an answer line gets an empty answer
            // vector (so it is not picked up again), no vector for it.
            let answer = part.map(|(_, at)| at.map_or(&[][..], |at| &vectors[at][..]));
            sqlx::query(
                "update knowledge_chunks
                 set embedding = $2, question_embedding = $3, answer_embedding = $4, embedding_model = $5
                 where id = $1",
            )
            .bind(id)
            .bind(&vectors[i])
            .bind(question)
            .bind(answer)
            .bind(&model)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        written += batch.len();
    }
    Ok(written)
}

/// [`embed_missing_chunks`] for every workspace (start-up, in the
/// background): at most `max` chunks per workspace.
pub async fn embed_all_missing_chunks(
    pool: &sqlx::PgPool,
    embedder: &dyn Embedder,
    max: usize,
) -> Result<usize, ProviderError> {
    let workspaces: Vec<uuid::Uuid> = sqlx::query_scalar(
        "select distinct workspace_id from knowledge_chunks
         where embedding is null or embedding_model is distinct from $1
               or (question_embedding is not null and answer_embedding is null)",
    )
    .bind(embedder.name())
    .fetch_all(pool)
    .await?;
    let mut written = 0;
    for ws in workspaces {
        written += embed_missing_chunks(pool, embedder, ws, max).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_clause_is_taken_only_after_another_clause() {
        assert_eq!(
            final_clause("I'm stuck at home after surgery, is there any way to get my medicine brought to me?"),
            Some("is there any way to get my medicine brought to me")
        );
        assert_eq!(
            final_clause("Hi. My boiler is banging. Can someone come today?"),
            Some("Can someone come today")
        );
        assert_eq!(final_clause("Do you deliver?"), None);
        assert_eq!(final_clause("Yes, do you deliver to my street?"), None);
        assert_eq!(final_clause("Do you deliver to my street? Thanks."), None);
        assert_eq!(final_clause(""), None);
    }

    /// Says which texts it was asked for; each text's vector is the
    /// unit vector of its word count's axis.
    struct ByWords(Mutex<Vec<String>>);

    #[async_trait]
    impl Embedder for ByWords {
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
            self.0.lock().unwrap().extend(texts.iter().cloned());
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0; 16];
                    v[t.split_whitespace().count().min(15)] = 1.0;
                    v
                })
                .collect())
        }
        fn dims(&self) -> usize {
            16
        }
        fn name(&self) -> String {
            "by-words".into()
        }
    }

    #[tokio::test]
    async fn a_question_in_clauses_is_the_whole_and_its_last_clause() {
        let e = ByWords(Mutex::new(Vec::new()));
        let budget = Duration::from_secs(5);
        let v = embed_query(&e, "Do you deliver?", budget).await.unwrap();
        assert_eq!(v[3], 1.0);
        let v = embed_query(&e, "I never carry cash, can I tap my phone?", budget)
            .await
            .unwrap();
        // The whole (9 words) and the last clause (5 words), half each.
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[9] - h).abs() < 1e-6 && (v[5] - h).abs() < 1e-6, "{v:?}");
        assert_eq!(
            *e.0.lock().unwrap(),
            [
                "Do you deliver?",
                "I never carry cash, can I tap my phone?",
                "can I tap my phone"
            ]
        );
    }

    /// Takes its time (on tokio's clock) and says whether it runs here.
    struct Slow {
        takes: Duration,
        local: bool,
    }

    #[async_trait]
    impl Embedder for Slow {
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
            tokio::time::sleep(self.takes).await;
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        }
        fn dims(&self) -> usize {
            2
        }
        fn name(&self) -> String {
            "slow".into()
        }
        fn in_process(&self) -> bool {
            self.local
        }
    }

    #[tokio::test]
    async fn an_in_process_model_is_waited_for_and_a_service_is_not() {
        let budget = Duration::from_millis(150);
        let asked = |takes: Duration, local: bool| async move {
            let started = std::time::Instant::now();
            let v = embed_query(&Slow { takes, local }, "Do you deliver?", budget).await;
            (v.is_some(), started.elapsed())
        };
        // A busy host: the model's vector comes after the budget.
        let busy_host = Duration::from_millis(400);
        assert!(asked(busy_host, true).await.0);
        let (got, waited) = asked(busy_host, false).await;
        assert!(
            !got && waited < busy_host,
            "a service was waited for {waited:?}"
        );
        // A wedged model is given up on.
        let (got, waited) = asked(Duration::from_secs(30), true).await;
        assert!(!got && waited >= IN_PROCESS_WAIT && waited < Duration::from_secs(10));
    }
}
