//! `switchboard serve`: wires the faces together — SIP hands accepted calls
//! to the agent runtime, the API sees the runtime's live calls — and runs
//! them until Ctrl-C or SIGTERM, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::agent_runtime::providers::Providers;
use crate::agent_runtime::{AgentCalls, Runtime};
use crate::api::{ApiState, Dialer, LiveCalls, NodeCalls};
use crate::config::Config;
use crate::db::cluster::{Cluster, NodeFacts};
use crate::readiness::{Stage, WarmUp};
use crate::records::RecordWriter;
use crate::sip::server::{SipOptions, SipServer, SipServerHandle};

/// The running faces of one node.
pub struct Services {
    pub sip: SipServerHandle,
    pub api_addr: SocketAddr,
    pub runtime: Arc<Runtime>,
    /// The node's browser calls (WHIP), when `webrtc.enabled`.
    web: Option<Arc<crate::agent_runtime::web_leg::WebCalls>>,
    api_stop: CancellationToken,
    api_task: tokio::task::JoinHandle<()>,
    /// Stops the cluster heartbeat (after the drain, so others see it).
    cluster_stop: CancellationToken,
    /// The start-up stages still running (`/readyz`).
    pub warm_up: Arc<WarmUp>,
}

/// Starts SIP, RTP (per call) and the API on an already migrated database.
pub async fn start(config: Arc<Config>, pool: PgPool) -> anyhow::Result<Services> {
    // Before the first call: the clock's options are fixed once it runs.
    let clock = crate::media::ClockOptions {
        threads: config.rtp.clock_threads as usize,
        realtime: config.rtp.clock_realtime,
    };
    if !crate::media::configure_clock(clock) {
        tracing::warn!(
            ?clock,
            "media clock already configured by an earlier node in this process"
        );
    }
    let providers = tokio::task::spawn_blocking({
        let config = config.clone();
        move || Providers::from_config(&config)
    })
    .await
    .context("loading providers")?
    .context("loading the offline providers (whisper model, espeak-ng)")?;
    let embedder =
        providers.embedder.clone() as Arc<dyn crate::agent_runtime::embeddings::Embedder>;
    let warm_up = Arc::new(WarmUp::new(&[Stage::SpeechToText, Stage::Knowledge]));
    spawn_stt_warm_up(providers.stt.clone(), warm_up.clone());
    // One writer for every record of the node; it replays what an earlier
    // run spilled before anything new.
    let records = RecordWriter::start(pool.clone(), &config.records);
    let runtime = Runtime::new(pool.clone(), config.clone(), providers, records.clone());
    let cluster = if config.cluster.enabled {
        let c = Cluster::new(pool.clone(), config.node_name(), &config.cluster);
        c.join(
            &config.sip.listen.to_string(),
            &config.api.listen.to_string(),
        )
        .await
        .context("joining the cluster (cluster_nodes)")?;
        Some(c)
    } else {
        None
    };
    let options = SipOptions {
        cluster: cluster.clone(),
        answer_delay: std::time::Duration::from_millis(config.sip.answer_delay_ms),
        ..SipOptions::default()
    };
    let sip = SipServer::start_with(
        &config,
        pool.clone(),
        records,
        Arc::new(AgentCalls(runtime.clone())),
        options,
    )
    .await
    .context("starting SIP")?;
    let _ = runtime.sip.set(sip.clone());
    let mut api_state = ApiState::new(pool, config.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_live_calls(Arc::new(NodeCalls {
            registry: runtime.registry.clone(),
            sip: sip.clone(),
        }) as Arc<dyn LiveCalls>)
        .with_dialer(Arc::new(sip.clone()) as Arc<dyn Dialer>)
        .with_voice(runtime.clone() as Arc<dyn crate::api::voice_preview::VoicePreview>);
    let cluster_stop = CancellationToken::new();
    if let Some(c) = &cluster {
        api_state = api_state.with_cluster(c.clone());
        let (draining, registry) = (sip.clone(), runtime.registry.clone());
        c.spawn(
            NodeFacts {
                sip_addr: sip.local_addr().to_string(),
                api_addr: config.api.listen.to_string(),
                draining: Box::new(move || draining.is_draining()),
                hang_up: Box::new(move |ws, call| {
                    registry.hangup(ws, call, "api");
                }),
            },
            cluster_stop.clone(),
        );
    }
    let mut web = None;
    if config.webrtc.enabled {
        let calls = crate::agent_runtime::web_leg::WebCalls::new(&config.webrtc)
            .context("setting up WebRTC (webrtc.*)")?;
        web = Some(calls.clone());
        let draining = sip.clone();
        api_state = api_state.with_whip(crate::api::whip::WhipCalls {
            runtime: runtime.clone(),
            calls,
            draining: Arc::new(move || draining.is_draining()),
        });
    }
    let api_state = api_state
        .with_embedder(embedder.clone())
        .with_knowledge(runtime.knowledge.clone())
        .with_warm_up(warm_up.clone());
    spawn_knowledge_start(runtime.clone(), embedder, warm_up.clone());
    let stt = runtime.providers.stt.clone();
    crate::heap::spawn_trimmer(cluster_stop.clone(), move || stt.release_idle());
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API on {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;
    let api_stop = CancellationToken::new();
    let stop = api_stop.clone();
    let api_task = tokio::spawn(async move {
        if let Err(err) =
            crate::api::serve(listener, api_state, async move { stop.cancelled().await }).await
        {
            tracing::error!(error = %err, "API server failed");
        }
    });
    tracing::info!(sip = %sip.local_addr(), api = %api_addr, "serving");
    Ok(Services {
        sip,
        api_addr,
        runtime,
        web,
        api_stop,
        api_task,
        cluster_stop,
        warm_up,
    })
}

/// In the background: one transcription of a quiet second, so the model's
/// pages are in memory and a decoder state is made before the first caller
/// speaks (cold, the first turn of the first call waited about a second).
fn spawn_stt_warm_up(stt: Arc<dyn crate::agent_runtime::stt::SpeechToText>, warm_up: Arc<WarmUp>) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        // Faint noise rather than digital silence, so the decoder runs.
        let quiet: Vec<i16> = (0..24_000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 24) as i16 - 128) / 4)
            .collect();
        match stt
            .transcribe(&quiet, &crate::agent_runtime::stt::SttHints::language("en"))
            .await
        {
            Ok(_) => tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "speech-to-text warmed up"
            ),
            Err(err) => tracing::warn!(error = %err, "speech-to-text warm-up failed"),
        }
        warm_up.finished(Stage::SpeechToText);
    });
}

