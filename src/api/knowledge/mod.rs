//! Knowledge sources: creating one ingests it at once (TEXT, FAQ pairs, a
//! URL fetched with size and time limits, a PDF) into `knowledge_chunks`,
//! moving `status` pending → processing → ready | failed (with `error`).
//! Listing, renaming and deleting use the generic CRUD; search returns the
//! ranked chunks the runtime would use.

pub mod chunk;
pub mod extract;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::auth::Principal;
use super::body::{only_fields, opt_str, req_str, JsonObject};
use super::error::ApiError;
use super::extract::{pagination, Ids, QueryMap};
use super::resource::{
    check_refs, collection_route, eq, item_route, json_text, opt, out, presented_sql, req, Kind,
    Resource, Writes,
};
use super::types::Role;
use super::ApiState;

pub use extract::{FETCH_TIMEOUT, MAX_FETCH_BYTES};

const TYPES: &[&str] = &["PDF", "URL", "TEXT", "FAQ"];
const STATUSES: &[&str] = &["pending", "processing", "ready", "failed"];
/// Most FAQ pairs in one source, and characters of a question or answer.
const MAX_FAQS: usize = 1000;
const MAX_FAQ_CHARS: usize = 4000;
/// Extracted text kept per source; the chunks are cut from what is kept,
/// so `chunk_count` counts what the source really holds.
const MAX_TEXT_CHARS: usize = 2_000_000;

/// What is kept of an extracted text: NUL and other control characters
/// (which PostgreSQL refuses or a voice cannot read) become spaces, line
/// breaks and tabs stay, and at most [`MAX_TEXT_CHARS`] characters.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .take(MAX_TEXT_CHARS)
        .map(|c| match c {
            '\n' | '\t' => c,
            '\r' => '\n',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// The generic view of `knowledge_sources`; creation is custom (ingestion).
pub static KNOWLEDGE: Resource = Resource {
    path: "knowledge",
    table: "knowledge_sources",
    summary: "Knowledge sources (TEXT, FAQ, URL, PDF) ingested into chunks",
    fields: &[
        req("name", Kind::Text(200)),
        req("type", Kind::Enum(TYPES)),
        opt("agent_id", Kind::Ref("agents")),
        opt("content", Kind::Text(MAX_TEXT_CHARS)),
        opt("url", Kind::Url),
        out("status", Kind::Enum(STATUSES)),
        out("error", Kind::Text(2000)),
        out("chunk_count", Kind::Int(0, i64::MAX)),
    ],
    filters: &[
        eq("agent_id", Kind::Ref("agents")),
        eq("type", Kind::Enum(TYPES)),
        eq("status", Kind::Enum(STATUSES)),
    ],
    writes: Writes {
        create: false,
        patch: false,
        delete: true,
    },
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};

pub fn routes() -> Router<ApiState> {
    let r = &KNOWLEDGE;
    Router::new()
        .route(&r.collection_path(), collection_route(r).post(create))
        .route(&r.item_path(), item_route(r))
        .route(
            "/v1/workspaces/{workspace_id}/knowledge/{id}/chunks",
            get(chunks),
        )
        .route(
            "/v1/workspaces/{workspace_id}/agents/{id}/knowledge/search",
            post(search),
        )
}

/// What a create body asks to ingest.
enum Input {
    Text(String),
    Faq(Vec<(String, String)>),
    Url(String),
    Pdf(Vec<u8>),
}

fn parse_input(kind: &str, body: &Map<String, Value>) -> Result<Input, ApiError> {
    let forbid = |fields: &[&str]| -> Result<(), ApiError> {
        match fields.iter().find(|f| body.contains_key(**f)) {
            Some(f) => Err(ApiError::validation(*f, format!("not used by type {kind}"))),
            None => Ok(()),
        }
    };
    match kind {
        "TEXT" => {
            forbid(&["faqs", "url", "content_base64"])?;
            Ok(Input::Text(
                req_str(body, "content", MAX_TEXT_CHARS)?.to_string(),
            ))
        }
        "FAQ" => {
            forbid(&["content", "url", "content_base64"])?;
            let list = body.get("faqs").and_then(Value::as_array).ok_or_else(|| {
                ApiError::validation("faqs", "must be a list of {question, answer}")
            })?;
            if list.is_empty() || list.len() > MAX_FAQS {
                return Err(ApiError::validation(
                    "faqs",
                    format!("must have 1 to {MAX_FAQS} pairs"),
                ));
            }
            let mut pairs = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let field = format!("faqs[{i}]");
                let obj = item
                    .as_object()
                    .ok_or_else(|| ApiError::validation(&field, "must be {question, answer}"))?;
                only_fields(obj, &["question", "answer"]).map_err(|_| {
                    ApiError::validation(&field, "must have only question and answer")
                })?;
                let q = req_str(obj, "question", MAX_FAQ_CHARS).map_err(|_| {
                    ApiError::validation(format!("{field}.question"), "must be a non-empty string")
                })?;
                let a = req_str(obj, "answer", MAX_FAQ_CHARS).map_err(|_| {
                    ApiError::validation(format!("{field}.answer"), "must be a non-empty string")
                })?;
                pairs.push((q.to_string(), a.to_string()));
            }
            Ok(Input::Faq(pairs))
        }
        "URL" => {
            forbid(&["content", "faqs", "content_base64"])?;
            let url = req_str(body, "url", 2048)?;
            super::resource::check("url", Kind::Url, &json!(url), &[0; 32])?;
            Ok(Input::Url(url.to_string()))
        }
        "PDF" => {
            forbid(&["content", "faqs", "url"])?;
            use base64::Engine;
            let b64 = req_str(body, "content_base64", usize::MAX)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| ApiError::validation("content_base64", "must be base64"))?;
            Ok(Input::Pdf(bytes))
        }
        _ => Err(ApiError::validation(
            "type",
            format!("must be one of: {}", TYPES.join(", ")),
        )),
    }
}

