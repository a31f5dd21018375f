//! The quantised ops (`rms_norm_quant`, `fused_add_rms_norm_quant`) on the CPU, every check
//! once per backend (`cpu::*`: `Backend::Cpu`, the SIMD path; `portable::*`: `Backend::Candle`,
//! Candle's ops):
//! - results bit for bit the reference quantisation (`common::quant_reference`) of what the
//!   unquantised op of the same backend returns, and within one quantisation step of the f64
//!   norm reference (`common::quant_cases::run_qcase`): odd and model sizes, many rows, the
//!   norm matrix's options, shapes (ranks 1 to 4, empty), extreme values and views;
//! - zero rows, saturating static scales, NaN and infinite rows, empty tensors, `dequantize`,
//!   views against contiguous copies, detached results;
//! - once: the two backends bit for bit against each other, errors, and the reference's own
//!   encodings (hand values, ties, wrong encoders it tells apart).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_rmsnorm::{
    rms_norm_quant, Backend, NormConfig, QuantConfig, QuantDType, QuantScale, Quantized,
};
use common::cases::Group;
use common::quant_cases::*;
use common::quant_checks::{check_exact, codes, f32s, ref_quant, replay, rows_of, same_bits};
use common::quant_inputs::*;
use common::quant_reference::*;
use common::{randn, rng, tensor, values, DTYPES};
use rand::Rng;

