//! The op descriptor every backend receives: which op, its name, its options and its output
//! shape. Weights and residuals are operands, never fields.

use crate::config::{Backend, EpsMode, NormConfig, Rounding, WeightMode};
use candle_core::{DType, Layout, Shape};

/// The dtype sums are formed in (docs/numerics.md): f64 for f64 input, else f32.
pub(crate) fn compute_dtype(x: DType) -> DType {
    if x == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// A row whose f32 `mean(x^2) + eps` falls below this is rescued (docs/numerics.md): the CPU
/// path and the portable backend test it; the GPU kernels keep their own copy in `hip/row.h`.
pub(crate) const RESCUE_MEAN_BELOW: f32 = 1e-30;

/// What the scale's root is taken of, from the mean of squares `mean` and the eps argument
/// `e` ([`NormOp::eps_arg`]): `mean + e`, or with [`EpsMode::ClampNorm`] `max(mean, e)`
/// (NaN-propagating: a NaN mean stays NaN). `1 / sqrt` of it is the scale; with the clamp and
/// `e = eps^2 / n` that is `sqrt(n) / max(sqrt(ss), eps)`. The GPU kernels keep their copy in
/// `hip/row.h`.
#[inline(always)]
pub(crate) fn under_root<A: PartialOrd + std::ops::Add<Output = A> + Copy>(
    mean: A,
    e: A,
    mode: EpsMode,
) -> A {
    match mode {
        EpsMode::AddToMean => mean + e,
        EpsMode::ClampNorm if mean < e => e,
        EpsMode::ClampNorm => mean,
    }
}

/// The f32 scale of a row of `n` summed values whose f32 sum of squares is `ss`, with the eps
/// argument `e` ([`NormOp::eps_arg`], in f32): `1 / sqrt(under_root(ss / n, e))`. `None` when
/// the row must be rescued with an f64 sum: `ss` overflowed, or what goes under the root is
/// below [`RESCUE_MEAN_BELOW`].
#[inline(always)]
pub(crate) fn scale_f32(ss: f32, n: usize, e: f32, mode: EpsMode) -> Option<f32> {
    let denom = under_root(ss * (1.0 / n as f32), e, mode);
    (!ss.is_infinite() && denom >= RESCUE_MEAN_BELOW).then(|| 1.0 / denom.sqrt())
}

/// [`scale_f32`] in f64, without a rescue: the f64 paths and the f32 rows' rescue (whose `ss`
/// is an f64 sum).
#[inline(always)]
pub(crate) fn scale_f64(ss: f64, n: usize, e: f64, mode: EpsMode) -> f64 {
    1.0 / under_root(ss / n as f64, e, mode).sqrt()
}

/// One norm call's parameters. The fused op writes `[normed; sum]` into one buffer of shape
/// `[2, ..]` (a Candle custom op returns one tensor; see `custom_op`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NormOp {
    pub eps: f64,
    pub weight_mode: WeightMode,
    pub rounding: Rounding,
    pub eps_mode: EpsMode,
    /// The dimension normalised over (`NormConfig::with_dim`, checked below the rank before any
    /// backend runs); `None`: the last. See [`NormOp::axis`].
    pub dim: Option<usize>,
    /// The mean of squares over the first `n` elements of a row (`NormConfig::variance_size`,
    /// checked `1..=hidden` before any backend runs); `None`: the whole row.
    pub variance_size: Option<usize>,
    pub backend: Backend,
    pub fused: bool,
}

impl NormOp {
    /// The op of `cfg` (its eps, weight mode and rounding) on `backend`.
    pub fn new(cfg: &NormConfig, backend: Backend, fused: bool) -> Self {
        Self {
            eps: cfg.eps(),
            weight_mode: cfg.weight_mode(),
            rounding: cfg.rounding(),
            eps_mode: cfg.eps_mode(),
            dim: cfg.dim(),
            variance_size: cfg.variance_size(),
            backend,
            fused,
        }
    }

    /// The dimension normalised over for an input of `rank` dims, when it is not the last:
    /// `None` for the row kernels' case.
    pub fn axis(&self, rank: usize) -> Option<usize> {
        self.dim.filter(|&d| d + 1 < rank)
    }

    /// The eps argument the kernels take for rows of `hidden` (their mean over
    /// [`NormOp::var_size`] of them): `eps`, or with [`EpsMode::ClampNorm`] `eps^2 / n` (see
    /// [`under_root`]).
    pub fn eps_arg(&self, hidden: usize) -> f64 {
        match self.eps_mode {
            EpsMode::AddToMean => self.eps,
            EpsMode::ClampNorm => self.eps * self.eps / self.var_size(hidden) as f64,
        }
    }

    /// The elements of a row of `hidden` the mean of squares is taken over.
    pub fn var_size(&self, hidden: usize) -> usize {
        self.variance_size.unwrap_or(hidden).min(hidden)
    }

    /// The name errors and Candle's op graph use.
    pub fn name(&self) -> &'static str {
        if self.fused {
            "fused_add_rms_norm"
        } else {
            "rms_norm"
        }
    }

    /// The output shape for input shape `x`: `x`, or `[2, x..]` for the fused op.
    pub fn out_shape(&self, x: &Shape) -> Shape {
        if self.fused {
            let mut d = vec![2];
            d.extend_from_slice(x.dims());
            Shape::from(d)
        } else {
            x.clone()
        }
    }
}

/// One operand: a storage and its layout.
pub(crate) type Operand<'a, S> = (&'a S, &'a Layout);

/// The operands of one call in their roles, each a storage (`S`: CPU or CUDA) and its layout.
#[derive(Clone, Copy)]
pub(crate) struct Inputs<'a, S> {
    pub x: Operand<'a, S>,
    /// The fused op's residual.
    pub residual: Option<Operand<'a, S>>,
    pub weight: Option<Operand<'a, S>>,
}

impl NormOp {
    /// Positional operands as Candle hands them to a custom op, in their roles: `[xs]`,
    /// `[xs, weight]`, or for the fused op `[xs, residual]` and `[xs, residual, weight]`.
    pub fn inputs<'a, S>(&self, ops: &[Operand<'a, S>]) -> Inputs<'a, S> {
        let (x, b, c) = (ops[0], ops.get(1).copied(), ops.get(2).copied());
        if self.fused {
            Inputs {
                x,
                residual: b,
                weight: c,
            }
        } else {
            Inputs {
                x,
                residual: None,
                weight: b,
            }
        }
    }
}
