//! Random inputs of the case matrix: a fast seeded generator, normal values, the value kinds
//! of `cases::Values`, and storing them in a dtype.

use super::cases::Values;
use candle_core::DType;
use half::{bf16, f16};
use rand::{Rng, RngCore};

/// SplitMix64 (Steele, Lea, Flood 2014): fast, for the bulk of the inputs.
pub struct SplitMix64(pub u64);

impl RngCore for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// Normal values with standard deviation `sd` (Marsaglia's polar method).
pub fn randn(rng: &mut impl Rng, n: usize, sd: f64) -> Vec<f64> {
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let (a, b) = (2.0 * rng.gen::<f64>() - 1.0, 2.0 * rng.gen::<f64>() - 1.0);
        let s = a * a + b * b;
        if s > 0.0 && s < 1.0 {
            let m = (-2.0 * s.ln() / s).sqrt() * sd;
            v.extend([a * m, b * m]);
        }
    }
    v.truncate(n);
    v
}

/// Random values made representable in `dt` (through f32: any rounding will do for inputs,
/// and this one is fast).
pub fn store(vals: &[f64], dt: DType) -> Vec<f64> {
    let f = |v: f64| v as f32;
    match dt {
        DType::F64 => vals.to_vec(),
        DType::F32 => vals.iter().map(|&v| f(v) as f64).collect(),
        DType::F16 => vals.iter().map(|&v| f16::from_f32(f(v)).to_f64()).collect(),
        DType::BF16 => vals
            .iter()
            .map(|&v| bf16::from_f32(f(v)).to_f64())
            .collect(),
        other => panic!("no float dtype: {other:?}"),
    }
}

pub fn draw(rng: &mut impl Rng, values: Values, dims: &[usize]) -> Vec<f64> {
    let n: usize = dims.iter().product();
    let h = *dims.last().unwrap_or(&1);
    match values {
        Values::Normal(sd) => randn(rng, n, sd),
        Values::Uniform(s) => (0..n).map(|_| rng.gen_range(-s..s)).collect(),
        Values::Extremes => {
            let kinds = [1e30f32, 1.0, 1e-30, f32::NAN, 1.0, f32::INFINITY, 3e-3, 1.0];
            (0..n)
                .map(|j| {
                    let (k, i) = (j / h % kinds.len(), j % h);
                    let (m, s) = (kinds[k], ((i * 7 + k) % 13) as f32 / 6.5 - 1.0 + 0.05);
                    f64::from(match (m.is_nan(), m.is_infinite()) {
                        (true, _) if i == 3 => f32::NAN,
                        (false, true) if i == 5 => f32::INFINITY,
                        (true, _) | (_, true) => s,
                        _ => s * m,
                    })
                })
                .collect()
        }
        Values::NearF16Max => (0..n)
            .map(|i| f64::from(60000.0 - (i % 17) as f32 * 100.0))
            .collect(),
    }
}
