//! The op descriptor every backend receives: which op, its name, its options and its output
//! shape. Weights and residuals are operands, never fields.

use crate::config::{Backend, NormConfig, Rounding, WeightMode};
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

/// One norm call's parameters. The fused op writes `[normed; sum]` into one buffer of shape
/// `[2, ..]` (a Candle custom op returns one tensor; see `custom_op`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NormOp {
    pub eps: f64,
    pub weight_mode: WeightMode,
    pub rounding: Rounding,
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
            variance_size: cfg.variance_size(),
            backend,
            fused,
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
