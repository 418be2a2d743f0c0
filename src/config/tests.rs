use std::path::Path;

use super::load::decode_key;
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
    // Answered at once: INVITE→200 is the node's own time.
    assert_eq!(c.sip.answer_delay_ms, 0);
}

#[test]
fn the_ring_time_is_configurable_and_bounded() {
    let c = Config::load_from(None, &env(&[("SWITCHBOARD_SIP__ANSWER_DELAY_MS", "250")]))
        .expect("a ring");
    assert_eq!(c.sip.answer_delay_ms, 250);
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
    let err =
        Config::load_from(None, &env(&[("SWITCHBOARD_API__ENCRYPTION_KEY", "abc")])).unwrap_err();
    assert!(err.to_string().contains("api.encryption_key"), "{err}");
}

#[test]
fn database_url_env_overrides() {
    let c =
        Config::load_from(None, &env(&[("DATABASE_URL", "postgres://u:pw@db:5432/x")])).unwrap();
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

#[test]
fn an_stt_provider_the_node_cannot_load_is_refused_by_name() {
    let c = Config::load_from(None, &[]).unwrap();
    assert_eq!(c.stt.provider, "whisper");
    let e = Config::load_from(None, &env(&[("SWITCHBOARD_STT__PROVIDER", "openai")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stt.provider") && e.contains("stt_provider"),
        "{e}"
    );
    assert!(Config::load_from(None, &env(&[("SWITCHBOARD_STT__PROVIDER", "Whisper")])).is_ok());
}
