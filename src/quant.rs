//! Quantised outputs (using only `config` and `error`): the 8-bit formats, how a row's scale is
//! chosen, the checks every entry point makes, and the scalar conversions of the CPU path. The GPU kernels keep their copy in `hip/quant.h`; the
//! contract is `docs/numerics.md`, "Quantised outputs".

use crate::config::NormConfig;
use crate::error::op_error;
use candle_core::{DType, Result, Tensor};

/// The 8-bit format of a quantised norm's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantDType {
    /// OCP fp8 e4m3 ("e4m3fn": no infinities, NaN = `0x7f`/`0xff`, largest finite 448), as
    /// Candle's `DType::F8E4M3` and PyTorch's `float8_e4m3fn` store it.
    F8E4M3,
    /// Signed 8-bit integers in `-128..=127`. Candle has no i8 dtype: the values come back as a
    /// `DType::U8` tensor holding their two's-complement bytes (`-1` is `255`); use
    /// [`Quantized::dequantize`] or reinterpret the bytes in your own kernel.
    I8,
}

impl QuantDType {
    /// The largest magnitude a value is scaled to: 448 for fp8 e4m3, 127 for i8.
    pub fn max_value(self) -> f32 {
        match self {
            QuantDType::F8E4M3 => 448.0,
            QuantDType::I8 => 127.0,
        }
    }

    /// The smallest dynamic scale, `1 / (max_value * 512)` (vLLM's floor): an all-zero row gets
    /// this scale rather than zero.
    pub fn min_scale(self) -> f32 {
        1.0 / (self.max_value() * 512.0)
    }

    /// The Candle dtype of the values tensor: `F8E4M3`, or `U8` for i8 (see [`QuantDType::I8`]).
    pub fn storage_dtype(self) -> DType {
        match self {
            QuantDType::F8E4M3 => DType::F8E4M3,
            QuantDType::I8 => DType::U8,
        }
    }
}

/// How each row's scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuantScale {
    /// Per row: `scale = max(amax / max_value, min_scale)` in f32, `amax` the largest `|y|` of
    /// the row (NaN ignored): vLLM's dynamic per-token quantisation.
    Dynamic,
    /// One scale for every row, e.g. calibrated: finite and > 0.
    Static(f32),
}

/// What a quantised norm writes: the format and the scale rule. `QuantConfig::new(dtype)` is
/// dynamic per-row scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantConfig {
    dtype: QuantDType,
    scale: QuantScale,
}

impl QuantConfig {
    /// `dtype` with a dynamic per-row scale.
    pub fn new(dtype: QuantDType) -> Self {
        Self {
            dtype,
            scale: QuantScale::Dynamic,
        }
    }

    /// One caller's scale for every row (checked finite and > 0 per call).
    pub fn with_static_scale(mut self, scale: f32) -> Self {
        self.scale = QuantScale::Static(scale);
        self
    }

    /// Sets the scale rule.
    pub fn with_scale(mut self, scale: QuantScale) -> Self {
        self.scale = scale;
        self
    }

    /// The output format.
    pub fn dtype(&self) -> QuantDType {
        self.dtype
    }

    /// The scale rule.
    pub fn scale(&self) -> QuantScale {
        self.scale
    }
}

/// A quantised norm's result: `y ≈ values * scales` (broadcast over the last dimension).
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The quantised values, of the shape of `xs`, contiguous, in
    /// [`QuantDType::storage_dtype`].
    pub values: Tensor,
    /// One f32 scale per row, of the shape of `xs` with the last dimension 1 (the static scale
    /// repeated when the config has one).
    pub scales: Tensor,
    /// The format of `values`.
    pub dtype: QuantDType,
}

impl Quantized {
    /// `values * scales` in `dtype` (computed in f32): the dequantised tensor.
    ///
    /// # Errors
    /// Candle's, e.g. a device without the conversion.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        let v = match self.dtype {
            QuantDType::F8E4M3 => self.values.to_dtype(DType::F32)?,
            QuantDType::I8 => {
                // Bytes >= 128 are the negative values.
                let u = self.values.to_dtype(DType::F32)?;
                let neg = u.ge(128f64)?.to_dtype(DType::F32)?;
                (u - (neg * 256.0)?)?
            }
        };
        v.broadcast_mul(&self.scales)?.to_dtype(dtype)
    }
}

/// Per-call parameters of a quantised norm as the backends take them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QuantSpec {
    pub dtype: QuantDType,
    /// `Some(s)`: the static scale.
    pub fixed: Option<f32>,
}

impl QuantSpec {
    pub fn of(cfg: &QuantConfig) -> Self {
        Self {
            dtype: cfg.dtype,
            fixed: match cfg.scale {
                QuantScale::Dynamic => None,
                QuantScale::Static(s) => Some(s),
            },
        }
    }

