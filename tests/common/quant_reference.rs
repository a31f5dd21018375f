//! The reference of the quantised outputs (`rms_norm_quant`, after the norm): each row's
//! scale, the reciprocal, the product and the 8-bit encodings, in f64 with the f32 roundings
//! the contract names, nothing taken from the crate (its `QuantDType` is only a label here).
//!
//! The contract (`src/quant.rs`, `docs/numerics.md`): for a row `y` (the norm's output in f32),
//! `scale` is the static one or `max(amax / max_value, min_scale)` in f32 with `amax` the
//! largest `|y|` (NaN ignored) and `min_scale = 1 / (max_value * 512)`; `inv = 1 / scale` and
//! each `v = y * inv` are rounded to f32. fp8 e4m3fn (bias 7, no infinities, NaN `0x7f`/`0xff`):
//! `v` rounded to nearest, ties to the even code, saturated to +-448 (infinities too), the sign
//! kept, NaN to NaN. i8: `v` rounded to nearest, ties to even, saturated to `-128..=127`, NaN to
//! 0, written as its two's-complement byte.
//!
//! The f32 roundings are an f64 computation rounded with `as f32`: a quotient or product of two
//! f32 values computed in f64 and then rounded to f32 is the correctly rounded f32 result
//! (53 >= 2 * 24 + 2), so it equals the f32 operation.

use candle_rmsnorm::QuantDType;
use std::sync::OnceLock;

/// The canonical fp8 e4m3fn NaN code (`0xff` is NaN as well).
pub const E4M3_NAN: u8 = 0x7f;
/// The largest finite fp8 e4m3fn magnitude and its code.
pub const E4M3_MAX: f64 = 448.0;
pub const E4M3_MAX_CODE: u8 = 0x7e;

/// The largest magnitude a value is scaled to.
pub fn max_value(d: QuantDType) -> f64 {
    match d {
        QuantDType::F8E4M3 => E4M3_MAX,
        QuantDType::I8 => 127.0,
    }
}

/// `1 / (max_value * 512)` rounded to f32: the dynamic scale of a row without a nonzero value.
pub fn min_scale(d: QuantDType) -> f32 {
    (1.0 / (max_value(d) * 512.0)) as f32
}

/// Whether fp8 e4m3fn code `b` is NaN (`0x7f` or `0xff`).
pub fn e4m3_is_nan(b: u8) -> bool {
    b & 0x7f == 0x7f
}

/// The value of fp8 e4m3fn code `b`, decoded from its bits: sign, a 4-bit exponent with bias 7
/// (0: subnormal, `m * 2^-9`), a 3-bit mantissa; NaN for `0x7f` and `0xff`.
pub fn e4m3_decode(b: u8) -> f64 {
    if e4m3_is_nan(b) {
        return f64::NAN;
    }
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (((b >> 3) & 15) as i32, (b & 7) as f64);
    sign * if e == 0 {
        m * 2f64.powi(-9)
    } else {
        (1.0 + m / 8.0) * 2f64.powi(e - 7)
    }
}

/// The 127 finite non-negative magnitudes, by code `0x00..=0x7e` (increasing).
fn magnitudes() -> &'static [f64; 127] {
    static TABLE: OnceLock<[f64; 127]> = OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|b| e4m3_decode(b as u8)))
}

/// `v` as fp8 e4m3fn by search: the nearest of the 127 finite magnitudes, a tie going to the
/// even code; saturating (anything from 448 up, infinity included, is 448); the sign of `v`
/// kept (so a negative value that rounds to 0 is `0x80`); NaN is [`E4M3_NAN`].
pub fn e4m3_encode(v: f64) -> u8 {
    if v.is_nan() {
        return E4M3_NAN;
    }
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let a = v.abs();
    if a >= E4M3_MAX {
        return sign | E4M3_MAX_CODE;
    }
    let (mut best, mut dist) = (0u8, f64::INFINITY);
    for (b, &m) in magnitudes().iter().enumerate() {
        let d = (m - a).abs();
        if d < dist || (d == dist && b % 2 == 0) {
            (best, dist) = (b as u8, d);
        }
    }
    sign | best
}

