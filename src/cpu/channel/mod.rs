//! The CPU kernel of a norm over a dimension other than the last (`NormConfig::with_dim`): the
//! input read in place as `outer x channels x inner` ([`ChannelLayout`]), the output written
//! contiguous in the input's shape.
//!
//! A task takes one outer index and a block of up to [`BLOCK`] consecutive inner positions, and
//! reads the block's `channels` strips twice (sums of squares, then the scaled values); the
//! strips, `channels x BLOCK` elements, stay in the core's L2 between the two reads, so memory
//! sees one read and one write per element. With a contiguous inner dimension the positions go
//! through the 16-lane blocks of the row kernel's instruction-set tiers, one lane a position;
//! the sum over channels is a plain sequential f32 sum per position (the row kernel's order
//! differs: the contract's tolerance covers both, docs/numerics.md).

use super::kernel::{arr, arr_mut, rows_per_task, Tier};
#[cfg(target_arch = "x86_64")]
use super::simd::{avx2_fn, avx512_fn, Avx2, Avx512};
use super::simd::{Elem, Isa, Portable};
use crate::config::{EpsMode, Rounding};
use crate::layout::ChannelLayout;
use crate::op::{scale_f32, scale_f64};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Inner positions a task takes (8 blocks of 16 lanes).
pub(crate) const BLOCK: usize = 128;
const VECS: usize = BLOCK / 16;

/// One operand: its storage and its geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes<'a, T> {
    pub data: &'a [T],
    pub l: ChannelLayout,
}

/// One call: operands, the weight in compute precision (`channels` values), the options.
#[derive(Debug)]
pub(crate) struct ChannelJob<'a, T, C> {
    pub x: Planes<'a, T>,
    pub residual: Option<Planes<'a, T>>,
    pub weight: &'a [C],
    /// The mean of squares is over the first `var_size` channels (`1..=channels`).
    pub var_size: usize,
    pub eps: C,
    pub eps_mode: EpsMode,
    pub rounding: Rounding,
}

/// An output of `outer x channels x inner` contiguous elements that tasks owning disjoint inner
/// positions write concurrently.
struct Out<T> {
    ptr: *mut MaybeUninit<T>,
    len: usize,
}

// SAFETY: `Out` is a pointer to a buffer borrowed mutably for the whole run; tasks write
// disjoint elements of it (`strip`).
unsafe impl<T: Send> Send for Out<T> {}
// SAFETY: as above: shared between tasks that write disjoint elements.
unsafe impl<T: Send> Sync for Out<T> {}

