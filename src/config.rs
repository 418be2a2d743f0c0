//! One typed `Config`: the embedded `config/default.toml`, then an optional
//! `config/local.toml` (or a file given on the command line), then
//! `SWITCHBOARD_<SECTION>__<KEY>` environment variables, then `DATABASE_URL`.
//! A bad value is an error naming the key; secrets are redacted when printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The defaults, compiled in so the binary runs with no files at all.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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
    /// 200 OK (a CANCEL can arrive in it); 0 answers at once. At most 10 s.
    #[serde(default = "default_answer_delay_ms")]
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

fn default_answer_delay_ms() -> u64 {
    100
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
    /// `local_model_dir`: all-mpnet-base-v2 or all-MiniLM-L6-v2) or
    /// `openai` (any OpenAI-compatible `/v1/embeddings`).
    pub provider: String,
    pub local_model_dir: PathBuf,
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub dims: usize,
    /// Longest a turn waits for its question's embedding before retrieving
    /// with full-text only.
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

/// The secret `name` in `dir` (64 hex characters), created when missing.
/// Processes starting at once agree on one value: each writes its own
/// candidate beside the file and links it into place only if no file is
/// there yet, then everyone reads what is there.
fn installation_secret(dir: &Path, name: &str) -> Result<String, ConfigError> {
    use std::io::Write;
    let path = dir.join(name);
    let read = |p: &Path| -> Option<String> {
        let s = std::fs::read_to_string(p).ok()?;
        let s = s.trim().to_string();
        decode_key(&s).map(|_| s)
    };
    if let Some(s) = read(&path) {
        return Ok(s);
    }
    let fail = |e: std::io::Error| {
        ConfigError::Invalid(format!(
            "cannot keep the generated {name} in {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut bytes = [0u8; 32];
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)
        .map_err(|e| ConfigError::Invalid(format!("no randomness for {name}: {e}")))?;
    let candidate = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&candidate).map_err(fail)?;
        f.write_all(hex::encode(bytes).as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    let linked = std::fs::hard_link(&candidate, &path);
    let _ = std::fs::remove_file(&candidate);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    read(&path).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "{} does not hold 64 hex characters: remove it to generate a new one",
            path.display()
        ))
    })
}

