//! AMD GPUs through HIP (feature `rocm`).
//!
//! Three layers: `sys` loads `libamdhip64` at run time and turns integer `hipError_t` codes into
//! errors carrying `hipGetErrorName`; `device` holds devices (with the crate's code object
//! loaded once per device), streams, events and device tensors; this module has the ops.
//! All `unsafe` of the crate's ROCm path lives in those files. The same binary starts on machines
//! with and without ROCm: nothing is linked at build time.
//!
//! # Device-resident API
//! [`RocmTensor`] is a contiguous device buffer with a dtype and a shape;
//! [`RocmTensor::from_tensor`] uploads a [`candle_core::Tensor`], [`RocmTensor::to_tensor`]
//! downloads one. [`rms_norm`] and [`fused_add_rms_norm`] run on device tensors with no host
//! staging, on a stream you pass. [`rms_norm_raw`] / [`fused_add_rms_norm_raw`] take raw
//! device pointers and a `hipStream_t` for code that manages its own memory.
//!
//! ```no_run
//! use candle_rmsnorm::rocm::{self, RocmDevice, RocmTensor};
//! use candle_rmsnorm::NormConfig;
//! # fn main() -> candle_core::Result<()> {
//! let dev = RocmDevice::new(0)?;
//! let stream = dev.stream()?;
//! let x = candle_core::Tensor::randn(0f32, 1., (4096, 5120), &candle_core::Device::Cpu)?;
//! let w = candle_core::Tensor::ones(5120, candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let (xd, wd) = (RocmTensor::from_tensor(&dev, &x)?, RocmTensor::from_tensor(&dev, &w)?);
//! let yd = rocm::rms_norm(&xd, Some(&wd), &NormConfig::new(1e-6), stream)?;
//! let y = yd.to_tensor()?; // waits for the device, copies to the host
//! # Ok(()) }
//! ```
//!
//! # Host tensors
//! The Candle ops run host tensors through these kernels only when the backend is
//! [`Backend::Rocm`](crate::Backend::Rocm) (`CANDLE_RMSNORM_BACKEND=rocm` or
//! [`NormConfig::with_backend`]): each call uploads the rows it reads (and the weight), runs the
//! kernel, waits, and downloads the result, so it moves about twice the tensor's bytes over PCIe
//! on top of the kernel's own traffic. `Backend::Auto` keeps host tensors on the CPU path.
//! When ROCm cannot be used (no library, no device, no code object for the device), an
//! explicit `Rocm` request returns the error and logs it once through `log`.
//!
//! # From a ROCm-enabled Candle
//! candle-core 0.11 has no ROCm device. The open upstream pull request (candle #3801) adds
//! `CustomOp::rocm_fwd(&RocmStorage, &Layout)`, a device stream, and loading of precompiled
//! code objects from bytes. A backend built on it would call the raw launchers on its own
//! stream, with the bytes of [`code_objects()`] (or let this crate load them, as below):
//!
//! ```ignore
//! impl candle::CustomOp2 for RmsNormOp {
//!     fn rocm_fwd(&self, x: &RocmStorage, xl: &Layout, w: &RocmStorage, wl: &Layout)
//!         -> Result<(RocmStorage, Shape)> {
//!         let dev = x.device();                              // candle's RocmDevice
//!         let ours = candle_rmsnorm::rocm::RocmDevice::new(dev.ordinal())?;
//!         let hidden = xl.dims()[xl.dims().len() - 1];
//!         let rows = xl.shape().elem_count() / hidden;
//!         let out = dev.alloc::<bf16>(rows * hidden)?;        // candle-owned output
//!         let args = candle_rmsnorm::rocm::RawNorm {
//!             dtype: DType::BF16, weight_dtype: Some(DType::BF16), rows, hidden,
//!             x: x.device_ptr_at(xl.start_offset()), x_stride: hidden,
//!             out: out.device_ptr(), out_stride: hidden,
//!             weight: w.device_ptr_at(wl.start_offset()),
//!             ..Default::default()
//!         };
//!         // SAFETY: pointers come from live candle buffers of this device, sized as stated.
//!         unsafe {
//!             candle_rmsnorm::rocm::rms_norm_raw(&ours, dev.stream().raw(), &args,
//!                                                &NormConfig::new(self.eps))?
//!         };
//!         Ok((RocmStorage::wrap(out, dev.clone()), xl.shape().clone()))
//!     }
//! }
//! ```
//! The kernel is queued on candle's stream, so it orders with candle's other work and no
//! synchronisation is added.

