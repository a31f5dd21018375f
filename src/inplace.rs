//! The in-place ops: the same results as [`rms_norm`](crate::rms_norm) and
//! [`fused_add_rms_norm`](crate::fused_add_rms_norm), bit for bit, written into memory the
//! caller already holds, so a call allocates nothing (see `docs/guide.md`, "In place").

use crate::api::{check_common, check_like, readable, resolve_backend};
use crate::config::{Backend, NormConfig};
use crate::custom_op::InPlace;
use crate::error::op_error;
use crate::layout::RowLayout;
use crate::op::NormOp;
use candle_core::{Result, Tensor};

const RMS_NORM: &str = "candle_rmsnorm::rms_norm_inplace";
const FUSED: &str = "candle_rmsnorm::fused_add_rms_norm_inplace";

/// The address of a tensor's storage, to tell whether two tensors share one (Candle would
/// deadlock locking the same storage for writing and for reading).
fn storage_addr(t: &Tensor) -> usize {
    let (s, _) = t.storage_and_layout();
    &*s as *const candle_core::Storage as usize
}

/// The in-place ops normalise over the last dimension only: their kernels write each row where
/// they read it.
fn check_last_dim(op: &str, xs: &Tensor, cfg: &NormConfig) -> Result<()> {
    match cfg.dim() {
        Some(d) if d + 1 != xs.rank() => Err(op_error(
            op,
            "dim",
            format!(
                "the last dim of xs {:?} ({}): the in-place ops normalise over the last \
                 dimension only; use the out-of-place op",
                xs.dims(),
                xs.rank() - 1
            ),
            d.to_string(),
        )),
        _ => Ok(()),
    }
}

/// Checks that `target` can be written in place and shares no storage with `others`.
fn check_target(op: &str, arg: &str, target: &Tensor, others: &[(&str, &Tensor)]) -> Result<()> {
    if target.track_op() {
        return Err(op_error(
            op,
            arg,
            "a tensor outside autograd (an in-place op has no gradient)",
            "a variable or a result of tracked ops; use the out-of-place op",
        ));
    }
    if RowLayout::of(target.layout()).is_none() {
        return Err(op_error(
            op,
            arg,
            "rows with a contiguous last dimension (it is written in place, so it cannot be copied)",
            format!("strides {:?} for shape {:?}", target.stride(), target.dims()),
        ));
    }
    let addr = storage_addr(target);
    for (name, t) in others {
        if storage_addr(t) == addr {
            return Err(op_error(
                op,
                name,
                format!("a tensor that does not share storage with {arg}"),
                format!("a view of {arg}'s storage"),
            ));
        }
    }
    Ok(())
}

/// The portable backend: the out-of-place op, copied into `target` at `index` of dim 0
/// (`None`: `target` is the result's shape).
fn write_back(
    op: &str,
    arg: &str,
    target: &Tensor,
    parts: &[(&Tensor, Option<usize>)],
) -> Result<()> {
    if !target.is_contiguous() {
        return Err(op_error(
            op,
            arg,
            "a contiguous tensor on Backend::Candle (Candle writes only those in place)",
            format!(
                "strides {:?} for shape {:?}",
                target.stride(),
                target.dims()
            ),
        ));
    }
    for (part, index) in parts {
        match index {
            None => target.slice_set(&part.contiguous()?, 0, 0)?,
            Some(i) => target.slice_set(&part.contiguous()?.unsqueeze(0)?, 0, *i)?,
        }
    }
    Ok(())
}

/// [`rms_norm`](crate::rms_norm) written into `xs` itself: for an input that is dead after the
/// norm (a q/k projection, a hidden state). No allocation, no gradient.
///
/// `xs` may be a view with a row stride (a narrowed or offset tensor); everything that shares
/// its storage sees the new values.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let xs = Tensor::new(&[[3f32, 4.], [1., 1.]], &Device::Cpu)?;
/// let w = Tensor::new(&[1f32, 1.], &Device::Cpu)?;
/// let want = candle_rmsnorm::rms_norm(&xs, &w, 0.0)?;
/// candle_rmsnorm::rms_norm_inplace(&xs, &w, 0.0)?;
/// assert_eq!(xs.to_vec2::<f32>()?, want.to_vec2::<f32>()?);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`rms_norm`](crate::rms_norm), and an `xs` that tracks gradients, whose layout has no
/// contiguous rows, or that shares storage with the weight.
pub fn rms_norm_inplace(xs: &Tensor, weight: &Tensor, eps: impl Into<f64>) -> Result<()> {
    rms_norm_inplace_with(xs, Some(weight), &NormConfig::new(eps))
}

/// [`rms_norm_inplace`] with an optional weight and a [`NormConfig`].
///
/// # Errors
/// As [`rms_norm_inplace`].
pub fn rms_norm_inplace_with(xs: &Tensor, weight: Option<&Tensor>, cfg: &NormConfig) -> Result<()> {
    check_common(RMS_NORM, xs, weight, cfg)?;
    check_last_dim(RMS_NORM, xs, cfg)?;
    let others: Vec<_> = weight.iter().map(|w| ("weight", *w)).collect();
    check_target(RMS_NORM, "xs", xs, &others)?;
    let backend = resolve_backend(RMS_NORM, cfg, xs.device())?;
    if xs.elem_count() == 0 {
        return Ok(());
    }
    let nop = NormOp::new(cfg, backend, false);
    if backend == Backend::Candle {
        let y = crate::portable::rms_norm(&nop, xs, weight)?;
        return write_back(RMS_NORM, "xs", xs, &[(&y, None)]);
    }
    match weight {
        Some(w) => xs.inplace_op2(&w.contiguous()?, &InPlace(nop)),
        None => xs.inplace_op1(&InPlace(nop)),
    }
}