impl Config {
    /// Loads the layered configuration from the process environment.
    /// `file` replaces `config/local.toml` when given.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Same as [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("config/local.toml")),
        }
        let vars: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_"))
            .cloned()
            .collect();
        // The same key convention as figment's `Env::prefixed(..).split("__")`,
        // but read from the given list so tests never touch the process
        // environment (which would race between threads).
        for (key, value) in &vars {
            let path = key["SWITCHBOARD_".len()..]
                .to_lowercase()
                .replace("__", ".");
            figment = figment.merge(figment::providers::Serialized::default(
                &path,
                parse_env_value(value),
            ));
        }
        if let Some((_, url)) = env.iter().find(|(k, _)| k == "DATABASE_URL") {
            if !url.is_empty() {
                figment =
                    figment.merge(figment::providers::Serialized::default("database.url", url));
            }
        }
        let mut config: Config = figment.extract()?;
        config.installation_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Fills an empty `jwt_secret` or `encryption_key` with this
    /// installation's own, generated once (random, 32 bytes) into
    /// `api.secrets_dir` and read from there ever after: no two
    /// installations share a key, and none is a constant in the repository.
    fn installation_secrets(&mut self) -> Result<(), ConfigError> {
        let dir = self.api.secrets_dir.clone();
        if self.api.jwt_secret.is_empty() {
            self.api.jwt_secret = installation_secret(&dir, "jwt_secret")?;
        }
        if self.api.encryption_key.is_empty() {
            self.api.encryption_key = installation_secret(&dir, "encryption_key")?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("key `{key}`: {why}")));
        if self.sip.tcp_max_connections == 0 || self.sip.tcp_max_connections_per_source == 0 {
            return bad(
                "sip.tcp_max_connections_per_source",
                "TCP connection limits must be at least 1",
            );
        }
        if self.sip.answer_delay_ms > 10_000 {
            return bad("sip.answer_delay_ms", "at most 10000 (10 s)");
        }
        if self.sip.tcp_message_deadline_ms == 0 || self.sip.tcp_idle_secs == 0 {
            return bad(
                "sip.tcp_message_deadline_ms",
                "TCP deadlines must be greater than 0",
            );
        }
        for (key, value) in [
            ("sip.tls_listen", &self.sip.tls_listen),
            ("sip.ws_listen", &self.sip.ws_listen),
            ("sip.wss_listen", &self.sip.wss_listen),
        ] {
            if let Err(why) = SipConfig::optional_listen(value) {
                return bad(key, &why);
            }
        }
        if self.sip.tls_cert_file.trim().is_empty() != self.sip.tls_key_file.trim().is_empty() {
            return bad(
                "sip.tls_key_file",
                "TLS needs both tls_cert_file and tls_key_file",
            );
        }
        if !self.sip.wss_listen.trim().is_empty() && self.sip.tls_files().is_none() {
            return bad(
                "sip.wss_listen",
                "secure WebSocket needs tls_cert_file and tls_key_file",
            );
        }
        if self.sip.min_se_secs < crate::sip::session_timer::MIN_SE_FLOOR {
            return bad(
                "sip.min_se_secs",
                "RFC 4028 allows no Min-SE below 90 seconds",
            );
        }
        if self.sip.session_expires_secs != 0
            && self.sip.session_expires_secs < self.sip.min_se_secs
        {
            return bad(
                "sip.session_expires_secs",
                "must be 0 (off) or at least sip.min_se_secs",
            );
        }
        if self.cluster.enabled && self.node_id.trim().is_empty() {
            return bad(
                "node_id",
                "a cluster node needs its own name (cluster.enabled)",
            );
        }
        if self.cluster.enabled
            && (self.cluster.heartbeat_ms == 0
                || self.cluster.node_timeout_ms < 2 * self.cluster.heartbeat_ms)
        {
            return bad(
                "cluster.node_timeout_ms",
                "must be at least twice cluster.heartbeat_ms (and the heartbeat above 0)",
            );
        }
        if self.sip.ring_timeout_secs == 0 || self.sip.ring_timeout_secs > 600 {
            return bad("sip.ring_timeout_secs", "must be from 1 to 600");
        }
        if self.sip.transfer_timeout_secs == 0 || self.sip.transfer_timeout_secs > 600 {
            return bad("sip.transfer_timeout_secs", "must be from 1 to 600");
        }
        if self.webrtc.port_min == 0 || self.webrtc.port_min > self.webrtc.port_max {
            return bad("webrtc.port_min", "must be from 1 to webrtc.port_max");
        }
        if let Some(bad_ip) =
            self.webrtc.ice_ips.iter().find(|s| {
                s.parse::<ipnet::IpNet>().is_err() && s.parse::<std::net::IpAddr>().is_err()
            })
        {
            return bad(
                "webrtc.ice_ips",
                &format!("{bad_ip:?} is not an address or range"),
            );
        }
        if !self.webrtc.public_ips.is_empty() && !self.webrtc.stun_servers.is_empty() {
            return bad(
                "webrtc.public_ips",
                "give either public_ips (1:1 NAT) or stun_servers, not both",
            );
        }
        if self.rtp.port_min >= self.rtp.port_max {
            return bad("rtp.port_min", "must be lower than rtp.port_max");
        }
        if self.rtp.port_max - self.rtp.port_min < 4 {
            return bad("rtp.port_max", "the range must hold at least two calls");
        }
        if self.rtp.clock_threads > 64 {
            return bad("rtp.clock_threads", "must be 0 (one per core) to 64");
        }
        if self.records.queue_capacity == 0 {
            return bad("records.queue_capacity", "must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be \"text\" or \"json\"");
        }
        if decode_key(&self.api.encryption_key).is_none() {
            return bad("api.encryption_key", "must be 64 hex characters (32 bytes)");
        }
        if !self.api.demo_mode && self.api.encryption_key == DEMO_ENCRYPTION_KEY {
            return bad(
                "api.encryption_key",
                "the demo key is refused when api.demo_mode is false",
            );
        }
        if !self.api.demo_mode && self.api.jwt_secret == "switchboard-demo-jwt-secret-change-me" {
            return bad(
                "api.jwt_secret",
                "the demo secret is refused when api.demo_mode is false",
            );
        }
        if !matches!(self.embeddings.provider.as_str(), "local" | "openai") {
            return bad("embeddings.provider", "must be \"local\" or \"openai\"");
        }
        if self.embeddings.provider == "openai" && self.embeddings.base_url.trim().is_empty() {
            return bad(
                "embeddings.base_url",
                "is required with the openai provider",
            );
        }
        if !(1..=5000).contains(&self.embeddings.query_budget_ms) {
            return bad("embeddings.query_budget_ms", "must be between 1 and 5000");
        }
        if self.stt.workers == 0 || self.stt.threads == 0 {
            return bad("stt.workers", "workers and threads must be at least 1");
        }
        if !(1..=8).contains(&self.stt.beam_size) {
            return bad("stt.beam_size", "must be 1 (greedy) to 8");
        }
        if self.database.url.is_empty() {
            return bad("database.url", "must not be empty");
        }
        if let Err(why) = crate::outbound::Allowed::parse(&self.outbound.allow) {
            return bad("outbound.allow", &why);
        }
        if let Err(why) = crate::metrics::ScrapeAllow::parse(&self.api.metrics_allow) {
            return bad("api.metrics_allow", &why);
        }
        if !self.telemetry.otlp_endpoint.is_empty() {
            if let Err(why) = crate::telemetry::traces_url(&self.telemetry.otlp_endpoint) {
                return bad("telemetry.otlp_endpoint", &why);
            }
        }
        Ok(())
    }

    /// The encryption key as bytes (validated at load).
    pub fn encryption_key_bytes(&self) -> [u8; 32] {
        decode_key(&self.api.encryption_key).unwrap_or([0; 32])
    }

    /// This node's name for `call_logs.node_id`.
    pub fn node_name(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "switchboard".to_string())
    }

    /// The address SIP and SDP advertise.
    pub fn advertised_ip(&self) -> std::net::IpAddr {
        if let Ok(ip) = self.sip.public_address.parse() {
            return ip;
        }
        let ip = self.sip.listen.ip();
        if ip.is_unspecified() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            ip
        }
    }

    /// The configuration as TOML with every secret replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(v) => v,
            Err(e) => return format!("<unprintable configuration: {e}>"),
        };
        redact(&mut value);
        toml::to_string_pretty(&value).unwrap_or_default()
    }
}

