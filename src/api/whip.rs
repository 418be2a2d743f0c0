//! WHIP (RFC 9725) for browser calls: `POST /v1/agents/{agent_id}/whip`
//! with an SDP offer (`Content-Type: application/sdp`) and a bearer
//! credential of the agent's workspace answers `201 Created` with the SDP
//! answer (every candidate in it, no trickle) and a `Location`; `DELETE` on
//! that location ends the call. The call itself is the runtime's
//! ([`crate::agent_runtime::web_leg`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use serde_json::json;
use uuid::Uuid;

use super::auth::Principal;
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;
use crate::agent_runtime::web_leg::{WebCallError, WebCallRequest, WebCalls};
use crate::agent_runtime::{AgentCalls, Runtime};
use crate::media::webrtc::{WebRtcError, MAX_OFFER_BYTES};
use crate::sip::call::CallHandler;
use crate::sip::server::DRAIN_RETRY_AFTER_SECS;

/// The runtime that runs browser calls and the node's WHIP sessions.
#[derive(Clone)]
pub struct WhipCalls {
    pub runtime: Arc<Runtime>,
    pub calls: Arc<WebCalls>,
    /// Whether the node is draining (SIGTERM): the SIP layer's own flag,
    /// so a browser is refused exactly when a trunk is.
    pub draining: Arc<dyn Fn() -> bool + Send + Sync>,
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/agents/{agent_id}/whip", post(offer).options(preflight))
        .route(
            "/v1/agents/{agent_id}/whip/{session_id}",
            delete(end).options(preflight),
        )
}

/// CORS preflight of a widget's WHIP request from another site's page:
/// allowed for an `Origin` in the allowed domains of one of the agent's
/// widgets (the request itself is then checked with its key).
async fn preflight(State(st): State<ApiState>, ids: Ids, headers: HeaderMap) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let allowed = match ids.get(0) {
        Ok(agent_id) => super::widget::preflight(&st.pool, agent_id, origin).await,
        Err(_) => None,
    };
    match allowed {
        Some(cors) => (StatusCode::NO_CONTENT, cors).into_response(),
        None => StatusCode::FORBIDDEN.into_response(),
    }
}

/// Who may call an agent through WHIP, once authorised.
#[derive(Debug, Clone)]
pub struct WhipCaller {
    pub workspace_id: Uuid,
    /// `call_logs.from_number` and `agent_sessions.caller`.
    pub caller: String,
    /// A widget's page: the origin its answers carry CORS headers for.
    pub cors_origin: Option<String>,
}

/// Authorises a WHIP request for `agent_id` of `agent_workspace`: a user
/// JWT with any role in it, one of its API keys, or the public key of one
/// of the agent's web widgets from an `Origin` in that widget's
/// `allowed_domains` ([`super::widget::authorize_widget`]: wrong key 401,
/// origin not allowed 403). Anything else is 401; a workspace the
/// credential has no role in is 404 (its agents do not exist for it).
pub async fn authorize(
    st: &ApiState,
    principal: Result<Principal, ApiError>,
    headers: &HeaderMap,
    agent_id: Uuid,
    agent_workspace: Uuid,
) -> Result<WhipCaller, ApiError> {
    if let Some(key) = widget_key(headers) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let grant = super::widget::authorize_widget(&st.pool, Some(agent_id), key, origin).await?;
        if grant.workspace_id != agent_workspace {
            return Err(ApiError::Unauthorized);
        }
        return Ok(WhipCaller {
            workspace_id: agent_workspace,
            caller: format!("web:widget:{}", grant.origin),
            cors_origin: Some(grant.origin),
        });
    }
    let principal = principal?;
    st.require(&principal, agent_workspace, Role::Viewer)
        .await?;
    let caller = match &principal {
        Principal::User { user_id, .. } => format!("web:user:{user_id}"),
        Principal::ApiKey { key_id, .. } => format!("web:key:{key_id}"),
    };
    Ok(WhipCaller {
        workspace_id: agent_workspace,
        caller,
        cors_origin: None,
    })
}

