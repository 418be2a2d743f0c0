//! The offline sentence embedder: a sentence-transformers model run
//! in-process on the CPU, mean-pooled over the attention mask and
//! L2-normalised, like the reference. A model folder holds either
//! `model.onnx` (all-mpnet-base-v2-q8, 768 dimensions, the default: written
//! at set-up by `scripts/mpnet_to_onnx.py --int8` from all-mpnet-base-v2's
//! safetensors, 8-bit weight matrices, pooling included, run by ONNX
//! Runtime) or a BERT
//! `model.safetensors` (all-MiniLM-L6-v2, 384, [`super::bert`] on candle's
//! tensors). The folder's
//! name is the model's id, stored with every vector.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::bert::{BertConfig, BertModel};
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::embeddings::{normalise, Embedder, MAX_BATCH};
use super::provider_error::ProviderError;
use ort::session::Session;

/// sentence-transformers' `max_seq_length` when the folder does not say
/// (longer texts are cut, as the reference does).
const DEFAULT_MAX_TOKENS: usize = 256;
/// Texts run through the model together: padding to the longest of a few
/// keeps the wasted work small. The 8-bit model quantizes its activations
/// over the whole run, so a text's vector varies a little with its batch
/// (a cosine of 0.97 or more to the text embedded alone): 2.5 times the
/// throughput of one text a run, and the same answers on the retrieval
/// benchmark.
const FORWARD_BATCH: usize = 16;
/// Most tokens (rows × the longest row, estimated) in one run of the
/// model (a longer text runs alone). A caller's question waits for the run
/// in progress: sixteen passages of 256 tokens held the model for about 7 s
/// on a slow host, far past the wait a turn gives its question's vector
/// ([`super::embeddings::IN_PROCESS_WAIT`]); 256 tokens take about half a
/// second there. Sorted by length, batches of short texts embed as fast as
/// before (39–40 texts a second for 64 FAQ entries with 512, 256 or the
/// sixteen rows of before, 2026-12-07).
const FORWARD_TOKENS: usize = 256;

/// The model loaded once per process and directory.
/// `onnxruntime` is the ONNX Runtime library, for a folder with `model.onnx`.
pub fn shared(dir: &Path, onnxruntime: &Path) -> Result<Arc<SentenceEmbedder>, ProviderError> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<SentenceEmbedder>>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(e) = loaded.get(dir) {
        return Ok(e.clone());
    }
    let e = Arc::new(SentenceEmbedder::load(dir, onnxruntime)?);
    loaded.insert(dir.to_path_buf(), e.clone());
    Ok(e)
}

pub struct SentenceEmbedder {
    inner: Arc<Inner>,
}

enum Network {
    Bert(Box<BertModel>),
    /// Pooling and normalisation are in the graph; `run` needs `&mut`.
    Onnx(Mutex<Session>),
}

/// ONNX Runtime threads per embedding (a question takes ~17 ms on two).
const ONNX_THREADS: usize = 2;

struct Inner {
    network: Network,
    tokenizer: Tokenizer,
    id: String,
    dims: usize,
}

#[derive(Deserialize)]
struct Architecture {
    #[serde(default)]
    model_type: String,
    hidden_size: usize,
}

#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: usize,
}

