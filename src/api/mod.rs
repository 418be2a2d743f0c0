//! The admin HTTP API (axum): authentication, roles, tenancy under RLS, CRUD
//! over the schema, knowledge ingestion, OpenAPI. `app(state)` is the whole
//! router; `serve` runs it with the peer address the login limiter needs.

pub mod auth;
pub mod auth_routes;
pub mod body;
pub mod calls;
pub mod console;
pub mod error;
pub mod extract;
pub mod health;
pub mod html;
pub mod keys;
pub mod knowledge;
pub mod live;
pub mod live_transcript;
pub mod metrics;
pub mod openapi;
mod openapi_custom;
pub mod operator;
pub mod outbound_calls;
pub mod ratelimit;
pub mod resource;
pub mod resources;
pub use crate::secrets;
pub mod types;
pub mod usage_summary;
pub mod validate;
pub mod voice_preview;
pub mod whip;
pub mod widget;
pub mod workspaces;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use dashmap::DashMap;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::agent_runtime::embeddings::Embedder;
use crate::agent_runtime::retrieval::KnowledgeIndex;
use crate::config::{Config, DEMO_ENCRYPTION_KEY};

pub use auth::Principal;
pub use error::ApiError;
pub use live::{Dialer, LiveCallView, LiveCalls, NodeCalls};
use ratelimit::{Limit, RateLimiter};
use types::Role;

/// Everything a handler needs. Cheap to clone (shared parts are `Arc`s).
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub live: Option<Arc<dyn LiveCalls>>,
    /// In a cluster: the live calls of every node, and hang-ups of calls
    /// another node holds.
    pub cluster: Option<Arc<crate::db::cluster::Cluster>>,
    /// Places outbound calls (`POST …/calls`); absent, that answers 503.
    pub dialer: Option<Arc<dyn Dialer>>,
    /// Runs browser calls (WHIP); absent, `…/whip` answers 503.
    pub whip: Option<whip::WhipCalls>,
    /// Embeds knowledge chunks and search queries; the runtime's default.
    pub embedder: Arc<dyn Embedder>,
    /// The in-memory knowledge the runtime retrieves from (shared with it
    /// in `serve`), so a search here ranks as a call would.
    pub knowledge: Arc<KnowledgeIndex>,
    /// Speaks voice previews as the node's calls would (`…/tts-preview`);
    /// absent, that answers 503.
    pub voice: Option<Arc<dyn voice_preview::VoicePreview>>,
    /// A node's start-up stages (`/readyz` waits for them); absent, the
    /// API alone has none.
    pub warm_up: Option<Arc<crate::readiness::WarmUp>>,
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub encryption_key: [u8; 32],
    pub login_per_email: RateLimiter,
    pub login_per_addr: RateLimiter,
    pub key_touched: DashMap<Uuid, Instant>,
    /// API keys read lately, by prefix (`auth`).
    pub known_keys: DashMap<String, auth::KnownKey>,
    /// Fetches URL knowledge sources (`[outbound] allow` admits internal
    /// addresses).
    pub http: crate::outbound::GuardedClient,
    /// Who may read `/metrics` (`api.metrics_allow`).
    pub metrics_allow: crate::metrics::ScrapeAllow,
}

/// Login attempts allowed per window: per email from one source address,
/// and per source address.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub per_email: Limit,
    pub per_addr: Limit,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_email: Limit {
                max: 5,
                window: Duration::from_secs(300),
            },
            per_addr: Limit {
                max: 30,
                window: Duration::from_secs(60),
            },
        }
    }
}

/// The client URL knowledge sources are fetched with (`outbound`).
fn knowledge_client(
    allowed: &crate::outbound::Allowed,
) -> Result<crate::outbound::GuardedClient, ApiError> {
    crate::outbound::GuardedClient::new(
        allowed.clone(),
        knowledge::FETCH_TIMEOUT,
        "switchboard-knowledge/0.1",
    )
    .map_err(ApiError::internal)
}

/// Ends a transaction that only read. Dropped, it rolls back: sqlx queues
/// the ROLLBACK and sends it with the check it makes of every connection
/// going back to the pool, so the request's answer waits for no COMMIT
/// round trip (one of the four a page of a list cost).
pub(crate) fn end_read(tx: Transaction<'static, Postgres>) {
    drop(tx);
}

impl ApiState {
    /// Refuses the demo encryption key outside demo mode (the configuration
    /// loader checks this too; a hand-built `Config` must not slip past).
    pub fn new(pool: PgPool, config: Arc<Config>) -> Result<ApiState, ApiError> {
        Self::with_login_limits(pool, config, LoginLimits::default())
    }

