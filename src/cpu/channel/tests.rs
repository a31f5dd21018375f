//! Tests of the channel kernel: every tier, and the vector and scalar paths, bit-identical.

use super::super::kernel::tests::{all_tiers, lcg};
use super::*;
use half::bf16;

/// Runs `job` on `tier` into fresh buffers poisoned with NaN; returns (out, sum) as bits.
fn run_bits(tier: Tier, job: &ChannelJob<'_, bf16, f32>) -> (Vec<u16>, Vec<u16>) {
    let n = job.x.l.len();
    let poison = MaybeUninit::new(bf16::NAN);
    let mut out = vec![poison; n];
    let mut sum = vec![poison; if job.residual.is_some() { n } else { 0 }];
    run_f32_with(tier, job, &mut out, &mut sum);
    // SAFETY: initialised (poisoned) above, and the kernel overwrites every element.
    let bits = |v: Vec<MaybeUninit<bf16>>| {
        v.into_iter()
            .map(|e| unsafe { e.assume_init() }.to_bits())
            .collect()
    };
    (bits(out), bits(sum))
}

fn layout(
    outer: usize,
    channels: usize,
    inner: usize,
    inner_stride: usize,
    offset: usize,
) -> ChannelLayout {
    ChannelLayout {
        offset,
        outer,
        outer_stride: channels * inner * inner_stride,
        channels,
        c_stride: inner * inner_stride,
        inner,
        inner_stride,
    }
}

#[test]
fn tiers_and_paths_are_bit_identical() {
    let mut seed = 11u64;
    // Inner sizes around the 16-lane blocks and the task block; channels around the variance size.
    for &(outer, channels, inner) in &[
        (2, 3, 1),
        (1, 5, 17),
        (3, 16, 130),
        (1, 40, 257),
        (2, 7, 33),
    ] {
        let n = outer * channels * inner;
        let x: Vec<bf16> = (0..n + 5).map(|_| bf16::from_f32(lcg(&mut seed))).collect();
        let r: Vec<bf16> = (0..n).map(|_| bf16::from_f32(lcg(&mut seed))).collect();
        // The same values with every inner position two elements apart: the scalar path.
        let mut x2 = vec![bf16::ZERO; 2 * n + 5];
        for (i, v) in x[5..].iter().enumerate() {
            x2[5 + 2 * i] = *v;
        }
        let w: Vec<f32> = (0..channels).map(|_| lcg(&mut seed)).collect();
        let planes = |data, stride| Planes {
            data,
            l: layout(outer, channels, inner, stride, 5),
        };
        for (fused, mode, rounding, var_size) in [
            (false, EpsMode::AddToMean, Rounding::AtEnd, channels),
            (
                true,
                EpsMode::ClampNorm,
                Rounding::BeforeWeight,
                channels.div_ceil(2),
            ),
            (true, EpsMode::AddToMean, Rounding::AtEnd, channels),
        ] {
            let job = |xp| ChannelJob {
                x: xp,
                residual: fused.then_some(Planes {
                    data: &r,
                    l: layout(outer, channels, inner, 1, 0),
                }),
                weight: &w,
                var_size,
                eps: 1e-6,
                eps_mode: mode,
                rounding,
            };
            let want = run_bits(Tier::Portable, &job(planes(&x, 1)));
            assert!(
                want.0.iter().all(|&b| !bf16::from_bits(b).is_nan()),
                "unwritten output"
            );
            for t in all_tiers() {
                assert_eq!(
                    run_bits(t, &job(planes(&x, 1))),
                    want,
                    "tier {t:?} {outer}x{channels}x{inner}"
                );
            }
            let scalar = run_bits(Tier::Portable, &job(planes(&x2, 2)));
            assert_eq!(
                scalar, want,
                "scalar path {outer}x{channels}x{inner} fused {fused}"
            );
        }
    }
}
