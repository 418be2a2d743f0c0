//! Piper voices (VITS, ONNX) in-process: phoneme ids from [`phonemize`],
//! inference through ONNX Runtime loaded from `data/models` at start-up,
//! 16-bit audio at the voice's rate (22 050 Hz for medium voices). One
//! session per voice, loaded once and shared; inference runs on blocking
//! threads, at most `piper_workers` at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::phonemize::{self, PhonemeIdMap};
use super::tts::{
    no_audio, one_chunk, speakable, AudioChunk, AudioStream, ProviderError, TextToSpeech,
};

/// Voices one process keeps loaded (each holds a model of ~60 MB).
const MAX_VOICES: usize = 8;
/// Longest a pre-rendering sentence waits for live calls to stop
/// synthesising before it goes ahead anyway.
const BACKGROUND_MAX_WAIT: Duration = Duration::from_secs(30);

/// What the voice's `.onnx.json` says that synthesis needs.
#[derive(Debug, Deserialize)]
struct VoiceFile {
    audio: AudioSection,
    espeak: EspeakSection,
    inference: InferenceSection,
    phoneme_id_map: PhonemeIdMap,
    #[serde(default)]
    num_speakers: u32,
}

#[derive(Debug, Deserialize)]
struct AudioSection {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct EspeakSection {
    voice: String,
}

#[derive(Debug, Deserialize)]
struct InferenceSection {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

/// One loaded voice: its configuration and its ONNX session.
pub struct PiperVoice {
    name: String,
    config: VoiceFile,
    // ort's `run` takes `&mut Session`; the lock also bounds one voice to
    // one inference at a time (ONNX Runtime parallelises inside it).
    session: Mutex<Session>,
    /// Pre-rendering's own single-threaded session, made on first use, so a
    /// live call never waits for a background sentence's lock.
    background: Mutex<Option<Session>>,
    model: PathBuf,
}

impl PiperVoice {
    /// Loads `<dir>/<name>.onnx` and its `.onnx.json`.
    pub fn load(dir: &Path, name: &str, threads: usize) -> Result<PiperVoice, ProviderError> {
        let model = dir.join(format!("{name}.onnx"));
        let json = dir.join(format!("{name}.onnx.json"));
        let text = std::fs::read_to_string(&json)
            .map_err(|e| ProviderError::Engine(format!("{}: {e}", json.display())))?;
        let config: VoiceFile = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Engine(format!("{}: {e}", json.display())))?;
        if config.num_speakers > 1 {
            return Err(ProviderError::Engine(format!(
                "{name}: multi-speaker voices are not supported"
            )));
        }
        let session = super::onnx_env::session(&model, threads, super::onnx_env::Weights::Packed)?;
        Ok(PiperVoice {
            name: name.to_string(),
            config,
            session: Mutex::new(session),
            background: Mutex::new(None),
            model,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    /// Phoneme ids of each sentence of `text`, as piper computes them.
    pub fn phoneme_ids(&self, text: &str) -> Result<Vec<Vec<i64>>, ProviderError> {
        let sentences =
            phonemize::phonemize(&self.config.espeak.voice, text).map_err(ProviderError::Engine)?;
        Ok(sentences
            .iter()
            .map(|s| phonemize::phoneme_ids(s, &self.config.phoneme_id_map))
            .collect())
    }

    /// Synthesises `text` (blocking: call from a blocking thread).
    pub fn synthesize_blocking(&self, text: &str, speed: f32) -> Result<Vec<i16>, ProviderError> {
        self.synthesize_with(text, speed, false)
    }

    fn synthesize_with(
        &self,
        text: &str,
        speed: f32,
        background: bool,
    ) -> Result<Vec<i16>, ProviderError> {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed.clamp(0.25, 4.0)
        } else {
            1.0
        };
        let inf = &self.config.inference;
        let scales = vec![inf.noise_scale, inf.length_scale / speed, inf.noise_w];
        let mut pcm = Vec::new();
        for ids in self.phoneme_ids(text)? {
            if ids.len() <= 3 {
                continue; // BOS, pad, EOS: nothing to say
            }
            let audio = if background {
                self.infer_background(ids, scales.clone())?
            } else {
                let mut session = self
                    .session
                    .lock()
                    .map_err(|_| ProviderError::Engine("piper session lock poisoned".into()))?;
                infer(&mut session, ids, scales.clone())?
            };
            pcm.extend(to_i16(&audio));
        }
        trim_leading_silence(&mut pcm);
        Ok(pcm)
    }

    fn infer_background(&self, ids: Vec<i64>, scales: Vec<f32>) -> Result<Vec<f32>, ProviderError> {
        let mut slot = self
            .background
            .lock()
            .map_err(|_| ProviderError::Engine("piper session lock poisoned".into()))?;
        if slot.is_none() {
            *slot = Some(super::onnx_env::session(
                &self.model,
                1,
                super::onnx_env::Weights::Packed,
            )?);
        }
        match slot.as_mut() {
            Some(session) => infer(session, ids, scales),
            None => Err(ProviderError::Engine("no background session".into())),
        }
    }
}

/// One VITS inference: ids → float audio.
fn infer(
    session: &mut Session,
    ids: Vec<i64>,
    scales: Vec<f32>,
) -> Result<Vec<f32>, ProviderError> {
    let err = |e: ort::Error| ProviderError::Engine(format!("piper inference: {e}"));
    let n = ids.len();
    let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
    let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
    let scales = Tensor::from_array(([3usize], scales)).map_err(err)?;
    let outputs = session
        .run(ort::inputs![
            "input" => input,
            "input_lengths" => lengths,
            "scales" => scales,
        ])
        .map_err(err)?;
    let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    Ok(audio.to_vec())
}

/// Samples kept before the first audible window (5 ms at 22,050 Hz), so the
/// onset is not clipped.
const ONSET_MARGIN: usize = 110;
/// Windows of 5 ms; one is audible when its RMS is above -50 dBFS, the
/// level at which a caller's ear (and a recorder's onset detector) first
/// hears sound on a phone line. Piper's voices rise out of silence over
/// 30-60 ms: a single sample above the floor comes tens of milliseconds
/// before anything can be heard.
const WINDOW: usize = 110;
const AUDIBLE_RMS: f64 = 104.0;

/// Drops the model's silent lead-in: every millisecond of it is a
/// millisecond the caller waits for the answer.
fn trim_leading_silence(pcm: &mut Vec<i16>) {
    let first = pcm.chunks(WINDOW).position(|w| {
        let energy: f64 = w.iter().map(|&s| (s as f64) * (s as f64)).sum();
        (energy / w.len() as f64).sqrt() > AUDIBLE_RMS
    });
    let cut = first.map_or(0, |i| (i * WINDOW).saturating_sub(ONSET_MARGIN));
    pcm.drain(..cut);
}

/// Float audio to 16-bit, peak-normalised per sentence as piper does.
fn to_i16(audio: &[f32]) -> impl Iterator<Item = i16> + '_ {
    let peak = audio.iter().fold(0f32, |m, s| m.max(s.abs()));
    let gain = if peak < 1e-8 { 0.0 } else { 32767.0 / peak };
    audio
        .iter()
        .map(move |s| (s * gain).clamp(-32767.0, 32767.0) as i16)
}

/// The Piper engine: the voices it has loaded, and the bound on inferences.
pub struct PiperTts {
    dir: PathBuf,
    default_voice: Arc<PiperVoice>,
    threads: usize,
    voices: Mutex<HashMap<String, Arc<PiperVoice>>>,
    workers: Arc<Semaphore>,
    /// Live syntheses waiting or running; pre-rendering waits for zero.
    live: Arc<AtomicUsize>,
}

impl PiperTts {
    /// Loads ONNX Runtime and the default voice; an error means the caller
    /// should fall back to espeak-ng.
    pub fn new(
        onnxruntime: &Path,
        dir: &Path,
        default_voice: &str,
        threads: usize,
        workers: usize,
    ) -> Result<PiperTts, ProviderError> {
        super::onnx_env::init(onnxruntime)?;
        phonemize::available().map_err(ProviderError::Engine)?;
        let voice = Arc::new(PiperVoice::load(dir, default_voice, threads)?);
        // The first inference allocates ONNX Runtime's arenas; do it now so a
        // call's first sentence does not pay for it.
        voice.synthesize_blocking("Hello.", 1.0)?;
        Ok(PiperTts {
            dir: dir.to_path_buf(),
            voices: Mutex::new(HashMap::from([(default_voice.to_string(), voice.clone())])),
            default_voice: voice,
            threads,
            workers: Arc::new(Semaphore::new(workers.max(1))),
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn default_voice(&self) -> &Arc<PiperVoice> {
        &self.default_voice
    }

    /// The voice named `name`, loaded on first use; an unknown name (an
    /// espeak-ng or OpenAI voice left on the agent) is the default voice.
    pub async fn voice(&self, name: &str) -> Arc<PiperVoice> {
        let name = name.trim();
        if !is_voice_name(name) || !self.dir.join(format!("{name}.onnx")).is_file() {
            return self.default_voice.clone();
        }
        if let Some(v) = self.voices.lock().ok().and_then(|m| m.get(name).cloned()) {
            return v;
        }
        let (dir, owned, threads) = (self.dir.clone(), name.to_string(), self.threads);
        let loaded =
            tokio::task::spawn_blocking(move || PiperVoice::load(&dir, &owned, threads)).await;
        match loaded {
            Ok(Ok(v)) => {
                let v = Arc::new(v);
                if let Ok(mut map) = self.voices.lock() {
                    if map.len() < MAX_VOICES {
                        map.insert(name.to_string(), v.clone());
                    }
                }
                v
            }
            Ok(Err(err)) => {
                tracing::warn!(voice = name, error = %err, "Piper voice does not load; using the default voice");
                self.default_voice.clone()
            }
            Err(_) => self.default_voice.clone(),
        }
    }

    /// Synthesises `text` with `voice` on a blocking thread, waiting for a
    /// free worker first.
    pub async fn render(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<(Vec<i16>, u32), ProviderError> {
        let _live = LiveGuard::enter(&self.live);
        let voice = self.voice(voice).await;
        let _permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ProviderError::Engine("piper closed".into()))?;
        let text = text.to_string();
        let rate = voice.sample_rate();
        let pcm = tokio::task::spawn_blocking(move || voice.synthesize_blocking(&text, speed))
            .await
            .map_err(|e| ProviderError::Engine(format!("piper task: {e}")))??;
        Ok((pcm, rate))
    }

    /// Synthesis for pre-rendering: waits (bounded) until no live call is
    /// synthesising, then runs on the voice's background session.
    pub async fn render_background(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<(Vec<i16>, u32), ProviderError> {
        let voice = self.voice(voice).await;
        let waited = tokio::time::Instant::now();
        while self.live.load(Ordering::Acquire) > 0 && waited.elapsed() < BACKGROUND_MAX_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = text.to_string();
        let rate = voice.sample_rate();
        let pcm = tokio::task::spawn_blocking(move || voice.synthesize_with(&text, speed, true))
            .await
            .map_err(|e| ProviderError::Engine(format!("piper task: {e}")))??;
        Ok((pcm, rate))
    }
}

/// Counts a live synthesis for as long as it is alive (also when its
/// future is dropped by a barge-in).
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn enter(count: &Arc<AtomicUsize>) -> LiveGuard {
        count.fetch_add(1, Ordering::AcqRel);
        LiveGuard(count.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn is_voice_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

#[async_trait]
impl TextToSpeech for PiperTts {
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let Some(text) = speakable(text) else {
            return Ok(no_audio());
        };
        // Dropping the returned future (barge-in) lets the current inference
        // finish on its thread but starts no further sentence.
        let (pcm, sample_rate) = self.render(&text, voice, speed).await?;
        Ok(one_chunk(AudioChunk { pcm, sample_rate }))
    }

    fn name(&self) -> String {
        "piper".into()
    }

    async fn voice_id(&self, voice: &str) -> String {
        self.voice(voice).await.name().to_string()
    }

    async fn synthesize_background(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let Some(text) = speakable(text) else {
            return Ok(no_audio());
        };
        let (pcm, sample_rate) = self.render_background(&text, voice, speed).await?;
        Ok(one_chunk(AudioChunk { pcm, sample_rate }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_silent_lead_in_is_dropped_and_the_onset_kept() {
        // 1,100 samples of silence, a faint rise no one hears (-60 dBFS),
        // then the voice.
        let mut pcm = vec![0i16; 1100];
        pcm.extend(std::iter::repeat_n(30i16, 220));
        pcm.extend(std::iter::repeat_n(2000i16, 220));
        trim_leading_silence(&mut pcm);
        assert_eq!(pcm.len(), ONSET_MARGIN + 220);
        assert_eq!(pcm[ONSET_MARGIN], 2000);
        assert_eq!(pcm[ONSET_MARGIN - 1], 30);
        // Audio that starts at once, and silence alone, stay as they are.
        let mut loud = vec![4000i16, 0, 0];
        trim_leading_silence(&mut loud);
        assert_eq!(loud, vec![4000, 0, 0]);
        let mut quiet = vec![0i16; 50];
        trim_leading_silence(&mut quiet);
        assert_eq!(quiet.len(), 50);
    }
}
