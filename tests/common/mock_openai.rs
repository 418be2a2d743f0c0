//! A mock OpenAI-compatible server on 127.0.0.1:0 (axum): streaming chat
//! completions (SSE) that answer, fail, hang or trickle, and `/audio/speech`
//! that speaks the requested text with espeak-ng as raw 24 kHz PCM (what
//! OpenAI's `response_format: pcm` returns), and `/embeddings` (optionally
//! slow) with the local embedder's vectors. Every chat stream records when
//! it was opened and when the client closed it, and how many tokens went
//! out, so a test can prove that nothing keeps running after a hangup.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

pub const API_KEY: &str = "sk-mock-0123456789";

/// The operator's allow-list a node needs to reach the mock on loopback
/// (tenants' provider URLs reach no internal address unless allowed).
pub const ALLOW_LOOPBACK: (&str, &str) = ("SWITCHBOARD_OUTBOUND__ALLOW", r#"["127.0.0.1/32"]"#);

/// How the chat endpoint behaves.
#[derive(Debug, Clone)]
pub enum ChatMode {
    /// Streams `text` word by word (20 ms apart), then usage and `[DONE]`.
    Answer {
        text: String,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// 500 with an error body.
    Fail,
    /// 200 and SSE comments every 200 ms, never a token (a stuck model).
    Hang,
    /// One word of `text` every `every`, forever (cycling), never `[DONE]`.
    Trickle { text: String, every: Duration },
}

/// One chat stream as the mock saw it.
#[derive(Debug, Clone)]
pub struct ChatStream {
    pub opened: Instant,
    pub closed: Option<Instant>,
    pub tokens_sent: u32,
    pub request: serde_json::Value,
}

#[derive(Default)]
pub struct Seen {
    pub chats: Vec<ChatStream>,
    pub speech: Vec<(Instant, String)>,
    /// Size in bytes of each uploaded transcription WAV.
    pub transcriptions: Vec<usize>,
    /// The `prompt` field of each transcription request, if it had one.
    pub prompts: Vec<Option<String>>,
    /// Inputs of each `/embeddings` request, when it arrived.
    pub embeddings: Vec<(Instant, Vec<String>)>,
    /// How long `/embeddings` waits before answering (a slow service).
    pub embedding_delay: Duration,
    pub unauthorized: u32,
}

#[derive(Clone)]
struct Mock {
    mode: ChatMode,
    /// What `/audio/transcriptions` answers, whatever the audio.
    transcript: String,
    /// What it answers instead to a request with a `prompt` (a recognizer
    /// told the agent's words hears better), when set.
    prompted: Option<String>,
    seen: Arc<Mutex<Seen>>,
}

pub struct MockServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    pub async fn start(mode: ChatMode) -> MockServer {
        MockServer::start_with_transcript(mode, "").await
    }

    /// Also serves `/audio/transcriptions`, answering `transcript`.
    pub async fn start_with_transcript(mode: ChatMode, transcript: &str) -> MockServer {
        MockServer::start_on("127.0.0.1", mode, transcript).await
    }

    /// `/audio/transcriptions` answers `plain`, or `prompted` to a request
    /// that carries a `prompt`.
    pub async fn start_hearing(mode: ChatMode, plain: &str, prompted: &str) -> MockServer {
        MockServer::serve("127.0.0.1", mode, plain, Some(prompted.to_string())).await
    }

    /// Listens on `ip` (any 127.0.0.0/8 address works on Linux loopback;
    /// 127.0.0.2 plays an internal address the node must not reach).
    pub async fn start_on(ip: &str, mode: ChatMode, transcript: &str) -> MockServer {
        MockServer::serve(ip, mode, transcript, None).await
    }

    async fn serve(
        ip: &str,
        mode: ChatMode,
        transcript: &str,
        prompted: Option<String>,
    ) -> MockServer {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/transcriptions", post(transcription))
            .route("/v1/embeddings", post(embeddings))
            .with_state(Mock {
                mode,
                transcript: transcript.to_string(),
                prompted,
                seen: seen.clone(),
            });
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("mock listener");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockServer { addr, seen, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn chats(&self) -> Vec<ChatStream> {
        self.seen.lock().expect("seen").chats.clone()
    }

    pub fn speech(&self) -> Vec<(Instant, String)> {
        self.seen.lock().expect("seen").speech.clone()
    }

    pub fn transcriptions(&self) -> Vec<usize> {
        self.seen.lock().expect("seen").transcriptions.clone()
    }

    pub fn transcription_prompts(&self) -> Vec<Option<String>> {
        self.seen.lock().expect("seen").prompts.clone()
    }

    pub fn embedding_inputs(&self) -> Vec<(Instant, Vec<String>)> {
        self.seen.lock().expect("seen").embeddings.clone()
    }

    pub fn set_embedding_delay(&self, delay: Duration) {
        self.seen.lock().expect("seen").embedding_delay = delay;
    }

    pub fn unauthorized(&self) -> u32 {
        self.seen.lock().expect("seen").unauthorized
    }
}

fn authorized(seen: &Mutex<Seen>, headers: &HeaderMap) -> bool {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {API_KEY}"));
    if !ok {
        seen.lock().expect("seen").unauthorized += 1;
    }
    ok
}

/// Marks the stream closed when hyper drops the body (client went away).
struct CloseGuard {
    seen: Arc<Mutex<Seen>>,
    index: usize,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if let Some(c) = self.seen.lock().expect("seen").chats.get_mut(self.index) {
            c.closed.get_or_insert(Instant::now());
        }
    }
}

fn sse(data: &serde_json::Value) -> String {
    format!("data: {data}\n\n")
}

fn token_chunk(text: &str) -> String {
    sse(&serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": null }]
    }))
}

