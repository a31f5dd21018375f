//! The public functions: validate once, pick the backend, apply the op.

use crate::config::{Backend, NormConfig};
use crate::error::{backend_unavailable, check_dims, check_eps, check_float, op_error};
use crate::layout::{ChannelLayout, RowLayout};
use crate::op::NormOp;
use candle_core::{Device, Result, Tensor};

const RMS_NORM: &str = "candle_rmsnorm::rms_norm";
const FUSED: &str = "candle_rmsnorm::fused_add_rms_norm";

fn where_is(d: &Device) -> String {
    format!("{:?}", d.location())
}

/// Checks one operand's device against `xs`.
fn same_device(op: &str, arg: &str, t: &Tensor, xs: &Tensor) -> Result<()> {
    if t.device().same_device(xs.device()) {
        Ok(())
    } else {
        Err(op_error(
            op,
            arg,
            format!("on the device of xs ({})", where_is(xs.device())),
            where_is(t.device()),
        ))
    }
}

/// Checks that operand `arg` has shape `dims` (`what` names that shape in the error), the dtype
/// of `xs` and its device.
pub(crate) fn check_like(
    op: &str,
    arg: &str,
    t: &Tensor,
    xs: &Tensor,
    dims: &[usize],
    what: &str,
) -> Result<()> {
    if t.dims() != dims {
        return Err(op_error(
            op,
            arg,
            format!("of shape {dims:?} ({what})"),
            format!("shape {:?}", t.dims()),
        ));
    }
    if t.dtype() != xs.dtype() {
        return Err(op_error(
            op,
            arg,
            format!("of the dtype of xs ({:?})", xs.dtype()),
            format!("{:?}", t.dtype()),
        ));
    }
    same_device(op, arg, t, xs)
}

/// Logs once per process and reason why `Auto` chose a backend the caller may not expect.
macro_rules! say_once {
    ($($arg:tt)+) => {{
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| log::info!($($arg)+));
    }};
}

/// Resolves the backend for tensors on `device`, failing loudly when it cannot run there.
pub(crate) fn resolve_backend(op: &str, cfg: &NormConfig, device: &Device) -> Result<Backend> {
    let requested = cfg.backend()?;
    let resolved = match (requested, device) {
        (Backend::Auto, Device::Cpu) => {
            if cfg!(feature = "rocm") {
                // Staging host tensors through device memory costs more than the CPU path saves
                // (see README, ROCm).
                say_once!(
                    "candle-rmsnorm: Backend::Auto runs host tensors on the CPU path; \
                     Backend::Rocm (CANDLE_RMSNORM_BACKEND=rocm) stages them through the \
                     ROCm kernels"
                );
            }
            Backend::Cpu
        }
        (Backend::Auto, Device::Cuda(_)) if cfg!(feature = "cuda") => Backend::Cuda,
        (Backend::Auto, Device::Cuda(_)) => {
            say_once!(
                "candle-rmsnorm: CUDA tensors run on Backend::Candle (Candle's own ops): this \
                 build lacks feature `cuda`, which adds the CUDA kernels"
            );
            Backend::Candle
        }
        (Backend::Auto, _) => {
            say_once!(
                "candle-rmsnorm: tensors on {} run on Backend::Candle (Candle's own ops): \
                 there is no native kernel for that device",
                where_is(device)
            );
            Backend::Candle
        }
        (b, _) => b,
    };
    match (resolved, device) {
        (Backend::Candle, _) => Ok(Backend::Candle),
        (Backend::Cpu, Device::Cpu) => Ok(Backend::Cpu),
        (Backend::Cuda, Device::Cuda(_)) if cfg!(feature = "cuda") => Ok(Backend::Cuda),
        (Backend::Rocm, Device::Cpu) if cfg!(feature = "rocm") => Ok(Backend::Rocm),
        (Backend::Cuda, _) if !cfg!(feature = "cuda") => Err(backend_unavailable(op, resolved)),
        (Backend::Rocm, _) if !cfg!(feature = "rocm") => Err(backend_unavailable(op, resolved)),
        (b, d) => Err(op_error(
            op,
            "xs",
            format!(
                "on a device that backend {b} serves ({})",
                match b {
                    Backend::Cuda => "a CUDA device",
                    _ => "the CPU",
                }
            ),
            where_is(d),
        )),
    }
}

