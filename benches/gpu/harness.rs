//! The device-neutral part of the GPU benchmark: arguments, shapes and dtypes, input rotation,
//! the two timing loops, bytes counted, the Markdown table and the JSONL file. A backend
//! ([`Gpu`]) only allocates, launches, copies and records events.

use crate::shapes;
use candle_core::{DType, Result};
use std::time::Instant;

pub const EPS: f32 = 1e-6;
/// Launches before each timed loop (first-use costs: module loading, pools, clocks).
const WARM: usize = 5;
/// Inputs rotate over buffer sets of at least this many bytes together, so that no launch
/// finds its inputs in L2 (or MI300's Infinity Cache) from an earlier one.
const ROTATE_BYTES: usize = 256 << 20;

pub const USAGE: &str =
    "usage: gpu [--json FILE] [--quick] [--only RxH] [--first-calls] [--keep-pool] [--untracked]
  --json FILE    also write one JSON object per (backend, op, dtype, shape) to FILE
  --quick        bf16 only, a third of the launches
  --only RxH     one shape, e.g. 512x4096
  --first-calls  (CUDA) only time the first call of every kernel variant, module load included
  --channels     (CUDA) only time norms over dim 1 of video-VAE shapes (cuda/channels.rs)
  --rope         (CUDA) only time q/k norm + RoPE against the unfused path (cuda/rope.rs)
  --quant        (CUDA) only time the fp8/i8 quantised norms against a copy (cuda/quant.rs)
  --variance     (CUDA) only time rms_norm with a variance size against the plain norm and a
                 copy (cuda/variance.rs)
  --keep-pool    (CUDA) set the device's memory pool release threshold to the maximum first, so
                 synchronising does not hand freed memory back to the driver
  --untracked    (CUDA) turn off cudarc's per-buffer event tracking first (Candle's
                 `disable_event_tracking`: safe for one stream, as here)";

#[derive(Debug, Default)]
pub struct Args {
    pub json: Option<String>,
    pub quick: bool,
    pub only: Option<(usize, usize)>,
    /// Time the first call of every kernel variant instead (CUDA; see `cuda::first_calls`).
    pub first_calls: bool,
    /// Time norms over dim 1 instead (CUDA; see `cuda::channels`).
    pub channels: bool,
    /// Time q/k norm + RoPE instead (CUDA; see `cuda::rope`).
    pub rope: bool,
    /// Time the quantised norms instead (CUDA; see `cuda::quant`).
    pub quant: bool,
    /// Time `rms_norm` with a variance size instead (CUDA; see `cuda::variance`).
    pub variance: bool,
    /// Keep freed memory in the allocator's pool (CUDA; see `Gpu::keep_pool`).
    pub keep_pool: bool,
    /// Turn off the device's per-buffer event tracking (CUDA; see `Gpu::untracked`).
    pub untracked: bool,
}

impl Args {
    /// Parses the flags; ignores `--bench`, which `cargo bench` passes.
    pub fn parse(mut it: impl Iterator<Item = String>) -> std::result::Result<Self, String> {
        let mut a = Args::default();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--json" => a.json = Some(it.next().ok_or("--json needs a file name")?),
                "--quick" => a.quick = true,
                "--first-calls" => a.first_calls = true,
                "--channels" => a.channels = true,
                "--rope" => a.rope = true,
                "--quant" => a.quant = true,
                "--variance" => a.variance = true,
                "--keep-pool" => a.keep_pool = true,
                "--untracked" => a.untracked = true,
                "--only" => {
                    let v = it.next().ok_or("--only needs RxH, e.g. 512x4096")?;
                    let parsed = v
                        .split_once('x')
                        .and_then(|(r, h)| Some((r.parse().ok()?, h.parse().ok()?)));
                    a.only = Some(parsed.ok_or(format!("--only {v}: expected RxH"))?);
                }
                "--bench" => {}
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(a)
    }

