//! Inbound routing against the database: which trunk may send from this
//! address (`inbound_cidrs`, digest credentials), which agent owns the dialed
//! number, whether the agent is live and the workspace under its plan limit,
//! and per-trunk concurrency. Lookups are cached for `routing_cache_ttl_secs`
//! so an INVITE flood does not become a query flood; while the database is
//! unreachable, the last answer cached is used however old (calls to known
//! numbers still reach their agent during an outage), and for 5 s after a
//! lookup found it unreachable the cache answers without asking.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use super::number::{NumberingPlan, E164};
use crate::media::Codec;

/// Cache entries kept at most; a flood of random numbers cannot grow it.
const MAX_CACHE_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Trunk {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub cidrs: Vec<IpNet>,
    pub username: Option<String>,
    /// Decrypted in memory only.
    pub password: Option<String>,
    /// Preference order, limited to codecs the media engine has.
    pub codecs: Vec<Codec>,
    pub max_concurrent_calls: usize,
    /// How this trunk writes national numbers.
    pub plan: NumberingPlan,
    /// Media encryption on this trunk's calls (`sip_trunks.srtp`).
    pub srtp: super::sdes::SrtpPolicy,
}

impl Trunk {
    pub fn allows_source(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|net| net.contains(&ip))
    }

    pub fn has_credentials(&self) -> bool {
        self.username.as_deref().is_some_and(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct NumberRoute {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub sip_trunk_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub enabled: bool,
    pub agent_live: bool,
}

struct Cached<T> {
    at: Instant,
    value: T,
}

/// The cached view of routing tables.
pub struct Router {
    pool: PgPool,
    ttl: Duration,
    key: [u8; 32],
    supported: Vec<Codec>,
    trunks: Mutex<Option<Cached<Arc<Vec<Trunk>>>>>,
    numbers: Mutex<HashMap<String, Cached<Arc<Vec<NumberRoute>>>>>,
    usage: Mutex<HashMap<Uuid, Cached<bool>>>,
    /// Until then cached answers are used without asking the database: it
    /// was just found unreachable, and each try waits out the pool's
    /// acquire timeout while the caller waits for an answer.
    away_until: Mutex<Option<Instant>>,
}

/// How long a lookup that found the database unreachable spares the next ones.
const AWAY_HOLD: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Trunk passwords are stored as `v1:` + base64(24-byte nonce ‖ XChaCha20-
/// Poly1305 ciphertext) by the API (same format as `api::secrets`); rows
/// written directly in SQL (tests, seeds) may hold the plain password.
pub fn decrypt_secret(key: &[u8; 32], stored: &str) -> Option<String> {
    let Some(body) = stored.strip_prefix("v1:") else {
        return Some(stored.to_string());
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    if raw.len() < 24 + 16 {
        return None;
    }
    let (nonce, sealed) = raw.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().ok()?;
    let plain = XChaCha20Poly1305::new(key.into())
        .decrypt(&XNonce::from(nonce), sealed)
        .ok()?;
    String::from_utf8(plain).ok()
}

impl Router {
    pub fn new(pool: PgPool, ttl: Duration, key: [u8; 32], supported: Vec<Codec>) -> Router {
        Router {
            pool,
            ttl,
            key,
            supported,
            trunks: Mutex::new(None),
            numbers: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            away_until: Mutex::new(None),
        }
    }

    fn database_away(&self) -> bool {
        lock(&self.away_until).is_some_and(|t| Instant::now() < t)
    }

    fn mark_away(&self) {
        *lock(&self.away_until) = Some(Instant::now() + AWAY_HOLD);
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Enabled trunks that take inbound calls.
    pub async fn trunks(&self) -> Result<Arc<Vec<Trunk>>, sqlx::Error> {
        if let Some(c) = lock(&self.trunks).as_ref() {
            if c.at.elapsed() < self.ttl || self.database_away() {
                return Ok(c.value.clone());
            }
        }
        type Row = (
            Uuid,
            Uuid,
            String,
            Vec<String>,
            Option<String>,
            Option<String>,
            Vec<String>,
            i32,
            i32,
            i32,
            String,
        );
        let rows: Vec<Row> = match sqlx::query_as(
            "select id, workspace_id, name, inbound_cidrs, inbound_username, inbound_password, codecs, max_concurrent_calls, \
             country_code, national_length, srtp \
             from sip_trunks where enabled and direction in ('inbound', 'both') order by created_at",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows,
            Err(err) => match lock(&self.trunks).as_ref() {
                Some(c) if !crate::db::is_permanent_error(&err) => {
                    self.mark_away();
                    tracing::warn!(error = %err, "database unreachable: routing with the last trunks known");
                    return Ok(c.value.clone());
                }
                _ => return Err(err),
            },
        };
        let trunks: Vec<Trunk> = rows
            .into_iter()
            .map(
                |(
                    id,
                    workspace_id,
                    name,
                    cidrs,
                    username,
                    password,
                    codecs,
                    max,
                    cc,
                    nsn,
                    srtp,
                )| {
                    let cidrs = cidrs
                        .iter()
                        .filter_map(|c| {
                            c.parse::<IpNet>()
                                .ok()
                                .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from))
                        })
                        .collect();
                    let mut prefs: Vec<Codec> = codecs
                        .iter()
                        .filter_map(|c| Codec::from_name(c))
                        .filter(|c| self.supported.contains(c))
                        .collect();
                    if prefs.is_empty() {
                        prefs = self.supported.clone();
                    }
                    Trunk {
                        id,
                        workspace_id,
                        name,
                        cidrs,
                        username,
                        password: password.and_then(|p| decrypt_secret(&self.key, &p)),
                        codecs: prefs,
                        max_concurrent_calls: max.max(0) as usize,
                        plan: NumberingPlan {
                            country_code: cc.clamp(1, 999).to_string(),
                            national_length: nsn.clamp(4, 14) as usize,
                        },
                        srtp: super::sdes::SrtpPolicy::from_name(&srtp),
                    }
                },
            )
            .collect();
        let trunks = Arc::new(trunks);
        *lock(&self.trunks) = Some(Cached {
            at: Instant::now(),
            value: trunks.clone(),
        });
        Ok(trunks)
    }

    /// The rows holding this number, each with its agent's status (an
    /// empty answer is cached too). `e164` is unique today, so there is at
    /// most one; which of them a call reaches is decided by the trunk that
    /// admitted it ([`select_route`]), never by the number alone.
    pub async fn numbers(&self, e164: &E164) -> Result<Arc<Vec<NumberRoute>>, sqlx::Error> {
        if let Some(c) = lock(&self.numbers).get(e164.as_str()) {
            if c.at.elapsed() < self.ttl || self.database_away() {
                return Ok(c.value.clone());
            }
        }
        type Row = (Uuid, Uuid, Option<Uuid>, Option<Uuid>, bool, Option<String>);
        let rows: Vec<Row> = match sqlx::query_as(
            "select p.id, p.workspace_id, p.sip_trunk_id, p.agent_id, p.enabled, a.status::text \
             from phone_numbers p left join agents a on a.id = p.agent_id where p.e164 = $1 \
             order by p.created_at",
        )
        .bind(e164.as_str())
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows,
            Err(err) => match lock(&self.numbers).get(e164.as_str()) {
                Some(c) if !crate::db::is_permanent_error(&err) => {
                    self.mark_away();
                    tracing::warn!(error = %err, "database unreachable: routing with the last number lookup known");
                    return Ok(c.value.clone());
                }
                _ => return Err(err),
            },
        };
        let routes: Arc<Vec<NumberRoute>> = Arc::new(
            rows.into_iter()
                .map(
                    |(id, workspace_id, sip_trunk_id, agent_id, enabled, status)| NumberRoute {
                        id,
                        workspace_id,
                        sip_trunk_id,
                        agent_id,
                        enabled,
                        agent_live: status.as_deref() == Some("live"),
                    },
                )
                .collect(),
        );
        let mut cache = lock(&self.numbers);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            e164.as_str().to_string(),
            Cached {
                at: Instant::now(),
                value: routes.clone(),
            },
        );
        Ok(routes)
    }

    /// `check_usage_limit(workspace_id)`: false when over the plan's limit.
    pub async fn usage_allows(&self, workspace_id: Uuid) -> Result<bool, sqlx::Error> {
        if let Some(c) = lock(&self.usage).get(&workspace_id) {
            if c.at.elapsed() < self.ttl || self.database_away() {
                return Ok(c.value);
            }
        }
        let ok: bool = match sqlx::query_scalar("select check_usage_limit($1)")
            .bind(workspace_id)
            .fetch_one(&self.pool)
            .await
        {
            Ok(ok) => ok,
            Err(err) => match lock(&self.usage).get(&workspace_id) {
                Some(c) if !crate::db::is_permanent_error(&err) => {
                    self.mark_away();
                    return Ok(c.value);
                }
                _ => return Err(err),
            },
        };
        let mut cache = lock(&self.usage);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            workspace_id,
            Cached {
                at: Instant::now(),
                value: ok,
            },
        );
        Ok(ok)
    }
}

