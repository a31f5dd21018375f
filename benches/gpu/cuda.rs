//! CUDA backend: Candle CUDA tensors; events and copies on Candle's stream. `kernel` is the
//! public op (`candle_rmsnorm::rms_norm` / `fused_add_rms_norm`, Candle allocating the outputs
//! from its stream-ordered pool), so the event figure and the API figure time the same call.

use crate::harness::{Gpu, Op, EPS};
use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda::cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream};
use candle_core::{CudaDevice, DType, Device, Error, Result, Tensor};
use std::sync::Arc;

pub mod channels;
pub mod quant;
pub mod rope;
pub mod variance;

pub struct Cuda {
    dev: Device,
    cd: CudaDevice,
    stream: Arc<CudaStream>,
}

pub struct Case {
    xs: Vec<Tensor>,
    rs: Vec<Tensor>,
    /// Per set, a `[normed; residual]` pair for the in-place fused op.
    pairs: Vec<Tensor>,
    /// A unit weight for the in-place `rms_norm`, which runs on the same x again and again: the
    /// values stay normalised (a random weight drifts them to inf and 0, timing the rescue).
    w1: Tensor,
    w: Tensor,
    /// Per set, a source of two tensors' bytes (the fused op's copy), and one destination.
    srcs: Vec<CudaSlice<u8>>,
    dst: CudaSlice<u8>,
}

impl Cuda {
    /// Device 0, or why there is none (`Err` for real failures).
    pub fn new() -> Result<std::result::Result<Self, String>> {
        match CudaContext::device_count() {
            Ok(n) if n > 0 => {}
            Ok(_) => return Ok(Err("no CUDA device visible".into())),
            Err(e) => return Ok(Err(format!("CUDA driver unavailable: {e}"))),
        }
        let dev = Device::new_cuda(0)?;
        let Device::Cuda(cd) = &dev else {
            unreachable!("new_cuda returned another device")
        };
        let cd = cd.clone();
        let stream = cd.cuda_stream();
        Ok(Ok(Self { dev, cd, stream }))
    }
}

/// The public op `op` on `x` (and residual `r` for the fused op) with weight `w`.
fn call(op: Op, x: &Tensor, r: &Tensor, w: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
    match op {
        Op::RmsNorm => Ok((candle_rmsnorm::rms_norm(x, w, EPS)?, None)),
        Op::FusedAddRmsNorm => {
            let (y, s) = candle_rmsnorm::fused_add_rms_norm(x, r, w, EPS)?;
            Ok((y, Some(s)))
        }
    }
}

impl Gpu for Cuda {
    type Event = CudaEvent;
    type Case = Case;
    type Out = (Tensor, Option<Tensor>);
    const CANDLE_NN: bool = true;

