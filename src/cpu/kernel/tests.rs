//! Tests of the row kernel: every tier bit-identical, task splitting, and (ignored) where the
//! time goes.

use super::*;

/// Uniform-ish values in [-2, 2) from a seed (the CPU kernels' tests).
pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
}

/// Every instruction-set tier this CPU supports.
pub(crate) fn all_tiers() -> Vec<Tier> {
    let mut t = vec![Tier::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        t.extend(Avx2::detect().map(Tier::Avx2));
        t.extend(Avx512::detect().map(Tier::Avx512));
    }
    t
}

mod tiers {
    use super::super::*;
    use super::{all_tiers, lcg};
    use half::{bf16, f16};

    fn tiers_agree<T: Elem + PartialEq + std::fmt::Debug>(cvt: fn(f32) -> T, bits: fn(T) -> u64) {
        let mut seed = 7u64;
        for &h in &[1usize, 15, 16, 17, 33, 250, 1536] {
            let rows = 37;
            let x: Vec<T> = (0..rows * h + 3).map(|_| cvt(lcg(&mut seed))).collect();
            let r: Vec<T> = (0..rows * h).map(|_| cvt(lcg(&mut seed))).collect();
            let w: Vec<f32> = (0..h).map(|_| lcg(&mut seed)).collect();
            for fused in [false, true] {
                let options = [Rounding::AtEnd, Rounding::BeforeWeight]
                    .into_iter()
                    .flat_map(|rounding| [(rounding, h), (rounding, h.div_ceil(3))]);
                for (rounding, var_size) in options {
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
                        var_size,
                        eps: 1e-6,
                        eps_mode: if var_size == h {
                            crate::config::EpsMode::AddToMean
                        } else {
                            crate::config::EpsMode::ClampNorm
                        },
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
mod cost_split {
    use super::super::*;
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
                var_size: h,
                eps: 1e-6,
                eps_mode: crate::config::EpsMode::AddToMean,
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
