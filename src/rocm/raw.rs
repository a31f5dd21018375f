//! Raw-pointer launchers for code that manages its own device memory (a ROCm-enabled Candle
//! backend, any HIP program): the only `unsafe` entry points of the public ROCm API.

use super::device::RocmDevice;
use super::sys::HipStream;
use crate::config::{Backend, NormConfig};
use crate::error::{check_dims, check_eps, check_float, op_error};
use crate::gpu::abi::kernel_weight_dtype;
use crate::gpu::call::{Call, Operands};
use crate::op::NormOp;
use candle_core::{DType, Result};
use std::ffi::c_void;

/// Raw operands for [`rms_norm_raw`] / [`fused_add_rms_norm_raw`]: device addresses and row
/// strides in elements. Residual and sum pointers are only read by the fused op; a null weight
/// means no weight.
#[derive(Debug, Clone, Copy)]
pub struct RawNorm {
    /// Element type of `x`, `residual`, `out` and `sum_out`.
    pub dtype: DType,
    /// Element type of `weight`: `dtype`, or f32 for f16/bf16 input (see
    /// [`kernel_weight_dtype`](super::kernel_weight_dtype)). `None` when there is no weight.
    pub weight_dtype: Option<DType>,
    pub rows: usize,
    pub hidden: usize,
    /// `[rows, hidden]`, row `r` at `x + r * x_stride` elements.
    pub x: *const c_void,
    pub x_stride: usize,
    /// Fused only: `[rows, hidden]`.
    pub residual: *const c_void,
    pub res_stride: usize,
    /// `[rows, hidden]`, written.
    pub out: *mut c_void,
    pub out_stride: usize,
    /// Fused only: `[rows, hidden]`, written with `x + residual` rounded to `dtype`.
    pub sum_out: *mut c_void,
    pub sum_stride: usize,
    /// `[hidden]` or null.
    pub weight: *const c_void,
}

impl Default for RawNorm {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            weight_dtype: None,
            rows: 0,
            hidden: 0,
            x: std::ptr::null(),
            x_stride: 0,
            residual: std::ptr::null(),
            res_stride: 0,
            out: std::ptr::null_mut(),
            out_stride: 0,
            sum_out: std::ptr::null_mut(),
            sum_stride: 0,
            weight: std::ptr::null(),
        }
    }
}

/// Checks the raw operands and returns the call they describe.
fn raw_call(op: &str, a: &RawNorm, fused: bool, cfg: &NormConfig) -> Result<Call> {
    check_float(op, "dtype", a.dtype)?;
    check_eps(op, cfg.eps())?;
    // Raw operands are rows: `[rows, hidden]` normalised over `hidden` (dim 1).
    check_dims(
        op,
        &[a.rows, a.hidden],
        cfg.dim().or(Some(1)),
        cfg.variance_size(),
    )?;
    if cfg.dim() == Some(0) {
        return Err(op_error(
            op,
            "dim",
            "unset or 1: raw operands are rows of [rows, hidden], normalised over hidden",
            0,
        ));
    }
    let w = match (a.weight.is_null(), a.weight_dtype) {
        (true, _) => a.dtype,
        (false, Some(w)) if kernel_weight_dtype(a.dtype, w) == w => w,
        (false, w) => {
            return Err(op_error(
                op,
                "weight_dtype",
                format!(
                    "{:?} for {:?} input (convert the weight first)",
                    kernel_weight_dtype(a.dtype, DType::F32),
                    a.dtype
                ),
                format!("{w:?}"),
            ))
        }
    };
    if a.rows > 0 && a.hidden > 0 {
        let rows_ok = |s: usize| a.rows == 1 || s >= a.hidden;
        let mut bad = Vec::new();
        if a.x.is_null() || a.out.is_null() {
            bad.push("x and out must not be null");
        }
        if fused && (a.residual.is_null() || a.sum_out.is_null()) {
            bad.push("residual and sum_out must not be null for the fused op");
        }
        if !rows_ok(a.x_stride) || !rows_ok(a.out_stride) {
            bad.push("x_stride and out_stride must be >= hidden");
        }
        if fused && (!rows_ok(a.res_stride) || !rows_ok(a.sum_stride)) {
            bad.push("res_stride and sum_stride must be >= hidden");
        }
        if !bad.is_empty() {
            return Err(op_error(
                op,
                "raw operands",
                bad.join("; "),
                format!("{a:?}"),
            ));
        }
    }
    let mut o = Operands {
        out: a.out as u64,
        out_stride: a.out_stride as u64,
        x: a.x as u64,
        x_stride: a.x_stride as u64,
        weight: a.weight as u64,
        ..Default::default()
    };
    if fused {
        o.sum_out = a.sum_out as u64;
        o.sum_stride = a.sum_stride as u64;
        o.residual = a.residual as u64;
        o.res_stride = a.res_stride as u64;
    }
    Ok(Call {
        op: NormOp::new(cfg, Backend::Rocm, fused),
        x_dtype: a.dtype,
        w_dtype: w,
        rows: a.rows as u64,
        hidden: a.hidden as u64,
        operands: o,
        channels: None,
        quant: None,
    })
}

