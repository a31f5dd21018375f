//! The quantised ops on the CPU: each task normalises a block of rows into a buffer that stays
//! in cache with the row kernel (so `y` is bit for bit what `rms_norm` returns), then quantises
//! those rows; memory sees the input read once and the bytes (and the fused sum) written once.

use super::kernel::{arr, rows_f32, rows_f64, rows_per_task, tier, Job, Tier};
#[cfg(target_arch = "x86_64")]
use super::simd::{avx2_fn, avx512_fn, Avx2, Avx512};
use super::simd::{Elem, Isa, Portable};
use super::{last_dim, residual_dtype_error, row_job, weight_as};
use crate::error::float_error;
use crate::host::QuantOut;
use crate::op::{Inputs, NormOp};
use crate::quant::{quantise_row, QuantDType, QuantSpec};
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cpu_backend::CpuDevice;
use candle_core::{CpuStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The rows a task normalises before quantising them: about this many bytes of `y`.
const BLOCK_BYTES: usize = 32 << 10;

/// Quantises one row of `y` into its bytes through the f32 buffer `yf`; the row's scale.
type QuantRowFn<T> = fn(&QuantSpec, &[T], &mut [f32], &mut [u8]) -> f32;

/// `y` widened to f32 in `yf`, 16 lanes at a time through `isa`, then quantised (the encoding
/// vectorises in the tier's `target_feature` context).
#[inline(always)]
fn quant_row_isa<T: Elem, I: Isa>(
    isa: I,
    spec: &QuantSpec,
    y: &[T],
    yf: &mut [f32],
    q: &mut [u8],
) -> f32 {
    let n16 = y.len() / 16 * 16;
    for (yc, fc) in y[..n16]
        .chunks_exact(16)
        .zip(yf[..n16].chunks_exact_mut(16))
    {
        let v = T::load(isa, arr(yc));
        fc.copy_from_slice(&isa.to_array(v));
    }
    for (f, &e) in yf[n16..].iter_mut().zip(&y[n16..]) {
        *f = e.to_f32();
    }
    quantise_row(spec, &yf[..y.len()], q)
}

/// [`quant_row_isa`] compiled for one x86 tier (`$tier_fn`: its `target_feature` wrapper).
macro_rules! quant_row_tier {
    ($name:ident, $isa:ty, $tier_fn:ident) => {
        #[cfg(target_arch = "x86_64")]
        $tier_fn! {
            fn $name<T: Elem>(
                isa: $isa,
                s: &QuantSpec,
                y: &[T],
                yf: &mut [f32],
                q: &mut [u8],
            ) -> f32 {
                quant_row_isa(isa, s, y, yf, q)
            }
        }
    };
}
quant_row_tier!(quant_row_avx2, Avx2, avx2_fn);
quant_row_tier!(quant_row_avx512, Avx512, avx512_fn);

/// [`QuantRowFn`] of a 16- or 32-bit float, in this CPU's widest tier.
fn quant_row<T: Elem>(spec: &QuantSpec, y: &[T], yf: &mut [f32], q: &mut [u8]) -> f32 {
    match tier() {
        Tier::Portable => quant_row_isa(Portable, spec, y, yf, q),
        // SAFETY: an `Avx2` value exists only where `Avx2::detect` found every feature the
        // function is compiled with.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2(i) => unsafe { quant_row_avx2(i, spec, y, yf, q) },
        // SAFETY: likewise for `Avx512::detect`.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512(i) => unsafe { quant_row_avx512(i, spec, y, yf, q) },
    }
}

/// [`QuantRowFn`] of f64: `y` rounded to f32, then quantised.
fn quant_row_f64(spec: &QuantSpec, y: &[f64], yf: &mut [f32], q: &mut [u8]) -> f32 {
    for (f, &e) in yf.iter_mut().zip(y) {
        *f = e as f32;
    }
    quantise_row(spec, &yf[..y.len()], q)
}

/// The rows kernel of one precision: rows `row0..` of the job into `out` (and `sum`).
type RowsFn<T, C> = fn(&Job<'_, T, C>, usize, &mut [MaybeUninit<T>], &mut [MaybeUninit<T>]);

/// A new storage of `n` bytes of the values' dtype, every byte written by `write`.
fn value_storage(dtype: QuantDType, n: usize, write: impl FnOnce(&mut [u8])) -> Result<CpuStorage> {
    match dtype {
        QuantDType::I8 => {
            let mut v = vec![0u8; n];
            write(&mut v);
            Ok(CpuStorage::U8(v))
        }
        QuantDType::F8E4M3 => {
            // SAFETY: the storage is read only after `write` has set all `n` bytes (below).
            let mut s = unsafe { CpuDevice.alloc_uninit(&Shape::from(n), DType::F8E4M3)? };
            let CpuStorage::F8E4M3(v) = &mut s else {
                unreachable!("Candle allocates F8E4M3 storage for DType::F8E4M3")
            };
            assert_eq!(std::mem::size_of_val(v.as_slice()), v.len());
            // SAFETY: Candle's F8E4M3 is one byte (`repr(transparent)` over u8, checked above),
            // so its `n` elements are `n` bytes of the allocation; they are zeroed at once, before
            // anything reads them, so no uninitialised byte is ever read.
            let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n) };
            bytes.fill(0);
            write(bytes);
            Ok(s)
        }
    }
}

