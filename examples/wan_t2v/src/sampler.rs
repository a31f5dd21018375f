//! Flow-matching sampling as in `wan/text2video.py` with `fm_solvers_unipc.py`'s schedule:
//! sigmas `linspace(0.999, 0, N + 1)[:-1]`, shifted `shift * s / (1 + (shift - 1) * s)`, a final
//! sigma of 0, the DiT's timestep = sigma * 1000 truncated to an integer (the reference's
//! scheduler stores its timesteps as int64); classifier-free guidance
//! `v = uncond + g * (cond - uncond)`; Euler steps `x += (sigma_next - sigma) * v`.

use crate::rng::Rng;
use candle_core::{Device, Result, Tensor};

/// The N + 1 sigmas of an N-step schedule (the last one 0).
pub fn sigmas(steps: usize, shift: f64) -> Vec<f64> {
    let (start, end) = (0.999f64, 0.0f64);
    let step = (end - start) / steps as f64; // numpy linspace with N + 1 points
    let mut s: Vec<f64> = (0..steps)
        .map(|i| {
            let s = start + i as f64 * step;
            shift * s / (1.0 + (shift - 1.0) * s)
        })
        .collect();
    s.push(0.0);
    s
}

/// The timesteps the DiT receives for the N + 1 `sigmas` of a schedule: `trunc(sigma * 1000)`
/// for the first N, as the reference's `FlowUniPCMultistepScheduler.set_timesteps` makes them
/// (`(sigmas * 1000).to(int64)`; 999, 989, 978, ... for 20 steps at shift 5).
pub fn timesteps(sigmas: &[f64]) -> Vec<f64> {
    let n = sigmas.len().saturating_sub(1);
    sigmas[..n].iter().map(|s| (s * 1000.0).trunc()).collect()
}

/// Seeded standard-normal noise of the given shape (the same on every device).
pub fn noise(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    let v = Rng::new(seed).normal_vec(n, 0.0, 1.0);
    Tensor::from_vec(v, shape, dev)
}

/// One Euler step of the flow ODE.
pub fn euler_step(x: &Tensor, v: &Tensor, sigma: f64, sigma_next: f64) -> Result<Tensor> {
    x + (v * (sigma_next - sigma))?
}

/// Classifier-free guidance.
pub fn guide(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    uncond + ((cond - uncond)? * scale)?
}
