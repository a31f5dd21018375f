//! `rms_norm_quant` / `fused_add_rms_norm_quant` on CUDA (`Backend::Cuda`). The kernels may sum
//! squares in another order than the GPU's `rms_norm`, so `y` can differ in its last bit from
//! it: exactness is checked on inputs whose `y` is exact (`check_constructed`), everything else
//! against the f64 reference (`run_qcases` without the exact part, `check_rows_within`): the
//! CPU suite's sizes, options, shapes, extremes and views, a bf16 input of more than 2^31
//! elements and a 75600 x 5120 one (sampled rows); views against contiguous copies and
//! determinism bit for bit.
//! Compiled only with feature `cuda`; every test prints "skipped: no CUDA device" and passes
//! when no device can be opened. Cases without elements are left to the CPU suite (Candle's
//! CUDA backend cannot allocate an empty tensor).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm_quant, rms_norm_quant, Backend, NormConfig, QuantConfig, QuantDType,
};
use common::cases::Group;
use common::quant_cases::{
    clamp_cases, draw_scale, group_cases, quant_configs, run_qcases, size_cases, QCase, QTarget,
};
use common::quant_checks::{check_rows_within, codes, f32s, same_bits};
use common::quant_inputs::{check_constructed, check_views};
use common::{quantize, randn, reference, rng, tensor, values, Opts, DTYPES};
use rand::Rng;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

macro_rules! gpu_or_skip {
    () => {
        match gpu() {
            Some(d) => d,
            None => return Ok(()),
        }
    };
}

/// Codes and scales bit for bit the reference quantisation of an exact `y`.
#[test]
fn constructed_inputs_exact() -> Result<()> {
    let dev = gpu_or_skip!();
    let shapes = [
        (1, 1),
        (3, 7),
        (37, 100),
        (64, 257),
        (5, 4099),
        (1000, 64),
        (300, 5120),
        (4, 20000),
        (2, 65537),
    ];
    check_constructed(&dev, Backend::Cuda, &shapes)
}

/// Runs the `cases` with elements on the GPU against the f64 reference; every quantisation
/// (`all`) or one a case.
fn run(cases: &[QCase], all: bool) -> Result<()> {
    let t = QTarget {
        device: gpu_or_skip!(),
        backend: Backend::Cuda,
    };
    run_qcases(&t, cases, all, false, false)
}

#[test]
fn sizes() -> Result<()> {
    for dt in DTYPES {
        run(&size_cases(dt), true)?;
    }
    Ok(())
}

#[test]
fn clamp_norm() -> Result<()> {
    run(&clamp_cases(), true)
}

#[test]
fn matrix_options() -> Result<()> {
    run(&group_cases(Group::Options), false)
}

#[test]
fn matrix_shapes() -> Result<()> {
    run(&group_cases(Group::Shapes), false)
}

#[test]
fn matrix_extremes() -> Result<()> {
    run(&group_cases(Group::Extremes), false)
}

#[test]
fn matrix_views() -> Result<()> {
    run(&group_cases(Group::Views), false)
}

/// Views read in place give the bits of their contiguous copies.
#[test]
fn views_equal_contiguous_copies() -> Result<()> {
    check_views(&gpu_or_skip!(), Backend::Cuda, false)
}

/// Row `r` of a `[_, h]` float tensor on the device as f64 values (a conversion on the device
/// copies the row only; a view would take the whole storage to the host).
fn row_values(t: &Tensor, r: usize) -> Result<Vec<f64>> {
    values(&t.narrow(0, r, 1)?.to_dtype(DType::F32)?)
}

/// A bf16 `[rows, h]` input on the GPU, both ops with every quantisation, checked on the rows
/// `sample` against the f64 reference (and the fused sum `x + x = 2x` bit for bit).
fn large(dev: &Device, rows: usize, h: usize, sample: &[usize]) -> Result<()> {
    let (mut rng, _) = rng();
    let x = Tensor::randn(0f32, 1.0, (rows, h), dev)?.to_dtype(DType::BF16)?;
    let w = quantize(&randn(&mut rng, h, 1.0), DType::F32);
    let wt = tensor(&w, &[h], DType::F32)?.to_device(dev)?;
    let cfg = NormConfig::new(1e-6).with_backend(Backend::Cuda);
    let opts = Opts::new(1e-6);
    for quant in quant_configs(draw_scale(&mut rng)) {
        let q = rms_norm_quant(&x, Some(&wt), &cfg, &quant)?;
        let (fq, sum) = fused_add_rms_norm_quant(&x, &x, Some(&wt), &cfg, &quant)?;
        assert_eq!(
            (q.values.dims(), q.scales.dims()),
            (&[rows, h][..], &[rows, 1][..])
        );
        let scales = f32s(&q.scales)?;
        let fscales = f32s(&fq.scales)?;
        // The codes as bytes on the host, once a tensor (Candle's CUDA build may lack its fp8
        // conversion kernels: nothing fp8 is computed on the device here).
        let (qcodes, fcodes) = (codes(&q.values)?, codes(&fq.values)?);
        for &r in sample {
            let what = format!("row {r} of bf16 [{rows}, {h}] {quant:?}");
            let xr = row_values(&x, r)?;
            let want = reference(DType::BF16, &xr, None, Some(&w), h, &opts);
            let row = r * h..(r + 1) * h;
            check_rows_within(
                &what,
                &quant,
                DType::BF16,
                h,
                &qcodes[row.clone()],
                &scales[r..=r],
                &want.normed,
            );
            let x2: Vec<f64> = xr.iter().map(|v| 2.0 * v).collect();
            let want = reference(DType::BF16, &x2, None, Some(&w), h, &opts);
            let what = format!("fused {what}");
            check_rows_within(
                &what,
                &quant,
                DType::BF16,
                h,
                &fcodes[row],
                &fscales[r..=r],
                &want.normed,
            );
            assert!(row_values(&sum, r)? == x2, "{what}: sum");
        }
    }
    Ok(())
}

/// More than 2^31 elements: rows at the start, around element 2^31 and at the end.
#[test]
fn over_2_31_elements() -> Result<()> {
    let dev = gpu_or_skip!();
    let (rows, h) = ((1usize << 20) + 3, 2049usize);
    assert!(rows * h > 1 << 31);
    let wrap = (1usize << 31) / h;
    large(
        &dev,
        rows,
        h,
        &[0, 1, wrap - 1, wrap, wrap + 1, rows - 2, rows - 1],
    )
}

/// A video model's activations: 75600 x 5120, 64 random rows and the ends.
#[test]
fn wan_sized() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, _) = rng();
    let rows = 75600;
    let mut sample: Vec<usize> = (0..64).map(|_| rng.gen_range(0..rows)).collect();
    sample.extend([0, rows - 1]);
    large(&dev, rows, 5120, &sample)
}

/// Two runs give the same bits (scales included).
#[test]
fn deterministic() -> Result<()> {
    let dev = gpu_or_skip!();
    let x = Tensor::randn(0f32, 1.0, (4096, 5120), &dev)?.to_dtype(DType::BF16)?;
    let cfg = NormConfig::new(1e-6).with_backend(Backend::Cuda);
    for quant in [
        QuantConfig::new(QuantDType::F8E4M3),
        QuantConfig::new(QuantDType::I8),
    ] {
        let a = rms_norm_quant(&x, None, &cfg, &quant)?;
        let b = rms_norm_quant(&x, None, &cfg, &quant)?;
        assert!(codes(&a.values)? == codes(&b.values)?, "{quant:?}: values");
        assert!(same_bits(&a.scales, &b.scales)?, "{quant:?}: scales");
    }
    Ok(())
}
