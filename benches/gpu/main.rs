//! GPU benchmark, CUDA (feature `cuda`) and ROCm (feature `rocm`): this crate's kernels against a
//! device-to-device copy of the same bytes (and `candle_nn::ops::rms_norm` on CUDA).
//!
//! ```text
//! cargo bench --features cuda --bench gpu -- [--json FILE] [--quick] [--only RxH]
//! cargo bench --features cuda --bench gpu -- --first-calls [--json FILE]
//! cargo bench --features cuda --bench gpu -- --channels [--json FILE]
//! cargo bench --features cuda --bench gpu -- --rope [--json FILE]
//! cargo bench --features cuda --bench gpu -- --quant [--json FILE]
//! cargo bench --features cuda --bench gpu -- --variance [--json FILE]
//! cargo bench --features rocm --bench gpu -- [--json FILE] [--quick] [--only RxH]
//! ```
//! For each (op, dtype, shape), with inputs rotating over buffer sets of >= 256 MiB together:
//! - kernel us: median over many launches, each between two events on the op's stream;
//! - API us/call: wall clock of the same number of back-to-back calls of the public API,
//!   output allocation included, from a synchronised device to a synchronised device, / calls;
//! - copy us: median of a device-to-device copy of the same bytes; `% of copy` = copy / ours;
//! - candle_nn us (CUDA): `candle_nn::ops::rms_norm` timed like the kernel.
//!
//! Bytes counted: x read + out written (+ residual read + sum written for the fused op) +
//! weight. Without a GPU feature, or with no device visible, it prints that it was skipped and
//! exits 0. Each backend's description and table go to stdout, progress to stderr.
#![cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(dead_code))]

#[cfg(feature = "cuda")]
mod cuda;
mod harness;
#[cfg(feature = "rocm")]
mod rocm;
#[path = "../common/shapes.rs"]
mod shapes;

/// `--first-calls` (CUDA): prints the first call of each kernel variant and a summary line.
#[cfg(feature = "cuda")]
fn first_calls(args: &harness::Args) -> candle_core::Result<()> {
    let g = match cuda::Cuda::new()? {
        Ok(g) => g,
        Err(why) => {
            println!("SKIPPED first calls: {why}");
            return Ok(());
        }
    };
    let image = std::env::var("CANDLE_RMSNORM_CUDA_IMAGE").unwrap_or_else(|_| "cubin".into());
    let calls = cuda::first_calls(&g)?;
    let total: f64 = calls.iter().map(|(_, ms)| ms).sum();
    let max = calls.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    println!(
        "first calls ({image}): {} variants, first {:.2} ms (module load included), max {max:.2} \
         ms, total {total:.2} ms",
        calls.len(),
        calls[0].1
    );
    if let Some(path) = &args.json {
        let lines: Vec<String> = calls
            .iter()
            .map(|(l, ms)| {
                serde_json::json!({"first_call": l, "image": image, "ms": ms}).to_string()
            })
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    Ok(())
}

/// `--channels` / `--rope` (CUDA): one of the side tables (`cuda::channels`, `cuda::rope`).
#[cfg(feature = "cuda")]
fn table(
    args: &harness::Args,
    what: &str,
    run: fn(&cuda::Cuda) -> candle_core::Result<Vec<serde_json::Value>>,
) -> candle_core::Result<()> {
    let g = match cuda::Cuda::new()? {
        Ok(g) => g,
        Err(why) => {
            println!("SKIPPED {what}: {why}");
            return Ok(());
        }
    };
    let rows = run(&g)?;
    if let Some(path) = &args.json {
        let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let args = match harness::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    #[allow(unused_mut)]
    let mut rows: Vec<harness::Row> = Vec::new();
    #[allow(unused_mut)]
    let mut skipped: Vec<String> = Vec::new();
    #[allow(unused_mut)]
    let mut ran = false;
    #[cfg(feature = "cuda")]
    if args.first_calls {
        return first_calls(&args);
    }
    #[cfg(feature = "cuda")]
    if args.channels {
        return table(&args, "channels", cuda::channels::run);
    }
    #[cfg(feature = "cuda")]
    if args.rope {
        return table(&args, "rope", cuda::rope::run);
    }
    #[cfg(feature = "cuda")]
    if args.quant {
        return table(&args, "quant", cuda::quant::run);
    }
    #[cfg(feature = "cuda")]
    if args.variance {
        return table(&args, "variance", cuda::variance::run);
    }
    #[cfg(feature = "cuda")]
    match cuda::Cuda::new()? {
        Ok(g) => {
            rows.extend(harness::run(&g, &args)?);
            ran = true;
        }
        Err(why) => skipped.push(format!("cuda: {why}")),
    }
    #[cfg(feature = "rocm")]
    match rocm::Rocm::new()? {
        Ok(g) => {
            rows.extend(harness::run(&g, &args)?);
            ran = true;
        }
        Err(why) => skipped.push(format!("rocm: {why}")),
    }
    if !cfg!(any(feature = "cuda", feature = "rocm")) {
        skipped.push("built without a GPU feature (`--features cuda` or `--features rocm`)".into());
    }
    for why in &skipped {
        println!("SKIPPED gpu benchmark: {why}");
    }
    if !ran {
        return Ok(());
    }
    if let Some(path) = &args.json {
        harness::write_jsonl(path, &rows)?;
        eprintln!("wrote {} rows to {path}", rows.len());
    }
    Ok(())
}
