//! What a node knows of its agents between calls, without I/O: each agent's
//! profile and each workspace's provider credentials as last loaded, and
//! whether they may still be served. An entry is served only while the
//! change listener is connected and no change touched it since the load
//! began; the listener (`profiles`) feeds this state what PostgreSQL
//! notifies. A profile no longer served is still kept, for calls that start
//! while the database is unreachable.

use std::collections::HashMap;

use uuid::Uuid;

use super::profile::AgentProfile;
use super::providers::ProviderCredential;

/// Agents whose profile is kept (about 1 KiB each). The least recently used
/// go first: an agent called today keeps its profile through an outage.
pub const MAX_PROFILES: usize = 10_000;
/// Workspaces whose credentials are kept (a few hundred bytes each).
pub const MAX_CREDENTIALS: usize = 10_000;

/// What one notification says changed (migration 0022's payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `agent:<id>`: that agent's row.
    Agent(Uuid),
    /// `workspace:<id>`: one of its personas, which its agents share.
    Workspace(Uuid),
    /// `credentials:<id>`: its `workspace_llm_config`.
    Credentials(Uuid),
    /// `*` (the model catalogue), or a payload not understood: any entry
    /// may be stale.
    Everything,
}

impl Change {
    pub fn parse(payload: &str) -> Change {
        let Some((kind, id)) = payload.split_once(':') else {
            return Change::Everything;
        };
        let Ok(id) = Uuid::parse_str(id) else {
            return Change::Everything;
        };
        match kind {
            "agent" => Change::Agent(id),
            "workspace" => Change::Workspace(id),
            "credentials" => Change::Credentials(id),
            _ => Change::Everything,
        }
    }
}

/// When a load began: [`ProfileCache::as_of`] before the query. A load that
/// a change (or a lost listener) overtook is kept but not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf(u64);

struct Entry<V> {
    value: V,
    /// Nothing changed since the load, as far as the listener knows.
    current: bool,
    used: u64,
}

/// One map with its bound; eviction drops the least recently used eighth at
/// once, so a full map costs one sort per `cap / 8` new keys.
struct Entries<V> {
    map: HashMap<Uuid, Entry<V>>,
    cap: usize,
}

impl<V: Clone> Entries<V> {
    fn new(cap: usize) -> Self {
        Entries {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn get(&mut self, key: Uuid, tick: u64, current_only: bool) -> Option<V> {
        let e = self.map.get_mut(&key)?;
        if current_only && !e.current {
            return None;
        }
        e.used = tick;
        Some(e.value.clone())
    }

    fn put(&mut self, key: Uuid, value: V, current: bool, tick: u64) {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.evict();
        }
        self.map.insert(
            key,
            Entry {
                value,
                current,
                used: tick,
            },
        );
    }

    fn evict(&mut self) {
        let mut used: Vec<u64> = self.map.values().map(|e| e.used).collect();
        let drop = (self.cap / 8).clamp(1, used.len());
        let (_, threshold, _) = used.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        self.map.retain(|_, e| e.used > threshold);
    }

    fn stale_where(&mut self, mut stale: impl FnMut(&Uuid, &V) -> bool) {
        for (k, e) in self.map.iter_mut() {
            if stale(k, &e.value) {
                e.current = false;
            }
        }
    }
}

pub struct ProfileCache {
    /// The listener is connected: a change would be heard.
    listening: bool,
    /// Bumped by every change and every connect or disconnect of the
    /// listener; a load is current only if it did not move meanwhile.
    generation: u64,
    tick: u64,
    /// By agent id.
    profiles: Entries<AgentProfile>,
    /// By workspace id. Decrypted keys are dropped as soon as they may be
    /// stale: they are not kept for outages (a call then uses the offline
    /// defaults, as it always has).
    credentials: Entries<Vec<ProviderCredential>>,
}

impl Default for ProfileCache {
    fn default() -> Self {
        ProfileCache::with_caps(MAX_PROFILES, MAX_CREDENTIALS)
    }
}

impl ProfileCache {
    pub fn with_caps(profiles: usize, credentials: usize) -> ProfileCache {
        ProfileCache {
            listening: false,
            generation: 0,
            tick: 0,
            profiles: Entries::new(profiles),
            credentials: Entries::new(credentials),
        }
    }

    pub fn is_listening(&self) -> bool {
        self.listening
    }

