//! The networked providers against mock HTTP servers on 127.0.0.1:0 that
//! speak the real wire formats: OpenAI-style SSE chat completions, Anthropic
//! Messages SSE, `/v1/audio/speech`, `/v1/audio/transcriptions` (the mock
//! runs real whisper on the uploaded WAV), ElevenLabs and Piper. Includes a
//! provider that errors, ones that hang (first-token timeout), and a check
//! that dropping a stream closes it on the server side.

use crate::providers_support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use providers_support::{loopback_client, speech_16k, whisper, words};
use switchboard::agent_runtime::llm::{
    AnthropicMessages, ChatMessage, LanguageModel, LlmDelta, LlmRequest, OpenAiChat, ProviderError,
};
use switchboard::agent_runtime::llm_http::HttpLlmSettings;
use switchboard::agent_runtime::provider_http::CallLimits;
use switchboard::agent_runtime::retrieval::RetrievedChunk;
use switchboard::agent_runtime::stt::{OpenAiStt, SpeechToText, WhisperStt};
use switchboard::agent_runtime::tts::{ElevenLabsTts, OpenAiTts, PiperHttpTts, TextToSpeech};

#[derive(Clone)]
struct Mock {
    /// Request bodies and headers seen, for assertions.
    seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    /// Signalled when a server-side response stream is dropped.
    closed: mpsc::Sender<&'static str>,
    stt: Option<Arc<WhisperStt>>,
}

/// Signals on drop: the HTTP server dropped the body (client went away).
struct DropSignal(mpsc::Sender<&'static str>, &'static str);
impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send(self.1);
    }
}

fn sse(
    events: Vec<String>,
    delay: Duration,
    then_hang: bool,
    guard: Option<DropSignal>,
) -> Response {
    let stream = futures::stream::unfold(
        (events.into_iter(), guard),
        move |(mut it, guard)| async move {
            match it.next() {
                Some(ev) => {
                    tokio::time::sleep(delay).await;
                    Some((Ok::<_, Infallible>(Bytes::from(ev)), (it, guard)))
                }
                None if then_hang => {
                    futures::future::pending::<()>().await;
                    None
                }
                None => None,
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn openai_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({ "choices": [{ "index": 0, "delta": { "content": text } }] })
    )
}

async fn chat(
    State(m): State<Mock>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    m.seen.lock().unwrap().push((headers, v));
    match mode.as_str() {
        "ok" => {
            let mut evs: Vec<String> = [
                "We",
                " open",
                " at 9",
                ".30 a.m. on",
                " Saturdays.",
                " Anything",
                " else?",
            ]
            .iter()
            .map(|t| openai_chunk(t))
            .collect();
            evs.push(format!(
                "data: {}\n\n",
                json!({ "choices": [], "usage": { "prompt_tokens": 123, "completion_tokens": 9 } })
            ));
            evs.push("data: [DONE]\n\n".into());
            sse(evs, Duration::from_millis(5), false, None)
        }
        "tool" => {
            let call = json!({ "choices": [{ "delta": { "tool_calls": [{ "index": 0, "id": "c1", "type": "function",
                "function": { "name": "transfer_call", "arguments": "" } }] } }] });
            let evs = vec![
                openai_chunk("One moment [TRANS"),
                openai_chunk("FER] please."),
                format!("data: {call}\n\n"),
                "data: [DONE]\n\n".into(),
            ];
            sse(evs, Duration::ZERO, false, None)
        }
        "error" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":{"message":"model overloaded"}}"#,
        )
            .into_response(),
        "hang-headers" => {
            let _guard = DropSignal(m.closed.clone(), "hang-headers");
            futures::future::pending::<()>().await;
            unreachable!()
        }
        "hang-body" => sse(
            vec![": keep-alive\n\n".into()],
            Duration::ZERO,
            true,
            Some(DropSignal(m.closed.clone(), "hang-body")),
        ),
        "endless" => {
            let evs = (0..10_000)
                .map(|i| openai_chunk(&format!(" word{i}")))
                .collect();
            sse(
                evs,
                Duration::from_millis(20),
                false,
                Some(DropSignal(m.closed.clone(), "endless")),
            )
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn anthropic(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    m.seen.lock().unwrap().push((headers, v));
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let evs = vec![
        ev(
            "message_start",
            json!({ "type": "message_start", "message": { "usage": { "input_tokens": 77 } } }),
        ),
        ev(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        ev("ping", json!({ "type": "ping" })),
        ev(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Dr. Lee is in" } }),
        ),
        ev(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": " today. Call back soon." } }),
        ),
        ev(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use", "id": "t", "name": "transfer_call", "input": {} } }),
        ),
        ev(
            "message_delta",
            json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 11 } }),
        ),
        ev("message_stop", json!({ "type": "message_stop" })),
    ];
    sse(evs, Duration::from_millis(2), false, None)
}

fn sine(rate: u32, ms: u32) -> Vec<i16> {
    (0..rate * ms / 1000)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16)
        .collect()
}

fn pcm_body(pcm: Vec<i16>, content_type: &str) -> Response {
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    // Odd-sized pieces: samples split across body chunks.
    let pieces: Vec<Result<Bytes, Infallible>> = bytes
        .chunks(1001)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}

async fn speech(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    m.seen.lock().unwrap().push((headers, v.clone()));
    if v["input"] == "fail" {
        return (StatusCode::BAD_REQUEST, "bad input").into_response();
    }
    pcm_body(sine(24_000, 500), "application/octet-stream")
}

async fn elevenlabs(
    State(m): State<Mock>,
    Path(voice): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    v["voice_in_path"] = json!(voice);
    v["output_format"] = json!(q.get("output_format"));
    m.seen.lock().unwrap().push((headers, v));
    pcm_body(sine(16_000, 300), "audio/pcm")
}

async fn piper(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    m.seen.lock().unwrap().push((headers, v.clone()));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.wav");
    let text = v["text"].as_str().unwrap_or("").to_string();
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&out)
        .arg(&text)
        .status()
        .unwrap();
    assert!(status.success());
    let wav = std::fs::read(out).unwrap();
    Response::builder()
        .header("content-type", "audio/wav")
        .body(Body::from(wav))
        .unwrap()
}

