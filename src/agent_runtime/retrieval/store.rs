//! The process's in-memory knowledge: one [`AgentIndex`] per agent, loaded
//! from PostgreSQL on first use (or when a call starts) and rebuilt when the
//! knowledge changes (`knowledge_changed` notifications from migration 0008's
//! trigger; every index is rebuilt after the listener reconnects, since
//! notifications sent meanwhile are lost). A failed rebuild keeps the old
//! index, so retrieval goes on through a database outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::PgPool;
use uuid::Uuid;

use super::everyday::Everyday;
use super::index::{AgentIndex, ChunkRow};
use crate::agent_runtime::provider_error::ProviderError;
use crate::db::notify::Follower;

/// The channel migration 0008's trigger notifies, with the workspace id.
pub const CHANNEL: &str = "knowledge_changed";
/// Indexes kept; the least recently used goes first (bounded memory).
const MAX_INDEXES: usize = 512;
/// Most chunks one index holds.
const MAX_INDEX_CHUNKS: i64 = 200_000;

/// Whose chunks: a workspace and one agent (its own and the workspace-wide
/// chunks), or `None` for every chunk of the workspace.
pub type Scope = (Uuid, Option<Uuid>);

struct Entry {
    index: Arc<AgentIndex>,
    used: Instant,
    /// The change counter when the load began: an older load never
    /// replaces a newer one.
    as_of: u64,
}

pub struct KnowledgeIndex {
    pool: PgPool,
    /// Vectors of this model are used; others are ignored until re-embedded.
    model: String,
    entries: Mutex<HashMap<Scope, Entry>>,
    changes: AtomicU64,
    /// The everyday requests under `model`, once embedded.
    everyday: Mutex<Option<Arc<Everyday>>>,
}

impl KnowledgeIndex {
    pub fn new(pool: PgPool, embedding_model: &str) -> Arc<KnowledgeIndex> {
        Arc::new(KnowledgeIndex {
            pool,
            model: embedding_model.to_string(),
            entries: Mutex::new(HashMap::new()),
            changes: AtomicU64::new(0),
            everyday: Mutex::new(None),
        })
    }