/// Normalises and quantises every row of `job` into `q` and `scales` (and the fused sums into
/// `sum`, empty otherwise), in parallel over blocks of rows.
fn drive<T: Copy + Send + Sync, C: Sync>(
    job: &Job<'_, T, C>,
    rows_fn: RowsFn<T, C>,
    quant: QuantRowFn<T>,
    spec: &QuantSpec,
    q: &mut [u8],
    scales: &mut [f32],
    sum: &mut [MaybeUninit<T>],
) {
    let h = job.hidden;
    let rows = scales.len();
    if rows == 0 || h == 0 {
        return;
    }
    let fused = job.residual.is_some();
    let task = |row0: usize, q: &mut [u8], sc: &mut [f32], s: &mut [MaybeUninit<T>]| {
        let n_rows = sc.len();
        let block = (BLOCK_BYTES / (h * std::mem::size_of::<T>())).clamp(1, n_rows);
        let mut y: Vec<MaybeUninit<T>> = Vec::with_capacity(block * h);
        y.resize_with(block * h, MaybeUninit::uninit);
        let mut yf = vec![0f32; h];
        for b in (0..n_rows).step_by(block) {
            let n = block.min(n_rows - b);
            let yb = &mut y[..n * h];
            let sb: &mut [MaybeUninit<T>] = if fused {
                &mut s[b * h..(b + n) * h]
            } else {
                &mut []
            };
            rows_fn(job, row0 + b, yb, sb);
            // SAFETY: `rows_fn` wrote every element of the `n` rows of `yb`, and
            // `MaybeUninit<T>` has the layout of `T`.
            let yb = unsafe { std::slice::from_raw_parts(yb.as_ptr() as *const T, n * h) };
            for r in 0..n {
                let qr = &mut q[(b + r) * h..(b + r + 1) * h];
                sc[b + r] = quant(spec, &yb[r * h..(r + 1) * h], &mut yf, qr);
            }
        }
    };
    let per = rows_per_task(rows, h, std::mem::size_of::<T>());
    if per >= rows {
        return task(0, q, scales, sum);
    }
    let qs = q.par_chunks_mut(per * h).zip(scales.par_chunks_mut(per));
    if fused {
        qs.zip(sum.par_chunks_mut(per * h))
            .enumerate()
            .for_each(|(t, ((q, sc), s))| task(t * per, q, sc, s));
    } else {
        qs.enumerate()
            .for_each(|(t, (q, sc))| task(t * per, q, sc, &mut []));
    }
}

/// The job of `x` (and `residual`) with the weight in `C`, run through `drive` into new
/// outputs.
#[allow(clippy::too_many_arguments)]
fn run<T: Copy + Send + Sync, C: Copy + Sync>(
    op: &NormOp,
    spec: &QuantSpec,
    x: (&[T], &Layout),
    r: Option<(&[T], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
    conv: fn(f64) -> C,
    rows_fn: RowsFn<T, C>,
    quant: QuantRowFn<T>,
) -> Result<(CpuStorage, Vec<f32>, Option<Vec<T>>)> {
    let weight = weight_as(op, w, last_dim(x.1), conv)?;
    let (job, xl) = row_job(op, x, r, &weight, conv)?;
    let n = xl.rows * xl.hidden;
    let mut scales = vec![0f32; xl.rows];
    let mut sum: Vec<T> = Vec::new();
    let values = value_storage(spec.dtype, n, |q| {
        if job.residual.is_some() {
            sum = Vec::with_capacity(n);
            let s = &mut sum.spare_capacity_mut()[..n];
            drive(&job, rows_fn, quant, spec, q, &mut scales, s);
            // SAFETY: the fused rows kernel wrote all `n` sums (every row of every block).
            unsafe { sum.set_len(n) };
        } else {
            drive(&job, rows_fn, quant, spec, q, &mut scales, &mut []);
        }
    })?;
    let sum = job.residual.is_some().then_some(sum);
    Ok((values, scales, sum))
}

/// The CPU forward of `rms_norm_quant` and `fused_add_rms_norm_quant` (rows over the last
/// dimension; the API has checked the options).
pub(crate) fn forward(
    op: &NormOp,
    spec: &QuantSpec,
    inputs: Inputs<'_, CpuStorage>,
) -> Result<QuantOut> {
    let Inputs {
        x,
        residual: r,
        weight: w,
    } = inputs;
    macro_rules! go {
        ($variant:ident, $conv:expr, $rows:expr, $quant:expr) => {{
            let CpuStorage::$variant(xs) = x.0 else {
                unreachable!()
            };
            let rs = match r {
                None => None,
                Some((CpuStorage::$variant(d), l)) => Some((d.as_slice(), l)),
                Some((other, _)) => return Err(residual_dtype_error(op, x.0, other)),
            };
            let (values, scales, sum) =
                run(op, spec, (xs.as_slice(), x.1), rs, w, $conv, $rows, $quant)?;
            QuantOut {
                values,
                scales,
                sum: sum.map(CpuStorage::$variant),
            }
        }};
    }
    Ok(match x.0.dtype() {
        DType::F32 => go!(F32, |v| v as f32, rows_f32::<f32>, quant_row::<f32>),
        DType::F16 => go!(F16, |v| v as f32, rows_f32::<f16>, quant_row::<f16>),
        DType::BF16 => go!(BF16, |v| v as f32, rows_f32::<bf16>, quant_row::<bf16>),
        DType::F64 => go!(F64, |v| v, rows_f64, quant_row_f64),
        other => return Err(float_error(op.name(), "xs", other)),
    })
}
