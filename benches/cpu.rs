//! CPU benchmarks: ours vs `candle_nn::ops::rms_norm` vs the composite tensor formula, with a
//! same-size memory copy as the ceiling. Throughput counts every byte read and written.
//!
//! Shapes: `benches/common/shapes.rs`, shared with the GPU benchmark.
//! `cargo bench --bench cpu` (all), or filter, e.g. `cargo bench --bench cpu -- bf16/8192x5120`.

use candle_core::{DType, Device, Result, Tensor, D};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

#[path = "common/shapes.rs"]
mod shapes;

const DTYPES: [DType; 3] = [DType::BF16, DType::F16, DType::F32];

fn composite(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x.broadcast_div(&r)?
        .broadcast_mul(&w.to_dtype(DType::F32)?)?
        .to_dtype(dt)
}

fn name(dt: DType) -> &'static str {
    match dt {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// Two ceilings for an op that reads and writes `n` bytes each: `copy`, a `copy_from_slice` into
/// a preallocated buffer (the memory system's limit), and `copy_new`, a copy into a freshly
/// allocated buffer (what any op returning a new tensor pays, page faults included).
fn bench_copy(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    g.bench_function("copy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    g.bench_function("copy_new", |b| b.iter(|| black_box(&src).to_vec()));
}

fn benches(c: &mut Criterion) {
    let dev = Device::Cpu;
    let tier = candle_rmsnorm::cpu_tier_name();
    for (rows, h) in shapes::cpu() {
        for dt in DTYPES {
            let x = Tensor::randn(0f32, 1., (rows, h), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let r = Tensor::randn(0f32, 1., (rows, h), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let w = Tensor::randn(1f32, 0.1, h, &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let bytes = rows * h * dt.size_in_bytes();
            let wbytes = h * dt.size_in_bytes();

            let mut g = c.benchmark_group(format!("rms_norm/{}/{rows}x{h}", name(dt)));
            g.throughput(Throughput::Bytes((2 * bytes + wbytes) as u64));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));
            g.bench_function(BenchmarkId::new("ours", tier), |b| {
                b.iter(|| candle_rmsnorm::rms_norm(&x, &w, 1e-6).unwrap())
            });
            // In place on the same tensor again and again: with a unit weight the values stay
            // normalised (a random weight would drift them towards inf and 0 over the
            // iterations and time the rescue of such rows instead); the work is the same.
            let xi = x.copy().unwrap();
            let w1 = Tensor::ones(h, dt, &dev).unwrap();
            g.bench_function(BenchmarkId::new("ours_inplace", tier), |b| {
                b.iter(|| candle_rmsnorm::rms_norm_inplace(&xi, &w1, 1e-6).unwrap())
            });
            g.bench_function("candle_nn", |b| {
                b.iter(|| candle_nn::ops::rms_norm(&x, &w, 1e-6).unwrap())
            });
            g.bench_function("composite", |b| b.iter(|| composite(&x, &w, 1e-6).unwrap()));
            bench_copy(&mut g, bytes);
            g.finish();

            let mut g = c.benchmark_group(format!("fused_add_rms_norm/{}/{rows}x{h}", name(dt)));
            g.throughput(Throughput::Bytes((4 * bytes + wbytes) as u64));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));
            g.bench_function(BenchmarkId::new("ours", tier), |b| {
                b.iter(|| candle_rmsnorm::fused_add_rms_norm(&x, &r, &w, 1e-6).unwrap())
            });
            let pair = candle_rmsnorm::residual_pair(&r).unwrap();
            g.bench_function(BenchmarkId::new("ours_inplace", tier), |b| {
                b.iter(|| candle_rmsnorm::fused_add_rms_norm_inplace(&pair, &x, &w, 1e-6).unwrap())
            });
            g.bench_function("candle_nn_add_then_norm", |b| {
                b.iter(|| {
                    let s = (&x + &r).unwrap();
                    (candle_nn::ops::rms_norm(&s, &w, 1e-6).unwrap(), s)
                })
            });
            bench_copy(&mut g, 2 * bytes);
            g.finish();
        }
    }
}

/// A norm over dim 1 of `[1, 384, 21, 60, 104]` (the Wan VAE decoder's first stage at 480p; issue
/// 11's shape), bf16 and f32: ours over the dimension in place (`with_dim(1)`), against moving
/// channels last, our row norm, and moving them back (what it replaces), and a copy.
/// `cargo bench --bench cpu -- dim1`.
fn channel_benches(c: &mut Criterion) {
    let dev = Device::Cpu;
    let tier = candle_rmsnorm::cpu_tier_name();
    let dims = (1usize, 384usize, 21usize, 60usize, 104usize);
    for dt in [DType::BF16, DType::F32] {
        let x = Tensor::randn(0f32, 1., dims, &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let w = Tensor::randn(1f32, 0.1, dims.1, &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let bytes = x.elem_count() * dt.size_in_bytes();
        let cfg = candle_rmsnorm::NormConfig::new(1e-12)
            .with_dim(1)
            .with_eps_mode(candle_rmsnorm::EpsMode::ClampNorm);
        let mut g = c.benchmark_group(format!("dim1/{}/1x384x21x60x104", name(dt)));
        g.throughput(Throughput::Bytes(2 * bytes as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        g.bench_function(BenchmarkId::new("ours_dim1", tier), |b| {
            b.iter(|| candle_rmsnorm::rms_norm_with(&x, Some(&w), &cfg).unwrap())
        });
        let rows = cfg.with_dim(4);
        g.bench_function(BenchmarkId::new("permute_ours_permute", tier), |b| {
            b.iter(|| {
                let xl = x.transpose(1, 4).unwrap().contiguous().unwrap();
                let y = candle_rmsnorm::rms_norm_with(&xl, Some(&w), &rows).unwrap();
                y.transpose(1, 4).unwrap().contiguous().unwrap()
            })
        });
        bench_copy(&mut g, bytes);
        g.finish();
    }
}

/// q and k norm + RoPE into `[B, heads, L, head_dim]` (Wan 1.3B self-attention at a small
/// latent: L = 1560, 12 heads of 128): `qk_rms_norm_rope` against this crate's `rms_norm` +
/// transpose + `contiguous` + `candle_nn::rotary_emb::rope_i` per tensor.
fn rope_benches(c: &mut Criterion) {
    let dev = Device::Cpu;
    let tier = candle_rmsnorm::cpu_tier_name();
    let (l, heads, hd) = (1560usize, 12usize, 128usize);
    let dim = heads * hd;
    for dt in [DType::BF16, DType::F32] {
        let mk = |shape: (usize, usize, usize)| {
            Tensor::randn(0f32, 1., shape, &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap()
        };
        let (q, k) = (mk((1, l, dim)), mk((1, l, dim)));
        let w = Tensor::randn(1f32, 0.1, dim, &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let ang = Tensor::randn(0f32, 3., (l, hd / 2), &dev).unwrap();
        let (cos, sin) = (
            ang.cos().unwrap().to_dtype(dt).unwrap(),
            ang.sin().unwrap().to_dtype(dt).unwrap(),
        );
        let bytes = 2 * q.elem_count() * dt.size_in_bytes();
        let norm = candle_rmsnorm::NormConfig::new(1e-6)
            .with_rounding(candle_rmsnorm::Rounding::BeforeWeight);
        let cfg = candle_rmsnorm::RopeConfig::new(heads, norm);
        let mut g = c.benchmark_group(format!("qk_rope/{}/1x{l}x{dim}", name(dt)));
        g.throughput(Throughput::Bytes(2 * bytes as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        g.bench_function(BenchmarkId::new("ours_fused", tier), |b| {
            b.iter(|| {
                candle_rmsnorm::qk_rms_norm_rope(&q, &k, Some(&w), Some(&w), &cos, &sin, &cfg)
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("norm_transpose_rope_i", tier), |b| {
            b.iter(|| {
                for t in [&q, &k] {
                    let y = candle_rmsnorm::rms_norm_with(t, Some(&w), &norm).unwrap();
                    let y = y
                        .reshape((1, l, heads, hd))
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .contiguous()
                        .unwrap();
                    black_box(candle_nn::rotary_emb::rope_i(&y, &cos, &sin).unwrap());
                }
            })
        });
        bench_copy(&mut g, bytes);
        g.finish();
    }
}

/// `rms_norm_quant` (fp8 e4m3 and i8, dynamic per-row scales) against `rms_norm` alone (the
/// unquantised op writes twice the bytes for bf16) and a copy of the bytes `rms_norm` moves.
fn quant_benches(c: &mut Criterion) {
    let dev = Device::Cpu;
    let tier = candle_rmsnorm::cpu_tier_name();
    let (rows, h) = (1560usize, 5120usize);
    for dt in [DType::BF16, DType::F32] {
        let x = Tensor::randn(0f32, 1., (rows, h), &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let w = Tensor::randn(1f32, 0.1, h, &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let cfg = candle_rmsnorm::NormConfig::new(1e-6);
        let bytes = x.elem_count() * dt.size_in_bytes();
        let mut g = c.benchmark_group(format!("quant/{}/{rows}x{h}", name(dt)));
        g.throughput(Throughput::Bytes((bytes + x.elem_count()) as u64));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for q in [
            candle_rmsnorm::QuantDType::F8E4M3,
            candle_rmsnorm::QuantDType::I8,
        ] {
            let qc = candle_rmsnorm::QuantConfig::new(q);
            g.bench_function(BenchmarkId::new(format!("ours_{q:?}"), tier), |b| {
                b.iter(|| candle_rmsnorm::rms_norm_quant(&x, Some(&w), &cfg, &qc).unwrap())
            });
        }
        g.bench_function(BenchmarkId::new("rms_norm", tier), |b| {
            b.iter(|| candle_rmsnorm::rms_norm_with(&x, Some(&w), &cfg).unwrap())
        });
        bench_copy(&mut g, bytes);
        g.finish();
    }
}

criterion_group!(cpu, benches, channel_benches, rope_benches, quant_benches);
criterion_main!(cpu);
