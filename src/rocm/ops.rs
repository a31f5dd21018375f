//! The ops on device tensors: safe, typed, queued on a stream the caller passes.

use super::device::RocmDevice;
use super::memory::RocmTensor;
use super::stream::RocmStream;
use crate::config::{Backend, NormConfig};
use crate::error::{check_dims, check_eps, check_float, op_error};
use crate::gpu::abi::kernel_weight_dtype;
use crate::gpu::call::{Call, Channels, Operands};
use crate::op::NormOp;
use candle_core::Result;

/// Checks device tensors and returns the call over them (with the output addresses unset; the
/// outputs are contiguous in x's shape). A norm over another dimension than the last
/// (`NormConfig::with_dim`) is a channel call (`hip/norm_channel.h`).
pub(super) fn device_call(
    op: &str,
    x: &RocmTensor,
    residual: Option<&RocmTensor>,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    stream: &RocmStream,
) -> Result<Call> {
    let dims = x.shape().dims();
    if dims.is_empty() {
        return Err(op_error(op, "xs", "of rank >= 1", "a rank-0 tensor"));
    }
    let (d, _) = check_dims(op, dims, cfg.dim(), cfg.variance_size())?;
    let hidden = dims[d];
    check_float(op, "xs", x.dtype())?;
    check_eps(op, cfg.eps())?;
    let ordinal = x.device().ordinal();
    stream.check_device(op, ordinal)?;
    let describe = |t: &RocmTensor| {
        format!(
            "{:?} {:?} on device {}",
            t.dtype(),
            t.shape().dims(),
            t.device().ordinal()
        )
    };
    if let Some(r) = residual {
        if r.shape() != x.shape() || r.dtype() != x.dtype() || r.device() != x.device() {
            return Err(op_error(op, "residual", describe(x), describe(r)));
        }
    }
    let w_dtype = match weight {
        None => x.dtype(),
        Some(w) => {
            let want = kernel_weight_dtype(x.dtype(), w.dtype());
            if w.shape().dims() != [hidden] || w.dtype() != want || w.device() != x.device() {
                return Err(op_error(
                    op,
                    "weight",
                    format!(
                        "{want:?} [{hidden}] on device {ordinal} (convert other weight dtypes first)"
                    ),
                    describe(w),
                ));
            }
            want
        }
    };
    // Contiguous: rows of `hidden`, or outer x hidden x inner with the dim in the middle.
    let outer: usize = dims[..d].iter().product();
    let inner: usize = dims[d + 1..].iter().product();
    let (h, stride) = (hidden as u64, inner.max(1) as u64);
    let channels = (d + 1 < dims.len()).then(|| {
        let o = h * stride;
        Channels {
            inner: stride,
            x_outer: o,
            res_outer: o,
            out_outer: o,
            sum_outer: o,
            x_inner: 1,
            res_inner: 1,
        }
    });
    let (rows, step) = match channels {
        Some(_) => (outer as u64, stride),
        None => ((x.elem_count() / hidden.max(1)) as u64, h),
    };
    let fused = residual.is_some();
    Ok(Call {
        op: NormOp::new(cfg, Backend::Rocm, fused),
        x_dtype: x.dtype(),
        w_dtype,
        rows,
        hidden: h,
        operands: Operands {
            out_stride: step,
            sum_stride: if fused { step } else { 0 },
            x: x.addr(),
            x_stride: step,
            residual: residual.map_or(0, RocmTensor::addr),
            res_stride: if fused { step } else { 0 },
            weight: weight.map_or(0, RocmTensor::addr),
            ..Default::default()
        },
        channels,
        quant: None,
    })
}

/// The in-place ops normalise over the last dimension only, as the crate's in-place ops do.
fn last_dim_only(op: &str, call: &Call, cfg: &NormConfig) -> Result<()> {
    match (call.channels, cfg.dim()) {
        (Some(_), Some(d)) => Err(op_error(
            op,
            "dim",
            "the last dim: the in-place ops normalise over the last dimension only",
            d.to_string(),
        )),
        _ => Ok(()),
    }
}

