//! Networked TTS over HTTP with reqwest, audio streamed as it arrives:
//! OpenAI-compatible `/v1/audio/speech` (raw 24 kHz PCM), ElevenLabs
//! streaming (`pcm_16000`), and a Piper HTTP server (WAV). Dropping the
//! stream closes the response.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;

use super::provider_error::status_error;
use super::tts::{no_audio, speakable, AudioChunk, AudioStream, ProviderError, TextToSpeech};
use super::wav::{pcm_from_le_bytes, WavReader};

/// Time to the response headers, and longest gap between body pieces.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// How a response body carries audio.
#[derive(Debug, Clone, Copy)]
enum BodyFormat {
    /// Headerless 16-bit little-endian mono at this rate.
    RawPcm(u32),
    Wav,
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    let resp = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, req.send()).await {
        Err(_) => return Err(ProviderError::Timeout(FIRST_BYTE_TIMEOUT)),
        Ok(Err(e)) => return Err(ProviderError::from_http(e, FIRST_BYTE_TIMEOUT)),
        Ok(Ok(r)) => r,
    };
    if !resp.status().is_success() {
        return Err(status_error(resp).await);
    }
    Ok(resp)
}

/// Turns a response body into audio chunks as bytes arrive.
fn audio_stream(resp: reqwest::Response, declared: BodyFormat) -> AudioStream {
    let is_wav = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("wav"));
    let format = if is_wav { BodyFormat::Wav } else { declared };
    struct State {
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        format: BodyFormat,
        wav: WavReader,
        carry: Option<u8>,
        done: bool,
    }
    let state = State {
        body: resp.bytes_stream().boxed(),
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
            let next = match tokio::time::timeout(STALL_TIMEOUT, s.body.next()).await {
                Err(_) => {
                    s.done = true;
                    return Some((Err(ProviderError::Timeout(STALL_TIMEOUT)), s));
                }
                Ok(n) => n,
            };
            let bytes = match next {
                None => return None,
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(ProviderError::Network(e.to_string())), s));
                }
                Some(Ok(b)) => b,
            };
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
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    model: String,
}

impl OpenAiTts {
    /// `base_url` like `https://api.openai.com/v1`; model like `tts-1`.
    pub fn new(base_url: &str, api_key: &str, model: &str) -> OpenAiTts {
        OpenAiTts {
            client: client(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            model: model.to_string(),
        }
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
        let mut req = self
            .client
            .post(format!("{}/audio/speech", self.base_url))
            .json(&json!({
                "model": self.model,
                "input": text,
                "voice": if voice.is_empty() { "alloy" } else { voice },
                "speed": clamp_speed(speed, 0.25, 4.0),
                "response_format": "pcm",
            }));
        if !self.api_key.is_empty() {
            req = req.bearer_auth(&self.api_key);
        }
        Ok(audio_stream(send(req).await?, BodyFormat::RawPcm(24_000)))
    }

    fn name(&self) -> String {
        format!("openai:{}", self.model)
    }
}

/// ElevenLabs `POST {base}/v1/text-to-speech/{voice}/stream?output_format=pcm_16000`.
pub struct ElevenLabsTts {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    model: String,
}

impl ElevenLabsTts {
    /// `base_url` like `https://api.elevenlabs.io`; model like `eleven_flash_v2_5`.
    pub fn new(base_url: &str, api_key: &str, model: &str) -> ElevenLabsTts {
        ElevenLabsTts {
            client: client(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            model: model.to_string(),
        }
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
        let req = self
            .client
            .post(format!(
                "{}/v1/text-to-speech/{voice}/stream?output_format=pcm_16000",
                self.base_url
            ))
            .header("xi-api-key", &self.api_key)
            .json(&json!({
                "text": text,
                "model_id": self.model,
                "voice_settings": { "speed": clamp_speed(speed, 0.7, 1.2) },
            }));
        Ok(audio_stream(send(req).await?, BodyFormat::RawPcm(16_000)))
    }

    fn name(&self) -> String {
        format!("elevenlabs:{}", self.model)
    }
}

/// A Piper HTTP server (`python -m piper.http_server`): `POST /` with JSON,
/// WAV back. Speed maps to Piper's `length_scale` (its inverse).
pub struct PiperHttpTts {
    client: reqwest::Client,
    base_url: String,
}

impl PiperHttpTts {
    pub fn new(base_url: &str) -> PiperHttpTts {
        PiperHttpTts {
            client: client(),
            base_url: base_url.trim_end_matches('/').to_string(),
        }
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
        let req = self.client.post(format!("{}/", self.base_url)).json(&body);
        Ok(audio_stream(send(req).await?, BodyFormat::Wav))
    }

    fn name(&self) -> String {
        "piper".into()
    }
}
