//! Every kind of bad input returns a `candle_core::Error` naming the function, the argument,
//! what was expected and what was given; nothing panics.

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm, fused_add_rms_norm_with, rms_norm, rms_norm_with, Backend, NormConfig,
};

fn dev() -> Device {
    Device::Cpu
}

/// The error text, which must mention every needle.
fn expect_err<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) {
    let msg = match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
}

#[test]
fn weight_length_and_rank() -> Result<()> {
    let x = Tensor::zeros((2, 8), DType::F32, &dev())?;
    let w7 = Tensor::ones(7, DType::F32, &dev())?;
    expect_err(
        rms_norm(&x, &w7, 1e-6),
        &["rms_norm", "weight", "[8]", "[7]"],
    );
    let w2 = Tensor::ones((1, 8), DType::F32, &dev())?;
    expect_err(
        rms_norm(&x, &w2, 1e-6),
        &["rms_norm", "weight", "[8]", "[1, 8]"],
    );
    let r = x.clone();
    expect_err(
        fused_add_rms_norm(&x, &r, &w7, 1e-6),
        &["fused_add_rms_norm", "weight", "[7]"],
    );
    Ok(())
}

#[test]
fn residual_shape_dtype() -> Result<()> {
    let x = Tensor::zeros((2, 8), DType::F32, &dev())?;
    let w = Tensor::ones(8, DType::F32, &dev())?;
    let r = Tensor::zeros((3, 8), DType::F32, &dev())?;
    expect_err(
        fused_add_rms_norm(&x, &r, &w, 1e-6),
        &["fused_add_rms_norm", "residual", "[2, 8]", "[3, 8]"],
    );
    let r = Tensor::zeros((2, 8), DType::BF16, &dev())?;
    expect_err(
        fused_add_rms_norm(&x, &r, &w, 1e-6),
        &["residual", "F32", "BF16"],
    );
    Ok(())
}

#[test]
fn integer_dtypes_and_rank_zero() -> Result<()> {
    let w = Tensor::ones(4, DType::F32, &dev())?;
    for dt in [DType::U8, DType::U32, DType::I64] {
        let x = Tensor::zeros((2, 4), dt, &dev())?;
        expect_err(
            rms_norm(&x, &w, 1e-6),
            &[
                "rms_norm",
                "xs",
                "f32, f16, bf16 or f64",
                &format!("{dt:?}"),
            ],
        );
        let xf = Tensor::zeros((2, 4), DType::F32, &dev())?;
        let wi = Tensor::zeros(4, dt, &dev())?;
        expect_err(rms_norm(&xf, &wi, 1e-6), &["weight", &format!("{dt:?}")]);
    }
    let x0 = Tensor::new(3f32, &dev())?;
    expect_err(
        rms_norm(&x0, &w, 1e-6),
        &["rms_norm", "xs", "rank >= 1", "rank-0"],
    );
    expect_err(
        fused_add_rms_norm(&x0, &x0, &w, 1e-6),
        &["fused_add_rms_norm", "rank-0"],
    );
    Ok(())
}

#[test]
fn eps_negative_nan_infinite() -> Result<()> {
    let x = Tensor::zeros((2, 4), DType::F32, &dev())?;
    let w = Tensor::ones(4, DType::F32, &dev())?;
    expect_err(
        rms_norm(&x, &w, -1e-6),
        &["rms_norm", "eps", ">= 0", "-0.000001"],
    );
    expect_err(rms_norm(&x, &w, f32::NAN), &["eps", "NaN"]);
    expect_err(rms_norm(&x, &w, f32::INFINITY), &["eps", "inf"]);
    expect_err(
        fused_add_rms_norm(&x, &x, &w, f32::NAN),
        &["fused_add_rms_norm", "eps"],
    );
    Ok(())
}

#[test]
fn backends_not_built_or_not_matching() -> Result<()> {
    let x = Tensor::zeros((2, 4), DType::F32, &dev())?;
    #[cfg(not(feature = "cuda"))]
    expect_err(
        rms_norm_with(&x, None, &NormConfig::new(1e-6).with_backend(Backend::Cuda)),
        &["rms_norm", "cuda", "feature `cuda`"],
    );
    #[cfg(feature = "cuda")]
    expect_err(
        rms_norm_with(&x, None, &NormConfig::new(1e-6).with_backend(Backend::Cuda)),
        &["rms_norm", "xs", "CUDA device", "Cpu"],
    );
    let rocm = fused_add_rms_norm_with(
        &x,
        &x,
        None,
        &NormConfig::new(1e-6).with_backend(Backend::Rocm),
    );
    #[cfg(not(feature = "rocm"))]
    expect_err(rocm, &["fused_add_rms_norm", "rocm", "feature `rocm`"]);
    // Built with ROCm: without an AMD GPU (or the HIP runtime) the request fails and says
    // which op it was; with one, it runs.
    #[cfg(feature = "rocm")]
    match rocm {
        Ok((n, s)) => assert_eq!((n.dims(), s.dims()), (&[2usize, 4][..], &[2usize, 4][..])),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fused_add_rms_norm"), "{msg}");
        }
    }
    Ok(())
}