async fn create(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, axum::response::Response), ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Manager).await?;
    only_fields(
        &body,
        &[
            "name",
            "type",
            "agent_id",
            "content",
            "faqs",
            "url",
            "content_base64",
        ],
    )?;
    let name = req_str(&body, "name", 200)?.to_string();
    let kind = req_str(&body, "type", 10)?.to_string();
    let agent_id = match opt_str(&body, "agent_id")? {
        Some(s) => Some(
            Uuid::parse_str(s).map_err(|_| ApiError::validation("agent_id", "must be a UUID"))?,
        ),
        None => None,
    };
    let input = parse_input(&kind, &body)?;
    let url = match &input {
        Input::Url(u) => Some(u.clone()),
        _ => None,
    };

    // 1. The source row, pending, visible at once.
    let mut tx = st.begin(&p).await?;
    let mut refs = Map::new();
    if let Some(a) = agent_id {
        refs.insert("agent_id".into(), json!(a));
    }
    check_refs(&mut tx, KNOWLEDGE.fields, &refs, ws).await?;
    let id: Uuid = sqlx::query_scalar(
        "insert into knowledge_sources (workspace_id, agent_id, name, type, url, status)
         values ($1, $2, $3, $4::knowledge_type, $5, 'pending') returning id",
    )
    .bind(ws)
    .bind(agent_id)
    .bind(&name)
    .bind(&kind)
    .bind(&url)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    // 2. Processing: extraction may take seconds (a fetch, a PDF).
    set_status(&st, &p, ws, id, "processing", None).await?;
    let outcome = match input {
        Input::Text(text) => Ok(text),
        Input::Faq(pairs) => Ok(pairs
            .iter()
            .map(|(q, a)| chunk::faq_chunk(q, a))
            .collect::<Vec<_>>()
            .join("\n\n")),
        Input::Url(url) => extract::fetch_text(&st, &url).await,
        Input::Pdf(bytes) => extract::pdf_text(bytes).await,
    };
    let outcome = outcome.map(|text| clean_text(&text));
    let chunks = match &outcome {
        Ok(text) if kind == "FAQ" => text
            .split("\n\n")
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string)
            .collect(),
        Ok(text) => chunk::chunk_text(text),
        Err(_) => Vec::new(),
    };
    // 3. Ready with its chunks, or failed with the reason (nothing else
    // is touched: other sources and the request itself are fine; a source
    // is never left in `processing`).
    let failure: Option<String> = match outcome {
        Ok(_) if chunks.is_empty() => Some("the document contains no text".into()),
        Ok(text) => match store_chunks(&st, &p, ws, id, &text, &chunks).await {
            Ok(()) => None,
            Err(err) => {
                tracing::warn!(source_id = %id, error = ?err, "knowledge chunks not stored");
                Some("the extracted text could not be stored".into())
            }
        },
        Err(reason) => {
            tracing::info!(source_id = %id, %reason, "knowledge source failed");
            Some(reason)
        }
    };
    if let Some(reason) = failure {
        set_status(&st, &p, ws, id, "failed", Some(&reason)).await?;
    }
    let mut tx = st.begin(&p).await?;
    let row: String = sqlx::query_scalar(&format!(
        "select ({})::text from knowledge_sources t where t.id = $1",
        presented_sql(&KNOWLEDGE, &[])
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, json_text(row)))
}

