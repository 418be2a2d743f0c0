//! Bad input and bad credentials: each gets its documented status and error
//! code and writes nothing. Login attempts are rate-limited. Secrets never
//! appear in any response body.

use crate::api_support;

use std::time::Duration;

use api_support::{Api, Options};
use reqwest::Method;
use serde_json::{json, Value};
use switchboard::api::ratelimit::Limit;
use switchboard::api::LoginLimits;

#[tokio::test]
async fn bad_bodies_get_documented_errors_and_write_nothing() {
    let api = Api::start_with(Options {
        env: vec![("SWITCHBOARD_API__MAX_BODY_BYTES".into(), "4096".into())],
        ..Default::default()
    })
    .await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let agent = api.create(&t, ws, "agents", json!({"name": "A"})).await;
    let base = format!("/v1/workspaces/{ws}");
    let agents = format!("{base}/agents");
    let numbers = format!("{base}/phone-numbers");

    // malformed JSON
    let r = api
        .raw(
            Method::POST,
            &agents,
            Some(&t),
            Some(("application/json", b"{\"name\": ".to_vec())),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "malformed_json"), "{}", r.text);
    // not an object
    let r = api
        .raw(
            Method::POST,
            &agents,
            Some(&t),
            Some(("application/json", b"[1,2]".to_vec())),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "validation_failed"));
    // wrong content type, and none at all
    let r = api
        .raw(
            Method::POST,
            &agents,
            Some(&t),
            Some(("text/plain", b"{\"name\":\"x\"}".to_vec())),
        )
        .await;
    assert_eq!((r.status, r.code()), (415, "unsupported_media_type"));
    let r = api.raw(Method::POST, &agents, Some(&t), None).await;
    assert_eq!(r.status, 415);
    // oversized body
    let big = json!({"name": "x", "instructions": "y".repeat(8000)});
    let r = api.post(&agents, &t, big).await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{}",
        r.text
    );

    // field-level validation: (path, body, field named in details)
    let trunks = format!("{base}/sip-trunks");
    let widgets = format!("{base}/web-widgets");
    let providers = format!("{base}/provider-configs");
    let knowledge = format!("{base}/knowledge");
    let cases: Vec<(&str, Value, &str)> = vec![
        (&agents, json!({"name": 5}), "name"),
        (&agents, json!({}), "name"),
        (&agents, json!({"name": "x", "status": "paused"}), "status"),
        (&agents, json!({"name": "x", "domain": "space"}), "domain"),
        (
            &agents,
            json!({"name": "x", "temperature": 2.5}),
            "temperature",
        ),
        (
            &agents,
            json!({"name": "x", "temperature": "hot"}),
            "temperature",
        ),
        (&agents, json!({"name": "x", "tts_speed": 0.1}), "tts_speed"),
        (
            &agents,
            json!({"name": "x", "silence_timeout_ms": 10}),
            "silence_timeout_ms",
        ),
        (
            &agents,
            json!({"name": "x", "max_tokens": 1.5}),
            "max_tokens",
        ),
        (
            &agents,
            json!({"name": "x", "interruptible": "yes"}),
            "interruptible",
        ),
        (
            &agents,
            json!({"name": "x", "transfer_to": "5551234"}),
            "transfer_to",
        ),
        (
            &agents,
            json!({"name": "x", "goals": "not a list"}),
            "goals",
        ),
        (
            &agents,
            json!({"name": "x", "persona_id": "not-a-uuid"}),
            "persona_id",
        ),
        (
            &agents,
            json!({"name": "x", "workspace_id": ws}),
            "workspace_id",
        ),
        (&agents, json!({"name": "x", "id": agent}), "id"),
        (
            &agents,
            json!({"name": "x", "no_such_field": 1}),
            "no_such_field",
        ),
        (&agents, json!({"name": null}), "name"),
        (&numbers, json!({"e164": "5555550100"}), "e164"),
        (&numbers, json!({"e164": "+1 555 555 0100"}), "e164"),
        (&numbers, json!({"e164": "+123"}), "e164"),
        (
            &trunks,
            json!({"name": "t", "inbound_cidrs": ["10.0.0.0/40"]}),
            "inbound_cidrs",
        ),
        (&trunks, json!({"name": "t", "codecs": ["MP3"]}), "codecs"),
        (&trunks, json!({"name": "t", "codecs": []}), "codecs"),
        (
            &trunks,
            json!({"name": "t", "outbound_host": "sip:x.com"}),
            "outbound_host",
        ),
        (
            &trunks,
            json!({"name": "t", "outbound_port": 70000}),
            "outbound_port",
        ),
        (
            &trunks,
            json!({"name": "t", "outbound_transport": "sctp"}),
            "outbound_transport",
        ),
        (
            &widgets,
            json!({"agent_id": agent, "primary_color": "red"}),
            "primary_color",
        ),
        (
            &providers,
            json!({"provider": "openai", "base_url": "ftp://x"}),
            "base_url",
        ),
        (&knowledge, json!({"name": "k", "type": "DOCX"}), "type"),
        (
            &knowledge,
            json!({"name": "k", "type": "FAQ", "faqs": [{"question": "q"}]}),
            "faqs[0].answer",
        ),
        (
            &knowledge,
            json!({"name": "k", "type": "URL", "url": "javascript:alert(1)"}),
            "url",
        ),
        (
            "/v1/auth/signup",
            json!({"email": "not-an-email", "password": "password-123"}),
            "email",
        ),
        (
            "/v1/auth/signup",
            json!({"email": "x@example.com", "password": "short"}),
            "password",
        ),
        (
            "/v1/workspaces",
            json!({"name": "x", "slug": "Bad Slug"}),
            "slug",
        ),
        // found by Schemathesis: a number near f64::MAX stored in jsonb
        // could not be read back (was a 500)
        (
            "/v1/workspaces",
            json!({"name": "x", "settings": {"n": [1, 1.7976931348623157e308]}}),
            "settings",
        ),
        (
            &agents,
            json!({"name": "x", "config": {"n": -1e308}}),
            "config",
        ),
        (
            &agents,
            json!({"name": "x", "config": {"s": "nul\u{0}"}}),
            "config",
        ),
    ];
    for (path, body, field) in &cases {
        let r = api.post(path, &t, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "validation_failed"),
            "{path} {body}: {}",
            r.text
        );
        assert_eq!(r.body["error"]["details"]["field"], *field, "{path} {body}");
    }
    let r = api
        .patch(
            &format!("{agents}/{agent}"),
            &t,
            json!({"status": "paused"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (400, Some("status"))
    );
    // bad ids and queries
    let r = api.get(&format!("{agents}/not-a-uuid"), &t).await;
    assert_eq!((r.status, r.code()), (400, "validation_failed"));
    let r = api.get(&format!("{agents}?limit=0"), &t).await;
    assert_eq!(r.body["error"]["details"]["field"], "limit");
    let r = api.get(&format!("{agents}?offset=-1"), &t).await;
    assert_eq!(r.status, 400);

    // duplicate number: 409 naming e164; a number for a missing agent: 422
    let first = api
        .post(&numbers, &t, json!({"e164": "+15555550100"}))
        .await;
    assert_eq!(first.status, 201);
    let dup = api
        .post(
            &numbers,
            &t,
            json!({"e164": "+15555550100", "label": "again"}),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (409, "conflict"), "{}", dup.text);
    assert_eq!(dup.body["error"]["details"]["field"], "e164");
    let r = api
        .post(
            &numbers,
            &t,
            json!({"e164": "+15555550101", "agent_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "unprocessable"));
    assert_eq!(r.body["error"]["details"]["field"], "agent_id");

    // nothing of the above was written
    assert_eq!(api.count("select 1 from agents").await, 1);
    assert_eq!(api.count("select 1 from phone_numbers").await, 1);
    assert_eq!(api.count("select 1 from sip_trunks").await, 0);
    assert_eq!(api.count("select 1 from knowledge_sources").await, 0);
    assert_eq!(api.count("select 1 from auth.users").await, 1);
    assert_eq!(api.count("select 1 from workspaces").await, 1);
    assert_eq!(
        api.rows("select status::text from agents").await[0]["status"],
        "draft"
    );
}

#[tokio::test]
async fn credentials_are_checked_without_hints() {
    let supabase_secret = "supabase-project-secret-for-tests";
    let api = Api::start_with(Options {
        env: vec![(
            "SWITCHBOARD_API__SUPABASE_JWT_SECRET".into(),
            supabase_secret.into(),
        )],
        ..Default::default()
    })
    .await;
    let (uid, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let path = format!("/v1/workspaces/{ws}/agents");
    let sign = |secret: &str, exp: i64, aud: &str| {
        let claims = json!({"sub": uid, "role": "authenticated", "aud": aud, "exp": exp, "email": "owner@example.com"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    // a Supabase-signed token is accepted like ours
    let r = api
        .get(&path, &sign(supabase_secret, now + 600, "authenticated"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let bad = [
        sign("some-other-secret", now + 600, "authenticated"),
        sign(supabase_secret, now - 600, "authenticated"),
        sign(supabase_secret, now + 600, "anon"),
        "not.a.jwt".to_string(),
        "sk_live_0000000000000000000000000000000000000000".to_string(),
        String::new(),
    ];
    let mut messages = Vec::new();
    for token in &bad {
        let r = api.get(&path, token).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{token}");
        messages.push(r.body["error"].clone());
    }
    let r = api.call(Method::GET, &path, None, None).await;
    assert_eq!(r.status, 401);
    messages.push(r.body["error"].clone());
    let r = api
        .client
        .get(format!("{}{path}", api.base))
        .header("authorization", format!("Basic {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "every 401 says the same: {messages:?}"
    );
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let api = Api::start_with(Options {
        limits: LoginLimits {
            per_email: Limit {
                max: 3,
                window: Duration::from_secs(60),
            },
            per_addr: Limit {
                max: 8,
                window: Duration::from_secs(60),
            },
        },
        ..Default::default()
    })
    .await;
    // sign-up has its own counter; the helper's login is 1 of the address's 8
    let (_, _) = api.user("victim@example.com").await;
    let login = |email: &'static str, pw: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/v1/auth/token",
                None,
                Some(json!({"email": email, "password": pw})),
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(
            login("victim@example.com", "wrong-password").await.status,
            401
        );
    }
    // the email is locked from this address, even with the right password
    let r = login("victim@example.com", "password-123").await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"));
    assert!(r.headers.contains_key("retry-after"));
    // ...but not from the victim's own address: the guesser cannot lock
    // the owner out
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .no_proxy()
        .build()
        .unwrap();
    let r = elsewhere
        .post(format!("{}/v1/auth/token", api.base))
        .json(&json!({"email": "victim@example.com", "password": "password-123"}))
        .send()
        .await
        .expect("login from another address");
    assert_eq!(r.status().as_u16(), 200, "the owner logs in from elsewhere");
    // other emails go on until the address limit
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(login("someone@example.com", "whatever-pass").await.status);
    }
    // 1 + 3 + 1 (the locked try) + 3 = 8 attempts from this address
    assert_eq!(statuses, vec![401, 401, 401, 429], "address limit of 8");
}

#[tokio::test]
async fn secrets_never_appear_in_responses() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let base = format!("/v1/workspaces/{ws}");
    let key = api.key(&t, ws, "OWNER").await;
    let secrets = [
        "trunk-inbound-pw-7731",
        "trunk-outbound-pw-9152",
        "sk-provider-key-4480",
    ];
    let trunk = api
        .create(
            &t,
            ws,
            "sip-trunks",
            json!({"name": "T", "inbound_password": secrets[0], "outbound_password": secrets[1]}),
        )
        .await;
    let provider = api
        .create(
            &t,
            ws,
            "provider-configs",
            json!({"provider": "openai", "api_key": secrets[2]}),
        )
        .await;
    api.patch(
        &format!("{base}/sip-trunks/{trunk}"),
        &t,
        json!({"inbound_password": secrets[0]}),
    )
    .await;
    // the stored forms are secrets too: ciphertexts, password and key hashes
    let mut hidden: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    for row in api
        .rows("select inbound_password, outbound_password from sip_trunks")
        .await
    {
        hidden.push(row["inbound_password"].as_str().unwrap().to_string());
        hidden.push(row["outbound_password"].as_str().unwrap().to_string());
    }
    hidden.push(
        api.rows("select api_key from workspace_llm_config").await[0]["api_key"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    hidden.push(
        api.rows("select encrypted_password from auth.users").await[0]["encrypted_password"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    for row in api.rows("select key_hash from api_keys").await {
        hidden.push(row["key_hash"].as_str().unwrap().to_string());
    }
    hidden.push("password-123".into());
    // everything readable, with both credentials
    let doc = api
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    for token in [&t, &key] {
        for path in doc["paths"].as_object().unwrap().keys() {
            if path.contains("{id}") || path.contains("{user_id}") || path.contains("{call_id}") {
                continue;
            }
            let p = path.replace("{workspace_id}", &ws.to_string());
            if doc["paths"][path].get("get").is_some() {
                api.get(&p, token).await;
            }
        }
        api.get(&format!("{base}/sip-trunks/{trunk}"), token).await;
        api.get(&format!("{base}/provider-configs/{provider}"), token)
            .await;
    }
    let bodies = api.bodies.lock().unwrap().clone();
    assert!(
        bodies.len() > 40,
        "the suite made {} requests",
        bodies.len()
    );
    for body in &bodies {
        for secret in &hidden {
            if body.contains(secret.as_str()) {
                panic!(
                    "a response contains a secret ({}…): {}",
                    &secret[..6.min(secret.len())],
                    &body[..200.min(body.len())]
                );
            }
        }
    }
    // the API key appears in exactly one response: its creation
    let with_key = bodies.iter().filter(|b| b.contains(&key)).count();
    assert_eq!(with_key, 1);
}
