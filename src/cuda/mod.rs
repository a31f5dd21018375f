//! The CUDA backend (feature `cuda`): runs the kernels of `hip/`, compiled to PTX by
//! `build.rs`, on Candle's stream for the device, honouring layouts and offsets. No device-wide
//! synchronisation: the launch is queued behind whatever Candle queued before.
//!
//! `memory` holds the buffers of a call, `device` the per-device cache and the one `unsafe`
//! launch; this file turns Candle storages into a [`Call`].

mod device;
mod memory;
pub(crate) mod quant;
pub(crate) mod rope;

use crate::error::op_error;
use crate::gpu::abi;
use crate::gpu::call::{Call, Channels, Operands, QuantCall};
use crate::layout::{ChannelLayout, RowLayout};
use crate::op::{Inputs, NormOp, Operand};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::CudaStream;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use memory::{base_ptr, base_ptr_mut, Out};

/// See [`crate::keep_memory_pool`].
pub(crate) fn keep_memory_pool(dev: &CudaDevice) -> Result<()> {
    device::keep_pool(dev)
}

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
        same_dtype(name, "residual", rs, xdt)?;
    }
    let (xp, xlen, _xg) = base_ptr(name, "xs", x.0, &st)?;
    if let Some(d) = op.axis(x.1.dims().len()) {
        let out = forward_channels(op, d, &dev, &st, (xp, xlen, x.1, xdt), r, w)?;
        drop(_xg);
        return Ok((out.into_storage(&dev), op.out_shape(x.1.shape())));
    }
    let xl = RowLayout::checked(name, "xs", x.1, xlen)?;
    let (rows, hidden) = (xl.rows, xl.hidden);
    let n = rows * hidden;

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
            same_rows(name, "residual", rl, rows, hidden)?;
            o.residual = p + rl.offset as u64 * eb;
            o.res_stride = rl.row_stride as u64;
            o.sum_out = op_ptr + n as u64 * eb;
            o.sum_stride = hidden as u64;
            Some(g)
        }
        None => None,
    };
    queue(op, &dev, &st, xdt, (rows, hidden), o, None, w, None)?;
    drop((_xg, _rg, _og));
    Ok((out.into_storage(&dev), op.out_shape(x.1.shape())))
}

/// The forward of a norm over dimension `d` (not the last): x (address, storage length,
/// layout, dtype) and the residual read in place as `outer x channels x inner`, the outputs
/// contiguous in x's shape.
fn forward_channels(
    op: &NormOp,
    d: usize,
    dev: &CudaDevice,
    st: &CudaStream,
    (xp, xlen, xl, xdt): (u64, usize, &Layout, DType),
    r: Option<Operand<'_, CudaStorage>>,
    w: Option<Operand<'_, CudaStorage>>,
) -> Result<Out> {
    let name = op.name();
    let eb = xdt.size_in_bytes() as u64;
    let cl = ChannelLayout::checked(name, "xs", xl, d, xlen)?;
    let n = cl.len();
    let mut out = Out::alloc(name, dev, xdt, if op.fused { 2 * n } else { n })?;
    let (op_ptr, _og) = out.ptr(st);
    let (c, inner) = (cl.channels as u64, cl.inner as u64);
    let mut o = Operands {
        out: op_ptr,
        out_stride: inner,
        x: xp + cl.offset as u64 * eb,
        x_stride: cl.c_stride as u64,
        ..Default::default()
    };
    let mut ch = Channels {
        inner,
        x_outer: cl.outer_stride as u64,
        out_outer: c * inner,
        x_inner: cl.inner_stride as u64,
        ..Default::default()
    };
    let _rg = match r {
        Some((rs, l)) => {
            let (p, len, g) = base_ptr(name, "residual", rs, st)?;
            let rl = ChannelLayout::checked(name, "residual", l, d, len)?;
            if (rl.outer, rl.channels, rl.inner) != (cl.outer, cl.channels, cl.inner) {
                return Err(op_error(
                    name,
                    "residual",
                    format!("the shape of xs {:?}", xl.dims()),
                    format!("shape {:?}", l.dims()),
                ));
            }
            o.residual = p + rl.offset as u64 * eb;
            o.res_stride = rl.c_stride as u64;
            o.sum_out = op_ptr + n as u64 * eb;
            o.sum_stride = inner;
            ch.res_outer = rl.outer_stride as u64;
            ch.res_inner = rl.inner_stride as u64;
            ch.sum_outer = c * inner;
            Some(g)
        }
        None => None,
    };
    queue(
        op,
        dev,
        st,
        xdt,
        (cl.outer, cl.channels),
        o,
        Some(ch),
        w,
        None,
    )?;
    drop((_rg, _og));
    Ok(out)
}

