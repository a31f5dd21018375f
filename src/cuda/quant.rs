//! The CUDA forward of the quantised ops: fresh values (`F8E4M3` or `U8`), f32 scales and, for
//! the fused op, sums, written by one queued call of the `_quant` kernels.

use super::memory::{base_ptr, bytes_ptr_mut, Out};
use super::{queue, same_dtype, same_rows};
use crate::gpu::call::{Operands, QuantCall};
use crate::layout::RowLayout;
use crate::op::{Inputs, NormOp};
use crate::quant::QuantSpec;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda::cudarc::driver::DevicePtrMut;
use candle_core::{CudaStorage, Result, Shape};

/// What a quantised op returns on a CUDA device.
pub(crate) struct QuantOut {
    pub values: CudaStorage,
    pub scales: CudaStorage,
    pub sum: Option<CudaStorage>,
}

/// `rms_norm_quant` / `fused_add_rms_norm_quant` of rows over the last dimension (the API has
/// checked the options and devices).
pub(crate) fn forward(
    op: &NormOp,
    spec: &QuantSpec,
    inputs: Inputs<'_, CudaStorage>,
) -> Result<QuantOut> {
    let Inputs {
        x,
        residual: r,
        weight: w,
    } = inputs;
    let name = op.name();
    let dev = x.0.device().clone();
    let st = dev.cuda_stream();
    let xdt = x.0.dtype();
    let eb = xdt.size_in_bytes() as u64;
    if let Some((rs, _)) = r {
        same_dtype(name, "residual", rs, xdt)?;
    }
    let (xp, xlen, _xg) = base_ptr(name, "xs", x.0, &st)?;
    let xl = RowLayout::checked(name, "xs", x.1, xlen)?;
    let (rows, hidden) = (xl.rows, xl.hidden);
    let n = rows * hidden;
    // SAFETY: nothing reads these buffers before the kernel has written them in full: every
    // value byte and scale of every row, and every sum element (the launches cover all rows).
    let (mut values, mut scales) = unsafe {
        (
            dev.alloc_uninit(&Shape::from(n), spec.dtype.storage_dtype())?,
            dev.alloc::<f32>(rows)?,
        )
    };
    let mut sum = match r {
        Some(_) => Some(Out::alloc(name, &dev, xdt, n)?),
        None => None,
    };
    let (vp, _vg) = bytes_ptr_mut(&mut values, &st);
    let (sp, _sg) = scales.device_ptr_mut(&st);
    let sum_ptr = sum.as_mut().map(|s| s.ptr(&st));
    let mut o = Operands {
        out: vp,
        out_stride: hidden as u64,
        x: xp + xl.offset as u64 * eb,
        x_stride: xl.row_stride as u64,
        ..Default::default()
    };
    let _rg = match (r, &sum_ptr) {
        (Some((rs, l)), Some((sum_p, _))) => {
            let (p, len, g) = base_ptr(name, "residual", rs, &st)?;
            let rl = RowLayout::checked(name, "residual", l, len)?;
            same_rows(name, "residual", rl, rows, hidden)?;
            o.residual = p + rl.offset as u64 * eb;
            o.res_stride = rl.row_stride as u64;
            o.sum_out = *sum_p;
            o.sum_stride = hidden as u64;
            Some(g)
        }
        _ => None,
    };
    let q = QuantCall {
        scales: sp,
        spec: *spec,
    };
    queue(op, &dev, &st, xdt, (rows, hidden), o, None, w, Some(q))?;
    drop((_xg, _rg, _vg, _sg, sum_ptr));
    Ok(QuantOut {
        values,
        scales: CudaStorage::wrap_cuda_slice(scales, dev.clone()),
        sum: sum.map(|s| s.into_storage(&dev)),
    })
}
