//! A BERT encoder (the architecture of all-MiniLM-L6-v2) on candle's tensors
//! and layers: token, position and type embeddings, then self-attention
//! layers, returning every token's hidden state. Only the forward pass a
//! sentence embedding needs (no dropout, no heads, no cache), written after
//! Hugging Face's `modeling_bert.py` and candle's port of it, so the build
//! does not compile candle's whole model collection for one model.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a BERT `config.json` the encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    /// The exact GELU (`erf`), BERT's "gelu".
    Gelu,
    /// The tanh approximation ("gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
    Relu,
}

impl Activation {
    fn from_name(name: &str) -> Result<Activation> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => candle_core::bail!("unsupported hidden_act {other:?}"),
        }
    }

    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

struct Embeddings {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: LayerNorm,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    activation: Activation,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    head_size: usize,
}

pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl BertModel {
    /// The weights under `embeddings.` and `encoder.`, or under `bert.`
    /// (checkpoints saved with a task head keep the encoder there).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<BertModel> {
        match BertModel::load_at(vb.clone(), config) {
            Ok(model) => Ok(model),
            Err(err) => BertModel::load_at(vb.pp("bert"), config).map_err(|_| err),
        }
    }

    fn load_at(vb: VarBuilder, c: &BertConfig) -> Result<BertModel> {
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of {} heads",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let activation = Activation::from_name(&c.hidden_act)?;
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let embeddings = Embeddings {
            words: embedding(c.vocab_size, h, e.pp("word_embeddings"))?,
            positions: embedding(c.max_position_embeddings, h, e.pp("position_embeddings"))?,
            types: embedding(c.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            norm: layer_norm(h, c.layer_norm_eps, e.pp("LayerNorm"))?,
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let (attention, own) = (l.pp("attention.self"), l.pp("attention.output"));
                Ok(Layer {
                    query: linear(h, h, attention.pp("query"))?,
                    key: linear(h, h, attention.pp("key"))?,
                    value: linear(h, h, attention.pp("value"))?,
                    attention_out: linear(h, h, own.pp("dense"))?,
                    attention_norm: layer_norm(h, c.layer_norm_eps, own.pp("LayerNorm"))?,
                    intermediate: linear(h, c.intermediate_size, l.pp("intermediate.dense"))?,
                    activation,
                    output: linear(c.intermediate_size, h, l.pp("output.dense"))?,
                    output_norm: layer_norm(h, c.layer_norm_eps, l.pp("output.LayerNorm"))?,
                    heads: c.num_attention_heads,
                    head_size: h / c.num_attention_heads,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel { embeddings, layers })
    }

    /// Hidden states `(batch, tokens, hidden)` for `ids`, `types` and
    /// `mask` (1 for a real token, 0 for padding), each `(batch, tokens)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, tokens) = ids.dims2()?;
        let positions = Tensor::arange(0u32, tokens as u32, ids.device())?;
        let e = &self.embeddings;
        let xs = (e.words.forward(ids)? + e.types.forward(types)?)?
            .broadcast_add(&e.positions.forward(&positions)?)?;
        let mut xs = e.norm.forward(&xs)?;
        // Padding gets the lowest float added to its attention scores:
        // (1 - mask) * f32::MIN, shaped (batch, 1, 1, tokens).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(1)?;
        let blocked = ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &blocked)?;
        }
        Ok(xs)
    }
}

impl Layer {
    fn forward(&self, xs: &Tensor, blocked: &Tensor) -> Result<Tensor> {
        let (batch, tokens, hidden) = xs.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, tokens, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(xs)?)?;
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_size as f64).sqrt())?;
        let probs = candle_nn::ops::softmax(&scores.broadcast_add(blocked)?, D::Minus1)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, tokens, hidden))?;
        let attended = self
            .attention_norm
            .forward(&(self.attention_out.forward(&context)? + xs)?)?;
        let inner = self
            .activation
            .forward(&self.intermediate.forward(&attended)?)?;
        self.output_norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}
