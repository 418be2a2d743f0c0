//! Text embeddings for retrieval: a trait, a local deterministic embedder
//! (hashed word and character-trigram features, no model, no network) and an
//! OpenAI-compatible `/v1/embeddings` client.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::provider_error::{status_error, ProviderError};

/// Dimensions of [`LocalHashEmbedder`] vectors.
pub const LOCAL_DIMS: usize = 256;
/// Most texts embedded in one call (requests stay bounded).
pub const MAX_BATCH: usize = 256;

#[async_trait]
pub trait Embedder: Send + Sync {
    /// One L2-normalised vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError>;
    fn dims(&self) -> usize;
    fn name(&self) -> String;
}

/// Feature hashing of words (weight 1) and character trigrams (weight 0.5)
/// into 256 signed buckets. Deterministic across processes and versions, so
/// stored chunk vectors stay comparable with query vectors.
#[derive(Debug, Clone, Default)]
pub struct LocalHashEmbedder;

impl LocalHashEmbedder {
    pub fn embed_one(text: &str) -> Vec<f32> {
        let mut v = vec![0f32; LOCAL_DIMS];
        let lower = text.to_lowercase();
        for word in lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let word = crude_stem(word);
            add_feature(&mut v, word.as_bytes(), 1.0);
            let padded: Vec<char> = format!(" {word} ").chars().collect();
            for tri in padded.windows(3) {
                let s: String = tri.iter().collect();
                add_feature(&mut v, s.as_bytes(), 0.5);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Folds plural/-ing forms so "opening" and "open" share a feature.
fn crude_stem(word: &str) -> &str {
    for suffix in ["ing", "es", "s", "ed"] {
        if word.len() > suffix.len() + 2 {
            if let Some(stem) = word.strip_suffix(suffix) {
                return stem;
            }
        }
    }
    word
}

fn add_feature(v: &mut [f32], bytes: &[u8], weight: f32) {
    // FNV-1a: tiny, stable, good enough spread for feature hashing.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let idx = (h % LOCAL_DIMS as u64) as usize;
    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
    v[idx] += sign * weight;
}

#[async_trait]
impl Embedder for LocalHashEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if texts.len() > MAX_BATCH {
            return Err(ProviderError::Config(format!(
                "at most {MAX_BATCH} texts per call"
            )));
        }
        Ok(texts.iter().map(|t| Self::embed_one(t)).collect())
    }
    fn dims(&self) -> usize {
        LOCAL_DIMS
    }
    fn name(&self) -> String {
        "local-hash-256".into()
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

/// The embedding of one question, or `None` when the embedder fails or
/// takes longer than `budget` (retrieval then runs on full-text alone, so a
/// slow embedding service never delays an answer by more than `budget`).
pub async fn embed_query(
    embedder: &dyn Embedder,
    text: &str,
    budget: Duration,
) -> Option<Vec<f32>> {
    let texts = [text.to_string()];
    match tokio::time::timeout(budget, embedder.embed(&texts)).await {
        Ok(Ok(mut vectors)) if vectors.len() == 1 && !vectors[0].is_empty() => vectors.pop(),
        Ok(Ok(_)) => {
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

/// Embeds up to `max` chunks of a workspace that have no vector yet (after
/// ingest, or after switching embedders); returns how many were written.
pub async fn embed_missing_chunks(
    pool: &sqlx::PgPool,
    embedder: &dyn Embedder,
    workspace_id: uuid::Uuid,
    max: usize,
) -> Result<usize, ProviderError> {
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select id, content from knowledge_chunks
         where workspace_id = $1 and embedding is null order by id limit $2",
    )
    .bind(workspace_id)
    .bind(max.min(1_000_000) as i64)
    .fetch_all(pool)
    .await?;
    let mut written = 0;
    for batch in rows.chunks(64) {
        let texts: Vec<String> = batch.iter().map(|(_, c)| c.clone()).collect();
        let vectors = embedder.embed(&texts).await?;
        let ids: Vec<uuid::Uuid> = batch.iter().map(|(id, _)| *id).collect();
        let mut tx = pool.begin().await?;
        for (id, v) in ids.iter().zip(vectors) {
            sqlx::query("update knowledge_chunks set embedding = $2 where id = $1")
                .bind(id)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        written += ids.len();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_embedder_is_deterministic_normalised_and_meaningful() {
        let a = LocalHashEmbedder::embed_one("What are your opening hours on Saturday?");
        let b = LocalHashEmbedder::embed_one("When do you open on Saturdays");
        let c = LocalHashEmbedder::embed_one("Refund policy for damaged parcels");
        assert_eq!(a.len(), LOCAL_DIMS);
        assert_eq!(
            a,
            LocalHashEmbedder::embed_one("What are your opening hours on Saturday?")
        );
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert!(
            cosine(&a, &b) > cosine(&a, &c) + 0.1,
            "{} vs {}",
            cosine(&a, &b),
            cosine(&a, &c)
        );
        assert_eq!(LocalHashEmbedder::embed_one(""), vec![0.0; LOCAL_DIMS]);
    }
}
