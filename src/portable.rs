//! The portable backend, [`Backend::Candle`](crate::Backend::Candle): every op written with
//! Candle's own tensor ops, so it runs wherever Candle runs (Metal, CUDA in a build without this
//! crate's `cuda` feature, the CPU) and keeps the numerics contract of `docs/numerics.md`:
//!
//! - `s = xs (+ residual)` in f32 (f64 for f64 input); the fused op returns `s` rounded;
//! - the sum of squares of `s` in that dtype (of its first `n` elements a row with a variance
//!   size `n`); `scale = 1 / sqrt(ss / n + eps)`, `n = hidden` by default, or with
//!   `EpsMode::ClampNorm` `sqrt(n) / max(sqrt(ss), eps)`; a norm over another dimension than
//!   the last runs on a transposed view of `s` (rows are then strided; Candle copies where it
//!   must);
//! - `n = s * scale`, rounded to the input dtype first with `Rounding::BeforeWeight`, times the
//!   effective weight (`w`, `1 + w` or none), rounded once to the input dtype;
//! - rows whose sum of squares overflows, or whose `mean + eps` is tiny, are rescued without
//!   f64 (Metal has none): with `k = max(max |s|, sqrt(eps))` the row is normalised as
//!   `(s / k) / sqrt(sum((s / k)^2) / hidden + (sqrt(eps) / k)^2)`, in which no term can
//!   overflow or vanish (with the clamp: `k = max(max |s|, eps)` and
//!   `(s / k) * sqrt(n) / max(sqrt(sum((s / k)^2)), eps / k)`). Rows holding an infinity are left to the plain formula (their infinite
//!   lanes become NaN, the rest zero), and NaN stays in its row.
//!
//! Every row goes through the same tensor ops (no host synchronisation, nothing data-dependent
//! on the host); the rescue costs a few extra passes over the input. Gradients come from
//! Candle's autograd; each branch of the rescue is fed only values that are finite where the
//! branch is not taken, so no NaN leaks into gradients of ordinary rows.

use crate::config::{EpsMode, Rounding, WeightMode};
use crate::op::{compute_dtype, NormOp, RESCUE_MEAN_BELOW};
use crate::quant::{QuantDType, QuantSpec};
use crate::rope_config::{HeadLayout, NormScope, RopeStyle};
use crate::rope_op::RopeOp;
use candle_core::{DType, Result, Tensor, D};

/// `v` as a tensor of `like`'s dtype on its device, broadcast to its shape. Made in the compute
/// dtype directly, so no f64 tensor is ever created on a device without f64.
fn full_like(like: &Tensor, v: f64) -> Result<Tensor> {
    let t = match like.dtype() {
        DType::F64 => Tensor::new(v, like.device())?,
        _ => Tensor::new(v as f32, like.device())?,
    };
    t.broadcast_as(like.shape())
}

/// The weight as the kernels apply it, in the compute dtype `cdt`: `w` or `1 + w` (formed at
/// f64 precision when the weight is f64, else in f32: the same value, rounded once).
fn effective_weight(w: &Tensor, mode: WeightMode, cdt: DType) -> Result<Tensor> {
    match mode {
        WeightMode::Scale => w.to_dtype(cdt),
        WeightMode::OffsetOne if w.dtype() == DType::F64 => (w + 1.0)?.to_dtype(cdt),
        WeightMode::OffsetOne => w.to_dtype(cdt)? + 1.0,
    }
}

/// The sum of squares of each row of `t`, shape `[.., 1]`, in `t`'s dtype. Written as a product
/// with a column of ones: a matrix product accumulates in blocks, whose rounding error grows far
/// slower with the row length than a sequential reduction's (which some Candle versions use
/// for `sum` on the CPU: 1e-5 relative at 40,000 elements in f32).
fn sum_sq(t: &Tensor) -> Result<Tensor> {
    let mut dims = t.dims().to_vec();
    let hidden = dims.pop().unwrap_or(1);
    let rows = t.elem_count() / hidden.max(1);
    let ones = Tensor::ones((hidden, 1), t.dtype(), t.device())?;
    dims.push(1);
    t.sqr()?
        .reshape((rows, hidden))?
        .matmul(&ones)?
        .reshape(dims)
}

