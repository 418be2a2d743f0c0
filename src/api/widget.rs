//! The embeddable web widget's credentials: a public key per widget
//! (`agent_web_widget_config.public_key`, migration 0015), shown to and
//! rotated by MANAGERs, and the one check every public widget endpoint
//! makes — [`authorize_widget`]: this key, for this agent, from a page
//! whose `Origin` is in the widget's `allowed_domains`. The WHIP endpoint
//! calls it for a `Bearer pk_…` credential; the widget's look is served
//! by `GET /v1/widgets/{public_key}` to those origins only (CORS).
//!
//! `allowed_domains` entries: a full origin (`https://shop.example.com`,
//! `http://127.0.0.1:8000`) matches exactly that origin; a bare host
//! (`shop.example.com`, `shop.example.com:8443`) matches it over https;
//! `*.example.com` matches its subdomains (not `example.com` itself) over
//! https. Nothing else matches; an empty list admits no page.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::RngCore;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::auth::Principal;
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;

/// `pk_` and 64 lower-case hex digits (what we generate); 32 to 128 are
/// accepted, as the column's check says.
const KEY_SCHEME: &str = "pk_";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/workspaces/{workspace_id}/web-widgets/{id}/public-key",
            get(show_key).post(rotate_key),
        )
        .route("/v1/widgets/{public_key}", get(public_config))
}

/// What a valid widget credential admits: calls to this agent, from this
/// origin, on this workspace's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidgetGrant {
    pub widget_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    /// The page's origin, as the browser sent it (echo it in CORS headers).
    pub origin: String,
}

/// True for a string shaped like a widget public key (cheap, before any
/// database lookup; also how a WHIP handler tells one from a JWT or API key).
pub fn is_public_key(s: &str) -> bool {
    s.strip_prefix(KEY_SCHEME).is_some_and(|hex| {
        (32..=128).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A new public key: `pk_` + 32 random bytes in hex.
pub fn generate_public_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_SCHEME}{}", hex::encode(bytes))
}

/// `scheme://host[:port]` split into (scheme, host, port) with the default
/// port filled in; `None` for anything else (`null`, paths, user info).
fn parse_origin(origin: &str) -> Option<(&str, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = split_port(rest, default_port)?;
    Some((scheme, host, port))
}

/// `host[:port]`, IPv6 literals in brackets; host lower-cased.
fn split_port(hostport: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{}]", h.to_ascii_lowercase()), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), p.parse().ok()?),
            None => (hostport.to_ascii_lowercase(), default_port),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// Whether a page at `origin` may use a widget with these allowed domains
/// (the rules are in the module's doc).
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let Some((scheme, host, port)) = parse_origin(origin.trim()) else {
        return false;
    };
    allowed.iter().any(|entry| {
        let entry = entry.trim().trim_end_matches('/');
        if entry.contains("://") {
            return parse_origin(entry)
                .is_some_and(|(s, h, p)| s == scheme && h == host && p == port);
        }
        if scheme != "https" {
            return false;
        }
        if let Some(suffix) = entry.strip_prefix("*.") {
            return split_port(suffix, 443).is_some_and(|(h, p)| {
                p == port && host.len() > h.len() + 1 && host.ends_with(&format!(".{h}"))
            });
        }
        split_port(entry, 443).is_some_and(|(h, p)| h == host && p == port)
    })
}

/// The check behind every widget credential: `public_key` names a widget of
/// `agent_id` (when given) and `origin` is one of its allowed domains.
/// Unknown or malformed key, or another agent's: 401. No origin or one not
/// allowed: 403. Reads with the server's own connection (the caller has no
/// identity to apply RLS with), like API keys.
pub async fn authorize_widget(
    pool: &PgPool,
    agent_id: Option<Uuid>,
    public_key: &str,
    origin: Option<&str>,
) -> Result<WidgetGrant, ApiError> {
    if !is_public_key(public_key) {
        return Err(ApiError::Unauthorized);
    }
    let row: Option<(Uuid, Uuid, Uuid, Vec<String>)> = sqlx::query_as(
        "select id, workspace_id, agent_id, allowed_domains
           from agent_web_widget_config where public_key = $1",
    )
    .bind(public_key)
    .fetch_optional(pool)
    .await?;
    let Some((widget_id, workspace_id, widget_agent, allowed)) = row else {
        return Err(ApiError::Unauthorized);
    };
    if agent_id.is_some_and(|a| a != widget_agent) {
        return Err(ApiError::Unauthorized);
    }
    let origin = origin.map(str::trim).unwrap_or_default();
    if !origin_allowed(&allowed, origin) {
        return Err(ApiError::Forbidden(
            "this page's origin is not in the widget's allowed_domains".into(),
        ));
    }
    Ok(WidgetGrant {
        widget_id,
        workspace_id,
        agent_id: widget_agent,
        origin: origin.to_string(),
    })
}

/// CORS headers for a response to a page `origin` that [`authorize_widget`]
/// (or [`preflight`]) admitted: the origin echoed (never `*`), `Location`
/// readable by the page (WHIP), caches keyed by `Origin`.
pub fn cors_headers(origin: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    h
}