mod code_objects;
mod device;
mod launch;
mod sys;

pub use code_objects::{
    base_arch, built_archs, code_objects, compiler, select, CodeObject, KernelResources,
};
pub use device::{device_count, runtime_info, RocmDevice, RocmEvent, RocmStream, RocmTensor};
pub use sys::HipStream;

use crate::abi::{self, NORM_OFFSET_ONE, NORM_ROUND_BEFORE_WEIGHT};
use crate::config::{NormConfig, Rounding, WeightMode};
use crate::layout::RowLayout;
use crate::ops::{op_error, NormOp};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, WithDType};
use std::ffi::c_void;

fn flags(mode: WeightMode, rounding: Rounding) -> u32 {
    let mut f = 0;
    if mode == WeightMode::OffsetOne {
        f |= NORM_OFFSET_ONE;
    }
    if rounding == Rounding::BeforeWeight {
        f |= NORM_ROUND_BEFORE_WEIGHT;
    }
    f
}

fn is_float(dt: DType) -> bool {
    abi::X_DTYPES.contains(&dt)
}

/// Raw operands for [`rms_norm_raw`] / [`fused_add_rms_norm_raw`]: device addresses and row
/// strides in elements. Residual and sum pointers are only read by the fused op; a null weight
/// means no weight.
#[derive(Debug, Clone, Copy)]
pub struct RawNorm {
    /// Element type of `x`, `residual`, `out` and `sum_out`.
    pub dtype: DType,
    /// Element type of `weight`: `dtype`, or f32 for f16/bf16 input (see
    /// [`abi::kernel_weight_dtype`]). `None` when there is no weight.
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

fn check_raw(op: &str, a: &RawNorm, fused: bool, cfg: &NormConfig) -> Result<DType> {
    if !is_float(a.dtype) {
        return Err(op_error(
            op,
            "dtype",
            "f32, f16, bf16 or f64",
            format!("{:?}", a.dtype),
        ));
    }
    let eps = cfg.eps();
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(op_error(op, "eps", "finite and >= 0", eps));
    }
    let w = match (a.weight.is_null(), a.weight_dtype) {
        (true, _) => a.dtype,
        (false, Some(w)) if abi::kernel_weight_dtype(a.dtype, w) == w => w,
        (false, w) => {
            return Err(op_error(
                op,
                "weight_dtype",
                format!(
                    "{:?} for {:?} input (convert the weight first)",
                    abi::kernel_weight_dtype(a.dtype, DType::F32),
                    a.dtype
                ),
                format!("{w:?}"),
            ))
        }
    };
    if a.rows > 0 && a.hidden > 0 {
        let rows_ok = |p: bool, s: usize| p || a.rows == 1 || s >= a.hidden;
        let mut bad = Vec::new();
        if a.x.is_null() || a.out.is_null() {
            bad.push("x and out must not be null");
        }
        if fused && (a.residual.is_null() || a.sum_out.is_null()) {
            bad.push("residual and sum_out must not be null for the fused op");
        }
        if !rows_ok(false, a.x_stride) || !rows_ok(false, a.out_stride) {
            bad.push("x_stride and out_stride must be >= hidden");
        }
        if fused && (!rows_ok(false, a.res_stride) || !rows_ok(false, a.sum_stride)) {
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
    Ok(w)
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
    // SAFETY: the caller's contract above is `launch_raw`'s.
    unsafe {
        launch_raw(
            "candle_rmsnorm::rocm::rms_norm_raw",
            device,
            stream,
            args,
            cfg,
            false,
        )
    }
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
    // SAFETY: the caller's contract above is `launch_raw`'s.
    unsafe {
        launch_raw(
            "candle_rmsnorm::rocm::fused_add_rms_norm_raw",
            device,
            stream,
            args,
            cfg,
            true,
        )
    }
}

/// The body of both raw launchers; the residual and sum operands are used only when `fused`.
///
/// # Safety
/// As [`rms_norm_raw`] (and, fused, [`fused_add_rms_norm_raw`]).
unsafe fn launch_raw(
    op: &str,
    device: &RocmDevice,
    stream: HipStream,
    args: &RawNorm,
    cfg: &NormConfig,
    fused: bool,
) -> Result<()> {
    let w = check_raw(op, args, fused, cfg)?;
    let mut o = launch::Operands {
        out: args.out as u64,
        out_stride: args.out_stride as u64,
        x: args.x as u64,
        x_stride: args.x_stride as u64,
        weight: args.weight as u64,
        ..Default::default()
    };
    if fused {
        o.sum_out = args.sum_out as u64;
        o.sum_stride = args.sum_stride as u64;
        o.residual = args.residual as u64;
        o.res_stride = args.res_stride as u64;
    }
    // SAFETY: the caller's contract is the launcher's.
    unsafe {
        device::launch_norm(
            device,
            stream,
            fused,
            args.dtype,
            w,
            args.rows,
            args.hidden,
            cfg.eps(),
            flags(cfg.weight_mode(), cfg.rounding()),
            &o,
        )
    }
}

/// Checks device tensors and returns `(rows, hidden, weight dtype)`.
fn check_device(
    op: &str,
    x: &RocmTensor,
    residual: Option<&RocmTensor>,
    weight: Option<&RocmTensor>,
    stream: &RocmStream,
) -> Result<(usize, usize, DType)> {
    let dims = x.shape().dims();
    let Some(&hidden) = dims.last() else {
        return Err(op_error(op, "xs", "of rank >= 1", "a rank-0 tensor"));
    };
    if !is_float(x.dtype()) {
        return Err(op_error(
            op,
            "xs",
            "of dtype f32, f16, bf16 or f64",
            format!("{:?}", x.dtype()),
        ));
    }
    if stream.device_ordinal() != x.device().ordinal() {
        return Err(op_error(
            op,
            "stream",
            format!("on device {}", x.device().ordinal()),
            format!("device {}", stream.device_ordinal()),
        ));
    }
    if let Some(r) = residual {
        if r.shape() != x.shape() || r.dtype() != x.dtype() || r.device() != x.device() {
            return Err(op_error(
                op,
                "residual",
                format!(
                    "{:?} {:?} on device {}",
                    x.dtype(),
                    dims,
                    x.device().ordinal()
                ),
                format!(
                    "{:?} {:?} on device {}",
                    r.dtype(),
                    r.shape().dims(),
                    r.device().ordinal()
                ),
            ));
        }
    }
    let w = match weight {
        None => x.dtype(),
        Some(w) => {
            let want = abi::kernel_weight_dtype(x.dtype(), w.dtype());
            if w.shape().dims() != [hidden] || w.dtype() != want || w.device() != x.device() {
                return Err(op_error(
                    op,
                    "weight",
                    format!(
                        "{want:?} [{hidden}] on device {} (convert other weight dtypes first)",
                        x.device().ordinal()
                    ),
                    format!(
                        "{:?} {:?} on device {}",
                        w.dtype(),
                        w.shape().dims(),
                        w.device().ordinal()
                    ),
                ));
            }
            want
        }
    };
    Ok((x.elem_count() / hidden.max(1), hidden, w))
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
    let op = "candle_rmsnorm::rocm::rms_norm";
    let (rows, hidden, w) = check_device(op, x, None, weight, stream)?;
    check_eps(op, cfg)?;
    let out = RocmTensor::alloc(x.device(), x.dtype(), x.shape().clone())?;
    let o = launch::Operands {
        out: out.addr(),
        out_stride: hidden as u64,
        x: x.addr(),
        x_stride: hidden as u64,
        weight: weight.map_or(0, RocmTensor::addr),
        ..Default::default()
    };
    // SAFETY: every address is a live allocation of this device sized rows * hidden (weight:
    // hidden) elements, checked above; `out` is fresh, so it overlaps nothing; the stream
    // belongs to the device and outlives the call; the tensors are freed only after hipFree's
    // implicit device synchronisation.
    unsafe {
        device::launch_norm(
            x.device(),
            stream.raw(),
            false,
            x.dtype(),
            w,
            rows,
            hidden,
            cfg.eps(),
            flags(cfg.weight_mode(), cfg.rounding()),
            &o,
        )?
    };
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
    let (rows, hidden, w) = check_device(op, x, Some(residual), weight, stream)?;
    check_eps(op, cfg)?;
    let out = RocmTensor::alloc(x.device(), x.dtype(), x.shape().clone())?;
    let sum = RocmTensor::alloc(x.device(), x.dtype(), x.shape().clone())?;
    let o = launch::Operands {
        out: out.addr(),
        out_stride: hidden as u64,
        sum_out: sum.addr(),
        sum_stride: hidden as u64,
        x: x.addr(),
        x_stride: hidden as u64,
        residual: residual.addr(),
        res_stride: hidden as u64,
        weight: weight.map_or(0, RocmTensor::addr),
    };
    // SAFETY: as in `rms_norm`; `sum` is fresh as well.
    unsafe {
        device::launch_norm(
            x.device(),
            stream.raw(),
            true,
            x.dtype(),
            w,
            rows,
            hidden,
            cfg.eps(),
            flags(cfg.weight_mode(), cfg.rounding()),
            &o,
        )?
    };
    Ok((out, sum))
}

fn check_eps(op: &str, cfg: &NormConfig) -> Result<()> {
    let eps = cfg.eps();
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(op_error(op, "eps", "finite and >= 0", eps))
    }
}

/// The device the host-tensor path uses: HIP device 0 (choose another with
/// `HIP_VISIBLE_DEVICES`).
///
/// # Errors
/// Why ROCm cannot be used here: no runtime library, no device, or no code object for it.
pub fn default_device() -> Result<RocmDevice> {
    RocmDevice::new(0)
}

/// The Candle ops on host tensors with `Backend::Rocm`: upload, launch, wait, download.
pub(crate) fn host_forward(
    op: &NormOp,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let dev = default_device().map_err(|e| {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| log::warn!("candle-rmsnorm: backend rocm is unavailable: {e}"));
        candle_core::Error::Msg(format!("{}: backend rocm is unavailable: {e}", op.name()))
    })?;
    match x.0 {
        CpuStorage::F32(_) => stage::<f32>(op, &dev, x, r, w),
        CpuStorage::F16(_) => stage::<half::f16>(op, &dev, x, r, w),
        CpuStorage::BF16(_) => stage::<half::bf16>(op, &dev, x, r, w),
        CpuStorage::F64(_) => stage::<f64>(op, &dev, x, r, w),
        other => Err(op_error(
            op.name(),
            "xs",
            "of dtype f32, f16, bf16 or f64",
            format!("{:?}", other.dtype()),
        )),
    }
}

