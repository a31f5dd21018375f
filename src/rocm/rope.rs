//! q/k RMSNorm + rotary embedding (`rms_norm_rope_{dtype}[_wt][_scalar]`, `hip/norm_rope.h`) on
//! ROCm: the Candle op on host tensors with `Backend::Rocm` (q and k uploaded as the spans
//! their rows cover, the weights and tables as the API converted them), and the device-resident
//! [`rms_norm_rope`] / [`qk_rms_norm_rope`] on [`RocmTensor`]s. Both fill the argument with
//! `gpu::rope_plan::rope_args` and plan it with `plan_rope`, as the CUDA launcher does.

use super::device::RocmDevice;
use super::host::{host_device, upload_span};
use super::memory::RocmTensor;
use super::stream::RocmStream;
use super::sys::HipStream;
use crate::error::{float_error, op_error};
use crate::gpu::abi::RopeArgs;
use crate::gpu::rope_plan::{plan_rope, rope_args};
use crate::op::{compute_dtype, Operand};
use crate::rope_check::{check_table, check_weight, rope_params, Names, ONE, PAIR};
use crate::rope_config::RopeConfig;
use crate::rope_op::{input_rows, RopeOp, RopeParams, ROPE_OP};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Result, Shape, WithDType};
use half::{bf16, f16};

/// Plans `a` (addresses, strides and options set) for `dev` and queues it on `stream`.
///
/// # Safety
/// As [`RocmDevice::launch_rope`]: every address in `a` live on `dev` for what it states.
unsafe fn launch(
    dev: &RocmDevice,
    stream: HipStream,
    a: RopeArgs,
    dt: DType,
    dims: &[usize],
) -> Result<()> {
    let p = plan_rope(a, dt, dev.warp_size()).map_err(|e| {
        op_error(
            ROPE_OP,
            "shape",
            e,
            format!("{dims:?} in {} heads", a.heads),
        )
    })?;
    // SAFETY: the caller's contract; `p` is `a` planned for this device's wavefront width.
    unsafe { dev.launch_rope(stream, &p) }
}

/// The forward of the Candle op on host storages with `Backend::Rocm` (see `crate::rope_op`).
pub(crate) fn forward(
    op: &RopeOp,
    q: Operand<'_, CpuStorage>,
    k: Option<Operand<'_, CpuStorage>>,
) -> Result<(CpuStorage, Shape)> {
    let dev = host_device(ROPE_OP)?;
    match q.0 {
        CpuStorage::F32(_) => stage::<f32>(op, &dev, q, k),
        CpuStorage::F16(_) => stage::<f16>(op, &dev, q, k),
        CpuStorage::BF16(_) => stage::<bf16>(op, &dev, q, k),
        CpuStorage::F64(_) => stage::<f64>(op, &dev, q, k),
        other => Err(float_error(ROPE_OP, "q", other.dtype())),
    }
}

