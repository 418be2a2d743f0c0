//! SIP over WebSocket (RFC 7118), for browser and softphone clients that
//! dial in (SIP.js, JsSIP): the handshake must ask for the `sip`
//! subprotocol, every WebSocket message carries one whole SIP message (text
//! or binary), and whatever we send on the connection goes as a text
//! message. `ws://` and, with the TLS certificate, `wss://`. Connections
//! share the stream caps of TCP (`sip.tcp_*`): a handshake must finish
//! within the message deadline, a message may not exceed
//! `sip.max_message_bytes`, and a connection quiet for `sip.tcp_idle_secs`
//! closes. We never open WebSocket connections ourselves.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::message::Message;
use super::transport::{ConnPermit, Inbound, Target, Transport, Transports, CONN_SEND_QUEUE};

/// The subprotocol of RFC 7118 §4.
pub const SUBPROTOCOL: &str = "sip";

/// Does the client's `Sec-WebSocket-Protocol` list `sip`?
fn asks_for_sip(req: &Request) -> bool {
    req.headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL))
}

/// The handshake callback: `sip` chosen, anything else refused (400).
#[allow(clippy::result_large_err)] // the type tungstenite's callback returns
fn choose_sip(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if !asks_for_sip(req) {
        let mut refusal = ErrorResponse::new(Some("the sip subprotocol is required".into()));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    resp.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

impl Transports {
    /// Accepts WebSocket connections (`wss` wraps each in TLS first).
    pub async fn run_ws_listener(self, listener: TcpListener, secure: bool) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("WebSocket accept error: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(permit) = self.admit(peer) else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                let deadline = this.tcp_limits.message_deadline;
                if !secure {
                    this.serve_ws(stream, peer, Transport::Ws, permit, deadline)
                        .await;
                    return;
                }
                let Some(tls) = this.tls.clone() else { return };
                match tokio::time::timeout(deadline, tls.acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        this.serve_ws(s, peer, Transport::Wss, permit, deadline)
                            .await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "WSS TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "WSS TLS handshake timed out"),
                }
            });
        }
    }

    async fn serve_ws<S>(
        self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
        permit: ConnPermit,
        deadline: std::time::Duration,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _permit = permit;
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message));
        let handshake =
            tokio_tungstenite::accept_hdr_async_with_config(stream, choose_sip, Some(config));
        let ws = match tokio::time::timeout(deadline, handshake).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "WebSocket handshake refused: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "WebSocket handshake timed out");
                return;
            }
        };
        let id = self.new_conn_id();
        let (mut sink, mut incoming) = ws.split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(CONN_SEND_QUEUE);
        self.conns.insert(id, tx);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let msg = match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes.clone()) {
                    Ok(text) => WsMessage::Text(text),
                    Err(_) => WsMessage::Binary(bytes),
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let source = Target {
            transport,
            addr: peer,
            conn: Some(id),
        };
        let idle = self.tcp_limits.idle;
        loop {
            let next = match tokio::time::timeout(idle, incoming.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    tracing::debug!(conn = id, %peer, "closing WebSocket: {e}");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!(conn = id, %peer, "closing idle WebSocket");
                    break;
                }
            };
            let data: Bytes = match next {
                WsMessage::Text(t) => Bytes::from(t),
                WsMessage::Binary(b) => b,
                WsMessage::Close(_) => break,
                // Pings are answered by tungstenite as the stream is read.
                _ => continue,
            };
            // CRLF keep-alives (RFC 5626 §4.4.1) start nothing.
            if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                continue;
            }
            let inbound = Inbound {
                source,
                message: Message::parse(&data),
                raw_len: data.len(),
            };
            let _ = self.inbound.try_send(inbound);
        }
        self.forget_conn(id, transport, peer);
        writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_asking_for_sip_are_taken() {
        let req = |proto: Option<&str>| {
            let mut b = Request::builder().uri("/");
            if let Some(p) = proto {
                b = b.header("Sec-WebSocket-Protocol", p);
            }
            b.body(()).unwrap()
        };
        assert!(asks_for_sip(&req(Some("sip"))));
        assert!(asks_for_sip(&req(Some("chat, SIP"))));
        assert!(!asks_for_sip(&req(Some("chat"))));
        assert!(!asks_for_sip(&req(None)));
        let ok = choose_sip(&req(Some("sip")), Response::new(())).unwrap();
        assert_eq!(ok.headers()["Sec-WebSocket-Protocol"], "sip");
        let refused = choose_sip(&req(None), Response::new(())).unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
}