/// The bearer credential when it is a widget's public key (`pk_…`).
fn widget_key(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && super::widget::is_public_key(token)).then_some(token)
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": null}});
    (status, axum::Json(body)).into_response()
}

async fn offer(
    State(st): State<ApiState>,
    principal: Result<Principal, ApiError>,
    ids: Ids,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let agent_id = ids.get(0)?;
    let whip = st.whip.clone().ok_or(ApiError::Unavailable)?;
    // The agent as the node sees it; whether the caller may see it is
    // the credential's question, answered before anything is said of it.
    let agent: Option<(Uuid, String)> =
        sqlx::query_as("select workspace_id, status::text from agents where id = $1")
            .bind(agent_id)
            .fetch_optional(&st.pool)
            .await?;
    let Some((workspace_id, status)) = agent else {
        // Unknown agent: still 401 for a bad credential, so the answer
        // says nothing about which agents exist.
        principal?;
        return Err(ApiError::NotFound);
    };
    let who = authorize(&st, principal, &headers, agent_id, workspace_id).await?;
    // A draining node takes no new call, as its SIP side answers 503: the
    // browser (or a load balancer in front) retries elsewhere.
    if (whip.draining)() {
        return Ok(cors(
            busy_response("draining", DRAIN_RETRY_AFTER_SECS),
            &who.cors_origin,
        ));
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return Ok(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a WHIP offer is Content-Type: application/sdp",
        ));
    }
    if body.len() > MAX_OFFER_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let offer = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the SDP offer is not UTF-8".into()))?;
    if status != "live" {
        return Err(ApiError::Unprocessable {
            message: "the agent is a draft: set its status to live to take calls".into(),
            field: Some("agent_id".into()),
        });
    }
    let allowed: bool = sqlx::query_scalar("select check_usage_limit($1)")
        .bind(workspace_id)
        .fetch_one(&st.pool)
        .await?;
    if !allowed {
        return Err(ApiError::UsageLimit);
    }
    if let Err(busy) = CallHandler::admits(&AgentCalls(whip.runtime.clone())) {
        return Ok(cors(
            busy_response(busy.reason, busy.retry_after_secs),
            &who.cors_origin,
        ));
    }
    let answer = whip
        .calls
        .start(
            whip.runtime.clone(),
            WebCallRequest {
                workspace_id: who.workspace_id,
                agent_id,
                caller: who.caller,
                offer: offer.to_string(),
            },
        )
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(WebCallError::Peer(WebRtcError::BadOffer(why))) => {
            return Err(ApiError::BadRequest(format!("bad SDP offer: {why}")))
        }
        Err(WebCallError::Peer(e @ WebRtcError::NoCommonCodec)) => {
            return Ok(problem(
                StatusCode::NOT_ACCEPTABLE,
                "no_common_codec",
                &e.to_string(),
            ))
        }
        Err(WebCallError::Peer(WebRtcError::Internal(e))) => return Err(ApiError::Internal(e)),
        Err(WebCallError::Busy(reason)) => {
            let retry = whip.runtime.config.admission.retry_after_secs;
            return Ok(cors(busy_response(reason, retry), &who.cors_origin));
        }
    };
    let location = format!("/v1/agents/{agent_id}/whip/{}", answer.session_id);
    let mut response = (StatusCode::CREATED, answer.answer_sdp).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.call_log_id.to_string()) {
        h.insert("x-call-log-id", v);
    }
    if let Some(origin) = &who.cors_origin {
        h.extend(super::widget::cors_headers(origin));
    }
    Ok(response)
}

/// A widget's page may read the answer (its `Retry-After` included).
fn cors(mut response: Response, origin: &Option<String>) -> Response {
    if let Some(origin) = origin {
        response
            .headers_mut()
            .extend(super::widget::cors_headers(origin));
    }
    response
}

