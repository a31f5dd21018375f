//! Forward numerics of the public API on the CPU against the f64 reference in `common`.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm, fused_add_rms_norm_with, rms_norm, rms_norm_with, Backend, NormConfig,
    Rounding, WeightMode,
};
use common::*;

const HIDDEN: [usize; 12] = [1, 3, 7, 8, 127, 128, 129, 1536, 4095, 5120, 8193, 65537];

fn elem_ulps(dt: DType, rounding: Rounding) -> f64 {
    match (dt, rounding) {
        (DType::F64, _) => 1e4,
        (DType::F32, _) => 64.0,
        (_, Rounding::AtEnd) => 2.0,
        (_, Rounding::BeforeWeight) => 3.0,
    }
}

/// Runs one configuration through both ops and checks them against the reference.
#[allow(clippy::too_many_arguments)]
fn check_case(
    rng: &mut rand::rngs::StdRng,
    rows: usize,
    h: usize,
    dt: DType,
    wdt: Option<DType>,
    mode: WeightMode,
    rounding: Rounding,
    scale: f64,
) -> Result<()> {
    let n = rows * h;
    let x = quantize(&randn(rng, n, scale), dt);
    let r = quantize(&randn(rng, n, scale), dt);
    let w = wdt.map(|wdt| quantize(&randn(rng, h, 1.0), wdt));
    let eps = 1e-6;
    let cfg = NormConfig::new(eps)
        .with_weight_mode(mode)
        .with_rounding(rounding)
        .with_backend(Backend::Cpu);
    let xt = tensor(&x, &[rows, h], dt)?;
    let rt = tensor(&r, &[rows, h], dt)?;
    let wt = match (&w, wdt) {
        (Some(w), Some(wdt)) => Some(tensor(w, &[h], wdt)?),
        _ => None,
    };
    let o = RefOpts {
        // The f64 path uses eps as given; the others in f32.
        eps: if dt == DType::F64 {
            eps
        } else {
            eps as f32 as f64
        },
        mode,
        rounding,
    };
    let what = format!("rows {rows} h {h} {dt:?} w {wdt:?} {mode:?} {rounding:?} scale {scale}");
    let ulps = elem_ulps(dt, rounding);

    let y = rms_norm_with(&xt, wt.as_ref(), &cfg)?;
    assert_eq!((y.dims(), y.dtype()), (&[rows, h][..], dt), "{what}");
    let (want, _) = reference(&x, None, w.as_deref(), h, &o, dt);
    assert_close(&values(&y)?, &want, dt, ulps, &format!("rms_norm {what}"));

    let (yn, ys) = fused_add_rms_norm_with(&xt, &rt, wt.as_ref(), &cfg)?;
    assert!(yn.is_contiguous() && ys.is_contiguous());
    let (want, want_sum) = reference(&x, Some(&r), w.as_deref(), h, &o, dt);
    assert_close(
        &values(&yn)?,
        &want,
        dt,
        ulps,
        &format!("fused normed {what}"),
    );
    // The sum is x + r in f32 rounded once: at most half a unit off the exact sum.
    assert_close(
        &values(&ys)?,
        &want_sum,
        dt,
        1.0,
        &format!("fused sum {what}"),
    );
    Ok(())
}

