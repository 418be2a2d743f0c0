//! `GET /healthz` (the process answers) and `GET /readyz` (the database
//! answers, every migration is applied, and the node's start-up stages
//! are done: see [`crate::readiness`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<ApiState>) -> (StatusCode, Json<Value>) {
    if crate::db::ready(&st.pool).await {
        let pending = st.warm_up.as_ref().map(|w| w.pending()).unwrap_or_default();
        if pending.is_empty() {
            (StatusCode::OK, Json(json!({"status": "ready"})))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "warming_up", "pending": pending})),
            )
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "not_ready", "reason": "database unreachable or migrations pending"}),
            ),
        )
    }
}
