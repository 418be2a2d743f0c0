//! Knowledge ingestion through the API: TEXT, FAQ, URL (served by a local
//! page server) and PDF sources become chunks with a full-text index; bad
//! documents fail only their own source with a clear error; search returns
//! the ranked chunks.

use crate::api_support;

use api_support::Api;
use axum::http::header;
use axum::routing::get;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

/// A one-page PDF whose page shows `text` in Helvetica, with a correct xref.
fn pdf_with_text(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

const PAGE: &str = r#"<!doctype html><html><head><title>Acme Dental</title>
<style>body { font-family: sans-serif }</style><script>var tracking = "do not index";</script></head>
<body><nav><a href="/">Home</a></nav>
<h1>Opening hours</h1><p>Acme Dental is open Monday to Friday from <b>8&nbsp;am</b> to 6 pm.</p>
<p>Emergency appointments are available on Saturday mornings &amp; holidays.</p></body></html>"#;

/// Serves test documents on 127.0.0.1; returns its base URL.
async fn page_server() -> String {
    let app = axum::Router::new()
        .route(
            "/hours.html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/notes.txt",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    "Parking is free behind the building.",
                )
            }),
        )
        .route(
            "/manual.pdf",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/pdf")],
                    pdf_with_text("The manual says to reboot the router twice."),
                )
            }),
        )
        .route(
            "/huge.txt",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    "word ".repeat(1_200_000),
                )
            }),
        )
        .route(
            "/image.png",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    vec![0x89u8, b'P', b'N', b'G'],
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn chunks(api: &Api, source: &str) -> Vec<(String, i32, bool)> {
    sqlx::query_as("select content, chunk_index, tsv is not null from knowledge_chunks where source_id = $1::uuid order by chunk_index")
        .bind(source)
        .fetch_all(&api.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn text_faq_url_and_pdf_sources_are_ingested() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let agent = api
        .create(&t, ws, "agents", json!({"name": "Receptionist"}))
        .await;
    let path = format!("/v1/workspaces/{ws}/knowledge");
    let pages = page_server().await;

    // TEXT: paragraphs of sentences become bounded chunks, nothing lost
    let paragraphs: Vec<String> = (0..8)
        .map(|p| (0..4).map(|s| format!("Paragraph {p} sentence {s} talks about topic number {} in some detail here.", p * 4 + s)).collect::<Vec<_>>().join(" "))
        .collect();
    let text = paragraphs.join("\n\n");
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "Handbook", "type": "TEXT", "agent_id": agent, "content": text}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["error"], Value::Null);
    let id = r.body["id"].as_str().unwrap().to_string();
    let got = chunks(&api, &id).await;
    assert_eq!(r.body["chunk_count"].as_u64().unwrap() as usize, got.len());
    assert!(got.len() >= 2);
    let words: usize = got.iter().map(|c| c.0.split_whitespace().count()).sum();
    assert_eq!(words, text.split_whitespace().count());
    for (content, _, has_tsv) in &got {
        let n = content.split_whitespace().count();
        assert!((80..=200).contains(&n), "{n} words");
        assert!(content.ends_with('.') && content.starts_with("Paragraph"));
        assert!(has_tsv);
    }
    let agent_ids: Vec<Option<Uuid>> =
        sqlx::query_scalar("select agent_id from knowledge_chunks where source_id = $1::uuid")
            .bind(&id)
            .fetch_all(&api.db.pool)
            .await
            .unwrap();
    assert!(agent_ids.iter().all(|a| *a == Some(agent)));

    // FAQ: one chunk per pair, exactly "Q: …\nA: …"
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "FAQ", "type": "FAQ", "agent_id": agent, "faqs": [
            {"question": "Do you take walk-ins?", "answer": "Yes, until 4 pm on weekdays."},
            {"question": "Is there parking?", "answer": "Free parking is behind the building."}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (r.body["status"].as_str(), r.body["chunk_count"].as_i64()),
        (Some("ready"), Some(2))
    );
    let faq_id = r.body["id"].as_str().unwrap().to_string();
    let got = chunks(&api, &faq_id).await;
    assert_eq!(
        got[0].0,
        "Q: Do you take walk-ins?\nA: Yes, until 4 pm on weekdays."
    );
    assert_eq!(
        got[1].0,
        "Q: Is there parking?\nA: Free parking is behind the building."
    );

    // URL: HTML to text without markup, scripts or styles
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "Site", "type": "URL", "url": format!("{pages}/hours.html")}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "ready", "{}", r.text);
    let url_id = r.body["id"].as_str().unwrap().to_string();
    let got = chunks(&api, &url_id).await;
    let all: String = got
        .iter()
        .map(|c| c.0.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains("Acme Dental is open Monday to Friday from 8 am to 6 pm."),
        "{all}"
    );
    assert!(all.contains("Saturday mornings & holidays"), "{all}");
    assert!(
        !all.contains('<') && !all.contains("tracking") && !all.contains("font-family"),
        "{all}"
    );
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "Notes", "type": "URL", "url": format!("{pages}/notes.txt")}),
        )
        .await;
    assert_eq!(r.body["status"], "ready");
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "Manual", "type": "URL", "url": format!("{pages}/manual.pdf")}),
        )
        .await;
    assert_eq!(r.body["status"], "ready", "{}", r.text);
    assert!(
        r.body["content"]
            .as_str()
            .unwrap()
            .contains("reboot the router twice"),
        "{}",
        r.text
    );

    // PDF upload
    let pdf = base64::engine::general_purpose::STANDARD
        .encode(pdf_with_text("Our clinic opens at nine in the morning."));
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "Leaflet", "type": "PDF", "content_base64": pdf}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "ready", "{}", r.text);
    let pdf_id = r.body["id"].as_str().unwrap().to_string();
    let got = chunks(&api, &pdf_id).await;
    assert!(
        got[0]
            .0
            .contains("Our clinic opens at nine in the morning."),
        "{:?}",
        got
    );

    // list with filters, chunks view, delete cascades to chunks
    let r = api.get(&format!("{path}?type=FAQ"), &t).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = api
        .get(&format!("{path}?agent_id={agent}&status=ready"), &t)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = api.get(&format!("{path}/{faq_id}/chunks"), &t).await;
    assert_eq!(
        r.body["items"][1]["content"],
        "Q: Is there parking?\nA: Free parking is behind the building."
    );
    assert_eq!(r.body["items"][1]["has_embedding"], true);
    let dims: Vec<Option<i32>> =
        sqlx::query_scalar("select array_length(embedding, 1) from knowledge_chunks")
            .fetch_all(&api.db.pool)
            .await
            .unwrap();
    // all-mpnet-base-v2-q8 vectors (the default embedder).
    assert!(dims.iter().all(|d| *d == Some(768)), "{dims:?}");
    assert_eq!(
        api.delete(&format!("{path}/{pdf_id}"), &t).await.status,
        204
    );
    assert!(chunks(&api, &pdf_id).await.is_empty());
}