async fn set_status(
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    id: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<(), ApiError> {
    let mut tx = st.begin(p).await?;
    sqlx::query(
        "update knowledge_sources set status = $3, error = $4 where workspace_id = $1 and id = $2",
    )
    .bind(ws)
    .bind(id)
    .bind(status)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn store_chunks(
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    id: Uuid,
    text: &str,
    chunks: &[String],
) -> Result<(), ApiError> {
    let mut tx = st.begin(p).await?;
    sqlx::query("delete from knowledge_chunks where workspace_id = $1 and source_id = $2")
        .bind(ws)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for (i, content) in chunks.iter().enumerate() {
        sqlx::query(
            "insert into knowledge_chunks (source_id, workspace_id, content, chunk_index, token_count)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(ws)
        .bind(content)
        .bind(i as i32)
        .bind(chunk::token_estimate(content))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "update knowledge_sources set status = 'ready', error = null, content = $3, chunk_count = $4
          where workspace_id = $1 and id = $2",
    )
    .bind(ws)
    .bind(id)
    .bind(text)
    .bind(chunks.len() as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    extract::embed_source(st, ws).await;
    Ok(())
}

async fn chunks(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    q: QueryMap,
) -> Result<Json<Value>, ApiError> {
    let (ws, id) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Viewer).await?;
    let (limit, offset) = pagination(&q.0)?;
    let mut tx = st.begin(&p).await?;
    let exists: bool = sqlx::query_scalar(
        "select exists(select 1 from knowledge_sources where workspace_id = $1 and id = $2)",
    )
    .bind(ws)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Err(ApiError::NotFound);
    }
    let rows: Vec<Value> = sqlx::query_scalar(
        "select jsonb_build_object('id', c.id, 'source_id', c.source_id, 'agent_id', c.agent_id,
                'content', c.content, 'chunk_index', c.chunk_index, 'token_count', c.token_count,
                'has_embedding', c.embedding is not null)
           from knowledge_chunks c where c.workspace_id = $1 and c.source_id = $2
          order by c.chunk_index limit $3 offset $4",
    )
    .bind(ws)
    .bind(id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(
        json!({"items": rows, "limit": limit, "offset": offset}),
    ))
}

async fn search(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let (ws, agent_id) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Viewer).await?;
    only_fields(&body, &["query", "limit"])?;
    let query = req_str(&body, "query", 2000)?.to_string();
    let limit = match body.get("limit") {
        None | Some(Value::Null) => 5,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=50).contains(&n) => n,
            _ => {
                return Err(ApiError::validation(
                    "limit",
                    "must be an integer from 1 to 50",
                ))
            }
        },
    };
    let mut tx = st.begin(&p).await?;
    let agent: bool = sqlx::query_scalar(
        "select exists(select 1 from agents where workspace_id = $1 and id = $2)",
    )
    .bind(ws)
    .bind(agent_id)
    .fetch_one(&mut *tx)
    .await?;
    if !agent {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    let items = extract::rank(&st, ws, agent_id, &query, limit).await?;
    Ok(Json(json!({ "query": query, "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_go_and_the_length_is_bounded() {
        assert_eq!(clean_text("a\u{0}b\u{7}c\r\nd\te"), "a b c\n\nd\te");
        let long = "x".repeat(MAX_TEXT_CHARS + 10);
        assert_eq!(clean_text(&long).chars().count(), MAX_TEXT_CHARS);
    }
}
