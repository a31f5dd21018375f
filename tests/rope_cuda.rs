//! `rms_norm_rope` / `qk_rms_norm_rope` on CUDA: the case matrix of `common::rope_cases` with
//! `Backend::Cuda` against the f64 reference; the CUDA results against the CPU backend's;
//! bitwise determinism; a q of more than 2^31 elements (sampled rows against the reference).
//! Compiled only with feature `cuda`; every test prints "skipped: no CUDA device" and passes
//! when no device can be opened. Cases without elements are left to the CPU suite (Candle's
//! CUDA backend cannot allocate an empty tensor).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_rmsnorm::{
    rms_norm_rope, Backend, HeadLayout, NormConfig, NormScope, RopeConfig, RopeStyle,
};
use common::rope_cases::{check_against_cpu, rope_matrix, run_rope_cases, RopeCase, RopeGroup};
use common::rope_reference::{check_rope, rope_reference, Geometry};
use common::{quantize, randn, rng, tensor, values, Opts};

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

/// The matrix's cases that have elements.
fn cases() -> Vec<RopeCase> {
    rope_matrix()
        .into_iter()
        .filter(|c| c.has_elements())
        .collect()
}

fn group(g: RopeGroup) -> Result<()> {
    let dev = gpu_or_skip!();
    let cases = cases();
    run_rope_cases(&dev, Backend::Cuda, cases.iter().filter(|c| c.group == g)).map(|_| ())
}

#[test]
fn core() -> Result<()> {
    group(RopeGroup::Core)
}

#[test]
fn options() -> Result<()> {
    group(RopeGroup::Options)
}

#[test]
fn extremes() -> Result<()> {
    group(RopeGroup::Extremes)
}

/// Each backend is within one bound of the reference, so the two within two bounds of each
/// other (NaN in the same places).
#[test]
fn matches_cpu_backend() -> Result<()> {
    check_against_cpu(&gpu_or_skip!(), Backend::Cuda)
}

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(values(t)?.iter().map(|v| v.to_bits()).collect())
}

/// Two runs give the same bits: every case of the matrix, and a model-sized tensor.
#[test]
fn deterministic() -> Result<()> {
    let dev = gpu_or_skip!();
    for c in cases() {
        let inp = c.inputs();
        let (a, b) = (
            c.run(&dev, Backend::Cuda, &inp)?,
            c.run(&dev, Backend::Cuda, &inp)?,
        );
        for (a, b) in a.iter().zip(&b) {
            assert!(bits(a)? == bits(b)?, "{}", c.describe());
        }
    }
    let (heads, d, seq) = (40, 128, 1024);
    let x = Tensor::randn(0f32, 1.0, (2, seq, heads * d), &dev)?.to_dtype(DType::BF16)?;
    let cos = Tensor::randn(0f32, 0.7, (seq, d / 2), &dev)?;
    let sin = Tensor::randn(0f32, 0.7, (seq, d / 2), &dev)?;
    let cfg = RopeConfig::new(heads, NormConfig::new(1e-6).with_backend(Backend::Cuda));
    let a = rms_norm_rope(&x, None, &cos, &sin, &cfg)?;
    let b = rms_norm_rope(&x, None, &cos, &sin, &cfg)?;
    assert!(bits(&a)? == bits(&b)?, "bf16 [2, {seq}, {}]", heads * d);
    Ok(())
}

/// A bf16 q of more than 2^31 elements (about 4.3 GB, and as much written; an f32 draw of
/// 8.6 GB on the way): rows at the start, around the output offset 2^31 of the last head,
/// around the input offset 2^31 and at the end, against the reference on those rows.
#[test]
fn over_2_31_elements() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, _) = rng();
    let (heads, d) = (40usize, 128usize);
    let (dim, half) = (heads * d, d / 2);
    let seq = (1usize << 31) / dim + 8;
    assert!(seq * dim > 1 << 31);
    let g = Geometry {
        batch: 1,
        seq: 1,
        heads,
        head_dim: d,
        scope: NormScope::Full,
        style: RopeStyle::Interleaved,
        layout: HeadLayout::Bhld,
    };
    let q = Tensor::randn(0f32, 1.0, (1, seq, dim), &dev)?.to_dtype(DType::BF16)?;
    let w = quantize(&randn(&mut rng, dim, 1.0), DType::F32);
    // The usual frequencies: angle l * 10000^(-i / half).
    let angle = |l: usize, i: usize| l as f64 * 1e4f64.powf(-(i as f64) / half as f64);
    let table = |f: fn(f64) -> f64| -> Vec<f64> {
        let v = (0..seq * half).map(|j| f(angle(j / half, j % half)));
        quantize(&v.collect::<Vec<_>>(), DType::F32)
    };
    let (cos, sin) = (table(f64::cos), table(f64::sin));
    let place = |v: &[f64], dims: &[usize]| tensor(v, dims, DType::F32)?.to_device(&dev);
    let cfg = RopeConfig::new(heads, NormConfig::new(1e-6).with_backend(Backend::Cuda));
    let out = rms_norm_rope(
        &q,
        Some(&place(&w, &[dim])?),
        &place(&cos, &[seq, half])?,
        &place(&sin, &[seq, half])?,
        &cfg,
    )?;
    assert_eq!(out.dims(), &[1, heads, seq, d]);
    // The last head's output passes offset 2^31 at this position.
    let out_wrap = (1usize << 31) / d - (heads - 1) * seq;
    let input_wrap = (1usize << 31) / dim;
    for l in [
        0,
        1,
        out_wrap - 1,
        out_wrap,
        out_wrap + 1,
        input_wrap,
        input_wrap + 1,
        seq - 1,
    ] {
        // Small copies on the device first (a view would take the whole storage to the host).
        let x = values(&q.i((.., l..l + 1, ..))?.to_dtype(DType::F32)?)?;
        let got = values(&out.i((.., .., l..l + 1, ..))?.to_dtype(DType::F32)?)?;
        let rows = l * half..(l + 1) * half;
        let (c, s) = (&cos[rows.clone()], &sin[rows]);
        let want = rope_reference(DType::BF16, &x, Some(&w), c, s, &g, &Opts::new(1e-6));
        check_rope(
            &format!("position {l} of [1, {seq}, {dim}] bf16"),
            DType::BF16,
            &got,
            &want,
        );
    }
    Ok(())
}
