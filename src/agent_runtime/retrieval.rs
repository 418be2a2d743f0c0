//! Hybrid retrieval over an agent's (and its workspace-wide) knowledge chunks:
//! PostgreSQL full-text matching with OR semantics (a spoken question rarely
//! contains every word of the passage), an absolute relevance score (the
//! IDF-weighted share of the question's words a chunk contains), cosine
//! similarity over `embedding real[]` when vectors exist, and reciprocal-rank
//! fusion of the two orders. The API's knowledge search calls the same code.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::embeddings::cosine;
use super::provider_error::ProviderError;

/// Chunks below this relevance are not returned by [`search`].
pub const DEFAULT_FLOOR: f32 = 0.2;
/// Most words of a query that are looked up (a question, not a document).
const MAX_QUERY_WORDS: usize = 32;
const MAX_WORD_LEN: usize = 40;
/// Text candidates considered for fusion.
const TEXT_CANDIDATES: i64 = 50;
/// Vectors scanned when full-text finds fewer than `limit` chunks.
const VECTOR_SCAN: i64 = 1000;
/// Reciprocal-rank-fusion constant (the usual 60).
const RRF_K: f32 = 60.0;
/// Conversational words that PostgreSQL's stop list keeps but that say
/// little about the topic of a spoken question ("can I *come* in a
/// wheelchair", "what *time* do you open"); they weigh 0.3 of a topic word.
const GENERIC_WORDS: &str = "time get go need want make take see know like tell let help please thing \
    come call ask say look find way day today tomorrow yesterday question guy right okay ok well just \
    really also much many lot something anything someone anyone somewhere anywhere use try give think \
    sure good great hello hi thanks thank wonder maybe kind";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievedChunk {
    pub chunk_id: Uuid,
    pub source_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub chunk_index: i32,
    pub content: String,
    /// Absolute relevance in 0..=1 (what the floor is applied to).
    pub score: f32,
    /// IDF-weighted share of the query's words found in the chunk.
    pub text_score: f32,
    /// Cosine similarity with the query embedding, when both exist.
    pub vector_score: Option<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub limit: usize,
    pub floor: f32,
}

/// Top `limit` chunks for `query` with the default relevance floor.
pub async fn search(
    pool: &PgPool,
    workspace_id: Uuid,
    agent_id: Uuid,
    query: &str,
    query_embedding: Option<&[f32]>,
    limit: usize,
) -> Result<Vec<RetrievedChunk>, ProviderError> {
    search_with(
        pool,
        workspace_id,
        Some(agent_id),
        query,
        query_embedding,
        SearchOptions {
            limit,
            floor: DEFAULT_FLOOR,
        },
    )
    .await
}

/// [`search`] with explicit options; `agent_id = None` searches every chunk
/// of the workspace (an admin's view), `Some(agent)` that agent's chunks and
/// the workspace-wide ones.
pub async fn search_with(
    pool: &PgPool,
    workspace_id: Uuid,
    agent_id: Option<Uuid>,
    query: &str,
    query_embedding: Option<&[f32]>,
    opts: SearchOptions,
) -> Result<Vec<RetrievedChunk>, ProviderError> {
    let limit = opts.limit.clamp(1, 50);
    let words = query_words(query);
    let mut found: Vec<Candidate> = if words.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as::<_, Candidate>(TEXT_SQL)
            .bind(workspace_id)
            .bind(agent_id)
            .bind(words.join(" "))
            .bind(TEXT_CANDIDATES)
            .bind(GENERIC_WORDS)
            .fetch_all(pool)
            .await?
    };
    if let Some(qv) = query_embedding.filter(|v| !v.is_empty()) {
        if found.len() < limit {
            let seen: Vec<Uuid> = found.iter().map(|c| c.id).collect();
            let more = sqlx::query_as::<_, Candidate>(VECTOR_SQL)
                .bind(workspace_id)
                .bind(agent_id)
                .bind(&seen)
                .bind(VECTOR_SCAN)
                .fetch_all(pool)
                .await?;
            found.extend(more);
        }
        return Ok(fuse(found, Some(qv), limit, opts.floor));
    }
    Ok(fuse(found, None, limit, opts.floor))
}

/// Lower-cased alphanumeric words, bounded in count and length, so nothing a
/// caller says can form tsquery syntax.
pub fn query_words(query: &str) -> Vec<String> {
    query
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() <= MAX_WORD_LEN)
        .take(MAX_QUERY_WORDS)
        .map(str::to_string)
        .collect()
}

#[derive(Debug, sqlx::FromRow)]
struct Candidate {
    id: Uuid,
    source_id: Uuid,
    agent_id: Option<Uuid>,
    chunk_index: i32,
    content: String,
    embedding: Option<Vec<f32>>,
    coverage: f64,
}

