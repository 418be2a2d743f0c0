//! `SipServer::start` binds UDP and TCP on `sip.listen` (and TLS,
//! WebSocket and secure WebSocket where configured) and runs the SIP core
//! on one task (the thin tokio driver around `core::Core`). The handle
//! reports the bound address and live calls, and drains for SIGTERM: new
//! INVITEs get 503 + Retry-After while live calls go on up to a limit.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::SharedCallHandler;
use super::core::{Core, Env, Internal, Shared};
use super::decide::Decider;
use super::digest::DigestServer;
use super::routing::{Router, TrunkSlots};
use super::transaction::Timers;
use super::transport::Transports;
use super::SipError;
use crate::config::Config;
use crate::media::ports::PortAllocator;
use crate::media::Codec;
use crate::records::RecordWriter;

/// Queue of parsed messages from the transports to the core; when it is
/// full (overload) new datagrams are dropped and peers retransmit.
const INBOUND_QUEUE: usize = 4096;
const INTERNAL_QUEUE: usize = 4096;
/// `Retry-After` of a draining node's 503 (SIP and WHIP alike): long enough
/// for a retry to find another node, or this one restarted.
pub const DRAIN_RETRY_AFTER_SECS: u32 = 30;

/// Knobs that are not (yet) in `Config`; `Default` is production.
#[derive(Debug, Clone)]
pub struct SipOptions {
    pub timers: Timers,
    /// Ring time between 180 and 200 (a CANCEL can arrive in it);
    /// `switchboard serve` takes it from `sip.answer_delay_ms`.
    pub answer_delay: Duration,
    /// Codecs the media engine can run, before each trunk's preference list.
    pub codecs: Vec<Codec>,
    /// Digest nonce lifetime.
    pub nonce_ttl_secs: u64,
    /// Server transactions one source may hold outside accepted calls
    /// (answers to strangers live 32 s on UDP); more get 503.
    pub max_server_txs_per_source: usize,
    /// Server transactions the node holds at most; more get 503.
    pub max_server_txs: usize,
    /// Answers per second (and burst) to one source's unauthenticated
    /// requests: 400, OPTIONS, 481, 405, 401/403/404 to strangers, 503.
    pub stranger_answers_per_sec: f64,
    pub stranger_answer_burst: f64,
    /// In a cluster, trunk slots are counted over every node.
    pub cluster: Option<Arc<crate::db::cluster::Cluster>>,
}

impl Default for SipOptions {
    fn default() -> Self {
        SipOptions {
            timers: Timers::default(),
            answer_delay: Duration::from_millis(100),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            nonce_ttl_secs: 300,
            max_server_txs_per_source: 256,
            max_server_txs: 65_536,
            stranger_answers_per_sec: 50.0,
            stranger_answer_burst: 100.0,
            cluster: None,
        }
    }
}

pub struct SipServer;

/// A running SIP node. Cloning shares it; `shutdown` stops it.
#[derive(Clone)]
pub struct SipServerHandle {
    local: SocketAddr,
    shared: Arc<Shared>,
    internal: mpsc::Sender<Internal>,
    cancel: CancellationToken,
    transports: Transports,
    ports: PortAllocator,
}

impl SipServer {
    /// Binds `config.sip.listen` (UDP and TCP) and starts serving.
    /// Routing reads `pool`; the calls' `call_logs` rows go to `records`
    /// (the node's one record writer).
    pub async fn start(
        config: &Config,
        pool: PgPool,
        records: RecordWriter,
        handler: SharedCallHandler,
    ) -> Result<SipServerHandle, SipError> {
        Self::start_with(config, pool, records, handler, SipOptions::default()).await
    }

