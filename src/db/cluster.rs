//! What the nodes of a cluster share through PostgreSQL (`cluster.enabled`):
//! each node's heartbeat (`cluster_nodes`), the calls each holds
//! (`live_calls`, one row per trunk slot, claimed under a per-trunk lock so
//! a trunk's `max_concurrent_calls` holds across nodes), hang-up requests
//! for a call held by another node (NOTIFY), and the closing of the calls
//! of a node that stopped beating. Kamailio spreads the SIP; nothing here
//! balances load.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::ClusterConfig;

/// NOTIFY channel of hang-up requests: `node_id|workspace_id|call_log_id`.
const HANGUP_CHANNEL: &str = "switchboard_hangup";
/// Releases written per statement.
const RELEASE_BATCH: usize = 500;
/// Releases held while the database is away; beyond, the oldest are left
/// to the node's own clean-up at its next start (they stop counting when
/// the node does).
const MAX_PENDING_RELEASES: usize = 100_000;
/// Lost nodes are looked for every this many heartbeats.
const SWEEP_EVERY: u32 = 2;

/// One node's handle on the shared state.
pub struct Cluster {
    pool: PgPool,
    node_id: String,
    timeout: Duration,
    heartbeat: Duration,
    releases: mpsc::UnboundedSender<Uuid>,
    released: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Uuid>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A live call as any node's API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveRow {
    pub call_log_id: Uuid,
    pub node_id: String,
    pub agent_id: Option<Uuid>,
    pub direction: String,
    pub from_number: String,
    pub to_number: String,
    pub started_at: DateTime<Utc>,
}

/// What the heartbeat task needs from the node it runs in.
pub struct NodeFacts {
    pub sip_addr: String,
    pub api_addr: String,
    pub draining: Box<dyn Fn() -> bool + Send + Sync>,
    /// Ends a call this node holds, asked for from another node's API.
    pub hang_up: Box<dyn Fn(Uuid, Uuid) + Send + Sync>,
}