    pub fn with_login_limits(
        pool: PgPool,
        config: Arc<Config>,
        limits: LoginLimits,
    ) -> Result<ApiState, ApiError> {
        if !config.api.demo_mode && config.api.encryption_key == DEMO_ENCRYPTION_KEY {
            return Err(ApiError::internal(
                "api.encryption_key is the demo key and api.demo_mode is false",
            ));
        }
        if config.api.jwt_secret.is_empty() {
            return Err(ApiError::internal("api.jwt_secret is empty"));
        }
        let http = knowledge_client(&config.outbound.allowed())?;
        let embedder = crate::agent_runtime::providers::embedder_from_config(&config);
        let knowledge = KnowledgeIndex::new(pool.clone(), &embedder.name());
        if tokio::runtime::Handle::try_current().is_ok() {
            knowledge.spawn_listener();
        }
        Ok(ApiState {
            knowledge,
            pool,
            shared: Arc::new(Shared {
                encryption_key: config.encryption_key_bytes(),
                login_per_email: RateLimiter::new(limits.per_email),
                login_per_addr: RateLimiter::new(limits.per_addr),
                key_touched: DashMap::new(),
                known_keys: DashMap::new(),
                http,
                metrics_allow: config.api.metrics_allow(),
            }),
            config,
            live: None,
            cluster: None,
            dialer: None,
            voice: None,
            warm_up: None,
            whip: None,
            embedder,
        })
    }

    /// The runtime's live-call registry, for `…/calls/live`.
    pub fn with_live_calls(mut self, live: Arc<dyn LiveCalls>) -> ApiState {
        self.live = Some(live);
        self
    }

    /// The cluster this node is part of, for `…/calls/live`.
    pub fn with_cluster(mut self, cluster: Arc<crate::db::cluster::Cluster>) -> ApiState {
        self.cluster = Some(cluster);
        self
    }

    /// The node's SIP layer, for `POST …/calls`.
    pub fn with_dialer(mut self, dialer: Arc<dyn Dialer>) -> ApiState {
        self.dialer = Some(dialer);
        self
    }

    /// The node's runtime, for voice previews.
    pub fn with_voice(mut self, voice: Arc<dyn voice_preview::VoicePreview>) -> ApiState {
        self.voice = Some(voice);
        self
    }

    /// The runtime and WHIP sessions, for `POST /v1/agents/{id}/whip`.
    pub fn with_whip(mut self, whip: whip::WhipCalls) -> ApiState {
        self.whip = Some(whip);
        self
    }