/// A pair buffer for [`fused_add_rms_norm_inplace`]: shape `[2, ..residual]`, `pair[1]` a copy
/// of `residual`, `pair[0]` zeros (it receives the normed output).
///
/// # Errors
/// When Candle cannot allocate it.
pub fn residual_pair(residual: &Tensor) -> Result<Tensor> {
    Tensor::stack(&[&residual.zeros_like()?, residual], 0)
}

/// [`fused_add_rms_norm`](crate::fused_add_rms_norm) in place on a pair buffer of shape
/// `[2, ..xs]`: reads the residual stream from `pair[1]`, writes `pair[1] = xs + pair[1]`
/// (rounded to the dtype) and `pair[0] = ` the norm of the unrounded sum, bit for bit as the
/// out-of-place op returns `(normed, sum)`. The pre-norm transformer step
/// `residual += x; h = norm(residual)` with no allocation: make the pair once
/// ([`residual_pair`]), then per layer read `pair.get(0)` and call this with the layer's output.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let residual = Tensor::randn(0f32, 1., (4, 64), &dev)?;
/// let xs = Tensor::randn(0f32, 1., (4, 64), &dev)?;
/// let w = Tensor::ones(64, candle_core::DType::F32, &dev)?;
/// let (normed, sum) = candle_rmsnorm::fused_add_rms_norm(&xs, &residual, &w, 1e-6)?;
/// let pair = candle_rmsnorm::residual_pair(&residual)?;
/// candle_rmsnorm::fused_add_rms_norm_inplace(&pair, &xs, &w, 1e-6)?;
/// assert_eq!(pair.get(0)?.to_vec2::<f32>()?, normed.to_vec2::<f32>()?);
/// assert_eq!(pair.get(1)?.to_vec2::<f32>()?, sum.to_vec2::<f32>()?);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`fused_add_rms_norm`](crate::fused_add_rms_norm) (with `pair[1]` as the residual), and
/// a pair not of shape `[2, ..xs]`, dtype and device of `xs`, tracking gradients, without
/// contiguous rows, or sharing storage with `xs` or the weight.
pub fn fused_add_rms_norm_inplace(
    pair: &Tensor,
    xs: &Tensor,
    weight: &Tensor,
    eps: impl Into<f64>,
) -> Result<()> {
    fused_add_rms_norm_inplace_with(pair, xs, Some(weight), &NormConfig::new(eps))
}

/// [`fused_add_rms_norm_inplace`] with an optional weight and a [`NormConfig`].
///
/// # Errors
/// As [`fused_add_rms_norm_inplace`].
pub fn fused_add_rms_norm_inplace_with(
    pair: &Tensor,
    xs: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
) -> Result<()> {
    check_common(FUSED, xs, weight, cfg)?;
    check_last_dim(FUSED, xs, cfg)?;
    let mut want = vec![2];
    want.extend_from_slice(xs.dims());
    check_like(FUSED, "pair", pair, xs, &want, "[2, ..xs]")?;
    let mut others = vec![("xs", xs)];
    others.extend(weight.iter().map(|w| ("weight", *w)));
    check_target(FUSED, "pair", pair, &others)?;
    let backend = resolve_backend(FUSED, cfg, xs.device())?;
    if xs.elem_count() == 0 {
        return Ok(());
    }
    let nop = NormOp::new(cfg, backend, true);
    if backend == Backend::Candle {
        let (n, s) = crate::portable::fused_add_rms_norm(&nop, xs, &pair.get(1)?, weight)?;
        return write_back(FUSED, "pair", pair, &[(&n, Some(0)), (&s, Some(1))]);
    }
    let x = readable(xs, None)?;
    match weight {
        Some(w) => pair.inplace_op3(&x, &w.contiguous()?, &InPlace(nop)),
        None => pair.inplace_op2(&x, &InPlace(nop)),
    }
}

/// Keeps the memory that dropped tensors free in CUDA's memory pool for the next allocation,
/// instead of handing it back to the driver at each synchronisation (Candle allocates every
/// output from the device's stream-ordered pool, whose release threshold is 0 by default): back
/// to back, allocating calls then run at the kernel's speed (measured on the H200 at 75600x5120
/// bf16: `rms_norm` 662-681 -> 436-438 us a call, kernel 433-436 us; README, "Memory pool").
/// The in-place ops need no such setting. It changes process-wide state of the device (every
/// allocation from its default pool keeps its memory until the process ends or the pool is
/// trimmed), so the crate never does it on its own. A no-op on CPU and Metal devices; on a CUDA
/// device it needs this crate's `cuda` feature.
pub fn keep_memory_pool(device: &candle_core::Device) -> Result<()> {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => crate::cuda::keep_memory_pool(d),
        #[cfg(not(feature = "cuda"))]
        candle_core::Device::Cuda(_) => Err(op_error(
            "keep_memory_pool",
            "device",
            "a device this build supports (a CUDA device needs the `cuda` feature)",
            "a CUDA device",
        )),
        _ => Ok(()),
    }
}
