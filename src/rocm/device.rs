//! Devices: the crate's code object loaded once per device, its kernels looked up once, and
//! the one `unsafe` kernel launch of the ROCm path.

use super::code_objects::{self, CodeObject};
use super::runtime::{err, hip};
use super::stream::{RocmEvent, RocmStream};
use super::sys::{Hip, HipFunction, HipModule, HipStream};
use crate::gpu::abi::NORM_ARGS_BYTES;
use crate::gpu::call::{Call, DeviceShape};
use crate::gpu::rope_plan::RopeLaunch;
use candle_core::Result;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Copy)]
struct Handle(*mut c_void);
// SAFETY: HIP modules and functions are process-wide handles that the runtime lets any thread
// use; this wrapper only carries the pointer.
unsafe impl Send for Handle {}
// SAFETY: as above; the handle is never mutated through a shared reference.
unsafe impl Sync for Handle {}

struct DeviceState {
    ordinal: usize,
    gcn_arch: String,
    name: String,
    compute_units: u32,
    code: &'static CodeObject,
    module: Handle,
    functions: Mutex<HashMap<String, Handle>>,
    stream: OnceLock<Result<RocmStream>>,
}

/// One AMD GPU with this crate's code object loaded. Cheap to clone; the module is loaded once
/// per device and process and shared by every clone and thread.
#[derive(Clone)]
pub struct RocmDevice {
    state: Arc<DeviceState>,
}

impl std::fmt::Debug for RocmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocmDevice")
            .field("ordinal", &self.state.ordinal)
            .field("name", &self.state.name)
            .field("gcn_arch", &self.state.gcn_arch)
            .field("code_object", &self.state.code.arch)
            .finish()
    }
}

impl PartialEq for RocmDevice {
    fn eq(&self, other: &Self) -> bool {
        self.state.ordinal == other.state.ordinal
    }
}

