//! OpenAPI 3.1 document generated from the same resource descriptions that
//! validate requests (so the two cannot drift), at `/openapi.json`; the
//! reference page at `/docs` (Swagger UI, embedded) is served by `console`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::knowledge::KNOWLEDGE;
use super::resource::{Field, Filter, Kind, Resource};
use super::resources::ALL;
use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

/// `sip-trunks` → `SipTrunks`.
fn schema_name(path: &str) -> String {
    path.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

pub(crate) fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

pub fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::Text(max) => json!({"type": "string", "maxLength": max}),
        Kind::Enum(values) => json!({"type": "string", "enum": values}),
        Kind::Int(min, max) => json!({"type": "integer", "minimum": min, "maximum": max}),
        Kind::Num(min, max) => json!({"type": "number", "minimum": min, "maximum": max}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Object => json!({"type": "object"}),
        Kind::TextList(items, len) => {
            json!({"type": "array", "maxItems": items, "items": {"type": "string", "maxLength": len}})
        }
        Kind::Ref(_) | Kind::GlobalRef(_) | Kind::Id => uuid(),
        Kind::E164 => {
            json!({"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$", "examples": ["+15555550100"]})
        }
        Kind::Cidrs => json!({"type": "array", "maxItems": 100,
            "items": {"type": "string", "examples": ["192.0.2.0/24"]}}),
        Kind::Codecs => json!({"type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": true,
            "items": {"type": "string", "enum": super::types::CodecName::ALL}}),
        Kind::SipHost => json!({"type": "string", "maxLength": 253,
            "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"}),
        Kind::Port => json!({"type": "integer", "minimum": 1, "maximum": 65535}),
        Kind::TransferTarget => json!({"type": "string", "maxLength": 256,
            "description": "E.164 number or sip: URI", "examples": ["+15555550199", "sip:desk@pbx.example.com"]}),
        Kind::Url => {
            json!({"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^https?://"})
        }
        Kind::Color => json!({"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$"}),
        Kind::Time => json!({"type": "string", "format": "date-time"}),
        Kind::Secret => {
            json!({"type": "string", "minLength": 1, "maxLength": 4096, "writeOnly": true})
        }
    }
}

fn nullable(mut schema: Value) -> Value {
    if let Some(t) = schema.get("type").cloned() {
        schema["type"] = json!([t, "null"]);
        if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
            values.push(Value::Null);
        }
    }
    schema
}

fn body_schema(fields: &[Field], creating: bool) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields.iter().filter(|f| f.writable) {
        let s = kind_schema(f.kind);
        props.insert(f.name.into(), if f.nullable { nullable(s) } else { s });
        if creating && f.required {
            required.push(f.name);
        }
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn row_schema(fields: &[Field]) -> Value {
    let mut props = Map::new();
    props.insert("id".into(), uuid());
    props.insert("workspace_id".into(), uuid());
    props.insert(
        "created_at".into(),
        json!({"type": "string", "format": "date-time"}),
    );
    for f in fields {
        match f.kind {
            Kind::Secret => {
                props.insert(format!("{}_set", f.name), json!({"type": "boolean"}));
            }
            kind => {
                props.insert(f.name.into(), nullable(kind_schema(kind)));
            }
        }
    }
    json!({"type": "object", "properties": props, "required": ["id"]})
}

pub(crate) fn param(name: &str, location: &str, schema: Value, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": schema})
}

pub(crate) fn id_params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| param(n, "path", uuid(), true))
        .collect()
}

pub(crate) fn page_params() -> Vec<Value> {
    vec![
        param(
            "limit",
            "query",
            json!({"type": "integer", "minimum": 1, "maximum": 200}),
            false,
        ),
        param(
            "offset",
            "query",
            json!({"type": "integer", "minimum": 0, "maximum": 1_000_000}),
            false,
        ),
    ]
}

/// Resource lists also take `?after=<id>`: the page after that item
/// (keyset pagination; the previous page's `next_after`).
fn keyset_page_params() -> Vec<Value> {
    let mut params = page_params();
    params.push(param("after", "query", uuid(), false));
    params
}

fn filter_params(filters: &[Filter]) -> Vec<Value> {
    filters
        .iter()
        .map(|f| param(f.param, "query", kind_schema(f.kind), false))
        .collect()
}

