//! The sampler: the shifted sigma schedule, the DiT's integer timesteps, the Euler step and
//! classifier-free guidance.

use candle_core::{Device, Result, Tensor};
use wan_t2v::sampler::{self, Sampler, SamplerKind};

#[test]
fn sigma_schedule_matches_reference_formula() {
    for (steps, shift) in [(1usize, 1.0f64), (2, 5.0), (50, 5.0), (7, 3.0), (30, 12.0)] {
        let got = sampler::schedule(steps, shift).sigmas;
        assert_eq!(got.len(), steps + 1);
        // numpy: linspace(f32(0.999), 0, steps + 1)[:-1], the shift, a final 0, then float32.
        let start = 0.999f32 as f64;
        for (i, g) in got.iter().take(steps).enumerate() {
            let s = start + i as f64 * ((0.0 - start) / steps as f64);
            let want = shift * s / (1.0 + (shift - 1.0) * s);
            assert_eq!(*g, want as f32 as f64, "steps {steps} shift {shift} i {i}");
        }
        assert_eq!(got[steps], 0.0);
        assert!(
            got.windows(2).all(|w| w[0] > w[1]),
            "not decreasing: {got:?}"
        );
    }
    // First sigma for shift 5: 5 * 0.999 / (1 + 4 * 0.999), to float32 precision.
    let s = sampler::schedule(50, 5.0).sigmas;
    assert!((s[0] - 4.995 / 4.996).abs() < 1e-7);
}

#[test]
fn euler_and_guidance() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[1f32, 2.0], &dev)?;
    let v = Tensor::new(&[0.5f32, -1.0], &dev)?;
    let mut euler = Sampler::new(SamplerKind::Euler, &[0.8, 0.6, 0.0])?;
    let y = euler.step(&v, &x)?.to_vec1::<f32>()?;
    assert!(
        (y[0] - 0.9).abs() < 1e-6 && (y[1] - 2.2).abs() < 1e-6,
        "{y:?}"
    );
    let z = euler.step(&v, &x)?.to_vec1::<f32>()?; // 0.6 -> 0: x - 0.6 v
    assert!(
        (z[0] - 0.7).abs() < 1e-6 && (z[1] - 2.6).abs() < 1e-6,
        "{z:?}"
    );
    assert!(euler.step(&v, &x).is_err());
    let c = Tensor::new(&[1f32, 0.0], &dev)?;
    let u = Tensor::new(&[0f32, 1.0], &dev)?;
    let g = sampler::guide(&c, &u, 5.0)?.to_vec1::<f32>()?;
    assert_eq!(g, vec![5.0, -4.0]);
    Ok(())
}

/// The DiT's timesteps are the reference scheduler's int64 values: 20 steps at shift 5 give
/// 999, 989, 978 (sigma * 1000 = 999.800, 989.377, 978.048), never the fractional sigma * 1000.
#[test]
fn timesteps_are_truncated_like_the_reference() {
    let s = sampler::schedule(20, 5.0);
    assert_eq!(s.timesteps.len(), 20);
    assert_eq!(&s.timesteps[..3], &[999.0, 989.0, 978.0]);
    for (t, sigma) in s.timesteps.iter().zip(&s.sigmas) {
        assert_eq!(t.fract(), 0.0, "{t}");
        assert!(
            (sigma * 1000.0 - t) > -1e-3 && sigma * 1000.0 - t < 1.0,
            "{t} vs sigma {sigma}"
        );
    }
}
