//! Retrieval over an agent's (and its workspace-wide) knowledge: an
//! in-memory index per agent that PostgreSQL keeps current (`store`),
//! BM25-style full-text scoring over normalised words (`normalize`) fused
//! with sentence-embedding cosine, FAQ questions matched as questions
//! (`index`). The runtime's turns and the API's knowledge search use it;
//! `sql` is the earlier database-side path, kept as the benchmark reference.

pub mod everyday;
pub mod index;
pub mod normalize;
pub mod sql;
pub mod store;
pub mod vocabulary;

use serde::Serialize;
use uuid::Uuid;

use super::provider_error::ProviderError;
pub use everyday::Everyday;
pub use index::AgentIndex;
pub use store::{KnowledgeIndex, Scope};

/// Chunks below this relevance are not returned (nor put into a prompt).
/// Below the offline answerer's `ANSWER_FLOOR` (which decides between an
/// answer and the fallback), so a networked model still sees passages the
/// answerer would not read out.
pub const DEFAULT_FLOOR: f32 = 0.2;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievedChunk {
    pub chunk_id: Uuid,
    pub source_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub chunk_index: i32,
    pub content: String,
    /// Absolute relevance in 0..=1 (what the floors are applied to): the
    /// blend of `text_score` and `vector_score`, or at least 0.95 when a
    /// FAQ question has (nearly) the caller's words.
    pub score: f32,
    /// BM25-style share of the query's weighted words found in the chunk
    /// (or in its FAQ question alone, whichever is higher).
    pub text_score: f32,
    /// Cosine similarity with the query embedding: the best of the whole
    /// chunk's and its FAQ question's, when vectors exist.
    pub vector_score: Option<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub limit: usize,
    pub floor: f32,
    /// Also entries an everyday request beats (normally left out, so an
    /// off-topic question does not look covered): a second hearing's
    /// candidates, where a misheard question often looks off-topic.
    pub off_topic_too: bool,
}

/// The best chunks of `scope` for `query`, from memory (loaded on first
/// use). The query's embedding is computed meanwhile by `embedding`; it
/// takes part when it arrives and comes from the model of the index's
/// vectors. Returns the chunks and whether the embedding took part.
pub async fn search(
    knowledge: &KnowledgeIndex,
    scope: Scope,
    query: &str,
    embedding: impl std::future::Future<Output = Option<Vec<f32>>>,
    opts: SearchOptions,
) -> Result<(Vec<RetrievedChunk>, bool), ProviderError> {
    let limit = opts.limit.clamp(1, 50);
    let (index, query_vector) = tokio::join!(knowledge.get(scope), embedding);
    let index = index?;
    let qv = query_vector.filter(|v| !v.is_empty() && v.len() == index.dims());
    let found = index.search(query, qv.as_deref(), limit, opts.floor, opts.off_topic_too);
    Ok((found, qv.is_some()))
}
