//! The CPU backend: converts Candle storages to row jobs and runs the SIMD kernel.

mod kernel;
mod simd;

pub(crate) use kernel::{tier, Tier};

use crate::layout::RowLayout;
use crate::ops::{op_error, NormOp};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};
use kernel::{Job, Rows};
use simd::Elem;

/// The weight, converted once per call to the compute precision, with `1 + w` applied for
/// Gemma; ones when the op has no weight.
fn weight_as<C: Copy>(
    op: &NormOp,
    w: Option<(&CpuStorage, &Layout)>,
    hidden: usize,
    conv: fn(f64) -> C,
    one: C,
    add_one: fn(C) -> C,
) -> Result<Vec<C>> {
    let Some((s, l)) = w else {
        return Ok(vec![one; hidden]);
    };
    let rl = RowLayout::of(l)
        .filter(|r| r.rows == 1 && r.hidden == hidden)
        .ok_or_else(|| {
            op_error(
                op.name(),
                "weight",
                format!("a contiguous rank-1 tensor of length {hidden}"),
                format!("layout {:?} {:?}", l.dims(), l.stride()),
            )
        })?;
    let range = rl.offset..rl.offset + hidden;
    let mut v: Vec<C> = match s {
        CpuStorage::F32(d) => d[range].iter().map(|&e| conv(e as f64)).collect(),
        CpuStorage::F64(d) => d[range].iter().map(|&e| conv(e)).collect(),
        CpuStorage::F16(d) => d[range].iter().map(|&e| conv(e.to_f64())).collect(),
        CpuStorage::BF16(d) => d[range].iter().map(|&e| conv(e.to_f64())).collect(),
        other => {
            return Err(op_error(
                op.name(),
                "weight",
                "of dtype f32, f16, bf16 or f64",
                format!("{:?}", other.dtype()),
            ))
        }
    };
    if op.weight_mode == crate::WeightMode::OffsetOne {
        v.iter_mut().for_each(|e| *e = add_one(*e));
    }
    Ok(v)
}

fn rows_of<'a, T>(
    op: &NormOp,
    arg: &str,
    data: &'a [T],
    l: &Layout,
) -> Result<(Rows<'a, T>, RowLayout)> {
    let rl = RowLayout::of(l).ok_or_else(|| {
        op_error(
            op.name(),
            arg,
            "rows with a contiguous last dimension",
            format!("strides {:?} for shape {:?}", l.stride(), l.dims()),
        )
    })?;
    if rl.end() > data.len() {
        return Err(op_error(
            op.name(),
            arg,
            format!("a storage of at least {} elements", rl.end()),
            data.len(),
        ));
    }
    Ok((
        Rows {
            data,
            offset: rl.offset,
            stride: rl.row_stride,
        },
        rl,
    ))
}

fn run_typed<T: Elem + candle_core::WithDType>(
    op: &NormOp,
    x: (&[T], &Layout),
    r: Option<(&[T], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<Vec<T>> {
    let (xr, xl) = rows_of(op, "xs", x.0, x.1)?;
    let residual = match r {
        Some((d, l)) => Some(rows_of(op, "residual", d, l)?.0),
        None => None,
    };
    let weight = weight_as(op, w, xl.hidden, |v| v as f32, 1.0f32, |v| 1.0 + v)?;
    let n = xl.rows * xl.hidden;
    let job = Job {
        x: xr,
        residual,
        weight: &weight,
        hidden: xl.hidden,
        eps: op.eps as f32,
        rounding: op.rounding,
    };
    let fused = job.residual.is_some();
    // The fused op returns [normed; sum] in one buffer (see `ops`).
    let mut buf = vec![T::from_f32(0.0); if fused { 2 * n } else { n }];
    let (out, sum) = buf.split_at_mut(n);
    kernel::run_f32(&job, out, sum);
    Ok(buf)
}

fn run_f64(
    op: &NormOp,
    x: (&[f64], &Layout),
    r: Option<(&[f64], &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<Vec<f64>> {
    let (xr, xl) = rows_of(op, "xs", x.0, x.1)?;
    let residual = match r {
        Some((d, l)) => Some(rows_of(op, "residual", d, l)?.0),
        None => None,
    };
    let weight = weight_as(op, w, xl.hidden, |v| v, 1.0f64, |v| 1.0 + v)?;
    let n = xl.rows * xl.hidden;
    let job = Job {
        x: xr,
        residual,
        weight: &weight,
        hidden: xl.hidden,
        eps: op.eps,
        rounding: op.rounding,
    };
    let fused = job.residual.is_some();
    let mut buf = vec![0f64; if fused { 2 * n } else { n }];
    let (out, sum) = buf.split_at_mut(n);
    kernel::run_f64(&job, out, sum);
    Ok(buf)
}

/// The CPU forward of every op variant.
pub(crate) fn forward(
    op: &NormOp,
    x: (&CpuStorage, &Layout),
    r: Option<(&CpuStorage, &Layout)>,
    w: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let shape = op.out_shape(x.1.shape());
    macro_rules! go {
        ($variant:ident, $f:expr) => {{
            let xs = match x.0 {
                CpuStorage::$variant(d) => d.as_slice(),
                _ => unreachable!(),
            };
            let rs = match r {
                None => None,
                Some((CpuStorage::$variant(d), l)) => Some((d.as_slice(), l)),
                Some((other, _)) => {
                    return Err(op_error(
                        op.name(),
                        "residual",
                        format!("of the dtype of xs ({:?})", x.0.dtype()),
                        format!("{:?}", other.dtype()),
                    ))
                }
            };
            CpuStorage::$variant($f(op, (xs, x.1), rs, w)?)
        }};
    }
    let storage = match x.0.dtype() {
        DType::F32 => go!(F32, run_typed::<f32>),
        DType::F16 => go!(F16, run_typed::<f16>),
        DType::BF16 => go!(BF16, run_typed::<bf16>),
        DType::F64 => go!(F64, run_f64),
        other => {
            return Err(op_error(
                op.name(),
                "xs",
                "of dtype f32, f16, bf16 or f64",
                format!("{other:?}"),
            ))
        }
    };
    Ok((storage, shape))
}

/// The name of the instruction-set tier the CPU path uses on this machine.
pub fn cpu_tier_name() -> &'static str {
    match tier() {
        Tier::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 => "avx2+fma+f16c",
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => "avx512",
    }
}
