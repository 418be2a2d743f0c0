//! `GET /healthz` (the process answers) and `GET /readyz` (the database
//! answers and every migration is applied).

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
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "not_ready", "reason": "database unreachable or migrations pending"}),
            ),
        )
    }
}
