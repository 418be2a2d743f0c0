//! `GET /v1/workspaces/{workspace_id}/usage-summary` (VIEWER): this month's
//! usage beside the plan in force (the subscription's, else the default
//! plan) and whether new calls are still admitted — the figures the
//! console's usage page draws, computed by the same SQL functions the
//! runtime's admission uses (`get_workspace_usage`, `workspace_plan`,
//! `check_usage_limit`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::auth::Principal;
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/workspaces/{workspace_id}/usage-summary", get(summary))
}

async fn summary(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Viewer).await?;
    let mut tx = st.begin(&p).await?;
    let body: Value = sqlx::query_scalar(
        "select jsonb_build_object(
                'month', u.month,
                'usage', jsonb_build_object(
                    'conversations', u.conversations, 'messages', u.messages,
                    'tokens_used', u.tokens_used, 'call_seconds', u.call_seconds,
                    'stt_seconds', u.stt_seconds, 'tts_characters', u.tts_characters),
                'plan', case when pl.id is null then null else jsonb_build_object(
                    'id', pl.id, 'name', pl.name, 'price_monthly', pl.price_monthly,
                    'conversation_limit', pl.conversation_limit,
                    'minute_limit', pl.minute_limit) end,
                'within_limits', check_usage_limit($1))
           from get_workspace_usage($1) u, workspace_plan($1) pl",
    )
    .bind(ws)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(body))
}
