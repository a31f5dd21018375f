//! umT5 encoder (`wan/modules/t5.py`): pre-norm layers with a per-layer relative position bias,
//! attention without 1/sqrt(d) scaling, gated-GELU feed-forward.
//!
//! Every residual add that is followed by a norm is one `fused_add_rms_norm` call:
//! `norm1(emb)`, then per layer `(h, x) = norm2.fused(attn(h), x)` and
//! `(h, x) = next_norm1.fused(ffn(h), x)`, the last `next_norm1` being the final `norm`. The
//! running residual stream `x` is the `sum` those calls return.

use crate::config::T5Config;
use crate::norms::{Norm, NormImpl};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use candle_rmsnorm::Rounding;

/// T5's bidirectional relative position bucket of `rel = key - query`, computed as the
/// reference does (f32 log, truncation toward zero).
pub fn relative_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if rel > 0 { half } else { 0 };
    let rel = rel.abs();
    let max_exact = half / 2;
    if rel < max_exact {
        bucket += rel;
    } else {
        let large = max_exact
            + (((rel as f32 / max_exact as f32).ln()
                / (max_distance as f32 / max_exact as f32).ln())
                * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as usize
}

fn norm(vb: &VarBuilder, name: &str, dim: usize, eps: f64, imp: NormImpl) -> Result<Norm> {
    // T5LayerNorm rounds the normalised value to the weight's dtype before the multiply.
    Ok(Norm::new(
        vb.get(dim, &format!("{name}.weight"))?,
        eps,
        Rounding::BeforeWeight,
        imp,
    ))
}

#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl Attention {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        Ok(Self {
            q: candle_nn::linear_no_bias(d, d, vb.pp("q"))?,
            k: candle_nn::linear_no_bias(d, d, vb.pp("k"))?,
            v: candle_nn::linear_no_bias(d, d, vb.pp("v"))?,
            o: candle_nn::linear_no_bias(d, d, vb.pp("o"))?,
            heads: cfg.heads,
        })
    }

    /// `x`: [B, L, dim]; `bias`: [1, heads, L, L].
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, l, dim) = x.dims3()?;
        let hd = dim / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, l, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        // Softmax in f32, as the reference (`attn.float().softmax(-1).type_as(attn)`).
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let p = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(scores.dtype())?;
        let out = p.matmul(&v)?.transpose(1, 2)?.reshape((b, l, dim))?;
        self.o.forward(&out)
    }
}

#[derive(Debug)]
struct FeedForward {
    gate: Linear,
    fc1: Linear,
    fc2: Linear,
}

impl FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?.gelu()?;
        self.fc2.forward(&(self.fc1.forward(x)? * g)?)
    }
}

#[derive(Debug)]
struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    ffn: FeedForward,
    pos_embedding: Embedding,
}

#[derive(Debug)]
pub struct T5Encoder {
    token_embedding: Embedding,
    blocks: Vec<Block>,
    norm: Norm,
    cfg: T5Config,
}

impl T5Encoder {
    pub fn new(cfg: &T5Config, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        let d = cfg.dim;
        let token_embedding = candle_nn::embedding(cfg.vocab, d, vb.pp("token_embedding"))?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let vb = vb.pp(format!("blocks.{i}"));
            let fvb = vb.pp("ffn");
            blocks.push(Block {
                norm1: norm(&vb, "norm1", d, cfg.eps, imp)?,
                attn: Attention::new(cfg, vb.pp("attn"))?,
                norm2: norm(&vb, "norm2", d, cfg.eps, imp)?,
                ffn: FeedForward {
                    gate: candle_nn::linear_no_bias(d, cfg.ffn_dim, fvb.pp("gate.0"))?,
                    fc1: candle_nn::linear_no_bias(d, cfg.ffn_dim, fvb.pp("fc1"))?,
                    fc2: candle_nn::linear_no_bias(cfg.ffn_dim, d, fvb.pp("fc2"))?,
                },
                pos_embedding: candle_nn::embedding(
                    cfg.num_buckets,
                    cfg.heads,
                    vb.pp("pos_embedding.embedding"),
                )?,
            });
        }
        Ok(Self {
            token_embedding,
            blocks,
            norm: norm(&vb, "norm", d, cfg.eps, imp)?,
            cfg: cfg.clone(),
        })
    }

    /// [L, L] bucket ids for a sequence of length `l`.
    fn buckets(&self, l: usize, dev: &Device) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(l * l);
        for q in 0..l as i64 {
            for k in 0..l as i64 {
                ids.push(
                    relative_bucket(k - q, self.cfg.num_buckets, self.cfg.max_distance) as u32,
                );
            }
        }
        Tensor::from_vec(ids, (l, l), dev)
    }

    /// `ids`: the token ids of one prompt. Returns [1, L, dim]. Padding tokens are left out
    /// rather than masked, which is equivalent for the kept positions.
    pub fn forward(&self, ids: &[u32], dev: &Device) -> Result<Tensor> {
        let l = ids.len();
        let ids_t = Tensor::new(ids, dev)?.unsqueeze(0)?;
        let mut x = self.token_embedding.forward(&ids_t)?;
        let buckets = self.buckets(l, dev)?;
        let Some(first) = self.blocks.first() else {
            return self.norm.forward(&x);
        };
        let mut h = first.norm1.forward(&x)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            // [L, L, heads] -> [1, heads, L, L]
            let bias = blk
                .pos_embedding
                .forward(&buckets)?
                .permute((2, 0, 1))?
                .unsqueeze(0)?
                .contiguous()?;
            let a = blk.attn.forward(&h, &bias)?;
            let (h2, x2) = blk.norm2.forward_residual(&a, &x)?;
            let f = blk.ffn.forward(&h2)?;
            let next = match self.blocks.get(i + 1) {
                Some(n) => &n.norm1,
                None => &self.norm,
            };
            let (h3, x3) = next.forward_residual(&f, &x2)?;
            h = h3;
            x = x3;
        }
        Ok(h)
    }
}
