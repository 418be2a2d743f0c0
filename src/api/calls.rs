//! Call endpoints beyond the generic read-only views: the live calls of a
//! workspace (through [`LiveCalls`](super::LiveCalls)), hanging one up, and
//! downloading a recording's WAV.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Principal;
use super::body::{only_fields, req_str, JsonObject};
use super::error::ApiError;
use super::extract::Ids;
use super::live::DtmfSent;
use super::live::LiveCallView;
use super::types::Role;
use super::ApiState;

/// Largest recording served (a 4-hour 8 kHz 16-bit mono WAV is ~230 MB).
const MAX_RECORDING_BYTES: u64 = 512 * 1024 * 1024;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/workspaces/{workspace_id}/calls/live", get(live))
        .route(
            "/v1/workspaces/{workspace_id}/calls/live/{call_id}",
            delete(hangup),
        )
        .route(
            "/v1/workspaces/{workspace_id}/calls/live/{call_id}/dtmf",
            post(send_dtmf),
        )
        .route(
            "/v1/workspaces/{workspace_id}/call-recordings/{id}/audio",
            get(recording_audio),
        )
}

async fn live(State(st): State<ApiState>, p: Principal, ids: Ids) -> Result<Json<Value>, ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Viewer).await?;
    let items: Vec<LiveCallView> = match &st.cluster {
        // Every node's calls, as the shared count holds them.
        Some(c) => c.live(ws).await?.into_iter().map(Into::into).collect(),
        None => st.live.as_ref().map(|l| l.list(ws)).unwrap_or_default(),
    };
    Ok(Json(json!({ "items": items })))
}

async fn hangup(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let (ws, call) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Manager).await?;
    if st.live.as_ref().is_some_and(|l| l.hangup(ws, call)) {
        return Ok(StatusCode::ACCEPTED);
    }
    // A call another node of the cluster holds: that node is asked.
    match &st.cluster {
        Some(c) if c.request_hangup(ws, call).await? => Ok(StatusCode::ACCEPTED),
        _ => Err(ApiError::NotFound),
    }
}

/// Digits one request may send (the media engine queues 32 at most).
const MAX_DTMF_DIGITS: usize = 32;

/// `{"digits": "12#"}`: RFC 4733 digits on an answered call, inbound or
/// outbound, with the telephone-event payload type the far end offered.
async fn send_dtmf(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let (ws, call) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Manager).await?;
    only_fields(&body, &["digits"])?;
    let digits = req_str(&body, "digits", MAX_DTMF_DIGITS)?;
    if !digits
        .chars()
        .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c))
    {
        return Err(ApiError::validation(
            "digits",
            "must be DTMF digits: 0-9, *, #, A-D",
        ));
    }
    let Some(live) = &st.live else {
        return Err(ApiError::NotFound);
    };
    match live.send_dtmf(ws, call, digits) {
        DtmfSent::Queued => Ok(StatusCode::ACCEPTED),
        DtmfSent::NoSuchCall => Err(ApiError::NotFound),
        DtmfSent::NotOffered => Err(ApiError::Conflict {
            message: "the far end offered no telephone-event: digits cannot be sent on this call"
                .into(),
            field: None,
        }),
        DtmfSent::Busy => Err(ApiError::Capacity(
            "the call is busy with earlier requests; retry".into(),
        )),
    }
}

/// A stored path made safe: relative paths live under the recording folder,
/// and no path may climb out with `..`. Rows written before the runtime
/// stored names relative to the folder carry the (relative) folder itself
/// as a prefix; those are used as they are.
fn resolve(dir: &Path, stored: &str) -> Option<PathBuf> {
    let p = Path::new(stored);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    Some(
        if p.is_absolute() || (dir.is_relative() && p.starts_with(dir)) {
            p.to_path_buf()
        } else {
            dir.join(p)
        },
    )
}

async fn recording_audio(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Response, ApiError> {
    let (ws, id) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Viewer).await?;
    let mut tx = st.begin(&p).await?;
    let row: Option<(String, String)> = sqlx::query_as(
        "select storage_path, format from call_recordings where workspace_id = $1 and id = $2",
    )
    .bind(ws)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (stored, format) = row.ok_or(ApiError::NotFound)?;
    let path = resolve(&st.config.recording.dir, &stored).ok_or(ApiError::NotFound)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "recording file missing");
            return Err(ApiError::NotFound);
        }
    };
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    if len > MAX_RECORDING_BYTES {
        return Err(ApiError::internal(
            "recording larger than the download limit",
        ));
    }
    let mime = if format.eq_ignore_ascii_case("wav") {
        "audio/wav"
    } else {
        "application/octet-stream"
    };
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.{format}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape() {
        let dir = Path::new("/data/rec");
        assert_eq!(
            resolve(dir, "a/b.wav").unwrap(),
            Path::new("/data/rec/a/b.wav")
        );
        assert_eq!(resolve(dir, "/abs/c.wav").unwrap(), Path::new("/abs/c.wav"));
        assert!(resolve(dir, "../etc/passwd").is_none());
        assert!(resolve(dir, "a/../../x").is_none());
        let relative = Path::new("data/recordings");
        assert_eq!(
            resolve(relative, "x.wav").unwrap(),
            Path::new("data/recordings/x.wav")
        );
        assert_eq!(
            resolve(relative, "data/recordings/x.wav").unwrap(),
            Path::new("data/recordings/x.wav")
        );
    }
}
