//! The descriptor of one q/k norm + rotary embedding call, as every backend receives it: the
//! geometry (heads, head size, scope, rotation, layout written), the norm's options, and the
//! side operands (weights, cos/sin tables), already checked and converted by the public API.
//!
//! The inputs are `[B, L, heads * head_dim]` with a contiguous last dimension (batch and
//! position strides free); one or two of them (q, and k of the same shape). The output is one
//! contiguous tensor, `[B, heads, L, head_dim]` or `[B, L, heads, head_dim]`, with a leading
//! dimension of 2 when k is given (a Candle custom op returns one tensor; the public function
//! hands out the halves).

use crate::config::{Backend, EpsMode, Rounding, WeightMode};
use crate::error::op_error;
use crate::op::compute_dtype;
use crate::rope_config::{HeadLayout, NormScope, RopeStyle};
use candle_core::{DType, Layout, Result, Shape, Tensor};

/// The name errors and Candle's op graph use.
pub(crate) const ROPE_OP: &str = "candle_rmsnorm::rms_norm_rope";

/// One call's parameters without its operands: what the kernels' flags, eps and output
/// geometry follow. The device-resident ROCm API builds it from device tensors' shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RopeParams {
    pub eps: f64,
    pub eps_mode: EpsMode,
    pub weight_mode: WeightMode,
    pub rounding: Rounding,
    pub heads: usize,
    pub head_dim: usize,
    pub scope: NormScope,
    pub style: RopeStyle,
    pub layout: HeadLayout,
    /// 1 (q) or 2 (q and k).
    pub tensors: usize,
}

/// One call's parameters and side operands (the parameters reached through `Deref`).
#[derive(Debug, Clone)]
pub(crate) struct RopeOp {
    pub params: RopeParams,
    pub backend: Backend,
    /// q's and k's weights: contiguous, `[heads * head_dim]` ([`NormScope::Full`]) or
    /// `[head_dim]` ([`NormScope::PerHead`]), of the compute dtype (f32; f64 for f64 inputs),
    /// or of the input dtype where [`RopeParams::weights_in_input`] holds.
    pub weights: [Option<Tensor>; 2],
    /// `[>= L, head_dim / 2]`, contiguous, f32 (f64 for f64 inputs), or of the input dtype
    /// where [`RopeParams::table_dtype`] says so; row `l` rotates position `l`.
    pub cos: Tensor,
    pub sin: Tensor,
}

#[cfg(any(feature = "cuda", feature = "rocm"))]
impl RopeOp {
    /// Whether the weights are of the input dtype `x` (see [`RopeParams::weights_in_input`]).
    pub fn weights_in_input(&self, x: DType) -> bool {
        let dts = self
            .weights
            .each_ref()
            .map(|w| w.as_ref().map(Tensor::dtype));
        self.params.weights_in_input(x, &dts[..self.tensors])
    }

    /// Whether the tables are of the input dtype `x` (see [`RopeParams::table_dtype`]).
    pub fn tables_in_input(&self, x: DType) -> bool {
        self.cos.dtype() == x && compute_dtype(x) != x
    }
}

impl std::ops::Deref for RopeOp {
    type Target = RopeParams;

    fn deref(&self) -> &RopeParams {
        &self.params
    }
}

impl RopeParams {
    /// The elements one norm covers.
    pub fn norm_len(&self) -> usize {
        match self.scope {
            NormScope::Full => self.heads * self.head_dim,
            NormScope::PerHead => self.head_dim,
        }
    }

    /// The eps argument the kernels take (see `op::NormOp::eps_arg`): `eps`, or with
    /// [`EpsMode::ClampNorm`] `eps^2 / n` for norms of `n` elements.
    pub fn eps_arg(&self) -> f64 {
        match self.eps_mode {
            EpsMode::AddToMean => self.eps,
            EpsMode::ClampNorm => self.eps * self.eps / self.norm_len() as f64,
        }
    }

    /// The output shape for inputs of `batch` x `seq` rows.
    pub fn out_shape(&self, batch: usize, seq: usize) -> Shape {
        let (h, d) = (self.heads, self.head_dim);
        let mut dims = match self.layout {
            HeadLayout::Bhld => vec![batch, h, seq, d],
            HeadLayout::Blhd => vec![batch, seq, h, d],
        };
        if self.tensors == 2 {
            dims.insert(0, 2);
        }
        Shape::from(dims)
    }

    /// Whether the weights reach the GPU kernels in the input dtype `x` (the `_wt` kernels: a
    /// packed multiply a pair of values) rather than the compute dtype: bf16 or f16 input,
    /// [`Rounding::BeforeWeight`], [`WeightMode::Scale`], and a weight of dtype `x` for each
    /// input (`weights`: their dtypes, one per input). The rounded norm times such a weight is
    /// exact in f32, so the one rounding of either gives the same bits.
    pub fn weights_in_input(&self, x: DType, weights: &[Option<DType>]) -> bool {
        matches!(x, DType::BF16 | DType::F16)
            && self.rounding == Rounding::BeforeWeight
            && self.weight_mode == WeightMode::Scale
            && weights.len() == self.tensors
            && weights.iter().all(|w| *w == Some(x))
    }