/// Minimal multipart reading: the `file` part's bytes and the text fields.
async fn transcriptions(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(boundary) = ct.split("boundary=").nth(1).map(|b| format!("--{b}")) else {
        return (StatusCode::BAD_REQUEST, "no boundary").into_response();
    };
    let mut fields = serde_json::Map::new();
    let mut wav = Vec::new();
    let raw = body.to_vec();
    let mut parts = Vec::new();
    let mut at = 0;
    let b = boundary.as_bytes();
    while let Some(p) = raw[at..].windows(b.len()).position(|w| w == b) {
        parts.push(at + p);
        at += p + b.len();
    }
    for w in parts.windows(2) {
        let part = &raw[w[0] + b.len()..w[1]];
        let Some(split) = part.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..part.len() - 2];
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("")
            .to_string();
        if name == "file" {
            wav = content.to_vec();
        } else {
            fields.insert(name, json!(String::from_utf8_lossy(content)));
        }
    }
    m.seen
        .lock()
        .unwrap()
        .push((headers, Value::Object(fields)));
    let (pcm, rate) = {
        let mut r = hound::WavReader::new(std::io::Cursor::new(wav)).expect("valid WAV upload");
        (
            r.samples::<i16>().map(|s| s.unwrap()).collect::<Vec<_>>(),
            r.spec().sample_rate,
        )
    };
    assert_eq!(rate, 16_000);
    let text = m
        .stt
        .as_ref()
        .unwrap()
        .transcribe(&pcm, &switchboard::agent_runtime::stt::SttHints::default())
        .await
        .unwrap()
        .text;
    axum::Json(json!({ "text": format!("  {text}  ") })).into_response()
}

