//! GPU tests of the CUDA kernels: the case matrix (`common::cases`) through the public API with
//! `Backend::Cuda`, and what only CUDA has (tensors over 2^31 elements, poisoned outputs,
//! bitwise determinism, the compute-sanitizer subset, many rows per block, candle_nn on the
//! GPU). Compiled only with feature `cuda`; every test prints "skipped: no CUDA device" and
//! passes when no device can be opened. Output memory is poisoned with all-ones bytes (NaN in
//! every float format) before each launch, so an element the kernel forgot to write shows up
//! as NaN.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{fused_add_rms_norm_with, rms_norm, Backend, NormConfig};
use common::*;

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

/// Fills and frees `bytes` of device memory with all-ones bytes, so Candle's stream-ordered pool
/// hands the same poisoned memory to the next allocation of that size.
fn poison(dev: &Device, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let t = Tensor::full(u32::MAX, bytes.div_ceil(4), dev)?;
    drop(t);
    Ok(())
}

/// The cases `keep` selects, on the GPU, each launch preceded by poisoning its output size.
/// Cases without elements are left to the CPU suite: Candle's CUDA backend allocates every
/// buffer with `cuMemAllocAsync`, which refuses 0 bytes, so no empty tensor exists on a CUDA
/// device to pass in.
fn run_on(dev: &Device, cases: &[Case], keep: impl Fn(&Case) -> bool) -> Result<usize> {
    let hook = |bytes: usize| poison(dev, bytes);
    let api = Api {
        before_call: Some(&hook),
        ..Api::new(dev, Backend::Cuda)
    };
    let has_elements = |c: &Case| c.dims.iter().product::<usize>() > 0;
    run_cases(&api, cases.iter().filter(|c| has_elements(c) && keep(c)))
}

fn matrix_group(group: Group) -> Result<()> {
    let dev = gpu_or_skip!();
    run_on(&dev, &matrix(), |c| c.group == group).map(|_| ())
}

#[test]
fn matrix_sizes() -> Result<()> {
    matrix_group(Group::Sizes)
}

#[test]
fn matrix_options() -> Result<()> {
    matrix_group(Group::Options)
}

#[test]
fn matrix_shapes() -> Result<()> {
    matrix_group(Group::Shapes)
}

#[test]
fn matrix_many_rows() -> Result<()> {
    matrix_group(Group::ManyRows)
}

#[test]
fn matrix_extremes() -> Result<()> {
    matrix_group(Group::Extremes)
}

#[test]
fn matrix_views() -> Result<()> {
    matrix_group(Group::Views)
}

#[test]
fn matrix_variance_size() -> Result<()> {
    matrix_group(Group::VarianceSize)
}

#[test]
fn matrix_dims() -> Result<()> {
    matrix_group(Group::Dims)
}

/// A small part of the matrix covering every kernel and path, cheap enough for
/// compute-sanitizer: the hidden sizes of each code path with the two weight kinds, blocks that
/// take several rows (one after another, and several teams at a time), views in bf16 and f32,
/// and the extreme values (the rescue path).
fn sanitizer_cases(c: &Case) -> bool {
    match c.group {
        Group::Sizes => {
            [1, 7, 128, 130, 1536, 5120, 20000].contains(&c.hidden())
                && (c.wdtype == Some(c.dtype) || c.wdtype == Some(DType::F32))
        }
        Group::ManyRows => c.dims == [3000, 1536] || c.dims == [40000, 64],
        Group::Views => matches!(c.dtype, DType::BF16 | DType::F32),
        Group::Extremes => true,
        Group::VarianceSize | Group::Dims => matches!(c.dtype, DType::BF16 | DType::F32),
        _ => false,
    }
}

#[test]
fn sanitizer_subset() -> Result<()> {
    let dev = gpu_or_skip!();
    let n = run_on(&dev, &matrix(), sanitizer_cases)?;
    println!("sanitizer subset: {n} cases");
    Ok(())
}

