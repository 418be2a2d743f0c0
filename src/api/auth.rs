//! Who is calling: Supabase-compatible HS256 JWTs (ours or the configured
//! Supabase project's) and workspace API keys (`sk_live_…`, stored as a
//! prefix plus a SHA-256 hash). Every failure is the same 401.

use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::ApiError;
use super::types::Role;
use super::ApiState;

/// Length of the shown, indexed part of an API key (`sk_live_` + 8 hex).
pub const KEY_PREFIX_LEN: usize = 16;
const KEY_SCHEME: &str = "sk_live_";
/// `last_used_at` is written at most this often per key, so a busy key
/// does not turn every read into a write.
const TOUCH_EVERY: Duration = Duration::from_secs(30);
/// A key read from `api_keys` is trusted this long without reading it
/// again: a request with a known key then costs no round trip for it.
/// Revoking a key drops it from the revoking node's cache at once; other
/// nodes stop accepting it within this time. Every statement a request
/// runs in its transaction re-checks the key anyway: the row-level
/// policies admit an `api_key_id` only while the key is neither revoked
/// nor expired (`accessible_workspace_ids`).
const KEY_TRUSTED_FOR: Duration = Duration::from_secs(1);
/// Most keys held; past it the cache starts over (it is a cache, and
/// a flood of distinct valid keys is bounded by the keys that exist).
const KNOWN_KEYS_MAX: usize = 10_000;

/// A usable key as last read from `api_keys`.
#[derive(Debug, Clone)]
pub(crate) struct KnownKey {
    key_id: Uuid,
    workspace_id: Uuid,
    role: Role,
    key_hash: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    read_at: Instant,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person with a JWT; `claims` are the token's own, passed to the
    /// database unchanged exactly as Supabase does.
    User {
        user_id: Uuid,
        email: Option<String>,
        claims: Value,
    },
    /// A workspace API key acting with the key's role in its one workspace.
    ApiKey {
        key_id: Uuid,
        workspace_id: Uuid,
        role: Role,
    },
}

impl Principal {
    /// The `request.jwt.claims` the database policies read.
    pub fn claims(&self) -> Value {
        match self {
            Principal::User { claims, .. } => claims.clone(),
            Principal::ApiKey {
                key_id,
                workspace_id,
                role,
            } => json!({
                "role": "authenticated",
                "workspace_id": workspace_id,
                "workspace_role": role.as_str(),
                "api_key_id": key_id,
            }),
        }
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::User { user_id, .. } => Some(*user_id),
            Principal::ApiKey { .. } => None,
        }
    }
}

/// Supabase's access-token claims (the ones we issue; we accept extra ones).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub email: String,
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A throw-away hash so that an unknown email costs the same time as a
/// wrong password (no account enumeration by timing).
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("dummy-password").unwrap_or_default());
    let _ = verify_password(password, phc);
}

pub fn issue_token(
    secret: &str,
    user_id: Uuid,
    email: &str,
    ttl_secs: u64,
) -> Result<String, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user_id,
        role: "authenticated".into(),
        aud: "authenticated".into(),
        exp: now + ttl_secs as i64,
        iat: now,
        email: email.to_string(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(ApiError::internal)
}

/// Verifies an HS256 token against each non-empty secret in turn.
pub fn verify_token(token: &str, secrets: &[&str]) -> Result<Principal, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["authenticated"]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    validation.leeway = 5;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let Ok(data) = jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        ) else {
            continue;
        };
        let claims = data.claims;
        if claims.get("role").and_then(Value::as_str) != Some("authenticated") {
            return Err(ApiError::Unauthorized);
        }
        let user_id = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or(ApiError::Unauthorized)?;
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_string);
        return Ok(Principal::User {
            user_id,
            email,
            claims,
        });
    }
    Err(ApiError::Unauthorized)
}

/// A new API key: (full key shown once, prefix, SHA-256 hex of the key).
pub fn generate_api_key() -> (String, String, String) {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!("{KEY_SCHEME}{}", hex::encode(bytes));
    let prefix = key[..KEY_PREFIX_LEN].to_string();
    let hash = hash_api_key(&key);
    (key, prefix, hash)
}

pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn verify_api_key(state: &ApiState, key: &str) -> Result<Principal, ApiError> {
    if !key.starts_with(KEY_SCHEME) || key.len() < KEY_PREFIX_LEN + 8 || key.len() > 128 {
        return Err(ApiError::Unauthorized);
    }
    let prefix = &key[..KEY_PREFIX_LEN];
    let known = state
        .shared
        .known_keys
        .get(prefix)
        .filter(|k| k.read_at.elapsed() < KEY_TRUSTED_FOR)
        .map(|k| k.clone());
    let known = match known {
        Some(k) => k,
        None => match read_key(state, prefix).await? {
            Some(k) => k,
            None => return Err(ApiError::Unauthorized),
        },
    };
    let unexpired = known.expires_at.is_none_or(|at| at > chrono::Utc::now());
    if !constant_time_eq(hash_api_key(key).as_bytes(), known.key_hash.as_bytes()) || !unexpired {
        return Err(ApiError::Unauthorized);
    }
    touch_key(state, known.key_id).await;
    Ok(Principal::ApiKey {
        key_id: known.key_id,
        workspace_id: known.workspace_id,
        role: known.role,
    })
}

