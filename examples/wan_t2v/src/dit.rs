//! Wan DiT (`wan/modules/model.py`): patch embedding (1, 2, 2), sinusoidal time embedding with
//! 6-way modulation, blocks of self-attention (q/k RMSNorm over the full dim through this crate,
//! 3D RoPE), cross-attention (q/k RMSNorm) and a GELU feed-forward, a head with 2-way modulation,
//! and unpatchify.
//!
//! Precision follows the reference's autocast: the linear layers and attention run in the
//! weights' dtype (`--dtype`); the time embedding, the modulations, the LayerNorms and the
//! residual stream run in f32 (the residual stream of the reference becomes f32 at the first
//! `x + y * e` because `e` is f32); the output is f32.

use crate::config::{DitConfig, PATCH};
use crate::norms::{qk_norm_rope, Norm, NormImpl};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use candle_rmsnorm::Rounding;

/// Head-dim split of the 3D RoPE into (time, height, width) parts, as in the reference:
/// `d - 4 * (d / 6)`, `2 * (d / 6)`, `2 * (d / 6)`.
pub fn rope_split(head_dim: usize) -> (usize, usize, usize) {
    let s = head_dim / 6;
    (head_dim - 4 * s, 2 * s, 2 * s)
}

/// RoPE cos/sin tables, each [F*H*W, head_dim/2], for a token grid (f, h, w) in row-major order.
/// Pair `j` of the time part rotates by `fi * 10000^(-2j / dt)`, likewise for height and width
/// with their own part sizes (each part is a `rope_params(1024, part)` table of the reference).
pub fn rope_tables(
    head_dim: usize,
    grid: (usize, usize, usize),
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let (dt, dh, dw) = rope_split(head_dim);
    let (f, h, w) = grid;
    let inv = |part: usize| -> Vec<f64> {
        (0..part / 2)
            .map(|j| 10000f64.powf(-((2 * j) as f64) / part as f64))
            .collect()
    };
    let (it, ih, iw) = (inv(dt), inv(dh), inv(dw));
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(f * h * w * half);
    let mut sin = Vec::with_capacity(f * h * w * half);
    for fi in 0..f {
        for hi in 0..h {
            for wi in 0..w {
                let angles = it
                    .iter()
                    .map(|v| fi as f64 * v)
                    .chain(ih.iter().map(|v| hi as f64 * v))
                    .chain(iw.iter().map(|v| wi as f64 * v));
                for a in angles {
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
    }
    let l = f * h * w;
    Ok((
        Tensor::from_vec(cos, (l, half), dev)?,
        Tensor::from_vec(sin, (l, half), dev)?,
    ))
}

/// `[cos(t * f_i), sin(t * f_i)]` with `f_i = 10000^(-i / half)`, for each timestep: [B, dim].
pub fn sinusoidal_embedding(dim: usize, timesteps: &[f64], dev: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let mut v = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let freqs: Vec<f64> = (0..half)
            .map(|i| t * 10000f64.powf(-(i as f64) / half as f64))
            .collect();
        v.extend(freqs.iter().map(|a| a.cos() as f32));
        v.extend(freqs.iter().map(|a| a.sin() as f32));
    }
    Tensor::from_vec(v, (timesteps.len(), dim), dev)
}

/// Softmax attention over [B, H, L, D] tensors, queries in chunks so that one chunk's score
/// matrix holds at most 2^26 values (256 MB in f32). Timed as `timing::Part::Attention`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    crate::timing::timed(crate::timing::Part::Attention, q.device(), || {
        attention_chunked(q, k, v, 1 << 26)
    })
}

/// [`attention`] with at most `max_scores` score values a chunk (at least one query row a
/// chunk). `q` is scaled by `1 / sqrt(D)` before the product (in its dtype), so the scores are
/// written once by the product and read once by the softmax: no pass of their own for the scale.
pub fn attention_chunked(q: &Tensor, k: &Tensor, v: &Tensor, max_scores: usize) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let q = (q * scale)?;
    let kt = k.t()?.contiguous()?;
    let (b, h, lq, _) = q.dims4()?;
    let lk = k.dim(2)?;
    let chunk = (max_scores / (b * h * lk).max(1)).clamp(1, lq.max(1));
    let mut outs = Vec::new();
    let mut start = 0;
    while start < lq {
        let n = chunk.min(lq - start);
        let s = q.narrow(2, start, n)?.matmul(&kt)?;
        let p = crate::timing::timed_on_gpu(crate::timing::Part::Softmax, s.device(), || {
            candle_nn::ops::softmax_last_dim(&s)
        })?;
        outs.push(p.matmul(v)?);
        start += n;
    }
    if outs.len() == 1 {
        Ok(outs.remove(0))
    } else {
        Tensor::cat(&outs, 2)
    }
}

/// A linear layer run in its weights' dtype on an input of any dtype, returning f32.
fn lin(l: &Linear, x: &Tensor) -> Result<Tensor> {
    l.forward(&x.to_dtype(l.weight().dtype())?)?
        .to_dtype(DType::F32)
}

