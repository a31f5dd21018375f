//! Per-device state of the CUDA launcher, looked up once per device (multiprocessor count,
//! warp size, the loaded module, kernels and their occupancy), and the one `unsafe` launch.

use crate::gpu::abi::{self, NormArgs, RopeArgs};
use crate::gpu::call::{DeviceShape, Launch};
use candle_core::cuda::cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::cudarc::nvrtc::Ptx;
use candle_core::cuda::{DeviceId, WrapErr};
use candle_core::{CudaDevice, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The machine code `build/cuda.rs` embeds: `CUBINS` (compute capability, cubin) and `PTX`.
mod images {
    include!(concat!(env!("OUT_DIR"), "/cuda_images.rs"));
}

/// `CANDLE_RMSNORM_CUDA_IMAGE`: `ptx` loads the PTX even where a cubin fits (to compare, or when
/// a driver cannot load the cubins); a file path loads that image (a cubin, fatbin or PTX built
/// from this crate's `hip/` by a maintainer, to compare compilers). Unset or `cubin`: the
/// shipped cubin where one fits.
const IMAGE_ENV: &str = "CANDLE_RMSNORM_CUDA_IMAGE";

/// The cubin a device of compute capability `cap` runs (see [`abi::cubin_for`]), if any.
fn cubin_for(cap: u32) -> Option<(u32, &'static [u8])> {
    let built = abi::cubin_for(images::CUBINS.iter().map(|(c, _)| *c), cap)?;
    images::CUBINS.iter().find(|(c, _)| *c == built).copied()
}

/// Loads this crate's module on `ctx`: the cubin for its compute capability, else (or when
/// [`IMAGE_ENV`] says `ptx`) the PTX. A cubin the driver refuses is reported through `log` and
/// the PTX used instead: the same kernels, compiled at load time.
fn load_module(ctx: &Arc<CudaContext>) -> Result<Arc<CudaModule>> {
    let attr = |a| ctx.attribute(a).w();
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let cap = (major * 10 + minor) as u32;
    let choice = std::env::var(IMAGE_ENV).unwrap_or_default();
    let choice = choice.trim();
    if !matches!(choice, "" | "cubin" | "ptx") {
        let bytes = std::fs::read(choice).map_err(|e| {
            crate::error::op_error(
                "candle_rmsnorm",
                IMAGE_ENV,
                "cubin, ptx or a readable file",
                e,
            )
        })?;
        // A cubin (ELF) or fatbin goes in as bytes; text is PTX, which the driver wants
        // NUL-terminated (`from_src` does that).
        let image = if bytes.starts_with(b"\x7fELF") || bytes.starts_with(&[0x50, 0xed, 0x55, 0xba])
        {
            Ptx::from_binary(bytes)
        } else {
            Ptx::from_src(String::from_utf8_lossy(&bytes).into_owned())
        };
        return ctx.load_module(image).w();
    }
    if let Some((built, cubin)) = cubin_for(cap).filter(|_| choice != "ptx") {
        match ctx.load_module(Ptx::from_binary(cubin.to_vec())) {
            Ok(m) => return Ok(m),
            Err(e) => log::warn!(
                "candle-rmsnorm: the driver refused the sm_{built} cubin on this sm_{cap} \
                 device ({e}); compiling the PTX instead"
            ),
        }
    }
    ctx.load_module(Ptx::from_src(images::PTX)).w()
}

// SAFETY: `NormArgs` is `#[repr(C)]`, `Copy`, made only of integers and an f64, and has the
// layout of `struct NormArgs` in hip/norm_args.h (both sides assert its size); every kernel
// takes it by value, so the driver copies these bytes as the one kernel parameter.
unsafe impl DeviceRepr for NormArgs {}

#[derive(Default)]
struct Cache {
    shape: HashMap<DeviceId, DeviceShape>,
    modules: HashMap<DeviceId, Arc<CudaModule>>,
    funcs: HashMap<(DeviceId, String), CudaFunction>,
    /// Blocks of (kernel, block size) resident per multiprocessor.
    fit: HashMap<(DeviceId, String, u32, u32), u32>,
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Multiprocessor count and warp size of `dev`.
/// Sets the release threshold of `dev`'s default memory pool (the one Candle allocates from,
/// through `cuMemAllocAsync`) to the maximum, so memory freed by dropped tensors stays in the
/// pool for the next allocation instead of going back to the driver at each synchronisation.
pub(super) fn keep_pool(dev: &CudaDevice) -> Result<()> {
    let cu = dev.cuda_stream().context().cu_device();
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: plain driver calls on a valid device handle with pointers to live locals: the
    // device's default pool, then its release threshold, a u64 attribute.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, cu).result().w()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut std::ffi::c_void,
        )
        .result()
        .w()
    }
}

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
    let attr = |a| ctx.attribute(a).w();
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    // Rows are staged in shared memory by cp.async (sm_80+): a block may take half of a
    // multiprocessor's shared memory, less 2 KiB (the kernels' static reduction arrays and the
    // 1 KiB the driver reserves per block), so two blocks fit.
    // CANDLE_RMSNORM_STAGES=0 turns staging off (to compare the two loops on one build).
    let off = std::env::var("CANDLE_RMSNORM_STAGES").is_ok_and(|v| v == "0");
    let stage_bytes = if major >= 8 && !off {
        let per_mp = attr(
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        )?;
        let optin =
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        ((per_mp / 2).min(optin) - 2048).max(0) as u64
    } else {
        0
    };
    let s = DeviceShape {
        warp_size: warp as u32,
        multiprocessors: mps.max(1) as u32,
        stage_bytes,
    };
    cache().shape.insert(dev.id(), s);
    Ok(s)
}