/// The usable key with `prefix` from the database (none when there is no
/// such key, or it is revoked or expired), remembered for
/// [`KEY_TRUSTED_FOR`].
async fn read_key(state: &ApiState, prefix: &str) -> Result<Option<KnownKey>, ApiError> {
    // The key's row is read with the server's own connection: the caller has
    // no identity yet, so there are no claims to apply RLS with.
    type KeyRow = (
        Uuid,
        Uuid,
        String,
        String,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let row: Option<KeyRow> = sqlx::query_as(
        "select id, workspace_id, role::text, key_hash, expires_at
               from api_keys
              where prefix = $1 and revoked_at is null
                and (expires_at is null or expires_at > now())",
    )
    .bind(prefix)
    .fetch_optional(&state.pool)
    .await?;
    let Some((key_id, workspace_id, role, key_hash, expires_at)) = row else {
        state.shared.known_keys.remove(prefix);
        return Ok(None);
    };
    let known = KnownKey {
        key_id,
        workspace_id,
        role: role.parse().map_err(ApiError::internal)?,
        key_hash,
        expires_at,
        read_at: Instant::now(),
    };
    let keys = &state.shared.known_keys;
    if keys.len() >= KNOWN_KEYS_MAX && !keys.contains_key(prefix) {
        keys.clear();
    }
    keys.insert(prefix.to_string(), known.clone());
    Ok(Some(known))
}

/// Forgets a revoked key on this node at once.
pub(crate) fn forget_key(state: &ApiState, key_id: Uuid) {
    state.shared.known_keys.retain(|_, k| k.key_id != key_id);
}

async fn touch_key(state: &ApiState, key_id: Uuid) {
    let now = Instant::now();
    let due = match state.shared.key_touched.get(&key_id) {
        Some(at) => now.duration_since(*at) >= TOUCH_EVERY,
        None => true,
    };
    if !due {
        return;
    }
    state.shared.key_touched.insert(key_id, now);
    if let Err(e) = sqlx::query("update api_keys set last_used_at = now() where id = $1")
        .bind(key_id)
        .execute(&state.pool)
        .await
    {
        tracing::warn!(error = %e, "could not update api_keys.last_used_at");
    }
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let credential = if let Some(auth) = header("authorization") {
            let (scheme, token) = auth.split_once(' ').ok_or(ApiError::Unauthorized)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ApiError::Unauthorized);
            }
            token.trim().to_string()
        } else if let Some(key) = header("x-api-key") {
            key.to_string()
        } else {
            return Err(ApiError::Unauthorized);
        };
        if credential.starts_with("sk_") {
            return verify_api_key(state, &credential).await;
        }
        let api = &state.config.api;
        verify_token(
            &credential,
            &[api.jwt_secret.as_str(), api.supabase_jwt_secret.as_str()],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn token_round_trip_and_rejections() {
        let id = Uuid::new_v4();
        let t = issue_token("s1", id, "a@example.com", 60).unwrap();
        match verify_token(&t, &["s1", ""]).unwrap() {
            Principal::User {
                user_id, claims, ..
            } => {
                assert_eq!(user_id, id);
                assert_eq!(claims["aud"], "authenticated");
                assert_eq!(claims["role"], "authenticated");
            }
            other => panic!("{other:?}"),
        }
        // accepted when signed by the second (Supabase) secret
        assert!(verify_token(&t, &["other", "s1"]).is_ok());
        assert!(verify_token(&t, &["other"]).is_err());
        let expired = issue_token("s1", id, "a@example.com", 0).unwrap();
        // exp = now, leeway 5 s: forge an older one instead
        let old = Claims {
            sub: id,
            role: "authenticated".into(),
            aud: "authenticated".into(),
            exp: chrono::Utc::now().timestamp() - 120,
            iat: 0,
            email: "a@example.com".into(),
        };
        let old = jsonwebtoken::encode(&Header::default(), &old, &EncodingKey::from_secret(b"s1"))
            .unwrap();
        assert!(verify_token(&old, &["s1"]).is_err());
        assert!(verify_token(&expired, &["s1"]).is_ok());
        assert!(verify_token("garbage", &["s1"]).is_err());
    }

    #[test]
    fn api_key_shape() {
        let (key, prefix, hash) = generate_api_key();
        assert!(key.starts_with("sk_live_"));
        assert_eq!(key.len(), 8 + 48);
        assert!(key.starts_with(&prefix));
        assert_eq!(hash, hash_api_key(&key));
        assert!(!hash.contains(&key[KEY_PREFIX_LEN..]));
        assert!(constant_time_eq(b"ab", b"ab"));
        assert!(!constant_time_eq(b"ab", b"ac"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