    pub fn dtypes(&self) -> &'static [DType] {
        if self.quick {
            &[DType::BF16]
        } else {
            &[DType::BF16, DType::F16, DType::F32]
        }
    }

    pub fn shapes(&self) -> Vec<(usize, usize)> {
        shapes::gpu()
            .filter(|s| self.only.is_none_or(|o| o == *s))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    RmsNorm,
    FusedAddRmsNorm,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::RmsNorm => "rms_norm",
            Op::FusedAddRmsNorm => "fused_add_rms_norm",
        }
    }

    /// `rows x hidden` tensors moved: x read, out written (+ residual read, sum written).
    fn tensors(self) -> usize {
        match self {
            Op::RmsNorm => 2,
            Op::FusedAddRmsNorm => 4,
        }
    }
}

/// What a backend provides. Every launch is queued on one stream, the one `record` uses.
pub trait Gpu {
    /// A recorded event.
    type Event;
    /// The buffers of one (dtype, shape): `sets` input sets (x, residual), a weight, copy
    /// sources and destinations, and whatever `kernel` writes to.
    type Case;
    /// What `kernel` returns; dropped only after the end event is recorded.
    type Out;
    /// Whether `candle_nn` is measured.
    const CANDLE_NN: bool;

    /// `cuda` or `rocm` (the JSONL's `backend`).
    fn backend(&self) -> &'static str;
    /// Device, runtime, and what `kernel` / `api_call` run on this backend.
    fn describe(&self) -> String;
    /// Free device memory, when known.
    fn free_bytes(&self) -> Result<Option<usize>>;
    fn prepare(&self, dt: DType, rows: usize, hidden: usize, sets: usize) -> Result<Self::Case>;
    /// Records an event on the stream.
    fn record(&self) -> Result<Self::Event>;
    /// Microseconds between two completed events.
    fn elapsed_us(&self, start: &Self::Event, end: &Self::Event) -> Result<f64>;
    /// Waits until the device has finished all queued work.
    fn synchronize(&self) -> Result<()>;
    /// One device-to-device copy of the first `bytes` bytes of set `set`'s copy source.
    fn copy(&self, case: &mut Self::Case, set: usize, bytes: usize) -> Result<()>;
    /// The op on set `set`, as timed by events.
    fn kernel(&self, case: &mut Self::Case, op: Op, set: usize) -> Result<Self::Out>;
    /// The op on set `set` through the crate's public API, its outputs allocated by the call
    /// and dropped before it returns, as an application's loop would.
    fn api_call(&self, case: &Self::Case, op: Op, set: usize) -> Result<()>;
    /// The op on set `set` through the crate's in-place API (no allocation): `rms_norm` writes
    /// x, the fused op the set's residual stream; the values drift, the timing does not.
    fn api_inplace(&self, case: &mut Self::Case, op: Op, set: usize) -> Result<()>;
    /// Makes the allocator keep freed memory instead of handing it back to the driver at each
    /// synchronisation (`--keep-pool`); backends without such a pool say so.
    fn keep_pool(&self) -> Result<()> {
        candle_core::bail!(
            "--keep-pool: {} has no stream-ordered pool to configure",
            self.backend()
        )
    }
    /// Turns off per-buffer event tracking (`--untracked`); backends without it say so.
    fn untracked(&self) -> Result<()> {
        candle_core::bail!("--untracked: {} tracks no buffer events", self.backend())
    }
    /// `candle_nn::ops::rms_norm` on set `set` (only called when `CANDLE_NN`).
    fn candle_nn(&self, case: &Self::Case, set: usize) -> Result<Self::Out>;
    /// Anything else the backend reports, as Markdown, after the main table.
    fn extra(&self, _args: &Args) -> Result<Option<String>> {
        Ok(None)
    }
}

