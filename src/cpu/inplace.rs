//! In-place runs of the row kernel: `rms_norm` over the rows of `xs` written back into them, and
//! the fused op into a pair buffer `[normed; residual]` whose residual half becomes the sum.
//!
//! Each row is first copied into a row-sized scratch buffer (it stays in L1/L2), and the same
//! kernel as the out-of-place op reads the copy and writes the row in place, so the results are
//! bitwise those of the out-of-place op and memory sees one read and one write per element.

use super::kernel::{self, Job, Rows};
use super::{weight_as, Kernel};
use crate::layout::RowLayout;
use crate::op::NormOp;
use candle_core::{CpuStorage, Layout, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The elements of a row as the kernel's output type.
fn as_uninit<T: Copy>(s: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the kernel only writes initialised values
    // of a `Copy` type into it, so the slice stays initialised for its owner.
    unsafe { &mut *(s as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// One row of `d.len()` elements.
fn contiguous<T>(d: &[T]) -> Rows<'_, T> {
    Rows {
        data: d,
        offset: 0,
        stride: d.len(),
    }
}

/// The in-place op on storage `data` of layout `l`: `rms_norm` of its rows when `xs` is `None`,
/// else the fused op with `data` the pair `[normed; residual]` (shape `[2, ..xs]`) and `xs` the
/// addend. `conv` and `kernel` are the precision's, as in the out-of-place `run`.
pub(super) fn run<T: Copy + Send + Sync, C: Copy + Sync>(
    op: &NormOp,
    data: &mut [T],
    l: &Layout,
    xs: Option<(&[T], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
    conv: fn(f64) -> C,
    kernel: Kernel<T, C>,
) -> Result<()> {
    let target = if xs.is_some() { "pair" } else { "xs" };
    let tl = RowLayout::checked(op.name(), target, l, data.len())?;
    let (h, rs) = (tl.hidden, tl.row_stride);
    let weight = weight_as(op, w, h, conv)?;
    // Every row's job: this one with its own rows.
    let base = Job {
        x: contiguous(&[]),
        residual: None,
        weight: &weight,
        hidden: h,
        var_size: op.var_size(h),
        eps: conv(op.eps_arg(h)),
        eps_mode: op.eps_mode,
        rounding: op.rounding,
    };
    let per_task = |rows| kernel::rows_per_task(rows, h, std::mem::size_of::<T>());
    let region = &mut data[tl.offset..];
    match xs {
        None => {
            let per = per_task(tl.rows);
            region
                .par_chunks_mut(rs)
                .take(tl.rows)
                .with_min_len(per)
                .for_each_init(
                    || Vec::with_capacity(h),
                    |scratch: &mut Vec<T>, row| {
                        let row = &mut row[..h];
                        scratch.clear();
                        scratch.extend_from_slice(row);
                        let j = Job {
                            x: contiguous(scratch),
                            ..base
                        };
                        kernel(&j, as_uninit(row), &mut []);
                    },
                );
        }
        Some((xd, xl)) => {
            let n = tl.rows / 2;
            let xr = RowLayout::checked(op.name(), "xs", xl, xd.len())?;
            let (normed, residual) = region.split_at_mut(n * rs);
            let per = per_task(n);
            normed
                .par_chunks_mut(rs)
                .zip(residual.par_chunks_mut(rs))
                .take(n)
                .enumerate()
                .with_min_len(per)
                .for_each_init(
                    || Vec::with_capacity(h),
                    |scratch: &mut Vec<T>, (r, (out, sum))| {
                        let sum = &mut sum[..h];
                        scratch.clear();
                        scratch.extend_from_slice(sum);
                        let x = Rows {
                            data: xd,
                            offset: xr.offset + r * xr.row_stride,
                            stride: xr.row_stride,
                        };
                        let j = Job {
                            x,
                            residual: Some(contiguous(scratch)),
                            ..base
                        };
                        kernel(&j, as_uninit(&mut out[..h]), as_uninit(sum));
                    },
                );
        }
    }
    Ok(())
}
