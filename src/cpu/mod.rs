//! The CPU backend: converts Candle storages to row jobs and runs the SIMD kernel.

mod channel;
mod inplace;
mod kernel;
pub(crate) mod quant;
pub(crate) mod rope;
mod simd;

pub(crate) use kernel::{tier, Tier};

use crate::config::WeightMode;
use crate::error::{float_error, op_error};
use crate::host::weight_values;
use crate::layout::{ChannelLayout, RowLayout};
use crate::op::{Inputs, NormOp};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape};
use channel::{ChannelJob, Planes};
use half::{bf16, f16};
use kernel::{Job, Rows};
use simd::Elem;
use std::mem::MaybeUninit;

/// The weight, converted once per call to the compute precision, with `1 + w` applied for
/// Gemma (formed in f64 and rounded once: for f32/f16/bf16 weights that equals the f32 sum; for
/// f64 weights it keeps w near -1 accurate); ones when the op has no weight.
fn weight_as<C: Copy>(
    op: &NormOp,
    w: Option<(&CpuStorage, &Layout)>,
    hidden: usize,
    conv: fn(f64) -> C,
) -> Result<Vec<C>> {
    let Some((s, l)) = w else {
        return Ok(vec![conv(1.0); hidden]);
    };
    let add = if op.weight_mode == WeightMode::OffsetOne {
        1.0
    } else {
        0.0
    };
    weight_values(op.name(), s, l, hidden, |e| conv(add + e))
}

