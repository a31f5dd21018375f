//! Reading the quantised ops' results and checking them (shared by `tests/quant.rs` and
//! `tests/quant_cuda.rs`):
//! - [`check_exact`]: codes and scales bit for bit the reference quantisation
//!   (`quant_reference`) of a given `y`;
//! - [`check_within`]: codes and scales against the f64 norm reference (`reference`), each
//!   dequantised value inside the interval that quantising any `y` within the norm's tolerance
//!   gives (so within one quantisation step of the f64 `y`).

use super::compare::{test_seed, tolerance, Quantity};
use super::quant_reference::{decode, encode, max_value, min_scale, same_code, RefQuant};
use super::reference::ulp;
use super::runner::values;
use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use candle_rmsnorm::{QuantConfig, QuantDType, QuantScale, Quantized};

/// The words to replay a failure.
pub fn replay() -> String {
    format!("(replay: TEST_SEED={})", test_seed())
}

/// The reference quantisation a config asks for.
pub fn ref_quant(q: &QuantConfig) -> RefQuant {
    RefQuant {
        dtype: q.dtype(),
        fixed: match q.scale() {
            QuantScale::Dynamic => None,
            QuantScale::Static(s) => Some(s),
        },
    }
}

/// The bytes of a values tensor (`F8E4M3` or `U8`, on any device), row-major.
pub fn codes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    let (s, l) = t.storage_and_layout();
    let at = l.start_offset()..l.start_offset() + t.elem_count();
    let out = match &*s {
        Storage::Cpu(CpuStorage::F8E4M3(v)) => v[at].iter().map(|b| b.to_bits()).collect(),
        Storage::Cpu(CpuStorage::U8(v)) => v[at].to_vec(),
        _ => panic!("quantised values of dtype {:?}", t.dtype()),
    };
    Ok(out)
}

/// The values of `t` (any float dtype, any device) rounded to f32, row-major.
pub fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    Ok(values(t)?.iter().map(|&v| v as f32).collect())
}

/// Whether two code sequences of `dtype` agree to within one quantisation step everywhere:
/// equal, or neighbours on the same side of zero (e4m3: magnitudes one code apart, i8: values
/// one apart). For results whose `y` may differ in its last bit (another summation order).
pub fn codes_adjacent(dtype: QuantDType, a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(&p, &q)| match dtype {
            QuantDType::F8E4M3 => (p & 0x80) == (q & 0x80) && (p & 0x7f).abs_diff(q & 0x7f) <= 1,
            QuantDType::I8 => (p as i8).abs_diff(q as i8) <= 1,
        })
}

/// Whether two tensors' values agree to a relative `rel` (NaN equal to NaN).
pub fn close_values(a: &Tensor, b: &Tensor, rel: f64) -> Result<bool> {
    let (a, b) = (values(a)?, values(b)?);
    Ok(a.len() == b.len()
        && a.iter().zip(&b).all(|(p, q)| {
            (p - q).abs() <= rel * p.abs().max(q.abs()) || (p.is_nan() && q.is_nan())
        }))
}

/// Whether two tensors hold the same bits (NaN equal to NaN).
pub fn same_bits(a: &Tensor, b: &Tensor) -> Result<bool> {
    let (a, b) = (values(a)?, values(b)?);
    Ok(a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan())))
}

/// Rows of a tensor of shape `dims` over the last dimension (a rank-1 tensor is one row).
pub fn rows_of(dims: &[usize]) -> usize {
    dims[..dims.len() - 1].iter().product()
}

/// The shapes, dtypes and layouts the contract gives the outputs for an input of shape `dims`.
pub fn check_layout(what: &str, q: &Quantized, cfg: &QuantConfig, dims: &[usize]) {
    let mut sdims = dims.to_vec();
    *sdims.last_mut().expect("rank >= 1") = 1;
    assert_eq!(q.dtype, cfg.dtype(), "{what}: dtype");
    let v = (q.values.dims(), q.values.dtype());
    assert_eq!(v, (dims, cfg.dtype().storage_dtype()), "{what}: values");
    assert_eq!(
        (q.scales.dims(), q.scales.dtype()),
        (&sdims[..], DType::F32)
    );
    assert!(q.values.is_contiguous(), "{what}: values not contiguous");
    assert!(q.scales.is_contiguous(), "{what}: scales not contiguous");
}

