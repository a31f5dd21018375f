//! The UniPC sampler against numbers the reference's own `FlowUniPCMultistepScheduler` produced
//! (`tests/reference/unipc_reference.py`, data in `tests/reference/unipc_toy.json`) on a toy
//! problem with an exact velocity field: the schedule (float32 sigmas, int64 timesteps) must be
//! identical, and every intermediate sample within 2e-6 x (1 + |value|) of it (the coefficients here are
//! f64, the reference's float32; the largest difference seen is 3.5e-7; getting either rho of
//! order 1 wrong by 10% moves a sample by 3e-5).

use candle_core::{Device, Result, Tensor};
use serde::Deserialize;
use wan_t2v::sampler::{self, Sampler, SamplerKind};

#[derive(Deserialize)]
struct Reference {
    mu: Vec<f64>,
    std: Vec<f64>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    steps: usize,
    shift: f64,
    /// float32 values (read as f32: serde_json's f64 parsing may be off by an f64 ulp).
    sigmas: Vec<f32>,
    timesteps: Vec<i64>,
    start: Vec<f32>,
    samples: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../reference/unipc_toy.json")).expect("unipc_toy.json")
}

/// E[e - x0 | x_t = x] for x0 ~ N(mu, std^2), e ~ N(0, 1), x_t = (1 - t) x0 + t e (in f64, as
/// the script computes it, then rounded to f32).
fn velocity(r: &Reference, x: &[f32], t: f64) -> Vec<f32> {
    let a = 1.0 - t;
    x.iter()
        .zip(r.mu.iter().zip(&r.std))
        .map(|(&x, (&mu, &s))| {
            let (s2, d) = (s * s, x as f64 - a * mu);
            let var = a * a * s2 + t * t;
            (t * d / var - (mu + a * s2 * d / var)) as f32
        })
        .collect()
}

#[test]
fn schedule_is_the_reference_schedule() {
    let r = reference();
    assert!(r.cases.len() >= 5);
    for c in &r.cases {
        let s = sampler::schedule(c.steps, c.shift);
        assert!(
            s.sigmas.iter().all(|&x| x as f32 as f64 == x),
            "not float32 values"
        );
        let sigmas: Vec<f32> = s.sigmas.iter().map(|&x| x as f32).collect();
        assert_eq!(
            sigmas, c.sigmas,
            "sigmas, {} steps shift {}",
            c.steps, c.shift
        );
        let ts: Vec<i64> = s.timesteps.iter().map(|&t| t as i64).collect();
        assert_eq!(
            ts, c.timesteps,
            "timesteps, {} steps shift {}",
            c.steps, c.shift
        );
    }
}

#[test]
fn unipc_follows_the_reference_scheduler() -> Result<()> {
    let r = reference();
    let dev = Device::Cpu;
    for c in &r.cases {
        let sched = sampler::schedule(c.steps, c.shift);
        let mut solver = Sampler::new(SamplerKind::Unipc, &sched.sigmas)?;
        let mut x = Tensor::new(c.start.as_slice(), &dev)?;
        for (i, want) in c.samples.iter().enumerate() {
            let v = velocity(&r, &x.to_vec1::<f32>()?, sched.sigmas[i]);
            x = solver.step(&Tensor::new(v.as_slice(), &dev)?, &x)?;
            let got = x.to_vec1::<f32>()?;
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                let tol = 2e-6 * (1.0 + w.abs()); // seen: 3.5e-7
                assert!(
                    (g - w).abs() <= tol,
                    "{} steps shift {}: step {i} element {k}: {g} vs reference {w}",
                    c.steps,
                    c.shift
                );
            }
        }
        // The last step lands on the x0 prediction; the sampler refuses a step past the end.
        assert!(solver.step(&x, &x).is_err());
    }
    Ok(())
}

/// Why UniPC is the default: with 20 steps at shift 5 Euler ends 3.0% (relative L2) away from the
/// reference's result on the toy problem, UniPC 1e-7.
#[test]
fn euler_is_further_from_the_reference_than_unipc() -> Result<()> {
    let r = reference();
    let c = r
        .cases
        .iter()
        .find(|c| c.steps == 20)
        .expect("a 20-step case");
    let dev = Device::Cpu;
    let sched = sampler::schedule(c.steps, c.shift);
    let mut finals = Vec::new();
    for kind in [SamplerKind::Unipc, SamplerKind::Euler] {
        let mut solver = Sampler::new(kind, &sched.sigmas)?;
        let mut x = Tensor::new(c.start.as_slice(), &dev)?;
        for i in 0..c.steps {
            let v = velocity(&r, &x.to_vec1::<f32>()?, sched.sigmas[i]);
            x = solver.step(&Tensor::new(v.as_slice(), &dev)?, &x)?;
        }
        finals.push(x.to_vec1::<f32>()?);
    }
    let want = c.samples.last().expect("samples");
    let dist = |a: &[f32]| -> f64 {
        let num: f64 = a
            .iter()
            .zip(want)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    let (unipc, euler) = (dist(&finals[0]), dist(&finals[1]));
    assert!(unipc < 1e-6, "UniPC {unipc}");
    assert!(euler > 2e-2, "Euler {euler}");
    Ok(())
}

#[test]
fn sampler_refuses_a_bad_schedule() {
    for bad in [
        vec![0.5],
        vec![0.5, 0.6, 0.0],
        vec![1.0, 0.0],
        vec![0.5, 0.1],
    ] {
        assert!(Sampler::new(SamplerKind::Unipc, &bad).is_err(), "{bad:?}");
    }
}
