//! `POST /v1/workspaces/{workspace_id}/calls`: an agent calls a number.
//! The request is checked here as the caller sees the workspace (RLS): the
//! agent, the trunk (given, or the workspace's one outbound trunk) and our
//! number must be the workspace's own, the callee an E.164 number, the plan
//! under its usage limit and the trunk's host one the operator lets us
//! reach. The SIP layer then sends the INVITE; the answer is `202` with the
//! call's `call_logs` id, whose row follows the call from `ringing` on.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::auth::Principal;
use super::body::{only_fields, opt_str, req_str, JsonObject};
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;
use crate::media::Codec;
use crate::sip::number::E164;
use crate::sip::outbound_leg::{DialError, DialRequest};
use crate::sip::transport::Transport;

/// Variables one call may carry, and their sizes.
const MAX_VARIABLES: usize = 32;
const MAX_VARIABLE_NAME: usize = 64;
const MAX_VARIABLE_VALUE: usize = 1000;
/// A trunk's host name must resolve within this.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/workspaces/{workspace_id}/calls", post(place_call))
}

fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        message: message.into(),
        field: Some(field.to_string()),
    }
}

fn uuid_field(body: &Map<String, Value>, field: &str) -> Result<Option<Uuid>, ApiError> {
    opt_str(body, field)?
        .map(|s| Uuid::parse_str(s).map_err(|_| ApiError::validation(field, "must be a UUID")))
        .transpose()
}

fn e164_field(field: &str, s: &str) -> Result<E164, ApiError> {
    E164::parse(s.trim()).map_err(|_| {
        ApiError::validation(
            field,
            "must be an E.164 number: + then 8 to 15 digits, no leading 0 (e.g. +15555550100)",
        )
    })
}

/// `{"name": "Ada", "order": 42}` → name/value pairs (numbers and booleans
/// as their JSON text). Names are identifiers so `{{name}}` can hold them.
fn variables(v: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::validation("variables", "must be an object")),
    };
    if map.len() > MAX_VARIABLES {
        return Err(ApiError::validation(
            "variables",
            format!("must have at most {MAX_VARIABLES} entries"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let field = format!(
            "variables.{}",
            name.chars().take(MAX_VARIABLE_NAME).collect::<String>()
        );
        let ident = !name.is_empty()
            && name.len() <= MAX_VARIABLE_NAME
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(ApiError::validation(
                field,
                "names are letters, digits and _ (64 at most, not starting with a digit)",
            ));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::validation(
                    field,
                    "must be a string, a number or a boolean",
                ))
            }
        };
        if text.chars().count() > MAX_VARIABLE_VALUE || text.chars().any(char::is_control) {
            return Err(ApiError::validation(
                field,
                format!(
                    "must be at most {MAX_VARIABLE_VALUE} characters, without control characters"
                ),
            ));
        }
        out.push((name.clone(), text));
    }
    Ok(out)
}

/// A trunk's outbound side as the database holds it.
#[derive(sqlx::FromRow)]
struct TrunkRow {
    id: Uuid,
    outbound_host: Option<String>,
    outbound_port: Option<i32>,
    outbound_transport: String,
    outbound_username: Option<String>,
    outbound_password: Option<String>,
    from_domain: Option<String>,
    codecs: Vec<String>,
    max_concurrent_calls: i32,
    srtp: String,
    usable: bool,
}

