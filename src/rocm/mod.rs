//! AMD GPUs through HIP (feature `rocm`).
//!
//! Layers, each using only those above it in this list: `sys` (the raw function table:
//! `libamdhip64` loaded at run time, integer `hipError_t` codes turned into errors carrying
//! `hipGetErrorName`), `runtime` (the process's runtime), `code_objects` (the embedded HSACO
//! per architecture), `device` (a device with the code object loaded once, its kernels, and
//! the one kernel launch), `stream` (streams and events), `memory` ([`RocmTensor`]), then the
//! ops: `ops` (safe, on device tensors), `raw` (on raw pointers, `unsafe`), `host` (host tensors
//! staged through the device), `quant` and `rope` (the quantised ops and q/k norm + RoPE on
//! device tensors; `rope` also stages host tensors). The same binary starts on machines with and without ROCm:
//! nothing is linked at build time.
//!
//! # Device-resident API
//! [`RocmTensor`] is a contiguous device buffer with a dtype and a shape;
//! [`RocmTensor::from_tensor`] uploads a [`candle_core::Tensor`], [`RocmTensor::to_tensor`]
//! downloads one. [`rms_norm`] and [`fused_add_rms_norm`] run on device tensors with no host
//! staging, on a stream you pass; [`rms_norm_inplace`] and [`fused_add_rms_norm_inplace`] write
//! into `x` (and the residual) instead of allocating. [`rms_norm_raw`] /
//! [`fused_add_rms_norm_raw`] take raw device pointers and a `hipStream_t` for code that manages
//! its own memory. [`rms_norm_quant`] / [`fused_add_rms_norm_quant`] write fp8 e4m3 or i8
//! values with an f32 scale per row ([`RocmQuantized`]); [`rms_norm_rope`] /
//! [`qk_rms_norm_rope`] normalise q (and k) and rotate them, written in the attention layout.
//! These two families were compiled and their error paths tested on a machine without an AMD
//! GPU; they have not run on AMD hardware yet (`docs/rocm.md`).
//!
//! ```no_run
//! use candle_rmsnorm::rocm::{self, RocmDevice, RocmTensor};
//! use candle_rmsnorm::NormConfig;
//! # fn main() -> candle_core::Result<()> {
//! let dev = RocmDevice::new(0)?;
//! let stream = dev.stream()?;
//! let x = candle_core::Tensor::randn(0f32, 1., (4096, 5120), &candle_core::Device::Cpu)?;
//! let w = candle_core::Tensor::ones(5120, candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let (xd, wd) = (RocmTensor::from_tensor(&dev, &x)?, RocmTensor::from_tensor(&dev, &w)?);
//! let yd = rocm::rms_norm(&xd, Some(&wd), &NormConfig::new(1e-6), stream)?;
//! let y = yd.to_tensor()?; // waits for the device, copies to the host
//! # Ok(()) }
//! ```
//!
//! # Host tensors
//! The Candle ops (the norms, in place too, the quantised ops and q/k norm + RoPE) run host
//! tensors through these kernels only when the backend is
//! [`Backend::Rocm`](crate::Backend::Rocm) (`CANDLE_RMSNORM_BACKEND=rocm` or
//! [`NormConfig::with_backend`](crate::NormConfig::with_backend)): each call uploads the rows
//! it reads (and the weight, the tables), runs the kernel, waits, and downloads the result, so it moves
//! about twice the tensor's bytes over PCIe on top of the kernel's own traffic. `Backend::Auto`
//! keeps host tensors on the CPU path.
//! When ROCm cannot be used (no library, no device, no code object for the device), an
//! explicit `Rocm` request returns the error and logs it once through `log`.
//!
//! # From a ROCm-enabled Candle
//! candle-core has no ROCm device yet; the open upstream pull request (candle #3801) adds
//! `CustomOp::rocm_fwd(&RocmStorage, &Layout)` and a device stream. A backend built on it calls
//! [`rms_norm_raw`] / [`fused_add_rms_norm_raw`] on Candle's own buffers and stream, so the
//! kernel orders with Candle's other work and no synchronisation is added; `docs/rocm.md` has a
//! sketch of that `rocm_fwd`.

mod code_objects;
mod device;
mod host;
mod memory;
mod ops;
mod quant;
mod raw;
mod rope;
mod runtime;
mod stream;
mod sys;

pub use crate::gpu::abi::{
    kernel_weight_dtype, portable_kernel_names as kernel_names, NORM_ARGS_BYTES as KERNEL_ARG_BYTES,
};
pub use code_objects::{
    base_arch, built_archs, code_objects, compiler, select, CodeObject, KernelResources,
};
pub use device::RocmDevice;
pub use host::default_device;
pub(crate) use host::forward as host_forward;
pub(crate) use host::forward_inplace as host_forward_inplace;
pub(crate) use host::forward_quant as host_forward_quant;
pub use memory::RocmTensor;
pub use ops::{fused_add_rms_norm, fused_add_rms_norm_inplace, rms_norm, rms_norm_inplace};
pub use quant::{fused_add_rms_norm_quant, rms_norm_quant, RocmQuantized};
pub use raw::{fused_add_rms_norm_raw, rms_norm_raw, RawNorm};
pub(crate) use rope::forward as host_forward_rope;
pub use rope::{qk_rms_norm_rope, rms_norm_rope};
pub use runtime::{device_count, runtime_info};
pub use stream::{RocmEvent, RocmStream};
pub use sys::HipStream;
