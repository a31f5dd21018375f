//! `--channels` (CUDA): a norm over dim 1 of `[B, C, T, H, W]` video-VAE activations (the Wan
//! VAE's `RMS_norm`: `F.normalize` over the channels times `sqrt(C)` and a weight, i.e.
//! `EpsMode::ClampNorm`), read and written in place by the channel kernel, beside a
//! device-to-device copy of the same bytes and beside the path it replaces (the dim moved last,
//! the row kernel, moved back: two extra copies). Kernel times between events, medians, inputs
//! rotating over buffer sets of >= 256 MiB.

use super::{Cuda, Error, Result};
use crate::harness::Gpu;
use candle_core::{DType, Tensor, D};
use candle_rmsnorm::{EpsMode, NormConfig};

/// Shapes: the Wan 2.1 VAE decoder's first stage at 480p (the target) and a later,
/// wider one with fewer channels.
const SHAPES: [[usize; 5]; 2] = [[1, 384, 21, 60, 104], [1, 96, 5, 240, 416]];
const ITERS: usize = 40;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median kernel time (us) of `f(set)` over rotating sets. Its outputs (`O`) are dropped only
/// after the end event: freeing a buffer may wait for the device, which would time the host.
pub(super) fn time<O>(g: &Cuda, sets: usize, mut f: impl FnMut(usize) -> Result<O>) -> Result<f64> {
    for s in 0..sets.max(3) {
        drop(f(s % sets)?);
    }
    g.synchronize()?;
    let mut t = Vec::with_capacity(ITERS);
    for i in 0..ITERS {
        let a = g.record()?;
        let outs = f(i % sets)?;
        let b = g.record()?;
        g.synchronize()?;
        drop(outs);
        t.push(g.elapsed_us(&a, &b)?);
    }
    Ok(median(t))
}

/// Input buffer sets to rotate over so that the sets together hold >= 256 MiB (one set of
/// `bytes`, at least two): each call then reads its inputs from DRAM, not from L2.
pub(super) fn buffer_sets(bytes: usize) -> usize {
    (256usize << 20).div_ceil(bytes).max(2)
}

/// Median time (us) of a device-to-device copy of `n` bytes.
pub(super) fn copy_us(g: &Cuda, n: usize) -> Result<f64> {
    let mut src = g.cd.alloc_zeros::<u8>(n)?;
    let mut dst = g.cd.alloc_zeros::<u8>(n)?;
    time(g, 1, |_| {
        g.stream.memcpy_dtod(&src, &mut dst).map_err(Error::wrap)?;
        std::mem::swap(&mut src, &mut dst);
        Ok(())
    })
}

/// Runs the table; returns one JSON object per row.
pub fn run(g: &Cuda) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    println!("| shape | dtype | op | ours us | % of copy | copy us | permute path us | x faster |");
    println!("|---|---|---|---|---|---|---|---|");
    for shape in SHAPES {
        for dt in [DType::BF16, DType::F32] {
            for fused in [false, true] {
                let n: usize = shape.iter().product();
                let tensor_bytes = n * dt.size_in_bytes();
                let inputs = if fused { 2 } else { 1 };
                let sets = buffer_sets(tensor_bytes * inputs);
                let randn = || Tensor::randn(0f32, 1f32, &shape[..], &g.dev)?.to_dtype(dt);
                let xs: Vec<Tensor> = (0..sets).map(|_| randn()).collect::<Result<_>>()?;
                let rs: Vec<Tensor> = if fused {
                    (0..sets).map(|_| randn()).collect::<Result<_>>()?
                } else {
                    Vec::new()
                };
                let w = Tensor::randn(1f32, 0.1f32, shape[1], &g.dev)?.to_dtype(dt)?;
                let cfg = NormConfig::new(1e-12).with_eps_mode(EpsMode::ClampNorm);
                let over1 = cfg.with_dim(1);
                let ours = |s: usize| -> Result<Vec<Tensor>> {
                    Ok(if fused {
                        let (y, sum) = candle_rmsnorm::fused_add_rms_norm_with(
                            &xs[s],
                            &rs[s],
                            Some(&w),
                            &over1,
                        )?;
                        vec![y, sum]
                    } else {
                        vec![candle_rmsnorm::rms_norm_with(&xs[s], Some(&w), &over1)?]
                    })
                };
                let permuted = |s: usize| -> Result<Vec<Tensor>> {
                    let last = |t: &Tensor| t.transpose(1, D::Minus1)?.contiguous();
                    let back = |t: Tensor| t.transpose(1, D::Minus1)?.contiguous();
                    Ok(if fused {
                        let (y, sum) = candle_rmsnorm::fused_add_rms_norm_with(
                            &last(&xs[s])?,
                            &last(&rs[s])?,
                            Some(&w),
                            &cfg,
                        )?;
                        vec![back(y)?, back(sum)?]
                    } else {
                        let y = candle_rmsnorm::rms_norm_with(&last(&xs[s])?, Some(&w), &cfg)?;
                        vec![back(y)?]
                    })
                };
                // Bytes moved: inputs read + outputs written (the weight is negligible); a copy
                // of the inputs' bytes moves as many.
                let bytes = tensor_bytes * if fused { 4 } else { 2 };
                let copy = copy_us(g, bytes / 2)?;
                let t_ours = time(g, sets, ours)?;
                let t_perm = time(g, sets, permuted)?;
                let op = if fused {
                    "fused_add_rms_norm"
                } else {
                    "rms_norm"
                };
                println!(
                    "| {shape:?} | {} | {op} dim 1 | {t_ours:.1} | {:.1}% | {copy:.1} | {t_perm:.1} | {:.2} |",
                    dt.as_str(),
                    100.0 * copy / t_ours,
                    t_perm / t_ours
                );
                rows.push(serde_json::json!({
                    "bench": "channels", "shape": shape, "dtype": dt.as_str(), "op": op,
                    "dim": 1, "ours_us": t_ours, "copy_us": copy, "permute_us": t_perm,
                    "bytes": bytes,
                }));
            }
        }
    }
    Ok(rows)
}
