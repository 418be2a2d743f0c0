//! `GET /v1/workspaces/{workspace_id}/calls/live/{call_id}/transcript`: a
//! live call's transcript as server-sent events (VIEWER). Events: `line`
//! (`{seq, role: user|assistant|event, text, at}`; the lines so far first,
//! then each as it happens), `lost` (`{count}`, a watcher too slow to keep
//! up), and `end` when the call is over. The call must be held by this node
//! (in a cluster, ask the node in the call's `node_id`); otherwise 404.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream};
use serde_json::json;

use super::auth::Principal;
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;
use crate::agent_runtime::transcript::{TranscriptWatcher, Watched};

pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/v1/workspaces/{workspace_id}/calls/live/{call_id}/transcript",
        get(transcript),
    )
}

async fn transcript(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (ws, call) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Viewer).await?;
    let feed = st
        .live
        .as_ref()
        .and_then(|l| l.transcript(ws, call))
        .ok_or(ApiError::NotFound)?;
    // Only the watcher is kept: the stream ends when the call drops the feed.
    let watcher = feed.watcher();
    drop(feed);
    Ok(Sse::new(events(watcher)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn events(watcher: TranscriptWatcher) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some(watcher), |state| async move {
        let mut watcher = state?;
        let event = match watcher.next().await {
            Some(Watched::Line(line)) => Event::default()
                .event("line")
                .id(line.seq.to_string())
                .json_data(&line)
                .unwrap_or_else(|_| Event::default().event("lost").data("{\"count\":1}")),
            Some(Watched::Lost(count)) => Event::default()
                .event("lost")
                .data(json!({ "count": count }).to_string()),
            None => return Some((Ok(Event::default().event("end").data("{}")), None)),
        };
        Some((Ok(event), Some(watcher)))
    })
}
