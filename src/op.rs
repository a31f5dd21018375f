//! The op descriptor every backend receives: which op, its name, its options and its output
//! shape. Weights and residuals are operands, never fields.

use crate::config::{Backend, NormConfig, Rounding, WeightMode};
use candle_core::Shape;

/// One norm call's parameters. The fused op writes `[normed; sum]` into one buffer of shape
/// `[2, ..]` (a Candle custom op returns one tensor; see `custom_op`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NormOp {
    pub eps: f64,
    pub weight_mode: WeightMode,
    pub rounding: Rounding,
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
            backend,
            fused,
        }
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