/// `out = rms_norm(x) * weight` on raw device memory, queued on `stream`.
///
/// # Safety
/// `x`, `out` and (when not null) `weight` must be device addresses on `device`'s GPU, valid
/// for the rows, strides and hidden size in `args` until the kernel has finished; `out` rows
/// must not overlap `x` rows or each other; `stream` must be a live stream of that device or
/// null (the default stream).
///
/// # Errors
/// Invalid arguments (dtypes, strides, null pointers, eps) or a HIP launch error.
pub unsafe fn rms_norm_raw(
    device: &RocmDevice,
    stream: HipStream,
    args: &RawNorm,
    cfg: &NormConfig,
) -> Result<()> {
    let call = raw_call("candle_rmsnorm::rocm::rms_norm_raw", args, false, cfg)?;
    // SAFETY: the caller's contract above is the launcher's.
    unsafe { device.launch(stream, &call) }
}

/// `sum = x + residual`, `out = rms_norm(sum) * weight` on raw device memory, queued on
/// `stream`.
///
/// # Safety
/// As [`rms_norm_raw`], and `residual` / `sum_out` likewise valid; `sum_out` rows must not
/// overlap any other operand's rows.
///
/// # Errors
/// As [`rms_norm_raw`].
pub unsafe fn fused_add_rms_norm_raw(
    device: &RocmDevice,
    stream: HipStream,
    args: &RawNorm,
    cfg: &NormConfig,
) -> Result<()> {
    let call = raw_call(
        "candle_rmsnorm::rocm::fused_add_rms_norm_raw",
        args,
        true,
        cfg,
    )?;
    // SAFETY: the caller's contract above is the launcher's.
    unsafe { device.launch(stream, &call) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_checks() {
        let cfg = NormConfig::new(1e-6);
        let w = |a: &RawNorm, fused| raw_call("op", a, fused, &cfg).map(|c| c.w_dtype);
        let mut a = RawNorm {
            dtype: DType::BF16,
            rows: 2,
            hidden: 8,
            x_stride: 8,
            out_stride: 8,
            ..Default::default()
        };
        let e = w(&a, false).unwrap_err().to_string();
        assert!(e.contains("must not be null"), "{e}");
        a.x = 16 as *const c_void;
        a.out = 32 as *mut c_void;
        assert_eq!(w(&a, false).unwrap(), DType::BF16);
        a.weight = 64 as *const c_void;
        a.weight_dtype = Some(DType::F16);
        let e = w(&a, false).unwrap_err().to_string();
        assert!(e.contains("weight_dtype") && e.contains("F32"), "{e}");
        a.weight_dtype = Some(DType::F32);
        assert_eq!(w(&a, false).unwrap(), DType::F32);
        let c = raw_call("op", &a, false, &cfg).unwrap();
        assert_eq!(
            (c.operands.x, c.operands.out, c.operands.weight),
            (16, 32, 64)
        );
        a.x_stride = 4;
        assert!(w(&a, false).is_err());
        a.x_stride = 8;
        assert!(w(&a, true).is_err());
        assert!(raw_call("op", &a, false, &NormConfig::new(f64::NAN)).is_err());
        a.dtype = DType::U32;
        assert!(w(&a, false).is_err());
    }
}