    pub async fn start_with(
        config: &Config,
        pool: PgPool,
        records: RecordWriter,
        handler: SharedCallHandler,
        options: SipOptions,
    ) -> Result<SipServerHandle, SipError> {
        let (inbound_tx, mut inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (internal_tx, mut internal_rx) = mpsc::channel(INTERNAL_QUEUE);
        let listen = config.sip.listen;
        let max_message = config
            .sip
            .max_message_bytes
            .min(super::message::MAX_MESSAGE_BYTES);
        let (mut transports, listener) =
            Transports::bind(listen, max_message, config.sip.tcp_limits(), inbound_tx)
                .await
                .map_err(|source| SipError::Bind {
                    addr: listen,
                    source,
                })?;
        let extra = bind_listeners(config, &mut transports).await?;
        let local = transports.local_addr();
        let shared = Arc::new(Shared::default());
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let router = Arc::new(Router::new(
            pool.clone(),
            Duration::from_secs(config.sip.routing_cache_ttl_secs),
            config.encryption_key_bytes(),
            options.codecs.clone(),
        ));
        let decider = Arc::new(Decider {
            router,
            slots: TrunkSlots::default(),
            cluster: options.cluster.clone(),
            digest: DigestServer::new("switchboard", key, options.nonce_ttl_secs),
        });
        let rtp_bind_ip = listen.ip();
        let ports = PortAllocator::new(config.rtp.port_min, config.rtp.port_max);
        let env = Env {
            transports: transports.clone(),
            decider,
            records,
            handler,
            ports: ports.clone(),
            rtp_bind_ip,
            advertised_ip: config.advertised_ip(),
            internal: internal_tx.clone(),
            shared: shared.clone(),
            timers: options.timers,
            node_id: config.node_name(),
            max_calls: config.sip.max_calls,
            answer_delay: options.answer_delay,
            limits: super::guard::GuardLimits {
                per_source_txs: options.max_server_txs_per_source,
                max_txs: options.max_server_txs,
                answers_per_sec: options.stranger_answers_per_sec,
                answer_burst: options.stranger_answer_burst,
            },
            latch: config.rtp.latch,
            trusted_proxies: config.sip.trusted_proxies.clone(),
            ring_timeout: Duration::from_secs(config.sip.ring_timeout_secs),
            refer_timers: super::refer::ReferTimers {
                notify: Duration::from_secs(config.sip.transfer_timeout_secs),
                ringing: Duration::from_secs(config.sip.ring_timeout_secs),
            },
            session_timers: config.sip.session_timers(),
        };
        let cancel = CancellationToken::new();
        tokio::spawn(cancel_on(cancel.clone(), transports.clone().run_udp()));
        tokio::spawn(cancel_on(
            cancel.clone(),
            transports.clone().run_tcp(listener),
        ));
        for (kind, listener) in extra {
            let t = transports.clone();
            match kind {
                super::transport::Transport::Tls => {
                    tokio::spawn(cancel_on(
                        cancel.clone(),
                        t.run_stream_listener(listener, kind),
                    ));
                }
                super::transport::Transport::Wss => {
                    tokio::spawn(cancel_on(cancel.clone(), t.run_ws_listener(listener, true)));
                }
                _ => {
                    tokio::spawn(cancel_on(
                        cancel.clone(),
                        t.run_ws_listener(listener, false),
                    ));
                }
            }
        }
        let token = cancel.clone();
        tokio::spawn(async move {
            let mut core = Core::new(env);
            let far = Duration::from_secs(3600);
            loop {
                let wake = core
                    .next_wake()
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + far);
                tokio::select! {
                    _ = token.cancelled() => break,
                    Some(inbound) = inbound_rx.recv() => {
                        let now = std::time::Instant::now();
                        core.on_inbound(inbound, now);
                        // Take what is already queued before looking at timers again.
                        for _ in 0..64 {
                            match inbound_rx.try_recv() {
                                Ok(more) => core.on_inbound(more, now),
                                Err(_) => break,
                            }
                        }
                    }
                    Some(ev) = internal_rx.recv() => core.on_internal(ev, std::time::Instant::now()),
                    _ = tokio::time::sleep_until(wake) => core.on_timers(std::time::Instant::now()),
                }
            }
            tracing::info!("SIP core stopped");
        });
        let l = transports.listeners();
        tracing::info!(%local, tls = ?l.tls, ws = ?l.ws, wss = ?l.wss, "SIP listening on UDP and TCP");
        Ok(SipServerHandle {
            local,
            shared,
            internal: internal_tx,
            cancel,
            transports,
            ports,
        })
    }
}

/// Loads the TLS material and binds the TLS, WebSocket and secure
/// WebSocket listeners the configuration asks for.
async fn bind_listeners(
    config: &Config,
    transports: &mut Transports,
) -> Result<Vec<(super::transport::Transport, tokio::net::TcpListener)>, SipError> {
    use super::transport::Transport;
    let sip = &config.sip;
    if let Some(files) = sip.tls_files() {
        let ctx = super::tls::TlsContext::load(&files).map_err(SipError::Tls)?;
        transports.tls = Some(ctx);
    }
    let wanted = [
        (
            Transport::Tls,
            if transports.tls.is_some() {
                sip.tls_listen.as_str()
            } else {
                ""
            },
        ),
        (Transport::Ws, sip.ws_listen.as_str()),
        (Transport::Wss, sip.wss_listen.as_str()),
    ];
    let mut out = Vec::new();
    for (kind, value) in wanted {
        let addr =
            crate::config::SipConfig::optional_listen(value).map_err(|why| SipError::Bind {
                addr: listen_or_unspecified(value),
                source: std::io::Error::other(why),
            })?;
        let Some(addr) = addr else { continue };
        if kind == Transport::Wss && transports.tls.is_none() {
            continue;
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SipError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| SipError::Bind { addr, source })?;
        match kind {
            Transport::Tls => transports.listeners.tls = Some(bound),
            Transport::Ws => transports.listeners.ws = Some(bound),
            _ => transports.listeners.wss = Some(bound),
        }
        out.push((kind, listener));
    }
    Ok(out)
}