async fn place_call(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ws = ids.get(0)?;
    st.require(&p, ws, Role::Manager).await?;
    only_fields(
        &body,
        &["agent_id", "to", "from", "sip_trunk_id", "variables"],
    )?;
    let agent_id = uuid_field(&body, "agent_id")?
        .ok_or_else(|| ApiError::validation("agent_id", "is required"))?;
    let to = e164_field("to", req_str(&body, "to", 32)?)?;
    let from = opt_str(&body, "from")?
        .map(|s| e164_field("from", s))
        .transpose()?;
    let trunk_id = uuid_field(&body, "sip_trunk_id")?;
    let variables = variables(body.get("variables"))?;
    let dialer = st.dialer.clone().ok_or(ApiError::Unavailable)?;

    // Everything below is read as the caller: another workspace's rows are
    // simply not there.
    let mut tx = st.begin(&p).await?;
    let agent: Option<String> =
        sqlx::query_scalar("select status::text from agents where id = $1 and workspace_id = $2")
            .bind(agent_id)
            .bind(ws)
            .fetch_optional(&mut *tx)
            .await?;
    match agent.as_deref() {
        None => return Err(unprocessable("agent_id", "no such agent in this workspace")),
        Some("live") => {}
        Some(_) => return Err(unprocessable("agent_id", "the agent is not live")),
    }
    let trunks: Vec<TrunkRow> = sqlx::query_as(
        "select id, outbound_host, outbound_port, outbound_transport, outbound_username, outbound_password, \
                from_domain, codecs, max_concurrent_calls, srtp, \
                (enabled and direction in ('outbound', 'both') and coalesce(outbound_host, '') <> '') as usable \
         from sip_trunks where workspace_id = $1 and ($2::uuid is null or id = $2) order by created_at, id",
    )
    .bind(ws)
    .bind(trunk_id)
    .fetch_all(&mut *tx)
    .await?;
    let trunk = match trunk_id {
        Some(_) => {
            let t = trunks
                .into_iter()
                .next()
                .ok_or_else(|| unprocessable("sip_trunk_id", "no such trunk in this workspace"))?;
            if !t.usable {
                return Err(unprocessable(
                    "sip_trunk_id",
                    "the trunk cannot place calls (disabled, inbound only, or no outbound_host)",
                ));
            }
            t
        }
        None => {
            let mut usable: Vec<TrunkRow> = trunks.into_iter().filter(|t| t.usable).collect();
            if usable.len() != 1 {
                return Err(unprocessable(
                    "sip_trunk_id",
                    format!(
                        "is required: the workspace has {} trunks that can place calls",
                        usable.len()
                    ),
                ));
            }
            usable.remove(0)
        }
    };
    // Our number: the one asked for (the workspace's, enabled), else the
    // trunk's (the agent's first), else the agent's own, else any of the
    // workspace's.
    let number: Option<(Uuid, String)> = match &from {
        Some(f) => sqlx::query_as(
            "select id, e164 from phone_numbers where workspace_id = $1 and e164 = $2 and enabled",
        )
        .bind(ws)
        .bind(f.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(Some)
        .ok_or_else(|| unprocessable("from", "not an enabled number of this workspace"))?,
        None => {
            sqlx::query_as(
                "select id, e164 from phone_numbers where workspace_id = $1 and enabled \
             order by (sip_trunk_id = $2) desc nulls last, (agent_id = $3) desc nulls last, \
                      (sip_trunk_id is null) desc, created_at, id limit 1",
            )
            .bind(ws)
            .bind(trunk.id)
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    let Some((phone_number_id, from_e164)) = number else {
        return Err(unprocessable(
            "from",
            "is required: the workspace has no enabled number to call from",
        ));
    };
    let from = e164_field("from", &from_e164)?;
    let allowed: bool = sqlx::query_scalar("select check_usage_limit($1)")
        .bind(ws)
        .fetch_one(&st.pool)
        .await?;
    if !allowed {
        return Err(ApiError::UsageLimit);
    }

    let transport = match trunk.outbound_transport.as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ if st.config.sip.tls_files().is_none() => {
            return Err(unprocessable(
                "sip_trunk_id",
                "the trunk's outbound_transport is tls and this node has no TLS certificate (sip.tls_cert_file)",
            ))
        }
        _ => Transport::Tls,
    };
    // SRTP is offered on TLS trunks that require it; without TLS the keys
    // would cross the network in the clear, so such a trunk cannot call.
    let srtp = trunk.srtp == "required";
    if srtp && transport != Transport::Tls {
        return Err(unprocessable(
            "sip_trunk_id",
            "the trunk requires SRTP, which needs outbound_transport tls",
        ));
    }
    let host = trunk.outbound_host.clone().unwrap_or_default();
    let port = trunk
        .outbound_port
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(5060);
    let target = resolve_trunk(&host, port, &st.config.outbound.allowed()).await?;
    let key = st.config.encryption_key_bytes();
    let credentials = match (&trunk.outbound_username, &trunk.outbound_password) {
        (Some(u), Some(pw)) if !u.is_empty() => {
            let pw = crate::sip::routing::decrypt_secret(&key, pw).ok_or_else(|| {
                unprocessable(
                    "sip_trunk_id",
                    "the trunk's outbound_password cannot be read with this node's key; enter it again",
                )
            })?;
            Some((u.clone(), pw))
        }
        _ => None,
    };
    let codecs: Vec<Codec> = trunk
        .codecs
        .iter()
        .filter_map(|c| Codec::from_name(c))
        .filter(|c| matches!(c, Codec::Pcmu | Codec::Pcma | Codec::Opus))
        .collect();
    let request = DialRequest {
        workspace_id: ws,
        agent_id,
        sip_trunk_id: trunk.id,
        from,
        phone_number_id: Some(phone_number_id),
        to,
        target,
        transport,
        host,
        port,
        from_domain: trunk.from_domain.filter(|d| !d.is_empty()),
        credentials,
        codecs,
        srtp,
        max_concurrent_calls: trunk.max_concurrent_calls.max(0) as usize,
        variables,
    };
    let id = dialer.dial(request).await.map_err(|e| match e {
        DialError::TrunkBusy => ApiError::Capacity(
            "the trunk is at its max_concurrent_calls; retry when a call ends".into(),
        ),
        DialError::NodeBusy | DialError::NoRtpPort | DialError::Unavailable => {
            tracing::warn!(error = %e, "outbound call refused by the node");
            ApiError::Unavailable
        }
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "call_log_id": id, "status": "ringing", "direction": "outbound"})),
    ))
}