#[test]
fn every_dtype_weight_dtype_and_hidden_size() -> Result<()> {
    let (mut rng, _) = rng();
    for &h in &HIDDEN {
        let rows = (200_000 / h).clamp(1, 33);
        for dt in DTYPES {
            for wdt in DTYPES {
                check_case(
                    &mut rng,
                    rows,
                    h,
                    dt,
                    Some(wdt),
                    WeightMode::Scale,
                    Rounding::AtEnd,
                    1.0,
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn options_no_weight_offset_one_round_before_weight() -> Result<()> {
    let (mut rng, _) = rng();
    for &h in &[5usize, 64, 130, 1536] {
        for dt in DTYPES {
            for (wdt, mode) in [
                (None, WeightMode::Scale),
                (Some(DType::F32), WeightMode::OffsetOne),
                (Some(dt), WeightMode::OffsetOne),
                (Some(dt), WeightMode::Scale),
            ] {
                for rounding in [Rounding::AtEnd, Rounding::BeforeWeight] {
                    check_case(&mut rng, 9, h, dt, wdt, mode, rounding, 3.0)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn many_rows_run_in_parallel() -> Result<()> {
    let (mut rng, _) = rng();
    for dt in [DType::BF16, DType::F16, DType::F32] {
        check_case(
            &mut rng,
            4099,
            256,
            dt,
            Some(DType::F32),
            WeightMode::Scale,
            Rounding::AtEnd,
            1.0,
        )?;
        check_case(
            &mut rng,
            333,
            1537,
            dt,
            Some(dt),
            WeightMode::Scale,
            Rounding::BeforeWeight,
            1.0,
        )?;
    }
    Ok(())
}

#[test]
fn huge_and_tiny_magnitudes() -> Result<()> {
    let (mut rng, _) = rng();
    // f16: squares of 3e4 overflow f16 (max 65504) but not the f32 accumulator.
    check_case(
        &mut rng,
        7,
        1536,
        DType::F16,
        Some(DType::F16),
        WeightMode::Scale,
        Rounding::AtEnd,
        2e4,
    )?;
    // f32 / bf16 around 1e30: squares overflow f32; the rows are rescued in f64.
    for dt in [DType::F32, DType::BF16] {
        check_case(
            &mut rng,
            7,
            129,
            dt,
            Some(DType::F32),
            WeightMode::Scale,
            Rounding::AtEnd,
            1e30,
        )?;
        check_case(
            &mut rng,
            7,
            4096,
            dt,
            Some(dt),
            WeightMode::OffsetOne,
            Rounding::BeforeWeight,
            1e30,
        )?;
    }
    // Tiny values, where eps dominates.
    check_case(
        &mut rng,
        7,
        300,
        DType::F32,
        Some(DType::F32),
        WeightMode::Scale,
        Rounding::AtEnd,
        1e-20,
    )?;
    Ok(())
}

#[test]
fn tiny_values_with_zero_eps_match_reference() -> Result<()> {
    let (mut rng, _) = rng();
    let h = 200;
    let x = quantize(&randn(&mut rng, 3 * h, 1e-25), DType::F32);
    let xt = tensor(&x, &[3, h], DType::F32)?;
    let cfg = NormConfig::new(0.0).with_backend(Backend::Cpu);
    let y = rms_norm_with(&xt, None, &cfg)?;
    let o = RefOpts {
        eps: 0.0,
        mode: WeightMode::Scale,
        rounding: Rounding::AtEnd,
    };
    let (want, _) = reference(&x, None, None, h, &o, DType::F32);
    assert_close(&values(&y)?, &want, DType::F32, 64.0, "tiny, eps 0");
    Ok(())
}

#[test]
fn nan_stays_in_its_row() -> Result<()> {
    let (mut rng, _) = rng();
    for dt in DTYPES {
        for h in [17usize, 1536] {
            let mut x = quantize(&randn(&mut rng, 4 * h, 1.0), dt);
            x[h + h / 2] = f64::NAN;
            let xt = tensor(&x, &[4, h], dt)?;
            let w = Tensor::ones(h, DType::F32, &Device::Cpu)?;
            let y = values(&rms_norm(&xt, &w, 1e-6)?)?;
            let (yn, ys) = fused_add_rms_norm(&xt, &xt.zeros_like()?, &w, 1e-6)?;
            for (name, v) in [("rms_norm", y), ("fused", values(&yn)?)] {
                for (i, e) in v.iter().enumerate() {
                    assert_eq!(e.is_nan(), i / h == 1, "{name} {dt:?} h {h} element {i}");
                }
            }
            let s = values(&ys)?;
            assert!(s[h + h / 2].is_nan() && s.iter().filter(|v| v.is_nan()).count() == 1);
        }
    }
    Ok(())
}

#[test]
fn ranks_one_to_four_and_empty() -> Result<()> {
    let (mut rng, _) = rng();
    for dims in [
        vec![7usize],
        vec![3, 7],
        vec![2, 3, 7],
        vec![2, 1, 3, 7],
        vec![0, 7],
        vec![2, 0, 7],
        vec![3, 0],
    ] {
        let n: usize = dims.iter().product();
        let h = *dims.last().unwrap();
        for dt in DTYPES {
            let x = quantize(&randn(&mut rng, n, 1.0), dt);
            let w = quantize(&randn(&mut rng, h, 1.0), dt);
            let xt = tensor(&x, &dims, dt)?;
            let wt = tensor(&w, &[h], dt)?;
            let y = rms_norm(&xt, &wt, 1e-5)?;
            assert_eq!(y.dims(), &dims[..]);
            let o = RefOpts {
                eps: 1e-5f32 as f64,
                mode: WeightMode::Scale,
                rounding: Rounding::AtEnd,
            };
            let (want, _) = reference(&x, None, Some(&w), h, &o, dt);
            assert_close(
                &values(&y)?,
                &want,
                dt,
                elem_ulps(dt, Rounding::AtEnd),
                &format!("{dims:?}"),
            );
            let (a, b) = fused_add_rms_norm(&xt, &xt, &wt, 1e-5)?;
            assert_eq!((a.dims(), b.dims()), (&dims[..], &dims[..]));
        }
    }
    Ok(())
}

/// Views: an offset start, strided rows (a narrowed last dim), stepped rows, and layouts that
/// need a copy (transposed last dim, broadcast rows). Results must equal those on a fresh
/// contiguous copy, bit for bit.
#[test]
fn views_with_offsets_and_strides() -> Result<()> {
    let (mut rng, _) = rng();
    for dt in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        let base = tensor(
            &quantize(&randn(&mut rng, 6 * 10 * 40, 2.0), dt),
            &[6, 10, 40],
            dt,
        )?;
        let res = tensor(
            &quantize(&randn(&mut rng, 6 * 10 * 40, 2.0), dt),
            &[6, 10, 40],
            dt,
        )?;
        let views: Vec<(&str, Tensor, Tensor)> = vec![
            ("offset rows", base.narrow(0, 2, 3)?, res.narrow(0, 1, 3)?),
            (
                "strided rows",
                base.narrow(2, 3, 33)?,
                res.narrow(2, 0, 33)?,
            ),
            (
                "stepped rows",
                base.i((.., 1..8, ..))?,
                res.i((.., 2..9, ..))?,
            ),
            ("one row", base.i((4, 7))?, res.i((1, 2))?),
            ("transposed", base.transpose(1, 2)?, res.transpose(1, 2)?),
            (
                "leading transpose",
                base.transpose(0, 1)?,
                res.transpose(0, 1)?,
            ),
            (
                "broadcast",
                base.i((0, 0))?.broadcast_as((5, 40))?,
                res.i((0, 1..6))?,
            ),
        ];
        for (name, v, r) in views {
            let h = v.dim(candle_core::D::Minus1)?;
            let w = tensor(&randn(&mut rng, h, 1.0), &[h], DType::F32)?;
            let got = rms_norm(&v, &w, 1e-6)?;
            let want = rms_norm(&v.contiguous()?.copy()?, &w, 1e-6)?;
            assert_eq!(values(&got)?, values(&want)?, "{name} {dt:?}");
            let (gn, gs) = fused_add_rms_norm(&v, &r, &w, 1e-6)?;
            let (wn, ws) =
                fused_add_rms_norm(&v.contiguous()?.copy()?, &r.contiguous()?.copy()?, &w, 1e-6)?;
            assert_eq!(values(&gn)?, values(&wn)?, "fused {name} {dt:?}");
            assert_eq!(values(&gs)?, values(&ws)?, "fused sum {name} {dt:?}");
            // And against the reference, on the values the view shows.
            let xv = values(&v)?;
            let o = RefOpts {
                eps: 1e-6f32 as f64,
                mode: WeightMode::Scale,
                rounding: Rounding::AtEnd,
            };
            let (want, _) = reference(&xv, None, Some(&values(&w)?), h, &o, dt);
            assert_close(
                &values(&got)?,
                &want,
                dt,
                elem_ulps(dt, Rounding::AtEnd),
                name,
            );
        }
        // A strided weight view is accepted.
        let w2 = tensor(&randn(&mut rng, 80, 1.0), &[40, 2], DType::F32)?.i((.., 1))?;
        let a = rms_norm(&base, &w2, 1e-6)?;
        let b = rms_norm(&base, &w2.contiguous()?, 1e-6)?;
        assert_eq!(values(&a)?, values(&b)?);
    }
    Ok(())
}

#[test]
fn agrees_with_candle_nn() -> Result<()> {
    let (mut rng, _) = rng();
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for &(rows, h) in &[
            (1usize, 1usize),
            (33, 128),
            (4, 5120),
            (100, 1536),
            (2, 65537),
        ] {
            let x = tensor(&randn(&mut rng, rows * h, 1.0), &[rows, h], dt)?;
            let w = tensor(&randn(&mut rng, h, 1.0), &[h], dt)?;
            let ours = values(&rms_norm(&x, &w, 1e-6)?)?;
            let theirs = values(&candle_nn::ops::rms_norm(&x, &w, 1e-6)?)?;
            // candle_nn rounds the rms to the dtype before dividing: allow a few ulps more.
            let bound = match dt {
                DType::F32 => 1e-5,
                DType::F16 => 4.0 * ulp(dt),
                _ => 4.0 * ulp(dt),
            };
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    (a - b).abs() <= bound * (b.abs() + 1e-2),
                    "{dt:?} {rows}x{h}: {a} vs {b}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn results_are_deterministic() -> Result<()> {
    let (mut rng, _) = rng();
    let x = tensor(&randn(&mut rng, 999 * 1000, 1.0), &[999, 1000], DType::BF16)?;
    let w = tensor(&randn(&mut rng, 1000, 1.0), &[1000], DType::F32)?;
    let a = rms_norm(&x, &w, 1e-6)?;
    let b = rms_norm(&x, &w, 1e-6)?;
    assert_eq!(values(&a)?, values(&b)?);
    Ok(())
}