/// Uploads the span of rows a layout covers; returns the device copy and its row stride.
fn upload_rows<T: WithDType + Copy>(
    op: &NormOp,
    arg: &str,
    dev: &RocmDevice,
    s: &CpuStorage,
    l: &Layout,
) -> Result<(RocmTensor, RowLayout)> {
    let rl = RowLayout::of(l).ok_or_else(|| {
        op_error(
            op.name(),
            arg,
            "rows with a contiguous last dimension",
            format!("layout {l:?}"),
        )
    })?;
    let data = s.as_slice::<T>()?;
    let span = data.get(rl.offset..rl.end()).ok_or_else(|| {
        op_error(
            op.name(),
            arg,
            format!("a storage of at least {} elements", rl.end()),
            data.len(),
        )
    })?;
    let t = RocmTensor::alloc(dev, T::DTYPE, span.len())?;
    t.upload(span, 0)?;
    Ok((t, rl))
}

/// The weight as f64 (exact for every float dtype).
fn weight_f64(s: &CpuStorage, range: std::ops::Range<usize>) -> Result<Vec<f64>> {
    Ok(match s {
        CpuStorage::F32(v) => v[range].iter().map(|&x| f64::from(x)).collect(),
        CpuStorage::F16(v) => v[range].iter().map(|x| x.to_f64()).collect(),
        CpuStorage::BF16(v) => v[range].iter().map(|x| x.to_f64()).collect(),
        CpuStorage::F64(v) => v[range].to_vec(),
        other => candle_core::bail!("unsupported weight dtype {:?}", other.dtype()),
    })
}