/// LayerNorm over the last dim in f32 (Wan's `WanLayerNorm`), optionally affine.
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn plain(dim: usize, eps: f64, dev: &Device) -> Result<Self> {
        Ok(Self {
            weight: Tensor::ones(dim, DType::F32, dev)?,
            bias: Tensor::zeros(dim, DType::F32, dev)?,
            eps,
        })
    }
    fn affine(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let vb = vb.to_dtype(DType::F32);
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps as f32)
    }
}

#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm_q: Norm,
    norm_k: Norm,
    heads: usize,
}

impl Attention {
    fn new(cfg: &DitConfig, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        let d = cfg.dim;
        let qk_norm = |name: &str| -> Result<Norm> {
            // WanRMSNorm: norm(x.float()).type_as(x) * weight, so round before the weight.
            Ok(Norm::new(
                vb.pp(name).get(d, "weight")?,
                cfg.eps,
                Rounding::BeforeWeight,
                imp,
            ))
        };
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q"))?,
            k: candle_nn::linear(d, d, vb.pp("k"))?,
            v: candle_nn::linear(d, d, vb.pp("v"))?,
            o: candle_nn::linear(d, d, vb.pp("o"))?,
            norm_q: qk_norm("norm_q")?,
            norm_k: qk_norm("norm_k")?,
            heads: cfg.heads,
        })
    }

    /// `x`: [B, Lq, dim]; `ctx`: [B, Lk, dim] (= x for self-attention); `rope`: cos/sin tables.
    fn forward(&self, x: &Tensor, ctx: &Tensor, rope: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
        let (b, lq, dim) = x.dims3()?;
        let lk = ctx.dim(1)?;
        let hd = dim / self.heads;
        let dt = self.q.weight().dtype();
        let (x, ctx) = (&x.to_dtype(dt)?, &ctx.to_dtype(dt)?);
        let heads = |t: &Tensor, l: usize| -> Result<Tensor> {
            t.reshape((b, l, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        // q/k RMSNorm over the full model dim, before splitting heads; in self-attention the
        // norm, the split into heads and the RoPE are one step (`qk_norm_rope`).
        let (q, k) = match rope {
            Some((cos, sin)) => qk_norm_rope(
                (&self.norm_q, &self.norm_k),
                (&self.q.forward(x)?, &self.k.forward(ctx)?),
                (cos, sin),
                self.heads,
            )?,
            None => (
                heads(&self.norm_q.forward(&self.q.forward(x)?)?, lq)?,
                heads(&self.norm_k.forward(&self.k.forward(ctx)?)?, lk)?,
            ),
        };
        let v = heads(&self.v.forward(ctx)?, lk)?;
        let out = attention(&q, &k, &v)?
            .transpose(1, 2)?
            .reshape((b, lq, dim))?;
        lin(&self.o, &out)
    }
}

#[derive(Debug)]
struct Block {
    modulation: Tensor,
    norm1: LayerNorm,
    self_attn: Attention,
    norm3: LayerNorm,
    cross_attn: Attention,
    norm2: LayerNorm,
    ffn1: Linear,
    ffn2: Linear,
}

impl Block {
    fn new(cfg: &DitConfig, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        let d = cfg.dim;
        let dev = vb.device().clone();
        Ok(Self {
            modulation: vb.to_dtype(DType::F32).get((1, 6, d), "modulation")?,
            norm1: LayerNorm::plain(d, cfg.eps, &dev)?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"), imp)?,
            norm3: LayerNorm::affine(d, cfg.eps, vb.pp("norm3"))?,
            cross_attn: Attention::new(cfg, vb.pp("cross_attn"), imp)?,
            norm2: LayerNorm::plain(d, cfg.eps, &dev)?,
            ffn1: candle_nn::linear(d, cfg.ffn_dim, vb.pp("ffn.0"))?,
            ffn2: candle_nn::linear(cfg.ffn_dim, d, vb.pp("ffn.2"))?,
        })
    }

    /// `x`: [B, L, dim]; `e0`: [B, 6, dim]; `ctx`: [B, text_len, dim].
    fn forward(
        &self,
        x: &Tensor,
        e0: &Tensor,
        ctx: &Tensor,
        rope: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let e = self.modulation.broadcast_add(e0)?;
        let m: Vec<Tensor> = (0..6).map(|i| e.narrow(1, i, 1)).collect::<Result<_>>()?;
        let h = self
            .norm1
            .forward(x)?
            .broadcast_mul(&(&m[1] + 1.0)?)?
            .broadcast_add(&m[0])?;
        let y = self.self_attn.forward(&h, &h, Some(rope))?;
        let x = (x + y.broadcast_mul(&m[2])?)?;
        let x = (&x
            + self
                .cross_attn
                .forward(&self.norm3.forward(&x)?, ctx, None)?)?;
        let h = self
            .norm2
            .forward(&x)?
            .broadcast_mul(&(&m[4] + 1.0)?)?
            .broadcast_add(&m[3])?;
        let h = self
            .ffn1
            .forward(&h.to_dtype(self.ffn1.weight().dtype())?)?;
        let y = lin(&self.ffn2, &h.gelu()?)?;
        x + y.broadcast_mul(&m[5])?
    }
}

#[derive(Debug)]
pub struct WanDit {
    patch_weight: Tensor,
    patch_bias: Tensor,
    text_embedding: (Linear, Linear),
    time_embedding: (Linear, Linear),
    time_projection: Linear,
    blocks: Vec<Block>,
    head_modulation: Tensor,
    head_norm: LayerNorm,
    head: Linear,
    cfg: DitConfig,
}

impl WanDit {
    pub fn new(cfg: &DitConfig, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        let d = cfg.dim;
        let (pt, ph, pw) = PATCH;
        let cin = cfg.in_channels;
        let patch_in = cin * pt * ph * pw;
        let patch_weight = vb
            .get((d, cin, pt, ph, pw), "patch_embedding.weight")?
            .reshape((d, patch_in))?;
        let f32vb = vb.to_dtype(DType::F32);
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(cfg, vb.pp(format!("blocks.{i}")), imp))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_weight,
            patch_bias: vb.get(d, "patch_embedding.bias")?,
            text_embedding: (
                candle_nn::linear(cfg.text_dim, d, vb.pp("text_embedding.0"))?,
                candle_nn::linear(d, d, vb.pp("text_embedding.2"))?,
            ),
            time_embedding: (
                candle_nn::linear(cfg.freq_dim, d, f32vb.pp("time_embedding.0"))?,
                candle_nn::linear(d, d, f32vb.pp("time_embedding.2"))?,
            ),
            time_projection: candle_nn::linear(d, 6 * d, f32vb.pp("time_projection.1"))?,
            blocks,
            head_modulation: f32vb.get((1, 2, d), "head.modulation")?,
            head_norm: LayerNorm::plain(d, cfg.eps, vb.device())?,
            head: candle_nn::linear(d, pt * ph * pw * cfg.out_channels, vb.pp("head.head"))?,
            cfg: cfg.clone(),
        })
    }

    /// Text context: T5 output [B, L <= text_len, text_dim] zero-padded to text_len, embedded.
    pub fn embed_text(&self, ctx: &Tensor) -> Result<Tensor> {
        let (b, l, c) = ctx.dims3()?;
        let ctx = if l < self.cfg.text_len {
            let pad = Tensor::zeros((b, self.cfg.text_len - l, c), ctx.dtype(), ctx.device())?;
            Tensor::cat(&[ctx, &pad], 1)?
        } else {
            ctx.narrow(1, 0, self.cfg.text_len)?
        };
        let h = self.text_embedding.0.forward(&ctx)?.gelu()?;
        self.text_embedding.1.forward(&h)
    }

    /// Velocity prediction. `x`: latents [B, C, F, H, W]; `timesteps`: one per batch entry
    /// (sigma * 1000); `ctx`: [B, text_len, dim] from [`WanDit::embed_text`].
    pub fn forward(&self, x: &Tensor, timesteps: &[f64], ctx: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = x.dims5()?;
        let d = self.cfg.dim;
        let (_, ph, pw) = PATCH;
        let (gh, gw) = (h / ph, w / pw);
        // Patchify: [B, C, F, gh, ph, gw, pw] -> [B, F, gh, gw, C, ph, pw] -> [B, L, C*ph*pw].
        let tokens = x
            .reshape(vec![b, c, f, gh, ph, gw, pw])?
            .permute(vec![0, 2, 3, 5, 1, 4, 6])?
            .reshape((b, f * gh * gw, c * ph * pw))?;
        let mut xs = tokens
            .to_dtype(self.patch_weight.dtype())?
            .broadcast_matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?
            .to_dtype(DType::F32)?;
        let rope = rope_tables(d / self.cfg.heads, (f, gh, gw), x.device())?;

        let sin = sinusoidal_embedding(self.cfg.freq_dim, timesteps, x.device())?;
        let e = self
            .time_embedding
            .1
            .forward(&self.time_embedding.0.forward(&sin)?.silu()?)?;
        let e0 = self
            .time_projection
            .forward(&e.silu()?)?
            .reshape((b, 6, d))?;

        for blk in &self.blocks {
            xs = blk.forward(&xs, &e0, ctx, &rope)?;
        }

        let m = self.head_modulation.broadcast_add(&e.unsqueeze(1)?)?;
        let (m0, m1) = (m.narrow(1, 0, 1)?, m.narrow(1, 1, 1)?);
        let hx = self
            .head_norm
            .forward(&xs)?
            .broadcast_mul(&(m1 + 1.0)?)?
            .broadcast_add(&m0)?;
        let out = lin(&self.head, &hx)?; // [B, L, ph*pw*C_out], C_out last
        let co = self.cfg.out_channels;
        // Unpatchify: [B, F, gh, gw, ph, pw, C] -> [B, C, F, gh, ph, gw, pw].
        out.reshape(vec![b, f, gh, gw, ph, pw, co])?
            .permute(vec![0, 6, 1, 2, 4, 3, 5])?
            .reshape((b, co, f, h, w))
    }
}
