//! Device buffers of a call: the addresses of Candle's storages (with the guards that order
//! them on the stream) and the new output buffer.

use crate::error::float_error;
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop,
};
use candle_core::cuda::CudaStorageSlice;
use candle_core::{CudaDevice, CudaStorage, DType, Result};
use half::{bf16, f16};

/// The device address and length (elements) of a storage's buffer, with the guard that records
/// the read on `st` when dropped. The guard must outlive the launch that uses the address.
pub(super) fn base_ptr<'a>(
    op: &str,
    arg: &str,
    s: &'a CudaStorage,
    st: &'a CudaStream,
) -> Result<(u64, usize, SyncOnDrop<'a>)> {
    macro_rules! ptr {
        ($v:expr) => {{
            let (p, g) = $v.device_ptr(st);
            (p, $v.len(), g)
        }};
    }
    Ok(match &s.slice {
        CudaStorageSlice::F32(v) => ptr!(v),
        CudaStorageSlice::F16(v) => ptr!(v),
        CudaStorageSlice::BF16(v) => ptr!(v),
        CudaStorageSlice::F64(v) => ptr!(v),
        _ => {
            return Err(float_error(
                op,
                arg,
                candle_core::backend::BackendStorage::dtype(s),
            ))
        }
    })
}

/// [`base_ptr`] of a storage the call writes (an in-place op's target), with the guard that
/// records the write on `st`.
pub(super) fn base_ptr_mut<'a>(
    op: &str,
    arg: &str,
    s: &'a mut CudaStorage,
    st: &'a CudaStream,
) -> Result<(u64, usize, SyncOnDrop<'a>)> {
    let dtype = candle_core::backend::BackendStorage::dtype(&*s);
    macro_rules! ptr {
        ($v:expr) => {{
            let len = $v.len();
            let (p, g) = $v.device_ptr_mut(st);
            (p, len, g)
        }};
    }
    Ok(match &mut s.slice {
        CudaStorageSlice::F32(v) => ptr!(v),
        CudaStorageSlice::F16(v) => ptr!(v),
        CudaStorageSlice::BF16(v) => ptr!(v),
        CudaStorageSlice::F64(v) => ptr!(v),
        _ => return Err(float_error(op, arg, dtype)),
    })
}

/// An uninitialised output buffer (every element is written by the kernel).
pub(super) enum Out {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    BF16(CudaSlice<bf16>),
    F64(CudaSlice<f64>),
}

impl Out {
    /// `n` elements of `dt`, to be written in full before anything reads them.
    pub fn alloc(op: &str, dev: &CudaDevice, dt: DType, n: usize) -> Result<Self> {
        // SAFETY: the buffer is only read after the kernel has written all `n` elements (every
        // row of every output the launch covers; the launches cover all rows).
        unsafe {
            Ok(match dt {
                DType::F32 => Out::F32(dev.alloc::<f32>(n)?),
                DType::F16 => Out::F16(dev.alloc::<f16>(n)?),
                DType::BF16 => Out::BF16(dev.alloc::<bf16>(n)?),
                DType::F64 => Out::F64(dev.alloc::<f64>(n)?),
                other => return Err(float_error(op, "xs", other)),
            })
        }
    }

    /// The buffer's address, with the guard that records the write on `st`.
    pub fn ptr<'a>(&'a mut self, st: &'a CudaStream) -> (u64, SyncOnDrop<'a>) {
        match self {
            Out::F32(v) => v.device_ptr_mut(st),
            Out::F16(v) => v.device_ptr_mut(st),
            Out::BF16(v) => v.device_ptr_mut(st),
            Out::F64(v) => v.device_ptr_mut(st),
        }
    }

    pub fn into_storage(self, dev: &CudaDevice) -> CudaStorage {
        match self {
            Out::F32(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
            Out::F16(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
            Out::BF16(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
            Out::F64(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
        }
    }
}

/// The address of a quantised output's bytes (an `F8E4M3` or `U8` storage the call allocated),
/// with the guard that records the write on `st`.
pub(super) fn bytes_ptr_mut<'a>(
    s: &'a mut CudaStorage,
    st: &'a CudaStream,
) -> (u64, SyncOnDrop<'a>) {
    match &mut s.slice {
        CudaStorageSlice::U8(v) => v.device_ptr_mut(st),
        CudaStorageSlice::F8E4M3(v) => v.device_ptr_mut(st),
        _ => unreachable!("quantised values are allocated as U8 or F8E4M3"),
    }
}