    /// The dtype the weights reach the kernels in, given q's and k's weights' dtypes (`None`:
    /// no weight; k's ignored for q alone): `x` where [`Self::weights_in_input`] holds, else
    /// the compute dtype.
    pub fn weight_dtype(&self, x: DType, weights: &[Option<DType>; 2]) -> DType {
        if self.weights_in_input(x, &weights[..self.tensors]) {
            x
        } else {
            compute_dtype(x)
        }
    }

    /// The dtype the cos/sin tables reach the backend in, given theirs: the input dtype `x`
    /// where the backend's `kernels` (CUDA, ROCm) read it, `x` is bf16 or f16 and both tables
    /// are of it (the kernels widen each angle to f32, exactly: the same values, half the bytes
    /// and no conversion a call); else the compute dtype, to which the API converts them.
    pub fn table_dtype(&self, x: DType, tables: [DType; 2], kernels: bool) -> DType {
        if kernels && matches!(x, DType::BF16 | DType::F16) && tables == [x, x] {
            x
        } else {
            compute_dtype(x)
        }
    }

    /// Which two elements of a head (offsets from its start) pair `i` rotates, for
    /// `i < head_dim / 2`.
    #[inline(always)]
    pub fn pair(&self, i: usize) -> (usize, usize) {
        match self.style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::HalfSplit => (i, i + self.head_dim / 2),
        }
    }
}

/// Where an input `[B, L, heads * head_dim]` of a storage of `len` elements lies: its start
/// offset, batch and position strides, and the end of the span its rows cover (elements). Its last dim must be contiguous (the
/// public API copies it otherwise) and every element inside the storage.
pub(crate) fn input_rows(
    arg: &str,
    l: &Layout,
    len: usize,
) -> Result<(usize, usize, usize, usize)> {
    let (d, st) = (l.dims(), l.stride());
    let off = l.start_offset();
    let end = off + (d[0] - 1) * st[0] + (d[1] - 1) * st[1] + d[2];
    if d[2] > 1 && st[2] != 1 || end > len {
        return Err(op_error(
            ROPE_OP,
            arg,
            "rows with a contiguous last dim inside its storage",
            format!("layout {l:?} over {len} elements"),
        ));
    }
    Ok((off, st[0], st[1], end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_in_input_rule() {
        let p = RopeParams {
            eps: 1e-6,
            eps_mode: EpsMode::AddToMean,
            weight_mode: WeightMode::Scale,
            rounding: Rounding::BeforeWeight,
            heads: 2,
            head_dim: 16,
            scope: NormScope::Full,
            style: RopeStyle::Interleaved,
            layout: HeadLayout::Bhld,
            tensors: 2,
        };
        let (b, f) = (Some(DType::BF16), Some(DType::F32));
        assert!(p.weights_in_input(DType::BF16, &[b, b]));
        assert!(p.weights_in_input(DType::F16, &[Some(DType::F16); 2]));
        // Another weight dtype, a missing weight, a wrong count, another input dtype.
        assert!(!p.weights_in_input(DType::BF16, &[b, f]));
        assert!(!p.weights_in_input(DType::BF16, &[b, None]));
        assert!(!p.weights_in_input(DType::BF16, &[b]));
        assert!(!p.weights_in_input(DType::F32, &[f, f]));
        // Rounding at the end, or 1 + w: the product is not exact in the input dtype.
        let at_end = RopeParams {
            rounding: Rounding::AtEnd,
            ..p
        };
        assert!(!at_end.weights_in_input(DType::BF16, &[b, b]));
        let offset = RopeParams {
            weight_mode: WeightMode::OffsetOne,
            ..p
        };
        assert!(!offset.weights_in_input(DType::BF16, &[b, b]));
        // The dtype the kernels take: q alone ignores k's slot.
        assert_eq!(p.weight_dtype(DType::BF16, &[b, b]), DType::BF16);
        assert_eq!(p.weight_dtype(DType::BF16, &[b, f]), DType::F32);
        let q_only = RopeParams { tensors: 1, ..p };
        assert_eq!(q_only.weight_dtype(DType::BF16, &[b, None]), DType::BF16);
        assert_eq!(
            at_end.weight_dtype(DType::F16, &[Some(DType::F16); 2]),
            DType::F32
        );
        assert_eq!(p.weight_dtype(DType::F64, &[None, None]), DType::F64);
    }

    #[test]
    fn table_dtype_rule() {
        let p = RopeParams {
            eps: 1e-6,
            eps_mode: EpsMode::AddToMean,
            weight_mode: WeightMode::Scale,
            rounding: Rounding::AtEnd,
            heads: 2,
            head_dim: 16,
            scope: NormScope::Full,
            style: RopeStyle::Interleaved,
            layout: HeadLayout::Bhld,
            tensors: 1,
        };
        let (b, h, f) = (DType::BF16, DType::F16, DType::F32);
        // The kernels read 16-bit tables of the input's dtype whatever the options.
        assert_eq!(p.table_dtype(b, [b, b], true), b);
        assert_eq!(p.table_dtype(h, [h, h], true), h);
        // Not for the host backends, mixed or other dtypes, or wider inputs.
        assert_eq!(p.table_dtype(b, [b, b], false), f);
        assert_eq!(p.table_dtype(b, [b, f], true), f);
        assert_eq!(p.table_dtype(b, [h, h], true), f);
        assert_eq!(p.table_dtype(f, [f, f], true), f);
        assert_eq!(p.table_dtype(DType::F64, [b, b], true), DType::F64);
    }
}
