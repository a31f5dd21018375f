//! The CPU path of q/k norm + rotary embedding (`crate::rope_op`): two parallel passes.
//!
//! 1. The scale of every norm (a row, or each head of a row): the sum of squares in f32 with
//!    16-lane vectors (f64 for f64 input), rows that overflow or underflow redone with an f64
//!    sum, as the row kernel does.
//! 2. Every head vector of the output, in the order of the layout written (so each task writes
//!    one contiguous stretch): `y = round(x * scale [rounded] * w)` into a scratch row, then
//!    the rotation `out = y * c' + y_swapped * s'`, where `y_swapped` holds each element's pair
//!    partner and `c'`, `s'` are the position's cos and (signed) sin spread over the head, with
//!    the same 16-lane vectors, rounded once on the store.

use super::kernel::{arr, arr_mut, rows_per_task, tier, Tier};
#[cfg(target_arch = "x86_64")]
use super::simd::{avx2_fn, avx512_fn, Avx2, Avx512};
use super::simd::{Elem, Isa, Portable};
use crate::config::{Rounding, WeightMode};
use crate::error::{float_error, op_error};
use crate::host::weight_values;
use crate::op::{scale_f32, scale_f64, Operand};
use crate::rope_config::{HeadLayout, NormScope};
use crate::rope_op::{input_rows, RopeOp, ROPE_OP};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows of one input: element `(b, l, c)` at `off + b * sb + l * sl + c`.
#[derive(Clone, Copy)]
struct Input<'a, T> {
    data: &'a [T],
    off: usize,
    sb: usize,
    sl: usize,
}

impl<'a, T> Input<'a, T> {
    fn of(data: &'a [T], l: &Layout, arg: &str) -> Result<Self> {
        let (off, sb, sl, _) = input_rows(arg, l, data.len())?;
        Ok(Self { data, off, sb, sl })
    }

    fn row(&self, b: usize, l: usize, len: usize) -> &'a [T] {
        let s = self.off + b * self.sb + l * self.sl;
        &self.data[s..s + len]
    }
}

/// The call's sizes.
#[derive(Clone, Copy)]
struct Geo {
    batch: usize,
    seq: usize,
    heads: usize,
    d: usize,
    /// Norms a row: 1, or `heads` per head.
    groups: usize,
}

impl Geo {
    /// The row `(tensor, b, l)` and head of head vector `j` of the output.
    fn locate(&self, j: usize, layout: HeadLayout) -> (usize, usize, usize, usize) {
        let (bsz, s, h) = (self.batch, self.seq, self.heads);
        match layout {
            HeadLayout::Bhld => (j / (bsz * h * s), j / (h * s) % bsz, j % s, j / s % h),
            HeadLayout::Blhd => (j / (bsz * s * h), j / (s * h) % bsz, j / h % s, j % h),
        }
    }
}

/// The compute type of a storage type: f32 for f32, f16 and bf16 (with 16-lane vectors), f64
/// for f64 (scalar).
trait Compute: Copy + Send + Sync + 'static {
    type C: WithDType + Copy + Send + Sync;
    fn c_from_f64(v: f64) -> Self::C;
    /// The scale of `v` (a norm's values), with the f64 rescue where f32 cannot carry it.
    fn scale(v: &[Self], op: &RopeOp) -> Self::C;
    /// Head vector `x` to `out`: normalised with `scale`, times `w`, rounded, rotated.
    #[allow(clippy::too_many_arguments)]
    fn head(
        x: &[Self],
        scale: Self::C,
        w: &[Self::C],
        cos: &[Self::C],
        sin: &[Self::C],
        op: &RopeOp,
        scratch: &mut [Self::C],
        out: &mut [MaybeUninit<Self>],
    );
}