/// The same subset through the in-place ops (out = x; the pair's residual half read and
/// overwritten), for compute-sanitizer's racecheck in particular.
#[test]
fn sanitizer_subset_inplace() -> Result<()> {
    let dev = gpu_or_skip!();
    let inplace = InPlace {
        device: dev.clone(),
        backend: Backend::Cuda,
    };
    let cases: Vec<Case> = matrix().into_iter().filter(sanitizer_cases).collect();
    let n = run_cases(&inplace, &cases)?;
    println!("sanitizer subset, in place: {n} cases");
    Ok(())
}

/// Many rows per block: the grid is one wave of blocks, each with an equal share of the rows.
#[test]
fn many_rows_per_block() -> Result<()> {
    let dev = gpu_or_skip!();
    run_on(&dev, &cases::many_rows_per_block(), |_| true).map(|_| ())
}

/// Same inputs, same bits, run after run.
#[test]
fn bitwise_deterministic() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, _) = rng();
    for dt in [DType::BF16, DType::F32] {
        for &h in &[128usize, 5120, 40000] {
            let t = |rng: &mut _, dims: &[usize]| {
                let n = dims.iter().product();
                tensor(&randn(rng, n, 1.0), dims, dt)?.to_device(&dev)
            };
            let (x, r, w) = (
                t(&mut rng, &[64, h])?,
                t(&mut rng, &[64, h])?,
                t(&mut rng, &[h])?,
            );
            let cfg = NormConfig::new(1e-6);
            let bits = |t: &Tensor| -> Result<Vec<u8>> {
                let t = t.to_device(&Device::Cpu)?.flatten_all()?;
                Ok(match dt {
                    DType::BF16 => t
                        .to_vec1::<half::bf16>()?
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                    _ => t
                        .to_vec1::<f32>()?
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                })
            };
            let a = fused_add_rms_norm_with(&x, &r, Some(&w), &cfg)?;
            let b = fused_add_rms_norm_with(&x, &r, Some(&w), &cfg)?;
            assert_eq!(bits(&a.0)?, bits(&b.0)?);
            assert_eq!(bits(&a.1)?, bits(&b.1)?);
            let a = rms_norm(&x, &w, 1e-6)?;
            let b = rms_norm(&x, &w, 1e-6)?;
            assert_eq!(bits(&a)?, bits(&b)?);
        }
    }
    Ok(())
}

/// `Backend::Auto` runs CUDA tensors on the CUDA kernels and agrees with candle_nn.
#[test]
fn auto_backend_matches_candle_nn() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, _) = rng();
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let x = tensor(
            &quantize(&randn(&mut rng, 33 * 1536, 1.0), dt),
            &[33, 1536],
            dt,
        )?;
        let w = tensor(&quantize(&randn(&mut rng, 1536, 1.0), dt), &[1536], dt)?;
        let (x, w) = (x.to_device(&dev)?, w.to_device(&dev)?);
        let ours = rms_norm(&x, &w, 1e-6)?;
        assert!(ours.device().is_cuda());
        let theirs = candle_nn::ops::rms_norm(&x, &w, 1e-6)?;
        let what = format!("vs candle_nn {dt:?}");
        check(
            &what,
            dt,
            Quantity::Normed,
            1536,
            &values(&ours)?,
            &values(&theirs)?,
        );
    }
    Ok(())
}

/// The poisoning really reaches the next allocation (else the other tests prove less).
#[test]
fn poisoning_reaches_outputs() -> Result<()> {
    let dev = gpu_or_skip!();
    let n = 1 << 20;
    poison(&dev, n * 4)?;
    let Device::Cuda(cd) = &dev else {
        unreachable!()
    };
    // SAFETY: the slice is only read back, to see what the pool handed out.
    let s = unsafe { cd.alloc::<u32>(n)? };
    let host = cd.clone_dtoh(&s)?;
    let poisoned = host.iter().filter(|&&v| v == u32::MAX).count();
    println!("poisoned elements in a fresh allocation: {poisoned} of {n}");
    assert_eq!(poisoned, n, "the pool did not reuse the poisoned memory");
    Ok(())
}

