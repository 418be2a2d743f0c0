//! Vectors of knowledge texts, content-addressed on disk: one file per
//! (model, text) named by the SHA-256 of the two, holding the vector as
//! little-endian `f32`s. A node that restarts, a second node on the same
//! disk, or a document uploaded again gets its vectors back without
//! running the model (on two cores, the 150 everyday requests and the demo's
//! 21 chunks took about 7 s each with all-mpnet-base-v2).
//!
//! Only batches pass through here (knowledge, the everyday reference):
//! callers' questions are embedded one at a time and never written down.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::embeddings::Embedder;
use super::provider_error::ProviderError;

/// Longest vector read back (4096 dimensions).
const MAX_FILE_BYTES: u64 = 4096 * 4;

/// An embedder whose batch results are kept in `dir`.
pub struct VectorCache {
    inner: Arc<dyn Embedder>,
    dir: PathBuf,
}

impl VectorCache {
    /// `inner` with its vectors kept in `dir` (created if missing).
    pub fn open(inner: Arc<dyn Embedder>, dir: &Path) -> std::io::Result<VectorCache> {
        std::fs::create_dir_all(dir)?;
        Ok(VectorCache {
            inner,
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, model: &str, text: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(model.as_bytes());
        h.update([0u8]);
        h.update(text.as_bytes());
        self.dir.join(format!("{}.f32", hex::encode(h.finalize())))
    }

    /// The stored vector, if whole (a damaged or foreign file counts as none).
    async fn get(&self, path: &Path) -> Option<Vec<f32>> {
        let meta = tokio::fs::metadata(path).await.ok()?;
        if meta.len() == 0 || meta.len() > MAX_FILE_BYTES || meta.len() % 4 != 0 {
            return None;
        }
        let bytes = tokio::fs::read(path).await.ok()?;
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let dims = self.inner.dims();
        (v.iter().all(|x| x.is_finite()) && (dims == 0 || v.len() == dims)).then_some(v)
    }

    /// Written beside, then renamed: a reader never sees half a file.
    async fn put(&self, path: &Path, v: &[f32]) -> std::io::Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes).await?;
        let renamed = tokio::fs::rename(&tmp, path).await;
        if renamed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        renamed
    }
}

#[async_trait]
impl Embedder for VectorCache {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let model = self.inner.name();
        let paths: Vec<PathBuf> = texts.iter().map(|t| self.path(&model, t)).collect();
        let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(texts.len());
        for p in &paths {
            out.push(self.get(p).await);
        }
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let asked: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
            let made = self.inner.embed(&asked).await?;
            if made.len() != asked.len() {
                return Err(ProviderError::Protocol(
                    "embedder returned a wrong count".into(),
                ));
            }
            let mut unwritten = 0usize;
            for (&i, v) in missing.iter().zip(made) {
                if self.put(&paths[i], &v).await.is_err() {
                    unwritten += 1;
                }
                out[i] = Some(v);
            }
            if unwritten > 0 {
                tracing::warn!(unwritten, dir = %self.dir.display(), "knowledge vectors not kept on disk");
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }
    fn dims(&self) -> usize {
        self.inner.dims()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the texts it embeds; a text's vector is its length and 1.
    struct Counting(AtomicUsize);

    #[async_trait]
    impl Embedder for Counting {
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
        fn dims(&self) -> usize {
            2
        }
        fn name(&self) -> String {
            "counting".into()
        }
    }

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_text_is_embedded_once_and_damaged_files_are_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = VectorCache::open(inner.clone(), dir.path()).unwrap();
        let first = cache.embed(&texts(&["ab", "abc"])).await.unwrap();
        assert_eq!(first, vec![vec![2.0, 1.0], vec![3.0, 1.0]]);
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        // Another process on the same folder: only the new text is embedded.
        let again = VectorCache::open(inner.clone(), dir.path()).unwrap();
        let second = again.embed(&texts(&["abc", "abcd"])).await.unwrap();
        assert_eq!(second, vec![vec![3.0, 1.0], vec![4.0, 1.0]]);
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
        // A truncated file, or one of another size, is not trusted.
        let path = again.path("counting", "abcd");
        std::fs::write(&path, [0u8; 6]).unwrap();
        let third = again.embed(&texts(&["abcd"])).await.unwrap();
        assert_eq!(third, vec![vec![4.0, 1.0]]);
        std::fs::write(&path, [0u8; 12]).unwrap();
        again.embed(&texts(&["abcd"])).await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 5);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".f32")), "{names:?}");
    }

    #[tokio::test]
    async fn another_model_does_not_get_these_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = VectorCache::open(inner.clone(), dir.path()).unwrap();
        assert_ne!(cache.path("counting", "x"), cache.path("other", "x"));
        assert_ne!(cache.path("a", "bc"), cache.path("ab", "c"));
    }
}
