//! The one reference of the numerics contract: f64 arithmetic written as plain loops, with the
//! roundings the contract names and nothing taken from the crate.
//!
//! The contract (see `src/lib.rs`): normalise over the last dim. f32/f16/bf16 inputs compute
//! in f32, f64 inputs in f64 (the "compute type"): eps and the weight are taken in the compute
//! type, `1 + w` ([`WeightMode::OffsetOne`]) is rounded to it once, and the fused
//! `s = x + residual` is an addition in it. The sum of squares is taken here in f64, the ideal value of the
//! kernels' f32 accumulation. The fused op normalises that unrounded `s` and returns `s`
//! rounded to the input dtype. [`Rounding::BeforeWeight`] rounds `x * rsqrt(mean + eps)` to
//! the input dtype before the weight multiply. With a variance size `n` the mean of squares is
//! over the first `n` elements of each row only. The final output is left unrounded: the
//! comparison (`compare.rs`) accounts for that rounding. A NaN in a row makes the row NaN
//! through the sum of squares; an infinity makes the scale 0.

use candle_core::DType;
use candle_rmsnorm::{Rounding, WeightMode};
use half::{bf16, f16};

/// Rounds `v` to `dt` and back, to nearest even (what storing in `dt` does).
pub fn round_to(v: f64, dt: DType) -> f64 {
    // From an f32 value when `v` is one (exact, and faster than half's f64 conversions).
    let exact32 = (v as f32 as f64 == v).then_some(v as f32);
    match (dt, exact32) {
        (DType::F64, _) => v,
        (DType::F32, _) => v as f32 as f64,
        (DType::F16, Some(f)) => f16::from_f32(f).to_f64(),
        (DType::F16, None) => f16::from_f64(v).to_f64(),
        (DType::BF16, Some(f)) => bf16::from_f32(f).to_f64(),
        (DType::BF16, None) => bf16::from_f64(v).to_f64(),
        (other, _) => panic!("no float dtype: {other:?}"),
    }
}

/// The values as stored in `dt`.
pub fn quantize(vals: &[f64], dt: DType) -> Vec<f64> {
    vals.iter().map(|&v| round_to(v, dt)).collect()
}

/// Explicit mantissa bits of `dt`.
fn mantissa_bits(dt: DType) -> i32 {
    match dt {
        DType::F64 => 52,
        DType::F32 => 23,
        DType::F16 => 10,
        DType::BF16 => 7,
        other => panic!("no float dtype: {other:?}"),
    }
}

/// `2^-mantissa_bits`: the spacing of `dt` at 1, so `ulp(v) <= unit * |v|` for normal `v`.
pub fn unit(dt: DType) -> f64 {
    2f64.powi(-mantissa_bits(dt))
}

