//! Gradients of both ops, against Candle's autograd of the composite formula.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_rmsnorm::{
    fused_add_rms_norm_with, rms_norm_with, Backend, EpsMode, NormConfig, WeightMode,
};
use common::*;

/// The formula in Candle ops (autograd gives its gradients), the mean of squares over the
/// first `var` elements of each row.
fn composite(
    x: &Tensor,
    w: Option<&Tensor>,
    eps: f64,
    mode: WeightMode,
    var: usize,
) -> Result<Tensor> {
    let ms = x
        .narrow(D::Minus1, 0, var)?
        .sqr()?
        .mean_keepdim(D::Minus1)?;
    let n = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    match (w, mode) {
        (None, _) => Ok(n),
        (Some(w), WeightMode::Scale) => n.broadcast_mul(w),
        (Some(w), WeightMode::OffsetOne) => n.broadcast_mul(&(w + 1.0)?),
    }
}

fn close(a: &Tensor, b: &Tensor, tol: f64, what: &str) -> Result<()> {
    let a = values(a)?;
    let b = values(b)?;
    // The inputs and upstream gradients are O(1), so the gradients' natural scale is O(1) even
    // where cancellation leaves one near zero (hidden 1: d/dx x/|x| ~ eps); bound the error
    // relative to the largest element, and to 1 at least.
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1.0);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what} [{i}]: {x} vs {y}");
    }
    Ok(())
}

/// Compares the gradients of `vars` in two backward passes.
fn compare(
    ours: &candle_core::backprop::GradStore,
    theirs: &candle_core::backprop::GradStore,
    vars: &[(&str, &Var)],
    tol: f64,
    what: &str,
) -> Result<()> {
    for (name, v) in vars {
        let (a, b) = (ours.get(v), theirs.get(v));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("{name} {what}: missing gradient");
        };
        close(a, b, tol, &format!("{name} {what}"))?;
    }
    Ok(())
}

