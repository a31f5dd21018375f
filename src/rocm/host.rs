//! The Candle ops on host tensors with `Backend::Rocm`: upload the rows, launch, wait,
//! download. It moves about twice the tensor's bytes over PCIe on top of the kernel's traffic.

use super::device::RocmDevice;
use super::memory::RocmTensor;
use crate::error::{float_error, op_error};
use crate::gpu::abi::kernel_weight_dtype;
use crate::gpu::call::{Call, Operands};
use crate::host::weight_values;
use crate::layout::RowLayout;
use crate::op::{Inputs, NormOp};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, WithDType};
use half::{bf16, f16};

/// The device the host-tensor path uses: HIP device 0 (choose another with
/// `HIP_VISIBLE_DEVICES`).
///
/// # Errors
/// Why ROCm cannot be used here: no runtime library, no device, or no code object for it.
pub fn default_device() -> Result<RocmDevice> {
    RocmDevice::new(0)
}

/// The forward of every op variant on host storages (operands as in `custom_op`).
pub(crate) fn forward(op: &NormOp, inputs: Inputs<'_, CpuStorage>) -> Result<(CpuStorage, Shape)> {
    let Inputs {
        x,
        residual: r,
        weight: w,
    } = inputs;
    let dev = default_device().map_err(|e| {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| log::warn!("candle-rmsnorm: backend rocm is unavailable: {e}"));
        candle_core::Error::Msg(format!("{}: backend rocm is unavailable: {e}", op.name()))
    })?;
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
    let span = &data[rl.offset..rl.end()];
    let t = RocmTensor::alloc(dev, T::DTYPE, span.len())?;
    t.upload(span, 0)?;
    Ok((t, rl))
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

fn stage<T: WithDType + Copy + Default>(
    op: &NormOp,
    dev: &RocmDevice,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
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
    let (wd, w_dtype) = match w {
        Some((s, l)) => {
            let (t, kd) = upload_weight::<T>(op, dev, s, l, hidden)?;
            (Some(t), kd)
        }
        None => (None, T::DTYPE),
    };
    let n = rows * hidden;
    let out = RocmTensor::alloc(dev, T::DTYPE, if op.fused { 2 * n } else { n })?;
    let elem = T::DTYPE.size_in_bytes() as u64;
    let h = hidden as u64;
    let call = Call {
        op: *op,
        x_dtype: T::DTYPE,
        w_dtype,
        rows: rows as u64,
        hidden: h,
        operands: Operands {
            out: out.addr(),
            out_stride: h,
            sum_out: if op.fused {
                out.addr() + n as u64 * elem
            } else {
                0
            },
            sum_stride: if op.fused { h } else { 0 },
            // The uploads start at the first row: offsets relative to the copies.
            x: xd.addr(),
            x_stride: xl.row_stride as u64,
            residual: rd.as_ref().map_or(0, |(t, _)| t.addr()),
            res_stride: rd.as_ref().map_or(0, |(_, rl)| rl.row_stride as u64),
            weight: wd.as_ref().map_or(0, RocmTensor::addr),
        },
        channels: None,
        quant: None,
    };
    let stream = dev.stream()?;
    // SAFETY: x and residual were uploaded as the exact spans their row layouts cover (first
    // row at the start of the copy, same strides), the weight holds `hidden` elements of
    // `w_dtype`, `out` holds `[normed; sum]` with row stride `hidden` and is fresh, so it
    // overlaps no input; all live on `dev` until `download` below has synchronised the device.
    unsafe { dev.launch(stream.raw(), &call)? };
    let v = out.download::<T>()?;
    Ok((T::to_cpu_storage_owned(v), op.out_shape(x.1.shape())))
}
