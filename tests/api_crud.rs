//! The API as an admin uses it: sign-up, token, workspace, then create, list,
//! get, patch and delete of each resource, with the JSON checked; API keys;
//! the read-only views over runtime-written rows; health and OpenAPI.

use crate::api_support;

use api_support::{Api, Options};
use serde_json::{json, Value};

#[tokio::test]
async fn signup_token_me_and_workspaces() {
    let api = Api::start().await;
    let (uid, token) = api.user("Alice@Example.com").await;
    // the email is normalised; a second sign-up with it conflicts
    let again = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/signup",
            None,
            Some(json!({"email": "alice@example.com", "password": "another-pass"})),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "conflict"),
        "{}",
        again.text
    );
    // the token is a Supabase-shaped JWT
    let claims = decode_claims(&token);
    assert_eq!(claims["sub"], uid.to_string());
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["email"], "alice@example.com");
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    // the password is stored as argon2id, never as given
    let stored = api.rows("select encrypted_password from auth.users").await;
    assert!(stored[0]["encrypted_password"]
        .as_str()
        .unwrap()
        .starts_with("$argon2id$"));
    assert_eq!(api.count("select 1 from profiles").await, 1);

    let me = api.get("/v1/me", &token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["id"], uid.to_string());
    assert_eq!(me.body["workspaces"], json!([]));

    let created = api
        .post(
            "/v1/workspaces",
            &token,
            json!({"name": "Acme Support", "slug": "acme"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["name"], "Acme Support");
    assert_eq!(created.body["slug"], "acme");
    assert_eq!(created.body["role"], "OWNER");
    let ws = created.body["id"].as_str().unwrap().to_string();
    let owners = api
        .rows(&format!(
            "select role::text from user_roles where workspace_id = '{ws}' and user_id = '{uid}'"
        ))
        .await;
    assert_eq!(owners, vec![json!({"role": "OWNER"})]);

    let dup = api
        .post(
            "/v1/workspaces",
            &token,
            json!({"name": "Other", "slug": "acme"}),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (409, "conflict"));

    let list = api.get("/v1/workspaces", &token).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["role"], "OWNER");
    let patched = api
        .patch(
            &format!("/v1/workspaces/{ws}"),
            &token,
            json!({"name": "Acme"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["name"], "Acme");
    let me = api.get("/v1/me", &token).await;
    assert_eq!(me.body["workspaces"][0]["slug"], "acme");
    assert_eq!(me.body["profile"]["workspace_id"], ws);

    // wrong password and unknown email are the same 401
    for (email, pw) in [
        ("alice@example.com", "wrong-password"),
        ("nobody@example.com", "password-123"),
    ] {
        let r = api
            .call(
                reqwest::Method::POST,
                "/v1/auth/token",
                None,
                Some(json!({"email": email, "password": pw})),
            )
            .await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"));
        assert_eq!(r.body["error"]["message"], "invalid or missing credentials");
    }
    let del = api.delete(&format!("/v1/workspaces/{ws}"), &token).await;
    assert_eq!(del.status, 204);
    assert_eq!(api.count("select 1 from workspaces").await, 0);
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn crud_of_every_configuration_resource() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let base = format!("/v1/workspaces/{ws}");

    // personas
    let persona = api
        .post(
            &format!("{base}/personas"),
            &t,
            json!({"name": "Front desk", "tone": "friendly",
            "greeting": "Hello, Acme here.", "escalation_policy": "transfer"}),
        )
        .await;
    assert_eq!(persona.status, 201, "{}", persona.text);
    assert_eq!(persona.body["tone"], "friendly");
    assert_eq!(persona.body["escalation_policy"], "transfer");
    assert_eq!(persona.body["workspace_id"], ws.to_string());
    let persona_id = persona.body["id"].as_str().unwrap().to_string();

    // agents, with every voice column
    let agent_body = json!({
        "name": "Receptionist", "description": "Answers the phone", "domain": "retail", "status": "live",
        "persona_id": persona_id, "goals": ["book visits"], "channels": ["phone", "web"],
        "instructions": "Be brief.", "temperature": 0.5, "max_tokens": 200, "context_window_size": 8192,
        "stt_provider": "whisper", "stt_language": "en", "tts_provider": "espeak", "tts_voice": "en-us",
        "tts_speed": 1.25, "interruptible": false, "silence_timeout_ms": 7000, "max_call_seconds": 900,
        "recording_enabled": true, "transfer_to": "+15555550199", "config": {"k": 1}
    });
    let agent = api
        .post(&format!("{base}/agents"), &t, agent_body.clone())
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    for (k, v) in agent_body.as_object().unwrap() {
        assert_eq!(&agent.body[k], v, "agents.{k}");
    }
    let agent_id = agent.body["id"].as_str().unwrap().to_string();
    let got = api.get(&format!("{base}/agents/{agent_id}"), &t).await;
    assert_eq!(got.body, agent.body);
    let patched = api
        .patch(&format!("{base}/agents/{agent_id}"), &t, json!({"tts_speed": 0.9, "transfer_to": "sip:desk@pbx.example.com", "description": null}))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["tts_speed"], 0.9);
    assert_eq!(patched.body["transfer_to"], "sip:desk@pbx.example.com");
    assert_eq!(patched.body["description"], Value::Null);
    assert_eq!(
        patched.body["name"], "Receptionist",
        "untouched fields stay"
    );
    // a draft agent for the list filter
    api.create(&t, ws, "agents", json!({"name": "Draft one"}))
        .await;
    let live = api.get(&format!("{base}/agents?status=live"), &t).await;
    assert_eq!(live.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(live.body["items"][0]["id"], agent_id);
    let page = api
        .get(&format!("{base}/agents?limit=1&offset=1"), &t)
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        (page.body["limit"].as_i64(), page.body["offset"].as_i64()),
        (Some(1), Some(1))
    );

    // SIP trunk: secrets are write-only
    let trunk = api
        .post(&format!("{base}/sip-trunks"), &t, json!({"name": "Telnyx", "provider": "telnyx", "direction": "both",
            "inbound_cidrs": ["192.0.2.0/24", "198.51.100.7"], "inbound_username": "in", "inbound_password": "trunk-in-pw",
            "outbound_host": "sip.telnyx.com", "outbound_port": 5061, "outbound_transport": "tls",
            "outbound_username": "out", "outbound_password": "trunk-out-pw", "codecs": ["PCMA", "PCMU"], "max_concurrent_calls": 5}))
        .await;
    assert_eq!(trunk.status, 201, "{}", trunk.text);
    assert_eq!(
        trunk.body["inbound_cidrs"],
        json!(["192.0.2.0/24", "198.51.100.7/32"])
    );
    assert_eq!(trunk.body["codecs"], json!(["PCMA", "PCMU"]));
    assert_eq!(trunk.body["inbound_password_set"], true);
    assert_eq!(trunk.body["outbound_password_set"], true);
    assert!(trunk.body.get("inbound_password").is_none());
    let trunk_id = trunk.body["id"].as_str().unwrap().to_string();
    // Lists and GET by id show the same: a flag, never the secret.
    let trunks = api.get(&format!("{base}/sip-trunks"), &t).await;
    let one = api.get(&format!("{base}/sip-trunks/{trunk_id}"), &t).await;
    for row in [&trunks.body["items"][0], &one.body] {
        assert_eq!(row["id"], trunk.body["id"], "{}", trunks.text);
        assert_eq!(row["inbound_password_set"], true);
        assert_eq!(row["outbound_password_set"], true);
        assert!(row.get("inbound_password").is_none() && row.get("outbound_password").is_none());
        assert!(!trunks.text.contains("v1:") && !one.text.contains("v1:"));
    }
    let stored = api.rows("select inbound_password from sip_trunks").await;
    let sealed = stored[0]["inbound_password"].as_str().unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains("trunk-in-pw"));
    let key = api.config.encryption_key_bytes();
    assert_eq!(
        switchboard::api::secrets::decrypt(&key, sealed).unwrap(),
        "trunk-in-pw"
    );

    // phone number routed to the agent through the trunk
    let number = api
        .post(&format!("{base}/phone-numbers"), &t, json!({"e164": "+15555550100", "agent_id": agent_id, "sip_trunk_id": trunk_id, "label": "Main"}))
        .await;
    assert_eq!(number.status, 201, "{}", number.text);
    assert_eq!(number.body["e164"], "+15555550100");
    assert_eq!(number.body["enabled"], true);
    let number_id = number.body["id"].as_str().unwrap().to_string();
    let by_agent = api
        .get(&format!("{base}/phone-numbers?agent_id={agent_id}"), &t)
        .await;
    assert_eq!(by_agent.body["items"][0]["id"], number_id);
    let off = api
        .patch(
            &format!("{base}/phone-numbers/{number_id}"),
            &t,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(off.body["enabled"], false);

    // channel config, web widget, provider config, lead
    let channel = api
        .post(
            &format!("{base}/channel-configs"),
            &t,
            json!({"agent_id": agent_id, "channel": "web", "config": {"x": true}}),
        )
        .await;
    assert_eq!(channel.status, 201, "{}", channel.text);
    assert_eq!(channel.body["config"], json!({"x": true}));
    let widget = api
        .post(
            &format!("{base}/web-widgets"),
            &t,
            json!({"agent_id": agent_id, "primary_color": "#1a73e8",
            "position": "bottom-left", "allowed_domains": ["acme.example"]}),
        )
        .await;
    assert_eq!(widget.status, 201, "{}", widget.text);
    assert_eq!(widget.body["allowed_domains"], json!(["acme.example"]));
    let provider = api
        .post(&format!("{base}/provider-configs"), &t, json!({"provider": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-provider-secret-1"}))
        .await;
    assert_eq!(provider.status, 201, "{}", provider.text);
    assert_eq!(provider.body["api_key_set"], true);
    assert!(provider.body.get("api_key").is_none());
    let provider_id = provider.body["id"].as_str().unwrap().to_string();
    let cleared = api
        .patch(
            &format!("{base}/provider-configs/{provider_id}"),
            &t,
            json!({"api_key": null}),
        )
        .await;
    assert_eq!(cleared.body["api_key_set"], false);
    let lead = api
        .post(&format!("{base}/leads"), &t, json!({"agent_id": agent_id, "name": "Bob", "phone": "+15555550123", "metadata": {"src": "call"}}))
        .await;
    assert_eq!(lead.status, 201, "{}", lead.text);
    assert_eq!(lead.body["name"], "Bob");

    // deletes: each row goes, a second delete is 404
    for (path, id) in [
        ("leads", lead.body["id"].as_str().unwrap()),
        ("web-widgets", widget.body["id"].as_str().unwrap()),
        ("channel-configs", channel.body["id"].as_str().unwrap()),
        ("phone-numbers", number_id.as_str()),
        ("sip-trunks", trunk_id.as_str()),
        ("agents", agent_id.as_str()),
        ("personas", persona_id.as_str()),
        ("provider-configs", provider_id.as_str()),
    ] {
        let r = api.delete(&format!("{base}/{path}/{id}"), &t).await;
        assert_eq!(r.status, 204, "delete {path}: {}", r.text);
        let r = api.delete(&format!("{base}/{path}/{id}"), &t).await;
        assert_eq!(r.status, 404, "second delete {path}");
        let r = api.get(&format!("{base}/{path}/{id}"), &t).await;
        assert_eq!((r.status, r.code()), (404, "not_found"));
    }
    assert_eq!(
        api.count("select 1 from agents").await,
        1,
        "only the draft agent is left"
    );
}

#[tokio::test]
async fn api_keys_authenticate_and_revoke() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let created = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            &t,
            json!({"name": "ci", "role": "MANAGER"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_live_"));
    assert!(key.starts_with(created.body["prefix"].as_str().unwrap()));
    assert!(created.body.get("key_hash").is_none());
    let stored = api.rows("select prefix, key_hash from api_keys").await;
    assert_ne!(
        stored[0]["key_hash"],
        json!(key),
        "the key itself is never stored"
    );
    assert_eq!(stored[0]["key_hash"].as_str().unwrap().len(), 64);

    let listed = api.get(&format!("/v1/workspaces/{ws}/api-keys"), &t).await;
    assert!(!listed.text.contains(&key) && !listed.text.contains("key_hash"));

    // Bearer and X-API-Key both work; the key acts as its workspace
    let me = api.get("/v1/me", &key).await;
    assert_eq!(me.body["workspace_id"], ws.to_string());
    assert_eq!(me.body["role"], "MANAGER");
    let r = api
        .client
        .get(format!("{}/v1/workspaces/{ws}/agents", api.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let agent = api
        .post(
            &format!("/v1/workspaces/{ws}/agents"),
            &key,
            json!({"name": "By key"}),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.text);
    assert!(api.rows("select last_used_at from api_keys").await[0]["last_used_at"].is_string());
    // a MANAGER key cannot manage keys, nor create workspaces
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            &key,
            json!({"name": "x"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = api.post("/v1/workspaces", &key, json!({"name": "x"})).await;
    assert_eq!(r.status, 403);

    // tampered, expired and revoked keys: 401 without a hint
    let mut tampered = key.clone();
    tampered.pop();
    tampered.push(if key.ends_with('0') { '1' } else { '0' });
    assert_eq!(api.get("/v1/me", &tampered).await.status, 401);
    let id = created.body["id"].as_str().unwrap();
    // Expired in the database directly (by another node, or an operator):
    // the node trusts the key it read for at most a second, and meanwhile
    // the database itself sees no rows for it (the policies re-check it).
    sqlx::query("update api_keys set expires_at = now() - interval '1 minute' where id = $1::uuid")
        .bind(id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let agents = api.get(&format!("/v1/workspaces/{ws}/agents"), &key).await;
    assert!(
        agents.status == 401 || (agents.status == 200 && agents.body["items"] == json!([])),
        "an expired key reads nothing: {} {}",
        agents.status,
        agents.text
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(api.get("/v1/me", &key).await.status, 401);
    sqlx::query("update api_keys set expires_at = null where id = $1::uuid")
        .bind(id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(api.get("/v1/me", &key).await.status, 200);
    // Revoked through the API: refused on the next request, no wait.
    assert_eq!(
        api.get(&format!("/v1/workspaces/{ws}/agents"), &key)
            .await
            .status,
        200
    );
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws}/api-keys/{id}"), &t)
            .await
            .status,
        204
    );
    let r = api.get("/v1/me", &key).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    assert!(api.rows("select revoked_at from api_keys").await[0]["revoked_at"].is_string());
}

#[tokio::test]
async fn members_are_managed_by_owners() {
    let api = Api::start().await;
    let (_, owner) = api.user("owner@example.com").await;
    let (bob_id, bob) = api.user("bob@example.com").await;
    let ws = api.workspace(&owner, "Acme").await;
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/members"),
            &owner,
            json!({"email": "bob@example.com", "role": "VIEWER"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let again = api
        .post(
            &format!("/v1/workspaces/{ws}/members"),
            &owner,
            json!({"email": "bob@example.com", "role": "VIEWER"}),
        )
        .await;
    assert_eq!(again.status, 409);
    let nobody = api
        .post(
            &format!("/v1/workspaces/{ws}/members"),
            &owner,
            json!({"email": "x@example.com", "role": "VIEWER"}),
        )
        .await;
    assert_eq!((nobody.status, nobody.code()), (422, "unprocessable"));
    let members = api.get(&format!("/v1/workspaces/{ws}/members"), &bob).await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 2);
    let r = api
        .patch(
            &format!("/v1/workspaces/{ws}/members/{bob_id}"),
            &owner,
            json!({"role": "MANAGER"}),
        )
        .await;
    assert_eq!(r.body["role"], "MANAGER");
    assert_eq!(
        api.get(&format!("/v1/workspaces/{ws}"), &bob).await.body["role"],
        "MANAGER"
    );
    // the last OWNER cannot leave or be demoted
    let owner_id = api
        .rows("select user_id from user_roles where role = 'OWNER'")
        .await[0]["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .patch(
            &format!("/v1/workspaces/{ws}/members/{owner_id}"),
            &owner,
            json!({"role": "VIEWER"}),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = api
        .delete(&format!("/v1/workspaces/{ws}/members/{bob_id}"), &owner)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        api.get(&format!("/v1/workspaces/{ws}"), &bob).await.status,
        404
    );
}

/// Rows the runtime writes, inserted here as the runtime does (bypassing
/// RLS), then read through the API with filters.
#[tokio::test]
async fn read_only_views_over_runtime_rows() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let agent = api.create(&t, ws, "agents", json!({"name": "A"})).await;
    let other = api.create(&t, ws, "agents", json!({"name": "B"})).await;
    let number = api
        .create(
            &t,
            ws,
            "phone-numbers",
            json!({"e164": "+15555550100", "agent_id": agent}),
        )
        .await;
    let pool = &api.db.pool;
    let session: uuid::Uuid = sqlx::query_scalar(
        "insert into agent_sessions (workspace_id, agent_id, channel, status, caller) values ($1, $2, 'phone', 'completed', '+15555550111') returning id",
    )
    .bind(ws).bind(agent).fetch_one(pool).await.unwrap();
    for (role, content) in [
        ("assistant", "Hello, Acme here."),
        ("user", "When do you open?"),
        ("assistant", "At nine."),
    ] {
        sqlx::query("insert into messages (workspace_id, session_id, role, content) values ($1, $2, $3, $4)")
            .bind(ws).bind(session).bind(role).bind(content).execute(pool).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let call: uuid::Uuid = sqlx::query_scalar(
        "insert into call_logs (workspace_id, agent_id, phone_number_id, session_id, direction, from_number, to_number, status, started_at, duration_ms)
         values ($1, $2, $3, $4, 'inbound', '+15555550111', '+15555550100', 'completed', '2026-01-10T10:00:00Z', 42000) returning id",
    )
    .bind(ws).bind(agent).bind(number).bind(session).fetch_one(pool).await.unwrap();
    sqlx::query(
        "insert into call_logs (workspace_id, agent_id, direction, status, started_at) values ($1, $2, 'outbound', 'failed', '2026-02-10T10:00:00Z')",
    )
    .bind(ws).bind(other).execute(pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("call.wav");
    std::fs::write(&wav, b"RIFF....WAVEfmt fake-audio-bytes").unwrap();
    let rec: uuid::Uuid = sqlx::query_scalar(
        "insert into call_recordings (workspace_id, call_log_id, storage_path, duration_ms, size_bytes) values ($1, $2, $3, 42000, 32) returning id",
    )
    .bind(ws).bind(call).bind(wav.to_str().unwrap()).fetch_one(pool).await.unwrap();
    sqlx::query("insert into usage_logs (workspace_id, call_log_id, kind, quantity) values ($1, $2, 'call_seconds', 42)")
        .bind(ws).bind(call).execute(pool).await.unwrap();
    sqlx::query("select increment_conversation_count($1)")
        .bind(ws)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into billing_invoices (workspace_id, amount, status) values ($1, 49.00, 'paid')",
    )
    .bind(ws)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("insert into workspace_subscriptions (workspace_id, plan_id) select $1, id from pricing_plans where is_default")
        .bind(ws).execute(pool).await.unwrap();

    let base = format!("/v1/workspaces/{ws}");
    let all = api.get(&format!("{base}/call-logs"), &t).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    for query in [
        format!("agent_id={agent}"),
        format!("phone_number_id={number}"),
        "status=completed".to_string(),
        "since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z".to_string(),
        "to_number=%2B15555550100".to_string(),
    ] {
        let r = api.get(&format!("{base}/call-logs?{query}"), &t).await;
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{query}: {}", r.text);
        assert_eq!(items[0]["id"], call.to_string());
    }
    let none = api.get(&format!("{base}/call-logs?status=busy"), &t).await;
    assert_eq!(none.body["items"], json!([]));
    let bad = api
        .get(&format!("{base}/call-logs?status=exploded"), &t)
        .await;
    assert_eq!((bad.status, bad.code()), (400, "validation_failed"));
    assert_eq!(bad.body["error"]["details"]["field"], "status");
    let one = api.get(&format!("{base}/call-logs/{call}"), &t).await;
    assert_eq!(one.body["duration_ms"], 42000);
    // runtime-written rows are not writable through the API
    let r = api.delete(&format!("{base}/call-logs/{call}"), &t).await;
    assert_eq!(r.status, 405);

    let s = api.get(&format!("{base}/sessions/{session}"), &t).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let contents: Vec<&str> = s.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["Hello, Acme here.", "When do you open?", "At nine."]
    );
    let noted = api
        .patch(
            &format!("{base}/sessions/{session}"),
            &t,
            json!({"internal_notes": "call back"}),
        )
        .await;
    assert_eq!(noted.body["internal_notes"], "call back");
    // PATCH answers with the row as GET shows it, its messages included.
    assert_eq!(noted.body["messages"], s.body["messages"]);
    let unchanged = api
        .patch(&format!("{base}/sessions/{session}"), &t, json!({}))
        .await;
    assert_eq!(unchanged.body["messages"], s.body["messages"]);
    let r = api
        .patch(
            &format!("{base}/sessions/{session}"),
            &t,
            json!({"status": "failed"}),
        )
        .await;
    assert_eq!(r.status, 400, "status is the runtime's");

    let recs = api
        .get(&format!("{base}/call-recordings?call_log_id={call}"), &t)
        .await;
    assert_eq!(recs.body["items"][0]["id"], rec.to_string());
    assert!(
        recs.body["items"][0].get("storage_path").is_none(),
        "server paths are not shown"
    );
    let audio = api
        .get(&format!("{base}/call-recordings/{rec}/audio"), &t)
        .await;
    assert_eq!(audio.status, 200);
    assert_eq!(audio.headers["content-type"], "audio/wav");
    assert_eq!(audio.text, "RIFF....WAVEfmt fake-audio-bytes");

    let usage = api.get(&format!("{base}/usage"), &t).await;
    assert_eq!(usage.body["items"][0]["conversations"], 1);
    let logs = api
        .get(&format!("{base}/usage-logs?kind=call_seconds"), &t)
        .await;
    assert_eq!(logs.body["items"][0]["quantity"], 42.0);
    let inv = api.get(&format!("{base}/invoices"), &t).await;
    assert_eq!(inv.body["items"][0]["amount"], 49.0);
    let subs = api.get(&format!("{base}/subscriptions"), &t).await;
    assert_eq!(subs.body["items"][0]["status"], "active");
    let models = api.get("/v1/llm-models", &t).await;
    assert!(models.body["items"].as_array().unwrap().len() >= 2);
    let plans = api.get("/v1/pricing-plans", &t).await;
    assert!(plans.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "Free"));
}

#[tokio::test]
async fn health_openapi_and_docs() {
    let api = Api::start().await;
    let r = api.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
    let doc = api
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/v1/auth/token",
        "/v1/workspaces/{workspace_id}/agents/{id}",
        "/v1/workspaces/{workspace_id}/phone-numbers",
        "/v1/workspaces/{workspace_id}/knowledge",
        "/v1/workspaces/{workspace_id}/call-logs",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    // WHIP: an SDP body, 201 with Location, its refusals, DELETE on the
    // session, and a widget's public key among the credentials.
    let whip = &paths["/v1/agents/{agent_id}/whip"]["post"];
    assert!(
        whip["requestBody"]["content"]["application/sdp"].is_object(),
        "{whip}"
    );
    assert!(whip["responses"]["201"]["content"]["application/sdp"].is_object());
    assert!(whip["responses"]["201"]["headers"]["Location"].is_object());
    for code in [
        "400", "401", "402", "403", "404", "406", "415", "422", "503",
    ] {
        assert!(whip["responses"][code].is_object(), "WHIP {code} missing");
    }
    assert!(whip["responses"]["503"]["headers"]["Retry-After"].is_object());
    let schemes: Vec<&str> = whip["security"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_object()?.keys().next().map(String::as_str))
        .collect();
    assert_eq!(schemes, ["bearer", "apiKey", "widgetKey"]);
    assert!(doc.body["components"]["securitySchemes"]["widgetKey"].is_object());
    let hang_up = &paths["/v1/agents/{agent_id}/whip/{session_id}"]["delete"];
    for code in ["200", "401", "403", "404"] {
        assert!(
            hang_up["responses"][code].is_object(),
            "WHIP DELETE {code} missing"
        );
    }
    // A widget's look needs no login.
    assert_eq!(
        paths["/v1/widgets/{public_key}"]["get"]["security"],
        serde_json::json!([])
    );
    let agent_schema = &doc.body["components"]["schemas"]["AgentsCreate"];
    assert_eq!(agent_schema["properties"]["temperature"]["maximum"], 2.0);
    let docs = api.call(reqwest::Method::GET, "/docs", None, None).await;
    assert_eq!(docs.status, 200);
    assert!(docs.text.contains("/openapi.json"));
    // unknown routes are JSON 404s
    let r = api
        .call(reqwest::Method::GET, "/v2/nothing", None, None)
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // readiness follows the database
    api.db.pool.close().await;
    let r = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 503);
}

/// A node still warming up (recognizer, knowledge) is not ready: `/readyz`
/// names what it waits for, and turns 200 once every stage is done.
#[tokio::test]
async fn readiness_waits_for_the_start_up_stages() {
    use switchboard::readiness::{Stage, WarmUp};
    let warm_up = std::sync::Arc::new(WarmUp::new(&[Stage::SpeechToText, Stage::Knowledge]));
    let api = Api::start_with(Options {
        warm_up: Some(warm_up.clone()),
        ..Options::default()
    })
    .await;
    let r = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["status"], "warming_up");
    assert_eq!(
        r.body["pending"],
        serde_json::json!(["speech_to_text", "knowledge"])
    );
    warm_up.finished(Stage::SpeechToText);
    let r = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["pending"].clone()),
        (503, serde_json::json!(["knowledge"]))
    );
    warm_up.finished(Stage::Knowledge);
    let r = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
    // /healthz only says the process answers.
    let r = api.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200);
}

/// Keyset pages (`?after=` the previous page's `next_after`) walk every row
/// exactly once in the list's order, ties of the order column included, and
/// stay right while rows are added at the top between pages.
#[tokio::test]
async fn keyset_pages_walk_every_row_once() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let pool = &api.db.pool;
    // 130 calls over 40 distinct start times: most share theirs with others.
    sqlx::query(
        "insert into call_logs (workspace_id, direction, status, started_at)
         select $1, 'inbound', 'completed', '2026-03-01T10:00:00Z'::timestamptz + (i % 40) * interval '1 minute'
           from generate_series(1, 130) i",
    )
    .bind(ws)
    .execute(pool)
    .await
    .unwrap();
    let base = format!("/v1/workspaces/{ws}/call-logs");
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut after: Option<String> = None;
    for page_no in 0..10 {
        let url = match &after {
            None => format!("{base}?limit=50"),
            Some(a) => format!("{base}?limit=50&after={a}"),
        };
        let page = api.get(&url, &t).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for item in page.body["items"].as_array().unwrap() {
            seen.push((
                item["started_at"].as_str().unwrap().to_string(),
                item["id"].as_str().unwrap().to_string(),
            ));
        }
        if page_no == 0 {
            // A newer call arriving between pages does not shift the walk.
            sqlx::query("insert into call_logs (workspace_id, direction, status, started_at) values ($1, 'inbound', 'completed', now())")
                .bind(ws).execute(pool).await.unwrap();
        }
        match page.body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 130, "every row once");
    let ids: std::collections::HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), 130, "no row twice");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, then id descending");

    let first = &seen[0].1;
    let both = api.get(&format!("{base}?after={first}&offset=5"), &t).await;
    assert_eq!(both.status, 400, "{}", both.text);
    let bad = api.get(&format!("{base}?after=not-an-id"), &t).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    // An id from another workspace (or none) starts no page.
    let stranger = api
        .get(&format!("{base}?after={}", uuid::Uuid::new_v4()), &t)
        .await;
    assert_eq!(stranger.status, 200);
    assert_eq!(stranger.body["items"], json!([]));
    assert_eq!(stranger.body["next_after"], Value::Null);
}
