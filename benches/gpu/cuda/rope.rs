//! `--rope` (CUDA): q and k RMSNorm + rotary embedding into `[B, heads, L, head_dim]` in one
//! call (`qk_rms_norm_rope`), beside a device-to-device copy of the same bytes and beside the
//! path it replaces (this crate's `rms_norm` per tensor, reshape, transpose, `contiguous`,
//! `candle_nn::rotary_emb::rope_i` or `rope` with the tables in the tensors' dtype). Kernel times
//! between events, medians, inputs rotating over buffer sets of >= 256 MiB.

use super::channels::{buffer_sets, copy_us, time};
use super::{Cuda, Result};
use candle_core::{DType, Tensor};
use candle_rmsnorm::{NormConfig, NormScope, RopeConfig, RopeStyle, Rounding};

/// (name, L, heads, head_dim, scope, style): Wan 2.1 14B at 720p (the target), Wan 1.3B
/// at 480p, Flux-like per-head norm with the half-split rotation.
const SHAPES: [(&str, usize, usize, usize, NormScope, RopeStyle); 3] = [
    (
        "wan14b-720p",
        75600,
        40,
        128,
        NormScope::Full,
        RopeStyle::Interleaved,
    ),
    (
        "wan1.3b-480p",
        32760,
        12,
        128,
        NormScope::Full,
        RopeStyle::Interleaved,
    ),
    (
        "flux-4096",
        4096,
        24,
        128,
        NormScope::PerHead,
        RopeStyle::HalfSplit,
    ),
];

/// Runs the table; returns one JSON object per row.
pub fn run(g: &Cuda) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    println!(
        "| shape | dtype | ours us | % of copy | ours, f32 tables us | copy us | unfused us | x faster |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, l, heads, hd, scope, style) in SHAPES {
        for dt in [DType::BF16, DType::F32] {
            let dim = heads * hd;
            let tensor_bytes = l * dim * dt.size_in_bytes();
            let sets = buffer_sets(2 * tensor_bytes);
            let randn = || Tensor::randn(0f32, 1f32, (1, l, dim), &g.dev)?.to_dtype(dt);
            let qs: Vec<Tensor> = (0..sets).map(|_| randn()).collect::<Result<_>>()?;
            let ks: Vec<Tensor> = (0..sets).map(|_| randn()).collect::<Result<_>>()?;
            let wlen = if scope == NormScope::Full { dim } else { hd };
            let w = Tensor::randn(1f32, 0.1f32, wlen, &g.dev)?.to_dtype(dt)?;
            let ang = Tensor::randn(0f32, 3f32, (l, hd / 2), &g.dev)?;
            let (cos32, sin32) = (ang.cos()?, ang.sin()?);
            let (cos, sin) = (cos32.to_dtype(dt)?, sin32.to_dtype(dt)?);
            let norm = NormConfig::new(1e-6).with_rounding(Rounding::BeforeWeight);
            let cfg = RopeConfig::new(heads, norm)
                .with_scope(scope)
                .with_style(style);
            let unfused = |s: usize| -> Result<Vec<Tensor>> {
                [&qs[s], &ks[s]]
                    .iter()
                    .map(|t| {
                        let y = match scope {
                            NormScope::Full => candle_rmsnorm::rms_norm_with(t, Some(&w), &norm)?,
                            NormScope::PerHead => candle_rmsnorm::rms_norm_with(
                                &t.reshape((1, l, heads, hd))?,
                                Some(&w),
                                &norm,
                            )?,
                        };
                        let y = y
                            .reshape((1, l, heads, hd))?
                            .transpose(1, 2)?
                            .contiguous()?;
                        match style {
                            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&y, &cos, &sin),
                            RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(&y, &cos, &sin),
                        }
                    })
                    .collect()
            };
            // Bytes moved: q and k read, both outputs written (weights and tables negligible).
            let bytes = 4 * tensor_bytes;
            let copy = copy_us(g, bytes / 2)?;
            // Our call with the tables in the tensors' dtype, then in the compute dtype (f32),
            // which no version of the call converts.
            let mut t_tables = [0.0; 2];
            for (t, (cos, sin)) in t_tables.iter_mut().zip([(&cos, &sin), (&cos32, &sin32)]) {
                *t = time(g, sets, |s: usize| {
                    candle_rmsnorm::qk_rms_norm_rope(
                        &qs[s],
                        &ks[s],
                        Some(&w),
                        Some(&w),
                        cos,
                        sin,
                        &cfg,
                    )
                })?;
            }
            let [t_ours, t_f32_tables] = t_tables;
            let t_unf = time(g, sets, unfused)?;
            println!(
                "| {name} [1, {l}, {dim}] {heads}x{hd} {scope:?} {style:?} | {} | {t_ours:.1} | {:.1}% | {t_f32_tables:.1} | {copy:.1} | {t_unf:.1} | {:.2} |",
                dt.as_str(),
                100.0 * copy / t_ours,
                t_unf / t_ours
            );
            rows.push(serde_json::json!({
                "bench": "rope", "shape": name, "seq": l, "heads": heads, "head_dim": hd,
                "dtype": dt.as_str(), "ours_us": t_ours, "ours_f32_tables_us": t_f32_tables,
                "copy_us": copy, "unfused_us": t_unf, "bytes": bytes,
            }));
        }
    }
    Ok(rows)
}