/// One (backend, op, dtype, shape); times in microseconds.
#[derive(Debug, Clone)]
pub struct Row {
    pub backend: &'static str,
    pub op: Op,
    pub dtype: DType,
    pub rows: usize,
    pub hidden: usize,
    /// Bytes the op must move: `Op::tensors` tensors + the weight.
    pub bytes: usize,
    /// Launches per timed loop.
    pub iters: usize,
    /// Median kernel time by events.
    pub kernel_us: f64,
    /// Wall clock of `iters` back-to-back public-API calls (synchronised) / `iters`.
    pub api_us: f64,
    /// The same for the in-place API.
    pub api_inplace_us: f64,
    pub candle_nn_us: Option<f64>,
    /// Median time of a device-to-device copy of the same bytes (weight excluded).
    pub copy_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median microseconds of `iters` launches of `f(i)` after `WARM`, each between two events;
/// all are queued before the first is read, so the host runs ahead of the device.
fn event_median<G: Gpu, T>(
    g: &G,
    iters: usize,
    mut f: impl FnMut(usize) -> Result<T>,
) -> Result<f64> {
    for i in 0..WARM {
        drop(f(i)?);
    }
    g.synchronize()?;
    let mut evs = Vec::with_capacity(iters);
    for i in 0..iters {
        let a = g.record()?;
        let out = f(WARM + i)?;
        let b = g.record()?;
        drop(out);
        evs.push((a, b));
    }
    g.synchronize()?;
    let t = evs
        .iter()
        .map(|(a, b)| g.elapsed_us(a, b))
        .collect::<Result<Vec<_>>>()?;
    Ok(median(t))
}

/// Wall-clock microseconds per call of `iters` back-to-back calls of `f(i)` after `WARM`,
/// from a synchronised device to a synchronised device.
fn wall_per_call<G: Gpu>(
    g: &G,
    iters: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    for i in 0..WARM {
        f(i)?;
    }
    g.synchronize()?;
    let t0 = Instant::now();
    for i in 0..iters {
        f(WARM + i)?;
    }
    g.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

/// Runs every (dtype, shape) on `g` and prints its table; returns the rows.
pub fn run<G: Gpu>(g: &G, args: &Args) -> Result<Vec<Row>> {
    eprintln!("{}", g.describe());
    if args.keep_pool {
        g.keep_pool()?;
        eprintln!("memory pool: release threshold set to the maximum (--keep-pool)");
    }
    if args.untracked {
        g.untracked()?;
        eprintln!("event tracking off (--untracked)");
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for &dt in args.dtypes() {
        for (rows, hidden) in args.shapes() {
            let eb = dt.size_in_bytes();
            let set_bytes = rows * hidden * eb;
            let sets = ROTATE_BYTES.div_ceil(set_bytes).clamp(1, 64);
            let iters = if set_bytes > (256 << 20) {
                30
            } else if set_bytes > (16 << 20) {
                100
            } else {
                400
            };
            let iters = if args.quick { iters / 3 } else { iters };
            // x, residual, a 2-tensor copy source and (CUDA) a 2-tensor residual pair per set;
            // copy destination, outputs of the kernel and of the API call (2 tensors each), and
            // some slack.
            let need = set_bytes * (6 * sets + 8);
            if let Some(free) = g.free_bytes()? {
                if need > free {
                    let msg = format!(
                        "{} {}x{hidden}: skipped, needs about {} MiB, {} MiB free",
                        dt.as_str(),
                        rows,
                        need >> 20,
                        free >> 20
                    );
                    eprintln!("{msg}");
                    skipped.push(msg);
                    continue;
                }
            }
            let mut c = g.prepare(dt, rows, hidden, sets)?;
            let copy1 = event_median(g, iters, |i| g.copy(&mut c, i % sets, set_bytes))?;
            let copy2 = event_median(g, iters, |i| g.copy(&mut c, i % sets, 2 * set_bytes))?;
            let plain = event_median(g, iters, |i| g.kernel(&mut c, Op::RmsNorm, i % sets))?;
            let theirs = if G::CANDLE_NN {
                Some(event_median(g, iters, |i| g.candle_nn(&c, i % sets))?)
            } else {
                None
            };
            let fused = event_median(g, iters, |i| {
                g.kernel(&mut c, Op::FusedAddRmsNorm, i % sets)
            })?;
            let plain_api = wall_per_call(g, iters, |i| g.api_call(&c, Op::RmsNorm, i % sets))?;
            let fused_api =
                wall_per_call(g, iters, |i| g.api_call(&c, Op::FusedAddRmsNorm, i % sets))?;
            // Last: they change the inputs.
            let plain_in =
                wall_per_call(g, iters, |i| g.api_inplace(&mut c, Op::RmsNorm, i % sets))?;
            let fused_in = wall_per_call(g, iters, |i| {
                g.api_inplace(&mut c, Op::FusedAddRmsNorm, i % sets)
            })?;
            drop(c);
            for (op, kernel_us, api_us, api_inplace_us, candle_nn_us, copy_us) in [
                (Op::RmsNorm, plain, plain_api, plain_in, theirs, copy1),
                (Op::FusedAddRmsNorm, fused, fused_api, fused_in, None, copy2),
            ] {
                let r = Row {
                    backend: g.backend(),
                    op,
                    dtype: dt,
                    rows,
                    hidden,
                    bytes: op.tensors() * set_bytes + hidden * eb,
                    iters,
                    kernel_us,
                    api_us,
                    api_inplace_us,
                    candle_nn_us,
                    copy_us,
                };
                eprintln!(
                    "{} {} {} {}x{}: kernel {:.1} us ({:.1}% of copy), api {:.1} us/call, in place {:.1} us/call, copy {:.1} us",
                    r.backend,
                    op.name(),
                    dt.as_str(),
                    rows,
                    hidden,
                    kernel_us,
                    100.0 * copy_us / kernel_us,
                    api_us,
                    api_inplace_us,
                    copy_us
                );
                out.push(r);
            }
        }
    }
    println!();
    println!("{}", g.describe());
    println!();
    print!("{}", table(&out));
    for s in &skipped {
        println!("- {s}");
    }
    if let Some(extra) = g.extra(args)? {
        println!();
        print!("{extra}");
    }
    Ok(out)
}

/// The Markdown table: per row, kernel time by events (median), GB/s and % of the copy of the
/// same bytes at that time; the public API's wall time per call and its % of copy, allocating
/// and in place; candle_nn and our speed-up over it; the copy.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| op | dtype | rows x hidden | kernel us | kernel GB/s | % of copy | API us/call | API % of copy | in place us/call | in place % of copy | candle_nn us | vs candle_nn | copy us |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (cnn, spd) = match r.candle_nn_us {
            Some(v) => (format!("{v:.1}"), format!("{:.2}x", v / r.kernel_us)),
            None => ("-".into(), "-".into()),
        };
        s += &format!(
            "| {} | {} | {}x{} | {:.1} | {:.0} | {:.1}% | {:.1} | {:.1}% | {:.1} | {:.1}% | {cnn} | {spd} | {:.1} |\n",
            r.op.name(),
            r.dtype.as_str(),
            r.rows,
            r.hidden,
            r.kernel_us,
            r.bytes as f64 / r.kernel_us / 1e3,
            100.0 * r.copy_us / r.kernel_us,
            r.api_us,
            100.0 * r.copy_us / r.api_us,
            r.api_inplace_us,
            100.0 * r.copy_us / r.api_inplace_us,
            r.copy_us
        );
    }
    s
}

/// One JSON object a line (`scripts/gpu/torch_bench.py` reads `op`, `dtype`, `rows`,
/// `hidden`, `ours_us`, `candle_nn_us`, `copy_us`).
pub fn write_jsonl(path: &str, rows: &[Row]) -> Result<()> {
    use std::io::Write;
    let r3 = |v: f64| (v * 1e3).round() / 1e3;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        let v = serde_json::json!({
            "backend": r.backend,
            "op": r.op.name(),
            "dtype": r.dtype.as_str(),
            "rows": r.rows,
            "hidden": r.hidden,
            "bytes": r.bytes,
            "iters": r.iters,
            "ours_us": r3(r.kernel_us),
            "api_us": r3(r.api_us),
            "api_inplace_us": r3(r.api_inplace_us),
            "candle_nn_us": r.candle_nn_us.map(r3),
            "copy_us": r3(r.copy_us),
        });
        writeln!(f, "{v}")?;
    }
    f.flush()?;
    Ok(())
}
