//! The sampler: the shifted sigma schedule, the Euler step and classifier-free guidance.

use candle_core::{Device, Result, Tensor};
use wan_t2v::sampler;

#[test]
fn sigma_schedule_matches_reference_formula() {
    for (steps, shift) in [(1usize, 1.0f64), (2, 5.0), (50, 5.0), (7, 3.0), (30, 12.0)] {
        let got = sampler::sigmas(steps, shift);
        assert_eq!(got.len(), steps + 1);
        // numpy: linspace(0.999, 0, steps + 1)[:-1], then the shift, then a final 0.
        for (i, g) in got.iter().take(steps).enumerate() {
            let s = 0.999 + i as f64 * ((0.0 - 0.999) / steps as f64);
            let want = shift * s / (1.0 + (shift - 1.0) * s);
            assert!(
                (g - want).abs() < 1e-12,
                "steps {steps} shift {shift} i {i}: {g} vs {want}"
            );
        }
        assert_eq!(got[steps], 0.0);
        assert!(
            got.windows(2).all(|w| w[0] > w[1]),
            "not decreasing: {got:?}"
        );
    }
    // First sigma for shift 5: 5 * 0.999 / (1 + 4 * 0.999).
    let s = sampler::sigmas(50, 5.0);
    assert!((s[0] - 4.995 / 4.996).abs() < 1e-12);
}

#[test]
fn euler_and_guidance() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[1f32, 2.0], &dev)?;
    let v = Tensor::new(&[0.5f32, -1.0], &dev)?;
    let y = sampler::euler_step(&x, &v, 0.8, 0.6)?.to_vec1::<f32>()?;
    assert!(
        (y[0] - 0.9).abs() < 1e-6 && (y[1] - 2.2).abs() < 1e-6,
        "{y:?}"
    );
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
    let sig = sampler::sigmas(20, 5.0);
    let ts = sampler::timesteps(&sig);
    assert_eq!(ts.len(), 20);
    assert_eq!(&ts[..3], &[999.0, 989.0, 978.0]);
    for (t, s) in ts.iter().zip(&sig) {
        assert_eq!(t.fract(), 0.0, "{t}");
        assert!(*t <= s * 1000.0 && s * 1000.0 - t < 1.0, "{t} vs sigma {s}");
    }
    assert!(sampler::timesteps(&[0.0]).is_empty());
}
