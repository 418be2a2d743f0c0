//! Pre-rendered speech, content-addressed on disk: one WAV per (engine,
//! voice, speed, text) named by the SHA-256 of the four, so a text or voice
//! change is a different file and the old one is dropped by [`TtsCache::retain_with`].
//! [`CachedTts`] answers from it before asking the engine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::tts::{one_chunk, AudioChunk, AudioStream, ProviderError, TextToSpeech};
use super::wav::{encode_wav, WavReader};

/// Largest file read back (a sentence is at most a few hundred kB).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Samples of renderings kept decoded in memory (16 MB, about 6 minutes of
/// 22 kHz speech).
const MEMORY_SAMPLES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct TtsCache {
    dir: PathBuf,
    /// Renderings read back lately, decoded: the greeting and the common
    /// answers play on every call, and reading and parsing their file each
    /// time was 6 % of the node's CPU at 600 calls/s. A key names its
    /// content, so a kept rendering is never stale; the oldest go first.
    memory: Arc<Mutex<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    clips: HashMap<String, (Arc<[i16]>, u32)>,
    order: VecDeque<String>,
    samples: usize,
}

impl Memory {
    fn get(&self, key: &str) -> Option<AudioChunk> {
        self.clips.get(key).map(|(pcm, rate)| AudioChunk {
            pcm: pcm.to_vec(),
            sample_rate: *rate,
        })
    }

    fn keep(&mut self, key: &str, pcm: &[i16], rate: u32) {
        if pcm.len() > MEMORY_SAMPLES / 8 || self.clips.contains_key(key) {
            return;
        }
        while self.samples + pcm.len() > MEMORY_SAMPLES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((c, _)) = self.clips.remove(&old) {
                self.samples -= c.len();
            }
        }
        self.clips.insert(key.to_string(), (pcm.into(), rate));
        self.order.push_back(key.to_string());
        self.samples += pcm.len();
    }

    fn forget(&mut self, key: &str) {
        if let Some((c, _)) = self.clips.remove(key) {
            self.samples -= c.len();
            self.order.retain(|k| k != key);
        }
    }
}

