//! Networked TTS over HTTP with reqwest, audio streamed as it arrives:
//! OpenAI-compatible `/v1/audio/speech` (raw 24 kHz PCM), ElevenLabs
//! streaming (`pcm_16000`), and a Piper HTTP server (WAV). Requests go out
//! through the guarded client; each sentence's audio is bounded in time
//! ([`CallLimits::TTS`]) and size. Dropping the stream closes the response.

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;

use super::provider_http::{body, next_piece, send, Body, Budget, CallLimits};
use super::tts::{no_audio, speakable, AudioChunk, AudioStream, ProviderError, TextToSpeech};
use super::wav::{pcm_from_le_bytes, WavReader};
use crate::outbound::GuardedClient;

/// Most audio bytes read for one sentence (about 90 s at 48 kHz, far more
/// at the rates asked for): a provider that streams on and on must not
/// grow the sentence's buffer without end.
const MAX_SENTENCE_AUDIO_BYTES: usize = 8 * 1024 * 1024;

/// How a response body carries audio.
#[derive(Debug, Clone, Copy)]
enum BodyFormat {
    /// Headerless 16-bit little-endian mono at this rate.
    RawPcm(u32),
    Wav,
}

/// Sends a synthesis request and turns its answer into audio chunks as
/// bytes arrive; audio is progress (the first within `first_byte`, then
/// each within `stall`), all of it within `total`.
async fn speak(
    req: Result<reqwest::RequestBuilder, String>,
    limits: CallLimits,
    declared: BodyFormat,
) -> Result<AudioStream, ProviderError> {
    let budget = Budget::start(limits, tokio::time::Instant::now());
    let resp = send(req, &budget).await?;
    Ok(audio_stream(resp, declared, budget))
}

/// Turns a response body into audio chunks as bytes arrive.
fn audio_stream(resp: reqwest::Response, declared: BodyFormat, budget: Budget) -> AudioStream {
    let is_wav = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("wav"));
    let format = if is_wav { BodyFormat::Wav } else { declared };
    struct State {
        body: Body,
        budget: Budget,
        read: usize,
        format: BodyFormat,
        wav: WavReader,
        carry: Option<u8>,
        done: bool,
    }
    let state = State {
        body: body(resp),
        budget,
        read: 0,
        format,
        wav: WavReader::new(),
        carry: None,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let bytes = match next_piece(&mut s.body, &s.budget).await {
                Ok(Some(b)) => b,
                Ok(None) => return None,
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            };
            s.read += bytes.len();
            if s.read > MAX_SENTENCE_AUDIO_BYTES {
                s.done = true;
                let e =
                    format!("more than {MAX_SENTENCE_AUDIO_BYTES} bytes of audio for one sentence");
                return Some((Err(ProviderError::Protocol(e)), s));
            }
            // A body that starts with RIFF is WAV whatever was declared.
            if matches!(s.format, BodyFormat::RawPcm(_))
                && s.carry.is_none()
                && bytes.starts_with(b"RIFF")
            {
                s.format = BodyFormat::Wav;
            }
            let (pcm, rate) = match s.format {
                BodyFormat::RawPcm(rate) => (pcm_from_le_bytes(&mut s.carry, &bytes), rate),
                BodyFormat::Wav => match s.wav.push(&bytes) {
                    Ok(pcm) => (pcm, s.wav.format().map_or(0, |f| f.sample_rate)),
                    Err(e) => {
                        s.done = true;
                        return Some((Err(ProviderError::Protocol(e)), s));
                    }
                },
            };
            if !pcm.is_empty() && rate > 0 {
                s.budget.progress(tokio::time::Instant::now());
                return Some((
                    Ok(AudioChunk {
                        pcm,
                        sample_rate: rate,
                    }),
                    s,
                ));
            }
        }
    })
    .boxed()
}

fn clamp_speed(speed: f32, lo: f32, hi: f32) -> f32 {
    if speed.is_finite() {
        speed.clamp(lo, hi)
    } else {
        1.0
    }
}

/// OpenAI-compatible `POST {base}/audio/speech`, `response_format: pcm`.
pub struct OpenAiTts {
    client: GuardedClient,
    base_url: String,
    api_key: String,
    model: String,
    limits: CallLimits,
}

