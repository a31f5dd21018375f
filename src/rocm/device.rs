//! Devices, code-object modules, streams, events and device memory. Every FFI call of the crate
//! happens in this file or in `sys.rs`.

use super::code_objects::{self, CodeObject};
use super::launch;
use super::sys::{self, Hip, HipEvent, HipFunction, HipModule, HipStream};
use crate::abi::NormArgs;
use candle_core::{DType, Device, Result, Shape, Tensor};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock};

fn err(msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("candle-rmsnorm rocm: {msg}")).bt()
}

/// The loaded HIP runtime, or the error saying why it is unavailable.
pub(crate) fn hip() -> Result<&'static Hip> {
    Hip::get().map_err(err)
}

/// Number of visible AMD GPUs.
///
/// # Errors
/// When the HIP runtime library cannot be loaded or initialised. No device is `Ok(0)`.
pub fn device_count() -> Result<usize> {
    hip()?.device_count()
}

/// The path of the loaded HIP runtime and its version number as HIP encodes it.
///
/// # Errors
/// When the HIP runtime library cannot be loaded or initialised.
pub fn runtime_info() -> Result<(String, Option<i32>)> {
    let h = hip()?;
    Ok((h.path.clone(), h.runtime_version()))
}

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
    fn activate(&self) -> Result<&'static Hip> {
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

    /// Wavefront width of `kernel` as compiled (64 on gfx9, 32 on gfx10 and later).
    pub(crate) fn wavefront_size(&self) -> u32 {
        self.state
            .code
            .kernels
            .first()
            .map(|k| k.wavefront_size)
            .unwrap_or(if self.state.code.arch.starts_with("gfx9") {
                64
            } else {
                32
            })
    }

    /// Launches `kernel` with one by-value [`NormArgs`].
    ///
    /// # Safety
    /// Every pointer in `args` must address device memory of this device that stays valid
    /// until the kernel finishes, sized for `args.rows` rows of the strides and hidden size it
    /// states, with output rows not overlapping any input row; `stream` must be a live stream
    /// of this device or null.
    pub(crate) unsafe fn launch(
        &self,
        stream: HipStream,
        kernel: &str,
        grid: u32,
        block: u32,
        args: &NormArgs,
    ) -> Result<()> {
        let f = self.function(kernel)?;
        let h = self.activate()?;
        let mut arg = *args;
        let mut params = [(&mut arg as *mut NormArgs).cast::<c_void>()];
        // SAFETY: `f` is a kernel of this device's module taking one 104-byte by-value
        // argument (checked in the code-object test), `params` points at it for the call's
        // duration (HIP copies kernel arguments at launch); the caller vouches for the
        // pointers inside and for `stream`.
        let rc = unsafe {
            (h.hipModuleLaunchKernel)(
                f.0,
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        h.check(&format!("hipModuleLaunchKernel({kernel})"), rc)
    }
}

/// A stream on one device, destroyed on drop.
pub struct RocmStream {
    device: usize,
    raw: HipStream,
}

// SAFETY: a hipStream_t may be used from any thread; HIP serialises work submitted to it.
unsafe impl Send for RocmStream {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for RocmStream {}

impl std::fmt::Debug for RocmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocmStream(device {}, {:p})", self.device, self.raw)
    }
}

impl RocmStream {
    /// A new (blocking) stream on `device`.
    ///
    /// # Errors
    /// The HIP error of `hipStreamCreate`.
    pub fn new(device: &RocmDevice) -> Result<Self> {
        let h = device.activate()?;
        let mut raw: HipStream = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the device is current.
        h.check("hipStreamCreate", unsafe { (h.hipStreamCreate)(&mut raw) })?;
        Ok(Self {
            device: device.ordinal(),
            raw,
        })
    }

    /// The raw `hipStream_t`, for passing to other HIP code or the raw launchers.
    pub fn raw(&self) -> HipStream {
        self.raw
    }