/// The trunk's address. A tenant chooses the host, so, as for its HTTP
/// providers, internal addresses are refused unless the operator's
/// `[outbound] allow` admits them (a name listed there is admitted
/// whatever it resolves to).
async fn resolve_trunk(
    host: &str,
    port: u16,
    allowed: &crate::outbound::Allowed,
) -> Result<SocketAddr, ApiError> {
    let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
        {
            Ok(Ok(found)) => found.take(16).collect(),
            _ => Vec::new(),
        },
    };
    if addrs.is_empty() {
        return Err(unprocessable(
            "sip_trunk_id",
            "the trunk's outbound_host does not resolve",
        ));
    }
    let by_name = literal.is_none() && allowed.permits_host(host);
    if !by_name && !addrs.iter().all(|a| allowed.permits(a.ip())) {
        return Err(unprocessable(
            "sip_trunk_id",
            format!(
                "the trunk's outbound_host {}; the operator's [outbound] allow can admit it",
                crate::outbound::REFUSED
            ),
        ));
    }
    Ok(addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_bounded_identifiers_with_scalar_values() {
        let ok = variables(Some(&json!({"name": "Ada", "order_id": 42, "vip": true}))).unwrap();
        assert_eq!(ok.len(), 3);
        assert!(ok.contains(&("order_id".to_string(), "42".to_string())));
        assert!(variables(Some(&json!({"bad name": "x"}))).is_err());
        assert!(variables(Some(&json!({"1st": "x"}))).is_err());
        assert!(variables(Some(&json!({"n": {"nested": 1}}))).is_err());
        assert!(variables(Some(&json!({"n": "line\nbreak"}))).is_err());
        assert!(variables(Some(&json!([1, 2]))).is_err());
        let many: Map<String, Value> = (0..40).map(|i| (format!("v{i}"), json!(i))).collect();
        assert!(variables(Some(&Value::Object(many))).is_err());
        assert!(variables(None).unwrap().is_empty());
    }

    #[tokio::test]
    async fn internal_trunk_hosts_need_the_operators_allow() {
        let none = crate::outbound::Allowed::none();
        assert!(resolve_trunk("127.0.0.1", 5060, &none).await.is_err());
        assert!(resolve_trunk("10.1.2.3", 5060, &none).await.is_err());
        let lo = crate::outbound::Allowed::parse(&["127.0.0.0/8"]).unwrap();
        assert_eq!(
            resolve_trunk("127.0.0.1", 5070, &lo).await.unwrap(),
            "127.0.0.1:5070".parse::<std::net::SocketAddr>().unwrap()
        );
        assert!(resolve_trunk("203.0.113.7", 5060, &none).await.is_ok());
    }
}
