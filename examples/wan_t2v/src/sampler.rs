//! Flow-matching sampling as in `wan/text2video.py` with the reference's
//! `FlowUniPCMultistepScheduler` (`wan/utils/fm_solvers_unipc.py`) as the default:
//!
//! - schedule: sigmas `linspace(sigma_max, 0, N + 1)[:-1]` with `sigma_max` = float32(0.999),
//!   shifted `shift * s / (1 + (shift - 1) * s)`, a final sigma of 0, stored as float32; the
//!   DiT's timestep = the unrounded sigma * 1000 truncated to an integer (the reference stores its
//!   timesteps as int64);
//! - UniPC: order 2, `bh2`, predicting x0 (`x0 = x - sigma * v`), a UniC corrector at every step
//!   after the first, orders warming up from 1 and the last step of order 1
//!   (`lower_order_final`); the last step returns the x0 prediction;
//! - Euler, kept as an option: `x += (sigma_next - sigma) * v`;
//! - classifier-free guidance `v = uncond + g * (cond - uncond)`.
//!
//! The scalar coefficients are computed in f64 from the float32 sigmas (the reference computes
//! them in float32); `tests/wan_t2v/sampler_unipc.rs` checks the result against numbers the
//! reference's own scheduler produced.

use crate::rng::Rng;
use candle_core::{Device, Error, Result, Tensor};

/// Which sampler the pipeline steps with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    /// The reference's default: multistep UniPC (order 2, bh2) on the x0 prediction.
    #[default]
    Unipc,
    /// First-order Euler steps of the flow ODE.
    Euler,
}

/// The sigmas and DiT timesteps of an N-step schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// N + 1 values, float32 as the reference stores them, the last one 0.
    pub sigmas: Vec<f64>,
    /// N integer-valued timesteps, `trunc(sigma * 1000)` of the unrounded sigmas.
    pub timesteps: Vec<f64>,
}

/// The reference's schedule for `steps` steps at `shift` (999, 989, 978, ... for 20 steps at 5).
pub fn schedule(steps: usize, shift: f64) -> Schedule {
    // The training schedule's first sigma, 1 - 1/1000 ... as float32 read back as a double.
    let start = 0.999f32 as f64;
    let step = -start / steps as f64; // numpy linspace with N + 1 points, the last dropped
    let shifted: Vec<f64> = (0..steps)
        .map(|i| {
            let s = start + i as f64 * step;
            shift * s / (1.0 + (shift - 1.0) * s)
        })
        .collect();
    let timesteps = shifted.iter().map(|s| (s * 1000.0).trunc()).collect();
    let mut sigmas: Vec<f64> = shifted.iter().map(|&s| s as f32 as f64).collect();
    sigmas.push(0.0);
    Schedule { sigmas, timesteps }
}

/// Seeded standard-normal noise of the given shape (the same on every device).
pub fn noise(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    let v = Rng::new(seed).normal_vec(n, 0.0, 1.0);
    Tensor::from_vec(v, shape, dev)
}

/// Classifier-free guidance.
pub fn guide(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    uncond + ((cond - uncond)? * scale)?
}

/// A sampler's state over one schedule: call [`Sampler::step`] once per timestep with the
/// DiT's (guided) velocity.
pub struct Sampler {
    kind: SamplerKind,
    sigmas: Vec<f64>,
    order: usize,
    index: usize,
    /// The last `order` x0 predictions, the newest last.
    x0: Vec<Tensor>,
    /// The sample the last predictor started from and that predictor's order.
    last: Option<(Tensor, usize)>,
}

impl Sampler {
    /// A sampler over `sigmas` (N + 1 values, decreasing, the last 0).
    pub fn new(kind: SamplerKind, sigmas: &[f64]) -> Result<Self> {
        let ok = sigmas.len() >= 2
            && sigmas.windows(2).all(|w| w[0] > w[1])
            && sigmas[0] < 1.0
            && sigmas[sigmas.len() - 1] == 0.0;
        if !ok {
            return Err(Error::Msg(format!(
                "sampler: sigmas must decrease from below 1 to a final 0, got {sigmas:?}"
            )));
        }
        Ok(Self {
            kind,
            sigmas: sigmas.to_vec(),
            order: 2,
            index: 0,
            x0: Vec::new(),
            last: None,
        })
    }

    /// The sample at the next sigma, from the sample `x` at the current one and the velocity
    /// `v` the model predicted there.
    pub fn step(&mut self, v: &Tensor, x: &Tensor) -> Result<Tensor> {
        let i = self.index;
        let steps = self.sigmas.len() - 1;
        if i >= steps {
            return Err(Error::Msg(format!(
                "sampler: step {} called on a schedule of {steps} steps",
                i + 1
            )));
        }
        let next = match self.kind {
            SamplerKind::Euler => (x + (v * (self.sigmas[i + 1] - self.sigmas[i]))?)?,
            SamplerKind::Unipc => self.unipc_step(v, x)?,
        };
        self.index += 1;
        Ok(next)
    }

    fn unipc_step(&mut self, v: &Tensor, x: &Tensor) -> Result<Tensor> {
        let i = self.index;
        let m = (x - (v * self.sigmas[i])?)?;
        let x = match self.last.take() {
            Some((last, order)) => self.correct(&m, &last, order)?,
            None => x.clone(),
        };
        self.x0.push(m);
        if self.x0.len() > self.order {
            self.x0.remove(0);
        }
        let steps = self.sigmas.len() - 1;
        let order = self.order.min(steps - i).min(i + 1);
        let next = self.predict(&x, order)?;
        self.last = Some((x, order));
        Ok(next)
    }

