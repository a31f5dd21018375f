//! ROCm backend: `candle_rmsnorm::rocm` device tensors on the device's stream. Candle 0.11 has no
//! ROCm device, so the public API here is `rocm::rms_norm` / `rocm::fused_add_rms_norm` on
//! `RocmTensor`s. Its outputs come from `hipMalloc`, and dropping them calls `hipFree`, which
//! waits for the device; so `kernel` launches the same kernels through the raw launchers into
//! outputs allocated once (an event pair would otherwise also time `hipMalloc`), and the API
//! figure shows what the allocating calls cost end to end.
//! After the table: host tensors through `Backend::Rocm` (upload, kernel, download) against the
//! CPU path, bf16, on the shapes the CPU benchmark shares with this one.

use crate::harness::{Args, Gpu, Op, EPS};
use crate::shapes::{On, SHAPES};
use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::rocm::{self, RawNorm, RocmDevice, RocmEvent, RocmTensor};
use candle_rmsnorm::{Backend, NormConfig};

pub struct Rocm {
    dev: RocmDevice,
    cfg: NormConfig,
}

pub struct Case {
    dtype: DType,
    rows: usize,
    hidden: usize,
    xs: Vec<RocmTensor>,
    rs: Vec<RocmTensor>,
    w: RocmTensor,
    /// A unit weight for the in-place `rms_norm` (see the CUDA backend's `w1`).
    w1: RocmTensor,
    out: RocmTensor,
    sum: RocmTensor,
    /// Per set, a source of two tensors' bytes (the fused op's copy); destinations of one
    /// tensor (source: the set's x) and of two.
    srcs: Vec<RocmTensor>,
    dst1: RocmTensor,
    dst2: RocmTensor,
}

impl Rocm {
    /// Device 0, or why there is none (`Err` for real failures).
    pub fn new() -> Result<std::result::Result<Self, String>> {
        match rocm::device_count() {
            Ok(n) if n > 0 => {}
            Ok(_) => return Ok(Err("no AMD GPU visible to the HIP runtime".into())),
            Err(e) => return Ok(Err(format!("HIP runtime unavailable: {e}"))),
        }
        Ok(Ok(Self {
            dev: rocm::default_device()?,
            cfg: NormConfig::new(f64::from(EPS)),
        }))
    }
}

impl Gpu for Rocm {
    type Event = RocmEvent;
    type Case = Case;
    type Out = ();
    const CANDLE_NN: bool = false;

