//! The quantised ops on the CPU: each task normalises a block of rows into a buffer that stays
//! in cache with the row kernel (so `y` is bit for bit what `rms_norm` returns), then quantises
//! those rows; memory sees the input read once and the bytes (and the fused sum) written once.

use super::kernel::{rows_f32, rows_f64, rows_per_task, Job};
use super::simd::Elem;
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

/// An element of `y` as the quantiser reads it: f32 (f64 rounded to f32).
trait ToF32: Copy + Send + Sync {
    fn f32(self) -> f32;
}
impl<T: Elem + Send + Sync> ToF32 for T {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
}
#[derive(Clone, Copy)]
struct F64(f64);
impl ToF32 for F64 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.0 as f32
    }
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
fn drive<T: Copy + Send + Sync, C: Sync, Y: ToF32>(
    job: &Job<'_, T, C>,
    rows_fn: RowsFn<T, C>,
    as_y: fn(T) -> Y,
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
            for r in 0..n {
                for (f, e) in yf.iter_mut().zip(&yb[r * h..(r + 1) * h]) {
                    // SAFETY: `rows_fn` wrote every element of the `n` rows of `yb`.
                    *f = as_y(unsafe { e.assume_init() }).f32();
                }
                sc[b + r] = quantise_row(spec, &yf, &mut q[(b + r) * h..(b + r + 1) * h]);
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
fn run<T: Copy + Send + Sync, C: Copy + Sync, Y: ToF32>(
    op: &NormOp,
    spec: &QuantSpec,
    x: (&[T], &Layout),
    r: Option<(&[T], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
    conv: fn(f64) -> C,
    rows_fn: RowsFn<T, C>,
    as_y: fn(T) -> Y,
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
            drive(&job, rows_fn, as_y, spec, q, &mut scales, s);
            // SAFETY: the fused rows kernel wrote all `n` sums (every row of every block).
            unsafe { sum.set_len(n) };
        } else {
            drive(&job, rows_fn, as_y, spec, q, &mut scales, &mut []);
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
        ($variant:ident, $conv:expr, $rows:expr, $as_y:expr) => {{
            let CpuStorage::$variant(xs) = x.0 else {
                unreachable!()
            };
            let rs = match r {
                None => None,
                Some((CpuStorage::$variant(d), l)) => Some((d.as_slice(), l)),
                Some((other, _)) => return Err(residual_dtype_error(op, x.0, other)),
            };
            let (values, scales, sum) =
                run(op, spec, (xs.as_slice(), x.1), rs, w, $conv, $rows, $as_y)?;
            QuantOut {
                values,
                scales,
                sum: sum.map(CpuStorage::$variant),
            }
        }};
    }
    Ok(match x.0.dtype() {
        DType::F32 => go!(F32, |v| v as f32, rows_f32::<f32>, |v: f32| v),
        DType::F16 => go!(F16, |v| v as f32, rows_f32::<f16>, |v: f16| v),
        DType::BF16 => go!(BF16, |v| v as f32, rows_f32::<bf16>, |v: bf16| v),
        DType::F64 => go!(F64, |v| v, rows_f64, F64),
        other => return Err(float_error(op.name(), "xs", other)),
    })
}
