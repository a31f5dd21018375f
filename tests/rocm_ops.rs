//! The quantised ops and q/k norm + RoPE on ROCm (feature `rocm`): `Backend::Rocm` on host
//! tensors and the device-resident `rocm::{rms_norm_quant, fused_add_rms_norm_quant,
//! rms_norm_rope, qk_rms_norm_rope}`.
//!
//! Runs everywhere: without an AMD GPU, every op with `Backend::Rocm` fails with the clear
//! "backend rocm is unavailable ... no AMD GPU" error the norms give (`tests/rocm.rs`).
//! Runs only with an AMD GPU (and says "SKIPPED" otherwise): the RoPE case matrix
//! (`common::rope_cases`) and the quantised cases (`common::quant_cases`, the constructed exact
//! inputs, views) through the host-staged ops against the f64 reference, the CPU backend's
//! results, and the device-resident API bit for bit against the host-staged ops.
#![cfg(feature = "rocm")]

mod common;

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::rocm::{self, RocmDevice, RocmTensor};
use candle_rmsnorm::{
    fused_add_rms_norm_quant, qk_rms_norm_rope, rms_norm_quant, rms_norm_rope, Backend, NormConfig,
    QuantConfig, QuantDType, RopeConfig,
};
use common::cases::Group;
use common::quant_cases::{clamp_cases, group_cases, run_qcases, size_cases, QTarget};
use common::quant_checks::{codes, same_bits};
use common::quant_inputs::{check_constructed, check_views};
use common::rocm_gpu::gpu;
use common::rope_cases::{check_against_cpu, rope_matrix, run_rope_cases, RopeCase, RopeGroup};
use common::views::RopeView;
use common::{values, DTYPES};

macro_rules! gpu_or_skip {
    ($what:expr) => {
        match gpu() {
            Some(d) => d,
            None => {
                println!("SKIPPED {}: no AMD GPU visible to the HIP runtime", $what);
                return Ok(());
            }
        }
    };
}

fn assert_unavailable(e: candle_core::Error, op: &str) {
    let e = e.to_string();
    assert!(
        e.contains(op) && e.contains("backend rocm is unavailable") && e.contains("no AMD GPU"),
        "{e}"
    );
}