/// The number a call reaches, as the trunks that admitted its INVITE see
/// it: a number is reachable only through the trunk it names or, naming
/// none, through an admitting trunk of its own workspace. So a trunk routes
/// only its own workspace's numbers: a carrier range shared by two tenants
/// cannot carry one tenant's call to the other's agent, and a number of
/// another workspace is simply not found here (no 403 that says it exists
/// elsewhere). Disabled numbers are not found. Admitting trunks are tried
/// in order; a number naming the trunk beats one that names none.
pub fn select_route<'t, 'r>(
    admitting: &[&'t Trunk],
    routes: &'r [NumberRoute],
) -> Option<(&'r NumberRoute, &'t Trunk)> {
    let enabled = || routes.iter().filter(|r| r.enabled);
    admitting
        .iter()
        .find_map(|t| {
            enabled()
                .find(|r| r.sip_trunk_id == Some(t.id))
                .map(|r| (r, *t))
        })
        .or_else(|| {
            admitting.iter().find_map(|t| {
                enabled()
                    .find(|r| r.sip_trunk_id.is_none() && r.workspace_id == t.workspace_id)
                    .map(|r| (r, *t))
            })
        })
}

/// Live calls per trunk on this node; a slot is held for the life of a call.
#[derive(Clone, Default)]
pub struct TrunkSlots {
    inner: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One call's place in its trunk's count; released when dropped (and, in a
/// cluster, its row in the shared count with it).
pub struct TrunkSlot {
    trunk: Uuid,
    inner: Arc<Mutex<HashMap<Uuid, usize>>>,
    shared: Option<(Arc<crate::db::cluster::Cluster>, Uuid)>,
}

impl std::fmt::Debug for TrunkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkSlot")
            .field("trunk", &self.trunk)
            .field("shared", &self.shared.as_ref().map(|(_, call)| call))
            .finish()
    }
}

impl TrunkSlot {
    /// The slot is also held in the cluster's count, as `call_log_id`.
    pub fn held_in_cluster(
        &mut self,
        cluster: Arc<crate::db::cluster::Cluster>,
        call_log_id: Uuid,
    ) {
        self.shared = Some((cluster, call_log_id));
    }
}

impl Drop for TrunkSlot {
    fn drop(&mut self) {
        if let Some((cluster, call)) = self.shared.take() {
            cluster.release(call);
        }
        let mut map = lock(&self.inner);
        if let Some(n) = map.get_mut(&self.trunk) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.trunk);
            }
        }
    }
}

