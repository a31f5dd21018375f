//! The Candle ops on host tensors with `Backend::Rocm`: upload the rows, launch, wait,
//! download (the norms, in place too, and the quantised ops; q/k norm + RoPE in `rope`). It moves about twice the tensor's bytes over PCIe on top of the kernel's traffic.

use super::device::RocmDevice;
use super::memory::RocmTensor;
use crate::error::{float_error, op_error};
use crate::gpu::abi::kernel_weight_dtype;
use crate::gpu::call::{Call, Operands, QuantCall};
use crate::host::{weight_values, QuantOut};
use crate::layout::RowLayout;
use crate::op::{Inputs, NormOp};
use crate::quant::QuantSpec;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, WithDType};
use half::{bf16, f16};

/// The device the host-tensor path uses: HIP device 0 (choose another with
/// `HIP_VISIBLE_DEVICES`).
///
/// # Errors
/// Why ROCm cannot be used here: no runtime library, no device, or no code object for it.
pub fn default_device() -> Result<RocmDevice> {
    RocmDevice::new(0)
}

/// The device the host-tensor path of op `name` runs on, or why it cannot (logged once).
pub(super) fn host_device(name: &str) -> Result<RocmDevice> {
    default_device().map_err(|e| {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| log::warn!("candle-rmsnorm: backend rocm is unavailable: {e}"));
        candle_core::Error::Msg(format!("{name}: backend rocm is unavailable: {e}"))
    })
}

/// The forward of every op variant on host storages (operands as in `custom_op`).
pub(crate) fn forward(op: &NormOp, inputs: Inputs<'_, CpuStorage>) -> Result<(CpuStorage, Shape)> {
    let Inputs {
        x,
        residual: r,
        weight: w,
    } = inputs;
    let dev = host_device(op.name())?;
    match x.0 {
        CpuStorage::F32(_) => stage::<f32>(op, &dev, x, r, w),
        CpuStorage::F16(_) => stage::<f16>(op, &dev, x, r, w),
        CpuStorage::BF16(_) => stage::<bf16>(op, &dev, x, r, w),
        CpuStorage::F64(_) => stage::<f64>(op, &dev, x, r, w),
        other => Err(float_error(op.name(), "xs", other.dtype())),
    }
}

