//! One typed `Config`: the embedded `config/default.toml`, then an optional
//! `config/local.toml` (or a file given on the command line), then
//! `SWITCHBOARD_<SECTION>__<KEY>` environment variables, then `DATABASE_URL`.
//! A bad value is an error naming the key; secrets are redacted when printed.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The defaults, compiled in so the binary runs with no files at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        // figment's messages name the key path ("for key `sip.listen`").
        let mut parts = Vec::new();
        for e in err {
            let key = e.path.join(".");
            if key.is_empty() {
                parts.push(e.to_string());
            } else {
                parts.push(format!("key `{key}`: {}", e.kind));
            }
        }
        ConfigError::Invalid(parts.join("; "))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    pub node_id: String,
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub api: ApiConfig,
    pub database: DatabaseConfig,
    pub stt: SttConfig,
    pub tts: TtsConfig,
    pub llm: LlmConfig,
    pub turn: TurnConfig,
    pub recording: RecordingConfig,
    pub records: RecordsConfig,
    pub embeddings: EmbeddingsConfig,
    pub outbound: OutboundConfig,
    pub cluster: ClusterConfig,
    pub admission: AdmissionConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub webrtc: WebRtcConfig,
}

/// Browser calls (WHIP, `POST /v1/agents/{id}/whip`): which addresses ICE
/// offers, and how a peer outside the node's network reaches it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebRtcConfig {
    pub enabled: bool,
    /// Host candidates only from these addresses or ranges (`"127.0.0.0/8"`,
    /// `"10.0.0.5"`); empty: every interface address.
    pub ice_ips: Vec<String>,
    /// Offer loopback addresses (off by default, as RFC 8445 says; tests
    /// on one machine turn it on).
    pub include_loopback: bool,
    /// The public address of a node behind 1:1 NAT, written in its host
    /// candidates instead of the private one.
    pub public_ips: Vec<String>,
    /// STUN servers (`"stun:stun.example.org:3478"`) for a server-reflexive
    /// candidate; not together with `public_ips`.
    pub stun_servers: Vec<String>,
    /// UDP ports of the ICE sockets.
    pub port_min: u16,
    pub port_max: u16,
    /// WHIP sessions held at once (each is a call).
    pub max_sessions: usize,
}

/// New calls are refused (503, Retry-After) when the node cannot serve
/// them without slowing the calls it has.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdmissionConfig {
    /// Calls held at most (0: no fixed cap beyond `sip.max_calls`).
    pub max_calls: usize,
    /// Refuse while the 90th percentile of the last 10 s of transcription
    /// waits for the CPU is above this (0: never on load); admit again
    /// once it is at half.
    pub max_stt_wait_ms: u64,
    pub retry_after_secs: u32,
}

impl AdmissionConfig {
    pub fn limits(&self) -> crate::agent_runtime::admission::Limits {
        crate::agent_runtime::admission::Limits {
            max_calls: self.max_calls,
            max_stt_wait: std::time::Duration::from_millis(self.max_stt_wait_ms),
            retry_after_secs: self.retry_after_secs.max(1),
        }
    }
}

