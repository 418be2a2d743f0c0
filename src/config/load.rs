//! Reading the configuration: the layers (`DEFAULT_TOML`, a file, the
//! environment), the installation's own generated secrets, the checks of
//! every value, and the redacted form for printing.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::Figment;

use super::*;

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
        if !self.stt.provider.eq_ignore_ascii_case("whisper") {
            return bad(
                "stt.provider",
                "must be \"whisper\" (the offline recognizer the node loads); a networked \
                 recognizer is chosen per agent (`stt_provider`) with the workspace's credentials",
            );
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

pub(super) fn decode_key(hex_key: &str) -> Option<[u8; 32]> {
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
