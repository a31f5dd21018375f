//! `--quant` (CUDA): `rms_norm_quant` and `fused_add_rms_norm_quant` (fp8 e4m3 and i8, dynamic
//! per-row scales) beside a device-to-device copy of the same bytes (read and written in their
//! dtypes: the input read, one byte a value and four a row written; the fused op also reads the
//! residual and writes the sum) and beside the unquantised `rms_norm` / `fused_add_rms_norm`.
//! Kernel times between events, medians, inputs rotating over buffer sets of >= 256 MiB.

use super::channels::{buffer_sets, copy_us, time};
use super::{Cuda, Result};
use candle_core::{DType, Tensor};
use candle_rmsnorm::{NormConfig, QuantConfig, QuantDType};

/// (rows, hidden): the 75600 x 5120 (Wan 14B at 720p) and Wan 1.3B's 32760 x 1536.
const SHAPES: [(usize, usize); 2] = [(75600, 5120), (32760, 1536)];

/// Runs the table; returns one JSON object per row.
pub fn run(g: &Cuda) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    println!("| op | shape | dtype -> out | ours us | % of copy | copy us | unquantised us |");
    println!("|---|---|---|---|---|---|---|");
    for (r, h) in SHAPES {
        for dt in [DType::BF16, DType::F16, DType::F32] {
            for fused in [false, true] {
                for q in [QuantDType::F8E4M3, QuantDType::I8] {
                    let tensor_bytes = r * h * dt.size_in_bytes();
                    let inputs = if fused { 2 } else { 1 };
                    let sets = buffer_sets(inputs * tensor_bytes);
                    let randn = || Tensor::randn(0f32, 1f32, (r, h), &g.dev)?.to_dtype(dt);
                    let xs: Vec<Tensor> = (0..sets).map(|_| randn()).collect::<Result<_>>()?;
                    let rs: Vec<Tensor> = if fused {
                        (0..sets).map(|_| randn()).collect::<Result<_>>()?
                    } else {
                        Vec::new()
                    };
                    let w = Tensor::randn(1f32, 0.1f32, h, &g.dev)?.to_dtype(dt)?;
                    let cfg = NormConfig::new(1e-6);
                    let qc = QuantConfig::new(q);
                    // Every output is returned, so that none is freed inside the timed
                    // interval (a buffer freed before the harness's synchronisation goes back
                    // to the driver there and is mapped again by the next call).
                    let ours = |s: usize| -> Result<Vec<Tensor>> {
                        if fused {
                            let (v, sum) = candle_rmsnorm::fused_add_rms_norm_quant(
                                &xs[s],
                                &rs[s],
                                Some(&w),
                                &cfg,
                                &qc,
                            )?;
                            Ok(vec![v.values, v.scales, sum])
                        } else {
                            let v = candle_rmsnorm::rms_norm_quant(&xs[s], Some(&w), &cfg, &qc)?;
                            Ok(vec![v.values, v.scales])
                        }
                    };
                    let plain = |s: usize| -> Result<Vec<Tensor>> {
                        if fused {
                            let (out, sum) = candle_rmsnorm::fused_add_rms_norm_with(
                                &xs[s],
                                &rs[s],
                                Some(&w),
                                &cfg,
                            )?;
                            Ok(vec![out, sum])
                        } else {
                            Ok(vec![candle_rmsnorm::rms_norm_with(&xs[s], Some(&w), &cfg)?])
                        }
                    };
                    // Bytes read + written in their dtypes.
                    let bytes = inputs * tensor_bytes + r * h + 4 * r + (inputs - 1) * tensor_bytes;
                    let copy = copy_us(g, bytes / 2)?;
                    let t_ours = time(g, sets, ours)?;
                    let t_plain = time(g, sets, plain)?;
                    let op = if fused {
                        "fused_add_rms_norm_quant"
                    } else {
                        "rms_norm_quant"
                    };
                    println!(
                        "| {op} | {r}x{h} | {} -> {q:?} | {t_ours:.1} | {:.1}% | {copy:.1} | {t_plain:.1} |",
                        dt.as_str(),
                        100.0 * copy / t_ours,
                    );
                    rows.push(serde_json::json!({
                        "bench": "quant", "op": op, "rows": r, "hidden": h,
                        "dtype": dt.as_str(), "out": format!("{q:?}"), "ours_us": t_ours,
                        "copy_us": copy, "plain_us": t_plain, "bytes": bytes,
                    }));
                }
            }
        }
    }
    Ok(rows)
}