/// A wrong encoder for the self-check: the largest magnitude not above `|v|` (truncation).
pub fn e4m3_truncate(v: f64) -> u8 {
    if v.is_nan() {
        return E4M3_NAN;
    }
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let a = v.abs();
    let below = magnitudes().iter().rposition(|&m| m <= a).unwrap_or(0);
    sign | below as u8
}

/// `v` rounded to the nearest integer, a tie (fraction exactly 1/2) to the even one; saturated
/// to `-128..=127`; NaN is 0. Returned as the two's-complement byte.
pub fn i8_encode(v: f64) -> u8 {
    if v.is_nan() {
        return 0;
    }
    let r = if v.is_finite() {
        let f = v.floor();
        let frac = v - f; // exact for the f32 values quantised here
        if frac > 0.5 || (frac == 0.5 && f % 2.0 != 0.0) {
            f + 1.0
        } else {
            f
        }
    } else {
        v
    };
    let r = r.clamp(-128.0, 127.0) as i64;
    (r as i8) as u8
}

/// The value of i8 byte `b` (two's complement).
pub fn i8_decode(b: u8) -> f64 {
    (b as i8) as f64
}

/// The encoding of `v` in `d`.
pub fn encode(d: QuantDType, v: f64) -> u8 {
    match d {
        QuantDType::F8E4M3 => e4m3_encode(v),
        QuantDType::I8 => i8_encode(v),
    }
}

/// The value of code `b` of `d` (NaN for the fp8 NaN codes).
pub fn decode(d: QuantDType, b: u8) -> f64 {
    match d {
        QuantDType::F8E4M3 => e4m3_decode(b),
        QuantDType::I8 => i8_decode(b),
    }
}

/// Whether codes `a` and `b` of `d` mean the same: equal, or both fp8 NaN.
pub fn same_code(d: QuantDType, a: u8, b: u8) -> bool {
    a == b || (d == QuantDType::F8E4M3 && e4m3_is_nan(a) && e4m3_is_nan(b))
}

/// The spacing of `d` at magnitude `a` (one quantisation step): 1 for i8; for e4m3 `2^-9`
/// below `2^-6` (subnormals) and `2^(e - 3)` in the binade `[2^e, 2^(e + 1))`.
pub fn step(d: QuantDType, a: f64) -> f64 {
    match d {
        QuantDType::I8 => 1.0,
        QuantDType::F8E4M3 => {
            let a = a.abs().min(E4M3_MAX);
            if a < 2f64.powi(-6) {
                2f64.powi(-9)
            } else {
                2f64.powi(a.log2().floor() as i32 - 3)
            }
        }
    }
}

/// One quantisation: the format and `Some(scale)` for a static scale (`None`: dynamic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefQuant {
    pub dtype: QuantDType,
    pub fixed: Option<f32>,
}

/// What a quantised op writes: the codes (row-major) and one scale per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefOut {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

impl RefQuant {
    /// The scale of a row: the static one, or `max(amax / max_value, min_scale)` with the
    /// quotient rounded to f32 and `amax` the largest `|y|` of the row that is not NaN.
    pub fn row_scale(&self, row: &[f32]) -> f32 {
        if let Some(s) = self.fixed {
            return s;
        }
        let amax = row.iter().filter(|v| !v.is_nan()).fold(0f64, |m, &v| {
            if (v as f64).abs() > m {
                (v as f64).abs()
            } else {
                m
            }
        });
        let s = (amax / max_value(self.dtype)) as f32;
        let floor = min_scale(self.dtype);
        if s > floor {
            s
        } else {
            floor
        }
    }

    /// The f32 value `v = y * (1 / scale)` that gets encoded (both roundings to f32).
    pub fn scaled(y: f32, scale: f32) -> f32 {
        let inv = (1.0 / scale as f64) as f32;
        (y as f64 * inv as f64) as f32
    }

    /// Quantises `rows` rows of `y` (row-major, `y.len() / rows` each; `rows` may be nonzero
    /// with empty rows).
    pub fn quantise(&self, y: &[f32], rows: usize) -> RefOut {
        let h = y.len().checked_div(rows).unwrap_or(0);
        assert_eq!(h * rows, y.len(), "{} values are not {rows} rows", y.len());
        let mut out = RefOut {
            codes: Vec::with_capacity(y.len()),
            scales: Vec::with_capacity(rows),
        };
        for r in 0..rows {
            let row = &y[r * h..(r + 1) * h];
            let scale = self.row_scale(row);
            out.scales.push(scale);
            out.codes.extend(
                row.iter()
                    .map(|&v| encode(self.dtype, Self::scaled(v, scale) as f64)),
            );
        }
        out
    }
}