impl OpenAiTts {
    /// `base_url` like `https://api.openai.com/v1`; model like `tts-1`.
    /// `client` is the provider client (`provider_http::provider_client`).
    pub fn new(client: GuardedClient, base_url: &str, api_key: &str, model: &str) -> OpenAiTts {
        OpenAiTts {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            model: model.to_string(),
            limits: CallLimits::TTS,
        }
    }

    /// The same with other time limits.
    pub fn with_limits(mut self, limits: CallLimits) -> OpenAiTts {
        self.limits = limits;
        self
    }
}

#[async_trait]
impl TextToSpeech for OpenAiTts {
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let Some(text) = speakable(text) else {
            return Ok(no_audio());
        };
        let body = json!({
            "model": self.model,
            "input": text,
            "voice": if voice.is_empty() { "alloy" } else { voice },
            "speed": clamp_speed(speed, 0.25, 4.0),
            "response_format": "pcm",
        });
        let req = self
            .client
            .post(&format!("{}/audio/speech", self.base_url))
            .map(|req| {
                let req = req.json(&body);
                if self.api_key.is_empty() {
                    req
                } else {
                    req.bearer_auth(&self.api_key)
                }
            });
        speak(req, self.limits, BodyFormat::RawPcm(24_000)).await
    }

    fn name(&self) -> String {
        format!("openai:{}", self.model)
    }
}

/// ElevenLabs `POST {base}/v1/text-to-speech/{voice}/stream?output_format=pcm_16000`.
pub struct ElevenLabsTts {
    client: GuardedClient,
    base_url: String,
    api_key: String,
    model: String,
    limits: CallLimits,
}

impl ElevenLabsTts {
    /// `base_url` like `https://api.elevenlabs.io`; model like `eleven_flash_v2_5`.
    /// `client` is the provider client (`provider_http::provider_client`).
    pub fn new(client: GuardedClient, base_url: &str, api_key: &str, model: &str) -> ElevenLabsTts {
        ElevenLabsTts {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            model: model.to_string(),
            limits: CallLimits::TTS,
        }
    }

    /// The same with other time limits.
    pub fn with_limits(mut self, limits: CallLimits) -> ElevenLabsTts {
        self.limits = limits;
        self
    }
}

#[async_trait]
impl TextToSpeech for ElevenLabsTts {
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let Some(text) = speakable(text) else {
            return Ok(no_audio());
        };
        // The voice id goes into the path: only id characters are allowed.
        if voice.is_empty()
            || !voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ProviderError::Config(format!(
                "invalid ElevenLabs voice id {voice:?}"
            )));
        }
        let url = format!(
            "{}/v1/text-to-speech/{voice}/stream?output_format=pcm_16000",
            self.base_url
        );
        let req = self.client.post(&url).map(|req| {
            req.header("xi-api-key", &self.api_key).json(&json!({
                "text": text,
                "model_id": self.model,
                "voice_settings": { "speed": clamp_speed(speed, 0.7, 1.2) },
            }))
        });
        speak(req, self.limits, BodyFormat::RawPcm(16_000)).await
    }

    fn name(&self) -> String {
        format!("elevenlabs:{}", self.model)
    }
}

/// A Piper HTTP server (`python -m piper.http_server`): `POST /` with JSON,
/// WAV back. Speed maps to Piper's `length_scale` (its inverse).
pub struct PiperHttpTts {
    client: GuardedClient,
    base_url: String,
    limits: CallLimits,
}

impl PiperHttpTts {
    /// `client` is the provider client (`provider_http::provider_client`).
    pub fn new(client: GuardedClient, base_url: &str) -> PiperHttpTts {
        PiperHttpTts {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            limits: CallLimits::TTS,
        }
    }

    /// The same with other time limits.
    pub fn with_limits(mut self, limits: CallLimits) -> PiperHttpTts {
        self.limits = limits;
        self
    }
}

#[async_trait]
impl TextToSpeech for PiperHttpTts {
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let Some(text) = speakable(text) else {
            return Ok(no_audio());
        };
        let mut body = json!({ "text": text, "length_scale": 1.0 / clamp_speed(speed, 0.25, 4.0) });
        if !voice.is_empty() {
            body["voice"] = json!(voice);
        }
        let req = self
            .client
            .post(&format!("{}/", self.base_url))
            .map(|req| req.json(&body));
        speak(req, self.limits, BodyFormat::Wav).await
    }

    fn name(&self) -> String {
        "piper".into()
    }
}