    /// The device ordinal the stream belongs to.
    pub fn device_ordinal(&self) -> usize {
        self.device
    }

    /// Waits for the work queued on this stream.
    ///
    /// # Errors
    /// The HIP error of `hipStreamSynchronize`, e.g. a failed kernel.
    pub fn synchronize(&self) -> Result<()> {
        let h = hip()?;
        // SAFETY: `raw` is a live stream created by this struct.
        h.check("hipStreamSynchronize", unsafe {
            (h.hipStreamSynchronize)(self.raw)
        })
    }
}

impl Drop for RocmStream {
    fn drop(&mut self) {
        if let Ok(h) = hip() {
            // SAFETY: `raw` was created by hipStreamCreate and is destroyed once; HIP waits
            // for queued work before releasing it.
            let _ = unsafe { (h.hipStreamDestroy)(self.raw) };
        }
    }
}

/// A timing event.
pub struct RocmEvent {
    raw: HipEvent,
}

// SAFETY: hipEvent_t handles may be used from any thread.
unsafe impl Send for RocmEvent {}
// SAFETY: as above.
unsafe impl Sync for RocmEvent {}

impl std::fmt::Debug for RocmEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocmEvent({:p})", self.raw)
    }
}

impl RocmEvent {
    /// A new event on `device`.
    ///
    /// # Errors
    /// The HIP error of `hipEventCreate`.
    pub fn new(device: &RocmDevice) -> Result<Self> {
        let h = device.activate()?;
        let mut raw: HipEvent = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        h.check("hipEventCreate", unsafe { (h.hipEventCreate)(&mut raw) })?;
        Ok(Self { raw })
    }

    /// Records the event on `stream`.
    ///
    /// # Errors
    /// The HIP error of `hipEventRecord`.
    pub fn record(&self, stream: &RocmStream) -> Result<()> {
        let h = hip()?;
        // SAFETY: both handles are live.
        h.check("hipEventRecord", unsafe {
            (h.hipEventRecord)(self.raw, stream.raw)
        })
    }

    /// Milliseconds between `self` (recorded earlier) and `end`, after waiting for `end`.
    ///
    /// # Errors
    /// The HIP errors of `hipEventSynchronize` / `hipEventElapsedTime`.
    pub fn elapsed_ms(&self, end: &RocmEvent) -> Result<f32> {
        let h = hip()?;
        // SAFETY: live event.
        h.check("hipEventSynchronize", unsafe {
            (h.hipEventSynchronize)(end.raw)
        })?;
        let mut ms = 0f32;
        // SAFETY: valid out-pointer, live events.
        h.check("hipEventElapsedTime", unsafe {
            (h.hipEventElapsedTime)(&mut ms, self.raw, end.raw)
        })?;
        Ok(ms)
    }
}

impl Drop for RocmEvent {
    fn drop(&mut self) {
        if let Ok(h) = hip() {
            // SAFETY: created by hipEventCreate, destroyed once.
            let _ = unsafe { (h.hipEventDestroy)(self.raw) };
        }
    }
}

/// A contiguous tensor in device memory: dtype, shape and an owned allocation (freed on drop).
pub struct RocmTensor {
    device: RocmDevice,
    ptr: *mut c_void,
    dtype: DType,
    shape: Shape,
}

// SAFETY: the allocation is owned by this value; device memory may be used from any thread.
unsafe impl Send for RocmTensor {}
// SAFETY: shared references only read the pointer value.
unsafe impl Sync for RocmTensor {}

impl std::fmt::Debug for RocmTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocmTensor")
            .field("device", &self.device.ordinal())
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish()
    }
}

