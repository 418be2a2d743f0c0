//! Turning a source into text (URL fetch with size/time limits and a
//! private-address guard, PDF extraction off the async threads), embeddings
//! when a provider is configured, and ranking chunks for a query.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::agent_runtime::embeddings::{embed_missing_chunks, embed_query};

/// Most chunks embedded right after one ingest (the rest at start-up).
const MAX_EMBED_PER_INGEST: usize = 100_000;
use crate::agent_runtime::retrieval;

use super::super::error::ApiError;
use super::super::html::html_to_text;
use super::super::ApiState;

/// How long a knowledge search waits for its question's embedding.
const API_EMBED_BUDGET: Duration = Duration::from_secs(10);

pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
pub const MAX_FETCH_BYTES: usize = 5 * 1024 * 1024;
const PDF_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches a URL and returns its text: HTML is converted, plain text kept,
/// PDF extracted; anything else fails the source.
pub async fn fetch_text(st: &ApiState, url: &str) -> Result<String, String> {
    // Names are checked where they are resolved, for the first hop and
    // every redirect (`outbound`); literal addresses and schemes here.
    let mut response = st
        .shared
        .http
        .get(url)?
        .send()
        .await
        .map_err(|e| format!("fetching the URL failed: {}", without_url(&e)))?;
    if !response.status().is_success() {
        return Err(format!(
            "the URL answered HTTP {}",
            response.status().as_u16()
        ));
    }
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_FETCH_BYTES)
    {
        return Err(format!(
            "the document is larger than {MAX_FETCH_BYTES} bytes"
        ));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > MAX_FETCH_BYTES {
                    return Err(format!(
                        "the document is larger than {MAX_FETCH_BYTES} bytes"
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(format!("reading the URL failed: {}", without_url(&e))),
        }
    }
    if content_type.starts_with("application/pdf") {
        return pdf_text(bytes).await;
    }
    let text = String::from_utf8_lossy(&bytes);
    if content_type.starts_with("text/html") || content_type.starts_with("application/xhtml") {
        Ok(html_to_text(&text))
    } else if content_type.starts_with("text/") {
        Ok(text.into_owned())
    } else {
        Err(format!("unsupported content type {content_type:?}"))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    if let Some(refused) = crate::outbound::refusal(e) {
        refused
    } else if e.is_redirect() {
        // The policy's own words ("more than 5 redirects") are the last source.
        let mut last: &dyn std::error::Error = e;
        while let Some(next) = last.source() {
            last = next;
        }
        last.to_string()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        e.to_string()
    }
}

/// PDFs read at once. A parse that outlives its timeout cannot be stopped
/// (the parser has no cancellation), so it keeps its slot until it ends:
/// hostile files can occupy these threads, never more.
const PDF_WORKERS: usize = 2;

/// Extracts a PDF's text on a bounded set of blocking threads; a corrupt
/// file (which can make the parser panic) fails this source only, and so
/// does one that finds every slot taken for the whole timeout.
pub async fn pdf_text(bytes: Vec<u8>) -> Result<String, String> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    if !bytes.starts_with(b"%PDF-") {
        return Err("not a PDF file (no %PDF- header)".into());
    }
    let slots = SLOTS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(PDF_WORKERS)));
    let slot = match tokio::time::timeout(PDF_TIMEOUT, slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => return Err("other PDFs are being read; try again later".into()),
    };
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        pdf_extract::extract_text_from_mem(&bytes)
    });
    match tokio::time::timeout(PDF_TIMEOUT, job).await {
        Err(_) => Err("the PDF took too long to read".into()),
        Ok(Err(_panic)) => Err("the PDF is corrupt and could not be read".into()),
        Ok(Ok(Err(e))) => Err(format!("the PDF is corrupt and could not be read: {e}")),
        Ok(Ok(Ok(text))) => Ok(text),
    }
}

/// Embeds the workspace's new chunks (whole chunk and FAQ question) with
/// the process's embedder, so stored vectors match the runtime's query
/// vectors, and brings the in-memory index up to date. A failure (logged)
/// leaves those chunks to full-text retrieval until the next start-up.
pub async fn embed_source(st: &ApiState, ws: Uuid) {
    match embed_missing_chunks(&st.pool, st.embedder.as_ref(), ws, MAX_EMBED_PER_INGEST).await {
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(workspace_id = %ws, error = %e, "embedding failed; full-text only")
        }
    }
    st.knowledge.refresh(Some(ws)).await;
}

/// The chunks the runtime would put into the prompt for `query`: the same
/// hybrid retrieval function (`agent_runtime::retrieval::search`) over the
/// agent's own and the workspace-wide chunks. The caller has already checked,
/// under RLS, that the agent belongs to `ws`.
pub async fn rank(
    st: &ApiState,
    ws: Uuid,
    agent_id: Uuid,
    query: &str,
    limit: i64,
) -> Result<Vec<Value>, ApiError> {
    // The question's vector as a call's turn makes it; an admin's search
    // is not in a conversation, so it waits longer for it.
    let embedding = embed_query(st.embedder.as_ref(), query, API_EMBED_BUDGET);
    let opts = retrieval::SearchOptions {
        limit: limit.clamp(1, 50) as usize,
        floor: retrieval::DEFAULT_FLOOR,
        off_topic_too: false,
    };
    let (found, _) = retrieval::search(&st.knowledge, (ws, Some(agent_id)), query, embedding, opts)
        .await
        .map_err(|e| ApiError::internal(format!("retrieval: {e}")))?;
    Ok(found
        .into_iter()
        .map(|c| {
            json!({"chunk_id": c.chunk_id, "source_id": c.source_id, "agent_id": c.agent_id,
                   "content": c.content, "chunk_index": c.chunk_index, "score": c.score,
                   "text_score": c.text_score, "vector_score": c.vector_score})
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn corrupt_pdf_fails_cleanly() {
        assert!(pdf_text(b"hello".to_vec()).await.is_err());
        let err = pdf_text(b"%PDF-1.4\n garbage garbage".to_vec())
            .await
            .unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
    }
}