    /// The embedder the runtime queries with (vectors must be comparable).
    /// The index is made anew (with its own listener) only for another
    /// model: the node's embedder is the configuration's, whose index
    /// `new` already follows.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> ApiState {
        if self.knowledge.model() != embedder.name() {
            self.knowledge = KnowledgeIndex::new(self.pool.clone(), &embedder.name());
            if tokio::runtime::Handle::try_current().is_ok() {
                self.knowledge.spawn_listener();
            }
        }
        self.embedder = embedder;
        self
    }

    /// A node's start-up stages, which `/readyz` waits for.
    pub fn with_warm_up(mut self, warm_up: Arc<crate::readiness::WarmUp>) -> ApiState {
        self.warm_up = Some(warm_up);
        self
    }

    /// The runtime's knowledge index (after [`ApiState::with_embedder`]).
    pub fn with_knowledge(mut self, knowledge: Arc<KnowledgeIndex>) -> ApiState {
        self.knowledge = knowledge;
        self
    }

    /// Lets URL sources reach loopback and private addresses (tests, or a
    /// deployment whose documents live on its own network).
    pub fn allow_private_urls(self) -> ApiState {
        self.allow_url_ranges(crate::outbound::Allowed::all())
    }

    /// Lets URL sources reach these internal addresses (and no others),
    /// in place of the configuration's `[outbound] allow`.
    pub fn allow_url_ranges(mut self, allowed: crate::outbound::Allowed) -> ApiState {
        match knowledge_client(&allowed) {
            Ok(http) => {
                let shared = Arc::get_mut(&mut self.shared);
                match shared {
                    Some(shared) => shared.http = http,
                    None => {
                        tracing::error!("allow_url_ranges on a shared state; unchanged");
                        return self;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "knowledge client; URL ranges unchanged"),
        }
        self
    }

    /// A transaction acting as the caller: `role authenticated` and the
    /// caller's claims, both local to the transaction, so RLS applies to
    /// everything the handler runs in it. Equivalent to `set local role
    /// authenticated` (PostgREST sets both this way). `BEGIN` and the two
    /// settings go in one round trip (one simple query), so the claims are
    /// written as an escaped string literal (see [`sql_literal`]).
    pub async fn begin(
        &self,
        principal: &Principal,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(self
            .pool
            .begin_with(format!("begin; {}", acting_as(principal)))
            .await?)
    }

    /// The first column of the first row of `sql` (one statement, no
    /// parameters: every value in it is a literal built from a typed value
    /// or with [`sql_literal`]), run as the caller in one round trip. The
    /// caller's settings and the statement go in one simple query, which
    /// PostgreSQL runs as one implicit transaction: the settings are local
    /// to it and nothing stays open, whatever happens. A GET by id took
    /// four round trips (the key, `BEGIN` with the settings, the
    /// statement, `COMMIT`).
    pub async fn read_text(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<Option<String>, ApiError> {
        use sqlx::Row;
        let script = format!("{}; {sql}", acting_as(principal));
        let rows = sqlx::raw_sql(&script).fetch_all(&self.pool).await?;
        // The settings' row comes first, then the statement's.
        match rows.get(1) {
            Some(row) => Ok(Some(row.try_get::<String, _>(0)?)),
            None => Ok(None),
        }
    }

    /// The caller's role in `workspace_id`; 404 when it has none (a
    /// workspace one cannot see does not exist, as far as one can tell).
    pub async fn role_in(
        &self,
        principal: &Principal,
        workspace_id: Uuid,
    ) -> Result<Role, ApiError> {
        match principal {
            Principal::ApiKey {
                workspace_id: ws,
                role,
                ..
            } => {
                if *ws == workspace_id {
                    Ok(*role)
                } else {
                    Err(ApiError::NotFound)
                }
            }
            Principal::User { user_id, .. } => {
                let role: Option<String> = sqlx::query_scalar(
                    "select role::text from user_roles where user_id = $1 and workspace_id = $2",
                )
                .bind(user_id)
                .bind(workspace_id)
                .fetch_optional(&self.pool)
                .await?;
                role.ok_or(ApiError::NotFound)?
                    .parse()
                    .map_err(ApiError::internal)
            }
        }
    }

    /// `role_in` plus a minimum role (403 below it).
    pub async fn require(
        &self,
        principal: &Principal,
        workspace_id: Uuid,
        min: Role,
    ) -> Result<Role, ApiError> {
        let role = self.role_in(principal, workspace_id).await?;
        if role.at_least(min) {
            Ok(role)
        } else {
            Err(ApiError::Forbidden(format!("requires the {min} role")))
        }
    }

    pub fn encryption_key(&self) -> &[u8; 32] {
        &self.shared.encryption_key
    }
}

/// The whole API. Serve it with [`serve`] (or
/// `into_make_service_with_connect_info::<SocketAddr>()`) so the login
/// limiter sees source addresses.
pub fn app(state: ApiState) -> Router {
    let max_body = state.config.api.max_body_bytes;
    let mut router = Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(auth_routes::routes())
        .merge(workspaces::routes())
        .merge(keys::routes())
        .merge(knowledge::routes())
        .merge(calls::routes())
        .merge(outbound_calls::routes())
        .merge(whip::routes())
        .merge(console::routes())
        .merge(widget::routes())
        .merge(live_transcript::routes())
        .merge(usage_summary::routes())
        .merge(voice_preview::routes());
    for resource in resources::ALL {
        router = router.merge(resource::routes(resource));
    }
    router
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The statement that makes the rest of its transaction act as the caller:
/// `role authenticated` and the caller's claims, both local to the
/// transaction, the claims as an escaped literal so the statement can go
/// in one simple query with others ([`ApiState::begin`],
/// [`ApiState::read_text`]).
fn acting_as(principal: &Principal) -> String {
    format!(
        "select set_config('role', 'authenticated', true), \
         set_config('request.jwt.claims', {}, true)",
        sql_literal(&principal.claims().to_string())
    )
}

/// `text` as a PostgreSQL escape-string literal (`E'…'`): backslashes and
/// quotes doubled, which reads the same whatever
/// `standard_conforming_strings` says. A NUL (which no literal can hold)
/// becomes U+FFFD; serialized JSON never contains one.
pub fn sql_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod literal_tests {
    use super::sql_literal;

    #[test]
    fn quotes_and_backslashes_are_doubled() {
        assert_eq!(sql_literal("{}"), "E'{}'");
        assert_eq!(
            sql_literal(r#"{"a":"it's \\"}"#),
            r#"E'{"a":"it''s \\\\"}'"#
        );
        assert_eq!(
            sql_literal("x'); drop table t; --"),
            "E'x''); drop table t; --'"
        );
        assert_eq!(sql_literal("a\0b"), "E'a\u{fffd}b'");
    }
}
