//! The HIP runtime of the process: loaded once, with the error vocabulary of the ROCm path.

use super::sys::Hip;
use candle_core::Result;

/// An error of the ROCm path, prefixed so its origin is clear.
pub(super) fn err(msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("candle-rmsnorm rocm: {msg}")).bt()
}

/// The loaded HIP runtime, or the error saying why it is unavailable.
pub(super) fn hip() -> Result<&'static Hip> {
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
