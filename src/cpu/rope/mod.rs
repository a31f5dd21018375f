//! The CPU path of q/k norm + rotary embedding (`crate::rope_op`): two parallel passes.
//!
//! 1. The scale of every norm (a row, or each head of a row): the sum of squares in f32 with
//!    16-lane vectors (f64 for f64 input), rows that overflow or underflow redone with an f64
//!    sum, as the row kernel does.
//! 2. Every head vector of the output, in the order of the layout written (so each task writes
//!    one contiguous stretch): `y = round(x * scale [rounded] * w)`, then each pair rotated,
//!    `out[a] = y[a] * c + y[b] * (-s)`, `out[b] = y[b] * c + y[a] * s`, rounded once on the
//!    store: 16-lane vectors with `y` in registers for f32, f16 and bf16 (`head::head_f32`),
//!    a pair at a time for f64.

mod head;

use super::kernel::{rows_per_task, tier};
use super::simd::{prefetch, Elem};
use crate::config::WeightMode;
use crate::error::{float_error, op_error};
use crate::host::weight_values;
use crate::op::{scale_f32, scale_f64, Operand};
use crate::rope_config::{HeadLayout, NormScope};
use crate::rope_op::{input_rows, RopeOp, ROPE_OP};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use half::{bf16, f16};
use head::{head_with, sum_sq_with, HeadIn};
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

    /// The head vectors from `j` on, in output order, without a division each.
    fn walk(
        &self,
        j: usize,
        layout: HeadLayout,
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let (bsz, s, h) = (self.batch, self.seq, self.heads);
        let mut at = self.locate(j, layout);
        std::iter::repeat(()).map(move |()| {
            let cur = at;
            let (t, b, l, hd) = &mut at;
            // The fastest index first: l for [B, heads, L, D], the head for [B, L, heads, D].
            let (fast, fast_n, slow, slow_n) = match layout {
                HeadLayout::Bhld => (l, s, hd, h),
                HeadLayout::Blhd => (hd, h, l, s),
            };
            *fast += 1;
            if *fast == fast_n {
                *fast = 0;
                *slow += 1;
                if *slow == slow_n {
                    *slow = 0;
                    *b += 1;
                    if *b == bsz {
                        *b = 0;
                        *t += 1;
                    }
                }
            }
            cur
        })
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
        out: &mut [MaybeUninit<Self>],
    );
}

macro_rules! f32_compute {
    ($t:ty) => {
        impl Compute for $t {
            type C = f32;
            fn c_from_f64(v: f64) -> f32 {
                v as f32
            }
            fn scale(v: &[Self], op: &RopeOp) -> f32 {
                let ss = sum_sq_with(tier(), v);
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
                out: &mut [MaybeUninit<Self>],
            ) {
                head_with(
                    tier(),
                    &HeadIn {
                        x,
                        scale,
                        w,
                        cos,
                        sin,
                    },
                    op,
                    out,
                )
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
        out: &mut [MaybeUninit<f64>],
    ) {
        for i in 0..x.len() / 2 {
            let (a, b) = op.pair(i);
            let (ya, yb) = (x[a] * scale * w[a], x[b] * scale * w[b]);
            out[a].write(ya * cos[i] + yb * -sin[i]);
            out[b].write(yb * cos[i] + ya * sin[i]);
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

/// How many head vectors ahead of the one computed its input is prefetched.
const AHEAD: usize = 4;

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
                        let first = task * per;
                        let mut ahead = geo.walk(first + AHEAD, op.layout);
                        let at = geo.walk(first, op.layout);
                        let nv = o.len() / d;
                        for (k, (ov, (t, b, l, h))) in o.chunks_mut(d).zip(at).enumerate() {
                            let (ta, ba, la, ha) = ahead.next().expect("endless");
                            if k + AHEAD < nv {
                                prefetch(&xs[ta].row(ba, la, geo.heads * d)[ha * d..(ha + 1) * d]);
                            }
                            let x = &xs[t].row(b, l, geo.heads * d)[h * d..(h + 1) * d];
                            let r = (t * geo.batch + b) * geo.seq + l;
                            let (scale, w) = match op.scope {
                                NormScope::Full => (scales[r], &ws[t][h * d..(h + 1) * d]),
                                NormScope::PerHead => (scales[r * g + h], &ws[t][..]),
                            };
                            let tab = l * d / 2..(l + 1) * d / 2;
                            T::head(x, scale, w, &cos[tab.clone()], &sin[tab], op, ov);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_follows_locate() {
        for (batch, seq, heads) in [(1, 1, 1), (2, 3, 5), (3, 1, 4), (1, 7, 1)] {
            let geo = Geo {
                batch,
                seq,
                heads,
                d: 2,
                groups: 1,
            };
            let n = 2 * batch * seq * heads;
            for layout in [HeadLayout::Bhld, HeadLayout::Blhd] {
                for j0 in 0..n {
                    let walked: Vec<_> = geo.walk(j0, layout).take(n - j0).collect();
                    let direct: Vec<_> = (j0..n).map(|j| geo.locate(j, layout)).collect();
                    assert_eq!(walked, direct, "{layout:?} {batch}x{seq}x{heads} from {j0}");
                }
            }
        }
    }
}
