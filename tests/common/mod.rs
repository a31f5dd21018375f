//! Shared test support: an independent f64 reference written as plain loops, random inputs,
//! and comparison metrics. Nothing here calls the code under test.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{Rounding, WeightMode};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

/// A fresh seed per run (printed, and taken from `TEST_SEED` when set, to replay a failure).
pub fn rng() -> (StdRng, u64) {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("TEST_SEED={seed}");
    (StdRng::seed_from_u64(seed), seed)
}

pub fn randn(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            // Box-Muller
            let u: f64 = rng.gen_range(1e-12..1.0);
            let v: f64 = rng.gen_range(0.0..1.0);
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * scale
        })
        .collect()
}

/// Rounds an f64 to `dt` and back (round to nearest even), independently of the crate.
pub fn round_to(v: f64, dt: DType) -> f64 {
    match dt {
        DType::F64 => v,
        DType::F32 => v as f32 as f64,
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        _ => unreachable!(),
    }
}

/// The values after storing them in `dt` (what the op actually sees).
pub fn quantize(vals: &[f64], dt: DType) -> Vec<f64> {
    vals.iter().map(|&v| round_to(v, dt)).collect()
}

pub fn tensor(vals: &[f64], shape: &[usize], dt: DType) -> Result<Tensor> {
    Tensor::from_vec(vals.to_vec(), shape, &Device::Cpu)?.to_dtype(dt)
}

pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

pub struct RefOpts {
    pub eps: f64,
    pub mode: WeightMode,
    pub rounding: Rounding,
}

/// Reference RMSNorm over rows of `h`, in f64 with plain loops. `x`, `r`, `w` are the values as
/// stored (already quantised). Returns (normed, sum) where sum is empty when `r` is None.
/// `dt` is the output dtype, used only for the BeforeWeight rounding step and the sum rounding.
pub fn reference(
    x: &[f64],
    r: Option<&[f64]>,
    w: Option<&[f64]>,
    h: usize,
    o: &RefOpts,
    dt: DType,
) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len().checked_div(h).unwrap_or(0);
    let mut out = vec![0.0; x.len()];
    let mut sum = Vec::new();
    for row in 0..rows {
        let s: Vec<f64> = (0..h)
            .map(|i| {
                let k = row * h + i;
                match r {
                    // The contract forms the sum in f32 for f32/f16/bf16 inputs.
                    Some(r) if dt != DType::F64 => (x[k] as f32 + r[k] as f32) as f64,
                    Some(r) => x[k] + r[k],
                    None => x[k],
                }
            })
            .collect();
        if r.is_some() {
            sum.extend(s.iter().map(|&v| round_to(v, dt)));
        }
        let mut ss = 0.0;
        for v in &s {
            ss += v * v;
        }
        let scale = 1.0 / (ss / h as f64 + o.eps).sqrt();
        for i in 0..h {
            let mut n = s[i] * scale;
            if o.rounding == Rounding::BeforeWeight {
                n = round_to(n, dt);
            }
            let wi = match (w, o.mode) {
                (None, _) => 1.0,
                (Some(w), WeightMode::Scale) => w[i],
                (Some(w), WeightMode::OffsetOne) => 1.0 + w[i],
            };
            out[row * h + i] = n * wi;
        }
    }
    (out, sum)
}

/// Relative L2 tolerance per dtype (DESIGN.md numerics contract).
pub fn rel_l2_tol(dt: DType) -> f64 {
    match dt {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        _ => unreachable!(),
    }
}

/// Unit roundoff of the dtype.
pub fn ulp(dt: DType) -> f64 {
    match dt {
        DType::F64 => f64::EPSILON,
        DType::F32 => f32::EPSILON as f64,
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        _ => unreachable!(),
    }
}

/// Asserts `got` matches `want`: NaN exactly where the reference has NaN, relative L2 under the
/// dtype's bound, and every element within `ulps` units of the dtype's precision (relative to
/// the element, plus the same relative to the row scale for values near zero).
pub fn assert_close(got: &[f64], want: &[f64], dt: DType, ulps: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0.0, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}: element {i}: want NaN, got {g}");
            continue;
        }
        assert!(!g.is_nan(), "{what}: element {i}: want {w}, got NaN");
        if w.is_infinite() {
            assert_eq!(g, w, "{what}: element {i}");
            continue;
        }
        let bound = ulps * ulp(dt) * (w.abs() + 1e-3) + 1e-300;
        assert!(
            (g - w).abs() <= bound,
            "{what}: element {i}: want {w:e}, got {g:e}, |diff| {:e} > {bound:e}",
            (g - w).abs()
        );
        num += (g - w) * (g - w);
        den += w * w;
    }
    if den > 0.0 {
        let rel = (num / den).sqrt();
        assert!(
            rel <= rel_l2_tol(dt),
            "{what}: relative L2 {rel:e} > {:e}",
            rel_l2_tol(dt)
        );
    }
}