/// A new device tensor of `x`'s dtype and shape on `x`'s device.
pub(super) fn like(x: &RocmTensor) -> Result<RocmTensor> {
    RocmTensor::alloc(x.device(), x.dtype(), x.shape().clone())
}

/// Queues `call`, built by `device_call` and given its outputs, on `stream` of `device`.
pub(super) fn run(device: &RocmDevice, stream: &RocmStream, call: &Call) -> Result<()> {
    // SAFETY: every address in `call` is a live allocation of `device` (`device_call` checked
    // each operand's device, shape and dtype); each output is a fresh tensor of x's shape (the
    // quantised values: of its element count in bytes, the scales one f32 a row) or, in place,
    // x itself (out) or the residual itself (sum), which the kernels read element by
    // element before writing (hip/norm_regs.h, hip/norm_loop.h); the stream belongs to the
    // device and outlives the call; device tensors are freed only after hipFree's implicit
    // device synchronisation.
    unsafe { device.launch(stream.raw(), call) }
}

/// `rms_norm(x) * weight` over the last dimension of a device tensor, queued on `stream`; the
/// output is a new device tensor of `x`'s shape and dtype.
///
/// The weight must have the dtype of `x`, or f32 for f16/bf16 input (no conversion happens on
/// the device).
///
/// # Errors
/// Mismatched shapes/dtypes/devices, a bad eps, or a HIP error.
pub fn rms_norm(
    x: &RocmTensor,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    stream: &RocmStream,
) -> Result<RocmTensor> {
    let mut call = device_call(
        "candle_rmsnorm::rocm::rms_norm",
        x,
        None,
        weight,
        cfg,
        stream,
    )?;
    let out = like(x)?;
    call.operands.out = out.addr();
    run(x.device(), stream, &call)?;
    Ok(out)
}

/// `sum = x + residual`, then `rms_norm(sum) * weight`, on device tensors, queued on `stream`.
/// Returns `(normed, sum)`, both new device tensors of `x`'s shape and dtype.
///
/// # Errors
/// As [`rms_norm`].
pub fn fused_add_rms_norm(
    x: &RocmTensor,
    residual: &RocmTensor,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    stream: &RocmStream,
) -> Result<(RocmTensor, RocmTensor)> {
    let op = "candle_rmsnorm::rocm::fused_add_rms_norm";
    let mut call = device_call(op, x, Some(residual), weight, cfg, stream)?;
    let (out, sum) = (like(x)?, like(x)?);
    call.operands.out = out.addr();
    call.operands.sum_out = sum.addr();
    run(x.device(), stream, &call)?;
    Ok((out, sum))
}

/// [`rms_norm`] written into `x` itself, queued on `stream`: no allocation.
///
/// # Errors
/// As [`rms_norm`].
pub fn rms_norm_inplace(
    x: &mut RocmTensor,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    stream: &RocmStream,
) -> Result<()> {
    let op = "candle_rmsnorm::rocm::rms_norm_inplace";
    let mut call = device_call(op, x, None, weight, cfg, stream)?;
    last_dim_only(op, &call, cfg)?;
    call.operands.out = x.addr();
    run(x.device(), stream, &call)
}

/// [`fused_add_rms_norm`] in place (flashinfer's convention): `residual` becomes
/// `x + residual` and `x` the normed output, bit for bit the out-of-place results, with no
/// allocation.
///
/// # Errors
/// As [`fused_add_rms_norm`].
pub fn fused_add_rms_norm_inplace(
    x: &mut RocmTensor,
    residual: &mut RocmTensor,
    weight: Option<&RocmTensor>,
    cfg: &NormConfig,
    stream: &RocmStream,
) -> Result<()> {
    let op = "candle_rmsnorm::rocm::fused_add_rms_norm_inplace";
    let mut call = device_call(op, x, Some(residual), weight, cfg, stream)?;
    last_dim_only(op, &call, cfg)?;
    call.operands.out = x.addr();
    call.operands.sum_out = residual.addr();
    run(x.device(), stream, &call)
}
