//! The hand-described operations of the OpenAPI document: auth, workspaces,
//! members, API keys, knowledge ingestion and search, live calls, audio.

use serde_json::{json, Map, Value};

use super::openapi::{id_params, list_of, op, page_params, schema_ref, READ_ERRORS, WRITE_ERRORS};

fn object(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

pub(crate) fn add_custom(paths: &mut Map<String, Value>) {
    let any = json!({"type": "object"});
    let credentials = object(
        json!({"email": {"type": "string", "format": "email", "maxLength": 320},
               "password": {"type": "string", "minLength": 8, "maxLength": 256}}),
        &["email", "password"],
    );
    let signup = object(
        json!({"email": {"type": "string", "format": "email", "maxLength": 320},
               "password": {"type": "string", "minLength": 8, "maxLength": 256},
               "full_name": {"type": "string", "maxLength": 200}}),
        &["email", "password"],
    );
    let token = json!({"type": "object", "properties": {"access_token": {"type": "string"},
        "token_type": {"type": "string"}, "expires_in": {"type": "integer"}}, "required": ["access_token", "token_type", "expires_in"]});
    let ws_body = object(
        json!({"name": {"type": "string", "minLength": 1, "maxLength": 200},
               "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"},
               "settings": {"type": "object"}}),
        &["name"],
    );
    let ws_patch = object(
        json!({"name": {"type": "string", "minLength": 1, "maxLength": 200},
               "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"},
               "settings": {"type": "object"}}),
        &[],
    );
    let role = json!({"type": "string", "enum": ["OWNER", "MANAGER", "VIEWER"]});
    let e164 =
        json!({"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$", "examples": ["+15555550100"]});
    let dial_body = object(
        json!({"agent_id": {"type": "string", "format": "uuid"},
               "to": e164.clone(),
               "from": {"description": "one of the workspace's numbers; default: the agent's (or the trunk's) number", "type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$"},
               "sip_trunk_id": {"type": "string", "format": "uuid", "description": "optional when the workspace has exactly one outbound trunk"},
               "variables": {"type": "object", "maxProperties": 32, "description": "filled into the agent's greeting and instructions where they say {{name}}",
                             "additionalProperties": {"type": ["string", "number", "boolean"]}}}),
        &["agent_id", "to"],
    );
    let dial_accepted = json!({"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"}, "call_log_id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["ringing"]}, "direction": {"type": "string", "enum": ["outbound"]}},
        "required": ["id", "call_log_id", "status"]});
    let member = object(
        json!({"email": {"type": "string", "format": "email"}, "role": role}),
        &["email", "role"],
    );
    let member_patch = object(json!({"role": role}), &["role"]);
    let key_body = object(
        json!({"name": {"type": "string", "minLength": 1, "maxLength": 200}, "role": role,
               "expires_at": {"type": "string", "format": "date-time"}}),
        &["name"],
    );
    let faq = object(
        json!({"question": {"type": "string", "minLength": 1, "maxLength": 4000},
                            "answer": {"type": "string", "minLength": 1, "maxLength": 4000}}),
        &["question", "answer"],
    );
    let knowledge_body = object(
        json!({"name": {"type": "string", "minLength": 1, "maxLength": 200},
               "type": {"type": "string", "enum": ["TEXT", "FAQ", "URL", "PDF"]},
               "agent_id": {"type": ["string", "null"], "format": "uuid"},
               "content": {"type": "string", "description": "TEXT: the document"},
               "faqs": {"type": "array", "items": faq, "minItems": 1, "maxItems": 1000, "description": "FAQ: the pairs"},
               "url": {"type": "string", "format": "uri", "description": "URL: the page to fetch"},
               "content_base64": {"type": "string", "description": "PDF: the file, base64"}}),
        &["name", "type"],
    );
    let search = object(
        json!({"query": {"type": "string", "minLength": 1, "maxLength": 2000},
                               "limit": {"type": "integer", "minimum": 1, "maximum": 50}}),
        &["query"],
    );
    let w = || id_params(&["workspace_id"]);
    let w_id = |second: &str| id_params(&["workspace_id", second]);
    let entries: Vec<(&str, &str, Value)> = vec![
        (
            "/healthz",
            "get",
            op(
                "Process is up",
                "health",
                vec![],
                None,
                (200, any.clone()),
                &[],
            ),
        ),
        (
            "/readyz",
            "get",
            op(
                "Database reachable, migrations applied",
                "health",
                vec![],
                None,
                (200, any.clone()),
                &[503],
            ),
        ),
        (
            "/metrics",
            "get",
            json!({"summary": "Prometheus metrics of the process (text format 0.0.4); no login, scrapers' addresses limited by api.metrics_allow",
                   "tags": ["health"], "parameters": [],
                   "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                                 "403": {"description": "the scraper's address is not in api.metrics_allow"}}}),
        ),
        (
            "/v1/auth/signup",
            "post",
            op(
                "Create an account",
                "auth",
                vec![],
                Some(signup),
                (201, any.clone()),
                &[400, 409, 413, 415, 429],
            ),
        ),
        (
            "/v1/auth/token",
            "post",
            op(
                "Sign in: a Supabase-compatible access token",
                "auth",
                vec![],
                Some(credentials),
                (200, token),
                &[400, 401, 413, 415, 429],
            ),
        ),
        (
            "/v1/me",
            "get",
            op(
                "The caller: user with workspaces, or API key",
                "auth",
                vec![],
                None,
                (200, any.clone()),
                &[401],
            ),
        ),
        (
            "/v1/llm-models",
            "get",
            op(
                "LLM model catalogue",
                "catalogue",
                vec![],
                None,
                (200, list_of(any.clone())),
                &[401],
            ),
        ),
        (
            "/v1/pricing-plans",
            "get",
            op(
                "Pricing plans",
                "catalogue",
                vec![],
                None,
                (200, list_of(any.clone())),
                &[401],
            ),
        ),
        (
            "/v1/workspaces",
            "get",
            op(
                "Workspaces of the caller",
                "workspaces",
                page_params(),
                None,
                (200, list_of(any.clone())),
                &[400, 401],
            ),
        ),
        (
            "/v1/workspaces",
            "post",
            op(
                "Create a workspace (creator becomes OWNER)",
                "workspaces",
                vec![],
                Some(ws_body),
                (201, any.clone()),
                &[400, 401, 403, 409, 413, 415],
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}",
            "get",
            op(
                "Get a workspace",
                "workspaces",
                w(),
                None,
                (200, any.clone()),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}",
            "patch",
            op(
                "Update a workspace (MANAGER)",
                "workspaces",
                w(),
                Some(ws_patch),
                (200, any.clone()),
                WRITE_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}",
            "delete",
            op(
                "Delete a workspace (OWNER)",
                "workspaces",
                w(),
                None,
                (204, Value::Null),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/members",
            "get",
            op(
                "Members",
                "members",
                w(),
                None,
                (200, list_of(any.clone())),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/members",
            "post",
            op(
                "Add a member (OWNER)",
                "members",
                w(),
                Some(member),
                (201, any.clone()),
                WRITE_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/members/{user_id}",
            "patch",
            op(
                "Change a member's role (OWNER)",
                "members",
                w_id("user_id"),
                Some(member_patch),
                (200, any.clone()),
                WRITE_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/members/{user_id}",
            "delete",
            op(
                "Remove a member (OWNER)",
                "members",
                w_id("user_id"),
                None,
                (204, Value::Null),
                WRITE_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/api-keys",
            "get",
            op(
                "API keys (OWNER; never the key)",
                "api-keys",
                w(),
                None,
                (200, list_of(any.clone())),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/api-keys",
            "post",
            op(
                "Create an API key (OWNER); the key is shown once",
                "api-keys",
                w(),
                Some(key_body),
                (201, any.clone()),
                WRITE_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/api-keys/{id}",
            "delete",
            op(
                "Revoke an API key (OWNER)",
                "api-keys",
                w_id("id"),
                None,
                (204, Value::Null),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/knowledge",
            "post",
            op(
                "Create and ingest a knowledge source (MANAGER)",
                "knowledge",
                w(),
                Some(knowledge_body),
                (201, schema_ref("Knowledge")),
                WRITE_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/knowledge/{id}/chunks",
            "get",
            op(
                "Chunks of a source",
                "knowledge",
                {
                    let mut p = w_id("id");
                    p.extend(page_params());
                    p
                },
                None,
                (200, list_of(any.clone())),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/agents/{id}/knowledge/search",
            "post",
            op(
                "Ranked chunks the runtime would use",
                "knowledge",
                w_id("id"),
                Some(search),
                (200, any.clone()),
                WRITE_ERRORS,
            ),
        ),
        ("/v1/workspaces/{workspace_id}/calls", "post", {
            let mut o = op(
                "Place an outbound call: the agent calls a number through a trunk (MANAGER)",
                "calls",
                w(),
                Some(dial_body),
                (202, dial_accepted),
                WRITE_ERRORS,
            );
            o["description"] = json!(
                "The INVITE goes to the trunk's outbound_host:outbound_port \
(401/407 answered with its outbound credentials). The call's call_logs row (direction outbound) \
follows it: ringing, then in_progress when answered (the agent speaks first), or busy (486/600), \
no_answer (rang past sip.ring_timeout_secs, then CANCEL) or failed with the SIP code. It is listed \
under calls/live while it rings and talks; DELETE calls/live/{id} cancels or hangs it up. \
402 when the plan's usage limit is reached, 429 when the trunk is at max_concurrent_calls."
            );
            if let Some(r) = o["responses"].as_object_mut() {
                r.insert(
                    "402".into(),
                    json!({"description": "the plan's usage limit is reached"}),
                );
                r.insert(
                    "429".into(),
                    json!({"description": "the trunk is at its max_concurrent_calls"}),
                );
            }
            o
        }),
        (
            "/v1/workspaces/{workspace_id}/calls/live",
            "get",
            op(
                "Live calls",
                "calls",
                w(),
                None,
                (200, list_of(any.clone())),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/calls/live/{call_id}",
            "delete",
            op(
                "Hang up a live call (MANAGER)",
                "calls",
                w_id("call_id"),
                None,
                (202, Value::Null),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/calls/live/{call_id}/dtmf",
            "post",
            {
                let mut o = op(
                    "Send DTMF digits on a live call, RFC 4733 (MANAGER)",
                    "calls",
                    w_id("call_id"),
                    Some(object(
                        json!({"digits": {"type": "string", "pattern": "^[0-9*#A-D]{1,32}$", "examples": ["12#"]}}),
                        &["digits"],
                    )),
                    (202, Value::Null),
                    WRITE_ERRORS,
                );
                o["description"] = json!(
                    "Sent with the telephone-event payload type the far end offered, 100 ms each; \
409 when it offered none, 404 when the call is not answered and live on this node."
                );
                o
            },
        ),
        (
            "/v1/workspaces/{workspace_id}/call-recordings/{id}/audio",
            "get",
            json!({"summary": "Download a recording (WAV)", "tags": ["call-recordings"], "parameters": w_id("id"),
                   "responses": {"200": {"description": "audio", "content": {"audio/wav": {"schema": {"type": "string", "contentMediaType": "audio/wav"}}}},
                                 "401": {"description": "error"}, "404": {"description": "error"}}}),
        ),
        (
            "/v1/workspaces/{workspace_id}/calls/live/{call_id}/transcript",
            "get",
            json!({"summary": "Live transcript of a call held by this node (server-sent events)", "tags": ["calls"],
                   "parameters": w_id("call_id"),
                   "description": "Events: `line` {seq, role: user|assistant|event, text, at} — the lines so far, then each as it happens; `lost` {count} when this reader fell behind; `end` when the call is over. 404 when the call is not live on this node.",
                   "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                                 "401": {"description": "error"}, "404": {"description": "error"}}}),
        ),
        (
            "/v1/workspaces/{workspace_id}/usage-summary",
            "get",
            op(
                "This month's usage against the plan in force",
                "usage",
                w(),
                None,
                (
                    200,
                    json!({"type": "object", "properties": {
                    "month": {"type": "string", "format": "date"}, "usage": {"type": "object"},
                    "plan": {"type": ["object", "null"]}, "within_limits": {"type": "boolean"}}}),
                ),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/agents/{id}/tts-preview",
            "post",
            {
                let mut o = op(
                    "Hear the agent's voice (WAV)",
                    "agents",
                    w_id("id"),
                    Some(object(
                        json!({"text": {"type": "string", "maxLength": 300, "description": "default: the persona's greeting"},
                               "tts_provider": {"type": "string", "maxLength": 50},
                               "tts_voice": {"type": "string", "maxLength": 100},
                               "tts_speed": {"type": "number", "minimum": 0.25, "maximum": 4}}),
                        &[],
                    )),
                    (200, Value::Null),
                    WRITE_ERRORS,
                );
                o["responses"]["200"] = json!({"description": "audio", "content": {"audio/wav": {"schema": {"type": "string", "contentMediaType": "audio/wav"}}}});
                o
            },
        ),
        (
            "/v1/workspaces/{workspace_id}/web-widgets/{id}/public-key",
            "get",
            op(
                "The widget's public key, for /widget.js (MANAGER)",
                "web-widgets",
                w_id("id"),
                None,
                (
                    200,
                    json!({"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "public_key": {"type": "string", "pattern": "^pk_[0-9a-f]{32,128}$"}}}),
                ),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/workspaces/{workspace_id}/web-widgets/{id}/public-key",
            "post",
            op(
                "Rotate the widget's public key: pages with the old one stop working (MANAGER)",
                "web-widgets",
                w_id("id"),
                None,
                (
                    200,
                    json!({"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "public_key": {"type": "string"}}}),
                ),
                READ_ERRORS,
            ),
        ),
        (
            "/v1/widgets/{public_key}",
            "get",
            json!({"summary": "A web widget's look, for /widget.js on a page of its allowed_domains (no login; CORS to that Origin)",
                   "tags": ["web-widgets"], "security": [],
                   "parameters": [{"name": "public_key", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^pk_[0-9a-f]{32,128}$"}}],
                   "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object", "properties": {
                                     "agent_id": {"type": "string", "format": "uuid"}, "agent_name": {"type": "string"},
                                     "available": {"type": "boolean"}, "primary_color": {"type": "string"},
                                     "position": {"type": "string"}, "welcome_message": {"type": "string"},
                                     "whip_path": {"type": "string"}}}}}},
                                 "401": {"description": "unknown key"}, "403": {"description": "Origin not in the widget's allowed_domains"}}}),
        ),
    ];
    for (path, method, operation) in entries {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = operation;
    }
}
