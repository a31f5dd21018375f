//! Whether the CPU in-place ops are bound by memory or by arithmetic on this machine: GB/s
//! (bytes read + written, as `cargo bench --bench cpu` counts them) of `rms_norm_inplace` and
//! `fused_add_rms_norm_inplace` at hidden 5120 with their data in cache (32 and 256 rows) and in
//! memory (8192 rows), beside a single-threaded copy of the same bytes into a preallocated
//! buffer. Run it with the op's threads limited, e.g. `RAYON_NUM_THREADS=1 cargo bench --bench
//! cpu_bound`: an op whose in-cache figure is not far above its in-memory one, and which gains
//! in proportion to threads, is bound by its arithmetic, not by memory. Best of N runs each.

use candle_core::{DType, Device, Result, Tensor};
use std::hint::black_box;
use std::time::Instant;

const HIDDEN: usize = 5120;

/// The fastest of `reps` timed calls of `f` (after one untimed call), in seconds.
fn best(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        b = b.min(t.elapsed().as_secs_f64());
    }
    Ok(b)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let threads = rayon::current_num_threads();
    println!("hidden {HIDDEN}, {threads} rayon threads; GB/s, best of N");
    for rows in [32usize, 256, 8192] {
        for dt in [DType::BF16, DType::F32] {
            let x = Tensor::randn(0f32, 1., (rows, HIDDEN), &dev)?.to_dtype(dt)?;
            let r = Tensor::randn(0f32, 1., (rows, HIDDEN), &dev)?.to_dtype(dt)?;
            // A unit weight keeps the repeated in-place calls on normalised values.
            let w = Tensor::ones(HIDDEN, dt, &dev)?;
            let bytes = (rows * HIDDEN * dt.size_in_bytes()) as f64;
            let reps = if rows > 1000 { 15 } else { 300 };
            let pair = candle_rmsnorm::residual_pair(&r)?;
            let fused = best(reps, || {
                candle_rmsnorm::fused_add_rms_norm_inplace(&pair, &x, &w, 1e-6)
            })?;
            let xi = x.copy()?;
            let rms = best(reps, || candle_rmsnorm::rms_norm_inplace(&xi, &w, 1e-6))?;
            let src = vec![1u8; 2 * bytes as usize];
            let mut dst = vec![0u8; src.len()];
            let copy = best(reps, || {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
                Ok(())
            })?;
            println!(
                "{dt:?} {rows}x{HIDDEN} ({:.1} MiB a tensor): fused in place {:.1}, rms_norm in \
                 place {:.1}, copy of two tensors (one thread) {:.1}",
                bytes / 1048576.0,
                4.0 * bytes / fused / 1e9,
                2.0 * bytes / rms / 1e9,
                4.0 * bytes / copy / 1e9
            );
        }
    }
    Ok(())
}