async fn start(stt: Option<Arc<WhisperStt>>) -> (String, Mock, mpsc::Receiver<&'static str>) {
    let (tx, rx) = mpsc::channel(16);
    let mock = Mock {
        seen: Arc::default(),
        closed: tx,
        stt,
    };
    let app = Router::new()
        .route("/{mode}/v1/chat/completions", post(chat))
        .route("/anthropic/v1/messages", post(anthropic))
        .route("/v1/audio/speech", post(speech))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/text-to-speech/{voice}/stream", post(elevenlabs))
        .route("/", post(piper))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), mock, rx)
}

fn settings(base: &str, mode: &str, timeout_ms: u64) -> HttpLlmSettings {
    HttpLlmSettings {
        base_url: format!("{base}/{mode}/v1"),
        api_key: "sk-test".into(),
        model: "test-model".into(),
        limits: CallLimits {
            first_byte: Duration::from_millis(timeout_ms),
            stall: CallLimits::LLM_STALL,
            total: Duration::from_secs(60),
        },
        context_window: 2048,
    }
}

fn request(system: &str) -> LlmRequest {
    let mut messages: Vec<ChatMessage> = Vec::new();
    for i in 0..400 {
        messages.push(ChatMessage::user(&format!(
            "old question number {i} about something else entirely"
        )));
        messages.push(ChatMessage::assistant(&format!(
            "old answer number {i} with several words in it"
        )));
    }
    messages.push(ChatMessage::user("What time do you open on Saturday?"));
    LlmRequest {
        system: system.into(),
        messages,
        passages: vec![RetrievedChunk {
            chunk_id: uuid::Uuid::new_v4(),
            source_id: uuid::Uuid::new_v4(),
            agent_id: None,
            chunk_index: 0,
            content: "Q: Saturday hours?\nA: 9:30 a.m. to 4 p.m.".into(),
            score: 0.9,
            text_score: 0.9,
            vector_score: None,
        }],
        temperature: 0.3,
        max_tokens: 120,
        fallback_message: "Sorry.".into(),
    }
}

async fn collect(
    stream: switchboard::agent_runtime::llm::LlmStream,
) -> Vec<Result<LlmDelta, ProviderError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
        .await
        .expect("stream ended")
}

