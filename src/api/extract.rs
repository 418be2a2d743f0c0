//! Path and query extractors whose failures are `ApiError`s (JSON), not
//! axum's plain-text rejections; plus pagination.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query, RawPathParams};
use axum::http::request::Parts;
use uuid::Uuid;

use super::error::ApiError;

/// The UUIDs in the path, in order (`{workspace_id}`, then `{id}`, …).
pub struct Ids(pub Vec<Uuid>);

impl Ids {
    pub fn get(&self, i: usize) -> Result<Uuid, ApiError> {
        self.0
            .get(i)
            .copied()
            .ok_or_else(|| ApiError::internal("route is missing a path parameter"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("bad path".into()))?;
        let mut ids = Vec::new();
        for (name, value) in params.iter() {
            let id = Uuid::parse_str(value)
                .map_err(|_| ApiError::validation(name.to_string(), "must be a UUID"))?;
            ids.push(id);
        }
        Ok(Ids(ids))
    }
}

/// The query string as a map; repeated keys keep the last value.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
        Ok(QueryMap(map))
    }
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
pub const MAX_OFFSET: i64 = 1_000_000;

/// `?limit=&offset=`: limit 1..=200 (default 50), offset 0..=1e6.
pub fn pagination(q: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let int = |name: &str, default: i64, min: i64, max: i64| -> Result<i64, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::validation(
                    name,
                    format!("must be an integer from {min} to {max}"),
                )),
            },
        }
    };
    Ok((
        int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?,
        int("offset", 0, 0, MAX_OFFSET)?,
    ))
}