fn busy_response(reason: &str, retry_after_secs: u32) -> Response {
    let mut r = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("the node cannot take a call now ({reason})"),
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn end(
    State(st): State<ApiState>,
    principal: Result<Principal, ApiError>,
    ids: Ids,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (agent_id, session_id) = (ids.get(0)?, ids.get(1)?);
    let whip = st.whip.clone().ok_or(ApiError::Unavailable)?;
    let Some(workspace_id) = whip.calls.workspace_of(session_id) else {
        principal?;
        return Err(ApiError::NotFound);
    };
    let who = authorize(&st, principal, &headers, agent_id, workspace_id).await?;
    if whip.calls.end(who.workspace_id, agent_id, session_id) {
        let mut response = StatusCode::OK.into_response();
        if let Some(origin) = &who.cors_origin {
            response
                .headers_mut()
                .extend(super::widget::cors_headers(origin));
        }
        Ok(response)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The WHIP operations in the OpenAPI document (`/openapi.json`): bodies
/// are SDP, not JSON, and a widget's public key is a credential here.
pub(crate) fn openapi_paths(paths: &mut serde_json::Map<String, serde_json::Value>) {
    let agent = json!({"name": "agent_id", "in": "path", "required": true,
                       "schema": {"type": "string", "format": "uuid"}});
    let session = json!({"name": "session_id", "in": "path", "required": true,
                         "schema": {"type": "string", "format": "uuid"}});
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let security = json!([{"bearer": []}, {"apiKey": []}, {"widgetKey": []}]);
    let post = json!({
        "summary": "Call the agent from a browser or any WebRTC peer (WHIP, RFC 9725)",
        "tags": ["whip"],
        "description": "The body is the SDP offer (Opus/48000 or PCMU/8000 audio, ICE credentials, a DTLS fingerprint). \
    The credential is a user JWT or API key of the agent's workspace (any role), or the public key (pk_…) of one of the agent's \
    web widgets from a page whose Origin is in that widget's allowed_domains (the answers then carry CORS headers for it). \
    The answer holds every ICE candidate (no trickle). DELETE on the Location ends the call.",
        "parameters": [agent.clone()],
        "security": security.clone(),
        "requestBody": {"required": true, "content": {"application/sdp": {"schema": {"type": "string"}}}},
        "responses": {
            "201": {"description": "the SDP answer; the call starts once ICE and DTLS are up",
                    "headers": {
                        "Location": {"description": "/v1/agents/{agent_id}/whip/{session_id}: DELETE it to hang up", "schema": {"type": "string"}},
                        "X-Call-Log-Id": {"description": "the call's call_logs id", "schema": {"type": "string", "format": "uuid"}}},
                    "content": {"application/sdp": {"schema": {"type": "string"}}}},
            "400": error("not an SDP offer that can be answered (no audio, no ICE credentials, no DTLS fingerprint)"),
            "401": error("no or wrong credential (whatever the agent), or a widget key of another agent"),
            "402": error("the workspace's plan limit is reached"),
            "403": error("a widget key from an Origin its widget does not allow"),
            "404": error("no such agent, or another workspace's"),
            "406": error("no Opus/48000 or PCMU/8000 audio in the offer"),
            "413": error("the offer is over 64 KiB"),
            "415": error("the body is not application/sdp"),
            "422": error("the agent is a draft"),
            "503": {"description": "the node is draining (Retry-After: 30), full or overloaded, or webrtc.max_sessions are up (Retry-After: admission.retry_after_secs)",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    let delete = json!({
        "summary": "Hang up a browser call (the WHIP session's Location)",
        "tags": ["whip"],
        "description": "The same credential as the offer's. A credential for one agent (a widget key) ends only that agent's calls: another agent's session in the path is 404.",
        "parameters": [agent, session],
        "security": security,
        "responses": {
            "200": {"description": "the call is ending"},
            "401": error("no or wrong credential, or a widget key of another agent"),
            "403": error("a widget key from an Origin its widget does not allow"),
            "404": error("no live session of this agent with this id")
        }
    });
    paths.insert("/v1/agents/{agent_id}/whip".into(), json!({"post": post}));
    paths.insert(
        "/v1/agents/{agent_id}/whip/{session_id}".into(),
        json!({"delete": delete}),
    );
}