/// Builds `ysw` (each element's partner), `cs` (the cos of its pair) and `sn` (the sin,
/// negated for the first element of a pair) for a head whose values are `y`.
#[inline(always)]
fn spread<C: Copy + std::ops::Neg<Output = C>>(
    op: &RopeOp,
    y: &[C],
    cos: &[C],
    sin: &[C],
    ysw: &mut [C],
    cs: &mut [C],
    sn: &mut [C],
) {
    for i in 0..op.head_dim / 2 {
        let (a, b) = op.pair(i);
        ysw[a] = y[b];
        ysw[b] = y[a];
        cs[a] = cos[i];
        cs[b] = cos[i];
        sn[a] = -sin[i];
        sn[b] = sin[i];
    }
}

#[inline(always)]
fn sum_sq<T: Elem, I: Isa>(isa: I, v: &[T]) -> f32 {
    let mut acc = isa.zero();
    let mut it = v.chunks_exact(16);
    for c in &mut it {
        let x = T::load(isa, arr(c));
        acc = isa.add(acc, isa.mul(x, x));
    }
    let mut s = super::simd::hsum16(isa.to_array(acc));
    for x in it.remainder() {
        let f = x.to_f32();
        s += f * f;
    }
    s
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_f32<T: Elem, I: Isa>(
    isa: I,
    x: &[T],
    scale: f32,
    w: &[f32],
    cos: &[f32],
    sin: &[f32],
    op: &RopeOp,
    scratch: &mut [f32],
    out: &mut [MaybeUninit<T>],
) {
    let d = x.len();
    let rb = op.rounding == Rounding::BeforeWeight;
    let (y, rest) = scratch.split_at_mut(d);
    let (ysw, rest) = rest.split_at_mut(d);
    let (cs, sn) = rest.split_at_mut(d);
    let n16 = d / 16 * 16;
    let sc = isa.splat(scale);
    for i in (0..n16).step_by(16) {
        let mut n = isa.mul(T::load(isa, arr(&x[i..i + 16])), sc);
        if rb {
            n = T::round(isa, n);
        }
        let v = T::round(isa, isa.mul(n, isa.load_f32(arr(&w[i..i + 16]))));
        y[i..i + 16].copy_from_slice(&isa.to_array(v));
    }
    for i in n16..d {
        let mut n = x[i].to_f32() * scale;
        if rb {
            n = T::from_f32(n).to_f32();
        }
        y[i] = T::from_f32(n * w[i]).to_f32();
    }
    spread(op, y, cos, sin, ysw, cs, &mut sn[..d]);
    for i in (0..n16).step_by(16) {
        let a = isa.mul(
            isa.load_f32(arr(&y[i..i + 16])),
            isa.load_f32(arr(&cs[i..i + 16])),
        );
        let b = isa.mul(
            isa.load_f32(arr(&ysw[i..i + 16])),
            isa.load_f32(arr(&sn[i..i + 16])),
        );
        T::store(isa, isa.add(a, b), arr_mut(&mut out[i..i + 16]));
    }
    for i in n16..d {
        out[i].write(T::from_f32(y[i] * cs[i] + ysw[i] * sn[i]));
    }
}

/// `f(tier's isa)`, through the `target_feature` wrappers below.
macro_rules! with_tier {
    ($f:ident, $t:ty, $($arg:expr),*) => {
        match tier() {
            Tier::Portable => $f::<$t, Portable>(Portable, $($arg),*),
            // SAFETY: an `Avx2` value exists only where `Avx2::detect` found every feature the
            // wrapper is compiled with.
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2(i) => unsafe { avx2::$f::<$t>(i, $($arg),*) },
            // SAFETY: likewise for `Avx512::detect`.
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512(i) => unsafe { avx512::$f::<$t>(i, $($arg),*) },
        }
    };
}

/// The two kernels compiled for one x86 tier (`$tier_fn`: its `target_feature` wrapper).
macro_rules! tier_mod {
    ($m:ident, $isa:ty, $tier_fn:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $m {
            use super::*;

            $tier_fn! {
                pub(super) fn sum_sq<T: Elem>(isa: $isa, v: &[T]) -> f32 {
                    super::sum_sq::<T, $isa>(isa, v)
                }

                #[allow(clippy::too_many_arguments)]
                pub(super) fn head_f32<T: Elem>(
                    isa: $isa,
                    x: &[T],
                    scale: f32,
                    w: &[f32],
                    cos: &[f32],
                    sin: &[f32],
                    op: &RopeOp,
                    scratch: &mut [f32],
                    out: &mut [MaybeUninit<T>],
                ) {
                    super::head_f32::<T, $isa>(isa, x, scale, w, cos, sin, op, scratch, out)
                }
            }
        }
    };
}

tier_mod!(avx2, Avx2, avx2_fn);
tier_mod!(avx512, Avx512, avx512_fn);

macro_rules! f32_compute {
    ($t:ty) => {
        impl Compute for $t {
            type C = f32;
            fn c_from_f64(v: f64) -> f32 {
                v as f32
            }
            fn scale(v: &[Self], op: &RopeOp) -> f32 {
                let ss = with_tier!(sum_sq, $t, v);
                let e = op.eps_arg();
                scale_f32(ss, v.len(), e as f32, op.eps_mode).unwrap_or_else(|| {
                    let ss: f64 = v.iter().map(|x| (x.to_f32() as f64).powi(2)).sum();
                    scale_f64(ss, v.len(), e as f32 as f64, op.eps_mode) as f32
                })
            }
            fn head(
                x: &[Self],
                scale: f32,
                w: &[f32],
                cos: &[f32],
                sin: &[f32],
                op: &RopeOp,
                scratch: &mut [f32],
                out: &mut [MaybeUninit<Self>],
            ) {
                with_tier!(head_f32, $t, x, scale, w, cos, sin, op, scratch, out)
            }
        }
    };
}

f32_compute!(f32);
f32_compute!(f16);
f32_compute!(bf16);

impl Compute for f64 {
    type C = f64;
    fn c_from_f64(v: f64) -> f64 {
        v
    }
    fn scale(v: &[f64], op: &RopeOp) -> f64 {
        let ss: f64 = v.iter().map(|x| x * x).sum();
        scale_f64(ss, v.len(), op.eps_arg(), op.eps_mode)
    }
    fn head(
        x: &[f64],
        scale: f64,
        w: &[f64],
        cos: &[f64],
        sin: &[f64],
        op: &RopeOp,
        scratch: &mut [f64],
        out: &mut [MaybeUninit<f64>],
    ) {
        let d = x.len();
        let (y, rest) = scratch.split_at_mut(d);
        let (ysw, rest) = rest.split_at_mut(d);
        let (cs, sn) = rest.split_at_mut(d);
        for i in 0..d {
            y[i] = x[i] * scale * w[i];
        }
        spread(op, y, cos, sin, ysw, cs, &mut sn[..d]);
        for i in 0..d {
            out[i].write(y[i] * cs[i] + ysw[i] * sn[i]);
        }
    }
}

/// The values of a contiguous CPU tensor of dtype `C`, borrowed for `f`.
fn with_values<C: WithDType, R>(t: &Tensor, f: impl FnOnce(&[C]) -> R) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => {
            let v = c.as_slice::<C>()?;
            Ok(f(&v[l.start_offset()..l.start_offset() + t.elem_count()]))
        }
        _ => Err(op_error(ROPE_OP, "cos/sin", "on the CPU", "another device")),
    }
}