/// The weight as f32 (f64 weights rounded to nearest).
fn weight_f32(s: &CpuStorage, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
    Ok(match s {
        CpuStorage::F32(v) => v[range].to_vec(),
        CpuStorage::F16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::BF16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::F64(v) => v[range].iter().map(|&x| x as f32).collect(),
        other => candle_core::bail!("unsupported weight dtype {:?}", other.dtype()),
    })
}

fn stage<T: WithDType + Copy + Default>(
    op: &NormOp,
    dev: &RocmDevice,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let out_shape = op.out_shape(x.1.shape());
    let (xd, xl) = upload_rows::<T>(op, "xs", dev, x.0, x.1)?;
    let (rows, hidden) = (xl.rows, xl.hidden);
    let rd = match r {
        Some((s, l)) => {
            let (t, rl) = upload_rows::<T>(op, "residual", dev, s, l)?;
            if (rl.rows, rl.hidden) != (rows, hidden) {
                return Err(op_error(
                    op.name(),
                    "residual",
                    format!("{rows} rows of {hidden}"),
                    format!("{} rows of {}", rl.rows, rl.hidden),
                ));
            }
            Some((t, rl))
        }
        None => None,
    };
    let (wd, wdt) = match w {
        Some((s, l)) => {
            let start = l.start_offset();
            let range = start..start + hidden;
            let kd = abi::kernel_weight_dtype(T::DTYPE, s.dtype());
            let t = RocmTensor::alloc(dev, kd, hidden)?;
            match (s, kd) {
                (CpuStorage::F32(v), DType::F32) => t.upload(&v[range], 0)?,
                (CpuStorage::F16(v), DType::F16) => t.upload(&v[range], 0)?,
                (CpuStorage::BF16(v), DType::BF16) => t.upload(&v[range], 0)?,
                (CpuStorage::F64(v), DType::F64) => t.upload(&v[range], 0)?,
                (_, DType::F64) => t.upload(&weight_f64(s, range)?, 0)?,
                _ => t.upload(&weight_f32(s, range)?, 0)?,
            }
            (Some(t), kd)
        }
        None => (None, T::DTYPE),
    };
    let n = rows * hidden;
    let outputs = if op.fused { 2 * n } else { n };
    let out = RocmTensor::alloc(dev, T::DTYPE, outputs)?;
    let elem = T::DTYPE.size_in_bytes() as u64;
    let o = launch::Operands {
        out: out.addr(),
        out_stride: hidden as u64,
        sum_out: if op.fused {
            out.addr() + n as u64 * elem
        } else {
            0
        },
        sum_stride: if op.fused { hidden as u64 } else { 0 },
        x: xd.addr(),
        x_stride: xl.row_stride as u64,
        residual: rd.as_ref().map_or(0, |(t, _)| t.addr()),
        res_stride: rd.as_ref().map_or(0, |(_, rl)| rl.row_stride as u64),
        weight: wd.as_ref().map_or(0, RocmTensor::addr),
    };
    let stream = dev.stream()?;
    // SAFETY: x and residual were uploaded as the exact spans their row layouts cover (offset
    // 0, same strides), the weight holds `hidden` elements of `wdt`, `out` holds `outputs`
    // elements laid out as [normed; sum] with row stride `hidden`, fresh so it overlaps no
    // input; all live on `dev` until `download` below has synchronised the device.
    unsafe {
        device::launch_norm(
            dev,
            stream.raw(),
            op.fused,
            T::DTYPE,
            wdt,
            rows,
            hidden,
            op.eps,
            flags(op.weight_mode, op.rounding),
            &o,
        )?
    };
    let v = out.download::<T>()?;
    Ok((T::to_cpu_storage_owned(v), out_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_bits() {
        assert_eq!(flags(WeightMode::Scale, Rounding::AtEnd), 0);
        assert_eq!(flags(WeightMode::OffsetOne, Rounding::AtEnd), 1);
        assert_eq!(flags(WeightMode::OffsetOne, Rounding::BeforeWeight), 3);
    }

    #[test]
    fn raw_checks() {
        let cfg = NormConfig::new(1e-6);
        let mut a = RawNorm {
            dtype: DType::BF16,
            rows: 2,
            hidden: 8,
            x_stride: 8,
            out_stride: 8,
            ..Default::default()
        };
        let e = check_raw("op", &a, false, &cfg).unwrap_err().to_string();
        assert!(e.contains("must not be null"), "{e}");
        a.x = 16 as *const c_void;
        a.out = 32 as *mut c_void;
        assert_eq!(check_raw("op", &a, false, &cfg).unwrap(), DType::BF16);
        a.weight = 64 as *const c_void;
        a.weight_dtype = Some(DType::F16);
        let e = check_raw("op", &a, false, &cfg).unwrap_err().to_string();
        assert!(e.contains("weight_dtype") && e.contains("F32"), "{e}");
        a.weight_dtype = Some(DType::F32);
        assert_eq!(check_raw("op", &a, false, &cfg).unwrap(), DType::F32);
        a.x_stride = 4;
        assert!(check_raw("op", &a, false, &cfg).is_err());
        a.x_stride = 8;
        assert!(check_raw("op", &a, true, &cfg).is_err());
        assert!(check_raw("op", &a, false, &NormConfig::new(f64::NAN)).is_err());
        a.dtype = DType::U32;
        assert!(check_raw("op", &a, false, &cfg).is_err());
    }
}
