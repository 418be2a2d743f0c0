//! Workspace API keys (OWNER only): the full `sk_live_…` key is returned
//! once at creation; the database keeps its prefix and SHA-256 hash.
//! Deleting a key revokes it (the row stays for the audit trail).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{generate_api_key, Principal};
use super::body::{only_fields, opt_str, req_str, JsonObject};
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;

/// What is shown of a key: never `key_hash`.
const COLUMNS: &str =
    "jsonb_build_object('id', k.id, 'workspace_id', k.workspace_id, 'name', k.name,
    'prefix', k.prefix, 'role', k.role, 'last_used_at', k.last_used_at, 'expires_at', k.expires_at,
    'revoked_at', k.revoked_at, 'created_at', k.created_at)";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/workspaces/{workspace_id}/api-keys",
            get(list).post(create),
        )
        .route(
            "/v1/workspaces/{workspace_id}/api-keys/{id}",
            delete(revoke),
        )
}

async fn create(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Owner).await?;
    only_fields(&body, &["name", "role", "expires_at"])?;
    let name = req_str(&body, "name", 200)?;
    let role: Role = match opt_str(&body, "role")? {
        Some(r) => r
            .parse()
            .map_err(|e: String| ApiError::validation("role", e))?,
        None => Role::Viewer,
    };
    let expires_at = match opt_str(&body, "expires_at")? {
        Some(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::validation("expires_at", "must be an RFC 3339 time"))?;
            if t <= chrono::Utc::now() {
                return Err(ApiError::validation("expires_at", "must be in the future"));
            }
            Some(t.with_timezone(&chrono::Utc))
        }
        None => None,
    };
    let (key, prefix, hash) = generate_api_key();
    let mut tx = st.begin(&p).await?;
    let mut row: Value = sqlx::query_scalar(&format!(
        "insert into api_keys as k (workspace_id, name, prefix, key_hash, role, expires_at)
         values ($1, $2, $3, $4, $5::app_role, $6) returning {COLUMNS}"
    ))
    .bind(ws)
    .bind(name)
    .bind(&prefix)
    .bind(&hash)
    .bind(role.as_str())
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Value::Object(map) = &mut row {
        map.insert("key".into(), json!(key));
    }
    Ok((StatusCode::CREATED, Json(row)))
}

async fn list(State(st): State<ApiState>, p: Principal, ids: Ids) -> Result<Json<Value>, ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Owner).await?;
    let mut tx = st.begin(&p).await?;
    let rows: Vec<Value> = sqlx::query_scalar(&format!(
        "select {COLUMNS} from api_keys k where k.workspace_id = $1 order by k.created_at desc, k.id limit 1000"
    ))
    .bind(ws)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({ "items": rows })))
}

async fn revoke(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let (ws, id) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Owner).await?;
    let mut tx = st.begin(&p).await?;
    let done = sqlx::query(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
          where workspace_id = $1 and id = $2",
    )
    .bind(ws)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    super::auth::forget_key(&st, id);
    Ok(StatusCode::NO_CONTENT)
}
