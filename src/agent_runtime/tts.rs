//! The text-to-speech stage: a sentence in, 16-bit mono PCM out as a stream
//! (first audio before the whole sentence is synthesised where the engine
//! allows). Dropping the stream stops the work: espeak-ng is killed, HTTP
//! responses are closed. Default: a Piper voice (`tts_piper`); espeak-ng
//! (Debian) here is the fallback.

use std::borrow::Cow;
use std::process::Stdio;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};

pub use super::provider_error::ProviderError;
pub use super::tts_http::{ElevenLabsTts, OpenAiTts, PiperHttpTts};
use super::wav::WavReader;

/// Longest text accepted for one synthesis (a sentence, with headroom).
pub const MAX_TTS_CHARS: usize = 2000;

#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    pub pcm: Vec<i16>,
    pub sample_rate: u32,
}

pub type AudioStream = BoxStream<'static, Result<AudioChunk, ProviderError>>;

#[async_trait]
pub trait TextToSpeech: Send + Sync {
    /// Starts synthesising `text` with `voice` at `speed` (1.0 = normal).
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError>;
    /// Provider name for usage records.
    fn name(&self) -> String;
    /// The voice `voice` really is with this engine (an engine that maps
    /// unknown names to its default says so), for pre-rendered audio keys.
    async fn voice_id(&self, voice: &str) -> String {
        voice.trim().to_string()
    }
    /// Synthesis for pre-rendering: an engine that can keep it out of live
    /// calls' way (its own session, waiting while calls synthesise) does.
    async fn synthesize_background(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        self.synthesize(text, voice, speed).await
    }
    /// The pre-rendered-audio layer, when this engine has one.
    fn prerendered(&self) -> Option<&super::tts_cache::CachedTts> {
        None
    }
}

/// Text cut to [`MAX_TTS_CHARS`] on a character boundary.
pub(crate) fn bounded_text(text: &str) -> &str {
    if text.len() <= MAX_TTS_CHARS {
        return text;
    }
    let mut cut = MAX_TTS_CHARS;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// The text a provider synthesises: trimmed, bounded, as it is read aloud
/// (`read_aloud`: prices, house numbers, telephone numbers, hyphens);
/// `None` when nothing is left to say.
pub(crate) fn speakable(text: &str) -> Option<Cow<'_, str>> {
    Some(bounded_text(text.trim()))
        .filter(|t| !t.is_empty())
        .map(super::read_aloud::read_aloud)
}

/// The stream of an empty text.
pub(crate) fn no_audio() -> AudioStream {
    futures::stream::empty().boxed()
}

/// A whole sentence rendered at once (Piper, a cache hit) as a stream.
pub(crate) fn one_chunk(chunk: AudioChunk) -> AudioStream {
    futures::stream::iter([Ok(chunk)]).boxed()
}

/// espeak-ng as a child process per sentence; its WAV on stdout is parsed
/// and streamed as it is written (22050 Hz for the standard voices).
#[derive(Debug, Clone)]
pub struct EspeakTts {
    program: String,
    default_voice: String,
}

impl EspeakTts {
    pub fn new(default_voice: &str) -> EspeakTts {
        EspeakTts {
            program: "espeak-ng".into(),
            default_voice: sanitize_voice(default_voice).unwrap_or("en-us").to_string(),
        }
    }

    /// espeak-ng's words per minute for a speed factor (175 is its normal).
    pub fn words_per_minute(speed: f32) -> u32 {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        ((175.0 * speed).round() as u32).clamp(80, 450)
    }

    fn spawn(&self, voice: &str, speed: f32) -> Result<Child, ProviderError> {
        Command::new(&self.program)
            .arg("--stdout")
            .arg("-v")
            .arg(voice)
            .arg("-s")
            .arg(Self::words_per_minute(speed).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProviderError::Engine(format!("cannot start {}: {e}", self.program)))
    }