/// The per-row factor `f` and divisor `k` with `normalised = (s / k) * f`: `k = 1` and
/// `f = 1 / sqrt(ss / n + eps)` (or `sqrt(n) / max(sqrt(ss), eps)`) for ordinary rows, the
/// rescue for the others; `ss`, and the rescue's max, over the first `n` elements of each row
/// (`NormOp::var_size`).
fn row_factors(s: &Tensor, eps: f64, n: usize, mode: EpsMode) -> Result<(Tensor, Tensor)> {
    let cdt = s.dtype();
    let s = if n < s.dim(D::Minus1)? {
        &s.narrow(D::Minus1, 0, n)?
    } else {
        s
    };
    let inv_h = 1.0 / n as f64;
    // eps as the kernels see it: rounded to the compute dtype.
    let eps = if cdt == DType::F64 {
        eps
    } else {
        eps as f32 as f64
    };
    let (max, tiny) = if cdt == DType::F64 {
        (f64::MAX, 1e-290)
    } else {
        (f32::MAX as f64, f64::from(RESCUE_MEAN_BELOW))
    };
    let ss = sum_sq(s)?;
    // What must not be tiny, and the floor of the rescue's divisor k.
    let (under_root, floor) = match mode {
        EpsMode::AddToMean => (ss.affine(inv_h, eps)?, eps.sqrt()),
        EpsMode::ClampNorm => (ss.maximum(&full_like(&ss, eps * eps)?)?, eps),
    };
    let m = s.abs()?.max_keepdim(D::Minus1)?;
    // Rescue a row when its sum overflowed or `under_root` is tiny, unless it holds an
    // infinity (or NaN: `m <= max` is false for both).
    let overflow = ss.ge(&full_like(&ss, max)?)?.to_dtype(cdt)?;
    let small = under_root
        .lt(&full_like(&under_root, tiny)?)?
        .to_dtype(cdt)?;
    let finite = m.le(&full_like(&m, max)?)?.to_dtype(cdt)?;
    let rescue = ((overflow + small)? * finite)?.gt(&full_like(&m, 0.0)?)?;

    let one = full_like(&m, 1.0)?;
    let k = rescue.where_cond(&m.maximum(&full_like(&m, floor)?)?, &one)?;
    let u = s.broadcast_div(&k)?;
    let sq = sum_sq(&u)?;
    let (plain, rescued) = match mode {
        EpsMode::AddToMean => (
            rescue.where_cond(&one, &under_root)?.sqrt()?.recip()?,
            (sq.affine(inv_h, 0.0)? + k.recip()?.affine(floor, 0.0)?.sqr()?)?
                .sqrt()?
                .recip()?,
        ),
        EpsMode::ClampNorm => {
            let root_n = full_like(&m, (n as f64).sqrt())?;
            let clamp =
                |v: &Tensor, e: &Tensor| -> Result<Tensor> { root_n.div(&v.sqrt()?.maximum(e)?) };
            (
                clamp(&rescue.where_cond(&one, &ss)?, &full_like(&ss, eps)?)?,
                clamp(&sq, &k.recip()?.affine(eps, 0.0)?)?,
            )
        }
    };
    let f = rescue.where_cond(&rescued, &plain)?;
    Ok((k, f))
}

/// The normalised rows of `s` (in the compute dtype) as the input dtype `dt`.
fn normalise(op: &NormOp, s: &Tensor, dt: DType, weight: Option<&Tensor>) -> Result<Tensor> {
    let cdt = s.dtype();
    let (k, f) = row_factors(s, op.eps, op.var_size(s.dim(D::Minus1)?), op.eps_mode)?;
    let mut n = s.broadcast_div(&k)?.broadcast_mul(&f)?;
    if op.rounding == Rounding::BeforeWeight {
        n = n.to_dtype(dt)?.to_dtype(cdt)?;
    }
    if let Some(w) = weight {
        n = n.broadcast_mul(&effective_weight(w, op.weight_mode, cdt)?)?;
    }
    n.to_dtype(dt)?.contiguous()
}

/// [`normalise`] over the op's dimension: `s` with that dimension swapped with the last, the
/// result swapped back.
fn normalise_over(op: &NormOp, s: &Tensor, dt: DType, weight: Option<&Tensor>) -> Result<Tensor> {
    match op.axis(s.rank()) {
        None => normalise(op, s, dt, weight),
        Some(d) => {
            let last = s.rank() - 1;
            normalise(op, &s.transpose(d, last)?, dt, weight)?
                .transpose(d, last)?
                .contiguous()
        }
    }
}

/// `rms_norm` on the device of `x`, for any layout. The caller has checked shapes, dtypes,
/// devices and eps.
pub(crate) fn rms_norm(op: &NormOp, x: &Tensor, weight: Option<&Tensor>) -> Result<Tensor> {
    let dt = x.dtype();
    normalise_over(op, &x.to_dtype(compute_dtype(dt))?, dt, weight)
}

