//! Retrieval in PostgreSQL, the path before the in-memory index (kept as the
//! benchmark's reference): full-text matching with OR semantics (a spoken question rarely
//! contains every word of the passage), an absolute relevance score (the
//! IDF-weighted share of the question's words a chunk contains), cosine
//! similarity over `embedding real[]` when vectors exist, and reciprocal-rank
//! fusion of the two orders.

use sqlx::PgPool;
use uuid::Uuid;

use super::{RetrievedChunk, SearchOptions, DEFAULT_FLOOR};
use crate::agent_runtime::embeddings::cosine;
use crate::agent_runtime::provider_error::ProviderError;

/// Most words of a query that are looked up (a question, not a document).
const MAX_QUERY_WORDS: usize = 32;
const MAX_WORD_LEN: usize = 40;
/// Text candidates considered for fusion.
const TEXT_CANDIDATES: i64 = 50;
/// Most chunks `ts_rank_cd` orders among those tied on coverage at the cut
/// (a one-word question over a large knowledge base ties thousands).
const RANKED_CANDIDATES: i64 = 500;
/// Lexemes of one query (bits of the per-chunk mask, a bigint).
const MAX_LEXEMES: usize = 62;
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
            off_topic_too: false,
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
    let embedding = std::future::ready(query_embedding.map(<[f32]>::to_vec));
    search_while_embedding(pool, workspace_id, agent_id, query, embedding, opts)
        .await
        .map(|(found, _)| found)
}

/// [`search_with`] while the question's embedding is still being computed:
/// the full-text query runs meanwhile, so a networked embedder costs only
/// the time it takes beyond the database's part. Also says whether a query
/// vector took part.
pub async fn search_while_embedding(
    pool: &PgPool,
    workspace_id: Uuid,
    agent_id: Option<Uuid>,
    query: &str,
    embedding: impl std::future::Future<Output = Option<Vec<f32>>>,
    opts: SearchOptions,
) -> Result<(Vec<RetrievedChunk>, bool), ProviderError> {
    let limit = opts.limit.clamp(1, 50);
    let words = query_words(query);
    let text = async {
        if words.is_empty() {
            Ok(Vec::new())
        } else {
            text_candidates(pool, workspace_id, agent_id, &words.join(" ")).await
        }
    };
    let (found, query_vector) = tokio::join!(text, embedding);
    let mut found: Vec<Candidate> = found?;
    let Some(qv) = query_vector.filter(|v| !v.is_empty()) else {
        return Ok((fuse(found, None, limit, opts.floor), false));
    };
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
    Ok((fuse(found, Some(&qv), limit, opts.floor), true))
}