/// Validates everything but the residual; returns the size of the dimension normalised over.
pub(crate) fn check_common(
    op: &str,
    xs: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
) -> Result<usize> {
    if xs.rank() == 0 {
        return Err(op_error(
            op,
            "xs",
            "of rank >= 1",
            "a rank-0 tensor (shape [])",
        ));
    }
    check_float(op, "xs", xs.dtype())?;
    let (dim, which) = check_dims(op, xs.dims(), cfg.dim(), cfg.variance_size())?;
    let hidden = xs.dims()[dim];
    if let Some(w) = weight {
        if w.rank() != 1 || w.dims()[0] != hidden {
            return Err(op_error(
                op,
                "weight",
                format!("of shape [{hidden}] ({which} of xs {:?})", xs.dims()),
                format!("shape {:?}", w.dims()),
            ));
        }
        check_float(op, "weight", w.dtype())?;
        same_device(op, "weight", w, xs)?;
    }
    check_eps(op, cfg.eps())?;
    Ok(hidden)
}

/// A layout the kernels read directly, or a contiguous copy (see the crate docs): rows, or with
/// a norm over dimension `axis` (not the last), the channel geometry.
pub(crate) fn readable(t: &Tensor, axis: Option<usize>) -> Result<Tensor> {
    let direct = match axis {
        None => RowLayout::of(t.layout()).is_some(),
        Some(d) => ChannelLayout::of(t.layout(), d).is_some(),
    };
    if direct {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// Whether `backend` has kernels of its own for a norm over another dimension than the last;
/// the others (the ROCm path for host tensors) run the row kernels on a copy with that
/// dimension last (see [`swapped`]).
fn has_channel_kernels(backend: Backend) -> bool {
    matches!(backend, Backend::Cpu | Backend::Cuda)
}

/// `f` applied to `t` with dimensions `d` and the last swapped, contiguous, and the results
/// swapped back (contiguous): the row kernels on a copy, for backends without channel kernels.
fn swapped(
    ts: &[&Tensor],
    d: usize,
    f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    let last = ts[0].rank() - 1;
    let moved = ts
        .iter()
        .map(|t| t.transpose(d, last)?.contiguous())
        .collect::<Result<Vec<_>>>()?;
    f(&moved)?
        .iter()
        .map(|t| t.transpose(d, last)?.contiguous())
        .collect()
}

/// RMSNorm over the last dimension: `xs * rsqrt(mean(xs^2) + eps) * weight`.
///
/// A drop-in for `candle_nn::ops::rms_norm` that also accepts a weight of another float dtype
/// than `xs`, any rank >= 1, strided views and empty tensors; the sum of squares is accumulated
/// in f32 (f64 for f64 input) and the output has the dtype of `xs`.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let xs = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu)?;
/// let w = Tensor::new(&[1f32, 1., 2.], &Device::Cpu)?;
/// let ys = candle_rmsnorm::rms_norm(&xs, &w, 1e-6)?;
/// assert_eq!(ys.dims(), &[2, 3]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// A rank-0 or non-float `xs`; a weight that is not rank 1 of length `hidden`, not float, or on
/// another device; `eps` negative, infinite or NaN; a backend that cannot run here (see
/// [`Backend`]).
pub fn rms_norm(xs: &Tensor, weight: &Tensor, eps: impl Into<f64>) -> Result<Tensor> {
    rms_norm_impl(RMS_NORM, xs, Some(weight), &NormConfig::new(eps))
}

/// [`rms_norm`] with all options: an optional weight (`None`: plain normalisation) and a
/// [`NormConfig`] (weight mode, rounding, backend, eps).
///
/// # Errors
/// As [`rms_norm`].
pub fn rms_norm_with(xs: &Tensor, weight: Option<&Tensor>, cfg: &NormConfig) -> Result<Tensor> {
    rms_norm_impl(RMS_NORM, xs, weight, cfg)
}

fn rms_norm_impl(
    op: &str,
    xs: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
) -> Result<Tensor> {
    check_common(op, xs, weight, cfg)?;
    let backend = resolve_backend(op, cfg, xs.device())?;
    if xs.elem_count() == 0 {
        return xs.zeros_like();
    }
    let nop = NormOp::new(cfg, backend, false);
    if backend == Backend::Candle {
        return crate::portable::rms_norm(&nop, xs, weight);
    }
    let axis = nop.axis(xs.rank());
    if let (Some(d), false) = (axis, has_channel_kernels(backend)) {
        let rows = NormOp { dim: None, ..nop };
        let y = swapped(&[xs], d, |t| Ok(vec![rms_norm_rows(rows, &t[0], weight)?]))?;
        return Ok(y[0].clone());
    }
    let x = readable(xs, axis)?;
    rms_norm_rows(nop, &x, weight)
}

/// The custom op on a readable `x`.
fn rms_norm_rows(nop: NormOp, x: &Tensor, weight: Option<&Tensor>) -> Result<Tensor> {
    match weight {
        Some(w) => x.apply_op2(&w.contiguous()?, nop),
        None => x.apply_op1(nop),
    }
}

/// Fused residual add + RMSNorm in one pass over memory.
///
/// Computes `sum = xs + residual` in f32, normalises that unrounded sum, and returns
/// `(normed, sum)` with `sum` rounded to the dtype of `xs`: the pre-norm transformer step
/// `residual = x + residual; x = norm(residual)`. Both results are contiguous.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// let dev = Device::Cpu;
/// let xs = Tensor::randn(0f32, 1., (4, 64), &dev)?.to_dtype(DType::BF16)?;
/// let res = Tensor::randn(0f32, 1., (4, 64), &dev)?.to_dtype(DType::BF16)?;
/// let w = Tensor::ones(64, DType::F32, &dev)?;
/// let (normed, sum) = candle_rmsnorm::fused_add_rms_norm(&xs, &res, &w, 1e-6)?;
/// assert_eq!((normed.dtype(), sum.dims()), (DType::BF16, &[4usize, 64][..]));
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`rms_norm`], and a residual whose shape, dtype or device differs from `xs`.
pub fn fused_add_rms_norm(
    xs: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: impl Into<f64>,
) -> Result<(Tensor, Tensor)> {
    fused_impl(FUSED, xs, residual, Some(weight), &NormConfig::new(eps))
}

/// [`fused_add_rms_norm`] with an optional weight and a [`NormConfig`].
///
/// # Errors
/// As [`fused_add_rms_norm`].
pub fn fused_add_rms_norm_with(
    xs: &Tensor,
    residual: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
) -> Result<(Tensor, Tensor)> {
    fused_impl(FUSED, xs, residual, weight, cfg)
}

fn fused_impl(
    op: &str,
    xs: &Tensor,
    residual: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
) -> Result<(Tensor, Tensor)> {
    check_common(op, xs, weight, cfg)?;
    check_like(op, "residual", residual, xs, xs.dims(), "the shape of xs")?;
    let backend = resolve_backend(op, cfg, xs.device())?;
    if xs.elem_count() == 0 {
        return Ok((xs.zeros_like()?, xs.zeros_like()?));
    }
    let nop = NormOp::new(cfg, backend, true);
    if backend == Backend::Candle {
        return crate::portable::fused_add_rms_norm(&nop, xs, residual, weight);
    }
    let axis = nop.axis(xs.rank());
    if let (Some(d), false) = (axis, has_channel_kernels(backend)) {
        let rows = NormOp { dim: None, ..nop };
        let y = swapped(&[xs, residual], d, |t| {
            let (n, s) = fused_rows(rows, &t[0], &t[1], weight)?;
            Ok(vec![n, s])
        })?;
        return Ok((y[0].clone(), y[1].clone()));
    }
    fused_rows(
        nop,
        &readable(xs, axis)?,
        &readable(residual, axis)?,
        weight,
    )
}

/// The fused custom op on readable `x` and `r`.
fn fused_rows(
    nop: NormOp,
    x: &Tensor,
    r: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let both = match weight {
        Some(w) => x.apply_op3(r, &w.contiguous()?, nop),
        None => x.apply_op2(r, nop),
    }?;
    Ok((both.get(0)?, both.get(1)?))
}
