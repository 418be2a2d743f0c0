//! The API's one error type. Every failure becomes
//! `{"error": {"code", "message", "details"}}` with a status that says whose
//! fault it was; internals (SQL, file paths) are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field failed validation; `field` names it.
    #[error("{field}: {reason}")]
    Validation { field: String, reason: String },
    /// 400: the body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: anything else wrong with the request (query string, path).
    #[error("{0}")]
    BadRequest(String),
    /// 401: credentials missing, wrong, expired or badly signed. One message
    /// for every case so a caller learns nothing about which part failed.
    #[error("invalid or missing credentials")]
    Unauthorized,
    /// 403: authenticated, but the role is too low for this action.
    #[error("{0}")]
    Forbidden(String),
    /// 404: absent, or belonging to a workspace the caller cannot see.
    #[error("not found")]
    NotFound,
    /// 409: a unique value is taken (duplicate E.164, slug, email, member).
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    /// 413: body larger than `api.max_body_bytes`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: a body that is not `application/json` where JSON is expected.
    #[error("unsupported content type: expected application/json")]
    UnsupportedMediaType,
    /// 422: well-formed, but refers to a row that does not exist in this
    /// workspace, or a document that cannot be processed.
    #[error("{message}")]
    Unprocessable {
        message: String,
        field: Option<String>,
    },
    /// 402: the workspace's plan usage limit is reached.
    #[error("the workspace's plan usage limit is reached")]
    UsageLimit,
    /// 429: a capacity is full for now (a trunk's concurrent calls).
    #[error("{0}")]
    Capacity(String),
    /// 429: too many login attempts.
    #[error("too many attempts; retry later")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: the database is unreachable.
    #[error("service unavailable")]
    Unavailable,
    /// 500: logged with its cause; the client sees a bare message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::Validation {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::MalformedJson(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UsageLimit => StatusCode::PAYMENT_REQUIRED,
            ApiError::Capacity(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "validation_failed",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::UsageLimit => "usage_limit_reached",
            ApiError::Capacity(_) => "capacity_reached",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation { field, reason } => json!({"field": field, "reason": reason}),
            ApiError::Conflict {
                field: Some(field), ..
            }
            | ApiError::Unprocessable {
                field: Some(field), ..
            } => json!({ "field": field }),
            ApiError::TooManyRequests { retry_after_secs } => {
                json!({ "retry_after_secs": retry_after_secs })
            }
            _ => Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "api internal error");
        }
        let body = json!({"error": {
            "code": self.code(),
            "message": self.to_string(),
            "details": self.details(),
        }});
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            if let Ok(v) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

/// Database errors mapped by SQLSTATE: constraint violations are the
/// client's fault and say which constraint; the rest is internal.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> ApiError {
        match &err {
            sqlx::Error::RowNotFound => return ApiError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %err, "database unavailable");
                return ApiError::Unavailable;
            }
            _ => {}
        }
        let Some(db) = err.as_database_error() else {
            return ApiError::internal(err);
        };
        let constraint = db.constraint().map(str::to_string);
        let code = db.code().map(|c| c.to_string()).unwrap_or_default();
        match code.as_str() {
            // unique_violation
            "23505" => ApiError::Conflict {
                message: match constraint.as_deref() {
                    Some("phone_numbers_e164_key") => {
                        crate::api::resources::telephony::E164_HELD_ELSEWHERE.to_string()
                    }
                    c => format!("already exists ({})", c.unwrap_or("unique constraint")),
                },
                field: constraint.as_deref().map(constraint_field),
            },
            // foreign_key_violation
            "23503" => ApiError::Unprocessable {
                message: "refers to a row that does not exist in this workspace".into(),
                field: constraint.as_deref().map(constraint_field),
            },
            // not_null_violation names the column; check_violation the constraint
            "23502" => ApiError::Validation {
                field: db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|e| e.column())
                    .unwrap_or("body")
                    .to_string(),
                reason: "must not be null".into(),
            },
            "23514" => ApiError::Validation {
                field: constraint
                    .as_deref()
                    .map(constraint_field)
                    .unwrap_or_else(|| "body".into()),
                reason: "violates a database constraint".into(),
            },
            // insufficient_privilege, including "new row violates row-level security policy"
            "42501" => ApiError::Forbidden("not allowed".into()),
            // data exceptions (invalid text representation, out of range, ...)
            c if c.starts_with("22") => ApiError::Validation {
                field: "body".into(),
                reason: "a value has the wrong form".into(),
            },
            _ => ApiError::internal(err),
        }
    }
}

/// `phone_numbers_e164_key` → `e164`: a best-effort field name for clients.
fn constraint_field(constraint: &str) -> String {
    let trimmed = constraint
        .trim_end_matches("_key")
        .trim_end_matches("_fkey")
        .trim_end_matches("_check");
    for table in crate::api::resources::TABLES {
        if let Some(rest) = trimmed.strip_prefix(table) {
            if let Some(field) = rest.strip_prefix('_') {
                return field.to_string();
            }
        }
    }
    trimmed.to_string()
}