#[test]
fn rocm_without_device_errors_cleanly() -> Result<()> {
    if gpu().is_some() {
        println!("not applicable: an AMD GPU is present");
        return Ok(());
    }
    let cpu = Device::Cpu;
    let cfg = NormConfig::new(1e-6).with_backend(Backend::Rocm);
    let x = Tensor::randn(0f32, 1., (3, 64), &cpu)?.to_dtype(DType::BF16)?;
    let w = Tensor::ones(64, DType::F32, &cpu)?;
    for quant in [
        QuantConfig::new(QuantDType::F8E4M3),
        QuantConfig::new(QuantDType::I8).with_static_scale(0.05),
    ] {
        let e = rms_norm_quant(&x, Some(&w), &cfg, &quant).unwrap_err();
        assert_unavailable(e, "rms_norm_quant");
        let e = fused_add_rms_norm_quant(&x, &x, None, &cfg, &quant).unwrap_err();
        assert_unavailable(e, "fused_add_rms_norm_quant");
    }
    // The option checks come first: a bad static scale is named, device or not.
    let bad = QuantConfig::new(QuantDType::I8).with_static_scale(-1.0);
    let e = rms_norm_quant(&x, None, &cfg, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("scale must be finite and > 0"), "{e}");
    let q = Tensor::randn(0f32, 1., (2, 5, 4 * 16), &cpu)?;
    let cos = Tensor::ones((5, 8), DType::F32, &cpu)?;
    let sin = Tensor::zeros((5, 8), DType::F32, &cpu)?;
    let rcfg = RopeConfig::new(4, cfg);
    // The operand checks come first too: a weight of the wrong length is named.
    let short = Tensor::ones(32, DType::F32, &cpu)?;
    let e = rms_norm_rope(&q, Some(&short), &cos, &sin, &rcfg).unwrap_err();
    assert!(
        e.to_string().contains("weight must be of shape [64]"),
        "{e}"
    );
    let e = rms_norm_rope(&q, Some(&w), &cos, &sin, &rcfg).unwrap_err();
    assert_unavailable(e, "rms_norm_rope");
    let e = qk_rms_norm_rope(&q, &q, None, None, &cos, &sin, &rcfg).unwrap_err();
    assert_unavailable(e, "rms_norm_rope");
    // Auto keeps host tensors on the CPU path.
    let auto = RopeConfig::new(4, NormConfig::new(1e-6));
    rms_norm_rope(&q, None, &cos, &sin, &auto)?;
    rms_norm_quant(
        &x,
        None,
        &NormConfig::new(1e-6),
        &bad.with_static_scale(0.5),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// q/k norm + RoPE with an AMD GPU.

fn rope_group(g: RopeGroup, what: &str) -> Result<()> {
    gpu_or_skip!(what);
    let cases = rope_matrix();
    run_rope_cases(
        &Device::Cpu,
        Backend::Rocm,
        cases.iter().filter(|c| c.group == g),
    )
    .map(|_| ())
}

#[test]
fn rope_core() -> Result<()> {
    rope_group(RopeGroup::Core, "rope_core")
}

#[test]
fn rope_options() -> Result<()> {
    rope_group(RopeGroup::Options, "rope_options")
}

#[test]
fn rope_extremes() -> Result<()> {
    rope_group(RopeGroup::Extremes, "rope_extremes")
}

/// Each backend within one bound of the reference, so the two within two bounds of each other.
#[test]
fn rope_matches_cpu_backend() -> Result<()> {
    gpu_or_skip!("rope_matches_cpu_backend");
    check_against_cpu(&Device::Cpu, Backend::Rocm)
}

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(values(t)?.iter().map(|v| v.to_bits()).collect())
}

/// The device-resident API on one case's contiguous inputs (weights and tables converted to
/// the compute dtype on the host, as the public API converts them): q's output (and k's).
fn rope_on_device(dev: &RocmDevice, c: &RopeCase) -> Result<Vec<Tensor>> {
    let inp = c.inputs();
    let g = &c.geom;
    let dims = [g.batch, g.seq, g.dim()];
    let cdt = if c.dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let up = |v: &[f64], dt: DType, d: &[usize]| -> Result<RocmTensor> {
        let t = common::tensor(v, d, dt)?;
        RocmTensor::from_tensor(dev, &t.to_dtype(dt)?)
    };
    let side = |v: &[f64], wdt: DType, d: &[usize]| -> Result<RocmTensor> {
        // Rounded to the case's dtype first, then converted, as the public API sees them.
        let t = common::tensor(v, d, wdt)?.to_dtype(cdt)?;
        RocmTensor::from_tensor(dev, &t)
    };
    let weight = |w: &Option<Vec<f64>>| match (w, c.wdtype) {
        (Some(w), Some(wdt)) => side(w, wdt, &[w.len()]).map(Some),
        _ => Ok(None),
    };
    let (wq, wk) = (weight(&inp.wq)?, weight(&inp.wk)?);
    let tdims = [c.table_rows, g.head_dim / 2];
    let (cos, sin) = (
        side(&inp.cos, c.tdtype, &tdims)?,
        side(&inp.sin, c.tdtype, &tdims)?,
    );
    let cfg = c.config(Backend::Rocm);
    let stream = dev.stream()?;
    let q = up(&inp.q, c.dtype, &dims)?;
    if c.qk {
        let k = up(&inp.k, c.dtype, &dims)?;
        let both =
            rocm::qk_rms_norm_rope(&q, &k, wq.as_ref(), wk.as_ref(), &cos, &sin, &cfg, stream)?;
        let t = both.to_tensor()?;
        return Ok(vec![t.get(0)?, t.get(1)?]);
    }
    Ok(vec![rocm::rms_norm_rope(
        &q,
        wq.as_ref(),
        &cos,
        &sin,
        &cfg,
        stream,
    )?
    .to_tensor()?])
}

/// The device-resident API gives the host-staged op's bits (same kernel, same plan) on every
/// contiguous case with elements.
#[test]
fn rope_device_api_matches_host_staged() -> Result<()> {
    let dev = gpu_or_skip!("rope_device_api_matches_host_staged");
    let mut n = 0;
    for c in rope_matrix().iter().filter(|c| c.has_elements()) {
        if c.view != RopeView::Contiguous {
            continue;
        }
        let host = c.run(&Device::Cpu, Backend::Rocm, &c.inputs())?;
        let device = rope_on_device(&dev, c)?;
        for (h, d) in host.iter().zip(&device) {
            assert!(bits(h)? == bits(d)?, "{}", c.describe());
        }
        n += 1;
    }
    println!("{n} cases: the device API equals the host-staged op bit for bit");
    assert!(n > 0);
    Ok(())
}

/// Bad device operands get the public API's messages, and the device API's own.
#[test]
fn rope_device_api_errors() -> Result<()> {
    let dev = gpu_or_skip!("rope_device_api_errors");
    let stream = dev.stream()?;
    let up = |t: Tensor| RocmTensor::from_tensor(&dev, &t);
    let q = up(Tensor::randn(0f32, 1., (1, 4, 64), &Device::Cpu)?)?;
    let cos = up(Tensor::ones((4, 8), DType::F32, &Device::Cpu)?)?;
    let cos16 = up(Tensor::ones((4, 8), DType::BF16, &Device::Cpu)?)?;
    let cfg = RopeConfig::new(4, NormConfig::new(1e-6));
    let e = rocm::rms_norm_rope(&q, None, &cos, &cos16, &cfg, stream).unwrap_err();
    assert!(e.to_string().contains("sin must be F32 on device"), "{e}");
    let bad = RopeConfig::new(3, NormConfig::new(1e-6));
    let e = rocm::rms_norm_rope(&q, None, &cos, &cos, &bad, stream).unwrap_err();
    assert!(e.to_string().contains("heads must be a divisor"), "{e}");
    let short = up(Tensor::ones((3, 8), DType::F32, &Device::Cpu)?)?;
    let e = rocm::rms_norm_rope(&q, None, &short, &cos, &cfg, stream).unwrap_err();
    assert!(
        e.to_string().contains("cos must be of shape [>= 4, 8]"),
        "{e}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Quantised outputs with an AMD GPU.

fn host_target() -> QTarget {
    QTarget {
        device: Device::Cpu,
        backend: Backend::Rocm,
    }
}

/// Codes and scales bit for bit the reference quantisation of an exact `y`.
#[test]
fn quant_constructed_inputs_exact() -> Result<()> {
    gpu_or_skip!("quant_constructed_inputs_exact");
    let shapes = [
        (1, 1),
        (3, 7),
        (37, 100),
        (64, 257),
        (5, 4099),
        (300, 5120),
        (2, 65537),
    ];
    check_constructed(&Device::Cpu, Backend::Rocm, &shapes)
}

/// The CPU suite's sizes, options, shapes, extremes and views against the f64 reference (the
/// kernels may sum squares in another order than the ROCm `rms_norm`: not `exact`, as on
/// CUDA), empty tensors too.
#[test]
fn quant_matrix() -> Result<()> {
    gpu_or_skip!("quant_matrix");
    let t = host_target();
    for dt in DTYPES {
        run_qcases(&t, &size_cases(dt), true, false, true)?;
    }
    run_qcases(&t, &clamp_cases(), true, false, true)?;
    for g in [Group::Options, Group::Shapes, Group::Extremes, Group::Views] {
        run_qcases(&t, &group_cases(g), false, false, true)?;
    }
    check_views(&Device::Cpu, Backend::Rocm, false)
}

/// The device-resident quantised ops give the host-staged ops' bits, both formats, dynamic and
/// static scales, with and without a weight, and the fused sum.
#[test]
fn quant_device_api_matches_host_staged() -> Result<()> {
    let dev = gpu_or_skip!("quant_device_api_matches_host_staged");
    let stream = dev.stream()?;
    let cfg = NormConfig::new(1e-6).with_backend(Backend::Rocm);
    for dt in DTYPES {
        for (rows, h) in [(1usize, 1usize), (7, 33), (300, 5120), (3000, 128)] {
            let x = Tensor::randn(0f32, 1., (rows, h), &Device::Cpu)?.to_dtype(dt)?;
            let r = Tensor::randn(0f32, 1., (rows, h), &Device::Cpu)?.to_dtype(dt)?;
            let wdt = if dt == DType::F64 { dt } else { DType::F32 };
            let w = Tensor::randn(0f32, 1., h, &Device::Cpu)?.to_dtype(wdt)?;
            let (xd, rd, wd) = (
                RocmTensor::from_tensor(&dev, &x)?,
                RocmTensor::from_tensor(&dev, &r)?,
                RocmTensor::from_tensor(&dev, &w)?,
            );
            for quant in [
                QuantConfig::new(QuantDType::F8E4M3),
                QuantConfig::new(QuantDType::I8),
                QuantConfig::new(QuantDType::F8E4M3).with_static_scale(0.01),
            ] {
                let what = format!("{dt:?} [{rows}, {h}] {quant:?}");
                let host = rms_norm_quant(&x, Some(&w), &cfg, &quant)?;
                let d = rocm::rms_norm_quant(&xd, Some(&wd), &cfg, &quant, stream)?;
                assert!(
                    codes(&host.values)? == codes(&d.values.to_tensor()?)?,
                    "{what}"
                );
                assert!(
                    same_bits(&host.scales, &d.scales.to_tensor()?)?,
                    "{what}: scales"
                );
                let (host, hsum) = fused_add_rms_norm_quant(&x, &r, None, &cfg, &quant)?;
                let (d, dsum) =
                    rocm::fused_add_rms_norm_quant(&xd, &rd, None, &cfg, &quant, stream)?;
                assert!(
                    codes(&host.values)? == codes(&d.values.to_tensor()?)?,
                    "fused {what}"
                );
                assert!(
                    same_bits(&host.scales, &d.scales.to_tensor()?)?,
                    "fused {what}"
                );
                assert!(same_bits(&hsum, &dsum.to_tensor()?)?, "fused {what}: sum");
            }
        }
    }
    // Option errors as the public API words them.
    let x = RocmTensor::from_tensor(&dev, &Tensor::ones((2, 8), DType::F32, &Device::Cpu)?)?;
    let dim0 = NormConfig::new(1e-6).with_dim(0);
    let q = QuantConfig::new(QuantDType::I8);
    let e = rocm::rms_norm_quant(&x, None, &dim0, &q, stream).unwrap_err();
    assert!(
        e.to_string().contains("quantised outputs are per row"),
        "{e}"
    );
    Ok(())
}
