//! `sip_trunks` (inbound allow-list and credentials, outbound proxy) and
//! `phone_numbers` (E.164, routed to an agent of the same workspace). An
//! inbound username needs a password: the SIP node refuses such a trunk's
//! calls, and the API refuses to write one. A number is held by one
//! workspace at a time: claiming one another workspace holds is a 409, and
//! only an operator moves it (`api::operator::assign_number`).

use serde_json::{Map, Value};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::resource::{dflt, eq, opt, req, Kind, Resource, READ_WRITE};
use crate::api::types::{Role, Transport};
use crate::sip::trunk_profile::TrunkProvider;

/// Refuses a trunk row that would end up with `inbound_username` and no
/// `inbound_password` (on create, or after a patch of `id`).
pub async fn check_trunk_credentials(
    tx: &mut Transaction<'static, Postgres>,
    ws: Uuid,
    id: Option<Uuid>,
    values: &Map<String, Value>,
) -> Result<(), ApiError> {
    let (mut username, mut password_set) = (None::<String>, false);
    if let Some(id) = id {
        let row: Option<(Option<String>, bool)> = sqlx::query_as(
            "select inbound_username, inbound_password is not null from sip_trunks
              where workspace_id = $1 and id = $2",
        )
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((u, p)) = row {
            (username, password_set) = (u, p);
        }
    }
    if let Some(v) = values.get("inbound_username") {
        username = v.as_str().map(str::to_string);
    }
    if let Some(v) = values.get("inbound_password") {
        password_set = !v.is_null();
    }
    if username.is_some_and(|u| !u.is_empty()) && !password_set {
        return Err(ApiError::Unprocessable {
            message: "inbound_username needs inbound_password: a trunk without one would refuse every call".into(),
            field: Some("inbound_password".into()),
        });
    }
    Ok(())
}

/// The 409 for a number another workspace holds (its row is invisible under
/// RLS; the unique key on `e164` still refuses it).
pub const E164_HELD_ELSEWHERE: &str = "this number is held by another workspace; \
a number moves between workspaces only when an operator assigns it (switchboard assign-number)";

/// Names the clash when this workspace already holds the number (on create,
/// or when a patch of row `id` sets `e164`).
pub async fn check_number_free(
    tx: &mut Transaction<'static, Postgres>,
    ws: Uuid,
    id: Option<Uuid>,
    values: &Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(e164) = values.get("e164").and_then(Value::as_str) else {
        return Ok(());
    };
    let held: Option<Uuid> = sqlx::query_scalar(
        "select id from phone_numbers
          where workspace_id = $1 and e164 = $2 and id is distinct from $3",
    )
    .bind(ws)
    .bind(e164)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match held {
        Some(other) => Err(ApiError::Conflict {
            message: format!("{e164} is already a number of this workspace (phone number {other})"),
            field: Some("e164".into()),
        }),
        None => Ok(()),
    }
}

const TRUNK_PROVIDERS: &[&str] = TrunkProvider::NAMES;

/// A new Twilio or Telnyx trunk without `inbound_cidrs` admits the
/// provider's signalling addresses, and without `codecs` its codecs
/// (`sip::trunk_profile`).
pub fn fill_provider_presets(values: &mut Map<String, Value>) {
    let Some(provider) = values
        .get("provider")
        .and_then(Value::as_str)
        .and_then(TrunkProvider::parse)
    else {
        return;
    };
    let unset = |v: Option<&Value>| {
        v.is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
    };
    if unset(values.get("inbound_cidrs")) && !provider.signalling_ranges().is_empty() {
        values.insert(
            "inbound_cidrs".into(),
            Value::from(provider.signalling_ranges().to_vec()),
        );
    }
    if unset(values.get("codecs")) {
        values.insert("codecs".into(), Value::from(provider.codecs().to_vec()));
    }
}
const DIRECTIONS: &[&str] = &["inbound", "outbound", "both"];
/// `sip_trunks.srtp`: media encryption on the trunk's TLS calls.
const SRTP_POLICIES: &[&str] = &["off", "optional", "required"];

pub static SIP_TRUNKS: Resource = Resource {
    path: "sip-trunks",
    table: "sip_trunks",
    summary: "SIP trunks; passwords are write-only (`*_password_set`)",
    fields: &[
        req("name", Kind::Text(200)),
        dflt("provider", Kind::Enum(TRUNK_PROVIDERS)),
        dflt("direction", Kind::Enum(DIRECTIONS)),
        dflt("inbound_cidrs", Kind::Cidrs),
        opt("inbound_username", Kind::Text(200)),
        opt("inbound_password", Kind::Secret),
        opt("outbound_host", Kind::SipHost),
        opt("outbound_port", Kind::Port),
        dflt("outbound_transport", Kind::Enum(Transport::TRUNK)),
        // SRTP (SDES) on TLS calls: off, optional, required.
        dflt("srtp", Kind::Enum(SRTP_POLICIES)),
        opt("outbound_username", Kind::Text(200)),
        opt("outbound_password", Kind::Secret),
        opt("from_domain", Kind::SipHost),
        dflt("codecs", Kind::Codecs),
        dflt("max_concurrent_calls", Kind::Int(1, 10_000)),
        // How the trunk writes national numbers (NANP: 1 and 10).
        dflt("country_code", Kind::Int(1, 999)),
        dflt("national_length", Kind::Int(4, 14)),
        dflt("enabled", Kind::Bool),
    ],
    filters: &[
        eq("provider", Kind::Enum(TRUNK_PROVIDERS)),
        eq("enabled", Kind::Bool),
    ],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};

pub static PHONE_NUMBERS: Resource = Resource {
    path: "phone-numbers",
    table: "phone_numbers",
    summary: "Phone numbers (E.164, held by one workspace: 409 when another holds it) routed to an agent through a trunk",
    fields: &[
        req("e164", Kind::E164),
        opt("sip_trunk_id", Kind::Ref("sip_trunks")),
        opt("agent_id", Kind::Ref("agents")),
        opt("label", Kind::Text(200)),
        dflt("enabled", Kind::Bool),
    ],
    filters: &[
        eq("agent_id", Kind::Ref("agents")),
        eq("sip_trunk_id", Kind::Ref("sip_trunks")),
        eq("e164", Kind::E164),
        eq("enabled", Kind::Bool),
    ],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};