/// Orders by reciprocal-rank fusion of the text order and the vector order,
/// keeps chunks whose absolute score clears the floor.
fn fuse(
    cands: Vec<Candidate>,
    qv: Option<&[f32]>,
    limit: usize,
    floor: f32,
) -> Vec<RetrievedChunk> {
    let mut items: Vec<RetrievedChunk> = cands
        .into_iter()
        .map(|c| {
            let text_score = c.coverage.clamp(0.0, 1.0) as f32;
            let vector_score = match (qv, c.embedding.as_deref()) {
                (Some(q), Some(e)) if q.len() == e.len() => Some(cosine(q, e)),
                _ => None,
            };
            let score = match vector_score {
                Some(v) => 0.6 * text_score + 0.4 * v.max(0.0),
                None => text_score,
            };
            RetrievedChunk {
                chunk_id: c.id,
                source_id: c.source_id,
                agent_id: c.agent_id,
                chunk_index: c.chunk_index,
                content: c.content,
                score,
                text_score,
                vector_score,
            }
        })
        .collect();
    let rank_of = |items: &[RetrievedChunk], key: &dyn Fn(&RetrievedChunk) -> f32| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..items.len()).collect();
        idx.sort_by(|&a, &b| key(&items[b]).total_cmp(&key(&items[a])));
        let mut rank = vec![0; items.len()];
        for (r, i) in idx.into_iter().enumerate() {
            rank[i] = r;
        }
        rank
    };
    let text_rank = rank_of(&items, &|c| c.text_score);
    let vector_rank = rank_of(&items, &|c| c.vector_score.unwrap_or(-1.0));
    let has_vectors = items.iter().any(|c| c.vector_score.is_some());
    let mut fused: Vec<(f32, RetrievedChunk)> = items
        .drain(..)
        .enumerate()
        .map(|(i, c)| {
            let mut rrf = 1.0 / (RRF_K + text_rank[i] as f32 + 1.0);
            if has_vectors && c.vector_score.is_some() {
                rrf += 1.0 / (RRF_K + vector_rank[i] as f32 + 1.0);
            }
            (rrf, c)
        })
        .filter(|(_, c)| c.score >= floor)
        .collect();
    // Ties in fused rank (common: one list's first is the other's second) go
    // to the chunk that shares more of the caller's words, then the score.
    fused.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.text_score.total_cmp(&a.1.text_score))
            .then(b.1.score.total_cmp(&a.1.score))
    });
    fused.into_iter().take(limit).map(|(_, c)| c).collect()
}

/// Full-text candidates. Each query lexeme gets an IDF weight from its
/// document frequency in the agent's scope (words absent from the knowledge
/// count half, so an off-topic question does not look covered; generic
/// conversational words count 0.3); a chunk's
/// coverage is the weight of the lexemes it contains over the total.
/// The scope predicate is repeated rather than put in a CTE, so PostgreSQL
/// can use the indexes in each part.
const TEXT_SQL: &str = r#"
with lex as (
    select l, quote_literal(l)::tsquery as q,
           (case when l = any(tsvector_to_array(to_tsvector('english', $5))) then 0.3 else 1 end) as generic
    from unnest(tsvector_to_array(to_tsvector('english', $3))) as l
),
total as (
    select count(*)::float8 as n from knowledge_chunks c
    where c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
),
weighted as (
    select lex.l, lex.q,
           ln(1 + (total.n + 1) / (df.n + 0.5)) * (case when df.n = 0 then 0.5 else 1 end) * lex.generic as w
    from lex, total,
         lateral (select count(*)::float8 as n from knowledge_chunks c
                  where c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
                    and c.tsv @@ lex.q) as df
),
orq as (
    select coalesce(sum(w), 0) as total_w,
           (select string_agg(quote_literal(l), ' | ') from weighted where w > 0) as q
    from weighted
)
select c.id, c.source_id, c.agent_id, c.chunk_index, c.content, c.embedding,
       coalesce((select sum(weighted.w) from weighted where c.tsv @@ weighted.q) / nullif(orq.total_w, 0), 0)::float8 as coverage
from knowledge_chunks c, orq
where orq.q is not null
  and c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
  and c.tsv @@ orq.q::tsquery
order by coverage desc, ts_rank_cd(c.tsv, orq.q::tsquery) desc, c.id
limit $4
"#;

/// Chunks with vectors that full-text did not find (small knowledge bases,
/// paraphrases with no shared word).
const VECTOR_SQL: &str = r#"
select c.id, c.source_id, c.agent_id, c.chunk_index, c.content, c.embedding, 0::float8 as coverage
from knowledge_chunks c
where c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
  and c.embedding is not null and not (c.id = any($3))
limit $4
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_sanitised_and_bounded() {
        assert_eq!(
            query_words("What's the time? (9:30) & | !'x'"),
            vec!["what", "s", "the", "time", "9", "30", "x"]
        );
        assert_eq!(query_words(&"a ".repeat(100)).len(), MAX_QUERY_WORDS);
        assert!(query_words(&"z".repeat(100)).is_empty());
    }

    fn cand(coverage: f64, emb: Option<Vec<f32>>) -> Candidate {
        Candidate {
            id: Uuid::new_v4(),
            source_id: Uuid::nil(),
            agent_id: None,
            chunk_index: 0,
            content: String::new(),
            embedding: emb,
            coverage,
        }
    }

    #[test]
    fn fusion_orders_and_floors() {
        let out = fuse(
            vec![cand(0.1, None), cand(0.9, None), cand(0.5, None)],
            None,
            5,
            0.2,
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].score > out[1].score);
        // A chunk that both lists rank first wins over text-only leaders.
        let q = vec![1.0, 0.0];
        let out = fuse(
            vec![
                cand(0.8, Some(vec![0.0, 1.0])),
                cand(0.7, Some(vec![1.0, 0.0])),
                cand(0.0, Some(vec![0.9, 0.1])),
            ],
            Some(&q),
            3,
            0.0,
        );
        assert_eq!(out[0].vector_score, Some(1.0));
        assert_eq!(out.len(), 3);
    }
}