impl<T> Out<T> {
    fn new(s: &mut [MaybeUninit<T>]) -> Self {
        Self {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// The `n` elements from `start`.
    ///
    /// # Safety
    /// No other live reference may overlap them: each task asks only for its own positions.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn strip(&self, start: usize, n: usize) -> &mut [MaybeUninit<T>] {
        assert!(start + n <= self.len, "strip past the output");
        // SAFETY: in bounds (asserted); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }
}

/// The scale of one position: f32, or f64 for a rescued one (then applied in f64, as the row
/// kernel's rescue does).
#[derive(Clone, Copy)]
enum Scale {
    F32(f32),
    F64(f64),
}

/// One task: outer index `o`, inner positions `i0..i0 + b` (b <= BLOCK).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<T: Elem, I: Isa, const FUSED: bool, const RB: bool>(
    isa: I,
    job: &ChannelJob<'_, T, f32>,
    o: usize,
    i0: usize,
    b: usize,
    out: &Out<T>,
    sum: &Out<T>,
) {
    let xl = job.x.l;
    let (cn, inner, nv) = (xl.channels, xl.inner, job.var_size);
    let (x, rl, rd) = match &job.residual {
        Some(r) if FUSED => (job.x.data, r.l, r.data),
        _ => (job.x.data, xl, job.x.data),
    };
    // 16-lane blocks need the positions contiguous in both inputs.
    let nvec = if xl.inner_stride == 1 && rl.inner_stride == 1 {
        b / 16
    } else {
        0
    };
    let v0 = nvec * 16;
    let input = |c: usize, i: usize| {
        let v = x[xl.at(o, c, i0 + i)].to_f32();
        if FUSED {
            v + rd[rl.at(o, c, i0 + i)].to_f32()
        } else {
            v
        }
    };
    let base = |c: usize| (o * cn + c) * inner + i0;

    // Pass 1: sums of squares over the first nv channels (the fused op stores every sum).
    let mut acc = [isa.zero(); VECS];
    let mut rest = [0f32; BLOCK]; // the sums of positions v0.. (the others are in acc)
    for c in 0..cn {
        let (xb, rb) = (xl.at(o, c, i0), rl.at(o, c, i0));
        // SAFETY: this task's positions of channel c: no other task writes them.
        let mut s = FUSED.then(|| unsafe { sum.strip(base(c), b) });
        for (j, a) in acc.iter_mut().enumerate().take(nvec) {
            let mut v = T::load(isa, arr(&x[xb + 16 * j..][..16]));
            if FUSED {
                v = isa.add(v, T::load(isa, arr(&rd[rb + 16 * j..][..16])));
            }
            if let Some(s) = s.as_deref_mut() {
                T::store(isa, v, arr_mut(&mut s[16 * j..][..16]));
            }
            if c < nv {
                *a = isa.add(*a, isa.mul(v, v));
            }
        }
        for k in v0..b {
            let v = input(c, k);
            if let Some(s) = s.as_deref_mut() {
                s[k].write(T::from_f32(v));
            }
            if c < nv {
                rest[k] += v * v;
            }
        }
    }

    // The scales, with the f64 rescue of positions that need it; every position's sum in
    // `rest` first.
    for (j, a) in acc.iter().enumerate().take(nvec) {
        rest[16 * j..][..16].copy_from_slice(&isa.to_array(*a));
    }
    let mut scales = [Scale::F32(0.0); BLOCK];
    let mut rescued = false;
    for k in 0..b {
        let ss = rest[k];
        scales[k] = match scale_f32(ss, nv, job.eps, job.eps_mode) {
            Some(s) => Scale::F32(s),
            None => {
                rescued = true;
                let ss: f64 = (0..nv).map(|c| (input(c, k) as f64).powi(2)).sum();
                Scale::F64(scale_f64(ss, nv, job.eps as f64, job.eps_mode))
            }
        };
    }
    let nvec = if rescued { 0 } else { nvec };
    let v0 = nvec * 16;
    let mut vscale = [isa.zero(); VECS];
    for (j, vs) in vscale.iter_mut().enumerate().take(nvec) {
        let mut l = [0f32; 16];
        for (i, li) in l.iter_mut().enumerate() {
            if let Scale::F32(s) = scales[16 * j + i] {
                *li = s;
            }
        }
        *vs = isa.load_f32(&l);
    }

    // Pass 2: scale, optionally round, times the channel's weight, round.
    for c in 0..cn {
        let (xb, rb) = (xl.at(o, c, i0), rl.at(o, c, i0));
        let w = job.weight[c];
        let vw = isa.splat(w);
        // SAFETY: this task's positions of channel c: no other task writes them.
        let d = unsafe { out.strip(base(c), b) };
        for (j, vs) in vscale.iter().enumerate().take(nvec) {
            let mut v = T::load(isa, arr(&x[xb + 16 * j..][..16]));
            if FUSED {
                v = isa.add(v, T::load(isa, arr(&rd[rb + 16 * j..][..16])));
            }
            let mut n = isa.mul(v, *vs);
            if RB {
                n = T::round(isa, n);
            }
            T::store(isa, isa.mul(n, vw), arr_mut(&mut d[16 * j..][..16]));
        }
        for k in v0..b {
            let v = input(c, k);
            let mut n = match scales[k] {
                Scale::F32(s) => v * s,
                Scale::F64(s) => (v as f64 * s) as f32,
            };
            if RB {
                n = T::from_f32(n).to_f32();
            }
            d[k].write(T::from_f32(n * w));
        }
    }
}

/// [`block`] compiled for one x86 tier (`$tier_fn`: its `target_feature` wrapper).
macro_rules! block_tier {
    ($name:ident, $isa:ty, $tier_fn:ident) => {
        #[cfg(target_arch = "x86_64")]
        $tier_fn! {
            #[allow(clippy::too_many_arguments)]
            fn $name<T: Elem, const FUSED: bool, const RB: bool>(
                isa: $isa,
                job: &ChannelJob<'_, T, f32>,
                o: usize,
                i0: usize,
                b: usize,
                out: &Out<T>,
                sum: &Out<T>,
            ) {
                block::<T, $isa, FUSED, RB>(isa, job, o, i0, b, out, sum)
            }
        }
    };
}
block_tier!(block_avx2, Avx2, avx2_fn);
block_tier!(block_avx512, Avx512, avx512_fn);

#[allow(clippy::too_many_arguments)]
fn dispatch<T: Elem, const FUSED: bool, const RB: bool>(
    tier: Tier,
    job: &ChannelJob<'_, T, f32>,
    o: usize,
    i0: usize,
    b: usize,
    out: &Out<T>,
    sum: &Out<T>,
) {
    match tier {
        Tier::Portable => block::<T, Portable, FUSED, RB>(Portable, job, o, i0, b, out, sum),
        // SAFETY: an `Avx2` value exists only where `Avx2::detect` found every feature the
        // function is compiled with.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2(t) => unsafe { block_avx2::<T, FUSED, RB>(t, job, o, i0, b, out, sum) },
        // SAFETY: likewise for `Avx512::detect`.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512(t) => unsafe { block_avx512::<T, FUSED, RB>(t, job, o, i0, b, out, sum) },
    }
}

/// Calls `f(o, i0, b)` for every task of `l`, in parallel when the work is large enough.
fn for_tasks(l: &ChannelLayout, elem_bytes: usize, f: impl Fn(usize, usize, usize) + Sync) {
    let per_outer = l.inner.div_ceil(BLOCK);
    let tasks = l.outer * per_outer;
    let task = |t: usize| {
        let (o, i0) = (t / per_outer, t % per_outer * BLOCK);
        f(o, i0, BLOCK.min(l.inner - i0));
    };
    // Tasks a rayon job takes: the row kernel's rule with a task as `channels x BLOCK` elements.
    let per = rows_per_task(tasks, l.channels * BLOCK, elem_bytes);
    if per >= tasks {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().with_min_len(per).for_each(task);
    }
}

/// Runs `job` with the given tier into `out` (`outer x channels x inner`) and, fused, `sum` (the
/// same; empty otherwise).
pub(crate) fn run_f32_with<T: Elem>(
    tier: Tier,
    job: &ChannelJob<'_, T, f32>,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    let l = job.x.l;
    if l.len() == 0 {
        return;
    }
    let fused = job.residual.is_some();
    let rb = job.rounding == Rounding::BeforeWeight;
    let (out, sum) = (Out::new(out), Out::new(sum));
    for_tasks(&l, std::mem::size_of::<T>(), |o, i0, b| match (fused, rb) {
        (false, false) => dispatch::<T, false, false>(tier, job, o, i0, b, &out, &sum),
        (false, true) => dispatch::<T, false, true>(tier, job, o, i0, b, &out, &sum),
        (true, false) => dispatch::<T, true, false>(tier, job, o, i0, b, &out, &sum),
        (true, true) => dispatch::<T, true, true>(tier, job, o, i0, b, &out, &sum),
    });
}

/// [`run_f32_with`] on the widest tier this CPU supports.
pub(crate) fn run_f32<T: Elem>(
    job: &ChannelJob<'_, T, f32>,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    run_f32_with(super::kernel::tier(), job, out, sum)
}

/// The f64 path: f64 throughout, one position at a time.
pub(crate) fn run_f64(
    job: &ChannelJob<'_, f64, f64>,
    out: &mut [MaybeUninit<f64>],
    sum: &mut [MaybeUninit<f64>],
) {
    let l = job.x.l;
    if l.len() == 0 {
        return;
    }
    let (out, sum) = (Out::new(out), Out::new(sum));
    let (cn, inner, nv) = (l.channels, l.inner, job.var_size);
    for_tasks(&l, 8, |o, i0, b| {
        for i in i0..i0 + b {
            let v = |c: usize| {
                let x = job.x.data[l.at(o, c, i)];
                match &job.residual {
                    Some(r) => x + r.data[r.l.at(o, c, i)],
                    None => x,
                }
            };
            let ss: f64 = (0..nv).map(|c| v(c) * v(c)).sum();
            let scale = scale_f64(ss, nv, job.eps, job.eps_mode);
            for c in 0..cn {
                let at = (o * cn + c) * inner + i;
                // SAFETY: element (o, c, i) belongs to this task's positions alone.
                unsafe { out.strip(at, 1)[0].write(v(c) * scale * job.weight[c]) };
                if job.residual.is_some() {
                    // SAFETY: likewise.
                    unsafe { sum.strip(at, 1)[0].write(v(c)) };
                }
            }
        }
    });
}

#[cfg(test)]
mod tests;
