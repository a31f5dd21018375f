//! The CPU row kernel: two passes over each row (sum of squares, then scale), parallel over
//! rows with rayon, 16-lane f32 blocks compiled per instruction-set tier.

#[cfg(target_arch = "x86_64")]
use super::simd::{avx2_fn, avx512_fn, Avx2, Avx512};
use super::simd::{hsum16, Elem, Isa, Portable};
use crate::config::{EpsMode, Rounding};
use crate::op::{scale_f32, scale_f64};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Rows of `hidden` contiguous elements; row `r` starts at `offset + r * stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub stride: usize,
}

impl<'a, T> Rows<'a, T> {
    #[inline(always)]
    fn row(&self, r: usize, hidden: usize) -> &'a [T] {
        &self.data[self.offset + r * self.stride..][..hidden]
    }
}

/// One op call: inputs, the weight already in compute precision (ones when there is none,
/// `1 + w` for Gemma), and the scalar parameters.
#[derive(Debug)]
pub(crate) struct Job<'a, T, C> {
    pub x: Rows<'a, T>,
    pub residual: Option<Rows<'a, T>>,
    pub weight: &'a [C],
    pub hidden: usize,
    /// The mean of squares is over the first `var_size` elements (`1..=hidden`) of each row.
    pub var_size: usize,
    pub eps: C,
    pub eps_mode: EpsMode,
    pub rounding: Rounding,
}

/// An instruction-set tier; the x86 ones carry the proof that this CPU has their features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
}

/// The widest tier this CPU supports, detected once.
pub(crate) fn tier() -> Tier {
    static TIER: OnceLock<Tier> = OnceLock::new();
    *TIER.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(t) = Avx512::detect() {
                return Tier::Avx512(t);
            }
            if let Some(t) = Avx2::detect() {
                return Tier::Avx2(t);
            }
        }
        Tier::Portable
    })
}

#[inline(always)]
pub(super) fn arr<T>(s: &[T]) -> &[T; 16] {
    s.try_into().expect("chunks_exact(16) yields 16 elements")
}

#[inline(always)]
pub(super) fn arr_mut<T>(s: &mut [T]) -> &mut [T; 16] {
    s.try_into()
        .expect("chunks_exact_mut(16) yields 16 elements")
}

/// `x (+ residual)` of element `i` in f32.
#[inline(always)]
fn input<T: Elem>(x: &[T], r: &[T], i: usize, fused: bool) -> f32 {
    if fused {
        x[i].to_f32() + r[i].to_f32()
    } else {
        x[i].to_f32()
    }
}

/// The rare rows whose f32 sum of squares overflows (|x| above ~1e19) or is too small to carry
/// `eps`: recomputed with an f64 sum (over the job's first `var_size` elements), so huge and
/// tiny rows still normalise correctly.
#[cold]
#[inline(never)]
fn rescue_row<T: Elem>(
    job: &Job<'_, T, f32>,
    x: &[T],
    r: &[T],
    out: &mut [MaybeUninit<T>],
    fused: bool,
    rb: bool,
) {
    let (h, nv, w) = (x.len(), job.var_size, job.weight);
    let ss: f64 = (0..nv)
        .map(|i| {
            let v = input(x, r, i, fused) as f64;
            v * v
        })
        .sum();
    let scale = scale_f64(ss, nv, job.eps as f64, job.eps_mode);
    for i in 0..h {
        let mut n = (input(x, r, i, fused) as f64 * scale) as f32;
        if rb {
            n = T::from_f32(n).to_f32();
        }
        out[i].write(T::from_f32(n * w[i]));
    }
}

/// Normalises the rows `row0..row0 + out.len() / hidden` of `job` into `out` (and, fused, writes
/// the rounded sums into `sum`). Writes every element of `out` (and of `sum` when fused).
#[inline(always)]
fn rows_chunk<T: Elem, I: Isa, const FUSED: bool, const RB: bool>(
    isa: I,
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    let h = job.hidden;
    let n16 = h / 16 * 16;
    // The squares summed: the first v16 elements in the 16-lane blocks, v16..nv one by one
    // (with nv = h that is the row's tail, as without the option).
    let nv = job.var_size;
    let v16 = nv / 16 * 16;
    let eps = job.eps;
    let w = job.weight;
    let (wb, wt) = w.split_at(n16);
    let mut sums = sum.chunks_exact_mut(h);
    for (i, o) in out.chunks_exact_mut(h).enumerate() {
        let x = job.x.row(row0 + i, h);
        let r = match &job.residual {
            Some(res) if FUSED => res.row(row0 + i, h),
            _ => x,
        };
        let (xb, xt) = x.split_at(n16);
        let (rb, rt) = r.split_at(n16);

        // Pass 1: sum of squares in 16 f32 lanes (the fused op also stores the rounded sum).
        let mut acc = isa.zero();
        let mut tail = [0f32; 16];
        if FUSED {
            let s = sums.next().expect("sum has one row per output row");
            let (sb, st) = s.split_at_mut(n16);
            let mut chunks = xb
                .chunks_exact(16)
                .zip(rb.chunks_exact(16))
                .zip(sb.chunks_exact_mut(16));
            // The first v16 elements are summed; the rest of the row's blocks only stored.
            for ((xc, rc), sc) in chunks.by_ref().take(v16 / 16) {
                let v = isa.add(T::load(isa, arr(xc)), T::load(isa, arr(rc)));
                acc = isa.add(acc, isa.mul(v, v));
                T::store(isa, v, arr_mut(sc));
            }
            for ((xc, rc), sc) in chunks {
                let v = isa.add(T::load(isa, arr(xc)), T::load(isa, arr(rc)));
                T::store(isa, v, arr_mut(sc));
            }
            for k in 0..xt.len() {
                st[k].write(T::from_f32(xt[k].to_f32() + rt[k].to_f32()));
            }
        } else {
            for xc in xb[..v16].chunks_exact(16) {
                let v = T::load(isa, arr(xc));
                acc = isa.add(acc, isa.mul(v, v));
            }
        }
        for k in v16..nv {
            let v = input(x, r, k, FUSED);
            tail[k - v16] = v * v;
        }
        let mut lanes = isa.to_array(acc);
        for k in 0..16 {
            lanes[k] += tail[k];
        }
        let ss = hsum16(lanes);
        let Some(scale) = scale_f32(ss, nv, eps, job.eps_mode) else {
            rescue_row(job, x, r, o, FUSED, RB);
            continue;
        };
        let vscale = isa.splat(scale);

        // Pass 2: scale, optionally round, multiply by the weight, round.
        let (ob, ot) = o.split_at_mut(n16);
        for (((xc, rc), wc), oc) in xb
            .chunks_exact(16)
            .zip(rb.chunks_exact(16))
            .zip(wb.chunks_exact(16))
            .zip(ob.chunks_exact_mut(16))
        {
            let mut v = T::load(isa, arr(xc));
            if FUSED {
                v = isa.add(v, T::load(isa, arr(rc)));
            }
            let mut n = isa.mul(v, vscale);
            if RB {
                n = T::round(isa, n);
            }
            T::store(isa, isa.mul(n, isa.load_f32(arr(wc))), arr_mut(oc));
        }
        for k in 0..xt.len() {
            let mut n = input(xt, rt, k, FUSED) * scale;
            if RB {
                n = T::from_f32(n).to_f32();
            }
            ot[k].write(T::from_f32(n * wt[k]));
        }
    }
}

/// [`rows_chunk`] compiled for one x86 tier (`$tier_fn`: its `target_feature` wrapper).
macro_rules! rows_chunk_tier {
    ($name:ident, $isa:ty, $tier_fn:ident) => {
        #[cfg(target_arch = "x86_64")]
        $tier_fn! {
            fn $name<T: Elem, const FUSED: bool, const RB: bool>(
                isa: $isa,
                job: &Job<'_, T, f32>,
                row0: usize,
                out: &mut [MaybeUninit<T>],
                sum: &mut [MaybeUninit<T>],
            ) {
                rows_chunk::<T, $isa, FUSED, RB>(isa, job, row0, out, sum)
            }
        }
    };
}
rows_chunk_tier!(rows_chunk_avx2, Avx2, avx2_fn);
rows_chunk_tier!(rows_chunk_avx512, Avx512, avx512_fn);

fn dispatch<T: Elem, const FUSED: bool, const RB: bool>(
    tier: Tier,
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    match tier {
        Tier::Portable => rows_chunk::<T, Portable, FUSED, RB>(Portable, job, row0, out, sum),
        // SAFETY: an `Avx2` value exists only where `Avx2::detect` found every feature the
        // function is compiled with.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2(t) => unsafe { rows_chunk_avx2::<T, FUSED, RB>(t, job, row0, out, sum) },
        // SAFETY: likewise for `Avx512::detect`.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512(t) => unsafe { rows_chunk_avx512::<T, FUSED, RB>(t, job, row0, out, sum) },
    }
}

/// Work below this many elements runs on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// Rows per rayon task for `rows` rows of `hidden` elements of `elem_bytes`: all of them (one
/// task, run on the calling thread) below [`PARALLEL_MIN_ELEMS`] or with one thread; otherwise
/// at least ~64 KiB of input per task, and enough tasks to balance.
pub(super) fn rows_per_task(rows: usize, hidden: usize, elem_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if rows * hidden < PARALLEL_MIN_ELEMS || threads <= 1 {
        return rows.max(1);
    }
    let by_bytes = (64 * 1024 / (hidden * elem_bytes).max(1)).max(1);
    let by_balance = rows.div_ceil(threads * 8).max(1);
    by_bytes.min(by_balance).max(1)
}

/// Normalises the rows `row0..row0 + out.len() / hidden` of `job` on the calling thread with
/// the given tier (and, fused, writes their rounded sums into `sum`).
pub(crate) fn rows_f32_with<T: Elem>(
    tier: Tier,
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    let fused = job.residual.is_some();
    let rb = job.rounding == Rounding::BeforeWeight;
    match (fused, rb) {
        (false, false) => dispatch::<T, false, false>(tier, job, row0, out, sum),
        (false, true) => dispatch::<T, false, true>(tier, job, row0, out, sum),
        (true, false) => dispatch::<T, true, false>(tier, job, row0, out, sum),
        (true, true) => dispatch::<T, true, true>(tier, job, row0, out, sum),
    }
}

/// [`rows_f32_with`] on the widest tier this CPU supports.
pub(crate) fn rows_f32<T: Elem>(
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    rows_f32_with(tier(), job, row0, out, sum)
}

/// Runs `job` over every row with the given tier. `out` holds `rows * hidden` elements; `sum`
/// the same when the job is fused, and is empty otherwise.
pub(crate) fn run_f32_with<T: Elem>(
    tier: Tier,
    job: &Job<'_, T, f32>,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    let h = job.hidden;
    if out.is_empty() || h == 0 {
        return;
    }
    let fused = job.residual.is_some();
    let f = |row0: usize, o: &mut [MaybeUninit<T>], s: &mut [MaybeUninit<T>]| {
        rows_f32_with(tier, job, row0, o, s)
    };
    let rows = out.len() / h;
    let per = rows_per_task(rows, h, std::mem::size_of::<T>());
    if per >= rows {
        return f(0, out, sum);
    }
    let chunk = per * h;
    if fused {
        out.par_chunks_mut(chunk)
            .zip(sum.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(t, (o, s))| f(t * per, o, s));
    } else {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(t, o)| f(t * per, o, &mut []));
    }
}

/// [`run_f32_with`] on the widest tier this CPU supports.
pub(crate) fn run_f32<T: Elem>(
    job: &Job<'_, T, f32>,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    run_f32_with(tier(), job, out, sum)
}

/// The f64 path for the rows `row0..row0 + out.len() / hidden` on the calling thread: f64
/// storage, f64 arithmetic throughout (no rounding step exists).
pub(crate) fn rows_f64(
    job: &Job<'_, f64, f64>,
    row0: usize,
    out: &mut [MaybeUninit<f64>],
    sum: &mut [MaybeUninit<f64>],
) {
    let h = job.hidden;
    let mut sums = sum.chunks_exact_mut(h);
    for (i, o) in out.chunks_exact_mut(h).enumerate() {
        let x = job.x.row(row0 + i, h);
        let res = job.residual.as_ref().map(|res| res.row(row0 + i, h));
        let v = |i: usize| match res {
            Some(res) => x[i] + res[i],
            None => x[i],
        };
        let mut acc = [0f64; 4];
        for i in 0..job.var_size {
            let e = v(i);
            acc[i % 4] += e * e;
        }
        if res.is_some() {
            let s = sums.next().expect("sum has one row per output row");
            for (i, si) in s.iter_mut().enumerate() {
                si.write(v(i));
            }
        }
        let ss = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        let scale = scale_f64(ss, job.var_size, job.eps, job.eps_mode);
        for (i, oi) in o.iter_mut().enumerate() {
            oi.write(v(i) * scale * job.weight[i]);
        }
    }
}

/// The f64 path over every row, one row a rayon task.
pub(crate) fn run_f64(
    job: &Job<'_, f64, f64>,
    out: &mut [MaybeUninit<f64>],
    sum: &mut [MaybeUninit<f64>],
) {
    let h = job.hidden;
    if out.is_empty() || h == 0 {
        return;
    }
    if job.residual.is_some() {
        out.par_chunks_mut(h)
            .zip(sum.par_chunks_mut(h))
            .enumerate()
            .for_each(|(r, (o, s))| rows_f64(job, r, o, s));
    } else {
        out.par_chunks_mut(h)
            .enumerate()
            .for_each(|(r, o)| rows_f64(job, r, o, &mut []));
    }
}

#[cfg(test)]
pub(super) mod tests;
