//! The provider bundle a call uses: offline defaults from the configuration
//! (whisper, the retrieval answerer, a Piper voice with espeak-ng as its
//! fallback, sentence embeddings), and the
//! per-agent choice of networked providers with the workspace's credentials
//! from `workspace_llm_config` (keys decrypted only in memory), all of them
//! reached through the one guarded client (`[outbound] allow`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::embeddings::{Embedder, OpenAiEmbeddings, QueryCache, UnavailableEmbedder};
use super::llm::{AnthropicMessages, LanguageModel, OfflineAnswerer, OpenAiChat};
use super::llm_http::HttpLlmSettings;
use super::profile::AgentProfile;
pub use super::provider_error::ProviderError;
use super::provider_http::{provider_client, CallLimits};
use super::stt::{OpenAiStt, SpeechToText, WhisperStt};
use super::tts::{ElevenLabsTts, EspeakTts, OpenAiTts, PiperHttpTts, TextToSpeech};
use super::tts_cache::{CachedTts, TtsCache};
use super::tts_piper::PiperTts;
use crate::config::{Config, TtsConfig};
use crate::outbound::GuardedClient;

#[derive(Clone)]
pub struct Providers {
    pub stt: Arc<dyn SpeechToText>,
    pub llm: Arc<dyn LanguageModel>,
    pub tts: Arc<dyn TextToSpeech>,
    /// The process's embedder, remembering recent questions' vectors.
    pub embedder: Arc<QueryCache>,
    /// espeak-ng, for agents that choose it (`tts_provider = 'espeak'`).
    pub espeak: Arc<dyn TextToSpeech>,
    /// Every networked provider's requests go out through it: a tenant's
    /// `base_url` reaches no internal address the operator has not allowed.
    pub http: GuardedClient,
}

/// One active `workspace_llm_config` row, key decrypted.
#[derive(Clone)]
pub struct ProviderCredential {
    pub provider: String,
    pub base_url: Option<String>,
    pub api_key: String,
}

impl std::fmt::Debug for ProviderCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCredential")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .finish()
    }
}

/// Default API base of the OpenAI-compatible services we know by name.
pub fn default_base_url(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "openai" => "https://api.openai.com/v1",
        "groq" => "https://api.groq.com/openai/v1",
        "anthropic" => "https://api.anthropic.com/v1",
        "elevenlabs" => "https://api.elevenlabs.io",
        "ollama" => "http://127.0.0.1:11434/v1",
        "openrouter" => "https://openrouter.ai/api/v1",
        "together" => "https://api.together.xyz/v1",
        "mistral" => "https://api.mistral.ai/v1",
        _ => return None,
    })
}

/// The process's embedder (`[embeddings]`): the API embeds knowledge with
/// it and every call its questions, so stored and query vectors compare.
pub fn embedder_from_config(config: &Config) -> Arc<dyn Embedder> {
    let onnxruntime = &config.tts.onnxruntime_path;
    let config = &config.embeddings;
    match config.provider.as_str() {
        "openai" => Arc::new(OpenAiEmbeddings::new(
            &config.base_url,
            &config.api_key,
            &config.model,
            config.dims,
        )),
        _ => match super::sentence_embedder::shared(&config.local_model_dir, onnxruntime) {
            Ok(e) => e,
            Err(err) => {
                tracing::error!(error = %err, "the embedding model did not load; retrieval is full-text only");
                Arc::new(UnavailableEmbedder {
                    reason: err.to_string(),
                })
            }
        },
    }
}