/// Several nodes sharing one PostgreSQL behind a SIP load balancer
/// (Kamailio's dispatcher): heartbeats, trunk limits counted across nodes,
/// live calls of every node, calls of a lost node closed by the others.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterConfig {
    pub enabled: bool,
    /// How often this node writes its heartbeat.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat is older than this is lost: its calls stop
    /// counting and their records are closed by a surviving node.
    pub node_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub public_address: String,
    pub max_message_bytes: usize,
    pub drain_timeout_secs: u64,
    pub routing_cache_ttl_secs: u64,
    pub max_calls: usize,
    /// TCP connections held at once, in all and from one source (an IPv6
    /// source is its /64); more are closed at accept.
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_source: usize,
    /// A TCP message must be whole (head and body) this long after its
    /// first byte, however slowly it trickles.
    pub tcp_message_deadline_ms: u64,
    /// A TCP connection with no message under way closes after this long.
    pub tcp_idle_secs: u64,
    /// SIP proxies in front of this node (a Kamailio dispatcher): from
    /// these addresses, the `X-Switchboard-Source` header names the
    /// address the request really came from (trunk admission, per-source
    /// budgets, media latching). From anyone else it is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an outbound call may ring before it is CANCELled and
    /// logged `no_answer`.
    pub ring_timeout_secs: u64,
    /// A blind transfer (REFER) fails when no answer or NOTIFY report
    /// comes this long after the REFER; after a provisional report
    /// (trying, ringing) the final one may take `ring_timeout_secs`.
    #[serde(default = "default_transfer_timeout")]
    pub transfer_timeout_secs: u64,
    /// A warm transfer, once bridged, asks the caller's phone to take the
    /// call to the person over (REFER with Replaces, RFC 5589 §7) where
    /// both phones advertise it, so the node leaves the media path.
    #[serde(default = "default_true")]
    pub warm_transfer_replaces: bool,
    /// Ring time of an inbound call: milliseconds between 180 Ringing and
    /// 200 OK (a CANCEL can arrive in it); 0 (the default) answers at
    /// once. At most 10 s.
    #[serde(default)]
    pub answer_delay_ms: u64,
    /// SIP over TLS: the listening address (with the certificate and key
    /// set), the node's certificate chain and key (PEM), the CA whose
    /// clients alone are accepted (empty: no client certificate asked) and
    /// extra roots trusted for outbound TLS trunks (empty: public roots).
    #[serde(default)]
    pub tls_listen: String,
    #[serde(default)]
    pub tls_cert_file: String,
    #[serde(default)]
    pub tls_key_file: String,
    #[serde(default)]
    pub tls_client_ca_file: String,
    #[serde(default)]
    pub tls_trust_file: String,
    /// SIP over WebSocket (RFC 7118) and secure WebSocket (needs the TLS
    /// certificate); empty: off.
    #[serde(default)]
    pub ws_listen: String,
    #[serde(default)]
    pub wss_listen: String,
    /// RFC 4028 session timers: the interval we ask for (0: none unless
    /// the peer asks) and the smallest we accept (422 below it).
    #[serde(default = "default_session_expires")]
    pub session_expires_secs: u32,
    #[serde(default = "default_min_se")]
    pub min_se_secs: u32,
}

fn default_transfer_timeout() -> u64 {
    32
}

fn default_true() -> bool {
    true
}

fn default_session_expires() -> u32 {
    1800
}

fn default_min_se() -> u32 {
    90
}

impl SipConfig {
    /// The TLS files, when a certificate and key are configured.
    pub fn tls_files(&self) -> Option<crate::sip::tls::TlsFiles> {
        let nonempty = |s: &str| (!s.trim().is_empty()).then(|| std::path::PathBuf::from(s.trim()));
        Some(crate::sip::tls::TlsFiles {
            cert: nonempty(&self.tls_cert_file)?,
            key: nonempty(&self.tls_key_file)?,
            client_ca: nonempty(&self.tls_client_ca_file),
            trust: nonempty(&self.tls_trust_file),
        })
    }