fn stage<T: WithDType + Copy + Default>(
    op: &RopeOp,
    dev: &RocmDevice,
    q: Operand<'_, CpuStorage>,
    k: Option<Operand<'_, CpuStorage>>,
) -> Result<(CpuStorage, Shape)> {
    let dims = q.1.dims();
    let (batch, seq) = (dims[0], dims[1]);
    let shape = op.out_shape(batch, seq);
    let out = RocmTensor::alloc(dev, T::DTYPE, shape.elem_count())?;
    let (wt, tt) = (op.weights_in_input(T::DTYPE), op.tables_in_input(T::DTYPE));
    let mut a = rope_args(op, batch, seq, out.addr(), wt, tt);
    let mut held = Vec::new();
    for (t, (s, l)) in std::iter::once(q).chain(k).enumerate() {
        let arg = ["q", "k"][t];
        let data = s.as_slice::<T>().map_err(|_| {
            op_error(
                ROPE_OP,
                arg,
                format!("of the dtype of q ({:?})", T::DTYPE),
                format!("{:?}", s.dtype()),
            )
        })?;
        // The span the rows cover, inside the storage; the copy starts at the first row, so
        // the strides hold relative to it.
        let (off, sb, sl, end) = input_rows(arg, l, data.len())?;
        let x = upload_span(dev, &data[off..end])?;
        a.x[t] = x.addr();
        (a.x_b[t], a.x_l[t]) = (sb as i64, sl as i64);
        held.push(x);
    }
    let mut side = |t: &candle_core::Tensor| -> Result<u64> {
        let d = RocmTensor::from_tensor(dev, t)?;
        let addr = d.addr();
        held.push(d);
        Ok(addr)
    };
    for (i, w) in op.weights.iter().enumerate() {
        if let Some(w) = w {
            a.w[i] = side(w)?;
        }
    }
    (a.cos, a.sin) = (side(&op.cos)?, side(&op.sin)?);
    let stream = dev.stream()?;
    // SAFETY: q and k were uploaded as the exact spans their rows cover (strides relative to
    // the copies); the weights and tables are contiguous copies of the descriptor's tensors,
    // whose shapes the public API checked (weights of the norm's length, tables of `>= seq`
    // rows of `head_dim / 2`), of the dtypes `a`'s flags state (`weights_in_input` and
    // `tables_in_input` of these tensors); `out` is a fresh buffer of exactly the elements the
    // output strides address; all stay alive until `download` has synchronised the device.
    unsafe { launch(dev, stream.raw(), a, T::DTYPE, dims)? };
    let v = out.download::<T>()?;
    drop(held);
    Ok((T::to_cpu_storage_owned(v), shape))
}