#[test]
fn backend_names_parse() {
    for (s, b) in [
        ("auto", Backend::Auto),
        (" CPU ", Backend::Cpu),
        ("cuda", Backend::Cuda),
        ("rocm", Backend::Rocm),
        ("Candle", Backend::Candle),
        ("portable", Backend::Candle),
    ] {
        assert_eq!(Backend::parse(s).unwrap(), b);
    }
    let e = Backend::parse("tpu").unwrap_err().to_string();
    assert!(
        e.contains("auto, cpu, cuda, rocm, candle") && e.contains("tpu"),
        "{e}"
    );
}

#[test]
fn empty_hidden_and_rows_are_not_errors() -> Result<()> {
    let x = Tensor::zeros((3, 0), DType::F32, &dev())?;
    let w = Tensor::zeros(0, DType::F32, &dev())?;
    assert_eq!(rms_norm(&x, &w, 1e-6)?.dims(), &[3, 0]);
    let x = Tensor::zeros((0, 5), DType::BF16, &dev())?;
    let w = Tensor::zeros(5, DType::BF16, &dev())?;
    let (a, b) = fused_add_rms_norm(&x, &x, &w, 1e-6)?;
    assert_eq!((a.dims(), b.dims()), (&[0usize, 5][..], &[0usize, 5][..]));
    Ok(())
}

#[test]
fn variance_size_out_of_range() -> Result<()> {
    let x = Tensor::zeros((2, 8), DType::F32, &dev())?;
    let w = Tensor::ones(8, DType::F32, &dev())?;
    for n in [0usize, 9] {
        let cfg = NormConfig::new(1e-6).with_variance_size(n);
        let given = n.to_string();
        expect_err(
            rms_norm_with(&x, Some(&w), &cfg),
            &["rms_norm", "variance_size", "1..=8", &given],
        );
        expect_err(
            fused_add_rms_norm_with(&x, &x, None, &cfg),
            &["fused_add_rms_norm", "variance_size", "1..=8", &given],
        );
        let module = candle_rmsnorm::RmsNorm::with_config(Some(w.clone()), cfg);
        expect_err(
            candle_core::Module::forward(&module, &x),
            &["variance_size", &given],
        );
    }
    // In range: every n of 1..=8 runs.
    for n in 1..=8 {
        rms_norm_with(&x, Some(&w), &NormConfig::new(1e-6).with_variance_size(n))?;
    }
    Ok(())
}

#[test]
fn dim_out_of_range_wrong_weight_and_in_place() -> Result<()> {
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev())?;
    let cfg = NormConfig::new(1e-6).with_dim(3);
    expect_err(
        rms_norm_with(&x, None, &cfg),
        &["rms_norm", "dim", "rank", "3"],
    );
    expect_err(
        fused_add_rms_norm_with(&x, &x, None, &cfg),
        &["fused_add_rms_norm", "dim", "3"],
    );
    // The weight has the size of the dimension normalised over.
    let w = Tensor::ones(4, DType::F32, &dev())?;
    let cfg = NormConfig::new(1e-6).with_dim(1);
    expect_err(
        rms_norm_with(&x, Some(&w), &cfg),
        &["weight", "[3]", "dim 1", "shape [4]"],
    );
    expect_err(
        rms_norm_with(&x, None, &cfg.with_variance_size(4)),
        &["variance_size", "1..=3", "dim 1"],
    );
    // The in-place ops normalise over the last dimension only.
    let t = x.copy()?;
    expect_err(
        candle_rmsnorm::rms_norm_inplace_with(&t, None, &cfg),
        &["rms_norm", "dim", "in-place", "1"],
    );
    let pair = candle_rmsnorm::residual_pair(&x)?;
    expect_err(
        candle_rmsnorm::fused_add_rms_norm_inplace_with(&pair, &x, None, &cfg),
        &["fused_add_rms_norm", "dim", "in-place"],
    );
    // The last dim named explicitly is the default.
    let a = rms_norm_with(&x, None, &NormConfig::new(1e-6).with_dim(2))?;
    let b = rms_norm_with(&x, None, &NormConfig::new(1e-6))?;
    assert_eq!(a.to_vec3::<f32>()?, b.to_vec3::<f32>()?);
    Ok(())
}