/// The spacing of `dt` at `|v|` (one unit in the last place), subnormals included.
pub fn ulp(v: f64, dt: DType) -> f64 {
    let min_exp = match dt {
        DType::F64 => -1022,
        DType::F16 => -14,
        _ => -126,
    };
    let e = if v == 0.0 || !v.is_finite() {
        min_exp
    } else {
        // floor(log2 |v|), read from the f64 exponent field.
        (((v.abs().to_bits() >> 52) as i32) - 1023).max(min_exp)
    };
    // 2^p, built from its bits (a normal f64, or for p < -1022 an f64 subnormal).
    let p = e - mantissa_bits(dt);
    if p >= -1022 {
        f64::from_bits(((p + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (p + 1074))
    }
}

/// The largest finite value of `dt`.
pub fn max_finite(dt: DType) -> f64 {
    match dt {
        DType::F64 => f64::MAX,
        DType::F32 => f32::MAX as f64,
        DType::F16 => f16::MAX.to_f64(),
        DType::BF16 => bf16::MAX.to_f64(),
        other => panic!("no float dtype: {other:?}"),
    }
}

/// The type the kernels compute in for input `dt`.
pub fn compute_dtype(dt: DType) -> DType {
    if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// The options of one norm, as the caller gave them.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub eps: f64,
    pub mode: WeightMode,
    pub rounding: Rounding,
    /// The mean of squares over the first `n` elements of a row; `None`: all of it.
    pub var_size: Option<usize>,
    /// `EpsMode::ClampNorm`: scale `sqrt(n) / max(sqrt(ss), eps)`.
    pub clamp: bool,
}

impl Opts {
    pub fn new(eps: f64) -> Self {
        Self {
            eps,
            mode: WeightMode::Scale,
            rounding: Rounding::AtEnd,
            var_size: None,
            clamp: false,
        }
    }
}

/// The reference results, row-major like the input.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The normalised output, before its final rounding to the input dtype.
    pub normed: Vec<f64>,
    /// The fused op's `x + residual` rounded to the input dtype (empty without a residual).
    pub sum: Vec<f64>,
}

/// The contract on rows of `hidden` values. `x`, `r` (the residual: fused op) and `w` are the
/// values as stored in their dtypes; `dt` is the dtype of `x`.
pub fn reference(
    dt: DType,
    x: &[f64],
    r: Option<&[f64]>,
    w: Option<&[f64]>,
    hidden: usize,
    o: &Opts,
) -> Expected {
    let c = compute_dtype(dt);
    let eps = round_to(o.eps, c);
    let weight: Option<Vec<f64>> = w.map(|w| {
        w.iter()
            .map(|&v| match o.mode {
                WeightMode::Scale => round_to(v, c),
                // Rounded once: the f32 addition for f32/f16/bf16 weights (exact in f64).
                WeightMode::OffsetOne => round_to(1.0 + v, c),
            })
            .collect()
    });
    let rows = x.len().checked_div(hidden).unwrap_or(0);
    let mut out = Expected {
        normed: vec![0.0; x.len()],
        sum: vec![0.0; if r.is_some() { x.len() } else { 0 }],
    };
    let mut s = vec![0.0; hidden];
    for row in 0..rows {
        let base = row * hidden;
        for i in 0..hidden {
            s[i] = match r {
                Some(r) => round_to(x[base + i] + r[base + i], c),
                None => x[base + i],
            };
            if r.is_some() {
                out.sum[base + i] = round_to(s[i], dt);
            }
        }
        let nv = o.var_size.unwrap_or(hidden);
        let mut ss = 0.0;
        for v in &s[..nv] {
            ss += v * v;
        }
        let scale = if o.clamp {
            // F.normalize's clamp; a NaN norm stays NaN (f64::max would drop it).
            let norm = ss.sqrt();
            (nv as f64).sqrt() / if norm < o.eps { o.eps } else { norm }
        } else {
            1.0 / (ss / nv as f64 + eps).sqrt()
        };
        for i in 0..hidden {
            let mut n = s[i] * scale;
            if o.rounding == Rounding::BeforeWeight {
                n = round_to(n, dt);
            }
            out.normed[base + i] = match &weight {
                Some(w) => n * w[i],
                None => n,
            };
        }
    }
    out
}

/// `vals` of a row-major tensor of shape `dims` with dimension `d` moved last (`back`: the
/// inverse), for the reference of a norm over `d`.
pub fn move_dim_last(vals: &[f64], dims: &[usize], d: usize, back: bool) -> Vec<f64> {
    let outer: usize = dims[..d].iter().product();
    let c = dims[d];
    let inner: usize = dims[d + 1..].iter().product();
    let mut out = vec![0.0; vals.len()];
    for o in 0..outer {
        for ch in 0..c {
            for i in 0..inner {
                let first = (o * c + ch) * inner + i;
                let last = (o * inner + i) * c + ch;
                if back {
                    out[first] = vals[last];
                } else {
                    out[last] = vals[first];
                }
            }
        }
    }
    out
}