/// The kernel `name` and how many blocks of `block` threads and `smem` bytes of dynamic shared
/// memory fit on a multiprocessor at once (the driver's occupancy query), both looked up once
/// per device; `max_smem` (the device's staging budget) is allowed to every kernel at load.
pub(super) fn function(
    dev: &CudaDevice,
    name: &str,
    block: u32,
    smem: u32,
    max_smem: u64,
) -> Result<(CudaFunction, u32)> {
    let key = (dev.id(), name.to_string());
    let fit_key = (dev.id(), name.to_string(), block, smem);
    {
        let c = cache();
        if let (Some(f), Some(&n)) = (c.funcs.get(&key), c.fit.get(&fit_key)) {
            return Ok((f.clone(), n));
        }
    }
    let cached = cache().modules.get(&dev.id()).cloned();
    let module = match cached {
        Some(m) => m,
        None => {
            let m = load_module(dev.cuda_stream().context())?;
            cache().modules.entry(dev.id()).or_insert(m).clone()
        }
    };
    let f = match cache().funcs.get(&key) {
        Some(f) => f.clone(),
        None => {
            let f = module.load_function(name).w()?;
            if max_smem > 48 << 10 {
                f.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    max_smem as i32,
                )
                .w()?;
            }
            f
        }
    };
    let n = f
        .occupancy_max_active_blocks_per_multiprocessor(block, smem as usize, None)
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
/// strides and hidden size the args state, with each output row overlapping no input row or
/// being exactly the input row it is computed from (in place: see `hip/norm_regs.h`); `func`
/// must be one of this crate's kernels and `launch` one of the launches planned for it.
pub(super) unsafe fn launch(
    st: &CudaStream,
    func: &CudaFunction,
    block: u32,
    launch: &Launch,
) -> Result<()> {
    // SAFETY: the caller's promises above are `launch_args`'s.
    unsafe {
        launch_args(
            st,
            func,
            (launch.grid, block, launch.smem_bytes),
            &launch.args,
        )
    }
}

// SAFETY: `RopeArgs` is `#[repr(C)]`, `Copy`, made only of integers and an f64, and has the
// layout of `struct RopeArgs` in hip/rope_args.h (both sides assert its size); the
// rms_norm_rope kernels take it by value as their one parameter.
unsafe impl DeviceRepr for RopeArgs {}

/// Queues `func` over `grid` blocks of `block` threads (`smem` bytes of dynamic shared memory)
/// with its one by-value parameter `args`.
///
/// # Safety
/// `args` must be the parameter type of `func` (one of this crate's kernels), planned for it
/// with this block size; every address in it must lie in device memory that stays valid until
/// the kernel has run (the caller holds the stream guards), sized for what the args state, with
/// outputs overlapping no input.
pub(super) unsafe fn launch_args<A: DeviceRepr>(
    st: &CudaStream,
    func: &CudaFunction,
    (grid, block, smem): (u32, u32, u32),
    args: &A,
) -> Result<()> {
    let cfg = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    };
    let mut b = st.launch_builder(func);
    b.arg(args);
    // SAFETY: `args` matches the kernel's one by-value parameter (see the DeviceRepr impls);
    // the caller vouches for the addresses inside and for the plan's grid and block.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}
