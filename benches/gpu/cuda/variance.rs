//! `--variance` (CUDA): `rms_norm` with `NormConfig::with_variance_size` (the mean of squares over
//! each row's first `n` values, sglang's `variance_size_override`) beside the plain `rms_norm`
//! on the same tensors and a device-to-device copy of the same bytes (x read, out written).
//! Kernel times between events, medians, inputs rotating over buffer sets of >= 256 MiB.

use super::channels::{buffer_sets, copy_us, time};
use super::{Cuda, Result};
use candle_core::{DType, Tensor};
use candle_rmsnorm::NormConfig;

/// (rows, hidden, variance size): Wan 14B's 75600 x 5120 with one padded head of 128 left out of
/// the mean, and a tensor-parallel shard of a padded model, 8192 x 1536 over its first 1408.
const SHAPES: [(usize, usize, usize); 2] = [(75600, 5120, 4992), (8192, 1536, 1408)];

/// Runs the table; returns one JSON object per row.
pub fn run(g: &Cuda) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    println!(
        "| shape | variance over | dtype | ours us | % of copy | copy us | plain rms_norm us |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (r, h, n) in SHAPES {
        for dt in [DType::BF16, DType::F32] {
            let tensor_bytes = r * h * dt.size_in_bytes();
            let sets = buffer_sets(tensor_bytes);
            let xs: Vec<Tensor> = (0..sets)
                .map(|_| Tensor::randn(0f32, 1f32, (r, h), &g.dev)?.to_dtype(dt))
                .collect::<Result<_>>()?;
            let w = Tensor::randn(1f32, 0.1f32, h, &g.dev)?.to_dtype(dt)?;
            let plain_cfg = NormConfig::new(1e-6);
            let var_cfg = plain_cfg.with_variance_size(n);
            // The output is returned so that it is not freed inside the timed interval.
            let norm = |cfg: &NormConfig, s: usize| -> Result<Tensor> {
                candle_rmsnorm::rms_norm_with(&xs[s], Some(&w), cfg)
            };
            let bytes = 2 * tensor_bytes;
            let copy = copy_us(g, bytes / 2)?;
            let t_ours = time(g, sets, |s| norm(&var_cfg, s))?;
            let t_plain = time(g, sets, |s| norm(&plain_cfg, s))?;
            println!(
                "| {r}x{h} | first {n} | {} | {t_ours:.1} | {:.1}% | {copy:.1} | {t_plain:.1} |",
                dt.as_str(),
                100.0 * copy / t_ours,
            );
            rows.push(serde_json::json!({
                "bench": "variance", "rows": r, "hidden": h, "variance_size": n,
                "dtype": dt.as_str(), "ours_us": t_ours, "copy_us": copy,
                "plain_us": t_plain, "bytes": bytes,
            }));
        }
    }
    Ok(rows)
}