/// Checks the reference itself: hand values (448, the tie 464, the smallest subnormal and a
/// subnormal tie, -0, 1, infinities), every code round-tripping and every tie between
/// neighbouring codes going to the even one, i8 ties and saturation, row scales; and that
/// wrong encoders (truncation, i8 ties away from zero) differ from it on `rng`'s values.
pub fn self_check(rng: &mut impl rand::Rng) {
    for (v, want) in [
        (448.0, 0x7e),
        (464.0, 0x7e),
        (-464.0, 0xfe),
        (1e30, 0x7e),
        (f64::INFINITY, 0x7e),
        (f64::NEG_INFINITY, 0xfe),
        (0.001953125, 0x01),
        (0.0029296875, 0x02),
        (0.0009765625, 0x00),
        (-1e-9, 0x80),
        (-0.0, 0x80),
        (0.0, 0x00),
        (1.0, 0x38),
        (1.0625, 0x38),
        (1.1875, 0x3a),
        (-2.5, 0xc2),
        (240.0, 0x77),
    ] {
        assert_eq!(e4m3_encode(v), want, "{v:e}");
    }
    assert!(e4m3_is_nan(e4m3_encode(f64::NAN)) && e4m3_is_nan(0xff));
    for b in (0u8..=0xff).filter(|&b| !e4m3_is_nan(b)) {
        assert_eq!(e4m3_encode(e4m3_decode(b)), b, "code {b:#04x}");
        if b < 0x7e {
            let (lo, hi) = (e4m3_decode(b), e4m3_decode(b + 1));
            let want = if b % 2 == 0 { b } else { b + 1 };
            assert_eq!(e4m3_encode((lo + hi) / 2.0), want, "tie above {b:#04x}");
            assert_eq!(e4m3_encode(-(lo + hi) / 2.0), want | 0x80);
        }
    }
    for (v, want) in [
        (0.5, 0i8),
        (1.5, 2),
        (2.5, 2),
        (-2.5, -2),
        (-0.5, 0),
        (-0.6, -1),
    ]
    .into_iter()
    .chain([
        (127.49, 127),
        (127.5, 127),
        (1e9, 127),
        (-128.5, -128),
        (-1e9, -128),
    ])
    .chain([
        (f64::INFINITY, 127),
        (f64::NEG_INFINITY, -128),
        (f64::NAN, 0),
    ]) {
        assert_eq!(i8_encode(v), want as u8, "{v}");
        assert_eq!(i8_decode(want as u8), want as f64);
    }
    // Row scales: the largest |y| over max_value (NaN ignored), the floor, a static scale.
    let e4 = RefQuant {
        dtype: QuantDType::F8E4M3,
        fixed: None,
    };
    assert_eq!(e4.row_scale(&[1.0, -896.0, f32::NAN]), 2.0);
    assert_eq!(e4.row_scale(&[0.0, f32::NAN]), 1.0 / 229376.0);
    let st = RefQuant {
        dtype: QuantDType::I8,
        fixed: Some(0.5),
    };
    let out = st.quantise(&[1.0, -3.0, 100.0, 0.25], 2);
    assert_eq!(
        (out.codes, out.scales),
        (vec![2, 0xfa, 127, 0], vec![0.5, 0.5])
    );
    // Wrong encoders differ from the reference on ordinary values: truncation, and ties away
    // from zero.
    let vals: Vec<f64> = (0..1000).map(|_| rng.gen_range(-448.0..448.0)).collect();
    assert!(vals.iter().any(|&v| e4m3_truncate(v) != e4m3_encode(v)));
    assert_eq!(e4m3_truncate(1.1), 0x38);
    assert_eq!(e4m3_encode(1.1), 0x39);
    let away = |v: f64| (v.round().clamp(-128.0, 127.0) as i8) as u8;
    assert!([0.5, 2.5, -3.5].iter().any(|&v| away(v) != i8_encode(v)));
}