impl RocmDevice {
    /// Device `ordinal` (as HIP numbers them, after `HIP_VISIBLE_DEVICES`), its code object
    /// loaded on first use.
    ///
    /// # Errors
    /// When the HIP runtime is missing, there is no such device, or this build has no code
    /// object for the device's architecture (the message names it and the built ones).
    pub fn new(ordinal: usize) -> Result<Self> {
        static CACHE: OnceLock<Mutex<HashMap<usize, Arc<DeviceState>>>> = OnceLock::new();
        let h = hip()?;
        let count = h.device_count()?;
        if ordinal >= count {
            return Err(err(if count == 0 {
                format!(
                    "no AMD GPU is visible to the HIP runtime {} (hipGetDeviceCount returned 0{})",
                    h.path,
                    h.init_error
                        .as_deref()
                        .map(|e| format!("; {e}"))
                        .unwrap_or_default()
                )
            } else {
                format!("device {ordinal} requested but only {count} AMD GPU(s) are visible")
            }));
        }
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&ordinal) {
            return Ok(Self { state: s.clone() });
        }
        h.set_device(ordinal)?;
        let props = h.properties(ordinal)?;
        let code = code_objects::select(&props.gcn_arch)?;
        // The loader reads the ELF in place: hand it an 8-byte aligned copy.
        let mut image = vec![0u64; code.bytes.len().div_ceil(8)];
        // SAFETY: `image` has at least `code.bytes.len()` bytes; the two buffers are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                code.bytes.as_ptr(),
                image.as_mut_ptr().cast::<u8>(),
                code.bytes.len(),
            )
        };
        let mut module: HipModule = std::ptr::null_mut();
        // SAFETY: `image` holds a complete code object for this device's architecture and
        // outlives the call (HIP copies what it keeps); `module` is a valid out-pointer.
        let rc = unsafe { (h.hipModuleLoadData)(&mut module, image.as_ptr().cast()) };
        h.check("hipModuleLoadData", rc)?;
        let state = Arc::new(DeviceState {
            ordinal,
            gcn_arch: props.gcn_arch,
            name: props.name,
            compute_units: props.compute_units,
            code,
            module: Handle(module),
            functions: Mutex::new(HashMap::new()),
            stream: OnceLock::new(),
        });
        log::debug!(
            "candle-rmsnorm rocm: device {ordinal} is {} {} with {} CUs (code object {}, runtime {})",
            state.name,
            state.gcn_arch,
            state.compute_units,
            code.arch,
            h.path
        );
        cache.insert(ordinal, state.clone());
        Ok(Self { state })
    }

    /// The HIP ordinal.
    pub fn ordinal(&self) -> usize {
        self.state.ordinal
    }

    /// The device's `gcnArchName` as the runtime reports it, e.g. `gfx942:sramecc+:xnack-`.
    pub fn gcn_arch_name(&self) -> &str {
        &self.state.gcn_arch
    }

    /// The device's marketing name, e.g. `AMD Instinct MI300X`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Number of compute units.
    pub fn compute_units(&self) -> u32 {
        self.state.compute_units
    }

    /// The embedded code object running on this device.
    pub fn code_object(&self) -> &'static CodeObject {
        self.state.code
    }

    /// The crate's own stream on this device (created on first use, never destroyed): what
    /// the host-tensor path and [`RocmDevice::synchronize`] use.
    ///
    /// # Errors
    /// When the stream cannot be created.
    pub fn stream(&self) -> Result<&RocmStream> {
        self.state
            .stream
            .get_or_init(|| RocmStream::new(self))
            .as_ref()
            .map_err(|e| err(e.to_string()))
    }

    /// Waits for all work on this device.
    ///
    /// # Errors
    /// The HIP error of `hipDeviceSynchronize`, e.g. a failed kernel.
    pub fn synchronize(&self) -> Result<()> {
        let h = self.activate()?;
        // SAFETY: no arguments; waits for the current device.
        h.check("hipDeviceSynchronize", unsafe {
            (h.hipDeviceSynchronize)()
        })
    }

    /// Free and total device memory in bytes.
    ///
    /// # Errors
    /// The HIP error of `hipMemGetInfo`.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        let h = self.activate()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: two valid out-pointers.
        let rc = unsafe { (h.hipMemGetInfo)(&mut free, &mut total) };
        h.check("hipMemGetInfo", rc)?;
        Ok((free, total))
    }

    /// Makes this device current on the calling thread.
    pub(super) fn activate(&self) -> Result<&'static Hip> {
        let h = hip()?;
        h.set_device(self.state.ordinal)?;
        Ok(h)
    }

    fn function(&self, name: &str) -> Result<Handle> {
        let mut f = self
            .state
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(h) = f.get(name) {
            return Ok(*h);
        }
        if self.state.code.kernel(name).is_none() {
            return Err(err(format!(
                "kernel {name} is not in the {} code object (kernels: {})",
                self.state.code.arch,
                self.state
                    .code
                    .kernels
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let h = self.activate()?;
        let cname = CString::new(name).map_err(|_| err("kernel name with NUL"))?;
        let mut func: HipFunction = std::ptr::null_mut();
        // SAFETY: the module was loaded on this device and is never unloaded; `cname` is
        // NUL-terminated; `func` is a valid out-pointer.
        let rc =
            unsafe { (h.hipModuleGetFunction)(&mut func, self.state.module.0, cname.as_ptr()) };
        h.check("hipModuleGetFunction", rc)?;
        f.insert(name.to_string(), Handle(func));
        Ok(Handle(func))
    }

    /// Wavefront width and compute units, as a plan needs them: the width the kernels were
    /// compiled for (64 on gfx9, 32 on gfx10 and later).
    fn shape(&self) -> DeviceShape {
        let code = self.state.code;
        let wave = code.kernels.first().map(|k| k.wavefront_size);
        DeviceShape {
            warp_size: wave.unwrap_or(if code.arch.starts_with("gfx9") {
                64
            } else {
                32
            }),
            multiprocessors: self.state.compute_units,
            // No asynchronous copies into LDS on these targets yet: rows are not staged.
            stage_bytes: 0,
        }
    }

    /// The wavefront width the kernels were compiled for, as the q/k norm + RoPE plan takes it.
    pub(super) fn warp_size(&self) -> u32 {
        self.shape().warp_size
    }

    /// Plans `call` for this device and queues its launches on `stream`.
    ///
    /// # Safety
    /// Every address in `call.operands` must address device memory of this device that stays
    /// valid until the kernels finish, sized for `call.rows` rows of the strides and hidden size
    /// it states, with output rows not overlapping any input row; `stream` must be a live
    /// stream of this device or null.
    pub(super) unsafe fn launch(&self, stream: HipStream, call: &Call) -> Result<()> {
        if call.rows == 0 || call.hidden == 0 {
            return Ok(());
        }
        // No occupancy query on the HIP side yet: the geometry's "unknown" grid.
        let (kernel, plan) = call.plan(self.shape(), 0).map_err(err)?;
        for l in call.launches(&plan) {
            let geometry = (l.grid, plan.block, l.smem_bytes);
            // SAFETY: the caller vouches for the addresses (`launches` only advances them by
            // whole rows within `call.rows`) and for `stream`; the grid covers the launch's
            // rows with `rows_per_block` rows a block as the kernel expects; `l.args` is the
            // kernel's `NormArgs`.
            unsafe { self.launch_one(stream, &kernel, geometry, l.args)? };
        }
        Ok(())
    }

    /// Queues the planned q/k norm + rotary embedding launch `l` (`gpu::rope_plan`) on
    /// `stream`.
    ///
    /// # Safety
    /// Every address in `l.args` must address device memory of this device that stays valid
    /// until the kernel finishes, sized for the batch, positions, strides, heads and head size
    /// it states (weights of the norm's length, tables of `seq` rows of `head_dim / 2`), the
    /// output overlapping no input; `stream` must be a live stream of this device or null.
    pub(super) unsafe fn launch_rope(&self, stream: HipStream, l: &RopeLaunch) -> Result<()> {
        if l.grid == 0 {
            return Ok(());
        }
        // SAFETY: the caller's contract above; `l` was planned by `plan_rope` for this
        // device's wavefront width, so its grid and block fit the argument's geometry.
        unsafe { self.launch_one(stream, &l.kernel, (l.grid, l.block, 0), l.args) }
    }

    /// Queues kernel `kernel` of this device's module with the one by-value argument `arg`
    /// (`NormArgs` or `RopeArgs`, both `NORM_ARGS_BYTES`), `(grid, block, shared bytes)`.
    ///
    /// # Safety
    /// `arg` must be the argument `kernel` takes, every address in it valid for what the
    /// kernel reads and writes with this geometry until it finishes; `stream` as for
    /// [`RocmDevice::launch`].
    unsafe fn launch_one<A: Copy>(
        &self,
        stream: HipStream,
        kernel: &str,
        (grid, block, smem): (u32, u32, u32),
        arg: A,
    ) -> Result<()> {
        if std::mem::size_of::<A>() != NORM_ARGS_BYTES {
            return Err(err(format!(
                "{kernel}: an argument of {NORM_ARGS_BYTES} bytes"
            )));
        }
        let f = self.function(kernel)?;
        let h = self.activate()?;
        let mut arg = arg;
        let mut params = [(&mut arg as *mut A).cast::<c_void>()];
        // SAFETY: `f` is a kernel of this device's module taking one by-value argument of
        // NORM_ARGS_BYTES (checked in the code-object metadata at build and in the tests), the
        // size of `A` (checked above); `params` points at it for the call's
        // duration (HIP copies kernel arguments at launch); the caller vouches for the
        // argument's addresses, the geometry and `stream`.
        let rc = unsafe {
            (h.hipModuleLaunchKernel)(
                f.0,
                grid,
                1,
                1,
                block,
                1,
                1,
                smem,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        h.check(&format!("hipModuleLaunchKernel({kernel})"), rc)
    }
}

impl RocmStream {
    /// A new (blocking) stream on `device`.
    ///
    /// # Errors
    /// The HIP error of `hipStreamCreate`.
    pub fn new(device: &RocmDevice) -> Result<Self> {
        Self::on(device.ordinal())
    }
}

impl RocmEvent {
    /// A new event on `device`.
    ///
    /// # Errors
    /// The HIP error of `hipEventCreate`.
    pub fn new(device: &RocmDevice) -> Result<Self> {
        Self::on(device.ordinal())
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