async fn chat(
    State(m): State<Mock>,
    headers: HeaderMap,
    Json(req): Json<serde_json::Value>,
) -> Response {
    if !authorized(&m.seen, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let index = {
        let mut s = m.seen.lock().expect("seen");
        s.chats.push(ChatStream {
            opened: Instant::now(),
            closed: None,
            tokens_sent: 0,
            request: req,
        });
        s.chats.len() - 1
    };
    if let ChatMode::Fail = m.mode {
        m.seen.lock().expect("seen").chats[index].closed = Some(Instant::now());
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": { "message": "mock failure", "type": "server_error" } })),
        )
            .into_response();
    }
    let guard = CloseGuard {
        seen: m.seen.clone(),
        index,
    };
    let seen = m.seen.clone();
    let mode = m.mode.clone();
    let stream = async_stream_of(mode, seen, index, guard);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// The SSE body as a stream of chunks; the guard lives inside it.
fn async_stream_of(
    mode: ChatMode,
    seen: Arc<Mutex<Seen>>,
    index: usize,
    guard: CloseGuard,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> + Send {
    struct St {
        mode: ChatMode,
        seen: Arc<Mutex<Seen>>,
        index: usize,
        step: usize,
        _guard: CloseGuard,
    }
    let st = St {
        mode,
        seen,
        index,
        step: 0,
        _guard: guard,
    };
    futures::stream::unfold(st, |mut st| async move {
        let count = |st: &St| {
            if let Some(c) = st.seen.lock().expect("seen").chats.get_mut(st.index) {
                c.tokens_sent += 1;
            }
        };
        let chunk = match &st.mode {
            ChatMode::Answer {
                text,
                prompt_tokens,
                completion_tokens,
            } => {
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                if st.step < words.len() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    count(&st);
                    token_chunk(words[st.step])
                } else if st.step == words.len() {
                    sse(&serde_json::json!({
                        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                        "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }],
                        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                   "total_tokens": prompt_tokens + completion_tokens }
                    }))
                } else if st.step == words.len() + 1 {
                    "data: [DONE]\n\n".to_string()
                } else {
                    return None;
                }
            }
            ChatMode::Hang => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ": still thinking\n\n".to_string()
            }
            ChatMode::Trickle { text, every } => {
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                tokio::time::sleep(*every).await;
                count(&st);
                token_chunk(words[st.step % words.len().max(1)])
            }
            ChatMode::Fail => return None,
        };
        st.step += 1;
        Some((Ok(chunk), st))
    })
}

async fn speech(
    State(m): State<Mock>,
    headers: HeaderMap,
    Json(req): Json<serde_json::Value>,
) -> Response {
    if !authorized(&m.seen, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let text = req["input"].as_str().unwrap_or_default().to_string();
    m.seen
        .lock()
        .expect("seen")
        .speech
        .push((Instant::now(), text.clone()));
    let pcm = tokio::task::spawn_blocking(move || espeak_pcm_24k(&text))
        .await
        .expect("espeak task");
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from(pcm))
        .expect("response")
}