/// Requires `q` to be bit for bit the reference quantisation of `y` (the norm's output rounded
/// to f32, row-major over `dims`): every scale, every code (any fp8 NaN code for NaN).
pub fn check_exact(what: &str, q: &Quantized, cfg: &QuantConfig, dims: &[usize], y: &[f32]) {
    check_layout(what, q, cfg, dims);
    let rq = ref_quant(cfg);
    let rows = rows_of(dims);
    let want = rq.quantise(y, rows);
    let (got_codes, got_scales) = (codes(&q.values).unwrap(), f32s(&q.scales).unwrap());
    let h = dims[dims.len() - 1];
    for (r, (g, w)) in got_scales.iter().zip(&want.scales).enumerate() {
        let row = &y[r * h..(r + 1) * h];
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: scale of row {r}: got {g:e}, want {w:e} (|y| max {:e}) {}",
            row.iter()
                .filter(|v| !v.is_nan())
                .fold(0f32, |m, v| m.max(v.abs())),
            replay()
        );
    }
    assert_eq!(
        got_codes.len(),
        want.codes.len(),
        "{what}: number of values"
    );
    for (i, (&g, &w)) in got_codes.iter().zip(&want.codes).enumerate() {
        if !same_code(cfg.dtype(), g, w) {
            let s = want.scales[i / h];
            panic!(
                "{what}: element {i} (row {}, column {}): y {:e}, scale {s:e}, y * (1 / scale) \
                 {:e}: got code {g:#04x} ({}), want {w:#04x} ({}) {}",
                i / h,
                i % h,
                y[i],
                RefQuant::scaled(y[i], s),
                decode(cfg.dtype(), g),
                decode(cfg.dtype(), w),
                replay()
            );
        }
    }
}

/// The bound on `|y - want|` for the norm's output `y` of input dtype `dt` (its f32 rounding
/// for f64 input included).
fn y_bound(dt: DType, want: f64) -> f64 {
    let b = tolerance(dt, Quantity::Normed).bound(dt, want);
    if dt == DType::F64 {
        b + ulp(want, DType::F32)
    } else {
        b
    }
}

/// Relative slack for the f32 roundings of the scale, its reciprocal and the product.
const F32_SLACK: f64 = 4.0 / (1u64 << 24) as f64;

/// Checks `q` against the f64 norm reference `want` (its unrounded normed values, row-major
/// over `dims`, finite or NaN) for input dtype `dt`. With `y` any value within the norm's
/// tolerance of `want` and quantising monotone, the checks are: a static scale exactly; a
/// dynamic one between the scales of the smallest and the largest possible `amax`; each code
/// between the codes of `(want -+ bound) / scale` (the scale got), NaN where `want` is.
pub fn check_within(what: &str, q: &Quantized, cfg: &QuantConfig, dt: DType, want: &[f64]) {
    let dims = q.values.dims().to_vec();
    check_layout(what, q, cfg, &dims);
    let h = dims[dims.len() - 1];
    let (got_codes, got_scales) = (codes(&q.values).unwrap(), f32s(&q.scales).unwrap());
    check_rows_within(what, cfg, dt, h, &got_codes, &got_scales, want);
}

/// [`check_within`] on rows of `h` codes and their scales (e.g. rows sampled from a large
/// result).
pub fn check_rows_within(
    what: &str,
    cfg: &QuantConfig,
    dt: DType,
    h: usize,
    got_codes: &[u8],
    got_scales: &[f32],
    want: &[f64],
) {
    let qd = cfg.dtype();
    assert_eq!(got_codes.len(), want.len(), "{what}: number of values");
    assert_eq!(
        got_codes.len(),
        got_scales.len() * h,
        "{what}: number of rows"
    );
    for r in 0..got_scales.len() {
        let row = &want[r * h..(r + 1) * h];
        let s = got_scales[r] as f64;
        match cfg.scale() {
            QuantScale::Static(fixed) => {
                assert_eq!(got_scales[r], fixed, "{what}: static scale of row {r}")
            }
            QuantScale::Dynamic => {
                let (mut lo, mut hi) = (0f64, 0f64);
                for &w in row.iter().filter(|w| !w.is_nan()) {
                    assert!(w.is_finite(), "{what}: reference {w} in row {r}");
                    let b = y_bound(dt, w);
                    (lo, hi) = (lo.max(w.abs() - b), hi.max(w.abs() + b));
                }
                let floor = min_scale(qd) as f64;
                let lo = (lo / max_value(qd)).max(floor) * (1.0 - F32_SLACK);
                let hi = (hi / max_value(qd)).max(floor) * (1.0 + F32_SLACK);
                assert!(
                    lo <= s && s <= hi,
                    "{what}: scale of row {r} {s:e} outside [{lo:e}, {hi:e}] {}",
                    replay()
                );
            }
        }
        for (j, &w) in row.iter().enumerate() {
            let (i, g) = (r * h + j, got_codes[r * h + j]);
            if w.is_nan() {
                let nan = encode(qd, f64::NAN);
                assert!(
                    same_code(qd, g, nan),
                    "{what}: element {i} (row {r}): want NaN, got code {g:#04x} {}",
                    replay()
                );
                continue;
            }
            let b = y_bound(dt, w);
            let widen = |v: f64, dir: f64| v + dir * v.abs() * F32_SLACK;
            let (lo, hi) = (widen((w - b) / s, -1.0), widen((w + b) / s, 1.0));
            let (qlo, qhi) = (decode(qd, encode(qd, lo)), decode(qd, encode(qd, hi)));
            let got = decode(qd, g);
            assert!(
                qlo <= got && got <= qhi,
                "{what}: element {i} (row {r}): reference y {w:e} (bound {b:e}), scale {s:e}: \
                 got code {g:#04x} = {got:e}, want a value in [{qlo:e}, {qhi:e}] {}",
                replay()
            );
        }
    }
}
