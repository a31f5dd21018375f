//! ROCm benchmark (feature `rocm`): our kernels on device buffers against a device-to-device
//! copy of the same bytes, and the cost of the host-staged `Backend::Rocm` path against the CPU
//! path. Prints a Markdown table; prints that it was skipped when no AMD GPU is visible.
//!
//! `cargo bench --features rocm --bench rocm` (set `ROCM_BENCH_ITERS` to change the 50 timed
//! launches per shape).

use candle_core::{DType, Device, Tensor};
use candle_rmsnorm::rocm::{self, RawNorm, RocmDevice, RocmEvent, RocmStream, RocmTensor};
use candle_rmsnorm::{Backend, NormConfig};

const SHAPES: &[(usize, usize)] = &[
    (75600, 5120),
    (32760, 1536),
    (8192, 5120),
    (4096, 5120),
    (1024, 5120),
    (512, 4096),
    (3_024_000, 128),
];

fn median(mut v: Vec<f32>) -> f64 {
    v.sort_by(f32::total_cmp);
    f64::from(v[v.len() / 2])
}

/// Median milliseconds of `iters` runs of `f` on `stream`, each timed by its own event pair.
fn time(
    dev: &RocmDevice,
    stream: &RocmStream,
    iters: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(iters);
    let (a, b) = (RocmEvent::new(dev)?, RocmEvent::new(dev)?);
    for _ in 0..iters {
        a.record(stream)?;
        f()?;
        b.record(stream)?;
        ms.push(a.elapsed_ms(&b)?);
    }
    Ok(median(ms))
}

fn main() -> candle_core::Result<()> {
    let n = match rocm::device_count() {
        Ok(n) => n,
        Err(e) => {
            println!("SKIPPED rocm benchmark: HIP runtime unavailable: {e}");
            return Ok(());
        }
    };
    if n == 0 {
        println!("SKIPPED rocm benchmark: no AMD GPU visible to the HIP runtime");
        return Ok(());
    }
    let iters: usize = std::env::var("ROCM_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dev = rocm::default_device()?;
    let stream = dev.stream()?;
    let (rt, ver) = rocm::runtime_info()?;
    println!(
        "device {} {} {} ({} CUs, code object {}), runtime {rt} {ver:?}, {iters} launches per entry, median",
        dev.ordinal(),
        dev.name(),
        dev.gcn_arch_name(),
        dev.compute_units(),
        dev.code_object().arch
    );
    println!();
    println!("| op | dtype | rows x hidden | time (us) | GB/s | % of copy | copy (us) |");
    println!("|---|---|---|---|---|---|---|");
    let cfg = NormConfig::new(1e-6);
    for &(rows, hidden) in SHAPES {
        for dt in [DType::BF16, DType::F16, DType::F32] {
            for fused in [false, true] {
                let elems = rows * hidden;
                let bytes_one = elems * dt.size_in_bytes();
                let tensors = if fused { 4 } else { 2 };
                let (free, _) = dev.memory_info()?;
                if bytes_one * (tensors + 1) > free {
                    println!(
                        "| {} | {dt:?} | {rows} x {hidden} | skipped: needs {} MiB, {} MiB free | | | |",
                        if fused { "fused" } else { "rms_norm" },
                        (bytes_one * (tensors + 1)) >> 20,
                        free >> 20
                    );
                    continue;
                }
                let x = Tensor::randn(0f32, 1., (rows, hidden), &Device::Cpu)?.to_dtype(dt)?;
                let w = Tensor::randn(0f32, 1., hidden, &Device::Cpu)?.to_dtype(dt)?;
                let xd = RocmTensor::from_tensor(&dev, &x)?;
                let rd = RocmTensor::from_tensor(&dev, &x)?;
                let wd = RocmTensor::from_tensor(&dev, &w)?;
                let mut out = RocmTensor::alloc(&dev, dt, (rows, hidden))?;
                let mut sum = RocmTensor::alloc(&dev, dt, (rows, hidden))?;
                drop(x);
                let args = RawNorm {
                    dtype: dt,
                    weight_dtype: Some(dt),
                    rows,
                    hidden,
                    x: xd.as_ptr(),
                    x_stride: hidden,
                    residual: rd.as_ptr(),
                    res_stride: hidden,
                    out: out.as_mut_ptr(),
                    out_stride: hidden,
                    sum_out: sum.as_mut_ptr(),
                    sum_stride: hidden,
                    weight: wd.as_ptr(),
                };
                let t = time(&dev, stream, iters, || {
                    // SAFETY: every pointer is a live allocation of `dev` of rows x hidden
                    // (weight: hidden) elements; outputs are distinct from inputs.
                    unsafe {
                        if fused {
                            rocm::fused_add_rms_norm_raw(&dev, stream.raw(), &args, &cfg)
                        } else {
                            rocm::rms_norm_raw(&dev, stream.raw(), &args, &cfg)
                        }
                    }
                })?;
                // The copy moves the same bytes: read x (+ residual), write out (+ sum).
                let t_copy = time(&dev, stream, iters, || {
                    out.copy_from(&xd, stream)?;
                    if fused {
                        sum.copy_from(&rd, stream)?;
                    }
                    Ok(())
                })?;
                let moved = (tensors * bytes_one + hidden * dt.size_in_bytes()) as f64;
                println!(
                    "| {} | {dt:?} | {rows} x {hidden} | {:.1} | {:.0} | {:.0}% | {:.1} |",
                    if fused { "fused" } else { "rms_norm" },
                    t * 1e3,
                    moved / (t * 1e-3) / 1e9,
                    100.0 * t_copy / t,
                    t_copy * 1e3
                );
            }
        }
    }

    // Host tensors: Backend::Rocm (upload, kernel, download) against the CPU path.
    println!();
    println!("| host tensors, bf16 | rows x hidden | Backend::Rocm (ms) | Backend::Cpu (ms) |");
    println!("|---|---|---|---|");
    for &(rows, hidden) in &[(4096usize, 5120usize), (32760, 1536)] {
        let x = Tensor::randn(0f32, 1., (rows, hidden), &Device::Cpu)?.to_dtype(DType::BF16)?;
        let w = Tensor::ones(hidden, DType::BF16, &Device::Cpu)?;
        let mut cols = Vec::new();
        for b in [Backend::Rocm, Backend::Cpu] {
            let c = NormConfig::new(1e-6).with_backend(b);
            candle_rmsnorm::rms_norm_with(&x, Some(&w), &c)?;
            let mut ms = Vec::new();
            for _ in 0..10 {
                let t0 = std::time::Instant::now();
                candle_rmsnorm::rms_norm_with(&x, Some(&w), &c)?;
                ms.push(t0.elapsed().as_secs_f32() * 1e3);
            }
            cols.push(median(ms));
        }
        println!("| | {rows} x {hidden} | {:.2} | {:.2} |", cols[0], cols[1]);
    }
    Ok(())
}
