//! Inbound routing against the database: which trunk may send from this
//! address (`inbound_cidrs`, digest credentials), which agent owns the dialed
//! number, whether the agent is live and the workspace under its plan limit,
//! and per-trunk concurrency. Lookups are cached for `routing_cache_ttl_secs`
//! so an INVITE flood does not become a query flood.

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

use super::number::E164;
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
    numbers: Mutex<HashMap<String, Cached<Option<NumberRoute>>>>,
    usage: Mutex<HashMap<Uuid, Cached<bool>>>,
}

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
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Enabled trunks that take inbound calls.
    pub async fn trunks(&self) -> Result<Arc<Vec<Trunk>>, sqlx::Error> {
        if let Some(c) = lock(&self.trunks).as_ref() {
            if c.at.elapsed() < self.ttl {
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
        );
        let rows: Vec<Row> = sqlx::query_as(
            "select id, workspace_id, name, inbound_cidrs, inbound_username, inbound_password, codecs, max_concurrent_calls \
             from sip_trunks where enabled and direction in ('inbound', 'both') order by created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        let trunks: Vec<Trunk> = rows
            .into_iter()
            .map(
                |(id, workspace_id, name, cidrs, username, password, codecs, max)| {
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

    /// The number's row with its agent's status (negative answers cached too).
    pub async fn number(&self, e164: &E164) -> Result<Option<NumberRoute>, sqlx::Error> {
        if let Some(c) = lock(&self.numbers).get(e164.as_str()) {
            if c.at.elapsed() < self.ttl {
                return Ok(c.value.clone());
            }
        }
        let row: Option<(Uuid, Uuid, Option<Uuid>, Option<Uuid>, bool, Option<String>)> = sqlx::query_as(
            "select p.id, p.workspace_id, p.sip_trunk_id, p.agent_id, p.enabled, a.status::text \
             from phone_numbers p left join agents a on a.id = p.agent_id where p.e164 = $1",
        )
        .bind(e164.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let route = row.map(
            |(id, workspace_id, sip_trunk_id, agent_id, enabled, status)| NumberRoute {
                id,
                workspace_id,
                sip_trunk_id,
                agent_id,
                enabled,
                agent_live: status.as_deref() == Some("live"),
            },
        );
        let mut cache = lock(&self.numbers);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            e164.as_str().to_string(),
            Cached {
                at: Instant::now(),
                value: route.clone(),
            },
        );
        Ok(route)
    }

    /// `check_usage_limit(workspace_id)`: false when over the plan's limit.
    pub async fn usage_allows(&self, workspace_id: Uuid) -> Result<bool, sqlx::Error> {
        if let Some(c) = lock(&self.usage).get(&workspace_id) {
            if c.at.elapsed() < self.ttl {
                return Ok(c.value);
            }
        }
        let ok: bool = sqlx::query_scalar("select check_usage_limit($1)")
            .bind(workspace_id)
            .fetch_one(&self.pool)
            .await?;
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

/// Live calls per trunk on this node; a slot is held for the life of a call.
#[derive(Clone, Default)]
pub struct TrunkSlots {
    inner: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One call's place in its trunk's count; released when dropped.
#[derive(Debug)]
pub struct TrunkSlot {
    trunk: Uuid,
    inner: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl Drop for TrunkSlot {
    fn drop(&mut self) {
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
        })
    }

    pub fn count(&self, trunk: Uuid) -> usize {
        lock(&self.inner).get(&trunk).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
