//! OpenAI-compatible `POST {base}/audio/transcriptions`: the utterance is
//! uploaded as a 16 kHz WAV in a multipart form (built by hand: one file
//! part and a few text fields), the JSON answer's `text` is the transcript.
//! The request goes out through the guarded client and within
//! [`CallLimits::STT`]; the answer is read to a bounded size.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::provider_http::{read_body, send, Budget, CallLimits};
use super::stt::{
    ProviderError, SpeechToText, SttHints, Transcript, MAX_UTTERANCE_SAMPLES, STT_SAMPLE_RATE,
};
use super::wav::encode_wav;
use crate::outbound::GuardedClient;

/// Largest transcription answer read (a JSON object holding the text).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct OpenAiStt {
    client: GuardedClient,
    base_url: String,
    api_key: String,
    model: String,
    limits: CallLimits,
}

impl OpenAiStt {
    /// `base_url` like `https://api.openai.com/v1`; `client` is the
    /// provider client (`provider_http::provider_client`).
    pub fn new(client: GuardedClient, base_url: &str, api_key: &str, model: &str) -> OpenAiStt {
        OpenAiStt {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            model: model.to_string(),
            limits: CallLimits::STT,
        }
    }

    /// The same with other time limits.
    pub fn with_limits(mut self, limits: CallLimits) -> OpenAiStt {
        self.limits = limits;
        self
    }

    /// The same with one limit for the answer and the whole call.
    pub fn with_timeout(self, timeout: Duration) -> OpenAiStt {
        self.with_limits(CallLimits {
            first_byte: timeout,
            stall: timeout,
            total: timeout,
        })
    }
}

#[derive(Deserialize)]
struct TranscriptionResponse {
    text: String,
}

/// A multipart/form-data body with text fields and one WAV file.
fn multipart(boundary: &str, fields: &[(&str, &str)], wav: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(wav.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(wav);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[async_trait]
impl SpeechToText for OpenAiStt {
    async fn transcribe(
        &self,
        pcm16k: &[i16],
        hints: &SttHints,
    ) -> Result<Transcript, ProviderError> {
        let started = tokio::time::Instant::now();
        let mut budget = Budget::start(self.limits, started);
        let pcm = &pcm16k[..pcm16k.len().min(MAX_UTTERANCE_SAMPLES)];
        let audio_ms = (pcm.len() as u64 * 1000 / STT_SAMPLE_RATE as u64) as u32;
        let wav = encode_wav(pcm, STT_SAMPLE_RATE);
        let boundary = format!("switchboard-{}", uuid::Uuid::new_v4().simple());
        let lang = hints.base_language();
        let mut fields = vec![("model", self.model.as_str()), ("response_format", "json")];
        if let Some(l) = lang
            .as_deref()
            .filter(|l| l.len() <= 8 && l.chars().all(|c| c.is_ascii_alphabetic()))
        {
            fields.push(("language", l));
        }
        // The agent's vocabulary, as OpenAI's `prompt` field; a multipart
        // field value must not hold the boundary's CR LF sequence.
        let prompt = hints
            .prompt
            .as_deref()
            .map(|p| p.replace(['\r', '\n'], " "));
        if let Some(p) = prompt.as_deref().filter(|p| !p.is_empty()) {
            fields.push(("prompt", p));
        }
        let req = self
            .client
            .post(&format!("{}/audio/transcriptions", self.base_url))
            .map(|req| {
                let req = req
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(multipart(&boundary, &fields, &wav));
                if self.api_key.is_empty() {
                    req
                } else {
                    req.bearer_auth(&self.api_key)
                }
            });
        let resp = send(req, &budget).await?;
        let answer = read_body(resp, MAX_ANSWER_BYTES, &mut budget).await?;
        let body: TranscriptionResponse = serde_json::from_slice(&answer)
            .map_err(|e| ProviderError::Protocol(format!("bad transcription JSON: {e}")))?;
        Ok(Transcript {
            text: body.text.trim().to_string(),
            audio_ms,
            elapsed_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
        })
    }

    fn name(&self) -> String {
        self.model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_shape() {
        let body = multipart("B", &[("model", "whisper-1")], b"RIFFxx");
        let s = String::from_utf8_lossy(&body);
        assert!(s.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        ));
        assert!(s.contains("filename=\"audio.wav\""));
        assert!(s.ends_with("RIFFxx\r\n--B--\r\n"));
    }
}
