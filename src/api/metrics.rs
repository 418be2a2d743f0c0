//! `GET /metrics`: the process's Prometheus metrics, without login, for
//! scrapers whose address `api.metrics_allow` admits (403 for others, and
//! when the peer's address is unknown); and the layer that times every
//! request by its matched route template.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::ApiState;
use crate::metrics::{metrics, TEXT_FORMAT};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(st): State<ApiState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if !peer.is_some_and(|ip| st.shared.metrics_allow.permits(ip)) {
        return (
            StatusCode::FORBIDDEN,
            "this address may not read /metrics (api.metrics_allow)\n",
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], metrics().render()).into_response()
}

/// Times a request under its route template (`/v1/workspaces/{id}`), so a
/// path full of ids or a scan of random paths (`unmatched`) adds no series.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics().http_request(route, response.status().as_u16(), started.elapsed());
    response
}