fn parse_env_value(s: &str) -> figment::value::Value {
    // Numbers, booleans and lists arrive as strings from the environment;
    // let TOML decide their type so `SWITCHBOARD_RTP__PORT_MIN=4000` is a
    // number and `SWITCHBOARD_OUTBOUND__ALLOW='["10.0.0.0/8"]'` a list.
    match toml::from_str::<toml::Value>(&format!("v = {s}")) {
        Ok(toml::Value::Table(t)) => match t.get("v") {
            Some(toml::Value::Integer(i)) => (*i).into(),
            Some(toml::Value::Float(f)) => (*f).into(),
            Some(toml::Value::Boolean(b)) => (*b).into(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<String>>()
                .into(),
            _ => s.to_string().into(),
        },
        _ => s.to_string().into(),
    }
}

fn decode_key(hex_key: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_key).ok()?;
    bytes.try_into().ok()
}

fn redact(value: &mut toml::Value) {
    if let toml::Value::Table(table) = value {
        for (key, v) in table.iter_mut() {
            let secret = key.contains("secret") || key.contains("password") || key.ends_with("key");
            if secret {
                if let toml::Value::String(s) = v {
                    if !s.is_empty() {
                        *s = "***".into();
                    }
                }
            } else if key == "url" {
                if let toml::Value::String(s) = v {
                    *s = redact_url_password(s);
                }
            } else {
                redact(v);
            }
        }
    }
}