    fn backend(&self) -> &'static str {
        "rocm"
    }

    fn describe(&self) -> String {
        let runtime = rocm::runtime_info()
            .map(|(rt, v)| format!("{rt} {v:?}"))
            .unwrap_or_else(|e| e.to_string());
        format!(
            "rocm device {}: {} {} ({} CUs, code object {}), runtime {runtime}; kernel = raw \
             launch into preallocated outputs between events (median), API = wall clock of \
             back-to-back rocm::rms_norm / fused_add_rms_norm calls (hipMalloc + hipFree \
             each) / calls",
            self.dev.ordinal(),
            self.dev.name(),
            self.dev.gcn_arch_name(),
            self.dev.compute_units(),
            self.dev.code_object().arch
        )
    }

    fn free_bytes(&self) -> Result<Option<usize>> {
        Ok(Some(self.dev.memory_info()?.0))
    }

    fn prepare(&self, dt: DType, rows: usize, hidden: usize, sets: usize) -> Result<Case> {
        // One host tensor uploaded to every set: the values do not change the timing, the
        // addresses do.
        let x = Tensor::randn(0f32, 1., (rows, hidden), &Device::Cpu)?.to_dtype(dt)?;
        let r = Tensor::randn(0f32, 1., (rows, hidden), &Device::Cpu)?.to_dtype(dt)?;
        let w = Tensor::randn(0f32, 1., hidden, &Device::Cpu)?.to_dtype(dt)?;
        let up = |t: &Tensor| RocmTensor::from_tensor(&self.dev, t);
        let xs = (0..sets).map(|_| up(&x)).collect::<Result<_>>()?;
        let rs = (0..sets).map(|_| up(&r)).collect::<Result<_>>()?;
        let alloc = |dt, n| RocmTensor::alloc(&self.dev, dt, n);
        let n = rows * hidden;
        let srcs = (0..sets)
            .map(|_| alloc(DType::U8, 2 * n * dt.size_in_bytes()))
            .collect::<Result<_>>()?;
        Ok(Case {
            dtype: dt,
            rows,
            hidden,
            xs,
            rs,
            w: up(&w)?,
            w1: up(&Tensor::ones(hidden, dt, &Device::Cpu)?)?,
            out: alloc(dt, n)?,
            sum: alloc(dt, n)?,
            srcs,
            dst1: alloc(dt, n)?,
            dst2: alloc(DType::U8, 2 * n * dt.size_in_bytes())?,
        })
    }

    fn record(&self) -> Result<RocmEvent> {
        let e = RocmEvent::new(&self.dev)?;
        e.record(self.dev.stream()?)?;
        Ok(e)
    }

    fn elapsed_us(&self, start: &RocmEvent, end: &RocmEvent) -> Result<f64> {
        Ok(f64::from(start.elapsed_ms(end)?) * 1e3)
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }

    fn copy(&self, c: &mut Case, set: usize, bytes: usize) -> Result<()> {
        let stream = self.dev.stream()?;
        if bytes == c.dst1.size_in_bytes() {
            c.dst1.copy_from(&c.xs[set], stream)
        } else if bytes == c.dst2.size_in_bytes() {
            c.dst2.copy_from(&c.srcs[set], stream)
        } else {
            candle_core::bail!("rocm bench: no copy buffers of {bytes} bytes")
        }
    }

    fn kernel(&self, c: &mut Case, op: Op, set: usize) -> Result<()> {
        let args = RawNorm {
            dtype: c.dtype,
            weight_dtype: Some(c.dtype),
            rows: c.rows,
            hidden: c.hidden,
            x: c.xs[set].as_ptr(),
            x_stride: c.hidden,
            residual: c.rs[set].as_ptr(),
            res_stride: c.hidden,
            out: c.out.as_mut_ptr(),
            out_stride: c.hidden,
            sum_out: c.sum.as_mut_ptr(),
            sum_stride: c.hidden,
            weight: c.w.as_ptr(),
        };
        let stream = self.dev.stream()?.raw();
        // SAFETY: every pointer is a live allocation of `self.dev` of rows x hidden (weight:
        // hidden) elements of `dtype`, contiguous; outputs are distinct from the inputs and
        // from each other; the stream belongs to the device; the case outlives the launches
        // (the harness synchronises before dropping it).
        unsafe {
            match op {
                Op::RmsNorm => rocm::rms_norm_raw(&self.dev, stream, &args, &self.cfg),
                Op::FusedAddRmsNorm => {
                    rocm::fused_add_rms_norm_raw(&self.dev, stream, &args, &self.cfg)
                }
            }
        }
    }

    fn api_call(&self, c: &Case, op: Op, set: usize) -> Result<()> {
        let stream = self.dev.stream()?;
        match op {
            Op::RmsNorm => drop(rocm::rms_norm(&c.xs[set], Some(&c.w), &self.cfg, stream)?),
            Op::FusedAddRmsNorm => drop(rocm::fused_add_rms_norm(
                &c.xs[set],
                &c.rs[set],
                Some(&c.w),
                &self.cfg,
                stream,
            )?),
        }
        Ok(())
    }

    fn api_inplace(&self, c: &mut Case, op: Op, set: usize) -> Result<()> {
        let stream = self.dev.stream()?;
        let w = Some(&c.w);
        match op {
            Op::RmsNorm => rocm::rms_norm_inplace(&mut c.xs[set], Some(&c.w1), &self.cfg, stream),
            Op::FusedAddRmsNorm => rocm::fused_add_rms_norm_inplace(
                &mut c.xs[set],
                &mut c.rs[set],
                w,
                &self.cfg,
                stream,
            ),
        }
    }

    fn candle_nn(&self, _: &Case, _: usize) -> Result<()> {
        candle_core::bail!("candle_nn has no ROCm path")
    }

    fn extra(&self, args: &Args) -> Result<Option<String>> {
        let mut s = String::from(
            "| host tensors, bf16 | rows x hidden | Backend::Rocm ms | Backend::Cpu ms |\n\
             |---|---|---|---|\n",
        );
        let shapes = SHAPES
            .iter()
            .filter(|&&(r, h, on)| on == On::Both && args.only.is_none_or(|o| o == (r, h)));
        for &(rows, hidden, _) in shapes {
            let x = Tensor::randn(0f32, 1., (rows, hidden), &Device::Cpu)?.to_dtype(DType::BF16)?;
            let w = Tensor::ones(hidden, DType::BF16, &Device::Cpu)?;
            let mut cols = Vec::new();
            for b in [Backend::Rocm, Backend::Cpu] {
                let cfg = self.cfg.with_backend(b);
                candle_rmsnorm::rms_norm_with(&x, Some(&w), &cfg)?;
                let mut ms = Vec::new();
                for _ in 0..10 {
                    let t0 = std::time::Instant::now();
                    candle_rmsnorm::rms_norm_with(&x, Some(&w), &cfg)?;
                    ms.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                ms.sort_by(f64::total_cmp);
                cols.push(ms[ms.len() / 2]);
            }
            s += &format!("| | {rows}x{hidden} | {:.2} | {:.2} |\n", cols[0], cols[1]);
        }
        Ok(Some(s))
    }
}