/// Each check as a test on each backend: `cpu::name` and `portable::name` call `f(backend,
/// args)`.
macro_rules! per_backend {
    ($($name:ident => $f:ident($($arg:expr),*);)*) => {
        mod cpu {
            use super::*;
            $(#[test] fn $name() -> Result<()> { $f(Backend::Cpu, $($arg),*) })*
        }
        mod portable {
            use super::*;
            $(#[test] fn $name() -> Result<()> { $f(Backend::Candle, $($arg),*) })*
        }
    };
}

per_backend! {
    exact_f32 => exact(DType::F32);
    exact_f16 => exact(DType::F16);
    exact_bf16 => exact(DType::BF16);
    exact_f64 => exact(DType::F64);
    matrix_options => group(Group::Options);
    matrix_shapes => group(Group::Shapes);
    matrix_extremes => group(Group::Extremes);
    matrix_views => group(Group::Views);
    clamp_norm => clamp();
    views_and_contiguous_copies => views();
    zero_rows_get_min_scale => zero_rows();
    static_scale_saturates => saturation();
    nan_and_infinite_rows => nan_and_inf();
    empty_tensors => empty();
    dequantize_round_trip => dequantize();
    results_are_detached => detached();
    constructed_inputs_exact => constructed();
}

/// Runs `cases` on backend `b` with [`run_qcase`]: against the unquantised op bit for bit and
/// the f64 reference; every quantisation (`all`) or one a case.
fn run_cases(b: Backend, cases: &[QCase], all: bool) -> Result<()> {
    let t = QTarget {
        device: Device::Cpu,
        backend: b,
    };
    run_qcases(&t, cases, all, true, true)
}

/// [`size_cases`]: every quantisation.
fn exact(b: Backend, dt: DType) -> Result<()> {
    run_cases(b, &size_cases(dt), true)
}

/// The norm matrix's cases of group `g`, one quantisation each: Options (weight modes,
/// roundings, eps 0 and large, no weight), Shapes (ranks 1 to 4, empty, odd sizes), Extremes
/// (1e30 in f32 and bf16, 6e4 in f16, tiny values, rows with a NaN or an infinity), Views
/// (offsets, narrowed rows and last dims, row steps, transposed leading dims, broadcasts;
/// transposed last dims, copied).
fn group(b: Backend, g: Group) -> Result<()> {
    run_cases(b, &group_cases(g), false)
}

/// [`clamp_cases`]: every quantisation.
fn clamp(b: Backend) -> Result<()> {
    run_cases(b, &clamp_cases(), true)
}

/// [`check_views`]: views against contiguous copies and through the exact check.
fn views(b: Backend) -> Result<()> {
    check_views(&Device::Cpu, b, true)
}

/// [`check_constructed`] (the GPU suite's exact test) on the CPU backends.
fn constructed(b: Backend) -> Result<()> {
    check_constructed(
        &Device::Cpu,
        b,
        &[(1, 1), (3, 7), (37, 100), (64, 257), (5, 4099)],
    )
}

/// All-zero rows get `min_scale` and zero codes; the other rows are unaffected.
fn zero_rows(b: Backend) -> Result<()> {
    let (mut rng, _) = rng();
    let h = 50;
    let mut vals: Vec<f32> = randn(&mut rng, 4 * h, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    vals[..h].fill(0.0);
    vals[2 * h..3 * h].fill(0.0);
    for dt in DTYPES {
        for qd in [QuantDType::F8E4M3, QuantDType::I8] {
            assert_eq!(min_scale(qd), qd.min_scale(), "the reference's floor");
            let o = quant_rows("zero rows", &vals, &[4, h], dt, &QuantConfig::new(qd), b)?;
            for r in [0, 2] {
                assert_eq!(o.scales[r], min_scale(qd), "{dt:?} {qd:?} row {r}");
                assert!(o.row(r).iter().all(|&c| c == 0), "{dt:?} {qd:?} row {r}");
            }
            assert!(o.scales[1] > min_scale(qd) && o.scales[3] > min_scale(qd));
        }
    }
    Ok(())
}

/// A static scale far below the values: every code saturated (e4m3 +-448, i8 127 / -128).
fn saturation(b: Backend) -> Result<()> {
    let (mut rng, _) = rng();
    let h = 300;
    let vals: Vec<f32> = (0..3 * h)
        .map(|_| (0.5 + rng.gen::<f64>()) as f32 * if rng.gen() { 1.0 } else { -1.0 })
        .collect();
    for dt in DTYPES {
        for (qd, pos, neg) in [
            (QuantDType::F8E4M3, 0x7e, 0xfe),
            (QuantDType::I8, 0x7f, 0x80),
        ] {
            let quant = QuantConfig::new(qd).with_static_scale(1e-4);
            let o = quant_rows("saturated", &vals, &[3, h], dt, &quant, b)?;
            for (c, v) in o.codes.iter().zip(&vals) {
                assert_eq!(*c, if *v > 0.0 { pos } else { neg }, "{dt:?} {qd:?} {v}");
            }
        }
    }
    Ok(())
}

/// A NaN makes its row's codes NaN (e4m3) or 0 (i8) with the scale of an empty row; an
/// infinity makes its element NaN and the rest of its row 0 (the norm's scale is 0); the other
/// rows are what they are without them.
fn nan_and_inf(b: Backend) -> Result<()> {
    let (mut rng, _) = rng();
    let h = 40;
    let clean: Vec<f32> = randn(&mut rng, 4 * h, 2.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let mut vals = clean.clone();
    vals[h + 3] = f32::NAN;
    vals[3 * h + 5] = f32::INFINITY;
    for dt in DTYPES {
        for quant in quant_configs(0.02) {
            let (qd, what) = (quant.dtype(), format!("{dt:?} {quant:?}"));
            let nan = encode(qd, f64::NAN);
            let g = quant_rows("NaN and inf rows", &vals, &[4, h], dt, &quant, b)?;
            let w = quant_rows("clean rows", &clean, &[4, h], dt, &quant, b)?;
            for r in [0, 2] {
                assert_eq!(g.row(r), w.row(r), "{what}: row {r}");
                assert_eq!(g.scales[r], w.scales[r], "{what}: scale of row {r}");
            }
            assert!(g.row(1).iter().all(|&c| same_code(qd, c, nan)), "{what}");
            for (j, &c) in g.row(3).iter().enumerate() {
                // The zeros keep the sign of x (e4m3 -0 is 0x80).
                let ok = if j == 5 {
                    same_code(qd, c, nan)
                } else {
                    decode(qd, c) == 0.0
                };
                assert!(ok, "{what}: column {j}: {c:#04x}");
            }
            if quant.scale() == QuantScale::Dynamic {
                assert_eq!([g.scales[1], g.scales[3]], [min_scale(qd); 2], "{what}");
            }
        }
    }
    Ok(())
}

/// Empty tensors: empty values, scales of `[rows, 1]` holding the scale of an empty row.
fn empty(b: Backend) -> Result<()> {
    for dims in [&[0usize, 8][..], &[4, 0], &[2, 0, 3]] {
        for dt in DTYPES {
            for quant in quant_configs(0.25) {
                let x = Tensor::zeros(dims, dt, &Device::Cpu)?;
                let cfg = NormConfig::new(1e-6).with_backend(b);
                let w = Tensor::ones(dims[dims.len() - 1], dt, &Device::Cpu)?;
                for r in [None, Some(&x)] {
                    let what = format!("{dims:?} {dt:?} {quant:?} fused {}", r.is_some());
                    let (q, sum) = check_against_norm(&what, &x, r, Some(&w), &cfg, &quant)?;
                    let want = ref_quant(&quant).row_scale(&[]);
                    let scales = f32s(&q.scales)?;
                    assert_eq!(scales.len(), rows_of(dims), "{what}");
                    assert!(scales.iter().all(|&s| s == want), "{what}: {scales:?}");
                    assert_eq!(q.values.elem_count(), 0);
                    assert_eq!(sum.map(|s| s.dims().to_vec()), r.map(|_| dims.to_vec()));
                }
            }
        }
    }
    Ok(())
}

/// `dequantize` is `decode(code) * scale` in f32, then rounded to the dtype asked for: i8
/// bytes from 128 up are the negative values.
fn dequantize(b: Backend) -> Result<()> {
    let (mut rng, _) = rng();
    let x = tensor(&randn(&mut rng, 6 * 70, 1.0), &[2, 3, 70], DType::BF16)?;
    for quant in quant_configs(draw_scale(&mut rng)) {
        let q = rms_norm_quant(&x, None, &NormConfig::new(1e-6).with_backend(b), &quant)?;
        let (c, s) = (codes(&q.values)?, f32s(&q.scales)?);
        let want: Vec<f32> = (c.iter().enumerate())
            .map(|(i, &b)| decode(quant.dtype(), b) as f32 * s[i / 70])
            .collect();
        if quant.dtype() == QuantDType::I8 {
            let neg = c.iter().zip(&want).filter(|(&b, _)| b >= 128);
            assert!(neg.clone().count() > 0 && neg.clone().all(|(_, &v)| v < 0.0));
        }
        let got = f32s(&q.dequantize(DType::F32)?)?;
        let same = got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits());
        assert!(same, "{quant:?}: {got:?} vs {want:?}");
        let bf = values(&q.dequantize(DType::BF16)?)?;
        let want_bf: Vec<f64> = want
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f64())
            .collect();
        assert_eq!(bf, want_bf, "{quant:?} as bf16");
        assert_eq!(q.dequantize(DType::F16)?.dims(), x.dims());
    }
    Ok(())
}

/// The results carry no gradient, even from variables.
fn detached(b: Backend) -> Result<()> {
    let x = Var::new(&[[1f32, -2., 3.], [0.5, 4., -1.]], &Device::Cpu)?;
    let w = Var::new(&[1f32, 2., 3.], &Device::Cpu)?;
    let cfg = NormConfig::new(1e-6).with_backend(b);
    for quant in quant_configs(0.1) {
        for r in [None, Some(x.as_tensor())] {
            let (q, sum) = quant_op(x.as_tensor(), r, Some(w.as_tensor()), &cfg, &quant)?;
            let what = format!("{quant:?} fused {}", r.is_some());
            let tracked = [
                ("values", q.values.track_op()),
                ("scales", q.scales.track_op()),
                ("sum", sum.is_some_and(|s| s.track_op())),
            ];
            let bad: Vec<_> = tracked.iter().filter(|t| t.1).map(|t| t.0).collect();
            assert!(bad.is_empty(), "{what}: {bad:?} track the graph");
        }
    }
    Ok(())
}

/// The SIMD CPU backend and the portable one give the same codes and scales on every row where
/// their norms agree bit for bit (the two sum squares in different orders, so `y` may differ by
/// an ulp on some rows), and the same sums everywhere.
#[test]
fn cpu_and_portable_agree_bitwise() -> Result<()> {
    let (mut rng, _) = rng();
    let mut rows_compared = 0;
    for dt in [DType::BF16, DType::F32] {
        for dims in [[1usize, 1], [7, 33], [64, 1536], [300, 129], [2, 5120]] {
            let n = dims[0] * dims[1];
            let sd = 10f64.powf(rng.gen_range(-3.0..3.0));
            let x = tensor(&randn(&mut rng, n, sd), &dims, dt)?;
            let r = tensor(&randn(&mut rng, n, sd), &dims, dt)?;
            let w = tensor(&randn(&mut rng, dims[1], 1.0), &[dims[1]], DType::F32)?;
            for quant in quant_configs(draw_scale(&mut rng)) {
                for r in [None, Some(&r)] {
                    let norm = |b| -> Result<Vec<u64>> {
                        let cfg = NormConfig::new(1e-6).with_backend(b);
                        let y = match r {
                            Some(r) => {
                                candle_rmsnorm::fused_add_rms_norm_with(&x, r, Some(&w), &cfg)?.0
                            }
                            None => candle_rmsnorm::rms_norm_with(&x, Some(&w), &cfg)?,
                        };
                        let v = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                        Ok(v.iter().map(|e| e.to_bits()).collect())
                    };
                    let (ya, yc) = (norm(Backend::Cpu)?, norm(Backend::Candle)?);
                    let run = |b| {
                        let cfg = NormConfig::new(1e-6).with_backend(b);
                        quant_op(&x, r, Some(&w), &cfg, &quant)
                    };
                    let ((a, sa), (c, sc)) = (run(Backend::Cpu)?, run(Backend::Candle)?);
                    let what = format!("{dt:?} {dims:?} sd {sd:e} {quant:?} fused {}", r.is_some());
                    let (ca, cc) = (codes(&a.values)?, codes(&c.values)?);
                    let scale = |t: &Tensor| -> Result<Vec<u32>> {
                        let v = t.flatten_all()?.to_vec1::<f32>()?;
                        Ok(v.iter().map(|e| e.to_bits()).collect())
                    };
                    let (pa, pc) = (scale(&a.scales)?, scale(&c.scales)?);
                    let h = dims[1];
                    for row in 0..dims[0] {
                        let span = row * h..(row + 1) * h;
                        if ya[span.clone()] != yc[span.clone()] {
                            continue;
                        }
                        rows_compared += 1;
                        assert_eq!(ca[span.clone()], cc[span], "{what} row {row} {}", replay());
                        assert_eq!(pa[row], pc[row], "{what}: row {row} scale {}", replay());
                    }
                    if let (Some(sa), Some(sc)) = (sa, sc) {
                        assert!(same_bits(&sa, &sc)?, "{what}: sum");
                    }
                }
            }
        }
    }
    assert!(rows_compared > 0, "no row's norms agreed: nothing compared");
    Ok(())
}

/// The error text, which must mention every needle.
fn expect_err<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) {
    let msg = match r {
        Ok(v) => panic!("expected an error mentioning {needles:?}, got {v:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
}

#[test]
fn errors_name_the_op_and_the_argument() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 8), DType::F32, &dev)?;
    let f8 = QuantConfig::new(QuantDType::F8E4M3);
    let ops = [
        "candle_rmsnorm::rms_norm_quant",
        "candle_rmsnorm::fused_add_rms_norm_quant",
    ];
    for b in [Backend::Cpu, Backend::Candle] {
        let cfg = NormConfig::new(1e-6).with_backend(b);
        for (op, r) in ops.into_iter().zip([None, Some(&x)]) {
            let call = |x: &Tensor, w: Option<&Tensor>, c: &NormConfig, q: &QuantConfig| {
                quant_op(x, r.map(|_| x), w, c, q).map(|(q, _)| q.dtype)
            };
            for d in [0, 1] {
                expect_err(
                    call(&x, None, &cfg.with_dim(d), &f8),
                    &[op, "dim", &d.to_string()],
                );
            }
            expect_err(call(&x, None, &cfg.with_dim(7), &f8), &[op, "dim"]);
            call(&x, None, &cfg.with_dim(2), &f8)?; // the last dim, named
            expect_err(
                call(&x, None, &cfg.with_variance_size(4), &f8),
                &[op, "variance_size"],
            );
            for s in [0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0] {
                let q = QuantConfig::new(QuantDType::I8).with_static_scale(s);
                expect_err(call(&x, None, &cfg, &q), &[op, "scale"]);
                let q = f8.with_scale(QuantScale::Static(s));
                expect_err(call(&x, None, &cfg, &q), &[op, "scale"]);
            }
            for dt in [DType::U8, DType::U32, DType::I64] {
                let xi = Tensor::zeros((2, 8), dt, &dev)?;
                expect_err(call(&xi, None, &cfg, &f8), &[op, "xs", &format!("{dt:?}")]);
            }
            let x0 = Tensor::new(3f32, &dev)?;
            expect_err(call(&x0, None, &cfg, &f8), &[op, "xs", "rank"]);
            let w7 = Tensor::ones(7, DType::F32, &dev)?;
            expect_err(call(&x, Some(&w7), &cfg, &f8), &[op, "weight", "[7]"]);
            let eps = NormConfig::new(-1.0).with_backend(b);
            expect_err(call(&x, None, &eps, &f8), &[op, "eps"]);
        }
        let fused = |r: &Tensor| candle_rmsnorm::fused_add_rms_norm_quant(&x, r, None, &cfg, &f8);
        let r = Tensor::zeros((2, 3, 7), DType::F32, &dev)?;
        expect_err(fused(&r), &[ops[1], "residual", "[2, 3, 7]"]);
        let r = Tensor::zeros((2, 3, 8), DType::BF16, &dev)?;
        expect_err(fused(&r), &[ops[1], "residual", "BF16"]);
    }
    Ok(())
}