#[tokio::test]
async fn bad_documents_fail_only_their_source() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let path = format!("/v1/workspaces/{ws}/knowledge");
    let pages = page_server().await;
    let good = api
        .post(
            &path,
            &t,
            json!({"name": "Good", "type": "TEXT", "content": "We open at nine."}),
        )
        .await;
    assert_eq!(good.body["status"], "ready");

    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut truncated = pdf_with_text("Half a document.");
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "Corrupt", "type": "PDF", "content_base64": b64(b"%PDF-1.4\nthis is not a pdf at all")}),
            "corrupt",
        ),
        (
            json!({"name": "Truncated", "type": "PDF", "content_base64": b64(&truncated)}),
            "PDF",
        ),
        (
            json!({"name": "Not PDF", "type": "PDF", "content_base64": b64(b"hello")}),
            "not a PDF",
        ),
        (
            json!({"name": "Missing", "type": "URL", "url": format!("{pages}/nothing-here")}),
            "HTTP 404",
        ),
        (
            json!({"name": "Huge", "type": "URL", "url": format!("{pages}/huge.txt")}),
            "larger than",
        ),
        (
            json!({"name": "Image", "type": "URL", "url": format!("{pages}/image.png")}),
            "unsupported content type",
        ),
        (
            json!({"name": "Closed", "type": "URL", "url": "http://127.0.0.1:9/"}),
            "could not connect",
        ),
    ];
    for (body, reason) in &cases {
        let r = api.post(&path, &t, body.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["status"], "failed", "{body}: {}", r.text);
        let error = r.body["error"].as_str().unwrap();
        assert!(
            error.contains(reason),
            "{body}: error {error:?} should mention {reason:?}"
        );
        assert_eq!(r.body["chunk_count"], 0);
    }
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "b64", "type": "PDF", "content_base64": "%%%"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "validation_failed"));
    // the good source and its chunk are untouched; failed ones have none
    assert_eq!(api.count("select 1 from knowledge_chunks").await, 1);
    assert_eq!(
        api.count("select 1 from knowledge_sources where status = 'ready'")
            .await,
        1
    );
    assert_eq!(
        api.count("select 1 from knowledge_sources where status = 'failed'")
            .await,
        cases.len() as i64
    );
}

