//! The in-place ops on the CPU: the case matrix against the f64 reference and bitwise against
//! the out-of-place ops (CPU path and the portable backend), writes confined to the target's
//! rows, and the errors of what cannot be written in place.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor, Var};
use candle_rmsnorm::{
    fused_add_rms_norm_inplace, fused_add_rms_norm_inplace_with, fused_add_rms_norm_with,
    keep_memory_pool, residual_pair, rms_norm_inplace, rms_norm_inplace_with, rms_norm_with,
    Backend, NormConfig,
};
use common::*;

fn cpu(backend: Backend) -> InPlace {
    InPlace {
        device: Device::Cpu,
        backend,
    }
}

#[test]
fn matrix_against_reference() -> Result<()> {
    run_cases(&cpu(Backend::Cpu), &matrix())?;
    run_cases(&cpu(Backend::Candle), &matrix()).map(|_| ())
}

#[test]
fn bitwise_equal_to_out_of_place() -> Result<()> {
    for backend in [Backend::Cpu, Backend::Candle] {
        let api = Api::new(&Device::Cpu, backend);
        run_bitwise(&api, &cpu(backend), &matrix())?;
    }
    Ok(())
}

/// The bits of a bf16 tensor, row-major.
fn bits(t: &Tensor) -> Result<Vec<u16>> {
    let v = t.flatten_all()?.to_vec1::<half::bf16>()?;
    Ok(v.iter().map(|v| v.to_bits()).collect())
}

/// A row-strided view is written in its rows only: every element outside it keeps its bits,
/// and the view holds what the out-of-place op returns.
#[test]
fn writes_stay_inside_the_view() -> Result<()> {
    let dev = Device::Cpu;
    let dims = (6, 10, 40);
    let base = Tensor::randn(0f32, 1., dims, &dev)?.to_dtype(DType::BF16)?;
    let w = Tensor::randn(1f32, 0.1, 33, &dev)?;
    let view = |t: &Tensor| -> Result<Tensor> { t.i(1..5)?.narrow(2, 3, 33) };
    // The CPU path (the portable backend writes only contiguous targets: see below).
    let cpu = NormConfig::new(1e-6).with_backend(Backend::Cpu);
    let want = rms_norm_with(&view(&base)?, Some(&w), &cpu)?;
    let b = base.copy()?;
    rms_norm_inplace_with(&view(&b)?, Some(&w), &cpu)?;
    assert_eq!(bits(&view(&b)?)?, bits(&want)?);
    let idx = Tensor::arange(0u32, 6 * 10 * 40, &dev)?.reshape(dims)?;
    let inside: std::collections::BTreeSet<u32> = view(&idx)?
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .collect();
    assert_eq!(inside.len(), 4 * 10 * 33);
    let (before, after) = (bits(&base)?, bits(&b)?);
    let changed_outside = (0..before.len())
        .filter(|&i| !inside.contains(&(i as u32)) && before[i] != after[i])
        .count();
    assert_eq!(changed_outside, 0, "elements outside the view changed");
    Ok(())
}

/// The fused op on a pair, several layers in a row as a transformer's residual stream: each step
/// equals the out-of-place op. On the CPU path the pair's rows are strided (a column range of a
/// wider buffer) and the columns around it keep their values; the portable backend, which writes
/// only contiguous targets, gets a contiguous pair and refuses the strided one.
#[test]
fn residual_stream_over_layers() -> Result<()> {
    let dev = Device::Cpu;
    let (rows, hidden) = (37, 96);
    for backend in [Backend::Cpu, Backend::Candle] {
        let cfg = NormConfig::new(1e-5).with_backend(backend);
        let wide = Tensor::randn(0f32, 1., (2, rows, hidden + 8), &dev)?;
        let edges = |t: &Tensor| -> Result<Vec<f32>> {
            let l = t.narrow(2, 0, 4)?.flatten_all()?.to_vec1::<f32>()?;
            let r = t
                .narrow(2, hidden + 4, 4)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok([l, r].concat())
        };
        let edges_before = edges(&wide)?;
        let strided = wide.narrow(2, 4, hidden)?;
        let pair = match backend {
            Backend::Cpu => strided,
            _ => {
                let xs = Tensor::zeros((rows, hidden), DType::F32, &dev)?;
                let w = Tensor::ones(hidden, DType::F32, &dev)?;
                let r = fused_add_rms_norm_inplace_with(&strided, &xs, Some(&w), &cfg);
                let e = r
                    .expect_err("a strided pair on the portable backend")
                    .to_string();
                assert!(e.contains("pair") && e.contains("contiguous"), "{e}");
                strided.contiguous()?
            }
        };
        let mut residual = pair.get(1)?.contiguous()?;
        for layer in 0..4 {
            let xs = Tensor::randn(0f32, 1., (rows, hidden), &dev)?;
            let w = Tensor::randn(1f32, 0.2, hidden, &dev)?;
            let (normed, sum) = fused_add_rms_norm_with(&xs, &residual, Some(&w), &cfg)?;
            fused_add_rms_norm_inplace_with(&pair, &xs, Some(&w), &cfg)?;
            let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            assert_eq!(
                v(&pair.get(0)?)?,
                v(&normed)?,
                "{backend} layer {layer} normed"
            );
            assert_eq!(v(&pair.get(1)?)?, v(&sum)?, "{backend} layer {layer} sum");
            residual = sum;
        }
        assert_eq!(edges(&wide)?, edges_before);
    }
    Ok(())
}