    pub fn as_of(&self) -> AsOf {
        AsOf(self.generation)
    }

    fn tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The agent's profile if nothing changed since it was loaded.
    pub fn current_profile(&mut self, agent_id: Uuid) -> Option<AgentProfile> {
        if !self.listening {
            return None;
        }
        let tick = self.tick();
        self.profiles.get(agent_id, tick, true)
    }

    /// The agent's profile as last loaded, however stale (an outage).
    pub fn last_profile(&mut self, agent_id: Uuid) -> Option<AgentProfile> {
        let tick = self.tick();
        self.profiles.get(agent_id, tick, false)
    }

    /// A profile loaded by a query that began at `as_of`.
    pub fn loaded_profile(&mut self, profile: &AgentProfile, as_of: AsOf) {
        let current = self.listening && as_of.0 == self.generation;
        let tick = self.tick();
        self.profiles
            .put(profile.agent_id, profile.clone(), current, tick);
    }

    /// The workspace's credentials if nothing changed since they were loaded.
    pub fn current_credentials(&mut self, workspace_id: Uuid) -> Option<Vec<ProviderCredential>> {
        if !self.listening {
            return None;
        }
        let tick = self.tick();
        self.credentials.get(workspace_id, tick, true)
    }

    /// Credentials loaded by a query that began at `as_of`; kept only if
    /// they may be served.
    pub fn loaded_credentials(
        &mut self,
        workspace_id: Uuid,
        credentials: &[ProviderCredential],
        as_of: AsOf,
    ) {
        if self.listening && as_of.0 == self.generation {
            let tick = self.tick();
            self.credentials
                .put(workspace_id, credentials.to_vec(), true, tick);
        }
    }

    /// A notification: what it names is no longer served.
    pub fn changed(&mut self, change: Change) {
        self.generation += 1;
        match change {
            Change::Agent(id) => self.profiles.stale_where(|agent, _| *agent == id),
            Change::Workspace(ws) => self.profiles.stale_where(|_, p| p.workspace_id == ws),
            Change::Credentials(ws) => {
                self.credentials.map.remove(&ws);
            }
            Change::Everything => self.forget_all(),
        }
    }

    /// The listener is connected (again): changes made while no one
    /// listened are unknown, so nothing loaded before is served.
    pub fn connected(&mut self) {
        self.forget_all();
        self.listening = true;
    }

    /// The listener lost its connection: changes are no longer heard, so
    /// every call queries the database until it is back.
    pub fn disconnected(&mut self) {
        self.forget_all();
        self.listening = false;
    }

