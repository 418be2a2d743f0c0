//! Hostile providers. A tenant's `base_url` may point inside the node's
//! network (loopback, private, metadata addresses), directly or by a
//! redirect from an allowed host: the request is refused before any
//! connection, with a clear provider error. And it may point at a server
//! that misbehaves: an endless error body, an endless SSE line or event, a
//! stream that never ends, a slow drip, headers that never come, endless
//! audio or an endless answer. Each call comes back in bounded time with a
//! clear error (and so the call with its fallback line), never holding the
//! body in memory or hanging.
//!
//! The servers are raw TCP on loopback, started inside each test; the
//! operator's allow-list admits 127.0.0.1 only, so 127.0.0.2 plays an
//! internal address a tenant must not reach.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard::agent_runtime::llm::{ChatMessage, LanguageModel, LlmRequest, OpenAiChat};
use switchboard::agent_runtime::llm_http::HttpLlmSettings;
use switchboard::agent_runtime::provider_http::{provider_client, CallLimits};
use switchboard::agent_runtime::stt::{OpenAiStt, ProviderError, SpeechToText};
use switchboard::agent_runtime::tts::{OpenAiTts, TextToSpeech};
use switchboard::config::Config;
use switchboard::outbound::GuardedClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The node's provider client as configured by an operator who allows
/// 127.0.0.1 (a local model server) and nothing else inside.
fn configured_client() -> GuardedClient {
    let env = [(
        "SWITCHBOARD_OUTBOUND__ALLOW".to_string(),
        r#"["127.0.0.1/32"]"#.to_string(),
    )];
    let config = Config::load_from(None, &env).expect("config");
    provider_client(config.outbound.allowed()).expect("client")
}

/// A server on `ip:0` that reads each request's head and then behaves as
/// `behave` says; returns its address and how many connections it took.
async fn server<F, Fut>(ip: &str, behave: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            tokio::spawn(behave(sock));
        }
    });
    (addr, connections)
}

/// Writes `head` then `piece` again and again, `every` apart, for up to
/// 30 s or until the client hangs up.
async fn write_forever(mut sock: TcpStream, head: &str, piece: Vec<u8>, every: Duration) {
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if sock.write_all(&piece).await.is_err() {
            return; // the client hung up: what we want
        }
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
    }
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    [
        format!("{:x}\r\n", data.len()).into_bytes(),
        data.to_vec(),
        b"\r\n".to_vec(),
    ]
    .concat()
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const TOKEN: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"drip \"}}]}\n\n";

const LIMITS: CallLimits = CallLimits {
    first_byte: Duration::from_secs(1),
    stall: Duration::from_secs(1),
    total: Duration::from_secs(3),
};

fn chat(addr: SocketAddr, limits: CallLimits) -> OpenAiChat {
    let settings = HttpLlmSettings {
        base_url: format!("http://{addr}/v1"),
        api_key: "sk-test".into(),
        model: "test-model".into(),
        limits,
        context_window: 2048,
    };
    OpenAiChat::new(settings, configured_client())
}

fn question() -> LlmRequest {
    LlmRequest {
        system: "sys".into(),
        messages: vec![ChatMessage::user("hello?")],
        passages: vec![],
        temperature: 0.2,
        max_tokens: 50,
        fallback_message: "sorry".into(),
    }
}