fn redact_url_password(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:***@host/db
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_cluster_node_needs_its_own_name_and_a_sane_timeout() {
        let on = [("SWITCHBOARD_CLUSTER__ENABLED", "true")];
        let e = Config::load_from(None, &env(&on)).unwrap_err().to_string();
        assert!(e.contains("node_id"), "{e}");
        let named = [
            ("SWITCHBOARD_CLUSTER__ENABLED", "true"),
            ("SWITCHBOARD_NODE_ID", "node-1"),
        ];
        let c = Config::load_from(None, &env(&named)).expect("named node");
        assert!(c.cluster.enabled);
        let e = Config::load_from(
            None,
            &env(&[
                ("SWITCHBOARD_CLUSTER__ENABLED", "true"),
                ("SWITCHBOARD_NODE_ID", "node-1"),
                ("SWITCHBOARD_CLUSTER__NODE_TIMEOUT_MS", "1500"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.node_timeout_ms"), "{e}");
        let proxies = [("SWITCHBOARD_SIP__TRUSTED_PROXIES", r#"["10.0.0.5/32"]"#)];
        let c = Config::load_from(None, &env(&proxies)).expect("proxies");
        assert_eq!(c.sip.trusted_proxies.len(), 1);
    }

    #[test]
    fn defaults_load() {
        let c = Config::load_from(None, &[]).expect("defaults");
        assert_eq!(c.sip.listen.port(), 5060);
        assert_eq!(c.rtp.port_min, 20000);
        assert_eq!(c.rtp.port_max, 30000);
        assert_eq!(c.api.listen.port(), 8080);
        // Nothing listens beyond this machine until configured to.
        assert!(c.sip.listen.ip().is_loopback(), "{}", c.sip.listen);
        assert!(c.api.listen.ip().is_loopback(), "{}", c.api.listen);
        assert_eq!(c.sip.answer_delay_ms, 100);
    }

    #[test]
    fn the_ring_time_is_configurable_and_bounded() {
        let c = Config::load_from(None, &env(&[("SWITCHBOARD_SIP__ANSWER_DELAY_MS", "0")]))
            .expect("no ring");
        assert_eq!(c.sip.answer_delay_ms, 0);
        let e = Config::load_from(None, &env(&[("SWITCHBOARD_SIP__ANSWER_DELAY_MS", "60000")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.answer_delay_ms"), "{e}");
    }

    #[test]
    fn each_installation_generates_its_own_secrets_once() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let load = |dir: &Path| {
            let d = dir.join("secrets").display().to_string();
            Config::load_from(None, &env(&[("SWITCHBOARD_API__SECRETS_DIR", d.as_str())])).unwrap()
        };
        let a = load(one.path());
        assert_ne!(a.api.encryption_key, DEMO_ENCRYPTION_KEY);
        assert!(decode_key(&a.api.encryption_key).is_some());
        assert_eq!(a.api.jwt_secret.len(), 64);
        // Kept: the next start reads the same ones.
        let again = load(one.path());
        assert_eq!(again.api.encryption_key, a.api.encryption_key);
        assert_eq!(again.api.jwt_secret, a.api.jwt_secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(one.path().join("secrets/encryption_key")).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o077,
                0,
                "readable by its owner only"
            );
        }
        // Another installation has others.
        let b = load(two.path());
        assert_ne!(b.api.encryption_key, a.api.encryption_key);
        assert_ne!(b.api.jwt_secret, a.api.jwt_secret);
        // Many processes starting at once agree on one key.
        let three = tempfile::tempdir().unwrap();
        let dir = three.path().to_path_buf();
        let keys: Vec<String> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || load(&dir).api.encryption_key)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        // A configured key is used as it is.
        let c = Config::load_from(
            None,
            &env(&[("SWITCHBOARD_API__ENCRYPTION_KEY", &"ab".repeat(32))]),
        )
        .unwrap();
        assert_eq!(c.api.encryption_key, "ab".repeat(32));
    }

    #[test]
    fn env_override_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("local.toml");
        std::fs::write(&file, "[rtp]\nport_min = 30000\nport_max = 31000\n").unwrap();
        let c = Config::load_from(
            Some(&file),
            &env(&[
                ("SWITCHBOARD_RTP__PORT_MIN", "40000"),
                ("SWITCHBOARD_RTP__PORT_MAX", "40100"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rtp.port_min, 40000);
        assert_eq!(c.rtp.port_max, 40100);
        let c = Config::load_from(Some(&file), &[]).unwrap();
        assert_eq!(c.rtp.port_min, 30000);
    }

    #[test]
    fn malformed_value_names_the_key() {
        let err = Config::load_from(None, &env(&[("SWITCHBOARD_SIP__LISTEN", "not-an-address")]))
            .unwrap_err();
        assert!(err.to_string().contains("sip.listen"), "{err}");
        let err =
            Config::load_from(None, &env(&[("SWITCHBOARD_RTP__PORT_MIN", "seventy")])).unwrap_err();
        assert!(err.to_string().contains("rtp.port_min"), "{err}");
        let err = Config::load_from(None, &env(&[("SWITCHBOARD_API__ENCRYPTION_KEY", "abc")]))
            .unwrap_err();
        assert!(err.to_string().contains("api.encryption_key"), "{err}");
    }

    #[test]
    fn database_url_env_overrides() {
        let c = Config::load_from(None, &env(&[("DATABASE_URL", "postgres://u:pw@db:5432/x")]))
            .unwrap();
        assert_eq!(c.database.url, "postgres://u:pw@db:5432/x");
        let printed = c.redacted();
        assert!(!printed.contains("pw@"), "{printed}");
        assert!(printed.contains("u:***@db"));
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::load_from(None, &[]).unwrap();
        let printed = c.redacted();
        assert!(!printed.contains(&c.api.jwt_secret), "{printed}");
        assert!(!printed.contains(&c.api.encryption_key), "{printed}");
        assert!(printed.contains("***"));
    }

    #[test]
    fn embeddings_settings_are_checked_and_the_key_redacted() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.embeddings.provider, "local");
        for bad in [
            vec![("SWITCHBOARD_EMBEDDINGS__PROVIDER", "bogus")],
            vec![("SWITCHBOARD_EMBEDDINGS__PROVIDER", "openai")], // no base_url
            vec![("SWITCHBOARD_EMBEDDINGS__QUERY_BUDGET_MS", "0")],
        ] {
            let err = Config::load_from(None, &env(&bad)).unwrap_err();
            assert!(err.to_string().contains("embeddings."), "{err}");
        }
        let c = Config::load_from(
            None,
            &env(&[
                ("SWITCHBOARD_EMBEDDINGS__PROVIDER", "openai"),
                ("SWITCHBOARD_EMBEDDINGS__BASE_URL", "http://127.0.0.1:9/v1"),
                ("SWITCHBOARD_EMBEDDINGS__API_KEY", "sk-embed-secret"),
            ]),
        )
        .unwrap();
        assert!(!c.redacted().contains("sk-embed-secret"));
    }

    #[test]
    fn the_outbound_allow_list_is_checked_and_read_from_the_environment() {
        let c = Config::load_from(None, &[]).unwrap();
        assert!(c.outbound.allow.is_empty(), "nothing internal by default");
        let c = Config::load_from(
            None,
            &env(&[(
                "SWITCHBOARD_OUTBOUND__ALLOW",
                r#"["127.0.0.1/32", "vllm.internal"]"#,
            )]),
        )
        .unwrap();
        let allowed = c.outbound.allowed();
        assert!(allowed.permits("127.0.0.1".parse().unwrap()));
        assert!(!allowed.permits("127.0.0.2".parse().unwrap()));
        assert!(allowed.permits_host("vllm.internal"));
        let err = Config::load_from(
            None,
            &env(&[("SWITCHBOARD_OUTBOUND__ALLOW", r#"["10.0.0.0/40"]"#)]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("outbound.allow"), "{err}");
    }

    #[test]
    fn metrics_scrapers_are_loopback_by_default_and_checked() {
        let c = Config::load_from(None, &[]).unwrap();
        let allow = c.api.metrics_allow();
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(allow.permits("::1".parse().unwrap()));
        assert!(!allow.permits("10.0.0.1".parse().unwrap()));
        let c = Config::load_from(
            None,
            &env(&[("SWITCHBOARD_API__METRICS_ALLOW", r#"["10.0.0.0/8"]"#)]),
        )
        .unwrap();
        assert!(c.api.metrics_allow().permits("10.9.8.7".parse().unwrap()));
        assert!(!c.api.metrics_allow().permits("127.0.0.1".parse().unwrap()));
        let err = Config::load_from(
            None,
            &env(&[("SWITCHBOARD_API__METRICS_ALLOW", r#"["prometheus"]"#)]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("api.metrics_allow"), "{err}");
    }

    #[test]
    fn traces_are_off_by_default_and_the_endpoint_is_checked() {
        let c = Config::load_from(None, &[]).unwrap();
        assert!(c.telemetry.otlp_endpoint.is_empty());
        let err = Config::load_from(
            None,
            &env(&[("SWITCHBOARD_TELEMETRY__OTLP_ENDPOINT", "collector:4318")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
        Config::load_from(
            None,
            &env(&[(
                "SWITCHBOARD_TELEMETRY__OTLP_ENDPOINT",
                "http://127.0.0.1:4318",
            )]),
        )
        .expect("an http endpoint");
    }

    #[test]
    fn demo_key_refused_outside_demo_mode() {
        let err = Config::load_from(
            None,
            &env(&[
                ("SWITCHBOARD_API__DEMO_MODE", "false"),
                ("SWITCHBOARD_API__ENCRYPTION_KEY", DEMO_ENCRYPTION_KEY),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("api.encryption_key"), "{err}");
        // The generated secrets are fine outside demo mode.
        Config::load_from(None, &env(&[("SWITCHBOARD_API__DEMO_MODE", "false")]))
            .expect("generated secrets");
    }
}
