//! Gradients, written with Candle tensor ops in f32 (f64 for f64 inputs).
//!
//! With `s = xs (+ residual)`, `r = (mean(s^2) + eps)^-1/2` (the mean over the first `N`
//! elements of a row, the variance size, `N = hidden` by default), `n = s * r` and `w'` the
//! effective weight (`w`, `1 + w`, or ones):
//! `d weight = sum_rows(g * n)`, `d s = r * (g * w' - m * n * sum(g * w' * n) / N)` with `m` 1 on
//! the first `N` elements and 0 past them, and for the fused op `d xs = d residual = d s + g_sum`.
//! With [`EpsMode::ClampNorm`], `r = sqrt(N) / max(|s|, eps)`: the same formula with `eps = 0`
//! where `|s| > eps`, and `d s = r * g * w'` where the clamp holds `r` constant.
//! [`Rounding::BeforeWeight`](crate::Rounding) is treated as the identity (straight-through),
//! as autograd of the reference code does for a dtype cast. A norm over another dimension than
//! the last is differentiated on views with that dimension swapped with the last.

use crate::config::{EpsMode, WeightMode};
use crate::op::{compute_dtype, NormOp};
use candle_core::{Result, Tensor, D};

/// `v` masked to its first `n` elements along the last dim (the rest 0); `v` itself when `n`
/// covers the row.
fn first_n(v: Tensor, n: usize) -> Result<Tensor> {
    let hidden = v.dim(D::Minus1)?;
    if n >= hidden {
        return Ok(v);
    }
    let mask: Vec<f64> = (0..hidden).map(|i| if i < n { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::new(mask, v.device())?.to_dtype(v.dtype())?;
    v.broadcast_mul(&mask)
}

type Grads = (Tensor, Option<Tensor>, Option<Tensor>);

pub(crate) fn grads(
    op: &NormOp,
    xs: &Tensor,
    residual: Option<&Tensor>,
    weight: Option<&Tensor>,
    grad: &Tensor,
) -> Result<Grads> {
    let (g_norm, g_sum) = if op.fused {
        (grad.get(0)?, Some(grad.get(1)?))
    } else {
        (grad.clone(), None)
    };
    let Some(d) = op.axis(xs.rank()) else {
        return row_grads(op, xs, residual, weight, &g_norm, g_sum.as_ref());
    };
    let last = xs.rank() - 1;
    let sw = |t: &Tensor| t.transpose(d, last);
    let r = residual.map(sw).transpose()?;
    let gs = g_sum.as_ref().map(sw).transpose()?;
    let (gx, gr, gw) = row_grads(op, &sw(xs)?, r.as_ref(), weight, &sw(&g_norm)?, gs.as_ref())?;
    Ok((sw(&gx)?, gr.as_ref().map(sw).transpose()?, gw))
}

/// [`grads`] over the last dimension, from the gradients of the two outputs.
fn row_grads(
    op: &NormOp,
    xs: &Tensor,
    residual: Option<&Tensor>,
    weight: Option<&Tensor>,
    g_norm: &Tensor,
    g_sum: Option<&Tensor>,
) -> Result<Grads> {
    let cdt = compute_dtype(xs.dtype());
    let g_sum = g_sum.map(|g| g.to_dtype(cdt)).transpose()?;
    let g = g_norm.to_dtype(cdt)?;
    let mut s = xs.to_dtype(cdt)?;
    if let Some(r) = residual {
        s = (s + r.to_dtype(cdt)?)?;
    }
    let nv = op.var_size(s.dim(D::Minus1)?);
    let ms = s.narrow(D::Minus1, 0, nv)?.sqr()?.mean_keepdim(D::Minus1)?;
    // r, and where the mean's term of the derivative applies (1) or the clamp holds r (0).
    let (r, live) = match op.eps_mode {
        EpsMode::AddToMean => ((ms + op.eps)?.sqrt()?.recip()?, None),
        EpsMode::ClampNorm => {
            let norm = (ms * nv as f64)?.sqrt()?;
            let floor = norm.ones_like()?.affine(op.eps, 0.0)?;
            let r = norm
                .maximum(&floor)?
                .recip()?
                .affine((nv as f64).sqrt(), 0.0)?;
            (r, Some(norm.gt(&floor)?.to_dtype(cdt)?))
        }
    };
    let n = s.broadcast_mul(&r)?;
    let gw_eff = match weight {
        Some(w) => {
            let w = w.to_dtype(cdt)?;
            let w = match op.weight_mode {
                WeightMode::Scale => w,
                WeightMode::OffsetOne => (w + 1.0)?,
            };
            g.broadcast_mul(&w)?
        }
        None => g.clone(),
    };
    let mut dot = ((&gw_eff * &n)?.sum_keepdim(D::Minus1)? / nv as f64)?;
    if let Some(live) = live {
        dot = (dot * live)?;
    }
    let mut ds = (gw_eff - first_n(n.broadcast_mul(&dot)?, nv)?)?.broadcast_mul(&r)?;
    if let Some(gs) = g_sum {
        ds = (ds + gs)?;
    }
    let gw = match weight {
        Some(w) => {
            let hidden = n.dim(D::Minus1)?;
            let rows = n.elem_count() / hidden.max(1);
            let gw = (&g * &n)?.reshape((rows, hidden))?.sum(0)?;
            Some(gw.to_dtype(w.dtype())?)
        }
        None => None,
    };
    let gr = match residual {
        Some(r) => Some(ds.to_dtype(r.dtype())?),
        None => None,
    };
    Ok((ds.to_dtype(xs.dtype())?, gr, gw))
}