impl Cluster {
    pub fn new(pool: PgPool, node_id: String, cfg: &ClusterConfig) -> Arc<Cluster> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Cluster {
            pool,
            node_id,
            timeout: Duration::from_millis(cfg.node_timeout_ms),
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            releases: tx,
            released: std::sync::Mutex::new(Some(rx)),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn timeout_ms(&self) -> i32 {
        self.timeout.as_millis().min(i32::MAX as u128) as i32
    }

    /// Registers this node (a fresh start: whatever an earlier run of the
    /// same node left live is closed) before it takes calls.
    pub async fn join(&self, sip_addr: &str, api_addr: &str) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "insert into cluster_nodes (node_id, sip_addr, api_addr, started_at, heartbeat_at, draining) \
             values ($1, $2, $3, now(), now(), false) \
             on conflict (node_id) do update set sip_addr = excluded.sip_addr, api_addr = excluded.api_addr, \
             started_at = now(), heartbeat_at = now(), draining = false",
        )
        .bind(&self.node_id)
        .bind(sip_addr)
        .bind(api_addr)
        .execute(&self.pool)
        .await?;
        let closed = close_calls_of(&self.pool, std::slice::from_ref(&self.node_id)).await?;
        if closed > 0 {
            tracing::warn!(closed, "closed calls an earlier run of this node left open");
        }
        Ok(closed)
    }

    /// Claims a slot of `trunk` for a call unless the cluster's live nodes
    /// already hold `max`.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        call_log_id: Uuid,
        workspace_id: Uuid,
        trunk: Uuid,
        agent_id: Option<Uuid>,
        from: &str,
        to: &str,
        max: usize,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("select claim_trunk_slot($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(call_log_id)
            .bind(&self.node_id)
            .bind(workspace_id)
            .bind(trunk)
            .bind(agent_id)
            .bind(from)
            .bind(to)
            .bind(max.min(i32::MAX as usize) as i32)
            .bind(self.timeout_ms())
            .fetch_one(&self.pool)
            .await
    }

    /// The call's slot is free again (written by the heartbeat task).
    pub fn release(&self, call_log_id: Uuid) {
        let _ = self.releases.send(call_log_id);
    }

    /// The live calls of a workspace on every live node.
    pub async fn live(&self, workspace_id: Uuid) -> Result<Vec<LiveRow>, sqlx::Error> {
        sqlx::query_as(
            "select c.call_log_id, c.node_id, c.agent_id, c.direction, c.from_number, c.to_number, c.started_at \
             from live_calls c join cluster_nodes n using (node_id) \
             where c.workspace_id = $1 and n.heartbeat_at > now() - make_interval(secs => $2 / 1000.0) \
             order by c.started_at",
        )
        .bind(workspace_id)
        .bind(self.timeout_ms())
        .fetch_all(&self.pool)
        .await
    }

    /// Asks the live node holding a call of `workspace_id` to end it;
    /// false when no live node holds such a call.
    pub async fn request_hangup(
        &self,
        workspace_id: Uuid,
        call_log_id: Uuid,
    ) -> Result<bool, sqlx::Error> {
        let node: Option<String> = sqlx::query_scalar(
            "select c.node_id from live_calls c join cluster_nodes n using (node_id) \
             where c.call_log_id = $1 and c.workspace_id = $2 \
               and n.heartbeat_at > now() - make_interval(secs => $3 / 1000.0)",
        )
        .bind(call_log_id)
        .bind(workspace_id)
        .bind(self.timeout_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(node) = node else { return Ok(false) };
        sqlx::query("select pg_notify($1, $2)")
            .bind(HANGUP_CHANNEL)
            .bind(format!("{node}|{workspace_id}|{call_log_id}"))
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// The node's background work until `cancel`: heartbeat (with the
    /// draining flag), released slots, lost nodes' calls closed, and
    /// hang-up requests from other nodes.
    pub fn spawn(self: &Arc<Self>, facts: NodeFacts, cancel: CancellationToken) {
        let Some(released) = self.released.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let facts = Arc::new(facts);
        tokio::spawn(self.clone().beat(facts.clone(), released, cancel.clone()));
        tokio::spawn(self.clone().listen(facts, cancel));
    }

    async fn beat(
        self: Arc<Self>,
        facts: Arc<NodeFacts>,
        mut released: mpsc::UnboundedReceiver<Uuid>,
        cancel: CancellationToken,
    ) {
        let mut pending: Vec<Uuid> = Vec::new();
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            // A freed slot is written at once (with whatever else is
            // waiting), so a trunk's count lags its calls by one statement.
            let beat = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => true,
                Some(id) = released.recv() => {
                    pending.push(id);
                    false
                }
            };
            while let Ok(id) = released.try_recv() {
                pending.push(id);
            }
            if pending.len() > MAX_PENDING_RELEASES {
                let extra = pending.len() - MAX_PENDING_RELEASES;
                pending.drain(..extra);
            }
            if !beat {
                if let Err(e) = self.release_now(&mut pending).await {
                    tracing::warn!("freeing cluster call slots failed: {e}");
                    // Retried at the next heartbeat, not per freed slot.
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                }
                continue;
            }
            n = n.wrapping_add(1);
            if let Err(e) = self.heartbeat_once(&facts, &mut pending).await {
                tracing::warn!("cluster heartbeat failed: {e}");
                continue;
            }
            if n.is_multiple_of(SWEEP_EVERY) {
                match self.sweep_lost().await {
                    Ok(0) => {}
                    Ok(closed) => tracing::warn!(closed, "closed the calls of lost nodes"),
                    Err(e) => tracing::warn!("closing lost nodes' calls failed: {e}"),
                }
            }
        }
        // Leaving: the slots go and the node stops counting at once.
        while let Ok(id) = released.try_recv() {
            pending.push(id);
        }
        let _ = self.release_now(&mut pending).await;
        let _ = sqlx::query(
            "update cluster_nodes set draining = true, heartbeat_at = now() - make_interval(secs => $2 / 1000.0) \
             where node_id = $1",
        )
        .bind(&self.node_id)
        .bind(self.timeout_ms())
        .execute(&self.pool)
        .await;
    }

    async fn heartbeat_once(
        &self,
        facts: &NodeFacts,
        pending: &mut Vec<Uuid>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into cluster_nodes (node_id, sip_addr, api_addr, heartbeat_at, draining) \
             values ($1, $2, $3, now(), $4) \
             on conflict (node_id) do update set heartbeat_at = now(), draining = excluded.draining",
        )
        .bind(&self.node_id)
        .bind(&facts.sip_addr)
        .bind(&facts.api_addr)
        .bind((facts.draining)())
        .execute(&self.pool)
        .await?;
        self.release_now(pending).await
    }

    async fn release_now(&self, pending: &mut Vec<Uuid>) -> Result<(), sqlx::Error> {
        while !pending.is_empty() {
            let n = pending.len().min(RELEASE_BATCH);
            sqlx::query("delete from live_calls where call_log_id = any($1)")
                .bind(&pending[..n])
                .execute(&self.pool)
                .await?;
            pending.drain(..n);
        }
        Ok(())
    }

    /// Closes the calls of nodes whose heartbeat is older than the timeout.
    async fn sweep_lost(&self) -> Result<u64, sqlx::Error> {
        let lost: Vec<String> = sqlx::query_scalar(
            "select node_id from cluster_nodes \
             where node_id <> $1 and heartbeat_at < now() - make_interval(secs => $2 / 1000.0)",
        )
        .bind(&self.node_id)
        .bind(self.timeout_ms())
        .fetch_all(&self.pool)
        .await?;
        if lost.is_empty() {
            return Ok(0);
        }
        close_calls_of(&self.pool, &lost).await
    }

    /// Hears hang-up requests until `cancel` (the shared listener of
    /// `db::notify`, which finds a connection gone silent and reconnects).
    async fn listen(self: Arc<Self>, facts: Arc<NodeFacts>, cancel: CancellationToken) {
        let follower = Arc::new(Hangups {
            node_id: self.node_id.clone(),
            facts,
        });
        let listening = super::notify::follow_one(self.pool.clone(), HANGUP_CHANNEL, &follower);
        cancel.cancelled().await;
        listening.abort();
    }
}