fn lock(m: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How audio is made from a voice's output (lead-in trimming, levels): a
/// change here makes every earlier rendering stale.
const RENDERING: &str = "2";

impl TtsCache {
    /// The cache in `dir`, created if missing.
    pub fn open(dir: &Path) -> std::io::Result<TtsCache> {
        std::fs::create_dir_all(dir)?;
        Ok(TtsCache {
            dir: dir.to_path_buf(),
            memory: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of one rendering. Speed is rounded to what changes the audio;
    /// the text is keyed as it is read aloud, so a change in how it is read
    /// (`read_aloud`) makes that text's earlier rendering stale.
    pub fn key(engine: &str, voice: &str, speed: f32, text: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            RENDERING,
            engine,
            voice,
            &format!("{speed:.2}"),
            &super::read_aloud::read_aloud(text.trim()),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.wav"))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.path(key).is_file()
    }

    /// The audio stored under `key`, if any (a damaged file counts as none).
    pub async fn get(&self, key: &str) -> Option<AudioChunk> {
        if let Some(chunk) = lock(&self.memory).get(key) {
            return Some(chunk);
        }
        let path = self.path(key);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        if meta.len() > MAX_FILE_BYTES {
            return None;
        }
        let bytes = tokio::fs::read(&path).await.ok()?;
        let mut reader = WavReader::new();
        let pcm = reader.push(&bytes).ok()?;
        let rate = reader.format()?.sample_rate;
        if pcm.is_empty() {
            return None;
        }
        lock(&self.memory).keep(key, &pcm, rate);
        Some(AudioChunk {
            pcm,
            sample_rate: rate,
        })
    }

    /// Stores audio under `key`: written beside, then renamed, so a reader
    /// never sees half a file.
    pub async fn put(&self, key: &str, pcm: &[i16], sample_rate: u32) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{key}.tmp"));
        tokio::fs::write(&tmp, encode_wav(pcm, sample_rate)).await?;
        tokio::fs::rename(&tmp, self.path(key)).await
    }

    /// Drops renderings not in `keep` that were `mine` (made or needed by
    /// this process before) or that nobody touched for `foreign_age`
    /// (another process sharing the folder keeps its own fresh); touches
    /// those kept. Returns how many were dropped.
    pub async fn retain_with(
        &self,
        keep: &HashSet<String>,
        mine: &HashSet<String>,
        foreign_age: std::time::Duration,
    ) -> std::io::Result<usize> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        let now = std::time::SystemTime::now();
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".wav")) else {
                continue;
            };
            if !is_key(key) {
                continue;
            }
            let path = entry.path();
            if keep.contains(key) {
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(now);
                }
                continue;
            }
            let old = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= foreign_age)
                .unwrap_or(false);
            if mine.contains(key) || old {
                tokio::fs::remove_file(&path).await?;
                lock(&self.memory).forget(key);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An engine with its pre-rendered texts: a hit is one chunk at once, with
/// no synthesis; a miss is the engine's own stream.
pub struct CachedTts {
    inner: Arc<dyn TextToSpeech>,
    cache: TtsCache,
}

impl CachedTts {
    pub fn new(inner: Arc<dyn TextToSpeech>, cache: TtsCache) -> CachedTts {
        CachedTts { inner, cache }
    }

    pub fn cache(&self) -> &TtsCache {
        &self.cache
    }

    pub fn engine(&self) -> &Arc<dyn TextToSpeech> {
        &self.inner
    }

    /// The cache key `text` has with this engine, voice and speed.
    pub async fn key(&self, text: &str, voice: &str, speed: f32) -> String {
        let voice = self.inner.voice_id(voice).await;
        TtsCache::key(&self.inner.name(), &voice, speed, text)
    }
}

#[async_trait]
impl TextToSpeech for CachedTts {
    async fn synthesize(
        &self,
        text: &str,
        voice: &str,
        speed: f32,
    ) -> Result<AudioStream, ProviderError> {
        let key = self.key(text, voice, speed).await;
        if let Some(chunk) = self.cache.get(&key).await {
            return Ok(one_chunk(chunk));
        }
        self.inner.synthesize(text, voice, speed).await
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    async fn voice_id(&self, voice: &str) -> String {
        self.inner.voice_id(voice).await
    }

    fn prerendered(&self) -> Option<&CachedTts> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_reads_and_drops_stale_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TtsCache::open(dir.path()).unwrap();
        let a = TtsCache::key("piper", "v", 1.0, "Hello.");
        let b = TtsCache::key("piper", "v", 1.0, "Goodbye.");
        assert_ne!(a, TtsCache::key("piper", "w", 1.0, "Hello."));
        assert_ne!(a, TtsCache::key("piper", "v", 1.2, "Hello."));
        cache.put(&a, &[1, 2, 3], 22050).await.unwrap();
        cache.put(&b, &[4, 5], 22050).await.unwrap();
        let got = cache.get(&a).await.unwrap();
        assert_eq!((got.pcm, got.sample_rate), (vec![1, 2, 3], 22050));
        let keep = HashSet::from([b.clone()]);
        let day = std::time::Duration::from_secs(86400);
        // Someone else's fresh rendering stays; a stale one of ours goes.
        assert_eq!(
            cache
                .retain_with(&keep, &HashSet::new(), day)
                .await
                .unwrap(),
            0
        );
        let mine = HashSet::from([a.clone()]);
        assert_eq!(cache.retain_with(&keep, &mine, day).await.unwrap(), 1);
        assert!(cache.get(&a).await.is_none());
        assert!(cache.contains(&b));
    }

    #[tokio::test]
    async fn a_rendering_read_once_is_served_from_memory_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TtsCache::open(dir.path()).unwrap();
        let a = TtsCache::key("piper", "v", 1.0, "Hello.");
        cache.put(&a, &[7; 1000], 22050).await.unwrap();
        assert_eq!(cache.get(&a).await.unwrap().pcm, vec![7; 1000]);
        // The file is not read again: gone behind the cache's back, the
        // rendering still plays (its key names its content).
        std::fs::remove_file(dir.path().join(format!("{a}.wav"))).unwrap();
        let again = cache.get(&a).await.unwrap();
        assert_eq!((again.pcm.len(), again.sample_rate), (1000, 22050));
        // Memory stays within its bound: the oldest go first.
        let big = vec![1i16; MEMORY_SAMPLES / 8];
        for i in 0..10 {
            let k = TtsCache::key("piper", "v", 1.0, &format!("sentence {i}"));
            cache.put(&k, &big, 22050).await.unwrap();
            assert!(cache.get(&k).await.is_some());
        }
        let m = lock(&cache.memory);
        assert!(m.samples <= MEMORY_SAMPLES, "{} samples kept", m.samples);
        assert!(!m.clips.contains_key(&a), "the oldest went first");
        assert_eq!(m.order.len(), m.clips.len());
    }
}
