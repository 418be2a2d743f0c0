//! Pre-rendering: every text a live agent says that is known in advance
//! (greeting, reprompt, goodbye, fallback, transfer lines, each FAQ answer
//! sentence by sentence as the reply pipeline cuts it) is synthesised once
//! into the [`TtsCache`](super::tts_cache::TtsCache), in the background, one
//! sentence at a time. A cheap version query notices changed agents and
//! knowledge; renderings no longer needed are dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::llm_offline::spoken_faq_answers;
use super::profile::AgentProfile;
use super::providers::Providers;
use super::sentences::spoken_sentences;
use crate::config::Config;

/// Renderings whose files are untouched this long and that no agent of this
/// process needs are dropped even if another process wrote them.
const FOREIGN_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Sentences pre-rendered per pass at most (bounded work per change).
const MAX_SENTENCES_PER_PASS: usize = 5000;
/// FAQ chunks read per agent at most.
const MAX_CHUNKS_PER_AGENT: i64 = 20_000;

/// Lines the offline answerer speaks for a request for a human.
const TRANSFER_LINES: &[&str] = &[
    super::llm_offline::TRANSFER_LINE,
    super::llm_offline::NO_TRANSFER_ON_WEB_LINE,
    super::llm_offline::NO_ONE_LINE,
];

/// Starts the background pre-renderer (nothing if the cache is off).
pub fn spawn(
    pool: PgPool,
    config: Arc<Config>,
    providers: Providers,
) -> Option<tokio::task::JoinHandle<()>> {
    providers.tts.prerendered()?;
    Some(tokio::spawn(async move {
        let mut pre = Prerenderer {
            pool,
            config,
            providers,
            version: None,
            mine: HashSet::new(),
        };
        let poll = Duration::from_secs(pre.config.tts.prerender_poll_secs.max(1));
        loop {
            if let Err(err) = pre.pass().await {
                tracing::debug!(error = %err, "pre-rendering pass failed; retrying later");
            }
            tokio::time::sleep(poll).await;
        }
    }))
}

struct Prerenderer {
    pool: PgPool,
    config: Arc<Config>,
    providers: Providers,
    /// The version of agents and knowledge the cache was last made for.
    version: Option<String>,
    /// Keys this process rendered or needed on its last pass.
    mine: HashSet<String>,
}

impl Prerenderer {
    async fn pass(&mut self) -> Result<(), sqlx::Error> {
        let version = self.version_now().await?;
        if self.version.as_ref() == Some(&version) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let agents: Vec<Uuid> = sqlx::query_scalar("select id from agents where status = 'live'")
            .fetch_all(&self.pool)
            .await?;
        let mut keep = HashSet::new();
        let (mut rendered, mut budget) = (0usize, MAX_SENTENCES_PER_PASS);
        for agent in agents {
            let profile = AgentProfile::load(&self.pool, agent).await?;
            if !matches!(profile.tts_provider.as_str(), "piper" | "espeak") {
                continue; // networked voices are not pre-rendered
            }
            let texts = texts_for(&self.pool, &profile).await?;
            rendered += self
                .render_all(&profile, texts, &mut keep, &mut budget)
                .await;
        }
        // Touch what is needed, so other processes' age rule keeps it.
        let dropped = match self.providers.tts.prerendered() {
            Some(cached) => cached
                .cache()
                .retain_with(&keep, &self.mine, FOREIGN_STALE_AFTER)
                .await
                .unwrap_or(0),
            None => 0,
        };
        self.mine = keep;
        self.version = Some(version);
        tracing::info!(
            rendered,
            kept = self.mine.len(),
            dropped,
            ms = started.elapsed().as_millis() as u64,
            "pre-rendered audio up to date"
        );
        Ok(())
    }

    /// One string that changes whenever a live agent, its persona or its
    /// knowledge does (updated_at and counts, so deletions count too).
    async fn version_now(&self) -> Result<String, sqlx::Error> {
        let row: (Option<String>,) = sqlx::query_as(
            "select string_agg(v, ',' order by v) from (
               select a.id::text || ':' || a.updated_at::text || ':' || coalesce(p.updated_at::text, '')
                      || ':' || a.tts_provider || ':' || coalesce(a.tts_voice, '') || ':' || a.tts_speed::text as v
               from agents a left join personas p on p.id = a.persona_id
               where a.status = 'live'
               union all
               select 'k' || count(*)::text || ':' || coalesce(max(updated_at)::text, '') from knowledge_chunks
             ) versions",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.0.unwrap_or_default())
    }

    /// Renders what is missing; returns how many sentences were synthesised.
    async fn render_all(
        &self,
        profile: &AgentProfile,
        texts: Vec<String>,
        keep: &mut HashSet<String>,
        budget: &mut usize,
    ) -> usize {
        let providers = self.providers.for_agent(&self.config, profile, &[]);
        let Some(cached) = providers.tts.prerendered() else {
            return 0;
        };
        let mut rendered = 0;
        for text in texts {
            let key = cached
                .key(&text, &profile.tts_voice, profile.tts_speed)
                .await;
            if !keep.insert(key.clone()) || cached.cache().contains(&key) {
                continue;
            }
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let stream = cached
                .engine()
                .synthesize_background(&text, &profile.tts_voice, profile.tts_speed)
                .await;
            let Ok(mut stream) = stream else { continue };
            let (mut pcm, mut rate) = (Vec::new(), 0);
            while let Some(Ok(chunk)) = stream.next().await {
                rate = chunk.sample_rate;
                pcm.extend_from_slice(&chunk.pcm);
            }
            if pcm.is_empty() || rate == 0 {
                continue;
            }
            match cached.cache().put(&key, &pcm, rate).await {
                Ok(()) => rendered += 1,
                Err(err) => tracing::warn!(error = %err, "cannot store pre-rendered audio"),
            }
        }
        rendered
    }
}

/// Every text `profile`'s agent will say that is known in advance, as the
/// reply pipeline hands it to TTS (fixed lines whole, answers per sentence).
pub async fn texts_for(pool: &PgPool, profile: &AgentProfile) -> Result<Vec<String>, sqlx::Error> {
    let mut texts = vec![
        profile.greeting.clone(),
        profile.reprompt(),
        profile.goodbye(),
        profile.fallback_message.clone(),
    ];
    texts.extend(spoken_sentences(&profile.fallback_message));
    // Said whole after a transfer the person's phone refused: the caller
    // has already waited through the ringing.
    texts.push(profile.transfer_failed_message.clone());
    for line in TRANSFER_LINES {
        texts.extend(spoken_sentences(line));
    }
    let chunks: Vec<String> = sqlx::query_scalar(
        "select content from knowledge_chunks
         where workspace_id = $1 and (agent_id = $2 or agent_id is null)
           and content like '%A:%'
         order by source_id, chunk_index limit $3",
    )
    .bind(profile.workspace_id)
    .bind(profile.agent_id)
    .bind(MAX_CHUNKS_PER_AGENT)
    .fetch_all(pool)
    .await?;
    for content in chunks {
        for answer in spoken_faq_answers(&content) {
            texts.extend(spoken_sentences(&answer));
        }
    }
    texts.retain(|t| !t.trim().is_empty());
    Ok(texts)
}