#[test]
fn empty_tensors_are_fine() -> Result<()> {
    let dev = Device::Cpu;
    let xs = Tensor::zeros((0, 16), DType::F32, &dev)?;
    let w = Tensor::ones(16, DType::F32, &dev)?;
    rms_norm_inplace(&xs, &w, 1e-6)?;
    fused_add_rms_norm_inplace(&residual_pair(&xs)?, &xs, &w, 1e-6)
}

fn err_text(r: Result<()>) -> String {
    match r {
        Ok(()) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn what_cannot_be_written_in_place() -> Result<()> {
    let dev = Device::Cpu;
    let xs = Tensor::randn(0f32, 1., (4, 16), &dev)?;
    let w = Tensor::ones(16, DType::F32, &dev)?;
    let op = "candle_rmsnorm::rms_norm_inplace";
    let fop = "candle_rmsnorm::fused_add_rms_norm_inplace";

    let var = Var::from_tensor(&xs)?;
    let e = err_text(rms_norm_inplace(var.as_tensor(), &w, 1e-6));
    assert!(
        e.contains(op) && e.contains("xs") && e.contains("autograd"),
        "{e}"
    );

    let t = Tensor::randn(0f32, 1., (16, 4), &dev)?.t()?;
    let e = err_text(rms_norm_inplace(&t, &w, 1e-6));
    assert!(
        e.contains("contiguous last dimension") && e.contains("strides"),
        "{e}"
    );

    let both = Tensor::randn(0f32, 1., (2, 16), &dev)?;
    let e = err_text(rms_norm_inplace(&both.get(0)?, &both.get(1)?, 1e-6));
    assert!(e.contains("weight") && e.contains("share storage"), "{e}");

    let e = err_text(fused_add_rms_norm_inplace(&xs, &xs, &w, 1e-6));
    assert!(
        e.contains(fop) && e.contains("pair") && e.contains("[2, 4, 16]"),
        "{e}"
    );

    let pair = residual_pair(&xs)?.to_dtype(DType::F16)?;
    let e = err_text(fused_add_rms_norm_inplace(&pair, &xs, &w, 1e-6));
    assert!(
        e.contains("pair") && e.contains("F32") && e.contains("F16"),
        "{e}"
    );

    let pair = residual_pair(&xs)?;
    let e = err_text(fused_add_rms_norm_inplace(&pair, &pair.get(0)?, &w, 1e-6));
    assert!(
        e.contains("xs") && e.contains("share storage with pair"),
        "{e}"
    );

    let e = err_text(rms_norm_inplace(&xs, &w, -1.0));
    assert!(e.contains("eps"), "{e}");
    Ok(())
}

/// `keep_memory_pool` has nothing to keep on the CPU: it succeeds and changes no result.
#[test]
fn keep_memory_pool_is_a_no_op_on_the_cpu() -> Result<()> {
    let x = Tensor::randn(0f32, 1.0, (3, 64), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 1.0, 64, &Device::Cpu)?;
    let before = candle_rmsnorm::rms_norm(&x, &w, 1e-6)?.to_vec2::<f32>()?;
    keep_memory_pool(&Device::Cpu)?;
    let after = candle_rmsnorm::rms_norm(&x, &w, 1e-6)?.to_vec2::<f32>()?;
    assert_eq!(before, after);
    Ok(())
}
