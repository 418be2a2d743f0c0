//! Tenancy: workspaces (the creator becomes OWNER), members and their roles
//! (OWNER manages them), `GET /v1/me`, and the global catalogues.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::auth::Principal;
use super::body::{only_fields, opt_str, req_str, JsonObject};
use super::error::ApiError;
use super::extract::{pagination, Ids, QueryMap};
use super::resource::check_free_json;
use super::types::Role;
use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/workspaces", get(list).post(create))
        .route(
            "/v1/workspaces/{workspace_id}",
            get(get_one).patch(update).delete(remove),
        )
        .route(
            "/v1/workspaces/{workspace_id}/members",
            get(members).post(add_member),
        )
        .route(
            "/v1/workspaces/{workspace_id}/members/{user_id}",
            axum::routing::patch(change_member).delete(remove_member),
        )
        .route("/v1/llm-models", get(llm_models))
        .route("/v1/pricing-plans", get(pricing_plans))
}

fn check_slug(slug: &str) -> Result<(), ApiError> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "slug",
            "must be 1 to 63 of a-z, 0-9 and -, not starting with -",
        ))
    }
}

/// `"Acme Support!"` → `acme-support-3f9a1c`: readable and unique enough
/// that two workspaces with one name do not collide.
fn slug_from(name: &str) -> String {
    let mut slug = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let suffix = &Uuid::new_v4().simple().to_string()[..6];
    format!(
        "{}{suffix}",
        if slug.is_empty() {
            "ws-".to_string()
        } else {
            format!("{}-", slug.trim_end_matches('-'))
        }
    )
}

fn user_only(p: &Principal) -> Result<Uuid, ApiError> {
    p.user_id()
        .ok_or_else(|| ApiError::Forbidden("API keys cannot do this; sign in as a user".into()))
}

async fn create(
    State(st): State<ApiState>,
    p: Principal,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user_id = user_only(&p)?;
    only_fields(&body, &["name", "slug", "settings"])?;
    let name = req_str(&body, "name", 200)?.to_string();
    let slug = match opt_str(&body, "slug")? {
        Some(s) => {
            check_slug(s)?;
            s.to_string()
        }
        None => slug_from(&name),
    };
    let settings = match body.get("settings") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => {
            check_free_json("settings", v)?;
            v.clone()
        }
        Some(_) => return Err(ApiError::validation("settings", "must be a JSON object")),
    };
    let mut tx = st.begin(&p).await?;
    // created_by defaults to auth.uid(); the policy then lets the creator
    // add themself as the first OWNER.
    let ws: Value = sqlx::query_scalar(
        "insert into workspaces as w (name, slug, settings) values ($1, $2, $3)
         returning to_jsonb(w)",
    )
    .bind(&name)
    .bind(&slug)
    .bind(&settings)
    .fetch_one(&mut *tx)
    .await?;
    let id = ws
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::internal("inserted workspace has no id"))?;
    sqlx::query("insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'OWNER')")
        .bind(user_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update profiles set workspace_id = $2 where id = $1 and workspace_id is null")
        .bind(user_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(with_role(ws, Role::Owner))))
}

fn with_role(mut ws: Value, role: Role) -> Value {
    if let Value::Object(map) = &mut ws {
        map.insert("role".into(), json!(role.as_str()));
    }
    ws
}

async fn list(
    State(st): State<ApiState>,
    p: Principal,
    q: QueryMap,
) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = pagination(&q.0)?;
    let mut tx = st.begin(&p).await?;
    let rows: Vec<Value> = sqlx::query_scalar(
        "select to_jsonb(w) || jsonb_build_object('role', get_user_role(w.id))
           from workspaces w
          where get_user_role(w.id) is not null
          order by w.created_at, w.id limit $1 offset $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(
        json!({"items": rows, "limit": limit, "offset": offset}),
    ))
}

async fn get_one(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let ws = ids.get(0)?;
    let role = st.require(&p, ws, Role::Viewer).await?;
    let mut tx = st.begin(&p).await?;
    let row: Option<Value> =
        sqlx::query_scalar("select to_jsonb(w) from workspaces w where w.id = $1")
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Json(with_role(row.ok_or(ApiError::NotFound)?, role)))
}

async fn update(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let ws = ids.get(0)?;
    let role = st.require(&p, ws, Role::Manager).await?;
    only_fields(&body, &["name", "slug", "settings"])?;
    let mut values = Map::new();
    if body.contains_key("name") {
        values.insert("name".into(), json!(req_str(&body, "name", 200)?));
    }
    if body.contains_key("slug") {
        let slug = req_str(&body, "slug", 63)?;
        check_slug(slug)?;
        values.insert("slug".into(), json!(slug));
    }
    match body.get("settings") {
        None => {}
        Some(v @ Value::Object(_)) => {
            check_free_json("settings", v)?;
            values.insert("settings".into(), v.clone());
        }
        Some(_) => return Err(ApiError::validation("settings", "must be a JSON object")),
    }
    let mut tx = st.begin(&p).await?;
    let row: Option<Value> = if values.is_empty() {
        sqlx::query_scalar("select to_jsonb(w) from workspaces w where w.id = $1")
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?
    } else {
        let sets: Vec<String> = values.keys().map(|c| format!("{c} = r.{c}")).collect();
        sqlx::query_scalar(&format!(
            "update workspaces w set {} from jsonb_populate_record(null::workspaces, $1) r
              where w.id = $2 returning to_jsonb(w)",
            sets.join(", ")
        ))
        .bind(Value::Object(values))
        .bind(ws)
        .fetch_optional(&mut *tx)
        .await?
    };
    tx.commit().await?;
    Ok(Json(with_role(row.ok_or(ApiError::NotFound)?, role)))
}

