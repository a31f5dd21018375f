//! Host-side operands: the weight of a call read out of a `CpuStorage` into the precision a
//! backend computes or uploads in (the one weight conversion of the crate), and the storage of
//! quantised values that the CPU path writes and the ROCm path downloads into.

use crate::error::float_error;
use crate::layout::RowLayout;
use crate::quant::QuantDType;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cpu_backend::CpuDevice;
use candle_core::{CpuStorage, DType, Layout, Result, Shape};

/// The `hidden` weights of `s` at layout `l`, each passed through `f` as an f64 (exact for
/// every float dtype).
///
/// # Errors
/// A weight that is not one contiguous row of `hidden` float elements.
pub(crate) fn weight_values<C>(
    op: &str,
    s: &CpuStorage,
    l: &Layout,
    hidden: usize,
    f: impl Fn(f64) -> C,
) -> Result<Vec<C>> {
    let range = |len| RowLayout::weight_range(op, l, hidden, len);
    Ok(match s {
        CpuStorage::F32(d) => d[range(d.len())?].iter().map(|&e| f(e as f64)).collect(),
        CpuStorage::F64(d) => d[range(d.len())?].iter().map(|&e| f(e)).collect(),
        CpuStorage::F16(d) => d[range(d.len())?].iter().map(|e| f(e.to_f64())).collect(),
        CpuStorage::BF16(d) => d[range(d.len())?].iter().map(|e| f(e.to_f64())).collect(),
        other => return Err(float_error(op, "weight", other.dtype())),
    })
}

/// What a quantised op returns on host storages (the CPU path, the ROCm path's download).
pub(crate) struct QuantOut {
    /// `rows * hidden` bytes, of the dtype `QuantDType::storage_dtype`.
    pub values: CpuStorage,
    /// One scale per row.
    pub scales: Vec<f32>,
    /// The fused op's rounded sum, of the dtype of `xs`.
    pub sum: Option<CpuStorage>,
}

/// A new storage of `n` bytes of the values' dtype, every byte written by `write`.
pub(crate) fn value_storage(
    dtype: QuantDType,
    n: usize,
    write: impl FnOnce(&mut [u8]),
) -> Result<CpuStorage> {
    match dtype {
        QuantDType::I8 => {
            let mut v = vec![0u8; n];
            write(&mut v);
            Ok(CpuStorage::U8(v))
        }
        QuantDType::F8E4M3 => {
            // SAFETY: the storage is read only after `write` has set all `n` bytes (below).
            let mut s = unsafe { CpuDevice.alloc_uninit(&Shape::from(n), DType::F8E4M3)? };
            let CpuStorage::F8E4M3(v) = &mut s else {
                unreachable!("Candle allocates F8E4M3 storage for DType::F8E4M3")
            };
            assert_eq!(std::mem::size_of_val(v.as_slice()), v.len());
            // SAFETY: Candle's F8E4M3 is one byte (`repr(transparent)` over u8, checked above),
            // so its `n` elements are `n` bytes of the allocation; they are zeroed at once, before
            // anything reads them, so no uninitialised byte is ever read.
            let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n) };
            bytes.fill(0);
            write(bytes);
            Ok(s)
        }
    }
}
