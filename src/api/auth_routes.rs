//! `POST /v1/auth/signup` and `POST /v1/auth/token`: accounts in
//! `auth.users` (argon2id) and Supabase-shaped access tokens. Login attempts
//! are limited per email and per source address.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{dummy_verify, hash_password, issue_token, verify_password};
use super::body::{only_fields, req_str, JsonObject};
use super::error::ApiError;
use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/token", post(token))
}

/// Lower-cased, trimmed, plausible address (one `@`, a dot in the domain).
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 320
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(email)
    } else {
        Err(ApiError::validation("email", "must be an email address"))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(8..=256).contains(&n) {
        return Err(ApiError::validation(
            "password",
            "must be 8 to 256 characters",
        ));
    }
    Ok(())
}

/// The source address as the limiter keys it; a proxy's X-Forwarded-For is
/// not trusted (anyone could rotate it to dodge the limit).
fn peer(connect: Option<&ConnectInfo<SocketAddr>>) -> String {
    connect
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn signup(
    State(st): State<ApiState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    only_fields(&body, &["email", "password", "full_name"])?;
    let email = normalize_email(req_str(&body, "email", 320)?)?;
    let password = req_str(&body, "password", 256)?.to_string();
    check_password(&password)?;
    let full_name = super::body::opt_str(&body, "full_name")?.map(str::to_string);
    if full_name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::validation(
            "full_name",
            "must be at most 200 characters",
        ));
    }
    let addr = peer(connect.as_ref().map(|e| &e.0));
    st.shared
        .login_per_addr
        .hit(&format!("signup:{addr}"), Instant::now())
        .map_err(|s| ApiError::TooManyRequests {
            retry_after_secs: s,
        })?;
    let phc = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)??;
    // Account creation is the auth service's job (Supabase Auth's, here
    // ours): it runs with the server's own role, not as a user.
    let mut tx = st.pool.begin().await?;
    let id: Uuid = sqlx::query_scalar(
        "insert into auth.users (email, encrypted_password) values ($1, $2) returning id",
    )
    .bind(&email)
    .bind(&phc)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::Conflict {
            message: "an account with this email exists".into(),
            field: Some("email".into()),
        },
        other => other,
    })?;
    sqlx::query("insert into profiles (id, full_name) values ($1, $2)")
        .bind(id)
        .bind(&full_name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(user_id = %id, "account created");
    Ok((StatusCode::CREATED, Json(json!({"id": id, "email": email}))))
}

async fn token(
    State(st): State<ApiState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    _headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    only_fields(&body, &["email", "password", "grant_type"])?;
    let email = normalize_email(req_str(&body, "email", 320)?)?;
    let password = req_str(&body, "password", 256)?.to_string();
    let now = Instant::now();
    let addr = peer(connect.as_ref().map(|e| &e.0));
    let limited = |s| ApiError::TooManyRequests {
        retry_after_secs: s,
    };
    // Failures lock an email out from the address they came from only:
    // a stranger guessing a victim's password does not lock the victim out.
    let email_here = format!("{email}\n{addr}");
    st.shared.login_per_addr.hit(&addr, now).map_err(limited)?;
    st.shared
        .login_per_email
        .hit(&email_here, now)
        .map_err(limited)?;

    let row: Option<(Uuid, Option<String>)> =
        sqlx::query_as("select id, encrypted_password from auth.users where email = $1")
            .bind(&email)
            .fetch_optional(&st.pool)
            .await?;
    let ok = tokio::task::spawn_blocking(move || match row {
        Some((id, Some(phc))) if verify_password(&password, &phc) => Some(id),
        _ => {
            dummy_verify(&password);
            None
        }
    })
    .await
    .map_err(ApiError::internal)?;
    let Some(user_id) = ok else {
        tracing::info!(%addr, "failed login");
        return Err(ApiError::Unauthorized);
    };
    st.shared.login_per_email.reset(&email_here);
    sqlx::query("update auth.users set last_sign_in_at = now() where id = $1")
        .bind(user_id)
        .execute(&st.pool)
        .await?;
    let ttl = st.config.api.token_ttl_secs;
    let access_token = issue_token(&st.config.api.jwt_secret, user_id, &email, ttl)?;
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ttl,
        "user": {"id": user_id, "email": email},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        for bad in ["", "a", "a@b", "@b.com", "a@.com", "a b@c.com", "a@b.com."] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