    /// log(alpha / sigma) at schedule index `k` (+inf at the final sigma 0).
    fn lambda(&self, k: usize) -> f64 {
        let s = self.sigmas[k];
        (1.0 - s).ln() - s.ln()
    }

    /// One UniPC update from index `s0` to `t`, starting from sample `x`: `base(x, m0) -
    /// alpha_t B(h) sum_k rhos[k] D_k` over the `order - 1` older x0 predictions m_k at s0 - k,
    /// D_k = (m_k - m0) / r_k, m0 the newest; `rhos` picks the weights from the coefficients.
    /// Returns the sample, the coefficients and the weights.
    fn update(
        &self,
        t: usize,
        s0: usize,
        x: &Tensor,
        order: usize,
        rhos: impl FnOnce(&Coefficients) -> Vec<f64>,
    ) -> Result<(Tensor, Coefficients, Vec<f64>)> {
        let n = self.x0.len();
        let m0 = &self.x0[n - 1];
        let older: Vec<usize> = (1..order).map(|k| s0 - k).collect();
        let c = Coefficients::new(self, t, s0, &older);
        let rhos = rhos(&c);
        let mut y = c.base(x, m0)?;
        for (k, (rk, rho)) in c.rks.iter().zip(&rhos).take(older.len()).enumerate() {
            let d = ((&self.x0[n - 2 - k] - m0)? / *rk)?;
            y = (y - (d * (c.alpha_t * c.b_h * rho))?)?;
        }
        Ok((y, c, rhos))
    }

    /// UniP of `order` from index i to i + 1, with the x0 predictions in `self.x0`.
    fn predict(&self, x: &Tensor, order: usize) -> Result<Tensor> {
        let i = self.index;
        let (y, _, _) = self.update(i + 1, i, x, order, |c| {
            if order == 2 {
                vec![0.5]
            } else {
                solve(&c.r[..order - 1], &c.b[..order - 1], order - 1)
            }
        })?;
        Ok(y)
    }

    /// UniC at index i of the previous step's predictor (of `order`), which started from `last`
    /// at i - 1; `m` is the x0 prediction at i. Its result replaces the predicted sample.
    fn correct(&self, m: &Tensor, last: &Tensor, order: usize) -> Result<Tensor> {
        let i = self.index;
        let (y, c, rhos) = self.update(i, i - 1, last, order, |c| {
            if order == 1 {
                vec![0.5]
            } else {
                solve(&c.r, &c.b, order)
            }
        })?;
        let d_t = (m - &self.x0[self.x0.len() - 1])?;
        y - (d_t * (c.alpha_t * c.b_h * rhos[order - 1]))?
    }
}

/// The scalars of one UniPC update from index `s0` to `t` (B(h) = expm1(-h), "bh2").
struct Coefficients {
    ratio: f64,
    alpha_t: f64,
    h_phi_1: f64,
    b_h: f64,
    /// (lambda_k - lambda_s0) / h for the older indices, then 1.
    rks: Vec<f64>,
    /// R[j][k] = rks[k]^j.
    r: Vec<Vec<f64>>,
    b: Vec<f64>,
}

impl Coefficients {
    fn new(s: &Sampler, t: usize, s0: usize, older: &[usize]) -> Self {
        let (sigma_t, sigma_s0) = (s.sigmas[t], s.sigmas[s0]);
        let h = s.lambda(t) - s.lambda(s0);
        let mut rks: Vec<f64> = older
            .iter()
            .map(|&k| (s.lambda(k) - s.lambda(s0)) / h)
            .collect();
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let p = rks.len();
        let (mut h_phi_k, mut factorial) = (h_phi_1 / hh - 1.0, 1.0);
        let mut b = Vec::with_capacity(p);
        for j in 1..=p {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (j + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let r = (0..p)
            .map(|j| rks.iter().map(|rk| rk.powi(j as i32)).collect())
            .collect();
        Self {
            ratio: sigma_t / sigma_s0,
            alpha_t: 1.0 - sigma_t,
            h_phi_1,
            b_h,
            rks,
            r,
            b,
        }
    }

    /// `sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0`.
    fn base(&self, x: &Tensor, m0: &Tensor) -> Result<Tensor> {
        (x * self.ratio)? - (m0 * (self.alpha_t * self.h_phi_1))?
    }
}

/// Solves the leading `n` x `n` system of `r` for `b` (Gaussian elimination, partial pivoting).
fn solve(r: &[Vec<f64>], b: &[f64], n: usize) -> Vec<f64> {
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let mut row = r[j][..n].to_vec();
            row.push(b[j]);
            row
        })
        .collect();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        let pivot = a[col].clone();
        for row in a.iter_mut().skip(col + 1) {
            let f = row[col] / pivot[col];
            for (dst, src) in row[col..].iter_mut().zip(&pivot[col..]) {
                *dst -= f * src;
            }
        }
    }
    let mut xs = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * xs[k]).sum();
        xs[row] = (a[row][n] - tail) / a[row][row];
    }
    xs
}
