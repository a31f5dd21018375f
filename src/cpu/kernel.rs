//! The CPU row kernel: two passes over each row (sum of squares, then scale), parallel over
//! rows with rayon, 16-lane f32 blocks compiled per instruction-set tier.

use super::simd::{hsum16, Elem, Isa, Portable};
use crate::config::Rounding;
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
    pub eps: C,
    pub rounding: Rounding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The widest tier this CPU supports, detected once.
pub(crate) fn tier() -> Tier {
    static TIER: OnceLock<Tier> = OnceLock::new();
    *TIER.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let base = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c");
            let wide = std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512dq");
            if base && wide {
                return Tier::Avx512;
            }
            if base {
                return Tier::Avx2;
            }
        }
        Tier::Portable
    })
}

#[inline(always)]
fn arr<T>(s: &[T]) -> &[T; 16] {
    s.try_into().expect("chunks_exact(16) yields 16 elements")
}

#[inline(always)]
fn arr_mut<T>(s: &mut [T]) -> &mut [T; 16] {
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
/// `eps`: recomputed with an f64 sum, so huge and tiny rows still normalise correctly.
#[cold]
#[inline(never)]
fn rescue_row<T: Elem>(
    x: &[T],
    r: &[T],
    w: &[f32],
    out: &mut [MaybeUninit<T>],
    eps: f32,
    fused: bool,
    rb: bool,
) {
    let h = x.len();
    let ss: f64 = (0..h)
        .map(|i| {
            let v = input(x, r, i, fused) as f64;
            v * v
        })
        .sum();
    let scale = 1.0 / (ss / h as f64 + eps as f64).sqrt();
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
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    let h = job.hidden;
    let n16 = h / 16 * 16;
    let inv_h = 1.0 / h as f32;
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
        let mut acc = I::zero();
        let mut tail = [0f32; 16];
        if FUSED {
            let s = sums.next().expect("sum has one row per output row");
            let (sb, st) = s.split_at_mut(n16);
            for ((xc, rc), sc) in xb
                .chunks_exact(16)
                .zip(rb.chunks_exact(16))
                .zip(sb.chunks_exact_mut(16))
            {
                let v = I::add(T::load::<I>(arr(xc)), T::load::<I>(arr(rc)));
                acc = I::add(acc, I::mul(v, v));
                T::store::<I>(v, arr_mut(sc));
            }
            for k in 0..xt.len() {
                let v = xt[k].to_f32() + rt[k].to_f32();
                st[k].write(T::from_f32(v));
                tail[k] = v * v;
            }
        } else {
            for xc in xb.chunks_exact(16) {
                let v = T::load::<I>(arr(xc));
                acc = I::add(acc, I::mul(v, v));
            }
            for k in 0..xt.len() {
                let v = xt[k].to_f32();
                tail[k] = v * v;
            }
        }
        let mut lanes = I::to_array(acc);
        for k in 0..16 {
            lanes[k] += tail[k];
        }
        let ss = hsum16(lanes);
        let denom = ss * inv_h + eps;
        if ss.is_infinite() || denom < 1e-30 {
            rescue_row(x, r, w, o, eps, FUSED, RB);
            continue;
        }
        let scale = 1.0 / denom.sqrt();
        let vscale = I::splat(scale);

        // Pass 2: scale, optionally round, multiply by the weight, round.
        let (ob, ot) = o.split_at_mut(n16);
        for (((xc, rc), wc), oc) in xb
            .chunks_exact(16)
            .zip(rb.chunks_exact(16))
            .zip(wb.chunks_exact(16))
            .zip(ob.chunks_exact_mut(16))
        {
            let mut v = T::load::<I>(arr(xc));
            if FUSED {
                v = I::add(v, T::load::<I>(arr(rc)));
            }
            let mut n = I::mul(v, vscale);
            if RB {
                n = T::round::<I>(n);
            }
            T::store::<I>(I::mul(n, I::load_f32(arr(wc))), arr_mut(oc));
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_chunk_avx2<T: Elem, const FUSED: bool, const RB: bool>(
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    rows_chunk::<T, super::simd::Avx2, FUSED, RB>(job, row0, out, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
fn rows_chunk_avx512<T: Elem, const FUSED: bool, const RB: bool>(
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    rows_chunk::<T, super::simd::Avx512, FUSED, RB>(job, row0, out, sum)
}

fn dispatch<T: Elem, const FUSED: bool, const RB: bool>(
    tier: Tier,
    job: &Job<'_, T, f32>,
    row0: usize,
    out: &mut [MaybeUninit<T>],
    sum: &mut [MaybeUninit<T>],
) {
    match tier {
        Tier::Portable => rows_chunk::<T, Portable, FUSED, RB>(job, row0, out, sum),
        // SAFETY: `tier()` returns these tiers only after detecting every feature the functions
        // are compiled with.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 => unsafe { rows_chunk_avx2::<T, FUSED, RB>(job, row0, out, sum) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => unsafe { rows_chunk_avx512::<T, FUSED, RB>(job, row0, out, sum) },
    }
}

/// Rows per rayon task: at least ~64 KiB of input per task, and enough tasks to balance.
fn rows_per_task(rows: usize, hidden: usize, elem_bytes: usize) -> usize {
    let by_bytes = (64 * 1024 / (hidden * elem_bytes).max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    let by_balance = rows.div_ceil(threads * 8).max(1);
    by_bytes.min(by_balance).max(1)
}

/// Work below this many elements runs on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

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
    let rb = job.rounding == Rounding::BeforeWeight;
    let f = |row0: usize, o: &mut [MaybeUninit<T>], s: &mut [MaybeUninit<T>]| match (fused, rb) {
        (false, false) => dispatch::<T, false, false>(tier, job, row0, o, s),
        (false, true) => dispatch::<T, false, true>(tier, job, row0, o, s),
        (true, false) => dispatch::<T, true, false>(tier, job, row0, o, s),
        (true, true) => dispatch::<T, true, true>(tier, job, row0, o, s),
    };
    let rows = out.len() / h;
    if out.len() < PARALLEL_MIN_ELEMS || rayon::current_num_threads() <= 1 {
        return f(0, out, sum);
    }
    let per = rows_per_task(rows, h, std::mem::size_of::<T>());
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

/// The f64 path: f64 storage, f64 arithmetic throughout (no rounding step exists).
pub(crate) fn run_f64(
    job: &Job<'_, f64, f64>,
    out: &mut [MaybeUninit<f64>],
    sum: &mut [MaybeUninit<f64>],
) {
    let h = job.hidden;
    if out.is_empty() || h == 0 {
        return;
    }
    let row_fn = |r: usize, o: &mut [MaybeUninit<f64>], s: Option<&mut [MaybeUninit<f64>]>| {
        let x = job.x.row(r, h);
        let res = job.residual.as_ref().map(|res| res.row(r, h));
        let v = |i: usize| match res {
            Some(res) => x[i] + res[i],
            None => x[i],
        };
        let mut acc = [0f64; 4];
        for i in 0..h {
            let e = v(i);
            acc[i % 4] += e * e;
        }
        if let Some(s) = s {
            for (i, si) in s.iter_mut().enumerate() {
                si.write(v(i));
            }
        }
        let ss = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        let scale = 1.0 / (ss / h as f64 + job.eps).sqrt();
        for (i, oi) in o.iter_mut().enumerate() {
            oi.write(v(i) * scale * job.weight[i]);
        }
    };
    if job.residual.is_some() {
        out.par_chunks_mut(h)
            .zip(sum.par_chunks_mut(h))
            .enumerate()
            .for_each(|(r, (o, s))| row_fn(r, o, Some(s)));
    } else {
        out.par_chunks_mut(h)
            .enumerate()
            .for_each(|(r, o)| row_fn(r, o, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    fn all_tiers() -> Vec<Tier> {
        let mut t = vec![Tier::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if matches!(tier(), Tier::Avx2 | Tier::Avx512) {
                t.push(Tier::Avx2);
            }
            if tier() == Tier::Avx512 {
                t.push(Tier::Avx512);
            }
        }
        t
    }

    fn tiers_agree<T: Elem + PartialEq + std::fmt::Debug>(cvt: fn(f32) -> T, bits: fn(T) -> u64) {
        let mut seed = 7u64;
        for &h in &[1usize, 15, 16, 17, 33, 250, 1536] {
            let rows = 37;
            let x: Vec<T> = (0..rows * h + 3).map(|_| cvt(lcg(&mut seed))).collect();
            let r: Vec<T> = (0..rows * h).map(|_| cvt(lcg(&mut seed))).collect();
            let w: Vec<f32> = (0..h).map(|_| lcg(&mut seed)).collect();
            for fused in [false, true] {
                for rounding in [Rounding::AtEnd, Rounding::BeforeWeight] {
                    let job = Job {
                        x: Rows {
                            data: &x,
                            offset: 3,
                            stride: h,
                        },
                        residual: fused.then_some(Rows {
                            data: &r,
                            offset: 0,
                            stride: h,
                        }),
                        weight: &w,
                        hidden: h,
                        eps: 1e-6,
                        rounding,
                    };
                    let mut first: Option<(Vec<T>, Vec<T>)> = None;
                    for t in all_tiers() {
                        let n = rows * h;
                        let mut out = vec![MaybeUninit::new(cvt(f32::NAN)); n];
                        let mut sum =
                            vec![MaybeUninit::new(cvt(f32::NAN)); if fused { n } else { 0 }];
                        run_f32_with(t, &job, &mut out, &mut sum);
                        // SAFETY: initialised above (poisoned with NaN) and overwritten.
                        let out: Vec<T> = out
                            .into_iter()
                            .map(|e| unsafe { e.assume_init() })
                            .collect();
                        let sum: Vec<T> = sum
                            .into_iter()
                            .map(|e| unsafe { e.assume_init() })
                            .collect();
                        match &first {
                            None => first = Some((out, sum)),
                            Some((o0, s0)) => {
                                let same = |a: &[T], b: &[T]| {
                                    a.iter().zip(b).all(|(p, q)| bits(*p) == bits(*q))
                                };
                                assert!(same(o0, &out), "tier {t:?} h {h} fused {fused}");
                                assert!(same(s0, &sum), "tier {t:?} h {h} fused {fused}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_tier_is_bit_identical() {
        tiers_agree::<f32>(|v| v, |v| v.to_bits() as u64);
        tiers_agree::<bf16>(bf16::from_f32, |v| v.to_bits() as u64);
        tiers_agree::<f16>(f16::from_f32, |v| v.to_bits() as u64);
    }

    #[test]
    fn task_sizes_cover_rows() {
        for (rows, h) in [(1, 1), (100_000, 128), (8192, 5120), (3, 65_537)] {
            let per = rows_per_task(rows, h, 2);
            assert!(per >= 1 && per <= rows.max(1));
        }
    }
}

/// Where the time goes (`cargo test --release --lib cost_split -- --ignored --nocapture`): the
/// kernel alone into an already-touched output buffer, versus the same call writing a freshly
/// allocated buffer (page faults and the OS zeroing the new pages).
#[cfg(test)]
mod cost_split {
    use super::*;
    use half::bf16;

    #[test]
    #[ignore]
    fn cost_split() {
        for (rows, h) in [(8192usize, 5120usize), (32760, 1536), (65536, 128)] {
            let n = rows * h;
            let x: Vec<bf16> = (0..n)
                .map(|i| bf16::from_f32((i % 97) as f32 * 0.01))
                .collect();
            let w = vec![1.0f32; h];
            let job = Job {
                x: Rows {
                    data: &x,
                    offset: 0,
                    stride: h,
                },
                residual: None,
                weight: &w,
                hidden: h,
                eps: 1e-6,
                rounding: Rounding::AtEnd,
            };
            let mut warm: Vec<MaybeUninit<bf16>> = Vec::with_capacity(n);
            // SAFETY: MaybeUninit needs no initialisation.
            unsafe { warm.set_len(n) };
            let gb = 2.0 * (n * 2) as f64 / 1e9;
            let (mut best_warm, mut best_fresh, mut best_copy) = (f64::MAX, f64::MAX, f64::MAX);
            let mut dst = vec![bf16::ZERO; n];
            for _ in 0..10 {
                let t = std::time::Instant::now();
                run_f32(&job, &mut warm, &mut []);
                best_warm = best_warm.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                let mut fresh: Vec<MaybeUninit<bf16>> = Vec::with_capacity(n);
                // SAFETY: as above.
                unsafe { fresh.set_len(n) };
                run_f32(&job, &mut fresh, &mut []);
                drop(fresh);
                best_fresh = best_fresh.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                dst.copy_from_slice(&x);
                best_copy = best_copy.min(t.elapsed().as_secs_f64());
            }
            eprintln!(
                "bf16 {rows}x{h}: copy {:.1} GB/s, kernel into touched buffer {:.1} GB/s, into fresh buffer {:.1} GB/s",
                gb / best_copy,
                gb / best_warm,
                gb / best_fresh
            );
        }
    }
}