    fn backend(&self) -> &'static str {
        "cuda"
    }

    fn describe(&self) -> String {
        let ctx = self.stream.context();
        format!(
            "cuda device 0: {}; kernel = candle_rmsnorm op on Candle tensors between events \
             (median), API = wall clock of back-to-back calls of the same op / calls",
            ctx.name().unwrap_or_else(|e| format!("(name: {e})"))
        )
    }

    fn free_bytes(&self) -> Result<Option<usize>> {
        let (free, _) = self.stream.context().mem_get_info().map_err(Error::wrap)?;
        Ok(Some(free))
    }

    fn prepare(&self, dt: DType, rows: usize, hidden: usize, sets: usize) -> Result<Case> {
        let randn = || Tensor::randn(0f32, 1f32, (rows, hidden), &self.dev)?.to_dtype(dt);
        let xs = (0..sets).map(|_| randn()).collect::<Result<_>>()?;
        let rs: Vec<Tensor> = (0..sets).map(|_| randn()).collect::<Result<_>>()?;
        let pairs = rs
            .iter()
            .map(candle_rmsnorm::residual_pair)
            .collect::<Result<_>>()?;
        let w = Tensor::randn(0f32, 1f32, hidden, &self.dev)?.to_dtype(dt)?;
        let w1 = Tensor::ones(hidden, dt, &self.dev)?;
        let two = 2 * rows * hidden * dt.size_in_bytes();
        let srcs = (0..sets)
            .map(|_| self.cd.alloc_zeros::<u8>(two))
            .collect::<Result<_>>()?;
        let dst = self.cd.alloc_zeros::<u8>(two)?;
        Ok(Case {
            xs,
            rs,
            pairs,
            w1,
            w,
            srcs,
            dst,
        })
    }

    fn record(&self) -> Result<CudaEvent> {
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(Error::wrap)
    }

    fn elapsed_us(&self, start: &CudaEvent, end: &CudaEvent) -> Result<f64> {
        let ms = start.elapsed_ms(end).map_err(Error::wrap)?;
        Ok(f64::from(ms) * 1e3)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(Error::wrap)
    }

    fn copy(&self, c: &mut Case, set: usize, bytes: usize) -> Result<()> {
        let s = c.srcs[set].slice(0..bytes);
        let mut d = c.dst.slice_mut(0..bytes);
        self.stream.memcpy_dtod(&s, &mut d).map_err(Error::wrap)
    }

    fn kernel(&self, c: &mut Case, op: Op, set: usize) -> Result<Self::Out> {
        call(op, &c.xs[set], &c.rs[set], &c.w)
    }

    fn api_call(&self, c: &Case, op: Op, set: usize) -> Result<()> {
        call(op, &c.xs[set], &c.rs[set], &c.w).map(drop)
    }

    fn api_inplace(&self, c: &mut Case, op: Op, set: usize) -> Result<()> {
        match op {
            Op::RmsNorm => candle_rmsnorm::rms_norm_inplace(&c.xs[set], &c.w1, EPS),
            Op::FusedAddRmsNorm => {
                candle_rmsnorm::fused_add_rms_norm_inplace(&c.pairs[set], &c.xs[set], &c.w, EPS)
            }
        }
    }

    fn keep_pool(&self) -> Result<()> {
        candle_rmsnorm::keep_memory_pool(&self.dev)
    }

    fn untracked(&self) -> Result<()> {
        // SAFETY: the benchmark queues all its work on the device's one stream, so no buffer
        // is used on another stream and the events tracking would record order nothing.
        unsafe { self.cd.disable_event_tracking() };
        Ok(())
    }

    fn candle_nn(&self, c: &Case, set: usize) -> Result<Self::Out> {
        Ok((candle_nn::ops::rms_norm(&c.xs[set], &c.w, EPS)?, None))
    }
}

/// `--first-calls`: the wall clock of the first call of every kernel variant in this process
/// (op, input dtype, weight dtype, a short and a long row: the two kernel families), each from a
/// synchronised device to a synchronised device; the very first includes loading the module
/// (a cubin, or the PTX the driver compiles when `CANDLE_RMSNORM_CUDA_IMAGE=ptx`). Run it in a
/// fresh process, before anything else touches the kernels. Returns (label, ms) pairs.
pub fn first_calls(g: &Cuda) -> Result<Vec<(String, f64)>> {
    let dev = &g.dev;
    let rows = 4096;
    let mut out = Vec::new();
    for dt in [DType::BF16, DType::F16, DType::F32, DType::F64] {
        let wdts: &[DType] = if matches!(dt, DType::BF16 | DType::F16) {
            &[dt, DType::F32]
        } else {
            &[dt]
        };
        for &wdt in wdts {
            for hidden in [128, 5120] {
                let x = Tensor::randn(0f32, 1f32, (rows, hidden), dev)?.to_dtype(dt)?;
                let w = Tensor::randn(0f32, 1f32, hidden, dev)?.to_dtype(wdt)?;
                dev.synchronize()?;
                for op in [Op::RmsNorm, Op::FusedAddRmsNorm] {
                    let t = std::time::Instant::now();
                    drop(call(op, &x, &x, &w)?);
                    dev.synchronize()?;
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    let label = format!(
                        "{} x {} w {} {rows}x{hidden}",
                        op.name(),
                        dt.as_str(),
                        wdt.as_str()
                    );
                    eprintln!("first call {label}: {ms:.3} ms");
                    out.push((label, ms));
                }
            }
        }
    }
    Ok(out)
}