/// Ends the calls of this node that another node's API was asked to end.
struct Hangups {
    node_id: String,
    facts: Arc<NodeFacts>,
}

#[async_trait::async_trait]
impl super::notify::Follower for Hangups {
    /// A request sent while nobody listened is lost (the API that sent it
    /// answered 202: accepted, not done); the call's record shows whether
    /// it ended, and the request can be made again.
    async fn connected(&self) {}

    async fn notified(&self, payload: &str) {
        if let Some((ws, call)) = hangup_for(payload, &self.node_id) {
            (self.facts.hang_up)(ws, call);
        }
    }

    fn disconnected(&self) {
        tracing::warn!("cluster hang-up listener lost its connection; reconnecting");
    }
}

/// `node|workspace|call` addressed to `me`.
fn hangup_for(payload: &str, me: &str) -> Option<(Uuid, Uuid)> {
    let mut parts = payload.splitn(3, '|');
    let (node, ws, call) = (parts.next()?, parts.next()?, parts.next()?);
    if node != me {
        return None;
    }
    Some((ws.parse().ok()?, call.parse().ok()?))
}

/// Ends the records of the calls `nodes` left open: `failed`, hung up by
/// the system, `node_lost`; their slots are freed. A call whose row the
/// lost node never got to write is recorded from its slot.
async fn close_calls_of(pool: &PgPool, nodes: &[String]) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let recovered = sqlx::query(
        "insert into call_logs (id, workspace_id, agent_id, sip_trunk_id, direction, from_number, to_number,                                 status, hangup_by, hangup_reason, started_at, ended_at, duration_ms, node_id)          select c.call_log_id, c.workspace_id,                 case when exists (select 1 from agents a where a.id = c.agent_id and a.workspace_id = c.workspace_id)                      then c.agent_id end,                 case when exists (select 1 from sip_trunks t where t.id = c.sip_trunk_id and t.workspace_id = c.workspace_id)                      then c.sip_trunk_id end,                 c.direction, c.from_number, c.to_number, 'failed', 'system', 'node_lost', c.started_at, now(), 0, c.node_id          from live_calls c          where c.node_id = any($1)            and exists (select 1 from workspaces w where w.id = c.workspace_id)            and not exists (select 1 from call_logs l where l.id = c.call_log_id)          on conflict (id) do nothing",
    )
    .bind(nodes)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let closed = sqlx::query(
        "update call_logs set status = 'failed', hangup_by = 'system', hangup_reason = 'node_lost', \
         ended_at = now(), \
         duration_ms = case when answered_at is null then 0 \
                       else (extract(epoch from now() - answered_at) * 1000)::integer end \
         where node_id = any($1) and status in ('ringing', 'in_progress')",
    )
    .bind(nodes)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("delete from live_calls where node_id = any($1)")
        .bind(nodes)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(closed + recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangup_requests_are_for_their_node_only() {
        let ws = Uuid::new_v4();
        let call = Uuid::new_v4();
        let p = format!("node-a|{ws}|{call}");
        assert_eq!(hangup_for(&p, "node-a"), Some((ws, call)));
        assert_eq!(hangup_for(&p, "node-b"), None);
        assert_eq!(hangup_for("node-a|x|y", "node-a"), None);
        assert_eq!(hangup_for("node-a", "node-a"), None);
    }
}
