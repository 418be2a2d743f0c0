//! The offline sentence embedder: sentence-transformers all-MiniLM-L6-v2
//! (BERT, 6 layers, 384 dimensions) run in-process on the CPU with candle,
//! mean-pooled over the attention mask and L2-normalised, like the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::embeddings::{Embedder, MAX_BATCH};
use super::provider_error::ProviderError;

/// The id stored with every vector this embedder makes (`embedding_model`).
pub const MINILM_ID: &str = "all-MiniLM-L6-v2";
pub const MINILM_DIMS: usize = 384;
/// sentence-transformers' `max_seq_length` for this model (longer texts
/// are cut, as the reference does).
const MAX_TOKENS: usize = 256;
/// Texts run through the model together: padding to the longest of a few
/// keeps the wasted work small.
const FORWARD_BATCH: usize = 16;

/// The model loaded once per process and directory (90 MB of weights).
pub fn shared(dir: &Path) -> Result<Arc<MiniLmEmbedder>, ProviderError> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<MiniLmEmbedder>>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(e) = loaded.get(dir) {
        return Ok(e.clone());
    }
    let e = Arc::new(MiniLmEmbedder::load(dir)?);
    loaded.insert(dir.to_path_buf(), e.clone());
    Ok(e)
}

pub struct MiniLmEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl MiniLmEmbedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<MiniLmEmbedder, ProviderError> {
        let cfg_err = |what: &str, e: &dyn std::fmt::Display| {
            ProviderError::Config(format!("embedding model {what} in {}: {e}", dir.display()))
        };
        let config: BertConfig = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| cfg_err("config.json", &e))
            .and_then(|s| serde_json::from_str(&s).map_err(|e| cfg_err("config.json", &e)))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| cfg_err("tokenizer.json", &e))?;
        // The file pads every text to 128 tokens; a question is ~12.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| cfg_err("tokenizer truncation", &e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| cfg_err("model.safetensors", &e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| cfg_err("model.safetensors", &e))?;
        let model = BertModel::load(vb, &config).map_err(|e| cfg_err("weights", &e))?;
        if config.hidden_size != MINILM_DIMS {
            return Err(cfg_err("hidden_size", &config.hidden_size));
        }
        Ok(MiniLmEmbedder {
            inner: Arc::new(Inner { model, tokenizer }),
        })
    }

    /// Embeds on the calling thread (CPU-bound; async callers go through
    /// [`Embedder::embed`], which moves the work off the runtime).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(FORWARD_BATCH) {
            out.extend(self.inner.forward(batch).map_err(model_error)?);
        }
        Ok(out)
    }
}

fn model_error(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(format!("embedding model: {e}"))
}

impl Inner {
    fn forward(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(model_error)?;
        let rows = enc.len();
        let cols = enc.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let dev = Device::Cpu;
        let ids =
            Tensor::from_vec(flat(&|e| e.get_ids()), (rows, cols), &dev).map_err(model_error)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, cols), &dev)
            .map_err(model_error)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, cols), &dev)
            .map_err(model_error)?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(model_error)?; // (rows, cols, 384)
                                    // Mean over the real tokens only (padding excluded), then unit length.
        let m = mask
            .to_dtype(DType::F32)
            .and_then(|m| m.unsqueeze(2))
            .map_err(model_error)?;
        let summed = hidden
            .broadcast_mul(&m)
            .and_then(|h| h.sum(1))
            .map_err(model_error)?;
        let counts = m
            .sum(1)
            .and_then(|c| c.clamp(1e-9, f32::MAX))
            .map_err(model_error)?;
        let mean = summed.broadcast_div(&counts).map_err(model_error)?;
        let vectors: Vec<Vec<f32>> = mean.to_vec2().map_err(model_error)?;
        Ok(vectors.into_iter().map(normalise).collect())
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[async_trait]
impl Embedder for MiniLmEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if texts.len() > MAX_BATCH {
            return Err(ProviderError::Config(format!(
                "at most {MAX_BATCH} texts per call"
            )));
        }
        let me = MiniLmEmbedder {
            inner: self.inner.clone(),
        };
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || me.embed_blocking(&texts))
            .await
            .map_err(|e| ProviderError::Protocol(format!("embedding task: {e}")))?
    }
    fn dims(&self) -> usize {
        MINILM_DIMS
    }
    fn name(&self) -> String {
        MINILM_ID.into()
    }
}