async fn remove(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Owner).await?;
    let mut tx = st.begin(&p).await?;
    let done = sqlx::query("delete from workspaces where id = $1")
        .bind(ws)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Viewer).await?;
    let mut tx = st.begin(&p).await?;
    // Emails come from auth.users, which users cannot read directly: join
    // through the member rows RLS already let us see.
    let visible: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select user_id, role::text, created_at from user_roles
          where workspace_id = $1 order by created_at, user_id",
    )
    .bind(ws)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let ids: Vec<Uuid> = visible.iter().map(|m| m.0).collect();
    let emails: Vec<(Uuid, String)> =
        sqlx::query_as("select id, email from auth.users where id = any($1)")
            .bind(&ids)
            .fetch_all(&st.pool)
            .await?;
    let items: Vec<Value> = visible
        .into_iter()
        .map(|(user_id, role, since)| {
            let email = emails.iter().find(|e| e.0 == user_id).map(|e| e.1.clone());
            json!({"user_id": user_id, "email": email, "role": role, "created_at": since})
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

fn parse_role(body: &Map<String, Value>) -> Result<Role, ApiError> {
    req_str(body, "role", 20)?
        .parse()
        .map_err(|e: String| ApiError::validation("role", e))
}

async fn add_member(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Owner).await?;
    only_fields(&body, &["email", "role"])?;
    let email = super::auth_routes::normalize_email(req_str(&body, "email", 320)?)?;
    let role = parse_role(&body)?;
    let user_id: Option<Uuid> = sqlx::query_scalar("select id from auth.users where email = $1")
        .bind(&email)
        .fetch_optional(&st.pool)
        .await?;
    let user_id = user_id.ok_or_else(|| ApiError::Unprocessable {
        message: "no account with this email; it must sign up first".into(),
        field: Some("email".into()),
    })?;
    let mut tx = st.begin(&p).await?;
    sqlx::query(
        "insert into user_roles (user_id, workspace_id, role) values ($1, $2, $3::app_role)",
    )
    .bind(user_id)
    .bind(ws)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::Conflict {
            message: "already a member".into(),
            field: Some("email".into()),
        },
        other => other,
    })?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": user_id, "email": email, "role": role.as_str()})),
    ))
}

/// Refuses to leave a workspace without an OWNER.
async fn ensure_other_owner(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ws: Uuid,
    user_id: Uuid,
) -> Result<(), ApiError> {
    let others: i64 = sqlx::query_scalar(
        "select count(*) from user_roles where workspace_id = $1 and role = 'OWNER' and user_id <> $2",
    )
    .bind(ws)
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    if others == 0 {
        return Err(ApiError::Conflict {
            message: "a workspace must keep at least one OWNER".into(),
            field: Some("role".into()),
        });
    }
    Ok(())
}

async fn change_member(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let (ws, user_id) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Owner).await?;
    only_fields(&body, &["role"])?;
    let role = parse_role(&body)?;
    let mut tx = st.begin(&p).await?;
    if role != Role::Owner {
        ensure_other_owner(&mut tx, ws, user_id).await?;
    }
    let done = sqlx::query(
        "update user_roles set role = $3::app_role where workspace_id = $1 and user_id = $2",
    )
    .bind(ws)
    .bind(user_id)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(Json(json!({"user_id": user_id, "role": role.as_str()})))
}

async fn remove_member(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let (ws, user_id) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Owner).await?;
    let mut tx = st.begin(&p).await?;
    ensure_other_owner(&mut tx, ws, user_id).await?;
    let done = sqlx::query("delete from user_roles where workspace_id = $1 and user_id = $2")
        .bind(ws)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(st): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    match &p {
        Principal::ApiKey {
            key_id,
            workspace_id,
            role,
        } => Ok(Json(json!({
            "kind": "api_key",
            "api_key_id": key_id,
            "workspace_id": workspace_id,
            "role": role.as_str(),
        }))),
        Principal::User { user_id, email, .. } => {
            let mut tx = st.begin(&p).await?;
            let profile: Option<Value> =
                sqlx::query_scalar("select to_jsonb(p) from profiles p where p.id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let workspaces: Vec<Value> = sqlx::query_scalar(
                "select jsonb_build_object('id', w.id, 'name', w.name, 'slug', w.slug, 'role', ur.role)
                   from user_roles ur join workspaces w on w.id = ur.workspace_id
                  where ur.user_id = $1 order by w.created_at, w.id",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Json(json!({
                "kind": "user",
                "id": user_id,
                "email": email,
                "profile": profile,
                "workspaces": workspaces,
            })))
        }
    }
}

async fn catalogue(
    st: &ApiState,
    p: &Principal,
    table: &str,
    order: &str,
) -> Result<Json<Value>, ApiError> {
    let mut tx = st.begin(p).await?;
    let rows: Vec<Value> = sqlx::query_scalar(&format!(
        "select to_jsonb(t) from {table} t order by {order}, t.id limit 500"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({ "items": rows })))
}

async fn llm_models(State(st): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    catalogue(&st, &p, "llm_models", "t.provider, t.name").await
}

async fn pricing_plans(State(st): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    catalogue(&st, &p, "pricing_plans", "t.price_monthly nulls last").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        let s = slug_from("Acme Support!");
        assert!(s.starts_with("acme-support-"), "{s}");
        assert!(check_slug(&s).is_ok());
        assert!(check_slug(&slug_from("!!!")).is_ok());
        assert!(check_slug("Bad").is_err());
        assert!(check_slug("-x").is_err());
    }
}