impl Providers {
    /// The offline defaults: loads the whisper model (once per process).
    pub fn from_config(config: &Config) -> Result<Providers, ProviderError> {
        let stt = WhisperStt::from_config(&config.stt)?;
        let espeak: Arc<dyn TextToSpeech> = Arc::new(EspeakTts::new(&config.tts.voice));
        let tts = match config.tts.provider.as_str() {
            "espeak" => espeak.clone(),
            _ => match shared_piper(&config.tts) {
                Ok(piper) => piper,
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        voice = %config.tts.piper_voice,
                        onnxruntime = %config.tts.onnxruntime_path.display(),
                        "Piper voice unavailable: every agent on the offline voice speaks with espeak-ng (fallback)"
                    );
                    espeak.clone()
                }
            },
        };
        Ok(Providers {
            stt: Arc::new(stt),
            llm: Arc::new(OfflineAnswerer::new()),
            tts: with_cache(&config.tts, tts),
            embedder: Arc::new(
                QueryCache::new(embedder_from_config(config))
                    .with_vectors_in(&config.embeddings.cache_dir),
            ),
            espeak: with_cache(&config.tts, espeak),
            http: provider_client(config.outbound.allowed())?,
        })
    }

    /// The workspace's active provider credentials, decrypted with `key`.
    /// A row that does not decrypt is skipped with a warning (that provider
    /// then falls back to the offline default).
    pub async fn load_credentials(
        pool: &PgPool,
        workspace_id: Uuid,
        key: &[u8; 32],
    ) -> Result<Vec<ProviderCredential>, ProviderError> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "select provider, base_url, api_key from workspace_llm_config
             where workspace_id = $1 and is_active",
        )
        .bind(workspace_id)
        .fetch_all(pool)
        .await?;
        let mut out = Vec::new();
        for (provider, base_url, sealed) in rows {
            let api_key = match sealed.filter(|s| !s.is_empty()) {
                None => String::new(),
                Some(s) => match crate::secrets::decrypt(key, &s) {
                    Ok(k) => k,
                    Err(err) => {
                        tracing::warn!(%provider, %err, "provider key does not decrypt; provider skipped");
                        continue;
                    }
                },
            };
            out.push(ProviderCredential {
                provider: provider.to_lowercase(),
                base_url: base_url.filter(|u| !u.is_empty()),
                api_key,
            });
        }
        Ok(out)
    }

    /// The providers one agent uses: its configured STT/LLM/TTS provider where
    /// the workspace has credentials (or a known keyless base URL), else the
    /// offline default of that stage.
    pub fn for_agent(
        &self,
        config: &Config,
        profile: &AgentProfile,
        creds: &[ProviderCredential],
    ) -> Providers {
        let find = |name: &str| -> Option<(String, String)> {
            let cred = creds.iter().find(|c| c.provider == name);
            let base = cred
                .and_then(|c| c.base_url.clone())
                .or_else(|| default_base_url(name).map(str::to_string))?;
            if cred.is_none()
                && !base.starts_with("http://127.")
                && !base.starts_with("http://localhost")
            {
                return None; // a remote service with no key configured
            }
            Some((base, cred.map(|c| c.api_key.clone()).unwrap_or_default()))
        };
        let mut out = self.clone();
        let llm_provider = profile.llm_provider.to_lowercase();
        if llm_provider != "offline" {
            match find(&llm_provider) {
                Some((base_url, api_key)) => {
                    let settings = HttpLlmSettings {
                        base_url,
                        api_key,
                        model: profile.llm_model.clone(),
                        limits: CallLimits {
                            first_byte: Duration::from_secs(
                                config.llm.first_token_timeout_secs.max(1),
                            ),
                            stall: CallLimits::LLM_STALL,
                            total: Duration::from_secs(config.llm.reply_timeout_secs.max(1)),
                        },
                        context_window: profile.context_window_size,
                    };
                    let http = self.http.clone();
                    out.llm = if llm_provider == "anthropic" {
                        Arc::new(AnthropicMessages::new(settings, http))
                    } else {
                        Arc::new(OpenAiChat::new(settings, http))
                    };
                }
                None => {
                    tracing::warn!(provider = %llm_provider, "no credentials for the agent's LLM; using the offline answerer")
                }
            }
        }
        let stt_provider = profile.stt_provider.to_lowercase();
        if stt_provider != "whisper" {
            match find(&stt_provider) {
                Some((base, key)) => {
                    let model = if stt_provider == "groq" {
                        "whisper-large-v3"
                    } else {
                        "whisper-1"
                    };
                    out.stt = Arc::new(OpenAiStt::new(self.http.clone(), &base, &key, model));
                }
                None => {
                    tracing::warn!(provider = %stt_provider, "no credentials for the agent's STT; using whisper")
                }
            }
        }
        let tts_provider = profile.tts_provider.to_lowercase();
        match tts_provider.as_str() {
            "espeak" => out.tts = self.espeak.clone(),
            // In-process unless the workspace names a Piper HTTP server.
            "piper" if find("piper").is_none() => {}
            _ => match (tts_provider.as_str(), find(&tts_provider)) {
                ("elevenlabs", Some((base, key))) => {
                    out.tts = Arc::new(ElevenLabsTts::new(
                        self.http.clone(),
                        &base,
                        &key,
                        "eleven_flash_v2_5",
                    ))
                }
                ("piper", Some((base, _))) => {
                    out.tts = Arc::new(PiperHttpTts::new(self.http.clone(), &base))
                }
                (_, Some((base, key))) => {
                    out.tts = Arc::new(OpenAiTts::new(self.http.clone(), &base, &key, "tts-1"))
                }
                (_, None) => {
                    tracing::warn!(provider = %tts_provider, "no credentials for the agent's TTS; using the offline voice")
                }
            },
        }
        out
    }
}

/// The process's Piper engine for `config` (loaded once: a model and its
/// ONNX session are large, and every bundle built from the same
/// configuration shares them).
fn shared_piper(config: &TtsConfig) -> Result<Arc<dyn TextToSpeech>, ProviderError> {
    type Loaded = (String, Arc<PiperTts>);
    static PIPER: Mutex<Option<Loaded>> = Mutex::new(None);
    let id = format!(
        "{}|{}|{}|{}|{}",
        config.onnxruntime_path.display(),
        config.piper_dir.display(),
        config.piper_voice,
        config.piper_threads,
        config.piper_workers
    );
    let mut slot = PIPER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded_id, piper)) = slot.as_ref() {
        if *loaded_id == id {
            return Ok(piper.clone());
        }
    }
    super::phonemize::use_data_dir(&config.espeak_data_dir);
    let piper = Arc::new(PiperTts::new(
        &config.onnxruntime_path,
        &config.piper_dir,
        &config.piper_voice,
        config.piper_threads,
        config.piper_workers,
    )?);
    tracing::info!(voice = %config.piper_voice, "Piper voice loaded");
    *slot = Some((id, piper.clone()));
    Ok(piper)
}

/// `engine` answering pre-rendered texts from the cache, when one is set.
fn with_cache(config: &TtsConfig, engine: Arc<dyn TextToSpeech>) -> Arc<dyn TextToSpeech> {
    if config.cache_dir.as_os_str().is_empty() {
        return engine;
    }
    match TtsCache::open(&config.cache_dir) {
        Ok(cache) => Arc::new(CachedTts::new(engine, cache)),
        Err(err) => {
            tracing::warn!(dir = %config.cache_dir.display(), error = %err, "no pre-rendered audio: the cache folder cannot be created");
            engine
        }
    }
}