    /// The spec of `quant` for input of shape `dims` normalised with `cfg`, after the checks
    /// the quantised ops add to a norm's: rows over the last dimension (no other `dim`, no
    /// variance size) and a static scale that is finite and > 0.
    ///
    /// # Errors
    /// The first of those that fails, naming the op and the argument.
    pub fn checked(
        op: &str,
        dims: &[usize],
        cfg: &NormConfig,
        quant: &QuantConfig,
    ) -> Result<Self> {
        let rank = dims.len();
        if let Some(d) = cfg.dim().filter(|&d| d + 1 != rank) {
            return Err(op_error(
                op,
                "dim",
                format!(
                    "the last dim of xs {dims:?} ({}): quantised outputs are per row of the \
                     last dimension",
                    rank.saturating_sub(1)
                ),
                d.to_string(),
            ));
        }
        if let Some(n) = cfg.variance_size() {
            return Err(op_error(
                op,
                "variance_size",
                "unset: the quantised ops take the mean over the whole row",
                n.to_string(),
            ));
        }
        if let QuantScale::Static(s) = quant.scale() {
            if !(s.is_finite() && s > 0.0) {
                return Err(op_error(op, "scale", "finite and > 0", s));
            }
        }
        Ok(Self::of(quant))
    }

    /// The scale of a row whose largest `|y|` (NaN ignored) is `amax`: the static scale, or
    /// `max(amax / max_value, min_scale)` in f32.
    #[inline(always)]
    pub fn row_scale(&self, amax: f32) -> f32 {
        match self.fixed {
            Some(s) => s,
            None => (amax / self.dtype.max_value()).max(self.dtype.min_scale()),
        }
    }
}

/// The shape of the scales of input `dims`: one a row, the last dimension 1.
pub(crate) fn scale_dims(dims: &[usize]) -> Vec<usize> {
    let mut d = dims.to_vec();
    if let Some(last) = d.last_mut() {
        *last = 1;
    }
    d
}

/// `max(m, |y|)` ignoring NaN (IEEE maxNum, as `fmaxf` in the kernels).
#[inline(always)]
pub(crate) fn amax_step(m: f32, y: f32) -> f32 {
    m.max(y.abs())
}

/// The largest `|y|` of `y`, NaN ignored (a sequential `amax_step` fold gives the same: the
/// maximum does not depend on the order), in 8 independent lanes so that it vectorises.
#[inline(always)]
pub(crate) fn amax(y: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = y.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = amax_step(*m, v);
        }
    }
    let m = rest.iter().fold(0.0f32, |m, &v| amax_step(m, v));
    lanes.iter().fold(m, |m, &l| m.max(l))
}

/// Quantises one row `y` (the norm's output, in f32) into `out`; returns the row's scale.
/// Every value is `encode(y * (1 / scale))`, the reciprocal and the product rounded to f32.
/// Branch-free per element, so the loops vectorise (the CPU path compiles it per SIMD tier).
#[inline(always)]
pub(crate) fn quantise_row(spec: &QuantSpec, y: &[f32], out: &mut [u8]) -> f32 {
    let scale = spec.row_scale(match spec.fixed {
        Some(_) => 0.0,
        None => amax(y),
    });
    let inv = 1.0 / scale;
    match spec.dtype {
        QuantDType::F8E4M3 => {
            for (o, &v) in out.iter_mut().zip(y) {
                *o = e4m3_bits(v * inv);
            }
        }
        QuantDType::I8 => {
            for (o, &v) in out.iter_mut().zip(y) {
                *o = i8_bits(v * inv);
            }
        }
    }
    scale
}

/// `v` as fp8 e4m3fn bits: round to nearest even, saturated to +-448 (infinities too), NaN to
/// `0x7f`; the sign is kept (a negative value that rounds to zero is `0x80`). Both codes are
/// formed and one selected, without branches.
#[inline(always)]
pub(crate) fn e4m3_bits(v: f32) -> u8 {
    let sign = (v.to_bits() >> 24) & 0x80;
    let a = v.abs();
    let nan = a.is_nan();
    // NaN: `min` gives 448 here; the code is replaced below.
    let a = a.min(448.0);
    // Subnormals (and zero): multiples of 2^-9, exact in f32 after the power-of-two scale
    // (below 8, so the integer conversion is exact).
    let sub = round_even_bits(a * 512.0);
    // Normals: round the f32 mantissa to 3 bits, ties to even; a carry moves into the exponent,
    // which is rebiased from 127 to 7 (wrapping where the value is subnormal and unused).
    let u = a.to_bits();
    let u = u + 0x7ffff + ((u >> 20) & 1);
    let normal = ((u >> 23).wrapping_sub(120) << 3) | ((u >> 20) & 7);
    let code = if a < 1.0 / 64.0 { sub } else { normal };
    if nan {
        0x7f
    } else {
        (sign | code) as u8
    }
}