    /// The embedding model whose vectors this index uses.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Embeds the everyday requests with `embedder` (the model of the
    /// index's vectors) and rebuilds the cached indexes with them, so
    /// matches they beat are taken for off-topic. Without this, retrieval
    /// works on the matches' scores alone.
    pub async fn learn_everyday(
        &self,
        embedder: &dyn crate::agent_runtime::embeddings::Embedder,
    ) -> Result<usize, ProviderError> {
        if embedder.name() != self.model {
            return Err(ProviderError::Config(format!(
                "the everyday requests need the index's model {}, not {}",
                self.model,
                embedder.name()
            )));
        }
        let everyday = Everyday::embed(embedder).await?;
        let n = everyday.len();
        *self.everyday.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(everyday));
        self.refresh(None).await;
        Ok(n)
    }

    pub fn embedding_model(&self) -> &str {
        &self.model
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached index of `scope`, if loaded (no database access).
    pub fn cached(&self, scope: Scope) -> Option<Arc<AgentIndex>> {
        let mut entries = self.lock();
        let e = entries.get_mut(&scope)?;
        e.used = Instant::now();
        Some(e.index.clone())
    }

    /// The index of `scope`: the cached one, else loaded now.
    pub async fn get(&self, scope: Scope) -> Result<Arc<AgentIndex>, ProviderError> {
        match self.cached(scope) {
            Some(i) => Ok(i),
            None => self.load(scope).await,
        }
    }

    /// Loads `scope` from the database and caches it.
    pub async fn load(&self, scope: Scope) -> Result<Arc<AgentIndex>, ProviderError> {
        let as_of = self.changes.load(Ordering::SeqCst);
        let rows: Vec<LoadedRow> = sqlx::query_as(LOAD_SQL)
            .bind(scope.0)
            .bind(scope.1)
            .bind(&self.model)
            .bind(MAX_INDEX_CHUNKS)
            .fetch_all(&self.pool)
            .await?;
        let rows: Vec<ChunkRow> = rows.into_iter().map(ChunkRow::from).collect();
        let everyday = self
            .everyday
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let index = Arc::new(
            tokio::task::spawn_blocking(move || {
                let index = AgentIndex::build(rows);
                match everyday {
                    Some(e) => index.with_everyday(&e),
                    None => index,
                }
            })
            .await
            .map_err(|e| ProviderError::Engine(format!("index build: {e}")))?,
        );
        let mut entries = self.lock();
        match entries.get(&scope) {
            Some(e) if e.as_of > as_of => return Ok(e.index.clone()),
            _ => {}
        }
        if entries.len() >= MAX_INDEXES && !entries.contains_key(&scope) {
            if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            scope,
            Entry {
                index: index.clone(),
                used: Instant::now(),
                as_of,
            },
        );
        Ok(index)
    }

    /// Loads `scope` in the background unless it is cached (a call starts:
    /// its first question then needs no database).
    pub fn warm(self: &Arc<Self>, scope: Scope) {
        if self.cached(scope).is_some() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(err) = me.load(scope).await {
                tracing::warn!(error = %err, workspace_id = %scope.0, "knowledge index not loaded");
            }
        });
    }

    /// Loads the indexes of every live agent (start-up).
    pub async fn warm_live_agents(&self) -> Result<usize, ProviderError> {
        let agents: Vec<(Uuid, Uuid)> =
            sqlx::query_as("select workspace_id, id from agents where status = 'live'")
                .fetch_all(&self.pool)
                .await?;
        for (ws, agent) in &agents {
            self.load((*ws, Some(*agent))).await?;
        }
        Ok(agents.len())
    }

    /// Rebuilds the cached indexes of `workspace` (every one when `None`);
    /// an index whose rebuild fails stays as it was.
    pub async fn refresh(&self, workspace: Option<Uuid>) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        let scopes: Vec<Scope> = self
            .lock()
            .keys()
            .filter(|s| workspace.is_none_or(|w| s.0 == w))
            .copied()
            .collect();
        for scope in scopes {
            if let Err(err) = self.load(scope).await {
                tracing::warn!(error = %err, workspace_id = %scope.0, "knowledge refresh failed; the previous index stays");
            }
        }
    }

    /// Follows `knowledge_changed` for as long as this index lives.
    pub fn spawn_listener(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        crate::db::notify::follow_one(self.pool.clone(), CHANNEL, self)
    }
}

#[async_trait::async_trait]
impl Follower for KnowledgeIndex {
    /// Changes made while no one listened are unknown: every index is
    /// rebuilt.
    async fn connected(&self) {
        self.refresh(None).await;
    }

    /// The payload is the workspace whose knowledge changed.
    async fn notified(&self, payload: &str) {
        match Uuid::parse_str(payload) {
            Ok(ws) => self.refresh(Some(ws)).await,
            Err(_) => self.refresh(None).await,
        }
    }

    /// A failed rebuild keeps the old index; so does an unheard change,
    /// until the listener is back (retrieval goes on through an outage).
    fn disconnected(&self) {}
}

#[derive(sqlx::FromRow)]
struct LoadedRow {
    id: Uuid,
    source_id: Uuid,
    agent_id: Option<Uuid>,
    chunk_index: i32,
    content: String,
    embedding: Option<Vec<f32>>,
    question_embedding: Option<Vec<f32>>,
    answer_embedding: Option<Vec<f32>>,
}

impl From<LoadedRow> for ChunkRow {
    fn from(r: LoadedRow) -> ChunkRow {
        ChunkRow {
            id: r.id,
            source_id: r.source_id,
            agent_id: r.agent_id,
            chunk_index: r.chunk_index,
            content: r.content,
            embedding: r.embedding,
            question_embedding: r.question_embedding,
            answer_embedding: r.answer_embedding,
        }
    }
}

/// The scope's chunks, with their vectors only where they come from the
/// configured model (`$3`).
const LOAD_SQL: &str = r#"
select c.id, c.source_id, c.agent_id, c.chunk_index, c.content,
       case when c.embedding_model = $3 then c.embedding end as embedding,
       case when c.embedding_model = $3 then c.question_embedding end as question_embedding,
       case when c.embedding_model = $3 then c.answer_embedding end as answer_embedding
from knowledge_chunks c
where c.workspace_id = $1 and ($2::uuid is null or c.agent_id = $2 or c.agent_id is null)
order by c.source_id, c.chunk_index
limit $4
"#;