impl RocmTensor {
    /// An uninitialised tensor on `device`.
    ///
    /// # Errors
    /// The HIP error of `hipMalloc` (e.g. out of memory), or a size overflow.
    pub fn alloc(device: &RocmDevice, dtype: DType, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let bytes = shape
            .elem_count()
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| err(format!("tensor {shape:?} of {dtype:?} is too large")))?;
        let h = device.activate()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        if bytes > 0 {
            // SAFETY: valid out-pointer; the device is current.
            let rc = unsafe { (h.hipMalloc)(&mut ptr, bytes) };
            h.check(&format!("hipMalloc({bytes} bytes)"), rc)?;
        }
        Ok(Self {
            device: device.clone(),
            ptr,
            dtype,
            shape,
        })
    }

    /// Copies a tensor (any device, any layout) to `device`.
    ///
    /// # Errors
    /// A dtype other than f32/f16/bf16/f64, or a HIP error.
    pub fn from_tensor(device: &RocmDevice, t: &Tensor) -> Result<Self> {
        let host = t.to_device(&Device::Cpu)?.flatten_all()?;
        let out = Self::alloc(device, t.dtype(), t.shape().clone())?;
        match t.dtype() {
            DType::F32 => out.upload(&host.to_vec1::<f32>()?, 0)?,
            DType::F16 => out.upload(&host.to_vec1::<half::f16>()?, 0)?,
            DType::BF16 => out.upload(&host.to_vec1::<half::bf16>()?, 0)?,
            DType::F64 => out.upload(&host.to_vec1::<f64>()?, 0)?,
            other => {
                return Err(err(format!(
                    "RocmTensor::from_tensor: dtype must be f32, f16, bf16 or f64, got {other:?}"
                )))
            }
        }
        Ok(out)
    }

    /// Copies `data` into elements `at..` (synchronous).
    pub(crate) fn upload<T: Copy>(&self, data: &[T], at: usize) -> Result<()> {
        if std::mem::size_of::<T>() != self.dtype.size_in_bytes() {
            return Err(err(format!(
                "upload: element size does not match {:?}",
                self.dtype
            )));
        }
        if at + data.len() > self.elem_count() {
            return Err(err("upload past the end of a device tensor"));
        }
        if data.is_empty() {
            return Ok(());
        }
        let h = self.device.activate()?;
        let bytes = std::mem::size_of_val(data);
        // SAFETY: the destination range lies inside this allocation (checked above), the
        // source is a live host slice of `bytes` bytes.
        let rc = unsafe {
            (h.hipMemcpy)(
                self.ptr
                    .cast::<u8>()
                    .add(at * self.dtype.size_in_bytes())
                    .cast(),
                data.as_ptr().cast(),
                bytes,
                sys::MEMCPY_HOST_TO_DEVICE,
            )
        };
        h.check("hipMemcpy(host to device)", rc)
    }

    /// Copies the whole tensor into a host vector after waiting for all work on the device.
    pub(crate) fn download<T: Copy + Default>(&self) -> Result<Vec<T>> {
        if std::mem::size_of::<T>() != self.dtype.size_in_bytes() {
            return Err(err(format!(
                "download: element size does not match {:?}",
                self.dtype
            )));
        }
        let mut v = vec![T::default(); self.elem_count()];
        if v.is_empty() {
            return Ok(v);
        }
        self.device.synchronize()?;
        let h = hip()?;
        // SAFETY: `v` has exactly as many bytes as the allocation; the device is current.
        let rc = unsafe {
            (h.hipMemcpy)(
                v.as_mut_ptr().cast(),
                self.ptr,
                std::mem::size_of_val(v.as_slice()),
                sys::MEMCPY_DEVICE_TO_HOST,
            )
        };
        h.check("hipMemcpy(device to host)", rc)?;
        Ok(v)
    }

    /// Copies the tensor to a CPU [`Tensor`], after waiting for all work on its device.
    ///
    /// # Errors
    /// A HIP error (including one from an earlier failed kernel).
    pub fn to_tensor(&self) -> Result<Tensor> {
        let shape = self.shape.clone();
        match self.dtype {
            DType::F32 => Tensor::from_vec(self.download::<f32>()?, shape, &Device::Cpu),
            DType::F16 => Tensor::from_vec(self.download::<half::f16>()?, shape, &Device::Cpu),
            DType::BF16 => Tensor::from_vec(self.download::<half::bf16>()?, shape, &Device::Cpu),
            DType::F64 => Tensor::from_vec(self.download::<f64>()?, shape, &Device::Cpu),
            other => Err(err(format!("to_tensor: unsupported dtype {other:?}"))),
        }
    }

    /// Sets every byte to `byte` on `stream` (tests poison outputs with it).
    ///
    /// # Errors
    /// The HIP error of `hipMemsetAsync`.
    pub fn fill_bytes(&mut self, byte: u8, stream: &RocmStream) -> Result<()> {
        let n = self.size_in_bytes();
        if n == 0 {
            return Ok(());
        }
        let h = self.device.activate()?;
        // SAFETY: the range is exactly this allocation; the stream is live.
        let rc = unsafe { (h.hipMemsetAsync)(self.ptr, i32::from(byte), n, stream.raw) };
        h.check("hipMemsetAsync", rc)
    }

    /// Copies `src` (same dtype and element count) into `self` on `stream`.
    ///
    /// # Errors
    /// Mismatched sizes or the HIP error of `hipMemcpyAsync`.
    pub fn copy_from(&mut self, src: &RocmTensor, stream: &RocmStream) -> Result<()> {
        if src.size_in_bytes() != self.size_in_bytes() {
            return Err(err(format!(
                "copy_from: source has {} bytes, destination {}",
                src.size_in_bytes(),
                self.size_in_bytes()
            )));
        }
        if self.size_in_bytes() == 0 {
            return Ok(());
        }
        let h = self.device.activate()?;
        // SAFETY: two distinct live allocations of the same size (`&mut self` excludes aliasing).
        let rc = unsafe {
            (h.hipMemcpyAsync)(
                self.ptr,
                src.ptr,
                self.size_in_bytes(),
                sys::MEMCPY_DEVICE_TO_DEVICE,
                stream.raw,
            )
        };
        h.check("hipMemcpyAsync(device to device)", rc)
    }

    /// The device holding the tensor.
    pub fn device(&self) -> &RocmDevice {
        &self.device
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape (the data is contiguous, row-major).
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// Size of the allocation in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.elem_count() * self.dtype.size_in_bytes()
    }

    /// The device address (null for an empty tensor).
    pub fn as_ptr(&self) -> *const c_void {
        self.ptr
    }

    /// The device address for writing (null for an empty tensor).
    pub fn as_mut_ptr(&mut self) -> *mut c_void {
        self.ptr
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for RocmTensor {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        if let Ok(h) = self.device.activate() {
            // SAFETY: allocated by hipMalloc on this device and freed once; hipFree waits for
            // the device, so no queued kernel still uses it.
            let _ = unsafe { (h.hipFree)(self.ptr) };
        }
    }
}

/// Launch wrapper used by the ops: plans the dispatches and launches each.
///
/// # Safety
/// As [`RocmDevice::launch`], for the operands in `o` covering `rows` rows.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_norm(
    device: &RocmDevice,
    stream: HipStream,
    fused: bool,
    x: DType,
    w: DType,
    rows: usize,
    hidden: usize,
    eps: f64,
    flags: u32,
    o: &launch::Operands,
) -> Result<()> {
    if rows == 0 || hidden == 0 {
        return Ok(());
    }
    let (kernel, plan) = launch::plan(
        fused,
        x,
        w,
        rows as u64,
        hidden as u64,
        device.wavefront_size(),
        device.compute_units(),
        o,
    )
    .map_err(err)?;
    for d in launch::dispatches(rows as u64, &plan) {
        let args = launch::pack(o, x.size_in_bytes(), hidden as u64, eps, flags, &plan, &d);
        // SAFETY: forwarded from the caller; `pack` only advances row pointers within the
        // `rows` rows the caller vouched for, and the grid covers exactly `d.rows` rows.
        unsafe { device.launch(stream, &kernel, d.grid, plan.block, &args)? };
    }
    Ok(())
}