/// The answer to a CORS preflight (`OPTIONS`) for a widget's WHIP call:
/// allowed when `origin` is in the allowed domains of a widget of
/// `agent_id` (a preflight carries no key, so any of the agent's widgets
/// counts; the real request is then checked with its key). `None`: refuse
/// (answer 403 with no CORS headers).
pub async fn preflight(pool: &PgPool, agent_id: Uuid, origin: &str) -> Option<HeaderMap> {
    let lists: Vec<Vec<String>> = sqlx::query_scalar(
        "select allowed_domains from agent_web_widget_config where agent_id = $1",
    )
    .bind(agent_id)
    .fetch_all(pool)
    .await
    .ok()?;
    if !lists.iter().any(|l| origin_allowed(l, origin)) {
        return None;
    }
    let mut h = cors_headers(origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Some(h)
}

fn origin_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// `GET /v1/widgets/{public_key}`: what the widget script draws, for a page
/// on one of the widget's allowed domains (no login; CORS to that origin).
async fn public_config(
    State(st): State<ApiState>,
    Path(public_key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = authorize_widget(&st.pool, None, &public_key, origin_of(&headers)).await?;
    /// colour, position, welcome message, agent name, agent status.
    type Look = (Option<String>, String, Option<String>, String, String);
    let row: Option<Look> = sqlx::query_as(
        "select w.primary_color, w.position, w.welcome_message, a.name, a.status::text
           from agent_web_widget_config w join agents a on a.id = w.agent_id
          where w.id = $1",
    )
    .bind(grant.widget_id)
    .fetch_optional(&st.pool)
    .await?;
    let (color, position, welcome, agent_name, status) = row.ok_or(ApiError::NotFound)?;
    let body = json!({
        "agent_id": grant.agent_id,
        "agent_name": agent_name,
        "available": status == "live",
        "primary_color": color.unwrap_or_else(|| "#2563eb".into()),
        "position": position,
        "welcome_message": welcome.unwrap_or_default(),
        "whip_path": format!("/v1/agents/{}/whip", grant.agent_id),
    });
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    resp.headers_mut().extend(cors_headers(&grant.origin));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn key_row(
    st: &ApiState,
    p: &Principal,
    ws: Uuid,
    id: Uuid,
    rotate: bool,
) -> Result<Value, ApiError> {
    st.require(p, ws, Role::Manager).await?;
    let mut tx = st.begin(p).await?;
    let key: Option<String> = if rotate {
        sqlx::query_scalar(
            "update agent_web_widget_config set public_key = $3
              where workspace_id = $1 and id = $2 returning public_key",
        )
        .bind(ws)
        .bind(id)
        .bind(generate_public_key())
        .fetch_optional(&mut *tx)
        .await?
    } else {
        sqlx::query_scalar(
            "select public_key from agent_web_widget_config where workspace_id = $1 and id = $2",
        )
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    };
    tx.commit().await?;
    let key = key.ok_or(ApiError::NotFound)?;
    if rotate {
        tracing::info!(widget_id = %id, "widget public key rotated");
    }
    Ok(json!({"id": id, "public_key": key}))
}

/// `GET …/web-widgets/{id}/public-key` (MANAGER): the key to paste.
async fn show_key(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        key_row(&st, &p, ids.get(0)?, ids.get(1)?, false).await?,
    ))
}

/// `POST …/web-widgets/{id}/public-key` (MANAGER): a new key; pages with
/// the old one stop working at once.
async fn rotate_key(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        key_row(&st, &p, ids.get(0)?, ids.get(1)?, true).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str], origin: &str) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        origin_allowed(&list, origin)
    }

    #[test]
    fn full_origins_match_exactly() {
        let list = ["http://127.0.0.1:52001", "https://shop.example.com/"];
        assert!(allowed(&list, "http://127.0.0.1:52001"));
        assert!(!allowed(&list, "http://127.0.0.1:52002"));
        assert!(!allowed(&list, "https://127.0.0.1:52001"));
        assert!(allowed(&list, "https://shop.example.com"));
        assert!(allowed(&list, "https://SHOP.example.com:443"));
        assert!(!allowed(&list, "http://shop.example.com"));
    }

    #[test]
    fn bare_hosts_and_wildcards_are_https_only() {
        let list = ["shop.example.com", "*.acme.test", "[::1]:8443"];
        assert!(allowed(&list, "https://shop.example.com"));
        assert!(!allowed(&list, "http://shop.example.com"));
        assert!(!allowed(&list, "https://shop.example.com:8443"));
        assert!(!allowed(&list, "https://evilshop.example.com"));
        assert!(!allowed(&list, "https://shop.example.com.evil.test"));
        assert!(allowed(&list, "https://a.acme.test"));
        assert!(allowed(&list, "https://a.b.acme.test"));
        assert!(!allowed(&list, "https://acme.test"));
        assert!(!allowed(&list, "https://xacme.test"));
        assert!(allowed(&list, "https://[::1]:8443"));
    }

    #[test]
    fn nothing_odd_matches() {
        let list = ["shop.example.com", "http://127.0.0.1:52001"];
        for bad in [
            "",
            "null",
            "shop.example.com",
            "https://",
            "https://shop.example.com/path",
            "https://user@shop.example.com",
            "file://shop.example.com",
            "http://127.0.0.1:52001/",
            "http://127.0.0.1:notaport",
        ] {
            assert!(!allowed(&list, bad), "{bad}");
        }
        assert!(!allowed(&[], "https://shop.example.com"));
    }

    #[test]
    fn keys() {
        let k = generate_public_key();
        assert!(is_public_key(&k), "{k}");
        assert_eq!(k.len(), 3 + 64);
        assert_ne!(k, generate_public_key());
        assert!(!is_public_key("pk_XYZ"));
        assert!(!is_public_key("sk_live_0123456789abcdef0123456789abcdef"));
        assert!(!is_public_key(&format!("pk_{}", "a".repeat(129))));
    }
}