fn error_responses(codes: &[u16]) -> Map<String, Value> {
    let mut out = Map::new();
    for code in codes {
        out.insert(
            code.to_string(),
            json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    out
}

/// One operation; `ok` is (status, schema or null for no body).
pub(crate) fn op(
    summary: &str,
    tag: &str,
    params: Vec<Value>,
    body: Option<Value>,
    ok: (u16, Value),
    errors: &[u16],
) -> Value {
    let mut responses = error_responses(errors);
    let ok_resp = if ok.1.is_null() {
        json!({"description": "done"})
    } else {
        json!({"description": "ok", "content": {"application/json": {"schema": ok.1}}})
    };
    responses.insert(ok.0.to_string(), ok_resp);
    let mut o =
        json!({"summary": summary, "tags": [tag], "parameters": params, "responses": responses});
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

pub(crate) fn list_of(item: Value) -> Value {
    json!({"type": "object", "properties": {"items": {"type": "array", "items": item},
        "limit": {"type": "integer"}, "offset": {"type": "integer"}}, "required": ["items"]})
}

/// A resource list's page: `next_after` is the `after` of the next page
/// (null on a last, short page).
fn keyset_list_of(item: Value) -> Value {
    let mut page = list_of(item);
    page["properties"]["next_after"] = json!({"type": ["string", "null"], "format": "uuid"});
    page
}

pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub(crate) const READ_ERRORS: &[u16] = &[400, 401, 403, 404];
pub(crate) const WRITE_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 415, 422];

fn add_resource(r: &Resource, paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let name = schema_name(r.path);
    let tag = r.path;
    schemas.insert(name.clone(), row_schema(r.fields));
    let mut collection = Map::new();
    let mut params = id_params(&["workspace_id"]);
    params.extend(keyset_page_params());
    params.extend(filter_params(r.filters));
    collection.insert(
        "get".into(),
        op(
            &format!("List: {}", r.summary),
            tag,
            params,
            None,
            (200, keyset_list_of(schema_ref(&name))),
            READ_ERRORS,
        ),
    );
    if r.writes.create {
        schemas.insert(format!("{name}Create"), body_schema(r.fields, true));
        collection.insert(
            "post".into(),
            op(
                &format!("Create ({})", r.path),
                tag,
                id_params(&["workspace_id"]),
                Some(schema_ref(&format!("{name}Create"))),
                (201, schema_ref(&name)),
                WRITE_ERRORS,
            ),
        );
    }
    let mut item = Map::new();
    let ids = || id_params(&["workspace_id", "id"]);
    item.insert(
        "get".into(),
        op(
            &format!("Get one ({})", r.path),
            tag,
            ids(),
            None,
            (200, schema_ref(&name)),
            READ_ERRORS,
        ),
    );
    if r.writes.patch {
        schemas.insert(format!("{name}Patch"), body_schema(r.fields, false));
        item.insert(
            "patch".into(),
            op(
                &format!("Update ({})", r.path),
                tag,
                ids(),
                Some(schema_ref(&format!("{name}Patch"))),
                (200, schema_ref(&name)),
                WRITE_ERRORS,
            ),
        );
    }
    if r.writes.delete {
        item.insert(
            "delete".into(),
            op(
                &format!("Delete ({})", r.path),
                tag,
                ids(),
                None,
                (204, Value::Null),
                READ_ERRORS,
            ),
        );
    }
    paths.insert(r.collection_path(), Value::Object(collection));
    paths.insert(r.item_path(), Value::Object(item));
}

/// `delete` + `/v1/workspaces/{workspace_id}` → `delete_v1_workspaces_workspace_id`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for part in path.split(['/', '-', '{', '}']).filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(part);
    }
    id
}

pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message"], "properties": {"code": {"type": "string"},
            "message": {"type": "string"}, "details": {}}}}}),
    );
    for r in ALL.iter().copied().chain(std::iter::once(&KNOWLEDGE)) {
        add_resource(r, &mut paths, &mut schemas);
    }
    super::openapi_custom::add_custom(&mut paths);
    super::whip::openapi_paths(&mut paths);
    // Every operation needs credentials except health, docs and sign-in.
    let public = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/auth/signup",
        "/v1/auth/token",
    ];
    for (path, item) in paths.iter_mut() {
        if let Some(ops) = item.as_object_mut() {
            for (method, op) in ops.iter_mut() {
                op["operationId"] = json!(operation_id(method, path));
                // Operations that say who may call them (no login for a
                // widget's look; widget keys for WHIP) keep their own.
                if public.contains(&path.as_str()) || op.get("security").is_some() {
                    continue;
                }
                op["security"] = json!([{"bearer": []}, {"apiKey": []}]);
                if let Some(responses) = op["responses"].as_object_mut() {
                    responses.entry("401").or_insert_with(
                        || json!({"description": "missing or invalid credentials"}),
                    );
                }
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenants, agents, knowledge, trunks, numbers, calls. Errors are {\"error\": {\"code\", \"message\", \"details\"}}. Lists take ?limit=&offset=."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or sk_live_ API key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "widgetKey": {"type": "http", "scheme": "bearer", "bearerFormat": "pk_ public key of a web widget, from an Origin in its allowed_domains (/v1/widgets and WHIP only)"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_document_shape() {
        assert_eq!(schema_name("sip-trunks"), "SipTrunks");
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(
            doc["components"]["schemas"]["PhoneNumbersCreate"]["required"]
                .as_array()
                .unwrap()
                .contains(&json!("e164"))
        );
        let trunk = &doc["components"]["schemas"]["SipTrunks"]["properties"];
        assert!(
            trunk.get("inbound_password").is_none() && trunk.get("inbound_password_set").is_some()
        );
    }
}
