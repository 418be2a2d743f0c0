//! `POST /v1/workspaces/{workspace_id}/agents/{id}/tts-preview` (VIEWER):
//! a WAV of a short text in the agent's voice — the engine a call would
//! use (its `tts_provider` with the workspace's credentials, else the
//! offline Piper voice), so what the console plays is what callers hear.
//! Body (all optional): `text` (≤ 300 characters; default the persona's
//! greeting), and `tts_provider`, `tts_voice`, `tts_speed` to hear a voice
//! before saving it. The node's runtime does the synthesis
//! ([`VoicePreview`]); without one the endpoint answers 503.

use std::future::Future;
use std::pin::Pin;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde_json::Value;
use uuid::Uuid;

use super::auth::Principal;
use super::body::{only_fields, opt_str, JsonObject};
use super::error::ApiError;
use super::extract::Ids;
use super::types::Role;
use super::ApiState;
use crate::agent_runtime::profile::AgentProfile;
use crate::agent_runtime::providers::Providers;
use crate::agent_runtime::Runtime;

/// Characters a preview may speak (a sentence or two).
const MAX_PREVIEW_CHARS: usize = 300;
/// Samples kept of a preview (30 s at 24 kHz): an engine that streams on
/// is cut off, never buffered without end.
const MAX_PREVIEW_SAMPLES: usize = 30 * 24_000;

/// The voice to preview: the agent's saved settings with these overrides.
#[derive(Debug, Clone, Default)]
pub struct VoiceChoice {
    pub provider: Option<String>,
    pub voice: Option<String>,
    pub speed: Option<f32>,
    /// None: the persona's greeting.
    pub text: Option<String>,
}

pub type PreviewFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, ApiError>> + Send + 'a>>;

/// Synthesises a preview as the node's calls would (a WAV file).
pub trait VoicePreview: Send + Sync {
    fn preview(&self, workspace_id: Uuid, agent_id: Uuid, choice: VoiceChoice)
        -> PreviewFuture<'_>;
}

impl VoicePreview for Runtime {
    fn preview(
        &self,
        workspace_id: Uuid,
        agent_id: Uuid,
        choice: VoiceChoice,
    ) -> PreviewFuture<'_> {
        Box::pin(async move {
            let mut profile = AgentProfile::load(&self.pool, agent_id).await?;
            if profile.workspace_id != workspace_id {
                return Err(ApiError::NotFound);
            }
            if let Some(p) = choice.provider {
                profile.tts_provider = p;
            }
            if let Some(v) = choice.voice {
                profile.tts_voice = v;
            }
            if let Some(s) = choice.speed {
                profile.tts_speed = s;
            }
            let text = choice.text.unwrap_or_else(|| profile.greeting.clone());
            let key = self.config.encryption_key_bytes();
            let creds = Providers::load_credentials(&self.pool, workspace_id, &key)
                .await
                .map_err(ApiError::internal)?;
            let tts = self.providers.for_agent(&self.config, &profile, &creds).tts;
            let mut stream = tts
                .synthesize(&text, &profile.tts_voice, profile.tts_speed)
                .await
                .map_err(|e| ApiError::Unprocessable {
                    message: format!("the voice could not speak: {e}"),
                    field: None,
                })?;
            let (mut pcm, mut rate) = (Vec::new(), 0u32);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ApiError::Unprocessable {
                    message: format!("the voice failed: {e}"),
                    field: None,
                })?;
                if rate == 0 {
                    rate = chunk.sample_rate;
                }
                // A change of rate mid-stream does not happen with our
                // engines; such audio would be garbled, so it is cut.
                if chunk.sample_rate != rate || pcm.len() >= MAX_PREVIEW_SAMPLES {
                    break;
                }
                let room = MAX_PREVIEW_SAMPLES - pcm.len();
                pcm.extend_from_slice(&chunk.pcm[..chunk.pcm.len().min(room)]);
            }
            if pcm.is_empty() || rate == 0 {
                return Err(ApiError::Unprocessable {
                    message: "the voice produced no audio".into(),
                    field: None,
                });
            }
            Ok(crate::agent_runtime::wav::encode_wav(&pcm, rate))
        })
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/v1/workspaces/{workspace_id}/agents/{id}/tts-preview",
        post(preview),
    )
}

fn choice(body: &serde_json::Map<String, Value>) -> Result<VoiceChoice, ApiError> {
    only_fields(body, &["text", "tts_provider", "tts_voice", "tts_speed"])?;
    let text = opt_str(body, "text")?
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if text.is_some_and(|t| t.chars().count() > MAX_PREVIEW_CHARS) {
        return Err(ApiError::validation(
            "text",
            format!("must be at most {MAX_PREVIEW_CHARS} characters"),
        ));
    }
    let short = |field: &str, max: usize| -> Result<Option<String>, ApiError> {
        match opt_str(body, field)? {
            Some(s) if s.chars().count() > max => Err(ApiError::validation(
                field,
                format!("must be at most {max} characters"),
            )),
            other => Ok(other.map(str::to_string).filter(|s| !s.is_empty())),
        }
    };
    let speed = match body.get("tts_speed") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if (0.25..=4.0).contains(&s) => Some(s as f32),
            _ => {
                return Err(ApiError::validation(
                    "tts_speed",
                    "must be a number from 0.25 to 4",
                ))
            }
        },
    };
    Ok(VoiceChoice {
        provider: short("tts_provider", 50)?,
        voice: short("tts_voice", 100)?,
        speed,
        text: text.map(str::to_string),
    })
}

async fn preview(
    State(st): State<ApiState>,
    p: Principal,
    ids: Ids,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let (ws, agent) = (ids.get(0)?, ids.get(1)?);
    st.require(&p, ws, Role::Viewer).await?;
    let choice = choice(&body)?;
    // The agent must be visible to the caller under RLS (not only exist).
    let mut tx = st.begin(&p).await?;
    let visible: bool = sqlx::query_scalar(
        "select exists(select 1 from agents where workspace_id = $1 and id = $2)",
    )
    .bind(ws)
    .bind(agent)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if !visible {
        return Err(ApiError::NotFound);
    }
    let voice = st
        .voice
        .as_ref()
        .ok_or_else(|| ApiError::Capacity("voice preview is not available on this node".into()))?;
    let wav = voice.preview(ws, agent, choice).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        wav,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn choices_are_checked() {
        let c = choice(&body(json!({"text": " Hi ", "tts_speed": 1.5}))).unwrap();
        assert_eq!(c.text.as_deref(), Some("Hi"));
        assert_eq!(c.speed, Some(1.5));
        assert!(choice(&body(json!({"text": "x".repeat(301)}))).is_err());
        assert!(choice(&body(json!({"tts_speed": 9}))).is_err());
        assert!(choice(&body(json!({"voice": "x"}))).is_err());
        let c = choice(&body(json!({"text": "", "tts_voice": ""}))).unwrap();
        assert!(c.text.is_none() && c.voice.is_none());
    }
}