async fn transcription(
    State(m): State<Mock>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&m.seen, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let has_wav = body.windows(4).any(|w| w == b"RIFF") && body.windows(4).any(|w| w == b"WAVE");
    if !has_wav {
        return (StatusCode::BAD_REQUEST, "no WAV file in the form").into_response();
    }
    let prompt = form_field(&body, "prompt");
    let text = match (&prompt, &m.prompted) {
        (Some(_), Some(prompted)) => prompted.clone(),
        _ => m.transcript.clone(),
    };
    let mut seen = m.seen.lock().expect("seen");
    seen.transcriptions.push(body.len());
    seen.prompts.push(prompt);
    Json(serde_json::json!({ "text": text })).into_response()
}

/// The value of the multipart form field `name`, if the body has it.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let head = format!("name=\"{name}\"\r\n\r\n");
    let start = text.find(&head)? + head.len();
    let end = text[start..].find("\r\n")? + start;
    Some(text[start..end].to_string())
}

/// `/embeddings`: the local embedder's vectors (deterministic, and good
/// enough to rank the demo FAQ), after the configured delay.
async fn embeddings(
    State(m): State<Mock>,
    headers: HeaderMap,
    Json(req): Json<serde_json::Value>,
) -> Response {
    if !authorized(&m.seen, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let inputs: Vec<String> = match &req["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => return (StatusCode::BAD_REQUEST, "no input").into_response(),
    };
    let delay = {
        let mut s = m.seen.lock().expect("seen");
        s.embeddings.push((Instant::now(), inputs.clone()));
        s.embedding_delay
    };
    tokio::time::sleep(delay).await;
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({ "object": "embedding", "index": i,
                "embedding": mock_vector(t) })
        })
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data, "model": req["model"] }))
        .into_response()
}

/// The mock service's vector of a text: hashed words into 256 signed
/// buckets, unit length (deterministic, so tests can predict it; texts
/// sharing words get similar vectors).
pub fn mock_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 256];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v[(h % 256) as usize] += if h >> 63 == 0 { 1.0 } else { -1.0 };
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// espeak-ng → raw signed 16-bit little-endian mono 24 kHz.
fn espeak_pcm_24k(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let wav = dir.path().join("s.wav");
    let raw = dir.path().join("s.raw");
    super::run(
        std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "160", "-w"])
            .arg(&wav)
            .arg(text),
    );
    super::run(
        std::process::Command::new("sox")
            .arg(&wav)
            .args([
                "-r",
                "24000",
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-t",
                "raw",
            ])
            .arg(&raw),
    );
    std::fs::read(&raw).expect("raw pcm")
}

/// Points the demo agent at the mock: its LLM (the `openai` gpt-4o-mini
/// catalogue row) and TTS go through `workspace_llm_config` with the key
/// encrypted by the node's configured key, as the API stores it.
/// The demo workspace's OpenAI credentials point at the mock (key sealed as
/// the API stores it); returns the demo agent.
async fn mock_credentials_for_demo(
    pool: &sqlx::PgPool,
    config: &switchboard::config::Config,
    base_url: &str,
) -> uuid::Uuid {
    let (agent_id, workspace_id) = super::node::demo_agent(pool).await;
    let sealed = switchboard::api::secrets::encrypt(&config.encryption_key_bytes(), API_KEY);
    sqlx::query(
        "insert into workspace_llm_config (workspace_id, provider, base_url, api_key) values ($1, 'openai', $2, $3)",
    )
    .bind(workspace_id)
    .bind(base_url)
    .bind(sealed)
    .execute(pool)
    .await
    .expect("workspace_llm_config");
    agent_id
}

pub async fn use_mock_for_demo_agent(
    pool: &sqlx::PgPool,
    config: &switchboard::config::Config,
    base_url: &str,
) {
    let agent_id = mock_credentials_for_demo(pool, config, base_url).await;
    sqlx::query(
        "update agents set tts_provider = 'openai',
                llm_model_id = (select id from llm_models where provider = 'openai' and model_id = 'gpt-4o-mini')
         where id = $1",
    )
    .bind(agent_id)
    .execute(pool)
    .await
    .expect("agent providers");
}

/// The demo agent's speech-to-text on the mock (`stt_provider = 'openai'`);
/// its LLM and voice stay offline.
pub async fn use_mock_stt_for_demo_agent(
    pool: &sqlx::PgPool,
    config: &switchboard::config::Config,
    base_url: &str,
) {
    let agent_id = mock_credentials_for_demo(pool, config, base_url).await;
    sqlx::query("update agents set stt_provider = 'openai' where id = $1")
        .bind(agent_id)
        .execute(pool)
        .await
        .expect("stt provider");
}
