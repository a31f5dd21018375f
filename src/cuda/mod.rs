//! The CUDA backend (feature `cuda`): runs the kernels of `hip/`, compiled to PTX by
//! `build.rs`, on Candle's stream for the device, honouring layouts and offsets. No device-wide
//! synchronisation: the launch is queued behind whatever Candle queued before.
//!
//! `memory` holds the buffers of a call, `device` the per-device cache and the one `unsafe`
//! launch; this file turns Candle storages into a [`Call`].

mod device;
mod memory;

use crate::error::op_error;
use crate::gpu::abi;
use crate::gpu::call::{Call, Operands};
use crate::layout::RowLayout;
use crate::op::{Inputs, NormOp};
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Layout, Result, Shape};
use memory::{base_ptr, Out};

/// The CUDA forward of every op variant (operands as in `custom_op`).
pub(crate) fn forward(
    op: &NormOp,
    inputs: Inputs<'_, CudaStorage>,
) -> Result<(CudaStorage, Shape)> {
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
        if rs.dtype() != xdt {
            return Err(op_error(
                name,
                "residual",
                format!("of the dtype of xs ({xdt:?})"),
                format!("{:?}", rs.dtype()),
            ));
        }
    }
    let (xp, xlen, _xg) = base_ptr(name, "xs", x.0, &st)?;
    let xl = RowLayout::checked(name, "xs", x.1, xlen)?;
    let (rows, hidden) = (xl.rows, xl.hidden);
    let n = rows * hidden;

    // The weight, converted to the dtype the kernel takes when it differs.
    let w_dtype = abi::kernel_weight_dtype(xdt, w.map_or(xdt, |(ws, _)| ws.dtype()));
    let w_conv = match w {
        Some((ws, wl)) if ws.dtype() != w_dtype => Some((ws.to_dtype(wl, w_dtype)?, wl)),
        _ => None,
    };
    let weight = match (&w_conv, w) {
        (Some((c, wl)), _) => Some((c, Layout::contiguous(wl.shape()))),
        (None, Some((ws, wl))) => Some((ws, wl.clone())),
        (None, None) => None,
    };

    let mut out = Out::alloc(name, &dev, xdt, if op.fused { 2 * n } else { n })?;
    let (op_ptr, _og) = out.ptr(&st);
    let mut o = Operands {
        out: op_ptr,
        out_stride: hidden as u64,
        x: xp + xl.offset as u64 * eb,
        x_stride: xl.row_stride as u64,
        ..Default::default()
    };
    let _rg = match r {
        Some((rs, l)) => {
            let (p, len, g) = base_ptr(name, "residual", rs, &st)?;
            let rl = RowLayout::checked(name, "residual", l, len)?;
            if (rl.rows, rl.hidden) != (rows, hidden) {
                return Err(op_error(
                    name,
                    "residual",
                    format!("of the shape of xs {:?}", x.1.dims()),
                    format!("shape {:?}", l.dims()),
                ));
            }
            o.residual = p + rl.offset as u64 * eb;
            o.res_stride = rl.row_stride as u64;
            o.sum_out = op_ptr + n as u64 * eb;
            o.sum_stride = hidden as u64;
            Some(g)
        }
        None => None,
    };
    let _wg = match &weight {
        Some((ws, wl)) => {
            let (p, len, g) = base_ptr(name, "weight", ws, &st)?;
            let range = RowLayout::weight_range(name, wl, hidden, len)?;
            o.weight = p + (range.start * w_dtype.size_in_bytes()) as u64;
            Some(g)
        }
        None => None,
    };
    if op.fused != r.is_some() {
        candle_core::bail!("{name}: internal error: the fused op takes a residual");
    }
    let call = Call {
        op: *op,
        x_dtype: xdt,
        w_dtype,
        rows: rows as u64,
        hidden: hidden as u64,
        operands: o,
    };
    let plan_err = |e| op_error(name, "device", "a supported CUDA device", e);
    let shape = device::shape(&dev, &st)?;
    // First the kernel and block size, then the grid from how many such blocks fit at once.
    let (kernel, first) = call.plan(shape, 0).map_err(plan_err)?;
    let (func, fit) = device::function(&dev, &kernel, first.block)?;
    // Measured on the H100 (docs/benchmarks.md): one wave of equal row shares suits the plain
    // op (its blocks prefetch the next row); the fused op, which holds two inputs per row
    // instead, did better with many waves of shorter blocks.
    let (_, plan) = call
        .plan(shape, if op.fused { 0 } else { fit })
        .map_err(plan_err)?;
    for l in call.launches(&plan) {
        // SAFETY: every address lies in a live buffer whose guard (`_xg`, `_rg`, `_wg`, `_og`)
        // is held until after the launch is queued; each buffer's length was checked against
        // its row geometry above (`RowLayout::checked`, `weight_range`), and the output was
        // allocated for exactly `rows * hidden` elements (twice for the fused op), so it
        // overlaps no input. `plan` has the block size `func`'s occupancy was asked for.
        unsafe { device::launch(&st, &func, plan.block, &l)? };
    }
    drop((_xg, _rg, _wg, _og));
    Ok((out.into_storage(&dev), op.out_shape(x.1.shape())))
}