/// A new output of `len` elements, written by `write(first n, rest)`, which must initialise
/// every element (the kernels write every element of every row they are given).
///
/// Outputs are freshly allocated like every Candle op result; for large ones, the kernel's
/// first touch of each page dominates, so the buffer is asked to be backed by transparent huge
/// pages (one fault per 2 MiB instead of per 4 KiB) and is first touched by the worker threads
/// in parallel rather than zeroed up front.
fn fill_output<T>(
    len: usize,
    n: usize,
    write: impl FnOnce(&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge_pages(v.as_mut_ptr() as *mut u8, len * std::mem::size_of::<T>());
    let (out, sum) = v.spare_capacity_mut()[..len].split_at_mut(n);
    write(out, sum);
    // SAFETY: `write` initialised all `len` elements (see above); capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes < 4 * HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: advice only: the range lies inside the allocation just made, and
        // MADV_HUGEPAGE changes neither its contents nor its validity. Failure is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *mut u8, _bytes: usize) {}

fn rows_of<'a, T>(
    op: &NormOp,
    arg: &str,
    data: &'a [T],
    l: &Layout,
) -> Result<(Rows<'a, T>, RowLayout)> {
    let rl = RowLayout::checked(op.name(), arg, l, data.len())?;
    Ok((
        Rows {
            data,
            offset: rl.offset,
            stride: rl.row_stride,
        },
        rl,
    ))
}

/// The kernel entry of one precision: rows of `T`, arithmetic and weight in `C`.
type Kernel<T, C> = fn(&Job<'_, T, C>, &mut [MaybeUninit<T>], &mut [MaybeUninit<T>]);

/// The kernel entry of a norm over another dimension than the last.
type ChannelKernel<T, C> = fn(&ChannelJob<'_, T, C>, &mut [MaybeUninit<T>], &mut [MaybeUninit<T>]);

/// One precision's arithmetic: weight conversion and the two kernels.
struct Math<T, C> {
    conv: fn(f64) -> C,
    rows: Kernel<T, C>,
    channels: ChannelKernel<T, C>,
}

/// A norm over dimension `dim` (not the last) of `x`: the channel job, into a new output.
fn run_channels<T, C: Copy>(
    op: &NormOp,
    dim: usize,
    x: (&[T], &Layout),
    r: Option<(&[T], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
    m: &Math<T, C>,
) -> Result<Vec<T>> {
    fn planes<'a, T>(
        op: &NormOp,
        dim: usize,
        arg: &str,
        x: (&'a [T], &Layout),
    ) -> Result<Planes<'a, T>> {
        let l = ChannelLayout::checked(op.name(), arg, x.1, dim, x.0.len())?;
        Ok(Planes { data: x.0, l })
    }
    let xp = planes(op, dim, "xs", x)?;
    let residual = r.map(|r| planes(op, dim, "residual", r)).transpose()?;
    let (channels, n) = (xp.l.channels, xp.l.len());
    let job = ChannelJob {
        x: xp,
        residual,
        weight: &weight_as(op, w, channels, m.conv)?,
        var_size: op.var_size(channels),
        eps: (m.conv)(op.eps_arg(channels)),
        eps_mode: op.eps_mode,
        rounding: op.rounding,
    };
    let len = if job.residual.is_some() { 2 * n } else { n };
    Ok(fill_output(len, n, |out, sum| (m.channels)(&job, out, sum)))
}

/// Builds the row job for `x` (and `residual`), converts the weight to `C` with `conv`, and
/// runs the kernel into a new output (`[normed; sum]` for the fused op, see `ops`); a norm
/// over another dimension than the last goes to [`run_channels`].
fn run<T, C: Copy>(
    op: &NormOp,
    x: (&[T], &Layout),
    r: Option<(&[T], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
    m: &Math<T, C>,
) -> Result<Vec<T>> {
    if let Some(dim) = op.axis(x.1.dims().len()) {
        return run_channels(op, dim, x, r, w, m);
    }
    let weight = weight_as(op, w, last_dim(x.1), m.conv)?;
    let (job, xl) = row_job(op, x, r, &weight, m.conv)?;
    let n = xl.rows * xl.hidden;
    let len = if job.residual.is_some() { 2 * n } else { n };
    Ok(fill_output(len, n, |out, sum| (m.rows)(&job, out, sum)))
}

/// The size of the last dimension of `l` (rank >= 1, checked by the API).
fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

/// The row job of `x` (and `residual`) with `weight` (of [`last_dim`] elements, in the compute
/// precision `C`); also the rows of `x`.
fn row_job<'a, T, C: Copy>(
    op: &NormOp,
    x: (&'a [T], &Layout),
    r: Option<(&'a [T], &Layout)>,
    weight: &'a [C],
    conv: fn(f64) -> C,
) -> Result<(Job<'a, T, C>, RowLayout)> {
    let (xr, xl) = rows_of(op, "xs", x.0, x.1)?;
    let residual = match r {
        Some((d, l)) => Some(rows_of(op, "residual", d, l)?.0),
        None => None,
    };
    let job = Job {
        x: xr,
        residual,
        weight,
        hidden: xl.hidden,
        var_size: op.var_size(xl.hidden),
        eps: conv(op.eps_arg(xl.hidden)),
        eps_mode: op.eps_mode,
        rounding: op.rounding,
    };
    Ok((job, xl))
}

/// The arithmetic of f32, f16 and bf16 storage: the weight and eps in f32, the f32 kernels.
fn f32_math<T: Elem>() -> Math<T, f32> {
    Math {
        conv: |v| v as f32,
        rows: kernel::run_f32::<T>,
        channels: channel::run_f32::<T>,
    }
}

/// The arithmetic of f64 storage: f64 throughout.
fn f64_math() -> Math<f64, f64> {
    Math {
        conv: |v| v,
        rows: kernel::run_f64,
        channels: channel::run_f64,
    }
}

/// The error for a residual whose dtype is not that of `xs`.
fn residual_dtype_error(op: &NormOp, xs: &CpuStorage, residual: &CpuStorage) -> candle_core::Error {
    op_error(
        op.name(),
        "residual",
        format!("of the dtype of xs ({:?})", xs.dtype()),
        format!("{:?}", residual.dtype()),
    )
}

/// The CPU forward of every op variant.
pub(crate) fn forward(op: &NormOp, inputs: Inputs<'_, CpuStorage>) -> Result<(CpuStorage, Shape)> {
    let Inputs {
        x,
        residual: r,
        weight: w,
    } = inputs;
    let shape = op.out_shape(x.1.shape());
    macro_rules! go {
        ($variant:ident, $math:expr) => {{
            let m = $math;
            let xs = match x.0 {
                CpuStorage::$variant(d) => d.as_slice(),
                _ => unreachable!(),
            };
            let rs = match r {
                None => None,
                Some((CpuStorage::$variant(d), l)) => Some((d.as_slice(), l)),
                Some((other, _)) => return Err(residual_dtype_error(op, x.0, other)),
            };
            CpuStorage::$variant(run(op, (xs, x.1), rs, w, &m)?)
        }};
    }
    let storage = match x.0.dtype() {
        DType::F32 => go!(F32, f32_math::<f32>()),
        DType::F16 => go!(F16, f32_math::<f16>()),
        DType::BF16 => go!(BF16, f32_math::<bf16>()),
        DType::F64 => go!(F64, f64_math()),
        other => return Err(float_error(op.name(), "xs", other)),
    };
    Ok((storage, shape))
}

/// The CPU forward of the in-place ops: `rms_norm` into `target` itself when `xs` is `None`,
/// else the fused op into the pair `target` = `[normed; residual]` (see `inplace`).
pub(crate) fn forward_inplace(
    op: &NormOp,
    target: (&mut CpuStorage, &Layout),
    xs: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<()> {
    let (storage, l) = target;
    let dtype = storage.dtype();
    macro_rules! go {
        ($variant:ident, $math:expr) => {{
            let Math { conv, rows: k, .. } = $math;
            let CpuStorage::$variant(d) = storage else {
                unreachable!()
            };
            let xs = match xs {
                None => None,
                Some((CpuStorage::$variant(x), xl)) => Some((x.as_slice(), xl)),
                Some((other, _)) => {
                    return Err(op_error(
                        op.name(),
                        "xs",
                        format!("of the dtype of pair ({dtype:?})"),
                        format!("{:?}", other.dtype()),
                    ))
                }
            };
            inplace::run(op, d.as_mut_slice(), l, xs, w, conv, k)
        }};
    }
    match dtype {
        DType::F32 => go!(F32, f32_math::<f32>()),
        DType::F16 => go!(F16, f32_math::<f16>()),
        DType::BF16 => go!(BF16, f32_math::<bf16>()),
        DType::F64 => go!(F64, f64_math()),
        other => Err(float_error(op.name(), "xs", other)),
    }
}

/// The name of the instruction-set tier the CPU path uses on this machine.
pub fn cpu_tier_name() -> &'static str {
    match tier() {
        Tier::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2(_) => "avx2+fma+f16c",
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512(_) => "avx512",
    }
}