/// The weight `i` in the compute type with its mode applied (ones without one).
fn weight<C: Copy>(op: &RopeOp, i: usize, conv: fn(f64) -> C) -> Result<Vec<C>> {
    let n = op.norm_len();
    let Some(w) = &op.weights[i] else {
        return Ok(vec![conv(1.0); n]);
    };
    let add = f64::from(u8::from(op.weight_mode == WeightMode::OffsetOne));
    let (s, l) = w.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => weight_values(ROPE_OP, c, l, n, |e| conv(add + e)),
        _ => Err(op_error(ROPE_OP, "weight", "on the CPU", "another device")),
    }
}

fn run<T: Compute>(op: &RopeOp, xs: &[Input<'_, T>], geo: Geo) -> Result<Vec<T>> {
    let ws = (0..xs.len())
        .map(|i| weight(op, i, T::c_from_f64))
        .collect::<Result<Vec<_>>>()?;
    let (d, g, n) = (geo.d, geo.groups, op.norm_len());
    let rows = xs.len() * geo.batch * geo.seq;
    let mut scales = vec![T::c_from_f64(0.0); rows * g];
    let per = rows_per_task(rows, geo.heads * d, std::mem::size_of::<T>());
    scales
        .par_chunks_mut(per * g)
        .enumerate()
        .for_each(|(task, sc)| {
            for (k, s) in sc.chunks_mut(g).enumerate() {
                let r = task * per + k;
                let (t, bl) = (r / (geo.batch * geo.seq), r % (geo.batch * geo.seq));
                let row = xs[t].row(bl / geo.seq, bl % geo.seq, geo.heads * d);
                for (j, v) in s.iter_mut().enumerate() {
                    *v = T::scale(&row[j * n..(j + 1) * n], op);
                }
            }
        });
    let vectors = rows * geo.heads;
    let per = rows_per_task(vectors, d, std::mem::size_of::<T>());
    let out = with_values::<T::C, _>(&op.cos, |cos| {
        with_values::<T::C, _>(&op.sin, |sin| {
            super::fill_output(vectors * d, vectors * d, |out, _| {
                out.par_chunks_mut(per * d)
                    .enumerate()
                    .for_each(|(task, o)| {
                        let mut scratch = vec![T::c_from_f64(0.0); 4 * d];
                        for (k, ov) in o.chunks_mut(d).enumerate() {
                            let (t, b, l, h) = geo.locate(task * per + k, op.layout);
                            let x = &xs[t].row(b, l, geo.heads * d)[h * d..(h + 1) * d];
                            let r = (t * geo.batch + b) * geo.seq + l;
                            let (scale, w) = match op.scope {
                                NormScope::Full => (scales[r], &ws[t][h * d..(h + 1) * d]),
                                NormScope::PerHead => (scales[r * g + h], &ws[t][..]),
                            };
                            let tab = l * d / 2..(l + 1) * d / 2;
                            T::head(
                                x,
                                scale,
                                w,
                                &cos[tab.clone()],
                                &sin[tab],
                                op,
                                &mut scratch,
                                ov,
                            );
                        }
                    })
            })
        })
    })??;
    Ok(out)
}

/// The CPU forward: q (and k) into one new output (see `crate::rope_op`).
pub(crate) fn forward(
    op: &RopeOp,
    q: Operand<'_, CpuStorage>,
    k: Option<Operand<'_, CpuStorage>>,
) -> Result<(CpuStorage, Shape)> {
    let dims = q.1.dims();
    let geo = Geo {
        batch: dims[0],
        seq: dims[1],
        heads: op.heads,
        d: op.head_dim,
        groups: match op.scope {
            NormScope::Full => 1,
            NormScope::PerHead => op.heads,
        },
    };
    let shape = op.out_shape(geo.batch, geo.seq);
    macro_rules! go {
        ($variant:ident) => {{
            let mut xs = vec![match q.0 {
                CpuStorage::$variant(d) => Input::of(d, q.1, "q")?,
                _ => unreachable!(),
            }];
            if let Some((s, l)) = k {
                match s {
                    CpuStorage::$variant(d) => xs.push(Input::of(d, l, "k")?),
                    other => {
                        return Err(op_error(
                            ROPE_OP,
                            "k",
                            format!("of the dtype of q ({:?})", q.0.dtype()),
                            format!("{:?}", other.dtype()),
                        ))
                    }
                }
            }
            CpuStorage::$variant(run(op, &xs, geo)?)
        }};
    }
    let storage = match q.0.dtype() {
        DType::F32 => go!(F32),
        DType::F16 => go!(F16),
        DType::BF16 => go!(BF16),
        DType::F64 => go!(F64),
        other => return Err(float_error(ROPE_OP, "q", other)),
    };
    Ok((storage, shape))
}
