//! Every RMSNorm of the pipeline goes through here: through `candle_rmsnorm` (`--norm-impl ours`)
//! or through `candle_nn::ops::rms_norm` plus a separate add (`--norm-impl candle`), with the
//! time spent inside the norm calls accumulated for the closing timing table (`crate::timing`).
//!
//! The example runs in f32, where [`Rounding::BeforeWeight`] and [`Rounding::AtEnd`] give the same
//! values, so the candle path (which multiplies the weight before its single rounding) computes
//! the same function; in bf16/f16 the rounding order would differ in the last bit.

use candle_core::{Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm_with, qk_rms_norm_rope, rms_norm_with, EpsMode, NormConfig, RopeConfig,
    Rounding,
};

/// Which RMSNorm implementation the pipeline calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NormImpl {
    /// `candle_rmsnorm::rms_norm_with` / `fused_add_rms_norm_with` (one fused call per add + norm).
    Ours,
    /// `candle_nn::ops::rms_norm`, with the residual add as a separate tensor op.
    Candle,
}

/// Runs `f` and adds its duration to the norm counters (`crate::timing`).
fn timed<T>(x: &Tensor, f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::timing::timed(crate::timing::Part::Norm, x.device(), f)
}

/// An RMSNorm over the last dimension with a weight.
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    cfg: NormConfig,
    imp: NormImpl,
}

impl Norm {
    pub fn new(weight: Tensor, eps: f64, rounding: Rounding, imp: NormImpl) -> Self {
        Self {
            weight,
            cfg: NormConfig::new(eps).with_rounding(rounding),
            imp,
        }
    }

    /// `rms_norm(x) * weight`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.imp {
            NormImpl::Ours => timed(x, || rms_norm_with(x, Some(&self.weight), &self.cfg)),
            NormImpl::Candle => {
                let x = x.contiguous()?;
                timed(&x, || {
                    candle_nn::ops::rms_norm(&x, &self.weight, self.cfg.eps() as f32)
                })
            }
        }
    }

    /// `sum = x + residual; (rms_norm(sum) * weight, sum)`: one fused call with `ours`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        match self.imp {
            NormImpl::Ours => timed(x, || {
                fused_add_rms_norm_with(x, residual, Some(&self.weight), &self.cfg)
            }),
            NormImpl::Candle => timed(x, || {
                let sum = (x + residual)?;
                let normed = candle_nn::ops::rms_norm(&sum, &self.weight, self.cfg.eps() as f32)?;
                Ok((normed, sum))
            }),
        }
    }
}

/// Wan's self-attention q/k step: RMSNorm of q and of k over the full dim (`norm_q`, `norm_k`),
/// heads split and moved to `[B, heads, L, head_dim]`, then the interleaved RoPE with the
/// position tables `cos`, `sin` (`[L, head_dim / 2]`).
///
/// `ours`: one call, `qk_rms_norm_rope` (q and k read once, written once, in that layout, the
/// rotation in f32 and one rounding). `candle`: `candle_nn::ops::rms_norm` per tensor, reshape,
/// transpose, `contiguous`, and `candle_nn::rotary_emb::rope_i` with the tables in the tensors'
/// dtype. Both are timed whole (in f32, the example's CPU default, the two agree to f32
/// rounding; in bf16 the unfused rotation rounds each product to bf16).
pub fn qk_norm_rope(
    (nq, nk): (&Norm, &Norm),
    (q, k): (&Tensor, &Tensor),
    (cos, sin): (&Tensor, &Tensor),
    heads: usize,
) -> Result<(Tensor, Tensor)> {
    match nq.imp {
        NormImpl::Ours => {
            let cfg = RopeConfig::new(heads, nq.cfg);
            timed(q, || {
                qk_rms_norm_rope(q, k, Some(&nq.weight), Some(&nk.weight), cos, sin, &cfg)
            })
        }
        NormImpl::Candle => timed(q, || {
            let (b, l, dim) = q.dims3()?;
            let (cos, sin) = (cos.to_dtype(q.dtype())?, sin.to_dtype(q.dtype())?);
            let one = |n: &Norm, t: &Tensor| -> Result<Tensor> {
                let y = candle_nn::ops::rms_norm(&t.contiguous()?, &n.weight, n.cfg.eps() as f32)?;
                let y = y
                    .reshape((b, l, heads, dim / heads))?
                    .transpose(1, 2)?
                    .contiguous()?;
                candle_nn::rotary_emb::rope_i(&y, &cos, &sin)
            };
            Ok((one(nq, q)?, one(nk, k)?))
        }),
    }
}

/// The Wan VAE's channel-first `RMS_norm`: `F.normalize(x, dim=1) * sqrt(C) * gamma`.
///
/// `ours`: one call over dim 1 of the tensor as it lies (`NormConfig::with_dim(1)`), with
/// `EpsMode::ClampNorm` and eps 1e-12: `F.normalize`'s clamp exactly. `candle`: channels moved
/// last (a copy), `candle_nn::ops::rms_norm`, moved back (a copy), with `eps = 1e-24 / C` (the
/// square of the clamp over C: equal for all-zero rows, and for every other row a relative
/// difference `eps / (2 ms)`, below f32 resolution for every row with `ms > 1e-17 / C`). Both are
/// timed whole, copies included.
#[derive(Debug, Clone)]
pub struct ChannelNorm {
    gamma: Tensor,
    imp: NormImpl,
}

impl ChannelNorm {
    /// `gamma` of any shape with C elements (the checkpoints store `[C, 1, 1, 1]` or `[C, 1, 1]`).
    pub fn new(gamma: &Tensor, imp: NormImpl) -> Result<Self> {
        Ok(Self {
            gamma: gamma.flatten_all()?,
            imp,
        })
    }

    /// `x`: `[N, C, ..]` (frames as the batch, or a video `[B, C, T, H, W]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.imp {
            NormImpl::Ours => {
                let cfg = NormConfig::new(1e-12)
                    .with_dim(1)
                    .with_eps_mode(EpsMode::ClampNorm);
                timed(x, || rms_norm_with(x, Some(&self.gamma), &cfg))
            }
            NormImpl::Candle => timed(x, || {
                let last = x.rank() - 1;
                let eps = 1e-24 / self.gamma.elem_count() as f64;
                let xl = x.transpose(1, last)?.contiguous()?;
                let y = candle_nn::ops::rms_norm(&xl, &self.gamma, eps as f32)?;
                y.transpose(1, last)?.contiguous()
            }),
        }
    }
}