/// A tensor of more than 2^31 elements: the rows around the 2^31 boundary and the last row.
#[test]
fn over_two_to_the_31_elements() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, _) = rng();
    let hidden = 4096usize;
    let rows = (1usize << 31) / hidden + 16; // 2^31 + 65536 elements
    let dt = DType::BF16;
    let x = Tensor::randn(0f32, 1f32, (rows, hidden), &dev)?.to_dtype(dt)?;
    let wf = quantize(&randn(&mut rng, hidden, 1.0), dt);
    let w = tensor(&wf, &[hidden], dt)?.to_device(&dev)?;
    poison(&dev, rows * hidden * 2)?;
    let y = rms_norm(&x, &w, 1e-6)?;
    let o = Opts::new(1e-6);
    let row_of = |t: &Tensor, row| values(&t.narrow(0, row, 1)?);
    let r = (1usize << 31) / hidden;
    for &row in &[0usize, r - 1, r, r + 1, rows - 1] {
        let want = reference(dt, &row_of(&x, row)?, None, Some(&wf), hidden, &o);
        let what = format!("row {row} of {rows}x{hidden}");
        check(
            &what,
            dt,
            Quantity::Normed,
            hidden,
            &row_of(&y, row)?,
            &want.normed,
        );
    }
    // Fused too, on the same sizes.
    let r2 = Tensor::randn(0f32, 1f32, (rows, hidden), &dev)?.to_dtype(dt)?;
    let (n, s) = candle_rmsnorm::fused_add_rms_norm(&x, &r2, &w, 1e-6)?;
    for &row in &[r, rows - 1] {
        let (xv, rv) = (row_of(&x, row)?, row_of(&r2, row)?);
        let want = reference(dt, &xv, Some(&rv), Some(&wf), hidden, &o);
        let what = format!("fused row {row}");
        check(
            &what,
            dt,
            Quantity::Normed,
            hidden,
            &row_of(&n, row)?,
            &want.normed,
        );
        let what = format!("fused sum row {row}");
        check(
            &what,
            dt,
            Quantity::Sum,
            hidden,
            &row_of(&s, row)?,
            &want.sum,
        );
    }
    Ok(())
}

/// The in-place ops on the GPU: the case matrix against the reference, and bitwise equal to the
/// out-of-place ops (x and out the same rows; the pair's residual half read and overwritten).
#[test]
fn inplace_matrix_and_bitwise() -> Result<()> {
    let dev = gpu_or_skip!();
    let has_elements = |c: &&Case| c.dims.iter().product::<usize>() > 0;
    let cases: Vec<Case> = matrix().into_iter().filter(|c| has_elements(&c)).collect();
    let inplace = InPlace {
        device: dev.clone(),
        backend: Backend::Cuda,
    };
    run_cases(&inplace, &cases)?;
    run_bitwise(&Api::new(&dev, Backend::Cuda), &inplace, &cases).map(|_| ())
}

/// `keep_memory_pool` on a CUDA device: the driver accepts the setting, and allocating calls
/// after it still match the reference (the first 64 cases of the matrix).
#[test]
fn keep_memory_pool_then_the_matrix() -> Result<()> {
    let dev = gpu_or_skip!();
    candle_rmsnorm::keep_memory_pool(&dev)?;
    let has_elements = |c: &&Case| c.dims.iter().product::<usize>() > 0;
    let cases: Vec<Case> = matrix()
        .into_iter()
        .filter(|c| has_elements(&c))
        .take(64)
        .collect();
    run_cases(&Api::new(&dev, Backend::Cuda), &cases).map(|_| ())
}
