//! Agents' profiles and workspaces' provider credentials for calls, from
//! memory when nothing changed since they were loaded, else from the
//! database: at hundreds of calls a second the two queries per call were
//! about a tenth of the node's CPU. PostgreSQL says what changed
//! (`agent_profile_changed`, migration 0022's triggers); while the listener
//! is disconnected every call queries, as it would without this, and what
//! was loaded before the listener (re)connected is not served.

use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::PgPool;
use uuid::Uuid;

use super::profile::AgentProfile;
use super::profile_cache::{Change, ProfileCache};
use super::providers::{ProviderCredential, ProviderError, Providers};
use crate::db::notify::Follower;

/// The channel migration 0022's triggers notify.
pub const CHANNEL: &str = "agent_profile_changed";

pub struct Profiles {
    pool: PgPool,
    cache: Mutex<ProfileCache>,
}

impl Profiles {
    pub fn new(pool: PgPool) -> Arc<Profiles> {
        Arc::new(Profiles {
            pool,
            cache: Mutex::new(ProfileCache::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ProfileCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether changes are heard, so that loads can be served from memory.
    pub fn is_listening(&self) -> bool {
        self.lock().is_listening()
    }

    /// The agent as the database has it (from memory when unchanged).
    pub async fn profile(&self, agent_id: Uuid) -> Result<AgentProfile, sqlx::Error> {
        let as_of = {
            let mut cache = self.lock();
            if let Some(p) = cache.current_profile(agent_id) {
                return Ok(p);
            }
            cache.as_of()
        };
        let profile = AgentProfile::load(&self.pool, agent_id).await?;
        self.lock().loaded_profile(&profile, as_of);
        Ok(profile)
    }

    /// The agent as last loaded, however long ago: for a call that starts
    /// while the database is unreachable.
    pub fn last_profile(&self, agent_id: Uuid) -> Option<AgentProfile> {
        self.lock().last_profile(agent_id)
    }

    /// The workspace's active provider credentials, decrypted with `key`
    /// (from memory when unchanged).
    pub async fn credentials(
        &self,
        workspace_id: Uuid,
        key: &[u8; 32],
    ) -> Result<Vec<ProviderCredential>, ProviderError> {
        let as_of = {
            let mut cache = self.lock();
            if let Some(c) = cache.current_credentials(workspace_id) {
                return Ok(c);
            }
            cache.as_of()
        };
        let creds = Providers::load_credentials(&self.pool, workspace_id, key).await?;
        self.lock().loaded_credentials(workspace_id, &creds, as_of);
        Ok(creds)
    }

    /// Follows `agent_profile_changed` for as long as these profiles live.
    pub fn spawn_listener(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        crate::db::notify::follow_one(self.pool.clone(), CHANNEL, self)
    }
}

#[async_trait::async_trait]
impl Follower for Profiles {
    /// Listening from here on: what was loaded before may be served from
    /// the next load on.
    async fn connected(&self) {
        self.lock().connected();
    }

    async fn notified(&self, payload: &str) {
        self.lock().changed(Change::parse(payload));
    }

    /// Changes are no longer heard: every load queries until reconnected.
    fn disconnected(&self) {
        self.lock().disconnected();
    }
}