    fn forget_all(&mut self) {
        self.generation += 1;
        self.profiles.stale_where(|_, _| true);
        self.credentials.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(agent: u128, workspace: u128) -> AgentProfile {
        let mut p = AgentProfile::for_tests(None);
        p.agent_id = Uuid::from_u128(agent);
        p.workspace_id = Uuid::from_u128(workspace);
        p
    }

    fn cred(key: &str) -> ProviderCredential {
        ProviderCredential {
            provider: "openai".into(),
            base_url: None,
            api_key: key.into(),
        }
    }

    fn listening() -> ProfileCache {
        let mut c = ProfileCache::default();
        c.connected();
        c
    }

    fn load(c: &mut ProfileCache, p: &AgentProfile) {
        let as_of = c.as_of();
        c.loaded_profile(p, as_of);
    }

    #[test]
    fn payloads_parse_and_anything_else_means_everything() {
        let id = Uuid::from_u128(7);
        assert_eq!(Change::parse(&format!("agent:{id}")), Change::Agent(id));
        assert_eq!(
            Change::parse(&format!("workspace:{id}")),
            Change::Workspace(id)
        );
        assert_eq!(
            Change::parse(&format!("credentials:{id}")),
            Change::Credentials(id)
        );
        assert_eq!(Change::parse("*"), Change::Everything);
        assert_eq!(Change::parse("agent:nope"), Change::Everything);
        assert_eq!(Change::parse(&format!("phone:{id}")), Change::Everything);
    }

    #[test]
    fn a_loaded_profile_is_served_until_its_agent_changes() {
        let mut c = listening();
        let (a, b) = (profile(1, 10), profile(2, 10));
        load(&mut c, &a);
        load(&mut c, &b);
        assert_eq!(c.current_profile(a.agent_id).unwrap().agent_id, a.agent_id);
        c.changed(Change::Agent(a.agent_id));
        assert!(c.current_profile(a.agent_id).is_none());
        assert!(c.current_profile(b.agent_id).is_some(), "another agent");
        // Still there for an outage, and served again once reloaded.
        assert!(c.last_profile(a.agent_id).is_some());
        load(&mut c, &a);
        assert!(c.current_profile(a.agent_id).is_some());
    }

    #[test]
    fn a_persona_change_stales_its_workspace_only() {
        let mut c = listening();
        let (a, b, other) = (profile(1, 10), profile(2, 10), profile(3, 11));
        for p in [&a, &b, &other] {
            load(&mut c, p);
        }
        c.changed(Change::Workspace(Uuid::from_u128(10)));
        assert!(c.current_profile(a.agent_id).is_none());
        assert!(c.current_profile(b.agent_id).is_none());
        assert!(c.current_profile(other.agent_id).is_some());
        c.changed(Change::Everything);
        assert!(c.current_profile(other.agent_id).is_none());
        assert!(c.last_profile(other.agent_id).is_some());
    }

    #[test]
    fn a_load_overtaken_by_a_change_is_not_served() {
        let mut c = listening();
        let a = profile(1, 10);
        let as_of = c.as_of();
        // The row changes (and is notified) while the query is in flight:
        // the query may have read the old row.
        c.changed(Change::Agent(a.agent_id));
        c.loaded_profile(&a, as_of);
        assert!(c.current_profile(a.agent_id).is_none());
        assert!(c.last_profile(a.agent_id).is_some());

        let ws = Uuid::from_u128(10);
        let as_of = c.as_of();
        c.changed(Change::Credentials(ws));
        c.loaded_credentials(ws, &[cred("old")], as_of);
        assert!(c.current_credentials(ws).is_none());
    }

    #[test]
    fn nothing_is_served_while_no_one_listens_nor_what_was_loaded_before() {
        let mut c = ProfileCache::default();
        let a = profile(1, 10);
        let ws = a.workspace_id;
        load(&mut c, &a);
        c.loaded_credentials(ws, &[cred("k")], c.as_of());
        assert!(c.current_profile(a.agent_id).is_none(), "never connected");
        assert!(c.current_credentials(ws).is_none());

        c.connected();
        assert!(c.current_profile(a.agent_id).is_none(), "loaded unheard");
        load(&mut c, &a);
        c.loaded_credentials(ws, &[cred("k")], c.as_of());
        assert!(c.current_profile(a.agent_id).is_some());
        assert_eq!(c.current_credentials(ws).unwrap()[0].api_key, "k");

        // A load that began before the connection dropped is not current.
        let as_of = c.as_of();
        c.disconnected();
        assert!(c.current_profile(a.agent_id).is_none());
        assert!(c.current_credentials(ws).is_none());
        assert!(c.last_profile(a.agent_id).is_some(), "kept for outages");
        c.connected();
        c.loaded_profile(&a, as_of);
        assert!(c.current_profile(a.agent_id).is_none());
    }

    #[test]
    fn credentials_are_dropped_when_they_change() {
        let mut c = listening();
        let (ws, other) = (Uuid::from_u128(10), Uuid::from_u128(11));
        c.loaded_credentials(ws, &[cred("a")], c.as_of());
        c.loaded_credentials(other, &[], c.as_of());
        c.changed(Change::Credentials(ws));
        assert!(c.current_credentials(ws).is_none());
        assert_eq!(c.current_credentials(other).map(|v| v.len()), Some(0));
        assert!(!c.credentials.map.contains_key(&ws), "no stale key kept");
    }

    #[test]
    fn the_least_recently_used_go_first_when_full() {
        let mut c = ProfileCache::with_caps(16, 16);
        c.connected();
        for i in 0..16 {
            load(&mut c, &profile(i, 10));
        }
        // Agent 0 is called again: it is now recent.
        assert!(c.current_profile(Uuid::from_u128(0)).is_some());
        load(&mut c, &profile(100, 10));
        assert!(c.profiles.map.len() <= 16);
        assert!(c.last_profile(Uuid::from_u128(0)).is_some());
        assert!(c.last_profile(Uuid::from_u128(1)).is_none(), "oldest gone");
        assert!(c.last_profile(Uuid::from_u128(100)).is_some());
        for i in 200..1000 {
            load(&mut c, &profile(i, 10));
        }
        assert!(c.profiles.map.len() <= 16);
    }
}
