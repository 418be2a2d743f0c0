//! Hostile providers: a tenant's `base_url` may point at a server that
//! answers an error with an endless body. The provider call must come back
//! at once with a bounded error (and so the call with its fallback line),
//! never read the body to the end or hold it in memory.

use std::time::{Duration, Instant};

use switchboard::agent_runtime::stt::{OpenAiStt, ProviderError, SpeechToText};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request with `500` and a chunked body that never ends
/// (1 MiB chunks for up to 30 s); returns the address.
async fn endless_error_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut req).await;
                let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 1 << 20];
                let frame = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk,
                    b"\r\n".to_vec(),
                ]
                .concat();
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until {
                    if sock.write_all(&frame).await.is_err() {
                        return; // the client hung up: what we want
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_costs_a_bounded_read() {
    let addr = endless_error_server().await;
    let stt = OpenAiStt::with_timeout(
        &format!("http://{addr}/v1"),
        "sk-test",
        "whisper-1",
        Duration::from_secs(20),
    );
    let started = Instant::now();
    let result = stt.transcribe(&vec![0i16; 16_000], Some("en")).await;
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