/// The CUDA forward of the in-place ops: `rms_norm` of `target`'s rows into themselves when
/// `xs` is `None`, else the fused op into the pair `target` = `[normed; residual]`.
pub(crate) fn forward_inplace(
    op: &NormOp,
    target: (&mut CudaStorage, &Layout),
    xs: Option<Operand<'_, CudaStorage>>,
    w: Option<Operand<'_, CudaStorage>>,
) -> Result<()> {
    let (ts, tl) = target;
    let name = op.name();
    let dev = ts.device().clone();
    let st = dev.cuda_stream();
    let dt = ts.dtype();
    let eb = dt.size_in_bytes() as u64;
    let arg = if xs.is_some() { "pair" } else { "xs" };
    let (tp, tlen, _tg) = base_ptr_mut(name, arg, ts, &st)?;
    let tr = RowLayout::checked(name, arg, tl, tlen)?;
    let (base, rs) = (tp + tr.offset as u64 * eb, tr.row_stride as u64);
    let Some((xs_s, xs_l)) = xs else {
        // Each lane reads its elements of a row before it writes them (hip/norm_regs.h,
        // hip/norm_loop.h), so out may be x.
        let o = Operands {
            out: base,
            out_stride: rs,
            x: base,
            x_stride: rs,
            ..Default::default()
        };
        queue(op, &dev, &st, dt, (tr.rows, tr.hidden), o, None, w, None)?;
        drop(_tg);
        return Ok(());
    };
    same_dtype(name, "xs", xs_s, dt)?;
    let (xp, xlen, _xg) = base_ptr(name, "xs", xs_s, &st)?;
    let xl = RowLayout::checked(name, "xs", xs_l, xlen)?;
    let n = tr.rows / 2;
    same_rows(name, "xs", xl, n, tr.hidden)?;
    // The residual half is read and overwritten by its sum; the kernels store a sum element
    // only after their last read of that residual element.
    let residual = base + n as u64 * rs * eb;
    let o = Operands {
        out: base,
        out_stride: rs,
        sum_out: residual,
        sum_stride: rs,
        x: xp + xl.offset as u64 * eb,
        x_stride: xl.row_stride as u64,
        residual,
        res_stride: rs,
        weight: 0,
    };
    queue(op, &dev, &st, dt, (n, tr.hidden), o, None, w, None)?;
    drop((_tg, _xg));
    Ok(())
}

fn same_dtype(name: &str, arg: &str, s: &CudaStorage, want: DType) -> Result<()> {
    if s.dtype() == want {
        Ok(())
    } else {
        Err(op_error(
            name,
            arg,
            format!("of the dtype of xs ({want:?})"),
            format!("{:?}", s.dtype()),
        ))
    }
}

fn same_rows(name: &str, arg: &str, l: RowLayout, rows: usize, hidden: usize) -> Result<()> {
    if (l.rows, l.hidden) == (rows, hidden) {
        Ok(())
    } else {
        Err(op_error(
            name,
            arg,
            format!("{rows} rows of {hidden}"),
            format!("{} rows of {}", l.rows, l.hidden),
        ))
    }
}

/// Adds the weight (converted to the dtype the kernel takes when it differs) to the operands
/// `o` of a `rows x hidden` call (with `channels`: outer indices x channels) and queues its
/// launches on `st`. The caller holds the guards of every address already in `o` until this
/// returns.
#[allow(clippy::too_many_arguments)]
fn queue(
    op: &NormOp,
    dev: &CudaDevice,
    st: &CudaStream,
    xdt: DType,
    (rows, hidden): (usize, usize),
    mut o: Operands,
    channels: Option<Channels>,
    w: Option<Operand<'_, CudaStorage>>,
    quant: Option<QuantCall>,
) -> Result<()> {
    let name = op.name();
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
    let _wg = match &weight {
        Some((ws, wl)) => {
            let (p, len, g) = base_ptr(name, "weight", ws, st)?;
            let range = RowLayout::weight_range(name, wl, hidden, len)?;
            o.weight = p + (range.start * w_dtype.size_in_bytes()) as u64;
            Some(g)
        }
        None => None,
    };
    if op.fused != (o.residual != 0) {
        candle_core::bail!("{name}: internal error: the fused op takes a residual");
    }
    let call = Call {
        op: *op,
        x_dtype: xdt,
        w_dtype,
        rows: rows as u64,
        hidden: hidden as u64,
        operands: o,
        channels,
        quant,
    };
    let plan_err = |e| op_error(name, "device", "a supported CUDA device", e);
    let shape = device::shape(dev, st)?;
    // First the kernel and block size, then the grid from how many such blocks fit at once.
    let (kernel, first) = call.plan(shape, 0).map_err(plan_err)?;
    let (func, fit) = device::function(
        dev,
        &kernel,
        first.block,
        first.smem_bytes,
        shape.stage_bytes,
    )?;
    // Measured on the H100 (docs/benchmarks.md): one wave of equal row shares suits the plain
    // op (its blocks prefetch the next row); the fused op, which holds two inputs per row
    // instead, did better with many waves of shorter blocks.
    let (_, plan) = call
        .plan(shape, if op.fused { 0 } else { fit })
        .map_err(plan_err)?;
    for l in call.launches(&plan) {
        // SAFETY: every address lies in a live buffer whose guard is held until after the
        // launch is queued (the weight's here, the others by the caller); each buffer's length
        // was checked against its geometry (`RowLayout::checked` or `ChannelLayout::checked`,
        // `weight_range`). Outputs
        // are fresh buffers of exactly `rows * hidden` elements (twice for the fused op) or, in
        // place, the very rows the kernel reads, each element read by the lane that writes it
        // before the write. `plan` has the block size `func`'s occupancy was asked for.
        unsafe { device::launch(st, &func, plan.block, &l)? };
    }
    drop(_wg);
    Ok(())
}
