//! Device memory: [`RocmTensor`], a contiguous device buffer with a dtype and a shape, and its
//! copies to and from the host and within the device.

use super::device::RocmDevice;
use super::runtime::{err, hip};
use super::stream::RocmStream;
use super::sys;
use candle_core::{DType, Device, Result, Shape, Tensor};
use std::ffi::c_void;

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

    /// Copies the tensor to a CPU [`Tensor`], after waiting for all work on its device: the
    /// float dtypes, and the quantised ops' `U8` and `F8E4M3` values.
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
            // The quantised values, byte for byte (no fp8 element type is exported here).
            DType::U8 | DType::F8E4M3 => {
                let bytes = self.download::<u8>()?;
                Tensor::from_raw_buffer(&bytes, self.dtype, shape.dims(), &Device::Cpu)
            }
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
        let rc = unsafe { (h.hipMemsetAsync)(self.ptr, i32::from(byte), n, stream.raw()) };
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
                stream.raw(),
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