/// `v` as an i8 (two's complement byte): round to nearest even, saturated to `-128..=127`, NaN
/// to 0.
#[inline(always)]
pub(crate) fn i8_bits(v: f32) -> u8 {
    // Clamping first to the integer bounds gives what rounding first would.
    let r = round_even_bits(v.clamp(-128.0, 127.0)) as u8;
    if v.is_nan() {
        0
    } else {
        r
    }
}

/// `v` rounded to the nearest integer, ties to even, for `|v| <= 2^22`, as the bits of a
/// two's complement integer: adding 1.5 * 2^23 leaves the integer in the low mantissa bits under
/// the default rounding, so the sum's bits less those of 1.5 * 2^23 are the result. No float to
/// integer conversion (Rust's saturating one kept the encoding loops scalar), no libm call
/// (`round_ties_even` is one on x86-64 without SSE4.1, the baseline target).
#[inline(always)]
fn round_even_bits(v: f32) -> u32 {
    const M: f32 = 12_582_912.0;
    (v + M).to_bits().wrapping_sub(M.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finite e4m3 value, from its bits (sign, 4-bit exponent with bias 7, 3-bit mantissa).
    fn e4m3_value(b: u8) -> f64 {
        let s = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let e = ((b >> 3) & 15) as i32;
        let m = (b & 7) as f64;
        s * if e == 0 {
            m * 2f64.powi(-9)
        } else {
            (1.0 + m / 8.0) * 2f64.powi(e - 7)
        }
    }

    /// The nearest finite e4m3 value by search, ties to the even code; saturating.
    fn nearest(v: f64) -> u8 {
        let mut best = 0u8;
        let mut d = f64::INFINITY;
        for b in 0u8..=0x7e {
            let dd = (e4m3_value(b) - v.abs()).abs();
            if dd < d || (dd == d && b % 2 == 0) {
                best = b;
                d = dd;
            }
        }
        if v.is_sign_negative() {
            best | 0x80
        } else {
            best
        }
    }

    #[test]
    fn e4m3_matches_a_search_of_every_value() {
        // Every code, the midpoints between neighbours and values just around them.
        let mut probes = vec![0.0f32, -0.0, 1e-30, 448.0, 449.0, 464.0, 480.0, 1e30];
        for b in 0u8..0x7e {
            let (lo, hi) = (e4m3_value(b), e4m3_value(b + 1));
            let mid = (lo + hi) / 2.0;
            for v in [lo, hi, mid, mid * (1.0 + 1e-6), mid * (1.0 - 1e-6)] {
                probes.push(v as f32);
                probes.push(-v as f32);
            }
        }
        for v in probes {
            assert_eq!(e4m3_bits(v), nearest(v as f64), "{v:e}");
        }
        assert_eq!(e4m3_bits(f32::INFINITY), 0x7e);
        assert_eq!(e4m3_bits(f32::NEG_INFINITY), 0xfe);
        assert_eq!(e4m3_bits(f32::NAN), 0x7f);
        assert_eq!(e4m3_bits(-f32::NAN), 0x7f);
    }

    #[test]
    fn i8_rounds_half_to_even_and_saturates() {
        for (v, want) in [
            (0.5f32, 0i8),
            (1.5, 2),
            (2.5, 2),
            (-2.5, -2),
            (-0.4, 0),
            (126.6, 127),
            (127.5, 127),
            (-127.5, -128),
            (-1e9, -128),
            (f32::INFINITY, 127),
            (f32::NAN, 0),
        ] {
            assert_eq!(i8_bits(v), want as u8, "{v}");
        }
    }

    #[test]
    fn i8_matches_f64_rounding_over_a_sweep() {
        // Quarters from -140 to 140 (every tie, both saturations) against f64 round-half-even.
        for k in -560..=560 {
            let v = k as f32 / 4.0;
            let want = (v as f64).round_ties_even().clamp(-128.0, 127.0) as i8;
            assert_eq!(i8_bits(v), want as u8, "{v}");
        }
    }

    #[test]
    fn amax_is_the_sequential_fold() {
        // Lengths around the 8 lanes, a NaN, signs, and the largest value in the tail.
        for n in [0usize, 1, 7, 8, 9, 16, 23, 40] {
            let mut y: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            if n > 3 {
                y[2] = f32::NAN;
                y[n - 1] = -100.0;
            }
            let want = y.iter().fold(0.0f32, |m, &v| amax_step(m, v));
            assert_eq!(amax(&y).to_bits(), want.to_bits(), "{n}");
        }
    }

    #[test]
    fn dynamic_scale_and_floor() {
        let spec = QuantSpec {
            dtype: QuantDType::F8E4M3,
            fixed: None,
        };
        let mut out = [0u8; 3];
        let s = quantise_row(&spec, &[1.0, -896.0, f32::NAN], &mut out);
        assert_eq!(s, 2.0);
        assert_eq!(out, [e4m3_bits(0.5), 0xfe, 0x7f]);
        let s = quantise_row(&spec, &[0.0, 0.0, 0.0], &mut out);
        assert_eq!(s, QuantDType::F8E4M3.min_scale());
    }
}
