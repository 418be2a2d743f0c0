//! The JSON body extractor: `application/json` only (415 otherwise), at most
//! `api.max_body_bytes` (413), a JSON object (400 `malformed_json` or
//! `validation_failed` naming `body`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Map, Value};

use super::error::ApiError;

/// A request body that is a JSON object.
pub struct JsonObject(pub Map<String, Value>);

pub fn is_json_content_type(value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !is_json_content_type(content_type) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::validation("body", "must be a JSON object")),
            Err(e) => Err(ApiError::MalformedJson(format!(
                "line {} column {}",
                e.line(),
                e.column()
            ))),
        }
    }
}

/// Reads an optional string field.
pub fn opt_str<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::validation(field, "must be a string")),
    }
}

/// Reads a required, non-empty string field of at most `max` characters.
pub fn req_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<&'a str, ApiError> {
    let s = opt_str(body, field)?.ok_or_else(|| ApiError::validation(field, "is required"))?;
    if s.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(s)
}

/// Refuses fields outside `allowed` so a typo is an error, not a silent no-op.
pub fn only_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::validation(k.clone(), "unknown field")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(is_json_content_type(Some("application/merge-patch+json")));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(None));
    }
}