/// The fused op: `(normed, sum)`, both contiguous; checked by the caller as [`rms_norm`].
pub(crate) fn fused_add_rms_norm(
    op: &NormOp,
    x: &Tensor,
    residual: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let dt = x.dtype();
    let cdt = compute_dtype(dt);
    let s = (x.to_dtype(cdt)? + residual.to_dtype(cdt)?)?;
    Ok((
        normalise_over(op, &s, dt, weight)?,
        s.to_dtype(dt)?.contiguous()?,
    ))
}

/// `rms_norm_rope` (and with `k` the pair `[2, ..]`) in Candle's tensor ops: the norm above on
/// rows or heads, rounded to the input dtype, moved into the layout asked for, and rotated by
/// `candle_nn::rotary_emb` in f32 (f64 for f64 input), rounded once: the numerics of the
/// kernels (`crate::rope_op`), several passes over memory. Checked by the caller.
pub(crate) fn rms_norm_rope(op: &RopeOp, q: &Tensor, k: Option<&Tensor>) -> Result<Tensor> {
    let nop = NormOp {
        eps: op.eps,
        weight_mode: op.weight_mode,
        rounding: op.rounding,
        eps_mode: op.eps_mode,
        dim: None,
        variance_size: None,
        backend: op.backend,
        fused: false,
    };
    let one = |x: &Tensor, w: Option<&Tensor>| -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let (h, d) = (op.heads, op.head_dim);
        let x = match op.scope {
            NormScope::Full => x.clone(),
            NormScope::PerHead => x.reshape((b, l, h, d))?,
        };
        let dt = x.dtype();
        let y = rms_norm(&nop, &x, w)?
            .reshape((b, l, h, d))?
            .transpose(1, 2)?
            .to_dtype(compute_dtype(dt))?
            .contiguous()?;
        let (cos, sin) = (op.cos.narrow(0, 0, l)?, op.sin.narrow(0, 0, l)?);
        let r = match op.style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&y, &cos, &sin)?,
            RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(&y, &cos, &sin)?,
        }
        .to_dtype(dt)?;
        match op.layout {
            HeadLayout::Bhld => Ok(r),
            HeadLayout::Blhd => r.transpose(1, 2)?.contiguous(),
        }
    };
    let qo = one(q, op.weights[0].as_ref())?;
    match k {
        None => Ok(qo),
        Some(k) => Tensor::stack(&[qo, one(k, op.weights[1].as_ref())?], 0),
    }
}

/// `rms_norm_quant` / `fused_add_rms_norm_quant` (`src/quant_api.rs`): the norm above, then its
/// output `y` (rounded to f32 for f64 input) quantised with Candle ops: `(values, scales, sum)`.
pub(crate) fn norm_quant(
    op: &NormOp,
    spec: &QuantSpec,
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (y, sum) = match residual {
        Some(r) => {
            let (n, s) = fused_add_rms_norm(op, x, r, weight)?;
            (n, Some(s))
        }
        None => (rms_norm(op, x, weight)?, None),
    };
    let y = y.to_dtype(DType::F32)?;
    let nan = y.ne(&y)?;
    let scale = match spec.fixed {
        Some(s) => {
            let mut dims = y.dims().to_vec();
            *dims.last_mut().expect("rank >= 1") = 1;
            Tensor::full(s, dims, y.device())?
        }
        None => {
            // amax ignoring NaN, then max(amax / max_value, min_scale).
            let a = nan.where_cond(&y.zeros_like()?, &y.abs()?)?;
            let m = a.max_keepdim(D::Minus1)?;
            // A true f32 division (a scalar `/` would multiply by a rounded reciprocal).
            let max = Tensor::new(spec.dtype.max_value(), m.device())?;
            m.broadcast_div(&max)?
                .maximum(spec.dtype.min_scale() as f64)?
        }
    };
    let v = y.broadcast_mul(&scale.recip()?)?;
    let values = match spec.dtype {
        QuantDType::F8E4M3 => {
            // Saturate (NaN kept), then Candle's conversion rounds to nearest even.
            let lim = spec.dtype.max_value() as f64;
            nan.where_cond(&v, &v.clamp(-lim, lim)?)?
                .to_dtype(DType::F8E4M3)?
        }
        QuantDType::I8 => {
            // Round half to even: at a tie (fraction exactly 0.5), twice round(v / 2).
            let tie = (&v - v.floor()?)?.eq(0.5)?;
            let r = tie.where_cond(&((&v / 2.0)?.round()? * 2.0)?, &v.round()?)?;
            let r = nan
                .where_cond(&v.zeros_like()?, &r)?
                .clamp(-128f64, 127f64)?;
            // Two's complement bytes.
            let neg = r.lt(0f64)?;
            neg.where_cond(&(&r + 256.0)?, &r)?.to_dtype(DType::U8)?
        }
    };
    Ok((values, scale, sum))
}
