//! Host-side operands: the weight of a call read out of a `CpuStorage` into the precision a
//! backend computes or uploads in. The one weight conversion of the crate.

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