    /// An optional listening address (`""` is off).
    pub fn optional_listen(value: &str) -> Result<Option<SocketAddr>, String> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("`{v}` is not an address:port"))
    }

    /// Session-timer settings for the SIP core.
    pub fn session_timers(&self) -> crate::sip::session_timer::TimerSettings {
        crate::sip::session_timer::TimerSettings {
            session_expires: self.session_expires_secs,
            min_se: self.min_se_secs,
        }
    }

    pub fn tcp_limits(&self) -> crate::sip::transport::TcpLimits {
        crate::sip::transport::TcpLimits {
            max_connections: self.tcp_max_connections,
            max_per_source: self.tcp_max_connections_per_source,
            message_deadline: std::time::Duration::from_millis(self.tcp_message_deadline_ms),
            idle: std::time::Duration::from_secs(self.tcp_idle_secs),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RtpConfig {
    pub port_min: u16,
    pub port_max: u16,
    pub clock_threads: u16,
    pub clock_realtime: bool,
    /// When a call's media may latch to a source other than its SDP
    /// address (only ever one on the signalling IP).
    #[serde(default)]
    pub latch: crate::media::receiver::Latch,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub jwt_secret: String,
    pub supabase_jwt_secret: String,
    pub token_ttl_secs: u64,
    pub encryption_key: String,
    /// Where `jwt_secret` and `encryption_key` are generated when empty.
    pub secrets_dir: PathBuf,
    pub demo_mode: bool,
    pub max_body_bytes: usize,
    /// Who may scrape `GET /metrics`: ranges and addresses (403 for others).
    pub metrics_allow: Vec<String>,
}

impl ApiConfig {
    /// `metrics_allow` as the API checks it (validated at load).
    pub fn metrics_allow(&self) -> crate::metrics::ScrapeAllow {
        crate::metrics::ScrapeAllow::parse(&self.metrics_allow).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SttConfig {
    pub provider: String,
    pub model_path: String,
    pub threads: u32,
    pub workers: usize,
    /// Give the recognizer the knowledge's own words as a hint on every turn.
    pub knowledge_hint: bool,
    /// Otherwise hear a turn again with that hint when its transcript's
    /// best match in the knowledge scores below this (0 = never;
    /// `agent_runtime::listen`).
    #[serde(default)]
    pub relisten_below: f32,
    /// whisper.cpp's fallback to sampling at higher temperatures when a
    /// greedy decode looks poor (a repeating one, mostly).
    pub temperature_fallback: bool,
    /// Beams of whisper's beam search; 1 = greedy.
    pub beam_size: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TtsConfig {
    pub provider: String,
    /// espeak-ng's voice (the fallback engine).
    pub voice: String,
    /// Piper: the default voice, the folder of `<voice>.onnx` + `.json`, and
    /// ONNX Runtime's shared library (loaded at start-up).
    pub piper_voice: String,
    pub piper_dir: PathBuf,
    pub onnxruntime_path: PathBuf,
    /// Threads per Piper inference, and inferences run at once.
    pub piper_threads: usize,
    pub piper_workers: usize,
    /// Folder holding `espeak-ng-data` for Piper's phonemes; empty = the
    /// system library's own.
    pub espeak_data_dir: PathBuf,
    /// Pre-rendered fixed lines and FAQ answers (content-addressed WAVs);
    /// empty = no pre-rendering.
    pub cache_dir: PathBuf,
    /// Seconds between checks for changed agents and knowledge.
    pub prerender_poll_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LlmConfig {
    pub provider: String,
    pub first_token_timeout_secs: u64,
    /// The whole reply of a networked model, however steadily it streams.
    pub reply_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TurnConfig {
    pub speech_onset_ms: u32,
    pub end_of_turn_silence_ms: u32,
    pub speculate_after_ms: u32,
    pub complete_turn_silence_ms: u32,
    pub barge_in_min_ms: u32,
    pub backchannel_resume_ms: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RecordingConfig {
    pub dir: PathBuf,
}

/// The durable record writer (`crate::records`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RecordsConfig {
    /// Records held in memory while the database is slow or away; more go
    /// to the spill file.
    pub queue_capacity: usize,
    /// Folder of the spill file (`records-*.jsonl`), replayed at start.
    /// Empty: memory only (a full queue drops records).
    pub spool_dir: PathBuf,
    /// The spill file's cap, in MiB; past it records are dropped and logged.
    pub spool_max_mb: u64,
    /// Seconds a stopping node tries the database before it spills what is left.
    pub stop_flush_secs: u64,
}

/// The process's one embedder: knowledge is embedded with it at ingest and
/// callers' questions at each turn, so the vectors stay comparable.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmbeddingsConfig {
    /// `local` (a sentence-transformers model in-process, from
    /// `local_model_dir`: all-mpnet-base-v2-q8 or all-MiniLM-L6-v2) or
    /// `openai` (any OpenAI-compatible `/v1/embeddings`).
    pub provider: String,
    pub local_model_dir: PathBuf,
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub dims: usize,
    /// Longest a turn waits for its question's embedding from a networked
    /// embedder before retrieving with full-text only (the in-process model
    /// is waited for up to `embeddings::IN_PROCESS_WAIT`).
    pub query_budget_ms: u64,
    /// Where knowledge vectors are kept by model and text, so a restart or
    /// a re-upload does not run the model again; empty = nowhere.
    #[serde(default)]
    pub cache_dir: PathBuf,
}

/// Fetches whose target a tenant chooses (knowledge URLs, providers'
/// `base_url`s) never reach the node's own network, except what is here.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OutboundConfig {
    /// Ranges (`10.0.0.0/8`), addresses (`10.1.2.3`) and host names
    /// (`vllm.internal`) that may be fetched although internal.
    pub allow: Vec<String>,
}

impl OutboundConfig {
    /// The list as the guarded client takes it (validated at load).
    pub fn allowed(&self) -> crate::outbound::Allowed {
        crate::outbound::Allowed::parse(&self.allow).unwrap_or_default()
    }
}

/// OpenTelemetry traces per call (`src/telemetry.rs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (spans go to `…/v1/traces`); empty = off.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
}

/// The demo encryption key shipped in `default.toml`.
pub const DEMO_ENCRYPTION_KEY: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

mod load;

#[cfg(test)]
mod tests;
