//! Forward numerics on the CPU: the case matrix (`common::cases`) through the public API with
//! the backend `CANDLE_RMSNORM_BACKEND` names (`Backend::Cpu` when unset or `auto`; CI runs the
//! suite again with `candle`), the whole matrix on the portable `Backend::Candle` in every run,
//! and what the CPU backends promise (views bit-identical to contiguous copies, agreement with
//! candle_nn, run-to-run determinism).

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_rmsnorm::{fused_add_rms_norm, rms_norm, Backend, Rounding, WeightMode};
use common::*;

fn cpu(group: Group) -> Result<()> {
    let backend = match Backend::from_env()? {
        Backend::Auto => Backend::Cpu,
        b => b,
    };
    run_matrix(&Device::Cpu, backend, |c| c.group == group).map(|_| ())
}

/// The portable backend (Candle's own ops) on the whole matrix, whatever the environment says.
#[test]
fn matrix_on_portable_backend() -> Result<()> {
    run_matrix(&Device::Cpu, Backend::Candle, |_| true).map(|_| ())
}

#[test]
fn matrix_sizes() -> Result<()> {
    cpu(Group::Sizes)
}

#[test]
fn matrix_options() -> Result<()> {
    cpu(Group::Options)
}

#[test]
fn matrix_shapes() -> Result<()> {
    cpu(Group::Shapes)
}

#[test]
fn matrix_many_rows() -> Result<()> {
    cpu(Group::ManyRows)
}

#[test]
fn matrix_extremes() -> Result<()> {
    cpu(Group::Extremes)
}

#[test]
fn matrix_views() -> Result<()> {
    cpu(Group::Views)
}

#[test]
fn matrix_variance_size() -> Result<()> {
    cpu(Group::VarianceSize)
}

#[test]
fn matrix_dims() -> Result<()> {
    cpu(Group::Dims)
}

/// The reference itself: a NaN makes its row NaN and only that row, an infinity makes its
/// element NaN and the rest of its row 0, and the fused sum is formed in f32 and rounded to
/// the dtype. (The matrix checks every backend's NaN positions against these.)
#[test]
fn reference_rows_nan_infinity_and_f32_sum() {
    let o = Opts::new(0.0);
    let x = [1.0, f64::NAN, 2.0, 3.0, f64::INFINITY, -1.0, 1.0, 2.0, 3.0];
    let e = reference(DType::F32, &x, Some(&[0.0; 9]), None, 3, &o);
    assert!(e.normed[..3].iter().all(|v| v.is_nan()));
    assert!(e.normed[4].is_nan() && e.normed[3] == 0.0 && e.normed[5] == 0.0);
    assert!(e.normed[6..].iter().all(|v| v.is_finite()));
    assert_eq!(e.sum.iter().filter(|v| v.is_nan()).count(), 1);
    // The sum is an f32 addition: 1 + 2^-30 is 1 (f64 would keep it).
    let e = reference(DType::F32, &[1.0], Some(&[2f64.powi(-30)]), None, 1, &o);
    assert_eq!((e.sum, e.normed), (vec![1.0], vec![1.0]));
    // Rounded to the dtype to nearest even: 1 + 2^-8 is a bf16 tie, rounded to 1.
    let e = reference(DType::BF16, &[1.0], Some(&[2f64.powi(-8)]), None, 1, &o);
    assert_eq!(e.sum, vec![1.0]);
    // OffsetOne forms 1 + w in f32: 1 + 2^-30 is 1.
    let o = Opts {
        mode: WeightMode::OffsetOne,
        rounding: Rounding::BeforeWeight,
        ..Opts::new(0.0)
    };
    let e = reference(DType::F32, &[2.0], None, Some(&[2f64.powi(-30)]), 1, &o);
    assert_eq!(e.normed, vec![1.0]);
}

/// Views read in place (and layouts copied first) give the bits a fresh contiguous copy gives,
/// through the plain functions; a strided weight view is accepted.
#[test]
fn views_equal_contiguous_copies_bitwise() -> Result<()> {
    let (mut rng, _) = rng();
    for dt in DTYPES {
        for view in views::VIEWS {
            let base = |rng: &mut _| {
                let n = view.base.iter().product();
                tensor(&quantize(&randn(rng, n, 2.0), dt), view.base, dt)
            };
            let (v, r) = ((view.x)(&base(&mut rng)?)?, (view.r)(&base(&mut rng)?)?);
            let h = view.hidden;
            let w = tensor(&randn(&mut rng, h, 1.0), &[h], DType::F32)?;
            let copy = |t: &Tensor| t.contiguous()?.copy();
            let (name, what) = (view.name, format!("{} {dt:?}", view.name));
            let got = rms_norm(&v, &w, 1e-6)?;
            let want = rms_norm(&copy(&v)?, &w, 1e-6)?;
            assert_eq!(values(&got)?, values(&want)?, "{what}");
            let (gn, gs) = fused_add_rms_norm(&v, &r, &w, 1e-6)?;
            let (wn, ws) = fused_add_rms_norm(&copy(&v)?, &copy(&r)?, &w, 1e-6)?;
            assert_eq!(values(&gn)?, values(&wn)?, "fused {name} {dt:?}");
            assert_eq!(values(&gs)?, values(&ws)?, "fused sum {name} {dt:?}");
        }
        let base = tensor(&quantize(&randn(&mut rng, 2400, 2.0), dt), &[6, 10, 40], dt)?;
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
                _ => 4.0 * unit(dt),
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
