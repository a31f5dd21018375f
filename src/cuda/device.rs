//! Per-device state of the CUDA launcher, looked up once per device (multiprocessor count,
//! warp size, loaded kernels and their occupancy), and the one `unsafe` launch.

use crate::gpu::abi::NormArgs;
use crate::gpu::call::{DeviceShape, Launch};
use candle_core::cuda::cudarc::driver::{
    sys, CudaFunction, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{DeviceId, WrapErr};
use candle_core::{CudaDevice, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Every kernel, as PTX for the `CUDA_COMPUTE_CAP` the crate was built for (default sm_80).
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rms_norm.ptx"));
/// The module name under which Candle caches the loaded PTX, per device.
const MODULE: &str = "candle_rmsnorm_v2";

// SAFETY: `NormArgs` is `#[repr(C)]`, `Copy`, made only of integers and an f64, and has the
// layout of `struct NormArgs` in hip/norm_args.h (both sides assert its size); every kernel
// takes it by value, so the driver copies these bytes as the one kernel parameter.
unsafe impl DeviceRepr for NormArgs {}

#[derive(Default)]
struct Cache {
    shape: HashMap<DeviceId, DeviceShape>,
    funcs: HashMap<(DeviceId, String), CudaFunction>,
    /// Blocks of (kernel, block size) resident per multiprocessor.
    fit: HashMap<(DeviceId, String, u32), u32>,
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Multiprocessor count and warp size of `dev`.
pub(super) fn shape(dev: &CudaDevice, st: &CudaStream) -> Result<DeviceShape> {
    if let Some(&s) = cache().shape.get(&dev.id()) {
        return Ok(s);
    }
    let ctx = st.context();
    let mps = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()?;
    let warp = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE)
        .w()?;
    let s = DeviceShape {
        warp_size: warp as u32,
        multiprocessors: mps.max(1) as u32,
    };
    cache().shape.insert(dev.id(), s);
    Ok(s)
}

/// The kernel `name` and how many blocks of `block` threads of it fit on a multiprocessor at
/// once (the driver's occupancy query), both looked up once per device.
pub(super) fn function(dev: &CudaDevice, name: &str, block: u32) -> Result<(CudaFunction, u32)> {
    let key = (dev.id(), name.to_string());
    let fit_key = (dev.id(), name.to_string(), block);
    {
        let c = cache();
        if let (Some(f), Some(&n)) = (c.funcs.get(&key), c.fit.get(&fit_key)) {
            return Ok((f.clone(), n));
        }
    }
    let f = dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function();
    let n = f
        .occupancy_max_active_blocks_per_multiprocessor(block, 0, None)
        .w()?;
    let mut c = cache();
    c.funcs.insert(key, f.clone());
    c.fit.insert(fit_key, n);
    Ok((f, n))
}

/// Queues `launch` of `func` with `block` threads a block on `st`.
///
/// # Safety
/// Every address in `launch.args` must lie in device memory that stays valid until the kernel
/// has run (hold the buffers' stream guards until after this call), sized for the rows,
/// strides and hidden size the args state, with output rows overlapping no input row; `func`
/// must be one of this crate's kernels and `launch` one of the launches planned for it.
pub(super) unsafe fn launch(
    st: &CudaStream,
    func: &CudaFunction,
    block: u32,
    launch: &Launch,
) -> Result<()> {
    let cfg = LaunchConfig {
        grid_dim: (launch.grid, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = st.launch_builder(func);
    b.arg(&launch.args);
    // SAFETY: `args` matches the kernel's one by-value parameter (see the DeviceRepr impl);
    // the caller vouches for the addresses inside; the grid covers the launch's rows with
    // `rows_per_block` rows per block as the kernel expects.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}
