//! Host-side operands: the weight of a call read out of a `CpuStorage` into the precision a
//! backend computes or uploads in (the one weight conversion of the crate), and what the
//! quantised ops return on host storages.

use crate::error::float_error;
use crate::layout::RowLayout;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

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