/// The device operands of a call: q (and k), their weights, the cos and sin tables.
struct DeviceOperands<'a> {
    q: &'a RocmTensor,
    k: Option<&'a RocmTensor>,
    weights: [Option<&'a RocmTensor>; 2],
    tables: [&'a RocmTensor; 2],
}

/// Checks the device operands of a call (shapes and dtypes as the public API checks them;
/// weights of the compute dtype or of the input's where `RopeParams::weights_in_input` holds,
/// tables of the dtype `RopeParams::table_dtype` gives for the kernels, on q's device, as the
/// stream) and returns its parameters and whether the weights and the tables are of the input
/// dtype.
fn check(
    o: &DeviceOperands<'_>,
    cfg: &RopeConfig,
    stream: &RocmStream,
) -> Result<(RopeParams, bool, bool)> {
    let names: &Names = if o.k.is_some() { &PAIR } else { &ONE };
    fn shape(t: &RocmTensor) -> (&[usize], DType) {
        (t.shape().dims(), t.dtype())
    }
    let p = rope_params(shape(o.q), o.k.map(shape), cfg, names)?;
    let dims = o.q.shape().dims();
    let ordinal = o.q.device().ordinal();
    let cdt = compute_dtype(o.q.dtype());
    let on_device = |arg: &str, t: &RocmTensor, want: Option<DType>| -> Result<()> {
        let (at, dt) = (t.device().ordinal(), t.dtype());
        if at != ordinal || want.is_some_and(|w| w != dt) {
            let dtype = want.map_or(String::new(), |w| format!("{w:?} "));
            return Err(op_error(
                ROPE_OP,
                arg,
                format!("{dtype}on device {ordinal} (convert weights and tables first)"),
                format!("{dt:?} on device {at}"),
            ));
        }
        Ok(())
    };
    if let Some(k) = o.k {
        on_device("k", k, None)?;
    }
    let wdt = p.weight_dtype(o.q.dtype(), &o.weights.map(|w| w.map(RocmTensor::dtype)));
    // Weights of the input dtype, not the compute dtype: only where weights_in_input holds.
    let wt = wdt != cdt;
    for (w, arg) in o.weights.iter().zip(names.weights) {
        if let Some(w) = w {
            check_weight(&p, arg, shape(w), dims, names)?;
            on_device(arg, w, Some(wdt))?;
        }
    }
    let tdt = p.table_dtype(o.q.dtype(), o.tables.map(RocmTensor::dtype), true);
    for (t, arg) in o.tables.iter().zip(["cos", "sin"]) {
        check_table(&p, arg, shape(t), dims, names)?;
        on_device(arg, t, Some(tdt))?;
    }
    stream.check_device(ROPE_OP, ordinal)?;
    Ok((p, wt, tdt != cdt))
}

/// The device-resident op: checks, allocates the output, queues the launch.
fn run(o: DeviceOperands<'_>, cfg: &RopeConfig, stream: &RocmStream) -> Result<RocmTensor> {
    let (p, wt, tt) = check(&o, cfg, stream)?;
    let q = o.q;
    let dims = q.shape().dims();
    let (batch, seq) = (dims[0], dims[1]);
    let dev = q.device();
    let out = RocmTensor::alloc(dev, q.dtype(), p.out_shape(batch, seq))?;
    if q.elem_count() == 0 {
        return Ok(out);
    }
    let mut a = rope_args(&p, batch, seq, out.addr(), wt, tt);
    let dim = dims[2] as i64;
    for (t, x) in std::iter::once(q).chain(o.k).enumerate() {
        a.x[t] = x.addr();
        (a.x_b[t], a.x_l[t]) = (seq as i64 * dim, dim);
    }
    a.w = o.weights.map(|w| w.map_or(0, RocmTensor::addr));
    (a.cos, a.sin) = (o.tables[0].addr(), o.tables[1].addr());
    // SAFETY: `check` verified every operand's shape, dtype and device as the kernel reads
    // them: q (and k) contiguous `[batch, seq, dim]`, weights of the norm's length (in the
    // dtype `wt` states) and tables of `>= seq` rows of `head_dim / 2` (in the dtype `tt`
    // states);
    // `out` is fresh, exactly the elements the output strides address; the stream belongs to
    // the device; device tensors are freed only after hipFree's implicit device
    // synchronisation.
    unsafe { launch(dev, stream.raw(), a, q.dtype(), dims)? };
    Ok(out)
}

/// [`crate::rms_norm_rope`] on device tensors, queued on `stream`: `x` is
/// `[batch, seq, heads * head_dim]`, the weight `[heads * head_dim]` or `[head_dim]`
/// (`cfg`'s scope), `cos` / `sin` `[>= seq, head_dim / 2]`; the output is a new device tensor
/// in the layout `cfg` asks for. The tables must have the compute dtype (f32; f64 for f64
/// input) or, both, bf16/f16 input's dtype; the weight the compute dtype, or the input's dtype
/// with bf16/f16 input, `Rounding::BeforeWeight` and `WeightMode::Scale` (a weight for each
/// input): nothing is converted on the device.
///
/// # Errors
/// As [`crate::rms_norm_rope`] (the same checks and messages), a weight or table of another
/// dtype or on another device, a stream of another device, or a HIP error.
pub fn rms_norm_rope(
    x: &RocmTensor,
    weight: Option<&RocmTensor>,
    cos: &RocmTensor,
    sin: &RocmTensor,
    cfg: &RopeConfig,
    stream: &RocmStream,
) -> Result<RocmTensor> {
    let o = DeviceOperands {
        q: x,
        k: None,
        weights: [weight, None],
        tables: [cos, sin],
    };
    run(o, cfg, stream)
}

/// [`crate::qk_rms_norm_rope`] on device tensors in one launch, queued on `stream`: one new
/// device tensor `[2, ..]`, q's output then k's (each in the layout `cfg` asks for); a
/// [`RocmTensor`] owns its allocation, so the halves are not handed out separately (k's starts
/// `elem_count() / 2` elements in).
///
/// # Errors
/// As [`rms_norm_rope`], and a `k` whose shape, dtype or device differs from `q`.
#[allow(clippy::too_many_arguments)]
pub fn qk_rms_norm_rope(
    q: &RocmTensor,
    k: &RocmTensor,
    q_weight: Option<&RocmTensor>,
    k_weight: Option<&RocmTensor>,
    cos: &RocmTensor,
    sin: &RocmTensor,
    cfg: &RopeConfig,
    stream: &RocmStream,
) -> Result<RocmTensor> {
    let o = DeviceOperands {
        q,
        k: Some(k),
        weights: [q_weight, k_weight],
        tables: [cos, sin],
    };
    run(o, cfg, stream)
}