/// Chunks sharing words with `text`, best coverage first (at most
/// `TEXT_CANDIDATES`). Two round trips: the lexemes first, because the main
/// query is generated for their number.
async fn text_candidates(
    pool: &PgPool,
    workspace_id: Uuid,
    agent_id: Option<Uuid>,
    text: &str,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let lexemes: Vec<(String, f64)> = sqlx::query_as(LEXEMES_SQL)
        .bind(text)
        .bind(GENERIC_WORDS)
        .fetch_all(pool)
        .await?;
    if lexemes.is_empty() {
        return Ok(Vec::new()); // only stop words
    }
    let (words, generic): (Vec<String>, Vec<f64>) = lexemes.into_iter().take(MAX_LEXEMES).unzip();
    sqlx::query_as::<_, Candidate>(&text_sql(words.len()))
        .bind(workspace_id)
        .bind(agent_id)
        .bind(&words)
        .bind(&generic)
        .bind(TEXT_CANDIDATES)
        .bind(RANKED_CANDIDATES)
        .fetch_all(pool)
        .await
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

/// The query's lexemes (PostgreSQL's English stemming and stop words, so
/// they match `tsv`), each with 0.3 when it is a generic conversational word
/// and 1 otherwise. Sorted and distinct, like `tsvector_to_array`.
const LEXEMES_SQL: &str = r#"
select l, (case when l = any(tsvector_to_array(to_tsvector('english', $2))) then 0.3 else 1 end)::float8 as weight
from unnest(tsvector_to_array(to_tsvector('english', $1))) as l
"#;

/// Full-text candidates, in one pass over the chunks that contain any query
/// lexeme (the GIN index on the stored `tsv` finds them). Each chunk gets a
/// bit mask of the lexemes it contains; document frequencies, IDF weights
/// and coverage are then computed per distinct mask (a handful), not per
/// chunk. Each lexeme's weight is its IDF in the agent's scope (words absent
/// from the knowledge count half, so an off-topic question does not look
/// covered), times 0.3 for generic words; a chunk's coverage is the weight
/// of the lexemes it contains over the total. `ts_rank_cd`, the costly part,
/// only orders the chunks whose coverage can reach the top `$5` (at most
/// `$6` of them, ties cut by id). The scope predicate is repeated rather
/// than put in a CTE, so PostgreSQL can use the indexes in each part.
/// `{lexeme_columns}` and `{mask}` are generated per lexeme count
/// ([`text_sql`]).
const TEXT_SQL_TEMPLATE: &str = r#"
with q as materialized (
    select {lexeme_columns},
           (select string_agg(quote_literal(l), ' | ') from unnest($3::text[]) as l)::tsquery as qor
),
m as materialized (
    select c.id, {mask} as mask
    from knowledge_chunks c, q
    where c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
      and c.tsv @@ q.qor
),
masks as (select mask, count(*)::float8 as k from m group by mask),
total as (
    select count(*)::float8 as n from knowledge_chunks c
    where c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
),
weights as (
    select g.bit,
           ln(1 + (total.n + 1) / (df.n + 0.5)) * (case when df.n = 0 then 0.5 else 1 end) * g.generic as w
    from (select (i - 1)::int as bit, generic from unnest($4::float8[]) with ordinality as t(generic, i)) as g,
         total,
         lateral (select coalesce(sum(k), 0) as n from masks where masks.mask & (1::bigint << g.bit) <> 0) as df
),
scored as (
    select masks.mask, masks.k,
           coalesce((select sum(w) from weights where masks.mask & (1::bigint << weights.bit) <> 0)
                    / nullif((select sum(w) from weights), 0), 0)::float8 as coverage
    from masks
),
kept as (
    select mask, coverage from (
        select mask, coverage,
               sum(k) over (order by coverage desc) - sum(k) over (partition by coverage) as better
        from scored) as s
    where better < $5
),
cand as (
    select m.id, kept.coverage from m join kept using (mask)
    order by kept.coverage desc, m.id
    limit $6
),
top as (
    select cand.id, cand.coverage, ts_rank_cd(c.tsv, q.qor) as rank
    from cand join knowledge_chunks c on c.id = cand.id, q
    order by cand.coverage desc, rank desc, cand.id
    limit $5
)
select c.id, c.source_id, c.agent_id, c.chunk_index, c.content, c.embedding, top.coverage
from top join knowledge_chunks c on c.id = top.id
order by top.coverage desc, top.rank desc, c.id
"#;

/// [`TEXT_SQL_TEMPLATE`] for `n` lexemes: columns `q0…` with each lexeme as
/// a tsquery, and the expression of a chunk's lexeme bit mask.
fn text_sql(n: usize) -> String {
    let columns: Vec<String> = (0..n)
        .map(|i| format!("quote_literal(($3::text[])[{}])::tsquery as q{i}", i + 1))
        .collect();
    let mask: Vec<String> = (0..n)
        .map(|i| format!("((c.tsv @@ q.q{i})::int::bigint << {i})"))
        .collect();
    TEXT_SQL_TEMPLATE
        .replace("{lexeme_columns}", &columns.join(", "))
        .replace("{mask}", &mask.join(" | "))
}

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

    #[test]
    fn text_sql_has_one_column_and_one_mask_bit_per_lexeme() {
        let sql = text_sql(3);
        assert!(!sql.contains('{'), "placeholders left: {sql}");
        for i in 0..3 {
            assert!(sql.contains(&format!("[{}])::tsquery as q{i}", i + 1)));
            assert!(sql.contains(&format!("(c.tsv @@ q.q{i})::int::bigint << {i})")));
        }
        assert!(!sql.contains("q.q3"));
        // The mask is a bigint: every lexeme a bounded query can have fits.
        const { assert!(MAX_LEXEMES < 63 && MAX_QUERY_WORDS <= MAX_LEXEMES) };
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