impl SentenceEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.onnx` (with ONNX
    /// Runtime from `onnxruntime`) or a BERT `model.safetensors` from `dir`.
    pub fn load(dir: &Path, onnxruntime: &Path) -> Result<SentenceEmbedder, ProviderError> {
        let cfg_err = |what: &str, e: &dyn std::fmt::Display| {
            ProviderError::Config(format!("embedding model {what} in {}: {e}", dir.display()))
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| cfg_err("config.json", &e))?;
        let arch: Architecture =
            serde_json::from_str(&config_text).map_err(|e| cfg_err("config.json", &e))?;
        let max_tokens = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<SentenceConfig>(&s).ok())
            .map_or(DEFAULT_MAX_TOKENS, |c| c.max_seq_length.clamp(8, 512));
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| cfg_err("tokenizer.json", &e))?;
        // The file pads every text to a fixed length; a question is ~12
        // tokens, so pad to the longest of a batch (with the file's pad id).
        let padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..tokenizer.get_padding().cloned().unwrap_or_default()
        };
        tokenizer.with_padding(Some(padding));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| cfg_err("tokenizer truncation", &e))?;
        let onnx = dir.join("model.onnx");
        let network = if onnx.is_file() {
            super::onnx_env::init(onnxruntime)?;
            // Mapped: the weights (`model.onnx.data`, 266 MB for MPNet)
            // stay page cache instead of becoming the process's own memory.
            Network::Onnx(Mutex::new(super::onnx_env::session(
                &onnx,
                ONNX_THREADS,
                super::onnx_env::Weights::Mapped,
            )?))
        } else if arch.model_type == "bert" || arch.model_type.is_empty() {
            let c: BertConfig =
                serde_json::from_str(&config_text).map_err(|e| cfg_err("config.json", &e))?;
            // Mapped, not read: the pages are the page cache's, shared and
            // counted once however many processes load the model.
            // SAFETY: the file is ours (data/models, written once by setup
            // and checksummed); nothing writes to it while it is mapped.
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(
                    &[dir.join("model.safetensors")],
                    DType::F32,
                    &Device::Cpu,
                )
            }
            .map_err(|e| cfg_err("model.safetensors", &e))?;
            Network::Bert(Box::new(
                BertModel::load(vb, &c).map_err(|e| cfg_err("weights", &e))?,
            ))
        } else {
            return Err(cfg_err(
                "model.onnx (scripts/setup writes it)",
                &format!("missing for model_type {}", arch.model_type),
            ));
        };
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| cfg_err("folder name", &"none"))?
            .to_string();
        Ok(SentenceEmbedder {
            inner: Arc::new(Inner {
                network,
                tokenizer,
                id,
                dims: arch.hidden_size,
            }),
        })
    }

    /// The model's id: the name of the folder it was loaded from.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Embeds on the calling thread (CPU-bound; async callers go through
    /// [`Embedder::embed`], which moves the work off the runtime).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let started = std::time::Instant::now();
        // Shortest first, so a run pads little; each run within
        // FORWARD_TOKENS, the lock released between runs.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len()
                && end - start < FORWARD_BATCH
                && (end - start + 1) * estimated_tokens(&texts[order[end]]) <= FORWARD_TOKENS
            {
                end += 1;
            }
            let batch: Vec<&str> = order[start..end]
                .iter()
                .map(|&i| texts[i].as_str())
                .collect();
            let vectors = self.inner.forward(batch)?;
            for (&i, v) in order[start..end].iter().zip(vectors) {
                out[i] = v;
            }
            start = end;
        }
        tracing::debug!(
            texts = texts.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "embedded"
        );
        Ok(out)
    }
}

/// Tokens of `text` as the model's tokenizer will about make them (English
/// averages four characters a token), with its two special tokens.
fn estimated_tokens(text: &str) -> usize {
    text.len() / 4 + 2
}

fn model_error(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(format!("embedding model: {e}"))
}

impl Inner {
    /// Its errors already say they are the model's.
    fn forward(&self, texts: Vec<&str>) -> Result<Vec<Vec<f32>>, ProviderError> {
        let enc = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(model_error)?;
        let rows = enc.len();
        let cols = enc.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let ids = flat(tokenizers::Encoding::get_ids);
        let mask = flat(tokenizers::Encoding::get_attention_mask);
        match &self.network {
            Network::Onnx(session) => onnx_forward(session, (rows, cols), ids, mask, self.dims),
            Network::Bert(model) => {
                let types = flat(tokenizers::Encoding::get_type_ids);
                bert_forward(model, (rows, cols), ids, types, mask)
            }
        }
    }
}

/// Pooled, unit-length vectors from the graph (`sentence_embedding`).
fn onnx_forward(
    session: &Mutex<Session>,
    shape: (usize, usize),
    ids: Vec<u32>,
    mask: Vec<u32>,
    dims: usize,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    let wide = |v: Vec<u32>| v.into_iter().map(i64::from).collect::<Vec<i64>>();
    let ids =
        ort::value::Tensor::from_array(([shape.0, shape.1], wide(ids))).map_err(model_error)?;
    let mask =
        ort::value::Tensor::from_array(([shape.0, shape.1], wide(mask))).map_err(model_error)?;
    let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
    let out = session
        .run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
        .map_err(model_error)?;
    let (_, vectors) = out[0].try_extract_tensor::<f32>().map_err(model_error)?;
    if vectors.len() != shape.0 * dims {
        return Err(model_error(format!(
            "{} floats for {} texts of {dims} dimensions",
            vectors.len(),
            shape.0
        )));
    }
    Ok(vectors.chunks(dims).map(<[f32]>::to_vec).collect())
}

/// BERT's hidden states, mean-pooled over the real tokens (padding
/// excluded), then unit length.
fn bert_forward(
    model: &BertModel,
    shape: (usize, usize),
    ids: Vec<u32>,
    types: Vec<u32>,
    mask: Vec<u32>,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    let dev = Device::Cpu;
    let tensor = |v: Vec<u32>| Tensor::from_vec(v, shape, &dev).map_err(model_error);
    let (ids, types, mask) = (tensor(ids)?, tensor(types)?, tensor(mask)?);
    let hidden = model.forward(&ids, &types, &mask).map_err(model_error)?; // (rows, cols, dims)
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

#[async_trait]
impl Embedder for SentenceEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if texts.len() > MAX_BATCH {
            return Err(ProviderError::Config(format!(
                "at most {MAX_BATCH} texts per call"
            )));
        }
        let me = SentenceEmbedder {
            inner: self.inner.clone(),
        };
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || me.embed_blocking(&texts))
            .await
            .map_err(|e| ProviderError::Protocol(format!("embedding task: {e}")))?
    }
    fn dims(&self) -> usize {
        self.inner.dims
    }
    fn name(&self) -> String {
        self.inner.id.clone()
    }
    fn in_process(&self) -> bool {
        true
    }
}