/// The in-place ops on host storages: the out-of-place op staged as [`forward`] (reading the
/// target, or the pair's residual half), its result copied into the target's rows (the pair's
/// rows are `[normed; residual]`, the order of the fused op's output).
pub(crate) fn forward_inplace(
    op: &NormOp,
    target: (&mut CpuStorage, &Layout),
    xs: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<()> {
    let (ts, tl) = target;
    let (out, _) = match xs {
        None => forward(
            op,
            Inputs {
                x: (&*ts, tl),
                residual: None,
                weight: w,
            },
        )?,
        Some(x) => {
            let half = tl.narrow(0, 1, 1)?;
            let inputs = Inputs {
                x,
                residual: Some((&*ts, &half)),
                weight: w,
            };
            forward(op, inputs)?
        }
    };
    let arg = if xs.is_some() { "pair" } else { "xs" };
    macro_rules! put {
        ($($v:ident),+) => {
            match (ts, &out) {
                $((CpuStorage::$v(d), CpuStorage::$v(o)) => copy_rows(op, arg, d, tl, o),)+
                (t, _) => Err(float_error(op.name(), arg, t.dtype())),
            }
        };
    }
    put!(F32, F16, BF16, F64)
}

/// Copies the contiguous rows `src` into the rows of `dst` that layout `l` covers.
fn copy_rows<T: Copy>(op: &NormOp, arg: &str, dst: &mut [T], l: &Layout, src: &[T]) -> Result<()> {
    let rl = RowLayout::checked(op.name(), arg, l, dst.len())?;
    for (r, row) in src.chunks_exact(rl.hidden).take(rl.rows).enumerate() {
        let at = rl.offset + r * rl.row_stride;
        dst[at..at + rl.hidden].copy_from_slice(row);
    }
    Ok(())
}

/// Uploads the span of rows a layout covers; returns the device copy and its row layout.
fn upload_rows<T: WithDType>(
    op: &NormOp,
    arg: &str,
    dev: &RocmDevice,
    s: &CpuStorage,
    l: &Layout,
) -> Result<(RocmTensor, RowLayout)> {
    let data = s.as_slice::<T>()?;
    let rl = RowLayout::checked(op.name(), arg, l, data.len())?;
    Ok((upload_span(dev, &data[rl.offset..rl.end()])?, rl))
}

/// A new device tensor holding `span`.
pub(super) fn upload_span<T: WithDType>(dev: &RocmDevice, span: &[T]) -> Result<RocmTensor> {
    let t = RocmTensor::alloc(dev, T::DTYPE, span.len())?;
    t.upload(span, 0)?;
    Ok(t)
}

/// The weight on the device, in the dtype the kernel takes.
fn upload_weight<T: WithDType>(
    op: &NormOp,
    dev: &RocmDevice,
    s: &CpuStorage,
    l: &Layout,
    hidden: usize,
) -> Result<(RocmTensor, DType)> {
    let kd = kernel_weight_dtype(T::DTYPE, s.dtype());
    let t = RocmTensor::alloc(dev, kd, hidden)?;
    let name = op.name();
    match kd {
        DType::F32 => t.upload(&weight_values(name, s, l, hidden, |e| e as f32)?, 0)?,
        DType::F64 => t.upload(&weight_values(name, s, l, hidden, |e| e)?, 0)?,
        DType::F16 => t.upload(&weight_values(name, s, l, hidden, f16::from_f64)?, 0)?,
        DType::BF16 => t.upload(&weight_values(name, s, l, hidden, bf16::from_f64)?, 0)?,
        other => return Err(float_error(name, "weight", other)),
    }
    Ok((t, kd))
}

/// A call's inputs uploaded: the device copies (alive until the results are downloaded) and
/// the call over them, its outputs unset (the sum's row stride set for the fused op).
struct Staged {
    _inputs: Vec<RocmTensor>,
    call: Call,
    rows: usize,
    hidden: usize,
}

fn stage_inputs<T: WithDType>(
    op: &NormOp,
    dev: &RocmDevice,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<Staged> {
    let (xd, xl) = upload_rows::<T>(op, "xs", dev, x.0, x.1)?;
    let (rows, hidden) = (xl.rows, xl.hidden);
    let h = hidden as u64;
    let mut operands = Operands {
        out_stride: h,
        // The uploads start at the first row: offsets relative to the copies.
        x: xd.addr(),
        x_stride: xl.row_stride as u64,
        ..Default::default()
    };
    let mut inputs = vec![xd];
    if let Some((s, l)) = r {
        let (t, rl) = upload_rows::<T>(op, "residual", dev, s, l)?;
        if (rl.rows, rl.hidden) != (rows, hidden) {
            return Err(op_error(
                op.name(),
                "residual",
                format!("{rows} rows of {hidden}"),
                format!("{} rows of {}", rl.rows, rl.hidden),
            ));
        }
        operands.residual = t.addr();
        operands.res_stride = rl.row_stride as u64;
        operands.sum_stride = h;
        inputs.push(t);
    }
    let mut w_dtype = T::DTYPE;
    if let Some((s, l)) = w {
        let (t, kd) = upload_weight::<T>(op, dev, s, l, hidden)?;
        operands.weight = t.addr();
        w_dtype = kd;
        inputs.push(t);
    }
    let call = Call {
        op: *op,
        x_dtype: T::DTYPE,
        w_dtype,
        rows: rows as u64,
        hidden: h,
        operands,
        channels: None,
        quant: None,
    };
    Ok(Staged {
        _inputs: inputs,
        call,
        rows,
        hidden,
    })
}

/// Runs a staged call whose outputs are set, on the device's own stream.
fn run(dev: &RocmDevice, st: &Staged) -> Result<()> {
    let stream = dev.stream()?;
    // SAFETY: x and residual were uploaded as the exact spans their row layouts cover (first
    // row at the start of the copy, same strides), the weight holds `hidden` elements of
    // `w_dtype` (`stage_inputs`); the caller set the outputs to fresh allocations of `dev` of
    // `rows` rows of `hidden` (`out_stride`, `sum_stride`), which overlap no input; all live
    // until the caller's download has synchronised the device.
    unsafe { dev.launch(stream.raw(), &st.call) }
}

fn stage<T: WithDType + Copy + Default>(
    op: &NormOp,
    dev: &RocmDevice,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let mut st = stage_inputs::<T>(op, dev, x, r, w)?;
    let n = st.rows * st.hidden;
    let out = RocmTensor::alloc(dev, T::DTYPE, if op.fused { 2 * n } else { n })?;
    st.call.operands.out = out.addr();
    if op.fused {
        st.call.operands.sum_out = out.addr() + (n * T::DTYPE.size_in_bytes()) as u64;
    }
    run(dev, &st)?;
    let v = out.download::<T>()?;
    Ok((T::to_cpu_storage_owned(v), op.out_shape(x.1.shape())))
}

/// The quantised op `name` on host storages (rows over the last dimension; the API has checked
/// the options): inputs staged as for [`forward`], values, scales (and the sum) downloaded.
pub(crate) fn forward_quant(
    name: &str,
    op: &NormOp,
    spec: &QuantSpec,
    inputs: Inputs<'_, CpuStorage>,
) -> Result<QuantOut> {
    let dev = host_device(name)?;
    let Inputs {
        x,
        residual: r,
        weight: w,
    } = inputs;
    match x.0 {
        CpuStorage::F32(_) => stage_quant::<f32>(op, spec, &dev, x, r, w),
        CpuStorage::F16(_) => stage_quant::<f16>(op, spec, &dev, x, r, w),
        CpuStorage::BF16(_) => stage_quant::<bf16>(op, spec, &dev, x, r, w),
        CpuStorage::F64(_) => stage_quant::<f64>(op, spec, &dev, x, r, w),
        other => Err(float_error(op.name(), "xs", other.dtype())),
    }
}

fn stage_quant<T: WithDType + Copy + Default>(
    op: &NormOp,
    spec: &QuantSpec,
    dev: &RocmDevice,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<QuantOut> {
    let mut st = stage_inputs::<T>(op, dev, x, r, w)?;
    let n = st.rows * st.hidden;
    let values = RocmTensor::alloc(dev, spec.dtype.storage_dtype(), n)?;
    let scales = RocmTensor::alloc(dev, DType::F32, st.rows)?;
    let sum = match r {
        Some(_) => Some(RocmTensor::alloc(dev, T::DTYPE, n)?),
        None => None,
    };
    // One byte a value: the row stride in bytes is `hidden`, as set.
    st.call.operands.out = values.addr();
    st.call.operands.sum_out = sum.as_ref().map_or(0, RocmTensor::addr);
    st.call.quant = Some(QuantCall {
        scales: scales.addr(),
        spec: *spec,
    });
    run(dev, &st)?;
    let values = values.to_tensor()?;
    let (values, _) = values.storage_and_layout();
    let Storage::Cpu(values) = &*values else {
        return Err(candle_core::Error::Msg(format!(
            "{}: internal error: values downloaded to another device",
            op.name()
        )));
    };
    Ok(QuantOut {
        values: values.clone(),
        scales: scales.download::<f32>()?,
        sum: sum
            .map(|s| s.download::<T>().map(T::to_cpu_storage_owned))
            .transpose()?,
    })
}