/// In the background: the everyday requests embedded (the off-topic
/// reference), the live agents' knowledge into memory, then every
/// chunk whose vector is missing or from another model embedded with the
/// configured model (each write refreshes the indexes through the trigger).
fn spawn_knowledge_start(
    runtime: Arc<Runtime>,
    embedder: Arc<dyn crate::agent_runtime::embeddings::Embedder>,
    warm_up: Arc<WarmUp>,
) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match runtime.knowledge.learn_everyday(embedder.as_ref()).await {
            Ok(n) => tracing::info!(
                requests = n,
                ms = started.elapsed().as_millis() as u64,
                "everyday requests embedded (the off-topic reference)"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "everyday requests not embedded; off-topic questions are told by their scores alone")
            }
        }
        match runtime.knowledge.warm_live_agents().await {
            Ok(n) => tracing::info!(agents = n, "knowledge of live agents in memory"),
            Err(err) => tracing::warn!(error = %err, "live agents' knowledge not loaded"),
        }
        let started = std::time::Instant::now();
        match crate::agent_runtime::embeddings::embed_all_missing_chunks(
            &runtime.pool,
            embedder.as_ref(),
            1_000_000,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(chunks = n, model = %embedder.name(), ms = started.elapsed().as_millis() as u64, "knowledge re-embedded")
            }
            Err(err) => {
                tracing::warn!(error = %err, "re-embedding knowledge failed; full-text only for those chunks")
            }
        }
        warm_up.finished(Stage::Knowledge);
    });
}

impl Services {
    /// Graceful stop: new INVITEs and WHIP offers get 503, live calls (SIP
    /// and browser) get up to `limit` to end, queued records are written
    /// (`records.stop_flush_secs`, then what is left goes to the spill file
    /// for the next start), then everything stops.
    pub async fn stop(self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let left = self.sip.drain(limit).await;
        if left > 0 {
            tracing::warn!(left, "calls still live at the drain limit were hung up");
        }
        if let Some(web) = &self.web {
            while !web.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !web.is_empty() {
                tracing::warn!(
                    left = web.len(),
                    "browser calls still live at the drain limit are hung up"
                );
                web.hang_up_all();
            }
        }
        // The calls' last records are queued as their tasks end.
        for _ in 0..50 {
            if self.runtime.registry.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.sip.shutdown();
        let flush = Duration::from_secs(self.runtime.config.records.stop_flush_secs);
        let closed = self.runtime.records.close(flush).await;
        if !closed.flushed {
            tracing::warn!(
                spilled = closed.spilled,
                lost = closed.lost,
                "records not written before exit"
            );
        }
        self.cluster_stop.cancel();
        self.api_stop.cancel();
        let _ = self.api_task.await;
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!("configuration:\n{}", config.redacted());
    let pool = crate::db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    crate::db::migrate(&pool)
        .await
        .context("applying migrations")?;
    tracing::info!("migrations applied");
    let drain = Duration::from_secs(config.sip.drain_timeout_secs);
    let services = start(Arc::new(config), pool).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: draining live calls");
    services.stop(drain).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