#[test]
fn grads_match_composite_autograd() -> Result<()> {
    let (mut rng, _) = rng();
    for (dt, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let shapes = [
            (3usize, 1usize, 1usize),
            (4, 7, 7),
            (5, 130, 130),
            (4, 7, 3),
            (5, 130, 77),
        ];
        for (rows, h, var) in shapes {
            for (weighted, mode) in [
                (true, WeightMode::Scale),
                (true, WeightMode::OffsetOne),
                (false, WeightMode::Scale),
            ] {
                let cfg = NormConfig::new(1e-5)
                    .with_weight_mode(mode)
                    .with_variance_size(var)
                    .with_backend(Backend::Cpu);
                let x =
                    Var::from_tensor(&tensor(&randn(&mut rng, rows * h, 1.0), &[rows, h], dt)?)?;
                let r =
                    Var::from_tensor(&tensor(&randn(&mut rng, rows * h, 1.0), &[rows, h], dt)?)?;
                let w = Var::from_tensor(&tensor(&randn(&mut rng, h, 1.0), &[h], dt)?)?;
                let gy = tensor(&randn(&mut rng, rows * h, 1.0), &[rows, h], dt)?;
                let gs = tensor(&randn(&mut rng, rows * h, 1.0), &[rows, h], dt)?;
                let wopt = weighted.then_some(w.as_tensor());
                let what = format!("{dt:?} {rows}x{h} var {var} {weighted} {mode:?}");

                // rms_norm
                let ours = (rms_norm_with(&x, wopt, &cfg)? * &gy)?
                    .sum_all()?
                    .backward()?;
                let theirs = (composite(&x, wopt, 1e-5, mode, var)? * &gy)?
                    .sum_all()?
                    .backward()?;
                let mut vars = vec![("dx", &x)];
                if weighted {
                    vars.push(("dw", &w));
                }
                compare(&ours, &theirs, &vars, tol, &what)?;

                // fused: loss = <normed, gy> + <sum, gs>
                let (n, s) = fused_add_rms_norm_with(&x, &r, wopt, &cfg)?;
                let ours = ((n * &gy)?.sum_all()? + (s * &gs)?.sum_all()?)?.backward()?;
                let sum = (x.as_tensor() + r.as_tensor())?;
                let n2 = composite(&sum, wopt, 1e-5, mode, var)?;
                let theirs = ((n2 * &gy)?.sum_all()? + (sum * &gs)?.sum_all()?)?.backward()?;
                vars.push(("dres", &r));
                compare(&ours, &theirs, &vars, tol, &format!("fused {what}"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn grads_keep_input_dtypes() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 16), &dev)?.to_dtype(DType::BF16)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 1., 16, &dev)?)?;
    let g = rms_norm_with(&x, Some(&w), &NormConfig::new(1e-6))?
        .to_dtype(DType::F32)?
        .sum_all()?
        .backward()?;
    assert_eq!(g.get(&x).unwrap().dtype(), DType::BF16);
    assert_eq!(g.get(&w).unwrap().dtype(), DType::F32);
    Ok(())
}

/// A norm over dim 1 of a 4-d tensor, with `EpsMode::AddToMean` and with the clamp (`eps` 1e-5:
/// never active; 3.0: active for some columns, whose gradient then has no mean's term), against
/// autograd of the formula written over dim 1.
#[test]
fn grads_over_a_dim_and_with_the_clamp() -> Result<()> {
    let (mut rng, _) = rng();
    let dims = [2usize, 5, 3, 4];
    let n: usize = dims.iter().product();
    for (dt, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        for (mode, eps) in [
            (EpsMode::AddToMean, 1e-5),
            (EpsMode::ClampNorm, 1e-5),
            (EpsMode::ClampNorm, 3.0),
        ] {
            let cfg = NormConfig::new(eps)
                .with_dim(1)
                .with_eps_mode(mode)
                .with_backend(Backend::Cpu);
            let x = Var::from_tensor(&tensor(&randn(&mut rng, n, 1.0), &dims, dt)?)?;
            let r = Var::from_tensor(&tensor(&randn(&mut rng, n, 1.0), &dims, dt)?)?;
            let w = Var::from_tensor(&tensor(&randn(&mut rng, 5, 1.0), &[5], dt)?)?;
            let gy = tensor(&randn(&mut rng, n, 1.0), &dims, dt)?;
            let gs = tensor(&randn(&mut rng, n, 1.0), &dims, dt)?;
            let formula = |x: &Tensor| -> Result<Tensor> {
                let ss = x.sqr()?.sum_keepdim(1)?;
                let scale = match mode {
                    EpsMode::AddToMean => ((ss / 5.0)? + eps)?.sqrt()?.recip()?,
                    EpsMode::ClampNorm => {
                        let norm = ss.sqrt()?;
                        let floor = norm.ones_like()?.affine(eps, 0.0)?;
                        let active = norm.gt(&floor)?;
                        (active.where_cond(&norm, &floor)?.recip()? * 5f64.sqrt())?
                    }
                };
                x.broadcast_mul(&scale)?
                    .broadcast_mul(&w.as_tensor().reshape((1, 5, 1, 1))?)
            };
            let what = format!("{dt:?} {mode:?} eps {eps}");
            let ours = (rms_norm_with(&x, Some(&w), &cfg)? * &gy)?
                .sum_all()?
                .backward()?;
            let theirs = (formula(&x)? * &gy)?.sum_all()?.backward()?;
            let mut vars = vec![("dx", &x), ("dw", &w)];
            compare(&ours, &theirs, &vars, tol, &what)?;

            let (nn, s) = fused_add_rms_norm_with(&x, &r, Some(&w), &cfg)?;
            let ours = ((nn * &gy)?.sum_all()? + (s * &gs)?.sum_all()?)?.backward()?;
            let sum = (x.as_tensor() + r.as_tensor())?;
            let theirs =
                ((formula(&sum)? * &gy)?.sum_all()? + (sum * &gs)?.sum_all()?)?.backward()?;
            vars.push(("dres", &r));
            compare(&ours, &theirs, &vars, tol, &format!("fused {what}"))?;
        }
    }
    Ok(())
}
