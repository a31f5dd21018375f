//! GPU benchmark: this crate's kernels vs `candle_nn::ops::rms_norm` vs a device-to-device copy
//! of the same bytes, on Candle's CUDA stream.
//!
//! ```text
//! cargo run --release --features cuda --example gpu_bench -- [--json FILE] [--quick] [--only RxH]
//! ```
//! Each figure is the median over many launches, each bracketed by CUDA events; inputs rotate
//! over enough buffer sets (>= 256 MiB together) that no launch finds its data in L2. Bytes
//! counted: x read + out written (+ residual read + sum written for the fused op) + weight.
//! `% copy` = copy time of the same bytes / our time.

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("gpu_bench needs `--features cuda`");
    std::process::exit(2);
}

#[cfg(feature = "cuda")]
fn main() -> candle_core::Result<()> {
    bench::main()
}

#[cfg(feature = "cuda")]
mod bench {
    use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
    use candle_core::{CudaDevice, DType, Device, Result, Tensor};
    use std::io::Write;

    const SHAPES: [(usize, usize); 7] = [
        (75600, 5120),
        (32760, 1536),
        (8192, 5120),
        (4096, 5120),
        (1024, 5120),
        (512, 4096),
        (3_024_000, 128),
    ];
    const EPS: f32 = 1e-6;

    /// Median microseconds of `iters` launches of `f(i)` (after warm-up), each between two events.
    fn median_us<F: FnMut(usize) -> Result<()>>(
        dev: &CudaDevice,
        iters: usize,
        mut f: F,
    ) -> Result<f64> {
        let st = dev.cuda_stream();
        for i in 0..5 {
            f(i)?;
        }
        st.synchronize().map_err(candle_core::Error::wrap)?;
        let mut evs = Vec::with_capacity(iters);
        for i in 0..iters {
            let a = st
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(candle_core::Error::wrap)?;
            f(i + 5)?;
            let b = st
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(candle_core::Error::wrap)?;
            evs.push((a, b));
        }
        st.synchronize().map_err(candle_core::Error::wrap)?;
        let mut t: Vec<f64> = evs
            .iter()
            .map(|(a, b)| a.elapsed_ms(b).map(|ms| ms as f64 * 1e3))
            .collect::<std::result::Result<_, _>>()
            .map_err(candle_core::Error::wrap)?;
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok(t[t.len() / 2])
    }

    struct Row {
        op: &'static str,
        dtype: DType,
        rows: usize,
        hidden: usize,
        bytes: usize,
        ours: f64,
        candle_nn: Option<f64>,
        copy: f64,
    }