/// The reference's own checks, and a wrong quantisation (truncating e4m3, the reference's
/// scales) that `check_exact` rejects.
#[test]
fn reference_self_checks() -> Result<()> {
    let (mut rng, _) = rng();
    self_check(&mut rng);
    let y: Vec<f32> = randn(&mut rng, 4 * 64, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let quant = QuantConfig::new(QuantDType::F8E4M3);
    let good = ref_quant(&quant).quantise(&y, 4);
    let fake = |codes: &[u8]| -> Result<Quantized> {
        let v: Vec<f32> = codes.iter().map(|&c| e4m3_decode(c) as f32).collect();
        Ok(Quantized {
            values: Tensor::from_vec(v, (4, 64), &Device::Cpu)?.to_dtype(DType::F8E4M3)?,
            scales: Tensor::from_vec(good.scales.clone(), (4, 1), &Device::Cpu)?,
            dtype: QuantDType::F8E4M3,
        })
    };
    check_exact(
        "the reference itself",
        &fake(&good.codes)?,
        &quant,
        &[4, 64],
        &y,
    );
    let bad: Vec<u8> = (y.iter().enumerate())
        .map(|(i, &v)| e4m3_truncate(RefQuant::scaled(v, good.scales[i / 64]) as f64))
        .collect();
    let bad = fake(&bad)?;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_exact("mutant", &bad, &quant, &[4, 64], &y)
    }));
    assert!(caught.is_err(), "check_exact accepts truncated codes");
    Ok(())
}