/// A second API server on the test's database with `state` (its own URL
/// policy); returns its base URL.
async fn second_server(state: switchboard::api::ApiState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(switchboard::api::serve(
        listener,
        state,
        std::future::pending(),
    ));
    base
}

#[tokio::test]
async fn private_addresses_are_refused_by_default() {
    use switchboard::api::ApiState;
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let pages = page_server().await;
    // a second server on the same database without allow_private_urls
    let base = second_server(ApiState::new(api.db.pool.clone(), api.config.clone()).unwrap()).await;
    let r = api
        .client
        .post(format!("{base}/v1/workspaces/{ws}/knowledge"))
        .bearer_auth(&t)
        .json(&json!({"name": "Internal", "type": "URL", "url": format!("{pages}/notes.txt")}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "failed");
    assert!(
        body["error"].as_str().unwrap().contains("internal address"),
        "{body}"
    );
}

/// A page server on 127.0.0.2 (the one address the node's configuration
/// allows, `[outbound] allow`, standing for a public site) whose pages redirect to the node's
/// own network: by IP literal, by a name that resolves to loopback, and
/// through the IPv4-mapped form. The secret page on 127.0.0.1 must never
/// be read, and each refusal says why.
#[tokio::test]
async fn redirects_and_names_cannot_reach_internal_addresses() {
    use axum::response::Redirect;
    use switchboard::api::ApiState;
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let secret = page_server().await; // on 127.0.0.1
    let secret_port = secret.rsplit(':').next().unwrap().to_string();
    let to_literal = format!("{secret}/notes.txt");
    let to_name = format!("http://localhost:{secret_port}/notes.txt");
    let to_mapped = format!("http://[::ffff:127.0.0.1]:{secret_port}/notes.txt");
    let app = axum::Router::new()
        .route(
            "/ok.txt",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "We open at nine.") }),
        )
        .route(
            "/literal",
            get(move || async move { Redirect::temporary(&to_literal) }),
        )
        .route(
            "/name",
            get(move || async move { Redirect::temporary(&to_name) }),
        )
        .route(
            "/mapped",
            get(move || async move { Redirect::temporary(&to_mapped) }),
        )
        .route("/loop", get(|| async { Redirect::temporary("/loop") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let public = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = (*api.config).clone();
    config.outbound.allow = vec!["127.0.0.2/32".into()];
    let state = ApiState::new(api.db.pool.clone(), std::sync::Arc::new(config)).unwrap();
    let base = second_server(state).await;
    let ingest = |url: String| {
        let (client, base, t) = (api.client.clone(), base.clone(), t.clone());
        async move {
            let r = client
                .post(format!("{base}/v1/workspaces/{ws}/knowledge"))
                .bearer_auth(&t)
                .json(&json!({"name": "Site", "type": "URL", "url": url}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    // The allowed server itself is fetched.
    let ok = ingest(format!("{public}/ok.txt")).await;
    assert_eq!(ok["status"], "ready", "{ok}");
    for (case, url, says) in [
        (
            "redirect to an IP literal",
            format!("{public}/literal"),
            "internal address",
        ),
        (
            "redirect to a name",
            format!("{public}/name"),
            "internal address",
        ),
        (
            "redirect to a mapped address",
            format!("{public}/mapped"),
            "internal address",
        ),
        (
            "a name, directly",
            format!("http://localhost:{secret_port}/notes.txt"),
            "internal address",
        ),
        (
            "a mapped address, directly",
            format!("http://[::ffff:7f00:1]:{secret_port}/notes.txt"),
            "internal address",
        ),
        ("endless redirects", format!("{public}/loop"), "redirects"),
    ] {
        let body = ingest(url).await;
        println!("{case}: {}", body["error"]);
        assert_eq!(body["status"], "failed", "{case}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(says),
            "{case}: {body}"
        );
    }
    let leaked: i64 = sqlx::query_scalar(
        "select count(*) from knowledge_chunks where content like '%Parking is free%'",
    )
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "the internal page was stored");
}

#[tokio::test]
async fn search_ranks_the_agents_chunks() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let agent = api.create(&t, ws, "agents", json!({"name": "A"})).await;
    let other = api.create(&t, ws, "agents", json!({"name": "B"})).await;
    let path = format!("/v1/workspaces/{ws}/knowledge");
    api.post(
        &path,
        &t,
        json!({"name": "FAQ", "type": "FAQ", "agent_id": agent, "faqs": [
        {"question": "When do you open?", "answer": "We open at nine every weekday."},
        {"question": "Is there parking?", "answer": "Parking is free behind the building."}]}),
    )
    .await;
    api.post(&path, &t, json!({"name": "Other agent", "type": "TEXT", "agent_id": other, "content": "Parking costs ten dollars per hour downtown."})).await;
    api.post(&path, &t, json!({"name": "Workspace-wide", "type": "TEXT", "content": "Our phone line for parking permits is open until five."})).await;

    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/agents/{agent}/knowledge/search"),
            &t,
            json!({"query": "where can I park", "limit": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let items = r.body["items"].as_array().unwrap();
    let contents: Vec<&str> = items
        .iter()
        .map(|i| i["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents.first().copied(),
        Some("Q: Is there parking?\nA: Parking is free behind the building."),
        "{contents:?}"
    );
    assert!(
        !contents.iter().any(|c| c.contains("ten dollars")),
        "another agent's chunk leaked: {contents:?}"
    );
    assert!(
        contents.iter().any(|c| c.contains("parking permits")),
        "workspace-wide knowledge applies: {contents:?}"
    );
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/agents/{agent}/knowledge/search"),
            &t,
            json!({"query": ""}),
        )
        .await;
    assert_eq!(r.status, 400);
}

/// Text with NUL and other control characters (which PostgreSQL refuses)
/// is stored without them and the source is ready, never stuck in
/// `processing`; a list page leaves the sources' whole text out unless
/// `?include=content` asks for it.
#[tokio::test]
async fn control_characters_are_stripped_and_lists_leave_long_text_out() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let path = format!("/v1/workspaces/{ws}/knowledge");
    let r = api
        .post(
            &path,
            &t,
            json!({"name": "Nul", "type": "TEXT", "content": "We open\u{0000} at nine.\u{0007}\r\nParking is free."}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "ready", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let stored = chunks(&api, &id).await;
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0]
            .0
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{:?}",
        stored[0].0
    );
    assert!(stored[0].0.contains("at nine"), "{:?}", stored[0].0);
    let faq = api
        .post(
            &path,
            &t,
            json!({"name": "Faq", "type": "FAQ", "faqs": [{"question": "Hours?\u{0000}", "answer": "Nine\u{0000} to five."}]}),
        )
        .await;
    assert_eq!(faq.body["status"], "ready", "{}", faq.text);

    let list = api.get(&path, &t).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|i| i.get("content").is_none()),
        "{}",
        list.text
    );
    assert!(items.iter().all(|i| i["chunk_count"] == 1), "{}", list.text);
    let full = api.get(&format!("{path}?include=content"), &t).await;
    let items = full.body["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["content"].as_str().is_some_and(|c| c.contains("at nine"))),
        "{}",
        full.text
    );
    // One source alone still has its text.
    let one = api.get(&format!("{path}/{id}"), &t).await;
    assert!(one.body["content"]
        .as_str()
        .is_some_and(|c| c.contains("Parking")));
}
