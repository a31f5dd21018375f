//! The public q/k norm + rotary embedding functions: validate once, convert the side operands,
//! pick the backend, apply the op.

use crate::api::resolve_backend;
use crate::config::Backend;
use crate::error::{backend_unavailable, op_error};
use crate::rope_check::{check_table, check_weight, rope_params, Names, ONE, PAIR};
use crate::rope_config::RopeConfig;
use crate::rope_op::{RopeOp, ROPE_OP};
use candle_core::{DType, Result, Tensor};

/// Checks that operand `arg` is on the device of `q`.
fn same_device(arg: &str, t: &Tensor, q: &Tensor) -> Result<()> {
    if t.device().same_device(q.device()) {
        return Ok(());
    }
    Err(op_error(
        ROPE_OP,
        arg,
        format!("on the device of the input ({:?})", q.device().location()),
        format!("{:?}", t.device().location()),
    ))
}

/// `t`, or a contiguous copy when its last dimension is not contiguous (the kernels read rows
/// with free batch and position strides).
fn rows_readable(t: &Tensor) -> Result<Tensor> {
    let l = t.layout();
    if t.dims()[2] <= 1 || l.stride()[2] == 1 {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// The checked, converted descriptor for `q` (and `k`) on `backend`; `tables`: cos, sin.
fn describe(
    backend: Backend,
    q: &Tensor,
    k: Option<&Tensor>,
    weights: [Option<&Tensor>; 2],
    tables: [&Tensor; 2],
    cfg: &RopeConfig,
    names: &Names,
) -> Result<RopeOp> {
    fn shape(t: &Tensor) -> (&[usize], DType) {
        (t.dims(), t.dtype())
    }
    let params = rope_params(shape(q), k.map(shape), cfg, names)?;
    if let Some(k) = k {
        same_device("k", k, q)?;
    }
    let wdt = params.weight_dtype(q.dtype(), &weights.map(|w| w.map(Tensor::dtype)));
    let mut ws = [None, None];
    for (i, (w, arg)) in weights.iter().zip(names.weights).enumerate() {
        if let Some(w) = w {
            check_weight(&params, arg, shape(w), q.dims(), names)?;
            same_device(arg, w, q)?;
            ws[i] = Some(w.to_dtype(wdt)?.contiguous()?);
        }
    }
    let kernels = matches!(backend, Backend::Cuda | Backend::Rocm);
    let tdt = params.table_dtype(q.dtype(), tables.map(Tensor::dtype), kernels);
    let mut converted = Vec::with_capacity(2);
    for (t, arg) in tables.into_iter().zip(["cos", "sin"]) {
        check_table(&params, arg, shape(t), q.dims(), names)?;
        same_device(arg, t, q)?;
        converted.push(t.to_dtype(tdt)?.contiguous()?);
    }
    let sin = converted.pop().expect("two tables");
    let cos = converted.pop().expect("two tables");
    Ok(RopeOp {
        params,
        backend,
        weights: ws,
        cos,
        sin,
    })
}

/// The op on `q` (and `k`): one tensor, or for two the `[2, ..]` pair.
fn apply(
    q: &Tensor,
    k: Option<&Tensor>,
    weights: [Option<&Tensor>; 2],
    cos: &Tensor,
    sin: &Tensor,
    cfg: &RopeConfig,
) -> Result<Tensor> {
    let names = if k.is_some() { &PAIR } else { &ONE };
    let backend = resolve_backend(ROPE_OP, cfg.norm(), q.device())?;
    let op = describe(backend, q, k, weights, [cos, sin], cfg, names)?;
    let (b, l, _) = q.dims3()?;
    if q.elem_count() == 0 {
        return Tensor::zeros(op.out_shape(b, l), q.dtype(), q.device());
    }
    match op.backend {
        Backend::Candle => crate::portable::rms_norm_rope(&op, q, k),
        Backend::Cpu | Backend::Cuda | Backend::Rocm => {
            let q = rows_readable(q)?;
            match k {
                Some(k) => q.apply_op2(&rows_readable(k)?, op),
                None => q.apply_op1(op),
            }
        }
        other => Err(backend_unavailable(ROPE_OP, other)),
    }
}

/// RMSNorm + rotary embedding of one `[B, L, heads * head_dim]` tensor, written in the layout
/// `cfg` asks for, in one read and one write.
///
/// Each row (or with [`NormScope::PerHead`](crate::NormScope::PerHead) each head) is normalised as
/// [`crate::rms_norm_with`] would normalise it with `cfg.norm()` (sums of squares in f32, f64
/// for f64 input; the rescue of huge and tiny rows), and the normalised value times the weight
/// is rounded to the dtype of `x`, as the unfused path stores it. Each pair of that head
/// ([`crate::RopeStyle`]) is then rotated by the angle of its position: `(a, b)` becomes
/// `(a cos - b sin, a sin + b cos)`, computed in f32 (f64 for f64 input) with `cos` and `sin`
/// converted to that dtype, and rounded once. `cos` and `sin` are `[>= L, head_dim / 2]` (the
/// tables `candle_nn::rotary_emb::rope_i` takes; row `l` rotates position `l`), of any float
/// dtype; bf16/f16 tables of `x`'s dtype go to the GPU kernels as they are (widened as read,
/// the same values), other tables are converted once a call. The weight is
/// `[heads * head_dim]` ([`NormScope::Full`](crate::NormScope::Full)) or `[head_dim]` ([`NormScope::PerHead`](crate::NormScope::PerHead)), of any
/// float dtype. `x` may be a view whose last dimension is contiguous (any batch and position
/// strides); the output is contiguous. No backward (a gradient through it is an error).
///
/// Against the unfused path (`rms_norm` + transpose + `contiguous` + `rope_i`, all in the dtype
/// of `x`): the same up to the rotation's rounding. Candle's `rope_i` on bf16/f16 rounds each
/// product and the difference to that dtype; this rounds once, so the two differ by about an
/// ulp of the result where they differ. In f32 they agree to a few f32 ulps.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// use candle_rmsnorm::{rms_norm_rope, NormConfig, RopeConfig};
/// let dev = Device::Cpu;
/// let x = Tensor::randn(0f32, 1., (1, 6, 32), &dev)?; // 2 heads of 16
/// let w = Tensor::ones(32, candle_core::DType::F32, &dev)?;
/// let cos = Tensor::ones((6, 8), candle_core::DType::F32, &dev)?;
/// let sin = Tensor::zeros((6, 8), candle_core::DType::F32, &dev)?;
/// let y = rms_norm_rope(&x, Some(&w), &cos, &sin, &RopeConfig::new(2, NormConfig::new(1e-6)))?;
/// assert_eq!(y.dims(), &[1, 2, 6, 16]); // [B, heads, L, head_dim]
/// # Ok(()) }
/// ```
///
/// # Errors
/// `x` not rank 3 or not float; `heads` not dividing the last dim into even head sizes; a
/// weight or table of the wrong shape or dtype kind, or on another device; a `NormConfig` with
/// a dimension or variance size; a bad eps; a backend that cannot run here (`Backend::Rocm`
/// without a usable AMD GPU: the error says why); on CUDA and ROCm, a head larger than the
/// kernel's registers hold (512 bf16 / 256 f32 values when 16-byte aligned, 256 / 256
/// otherwise, on 32-lane warps and AMD's wave32; twice that on wave64) or a row whose teams
/// (two heads each) need more than 512 threads (e.g. more than 128 heads of 128 bf16).
///
/// `Backend::Rocm` (host tensors) uploads q (and k), the weights and tables, runs the same
/// kernel and plan as CUDA, waits and downloads the result; `candle_rmsnorm::rocm` has the op
/// on device tensors. That launcher was compiled and its no-device errors tested, but it has
/// not run on AMD hardware yet.
pub fn rms_norm_rope(
    x: &Tensor,
    weight: Option<&Tensor>,
    cos: &Tensor,
    sin: &Tensor,
    cfg: &RopeConfig,
) -> Result<Tensor> {
    apply(x, None, [weight, None], cos, sin, cfg)
}

/// [`rms_norm_rope`] of q and k (of one shape, each with its own weight) in one launch:
/// `(q_out, k_out)`, each in the layout `cfg` asks for (contiguous halves of one buffer).
///
/// # Errors
/// As [`rms_norm_rope`], and a `k` whose shape, dtype or device differs from `q`.
pub fn qk_rms_norm_rope(
    q: &Tensor,
    k: &Tensor,
    q_weight: Option<&Tensor>,
    k_weight: Option<&Tensor>,
    cos: &Tensor,
    sin: &Tensor,
    cfg: &RopeConfig,
) -> Result<(Tensor, Tensor)> {
    let both = apply(q, Some(k), [q_weight, k_weight], cos, sin, cfg)?;
    Ok((both.get(0)?, both.get(1)?))
}