fn listen_or_unspecified(value: &str) -> SocketAddr {
    value
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

async fn cancel_on(token: CancellationToken, fut: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = fut => {}
    }
}

impl SipServerHandle {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Calls in progress on this node (ringing or answered).
    pub fn live_calls(&self) -> usize {
        self.shared.live_calls.load(Ordering::Relaxed)
    }

    /// RTP ports leased by calls of this node (freed when a call ends).
    pub fn rtp_ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// Server transactions held right now.
    pub fn server_transactions(&self) -> usize {
        self.shared.server_txs.load(Ordering::Relaxed)
    }

    /// What the node refused or withheld from strangers so far.
    pub fn counters(&self) -> super::guard::SipCounters {
        self.shared.counters.snapshot()
    }

    pub fn tcp_connections(&self) -> usize {
        self.transports.tcp_connections()
    }

    /// The bound TLS, WebSocket and secure WebSocket addresses.
    pub fn listeners(&self) -> super::transport::Listeners {
        self.transports.listeners()
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// From now on new INVITEs (and WHIP offers) get 503 with
    /// `Retry-After: DRAIN_RETRY_AFTER_SECS`.
    pub fn start_drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// SIGTERM: refuse new calls, let live ones finish for up to `limit`,
    /// then hang up what is left (BYE, `hangup_by = system`). Returns the
    /// number of calls that had to be hung up.
    pub async fn drain(&self, limit: Duration) -> usize {
        self.start_drain();
        let deadline = tokio::time::Instant::now() + limit;
        while self.live_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.live_calls();
        if left > 0 {
            let _ = self
                .internal
                .send(Internal::HangupAll {
                    reason: "node shutting down".into(),
                })
                .await;
            // Give the BYEs a moment to leave before the process exits.
            for _ in 0..20 {
                if self.live_calls() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        left
    }

    /// Places an outbound call (see `outbound_leg::DialRequest`): the
    /// INVITE is on its way when this returns the call_logs id.
    pub async fn dial(
        &self,
        request: super::outbound_leg::DialRequest,
    ) -> Result<uuid::Uuid, super::outbound_leg::DialError> {
        self.dial_for(request, None).await
    }

    /// A warm transfer's call to the person: placed like any outbound
    /// call (its own call_logs row), but once answered it comes back on
    /// `consult` instead of starting an agent call.
    pub async fn dial_for(
        &self,
        request: super::outbound_leg::DialRequest,
        consult: Option<tokio::sync::oneshot::Sender<super::outbound_leg::ConsultResult>>,
    ) -> Result<uuid::Uuid, super::outbound_leg::DialError> {
        use super::outbound_leg::DialError;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self
            .internal
            .send_timeout(
                Internal::Dial {
                    request: Box::new(request),
                    reply,
                    consult,
                },
                Duration::from_secs(5),
            )
            .await;
        if sent.is_err() {
            return Err(DialError::Unavailable);
        }
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(result)) => result,
            _ => Err(DialError::Unavailable),
        }
    }

    /// This node's outbound calls of one workspace (ringing or answered).
    pub fn outbound_calls(
        &self,
        workspace_id: uuid::Uuid,
    ) -> Vec<super::outbound_leg::OutboundView> {
        let mut calls: Vec<_> = self
            .shared
            .outbound
            .iter()
            .filter(|v| v.workspace_id == workspace_id)
            .map(|v| v.clone())
            .collect();
        calls.sort_by_key(|c| c.started_at);
        calls
    }

    /// Hangs up an outbound call of `workspace_id`: CANCEL before the
    /// answer, BYE after. False when there is no such call here.
    pub fn hangup_outbound(&self, workspace_id: uuid::Uuid, call_log_id: uuid::Uuid) -> bool {
        let ours = self
            .shared
            .outbound
            .get(&call_log_id)
            .is_some_and(|v| v.workspace_id == workspace_id);
        ours && self
            .internal
            .try_send(Internal::HangupOutbound { call_log_id })
            .is_ok()
    }

    /// Stops the transports and the core (live calls are dropped silently;
    /// call `drain` first for a graceful stop).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}