fn text_of(deltas: &[Result<LlmDelta, ProviderError>]) -> String {
    deltas
        .iter()
        .filter_map(|d| match d {
            Ok(LlmDelta::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn openai_chat_streams_tokens_then_usage_with_a_bounded_prompt() {
    let (base, mock, _) = start(None).await;
    let llm = OpenAiChat::new(settings(&base, "ok", 2000), loopback_client());
    let deltas = collect(llm.stream(request("Be brief.")).await.unwrap()).await;
    assert_eq!(
        text_of(&deltas),
        "We open at 9.30 a.m. on Saturdays. Anything else?"
    );
    assert!(
        deltas
            .iter()
            .filter(|d| matches!(d, Ok(LlmDelta::Text(_))))
            .count()
            >= 5,
        "token by token"
    );
    assert_eq!(
        deltas.last().unwrap().as_ref().unwrap(),
        &LlmDelta::Usage {
            tokens_in: 123,
            tokens_out: 9
        }
    );
    let seen = mock.seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert_eq!(headers["authorization"], "Bearer sk-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "test-model");
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert!(
        msgs[0]["content"]
            .as_str()
            .unwrap()
            .contains("9:30 a.m. to 4 p.m."),
        "passages in the prompt"
    );
    assert_eq!(
        msgs.last().unwrap()["content"],
        "What time do you open on Saturday?"
    );
    assert!(
        msgs.len() < 400,
        "conversation trimmed to the context window ({} messages)",
        msgs.len()
    );
    assert_eq!(msgs[1]["role"], "user");
    assert!(
        body.get("tools").is_none(),
        "no transfer tool unless the prompt offers it"
    );
}

#[tokio::test]
async fn transfer_by_tool_call_or_marker_is_a_distinct_delta() {
    let (base, mock, _) = start(None).await;
    let llm = OpenAiChat::new(settings(&base, "tool", 2000), loopback_client());
    let deltas = collect(
        llm.stream(request("If asked, call the transfer_call tool."))
            .await
            .unwrap(),
    )
    .await;
    let transfers = deltas
        .iter()
        .filter(|d| matches!(d, Ok(LlmDelta::Transfer)))
        .count();
    assert_eq!(
        transfers, 2,
        "marker split over two tokens + tool call: {deltas:?}"
    );
    assert_eq!(text_of(&deltas), "One moment  please.");
    assert_eq!(
        mock.seen.lock().unwrap()[0].1["tools"][0]["function"]["name"],
        "transfer_call"
    );
}

#[tokio::test]
async fn anthropic_messages_stream() {
    let (base, mock, _) = start(None).await;
    let llm = AnthropicMessages::new(settings(&base, "anthropic", 2000), loopback_client());
    let deltas = collect(
        llm.stream(request("Use transfer_call when asked."))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text_of(&deltas), "Dr. Lee is in today. Call back soon.");
    assert!(deltas.iter().any(|d| matches!(d, Ok(LlmDelta::Transfer))));
    assert_eq!(
        deltas.last().unwrap().as_ref().unwrap(),
        &LlmDelta::Usage {
            tokens_in: 77,
            tokens_out: 11
        }
    );
    let seen = mock.seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert_eq!(headers["x-api-key"], "sk-test");
    assert!(headers.contains_key("anthropic-version"));
    assert!(body["system"].as_str().unwrap().contains("Saturday hours"));
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["tools"][0]["name"], "transfer_call");
}

#[tokio::test]
async fn provider_error_is_reported_not_hung() {
    let (base, _, _) = start(None).await;
    let llm = OpenAiChat::new(settings(&base, "error", 2000), loopback_client());
    match llm.stream(request("x")).await {
        Err(ProviderError::Status { status, body }) => {
            assert_eq!(status, 500);
            assert!(body.contains("overloaded"));
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a 500 must be an error"),
    }
    let nobody = OpenAiChat::new(
        HttpLlmSettings {
            base_url: "http://127.0.0.1:9/v1".into(),
            ..settings(&base, "x", 2000)
        },
        loopback_client(),
    );
    assert!(matches!(
        nobody.stream(request("x")).await,
        Err(ProviderError::Network(_))
    ));
}

#[tokio::test]
async fn hanging_provider_times_out_at_the_first_token_deadline() {
    let (base, _, mut closed) = start(None).await;
    for mode in ["hang-headers", "hang-body"] {
        let llm = OpenAiChat::new(settings(&base, mode, 400), loopback_client());
        let t0 = Instant::now();
        let result: Result<(), ProviderError> = match llm.stream(request("x")).await {
            Err(e) => Err(e),
            Ok(s) => match collect(s).await.into_iter().next() {
                Some(Err(e)) => Err(e),
                other => panic!("{mode}: expected a timeout, got {other:?}"),
            },
        };
        let took = t0.elapsed();
        assert!(
            matches!(result, Err(ProviderError::Timeout(_))),
            "{mode}: {result:?}"
        );
        assert!(
            took >= Duration::from_millis(380) && took < Duration::from_millis(1500),
            "{mode}: {took:?}"
        );
        // Giving up also closes the request on the server side.
        let which = tokio::time::timeout(Duration::from_secs(3), closed.recv())
            .await
            .expect("server saw the close");
        assert_eq!(which, Some(mode));
    }
}

#[tokio::test]
async fn dropping_the_stream_closes_it_on_the_server() {
    let (base, _, mut closed) = start(None).await;
    let llm = OpenAiChat::new(settings(&base, "endless", 2000), loopback_client());
    let mut stream = llm.stream(request("x")).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(stream.next().await, Some(Ok(LlmDelta::Text(_)))));
    }
    assert!(closed.try_recv().is_err(), "still streaming");
    let t0 = Instant::now();
    drop(stream);
    let which = tokio::time::timeout(Duration::from_secs(2), closed.recv())
        .await
        .expect("server stream not closed");
    assert_eq!(which, Some("endless"));
    println!("server saw the close {:?} after the drop", t0.elapsed());
}

async fn audio_of(stream: switchboard::agent_runtime::tts::AudioStream) -> (Vec<i16>, u32, usize) {
    let chunks: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
        .await
        .unwrap();
    let mut pcm = Vec::new();
    let mut rate = 0;
    for c in &chunks {
        let c = c.as_ref().expect("audio chunk");
        rate = c.sample_rate;
        pcm.extend_from_slice(&c.pcm);
    }
    (pcm, rate, chunks.len())
}

#[tokio::test]
async fn openai_elevenlabs_and_piper_tts_stream_pcm_with_voice_and_speed() {
    let (base, mock, _) = start(None).await;
    let openai = OpenAiTts::new(loopback_client(), &format!("{base}/v1"), "sk-tts", "tts-1");
    let (pcm, rate, chunks) = audio_of(
        openai
            .synthesize("Hello there.", "nova", 1.25)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((rate, pcm.len()), (24_000, 12_000));
    assert_eq!(
        pcm,
        sine(24_000, 500),
        "samples intact across odd body pieces"
    );
    assert!(chunks > 5, "streamed in pieces");
    assert!(matches!(
        openai.synthesize("fail", "nova", 1.0).await,
        Err(ProviderError::Status { status: 400, .. })
    ));

    let eleven = ElevenLabsTts::new(loopback_client(), &base, "xi-key", "eleven_flash_v2_5");
    let (pcm, rate, _) = audio_of(
        eleven
            .synthesize("Hello there.", "voice123", 3.0)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((rate, pcm.len()), (16_000, 4_800));
    assert!(
        eleven.synthesize("Hello", "../../etc", 1.0).await.is_err(),
        "voice id is a path segment"
    );

    let piper = PiperHttpTts::new(loopback_client(), &base);
    let (pcm, rate, _) = audio_of(
        piper
            .synthesize("Good morning.", "en_US-joe-medium", 2.0)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rate, 22_050);
    assert!(pcm.len() > 22_050 / 4);

    let seen = mock.seen.lock().unwrap();
    let (h, b) = &seen[0];
    assert_eq!(h["authorization"], "Bearer sk-tts");
    assert_eq!(
        (
            b["voice"].as_str(),
            b["speed"].as_f64(),
            b["response_format"].as_str()
        ),
        (Some("nova"), Some(1.25), Some("pcm"))
    );
    let (h, b) = &seen[2];
    assert_eq!(h["xi-api-key"], "xi-key");
    assert_eq!(b["voice_in_path"], "voice123");
    assert_eq!(b["output_format"], "pcm_16000");
    let speed = b["voice_settings"]["speed"].as_f64().unwrap();
    assert!(
        (speed - 1.2).abs() < 1e-6,
        "clamped to ElevenLabs' range: {speed}"
    );
    let (_, b) = &seen[3];
    assert_eq!(b["voice"], "en_US-joe-medium");
    assert_eq!(b["length_scale"].as_f64(), Some(0.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stt_uploads_a_wav_the_server_can_transcribe() {
    let (base, mock, _) = start(Some(whisper(1, true))).await;
    let dir = tempfile::tempdir().unwrap();
    let pcm = speech_16k(dir.path(), "What time do you open on Saturday?");
    let stt = OpenAiStt::new(
        loopback_client(),
        &format!("{base}/v1"),
        "sk-stt",
        "whisper-1",
    );
    let t = stt
        .transcribe(
            &pcm,
            &switchboard::agent_runtime::stt::SttHints::language("en-US"),
        )
        .await
        .unwrap();
    assert!(words(&t.text).contains("saturday"), "{}", t.text);
    assert_eq!(t.text, t.text.trim());
    {
        let seen = mock.seen.lock().unwrap();
        let (h, fields) = &seen[0];
        assert_eq!(h["authorization"], "Bearer sk-stt");
        assert_eq!(fields["model"], "whisper-1");
        assert_eq!(fields["language"], "en");
    }
    let bad = OpenAiStt::new(loopback_client(), "http://127.0.0.1:9/v1", "", "whisper-1")
        .with_timeout(Duration::from_secs(2));
    assert!(bad
        .transcribe(&pcm, &switchboard::agent_runtime::stt::SttHints::default())
        .await
        .is_err());
}