/// The reply's first error (a reply that ends without one is a failure),
/// and how long the whole reply took.
async fn reply_error(llm: &dyn LanguageModel) -> (ProviderError, Duration) {
    let started = Instant::now();
    let error = match llm.stream(question()).await {
        Err(e) => e,
        Ok(mut stream) => loop {
            match stream.next().await {
                Some(Err(e)) => break e,
                Some(Ok(_)) => continue,
                None => panic!("the reply ended without an error"),
            }
        },
    };
    (error, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_url_on_an_internal_address_is_refused_before_any_connection() {
    let inside = |_sock: TcpStream| async {};
    let (addr, connections) = server("127.0.0.2", inside).await;
    let base = format!("http://{addr}/v1");
    let client = configured_client();

    let (error, took) = reply_error(&chat(addr, LIMITS)).await;
    println!("LLM: {error} after {took:?}");
    assert!(
        matches!(&error, ProviderError::Refused(why) if why.contains("127.0.0.2")),
        "{error:?}"
    );
    assert!(error.to_string().contains("refused"), "{error}");

    let stt = OpenAiStt::new(client.clone(), &base, "sk", "whisper-1");
    let error = stt
        .transcribe(
            &[0i16; 1600],
            &switchboard::agent_runtime::stt::SttHints::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Refused(_)), "STT: {error:?}");

    let tts = OpenAiTts::new(client.clone(), &base, "sk", "tts-1");
    let error = tts
        .synthesize("Hello.", "", 1.0)
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, ProviderError::Refused(_)), "TTS: {error:?}");

    // Other spellings of internal addresses, and the metadata address.
    for url in [
        "http://[::ffff:127.0.0.2]:1/v1",
        "http://127.2/v1",
        "http://169.254.169.254/latest",
        "http://[::1]:1/v1",
        "http://10.0.0.1/v1",
    ] {
        let stt = OpenAiStt::new(client.clone(), url, "sk", "whisper-1");
        let error = stt
            .transcribe(
                &[0i16; 1600],
                &switchboard::agent_runtime::stt::SttHints::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::Refused(_)),
            "{url}: {error:?}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the refused address was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_an_allowed_host_to_an_internal_one_is_refused() {
    let (inside, reached) = server("127.0.0.2", |_sock: TcpStream| async {}).await;
    let (allowed, _) = server("127.0.0.1", move |mut sock: TcpStream| async move {
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{inside}/v1/chat/completions\r\ncontent-length: 0\r\n\r\n"
        );
        let _ = sock.write_all(answer.as_bytes()).await;
    })
    .await;
    let (error, took) = reply_error(&chat(allowed, LIMITS)).await;
    println!("{error} after {took:?}");
    assert!(
        matches!(&error, ProviderError::Refused(why) if why.contains("127.0.0.2")),
        "{error:?}"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_costs_a_bounded_read() {
    let (addr, _) = server("127.0.0.1", |sock: TcpStream| {
        let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
        write_forever(sock, head, chunk(&vec![b'x'; 1 << 20]), Duration::ZERO)
    })
    .await;
    let stt = OpenAiStt::new(
        configured_client(),
        &format!("http://{addr}/v1"),
        "sk-test",
        "whisper-1",
    );
    let started = Instant::now();
    let result = stt
        .transcribe(
            &vec![0i16; 16_000],
            &switchboard::agent_runtime::stt::SttHints::language("en"),
        )
        .await;
    let took = started.elapsed();
    println!("error after {took:?}: {result:?}");
    match result {
        Err(ProviderError::Status { status, body }) => {
            assert_eq!(status, 500);
            assert!(body.len() <= 500, "error message of {} bytes", body.len());
            assert!(body.starts_with("xxx"), "the body's start is kept");
        }
        other => panic!("expected the provider's 500, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(5),
        "the error took {took:?}: the body was read on and on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_sse_line_or_event_is_a_protocol_error_at_once() {
    let line = server("127.0.0.1", |sock: TcpStream| {
        write_forever(sock, SSE_HEAD, chunk(&[b'a'; 64 * 1024]), Duration::ZERO)
    })
    .await;
    let event = server("127.0.0.1", |sock: TcpStream| {
        let piece = format!("data: {}\n", "b".repeat(8 * 1024));
        write_forever(sock, SSE_HEAD, chunk(piece.as_bytes()), Duration::ZERO)
    })
    .await;
    for ((addr, _), what) in [(line, "line"), (event, "event")] {
        let (error, took) = reply_error(&chat(addr, LIMITS)).await;
        println!("endless SSE {what}: {error} after {took:?}");
        assert!(
            matches!(&error, ProviderError::Protocol(why) if why.contains(what)),
            "{error:?}"
        );
        assert!(took < Duration::from_secs(2), "{what}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_ends_or_drips_is_cut_off_in_bounded_time() {
    // Headers that never come.
    let (mute, _) = server("127.0.0.1", |sock: TcpStream| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sock);
    })
    .await;
    // One token, then keep-alive comments for ever.
    let (pinging, _) = server("127.0.0.1", |sock: TcpStream| {
        let head = [SSE_HEAD.as_bytes(), &chunk(TOKEN)].concat();
        async move {
            let head = String::from_utf8_lossy(&head).into_owned();
            write_forever(
                sock,
                &head,
                chunk(b": ping\n\n"),
                Duration::from_millis(100),
            )
            .await
        }
    })
    .await;
    // A token every 300 ms for ever: never a stall, never an end.
    let (dripping, _) = server("127.0.0.1", |sock: TcpStream| {
        write_forever(sock, SSE_HEAD, chunk(TOKEN), Duration::from_millis(300))
    })
    .await;
    let cases = [
        (mute, LIMITS.first_byte, "headers that never come"),
        (pinging, LIMITS.stall, "keep-alives and no token"),
        (dripping, LIMITS.total, "a slow drip"),
    ];
    for (addr, limit, what) in cases {
        let (error, took) = reply_error(&chat(addr, LIMITS)).await;
        println!("{what}: {error} after {took:?}");
        assert!(
            matches!(error, ProviderError::Timeout(l) if l == limit),
            "{what}: {error:?}"
        );
        assert!(
            took >= limit && took < limit + Duration::from_secs(1),
            "{what}: {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_or_dripping_audio_and_an_endless_transcript_are_bounded() {
    let pcm_head =
        "HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n\r\n";
    let (flood, _) = server("127.0.0.1", move |sock: TcpStream| {
        write_forever(sock, pcm_head, chunk(&[1u8; 64 * 1024]), Duration::ZERO)
    })
    .await;
    let (drip, _) = server("127.0.0.1", move |sock: TcpStream| {
        write_forever(
            sock,
            pcm_head,
            chunk(&[1u8; 480]),
            Duration::from_millis(300),
        )
    })
    .await;
    let speak = |addr: SocketAddr| async move {
        let tts = OpenAiTts::new(
            configured_client(),
            &format!("http://{addr}/v1"),
            "sk",
            "tts-1",
        )
        .with_limits(LIMITS);
        let started = Instant::now();
        let mut stream = tts
            .synthesize("Hello there.", "", 1.0)
            .await
            .expect("audio starts");
        let mut samples = 0usize;
        let error = loop {
            match stream.next().await {
                Some(Ok(chunk)) => samples += chunk.pcm.len(),
                Some(Err(e)) => break e,
                None => panic!("the audio ended"),
            }
        };
        (error, samples, started.elapsed())
    };
    let (error, samples, took) = speak(flood).await;
    println!("endless audio: {error} after {samples} samples, {took:?}");
    assert!(matches!(error, ProviderError::Protocol(_)), "{error:?}");
    assert!(samples <= 4 * 1024 * 1024, "{samples} samples kept");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (error, _, took) = speak(drip).await;
    println!("dripping audio: {error} after {took:?}");
    assert!(
        matches!(error, ProviderError::Timeout(l) if l == LIMITS.total),
        "{error:?}"
    );
    assert!(took < LIMITS.total + Duration::from_secs(1), "{took:?}");

    let (endless, _) = server("127.0.0.1", |sock: TcpStream| {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        write_forever(sock, head, chunk(&[b' '; 64 * 1024]), Duration::ZERO)
    })
    .await;
    let stt = OpenAiStt::new(
        configured_client(),
        &format!("http://{endless}/v1"),
        "sk",
        "whisper-1",
    );
    let started = Instant::now();
    let error = stt
        .transcribe(
            &[0i16; 1600],
            &switchboard::agent_runtime::stt::SttHints::default(),
        )
        .await
        .unwrap_err();
    println!("endless transcript: {error} after {:?}", started.elapsed());
    assert!(matches!(error, ProviderError::Protocol(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
