//! The quantised ops on device tensors (`{op}_{dtype}[_wf32][_rows]_quant`, `hip/quant.h`):
//! the operands checked as the device-resident norms check them (`ops::device_call`) and the
//! quantisation as the public API checks it (`QuantSpec::checked`), one call of the kernels.
//! AMD has no staged kernels: the plan's device shape offers no staging memory
//! (`RocmDevice::shape`), so `geometry::plan` picks `_quant` or `_rows_quant`.

use super::memory::RocmTensor;
use super::ops::{device_call, like, run};
use super::stream::RocmStream;
use crate::config::NormConfig;
use crate::gpu::call::QuantCall;
use crate::quant::{scale_dims, QuantConfig, QuantDType, QuantSpec};
use candle_core::{DType, Result};

/// A quantised norm's result on the device: `y ≈ values * scales`, as
/// [`crate::Quantized`] on the host.
#[derive(Debug)]
pub struct RocmQuantized {
    /// The values, of the shape of `x`, in [`QuantDType::storage_dtype`] (`F8E4M3`, or `U8`
    /// holding the i8 bytes).
    pub values: RocmTensor,
    /// One f32 scale per row, of the shape of `x` with the last dimension 1.
    pub scales: RocmTensor,
    /// The format of `values`.
    pub dtype: QuantDType,
}

fn quantised(
    op: &str,
    x: &RocmTensor,
    residual: Option<&RocmTensor>,
    weight: Option<&RocmTensor>,
    (cfg, quant): (&NormConfig, &QuantConfig),
    stream: &RocmStream,
) -> Result<(RocmQuantized, Option<RocmTensor>)> {
    let dims = x.shape().dims();
    let mut call = device_call(op, x, residual, weight, cfg, stream)?;
    let spec = QuantSpec::checked(op, dims, cfg, quant)?;
    let dev = x.device();
    let values = RocmTensor::alloc(dev, spec.dtype.storage_dtype(), x.shape().clone())?;
    let scales = RocmTensor::alloc(dev, DType::F32, scale_dims(dims))?;
    let sum = residual.map(|_| like(x)).transpose()?;
    // One byte a value: the values' row stride in bytes is the row length `device_call` set.
    call.operands.out = values.addr();
    call.operands.sum_out = sum.as_ref().map_or(0, RocmTensor::addr);
    call.quant = Some(QuantCall {
        scales: scales.addr(),
        spec,
    });
    if x.elem_count() == 0 {
        // Rows of no elements (no launch): the scale of an all-zero row, as the public API.
        scales.upload(&vec![spec.row_scale(0.0); scales.elem_count()], 0)?;
    }
    run(dev, stream, &call)?;
    let q = RocmQuantized {
        values,
        scales,
        dtype: spec.dtype,
    };
    Ok((q, sum))
}

/// [`crate::rms_norm_quant`] on a device tensor, queued on `stream`: RMSNorm over the last
/// dimension written as fp8 e4m3 or i8 with one f32 scale per row, into new device tensors.
/// The weight must have the dtype of `x`, or f32 for f16/bf16 input (no conversion happens on
/// the device).
///
/// # Errors
/// As [`rocm::rms_norm`](super::rms_norm), and as [`crate::rms_norm_quant`] for the options: a
/// `dim` other than the last, a variance size, a static scale that is not finite and > 0.
pub fn rms_norm_quant(
    x: &RocmTensor,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
    stream: &RocmStream,
) -> Result<RocmQuantized> {
    let op = "candle_rmsnorm::rocm::rms_norm_quant";
    let (q, _) = quantised(op, x, None, weight, (cfg, quant), stream)?;
    Ok(q)
}

/// [`crate::fused_add_rms_norm_quant`] on device tensors, queued on `stream`: returns
/// `(quantised, sum)`, `sum = x + residual` rounded to the dtype of `x`.
///
/// # Errors
/// As [`rms_norm_quant`], and a residual whose shape, dtype or device differs from `x`.
pub fn fused_add_rms_norm_quant(
    x: &RocmTensor,
    residual: &RocmTensor,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
    stream: &RocmStream,
) -> Result<(RocmQuantized, RocmTensor)> {
    let op = "candle_rmsnorm::rocm::fused_add_rms_norm_quant";
    let (q, sum) = quantised(op, x, Some(residual), weight, (cfg, quant), stream)?;
    match sum {
        Some(sum) => Ok((q, sum)),
        None => candle_core::bail!("{op}: internal error: the fused op returns its sum"),
    }
}