impl TrunkSlots {
    /// Takes a slot unless the trunk is at `max`.
    pub fn try_acquire(&self, trunk: Uuid, max: usize) -> Option<TrunkSlot> {
        let mut map = lock(&self.inner);
        let n = map.entry(trunk).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(TrunkSlot {
            trunk,
            inner: self.inner.clone(),
            shared: None,
        })
    }

    pub fn count(&self, trunk: Uuid) -> usize {
        lock(&self.inner).get(&trunk).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(workspace_id: Uuid) -> Trunk {
        Trunk {
            id: Uuid::new_v4(),
            workspace_id,
            name: "t".into(),
            cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            username: None,
            password: None,
            codecs: vec![Codec::Pcmu],
            max_concurrent_calls: 10,
            plan: NumberingPlan::default(),
            srtp: Default::default(),
        }
    }

    fn number(t: &Trunk, named: bool) -> NumberRoute {
        NumberRoute {
            id: Uuid::new_v4(),
            workspace_id: t.workspace_id,
            sip_trunk_id: named.then_some(t.id),
            agent_id: Some(Uuid::new_v4()),
            enabled: true,
            agent_live: true,
        }
    }

    #[test]
    fn a_trunk_reaches_only_its_own_workspaces_numbers() {
        let (ws_a, ws_b) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = (trunk(ws_a), trunk(ws_b));
        let b2 = trunk(ws_b);
        for named in [true, false] {
            let b_number = [number(&b, named)];
            // On trunk A, B's number is not found, whether or not it names a trunk.
            assert!(select_route(&[&a], &b_number).is_none(), "named {named}");
            // On B's trunk it is.
            let (r, t) = select_route(&[&b], &b_number).expect("B's own trunk");
            assert_eq!((r.id, t.id), (b_number[0].id, b.id));
            // Both trunks admit (one carrier range): B's trunk carries it.
            let (_, t) = select_route(&[&a, &b], &b_number).expect("shared range");
            assert_eq!(t.id, b.id);
        }
        // A number naming one trunk of B is not reached through B's other trunk.
        assert!(select_route(&[&b2], &[number(&b, true)]).is_none());
        // A number naming no trunk is reached through any trunk of B.
        let wide = [number(&b, false)];
        assert_eq!(select_route(&[&a, &b2], &wide).unwrap().1.id, b2.id);
        // Disabled numbers are not found.
        let mut off = number(&b, true);
        off.enabled = false;
        assert!(select_route(&[&b], &[off]).is_none());
    }

    #[test]
    fn a_number_naming_the_admitting_trunk_wins_over_a_workspace_wide_one() {
        // Two rows for one number (an operator may one day hold it in two
        // workspaces on different trunks): each trunk reaches its own.
        let (ws_a, ws_b) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = (trunk(ws_a), trunk(ws_b));
        let rows = [number(&a, false), number(&b, true)];
        assert_eq!(select_route(&[&a], &rows).unwrap().0.id, rows[0].id);
        assert_eq!(select_route(&[&b], &rows).unwrap().0.id, rows[1].id);
        assert_eq!(select_route(&[&a, &b], &rows).unwrap().0.id, rows[1].id);
    }

    #[test]
    fn slots_count_and_release() {
        let slots = TrunkSlots::default();
        let t = Uuid::new_v4();
        let a = slots.try_acquire(t, 1).unwrap();
        assert!(slots.try_acquire(t, 1).is_none());
        drop(a);
        assert_eq!(slots.count(t), 0);
        assert!(slots.try_acquire(t, 1).is_some());
    }

    #[test]
    fn secrets_decrypt_or_pass_through_plain() {
        let key = [3u8; 32];
        let nonce = [9u8; 24];
        let sealed = XChaCha20Poly1305::new((&key).into())
            .encrypt(&XNonce::from(nonce), b"pw".as_ref())
            .unwrap();
        let stored = format!(
            "v1:{}",
            base64::engine::general_purpose::STANDARD.encode([nonce.to_vec(), sealed].concat())
        );
        assert_eq!(decrypt_secret(&key, &stored).as_deref(), Some("pw"));
        assert_eq!(decrypt_secret(&[4u8; 32], &stored), None);
        assert_eq!(decrypt_secret(&key, "plain").as_deref(), Some("plain"));
    }
}