    async fn start(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<(Child, ChildStdout, WavReader, Vec<i16>), ProviderError> {
        let mut child = self.spawn(voice, speed)?;
        // Text goes through stdin, never argv: nothing the model writes can
        // become an option, and there is no argument-length limit.
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| ProviderError::Engine("no stdin".into()))?;
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| ProviderError::Engine(e.to_string()))?;
        stdin
            .write_all(b"\n")
            .await
            .map_err(|e| ProviderError::Engine(e.to_string()))?;
        drop(stdin);
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| ProviderError::Engine("no stdout".into()))?;
        // Read until the header and the first samples are known, so a bad
        // voice (espeak-ng writes nothing) is an error here, not a silent stream.
        let mut reader = WavReader::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| ProviderError::Engine(e.to_string()))?;
            if n == 0 {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = (&mut stderr).take(2000).read_to_string(&mut err).await;
                }
                let _ = child.wait().await;
                return Err(ProviderError::Engine(format!(
                    "espeak-ng produced no audio: {}",
                    err.trim()
                )));
            }
            let pcm = reader.push(&buf[..n]).map_err(ProviderError::Protocol)?;
            if reader.format().is_some() && !pcm.is_empty() {
                return Ok((child, stdout, reader, pcm));
            }
        }
    }
}

/// espeak-ng voice names are short identifiers; anything else (an OpenAI
/// voice name left on the agent, say) falls back to the default voice.
fn sanitize_voice(voice: &str) -> Option<&str> {
    let v = voice.trim();
    let ok = v.len() <= 40
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/'));
    ok.then_some(v)
}

struct EspeakStream {
    // Held so the process dies when the stream is dropped (kill_on_drop).
    _child: Child,
    stdout: ChildStdout,
    reader: WavReader,
    rate: u32,
    first: Option<Vec<i16>>,
    buf: Vec<u8>,
}

#[async_trait]
impl TextToSpeech for EspeakTts {
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let Some(text) = speakable(text) else {
            return Ok(no_audio());
        };
        let wanted = sanitize_voice(voice).unwrap_or(&self.default_voice);
        let started = match self.start(&text, wanted, speed).await {
            Err(ProviderError::Engine(msg)) if wanted != self.default_voice => {
                tracing::warn!(voice = wanted, error = %msg, "espeak-ng voice failed; using the default voice");
                self.start(&text, &self.default_voice, speed).await?
            }
            other => other?,
        };
        let (child, stdout, reader, first) = started;
        let rate = reader.format().map_or(22050, |f| f.sample_rate);
        let state = EspeakStream {
            _child: child,
            stdout,
            reader,
            rate,
            first: Some(first),
            buf: vec![0u8; 8192],
        };
        Ok(futures::stream::unfold(state, |mut s| async move {
            if let Some(pcm) = s.first.take() {
                let rate = s.rate;
                return Some((
                    Ok(AudioChunk {
                        pcm,
                        sample_rate: rate,
                    }),
                    s,
                ));
            }
            loop {
                match s.stdout.read(&mut s.buf).await {
                    Ok(0) => return None,
                    Ok(n) => match s.reader.push(&s.buf[..n]) {
                        Ok(pcm) if pcm.is_empty() => continue,
                        Ok(pcm) => {
                            let rate = s.rate;
                            return Some((
                                Ok(AudioChunk {
                                    pcm,
                                    sample_rate: rate,
                                }),
                                s,
                            ));
                        }
                        Err(e) => return Some((Err(ProviderError::Protocol(e)), s)),
                    },
                    Err(e) => return Some((Err(ProviderError::Engine(e.to_string())), s)),
                }
            }
        })
        .boxed())
    }

    fn name(&self) -> String {
        "espeak-ng".into()
    }

    async fn voice_id(&self, voice: &str) -> String {
        sanitize_voice(voice)
            .unwrap_or(&self.default_voice)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_maps_to_bounded_wpm() {
        assert_eq!(EspeakTts::words_per_minute(1.0), 175);
        assert_eq!(EspeakTts::words_per_minute(2.0), 350);
        assert_eq!(EspeakTts::words_per_minute(0.1), 80);
        assert_eq!(EspeakTts::words_per_minute(f32::NAN), 175);
    }

    #[test]
    fn voices_are_sanitised() {
        assert_eq!(sanitize_voice("en-us"), Some("en-us"));
        assert_eq!(sanitize_voice("--help"), None);
        assert_eq!(sanitize_voice("a b"), None);
        assert_eq!(sanitize_voice(""), None);
    }
}
