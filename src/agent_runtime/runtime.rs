//! The process-wide part of the agent runtime: shared providers, the node's
//! record writer and the live-call registry. It is the SIP layer's `CallHandler`.

use std::sync::Arc;

use sqlx::PgPool;

use super::profiles::Profiles;
use super::providers::Providers;
use super::registry::Registry;
use super::retrieval::KnowledgeIndex;
use crate::config::Config;
use crate::db::notify::Subscription;
use crate::records::RecordWriter;
use crate::sip::call::{CallHandler, IncomingCall};

pub struct Runtime {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub records: RecordWriter,
    pub registry: Registry,
    /// The process-wide defaults; each call picks its agent's providers.
    pub providers: Providers,
    /// Every agent's knowledge in memory, kept current by PostgreSQL.
    pub knowledge: Arc<KnowledgeIndex>,
    /// Where turns are traced (`[telemetry] otlp_endpoint`), if anywhere.
    pub telemetry: Option<crate::telemetry::Telemetry>,
    /// Agents' profiles and workspaces' credentials, kept current by
    /// PostgreSQL; each agent's last profile also serves calls that start
    /// while the database is unreachable.
    pub profiles: Arc<Profiles>,
    /// The background pre-renderer (stopped with the runtime).
    prerender: Option<tokio::task::AbortHandle>,
    /// The SIP service, once started: warm transfers dial through it.
    pub sip: std::sync::OnceLock<crate::sip::SipServerHandle>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(task) = &self.prerender {
            task.abort();
        }
    }
}

impl Runtime {
    /// `records`: the node's record writer, shared with the SIP layer.
    pub fn new(
        pool: PgPool,
        config: Arc<Config>,
        providers: Providers,
        records: RecordWriter,
    ) -> Arc<Runtime> {
        let prerender =
            super::tts_prerender::spawn(pool.clone(), config.clone(), providers.clone())
                .map(|t| t.abort_handle());
        let knowledge = KnowledgeIndex::new(
            pool.clone(),
            &super::embeddings::Embedder::name(providers.embedder.as_ref()),
        );
        let profiles = Profiles::new(pool.clone());
        // One connection hears both channels.
        crate::db::notify::follow(
            pool.clone(),
            vec![
                Subscription::new(super::retrieval::store::CHANNEL, &knowledge),
                Subscription::new(super::profiles::CHANNEL, &profiles),
            ],
        );
        let telemetry = (!config.telemetry.otlp_endpoint.is_empty())
            .then(|| {
                crate::telemetry::Telemetry::start(
                    &config.telemetry.otlp_endpoint,
                    &config.telemetry.service_name,
                )
                .map_err(|e| tracing::error!(error = %e, "traces not exported"))
                .ok()
            })
            .flatten();
        Arc::new(Runtime {
            telemetry,
            knowledge,
            pool,
            config,
            records,
            registry: Registry::new(),
            providers,
            profiles,
            prerender,
            sip: std::sync::OnceLock::new(),
        })
    }
}

/// The SIP layer's handler: each accepted call gets its own task.
#[derive(Clone)]
pub struct AgentCalls(pub Arc<Runtime>);

impl CallHandler for AgentCalls {
    fn on_call(&self, call: IncomingCall) {
        tokio::spawn(super::call::run_call(self.0.clone(), call));
    }

    /// Admission on measured load (`[admission]`): the live calls against
    /// the fixed cap, and how long transcriptions wait for the CPU.
    fn admits(&self) -> Result<(), crate::sip::call::Busy> {
        use super::admission::{gauge, Refusal};
        let limits = self.0.config.admission.limits();
        let live = self.0.registry.len();
        let verdict = match gauge().lock() {
            Ok(mut g) => g.admits(std::time::Instant::now(), live, &limits),
            Err(_) => Ok(()),
        };
        verdict.map_err(|r| crate::sip::call::Busy {
            reason: match r {
                Refusal::Full => "node full",
                Refusal::Overloaded => "overloaded",
            },
            retry_after_secs: limits.retry_after_secs,
        })
    }
}
