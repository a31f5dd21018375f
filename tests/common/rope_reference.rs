//! The f64 reference of `rms_norm_rope` / `qk_rms_norm_rope`, written from the contract in
//! `src/rope_api.rs`, and the bound a result is checked against.
//!
//! Per row `(b, l)` of `x: [B, L, heads * D]`: the norm of [`reference`] over the whole row
//! (`NormScope::Full`, weight `[heads * D]`) or over each head's `D` values (`PerHead`, weight
//! `[D]`), rounded to the input dtype: `y`. Each pair `(a, b)` of a head, `(2i, 2i + 1)`
//! (`Interleaved`) or `(i, i + D / 2)` (`HalfSplit`), becomes `(a c - b s, a s + b c)` with
//! `c = cos[l, i]`, `s = sin[l, i]` rounded to the compute type (f32, f64 for f64 input). The
//! rotated values are left unrounded here; [`rope_bound`] accounts for the rounding. Outputs are
//! row-major `[B, heads, L, D]` (`Bhld`) or `[B, L, heads, D]` (`Blhd`).

use super::reference::{compute_dtype, quantize, reference, round_to, ulp, unit, Opts};
use candle_core::DType;
use candle_rmsnorm::{HeadLayout, NormScope, RopeStyle};

/// The shape of one call and what it does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scope: NormScope,
    pub style: RopeStyle,
    pub layout: HeadLayout,
}

impl Geometry {
    /// The last dim of the input, `heads * head_dim`.
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// The length of one norm (and of the weight).
    pub fn norm_len(&self) -> usize {
        match self.scope {
            NormScope::Full => self.dim(),
            NormScope::PerHead => self.head_dim,
        }
    }

    pub fn out_dims(&self) -> Vec<usize> {
        let (b, l, h, d) = (self.batch, self.seq, self.heads, self.head_dim);
        match self.layout {
            HeadLayout::Bhld => vec![b, h, l, d],
            HeadLayout::Blhd => vec![b, l, h, d],
        }
    }

    /// The flat output index of element `p` of head `h` at `(b, l)`.
    pub fn out_index(&self, b: usize, l: usize, h: usize, p: usize) -> usize {
        let (hs, ls, d) = (self.heads, self.seq, self.head_dim);
        match self.layout {
            HeadLayout::Bhld => ((b * hs + h) * ls + l) * d + p,
            HeadLayout::Blhd => ((b * ls + l) * hs + h) * d + p,
        }
    }

    /// The two elements of a head that pair `i` rotates.
    pub fn pair(&self, i: usize) -> (usize, usize) {
        match self.style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::HalfSplit => (i, i + self.head_dim / 2),
        }
    }
}

/// The reference output (in the output layout, unrounded) and, per element, `|y_a| + |y_b|`
/// of its pair (the magnitude the bound scales with).
#[derive(Debug, Clone, Default)]
pub struct RopeExpected {
    pub out: Vec<f64>,
    pub mag: Vec<f64>,
}

/// The contract on `x` (`[B, L, heads * D]` row-major, values as stored in `dt`), the weight as
/// stored in its dtype (length [`Geometry::norm_len`]), and `cos` / `sin` (`[>= L, D / 2]`
/// row-major, as stored in their dtype).
pub fn rope_reference(
    dt: DType,
    x: &[f64],
    w: Option<&[f64]>,
    cos: &[f64],
    sin: &[f64],
    g: &Geometry,
    o: &Opts,
) -> RopeExpected {
    assert_eq!(x.len(), g.batch * g.seq * g.dim(), "x of {g:?}");
    let (d, half, c) = (g.head_dim, g.head_dim / 2, compute_dtype(dt));
    // The norm, and the rounding to the input dtype the unfused path stores.
    let y = quantize(&reference(dt, x, None, w, g.norm_len(), o).normed, dt);
    let mut e = RopeExpected {
        out: vec![0.0; x.len()],
        mag: vec![0.0; x.len()],
    };
    for b in 0..g.batch {
        for l in 0..g.seq {
            for h in 0..g.heads {
                let head = (b * g.seq + l) * g.dim() + h * d;
                for i in 0..half {
                    let (pa, pb) = g.pair(i);
                    let (ya, yb) = (y[head + pa], y[head + pb]);
                    let cv = round_to(cos[l * half + i], c);
                    let sv = round_to(sin[l * half + i], c);
                    let (ia, ib) = (g.out_index(b, l, h, pa), g.out_index(b, l, h, pb));
                    e.out[ia] = ya * cv - yb * sv;
                    e.out[ib] = ya * sv + yb * cv;
                    e.mag[ia] = ya.abs() + yb.abs();
                    e.mag[ib] = e.mag[ia];
                }
            }
        }
    }
    e
}

/// How far a result in `dt` may be from the reference at pair magnitude `mag`:
/// - f16/bf16: the stored `y` may differ from the reference's by an ulp of `dt` (f32 sums put
///   the unrounded value on the other side of a rounding boundary; two ulps with
///   `Rounding::BeforeWeight`, which rounds twice): `<= 2 unit |y|` each, so `2 unit mag`
///   after the rotation (`|cos|, |sin| <= 1`); the rotation in f32 (a few f32 units) and its
///   final rounding (half an ulp of the output, `<= unit mag / 2`);
/// - f32: the f32 sum of squares and scale (a few units, growing with the row length) and the
///   rotation's roundings: 8 f32 units of `mag`;
/// - f64: 1e-12 relative to `mag`;
///
/// plus a few of the smallest spacing of `dt` (subnormal results).
pub fn rope_bound(dt: DType, mag: f64) -> f64 {
    let f32_unit = unit(DType::F32);
    let floor = 4.0 * ulp(0.0, dt);
    match dt {
        DType::F64 => 1e-12 * mag + floor,
        DType::F32 => 8.0 * f32_unit * mag + floor,
        _ => (2.5 * unit(dt) + 4.0 * f32_unit) * mag + floor,
    }
}

/// Asserts that `got` (values of an output of dtype `dt`, row-major) is within [`rope_bound`]
/// of `want` element by element (NaN where and only where the reference is NaN); returns the
/// worst `|got - want| / bound`.
pub fn check_rope(what: &str, dt: DType, got: &[f64], want: &RopeExpected) -> f64 {
    check_rope_within(what, dt, got, want, 1.0)
}

/// [`check_rope`] with every bound times `factor` (2 to compare two results that each may be
/// a bound away from the reference: `want.out` another backend's output).
pub fn check_rope_within(
    what: &str,
    dt: DType,
    got: &[f64],
    want: &RopeExpected,
    factor: f64,
) -> f64 {
    assert_eq!(got.len(), want.out.len(), "{what}: length");
    let mut worst = 0f64;
    for (i, (&g, (&w, &m))) in got.iter().zip(want.out.iter().zip(&want.mag)).enumerate() {
        if w.is_nan() || g.is_nan() {
            assert!(
                w.is_nan() && g.is_nan(),
                "{what}: element {i}: want {w:e}, got {g:e}"
            );
            continue;
        }
        let (bound, err) = (factor * rope_bound(dt, m), (g - w).abs());
        assert!(
            err <= bound,
            "{what}: element {i}: want {w:e}, got {g:e}: |diff| {err:e} > bound {bound:e} \
             (|y_a| + |y_b| = {m:e})"
        );
        worst = worst.max(err / bound);
    }
    worst
}
