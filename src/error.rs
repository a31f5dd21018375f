//! The error vocabulary of the crate (a leaf module): every error names the op, the argument,
//! what was expected and what was given, and the dtypes the ops take are listed here once.

use crate::config::Backend;
use candle_core::{DType, Error};
use std::fmt::Display;

/// The dtypes the ops take for `xs`, `residual` and `weight`.
pub(crate) const FLOAT_DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

/// [`FLOAT_DTYPES`] as words, for messages.
pub(crate) const FLOAT_DTYPES_TEXT: &str = "f32, f16, bf16 or f64";

/// Whether the ops take `dt` for `xs`, `residual` or `weight`.
pub(crate) fn is_float(dt: DType) -> bool {
    FLOAT_DTYPES.contains(&dt)
}

/// `{op}: {arg} must be {expected}, got {got}`.
pub(crate) fn op_error(op: &str, arg: &str, expected: impl Display, got: impl Display) -> Error {
    Error::Msg(format!("{op}: {arg} must be {expected}, got {got}")).bt()
}

/// The error for argument `arg` of a dtype outside [`FLOAT_DTYPES`].
pub(crate) fn float_error(op: &str, arg: &str, dt: DType) -> Error {
    op_error(
        op,
        arg,
        format!("of dtype {FLOAT_DTYPES_TEXT}"),
        format!("{dt:?}"),
    )
}

/// `Ok` when `dt` is one of [`FLOAT_DTYPES`], else the error for argument `arg`.
pub(crate) fn check_float(op: &str, arg: &str, dt: DType) -> Result<(), Error> {
    if is_float(dt) {
        Ok(())
    } else {
        Err(float_error(op, arg, dt))
    }
}

/// `Ok` when `eps` is finite and >= 0. An eps that came in as an f32 is shown the way the
/// caller wrote it.
pub(crate) fn check_eps(op: &str, eps: f64) -> Result<(), Error> {
    if eps.is_finite() && eps >= 0.0 {
        return Ok(());
    }
    let shown = if (eps as f32) as f64 == eps {
        (eps as f32).to_string()
    } else {
        eps.to_string()
    };
    Err(op_error(op, "eps", "finite and >= 0", shown))
}

/// The dimension a norm of `xs` (shape `dims`, rank >= 1) runs over, `dim` or the last, and
/// the description of it messages use; checks `dim` below the rank and the variance size in
/// `1..=dims[dim]`.
pub(crate) fn check_dims(
    op: &str,
    dims: &[usize],
    dim: Option<usize>,
    variance_size: Option<usize>,
) -> Result<(usize, String), Error> {
    let rank = dims.len();
    let d = dim.unwrap_or(rank.saturating_sub(1));
    if d >= rank {
        return Err(op_error(
            op,
            "dim",
            format!("below the rank of xs {dims:?} ({rank})"),
            d.to_string(),
        ));
    }
    let which = if d + 1 == rank {
        "the last dim".to_string()
    } else {
        format!("dim {d}")
    };
    let hidden = dims[d];
    if let Some(n) = variance_size {
        if n == 0 || n > hidden {
            return Err(op_error(
                op,
                "variance_size",
                format!("in 1..={hidden} ({which} of xs {dims:?})"),
                n.to_string(),
            ));
        }
    }
    Ok((d, which))
}

/// The error for a backend this build or these tensors cannot use.
pub(crate) fn backend_unavailable(op: &str, backend: Backend) -> Error {
    let why = match backend {
        Backend::Cuda if !cfg!(feature = "cuda") => {
            "candle-rmsnorm was not built with feature `cuda`".to_string()
        }
        Backend::Rocm if !cfg!(feature = "rocm") => {
            "candle-rmsnorm was not built with feature `rocm`".to_string()
        }
        b => format!("backend {b} cannot run on these tensors"),
    };
    Error::Msg(format!("{op}: backend {backend} is unavailable: {why}")).bt()
}