    fn dname(dt: DType) -> &'static str {
        match dt {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            _ => "other",
        }
    }

    pub fn main() -> Result<()> {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        // --only RxH: one shape (e.g. for a profiler run).
        let only = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1).cloned());
        let json = args
            .iter()
            .position(|a| a == "--json")
            .and_then(|i| args.get(i + 1).cloned());
        let dev = Device::new_cuda(0)?;
        let Device::Cuda(cd) = &dev else {
            unreachable!()
        };
        let mut out: Vec<Row> = Vec::new();
        let dtypes = if quick {
            vec![DType::BF16]
        } else {
            vec![DType::BF16, DType::F16, DType::F32]
        };
        for &dt in &dtypes {
            for &(rows, hidden) in &SHAPES {
                if only
                    .as_ref()
                    .is_some_and(|o| *o != format!("{rows}x{hidden}"))
                {
                    continue;
                }
                let eb = dt.size_in_bytes();
                let n = rows * hidden;
                let set_bytes = n * eb;
                let sets = (256usize << 20).div_ceil(set_bytes).clamp(1, 64);
                let iters = if set_bytes > (256 << 20) {
                    30
                } else if set_bytes > (16 << 20) {
                    100
                } else {
                    400
                };
                let iters = if quick { iters / 3 } else { iters };
                let xs: Vec<Tensor> = (0..sets)
                    .map(|_| Tensor::randn(0f32, 1f32, (rows, hidden), &dev)?.to_dtype(dt))
                    .collect::<Result<_>>()?;
                let rs: Vec<Tensor> = (0..sets)
                    .map(|_| Tensor::randn(0f32, 1f32, (rows, hidden), &dev)?.to_dtype(dt))
                    .collect::<Result<_>>()?;
                let w = Tensor::randn(0f32, 1f32, hidden, &dev)?.to_dtype(dt)?;
                // Copy sources of the plain op's bytes (n elements read + n written) and of the
                // fused op's (2n + 2n).
                let srcs: Vec<_> = (0..sets)
                    .map(|_| cd.alloc_zeros::<u8>(2 * set_bytes))
                    .collect::<Result<_>>()?;
                let mut dst = cd.alloc_zeros::<u8>(2 * set_bytes)?;
                let copy1 = median_us(cd, iters, |i| {
                    let s = srcs[i % sets].slice(0..set_bytes);
                    let mut d = dst.slice_mut(0..set_bytes);
                    cd.cuda_stream()
                        .memcpy_dtod(&s, &mut d)
                        .map_err(candle_core::Error::wrap)
                })?;
                let copy2 = median_us(cd, iters, |i| {
                    cd.cuda_stream()
                        .memcpy_dtod(&srcs[i % sets], &mut dst)
                        .map_err(candle_core::Error::wrap)
                })?;
                let ours = median_us(cd, iters, |i| {
                    candle_rmsnorm::rms_norm(&xs[i % sets], &w, EPS).map(drop)
                })?;
                let theirs = median_us(cd, iters, |i| {
                    candle_nn::ops::rms_norm(&xs[i % sets], &w, EPS).map(drop)
                })?;
                let fused = median_us(cd, iters, |i| {
                    candle_rmsnorm::fused_add_rms_norm(&xs[i % sets], &rs[i % sets], &w, EPS)
                        .map(drop)
                })?;
                out.push(Row {
                    op: "rms_norm",
                    dtype: dt,
                    rows,
                    hidden,
                    bytes: 2 * set_bytes + hidden * eb,
                    ours,
                    candle_nn: Some(theirs),
                    copy: copy1,
                });
                out.push(Row {
                    op: "fused_add_rms_norm",
                    dtype: dt,
                    rows,
                    hidden,
                    bytes: 4 * set_bytes + hidden * eb,
                    ours: fused,
                    candle_nn: None,
                    copy: copy2,
                });
                let last = &out[out.len() - 2..];
                for r in last {
                    eprintln!(
                        "{} {} {}x{}: ours {:.1} us, copy {:.1} us ({:.1}%)",
                        r.op,
                        dname(r.dtype),
                        r.rows,
                        r.hidden,
                        r.ours,
                        r.copy,
                        100.0 * r.copy / r.ours
                    );
                }
            }
        }
        if let Some(path) = json {
            let mut f = std::fs::File::create(&path)?;
            for r in &out {
                writeln!(
                    f,
                    "{{\"op\":\"{}\",\"dtype\":\"{}\",\"rows\":{},\"hidden\":{},\"bytes\":{},\"ours_us\":{:.3},\"candle_nn_us\":{},\"copy_us\":{:.3}}}",
                    r.op,
                    dname(r.dtype),
                    r.rows,
                    r.hidden,
                    r.bytes,
                    r.ours,
                    r.candle_nn.map_or("null".to_string(), |v| format!("{v:.3}")),
                    r.copy
                )?;
            }
        }
        println!(
            "| op | dtype | rows x hidden | ours us | ours GB/s | % of copy | candle_nn us | speed-up | copy us |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &out {
            let gbps = r.bytes as f64 / r.ours / 1e3;
            println!(
                "| {} | {} | {}x{} | {:.1} | {:.0} | {:.1}% | {} | {} | {:.1} |",
                r.op,
                dname(r.dtype),
                r.rows,
                r.hidden,
                r.ours,
                gbps,
                100.0 * r.copy / r.ours,
                r.candle_nn.map_or("-".into(), |v| format!("{v:.1}")),
                r.candle_nn
                    .map_or("-".into(), |v| format!("{:.2}x", v / r.ours)),
                r.copy
            );
        }
        Ok(())
    }
}
