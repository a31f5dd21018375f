//! The AMD GPU the ROCm tests run on (feature `rocm`): `None` where the HIP runtime sees none,
//! so that those tests say "SKIPPED" and pass.

use candle_rmsnorm::rocm::{self, RocmDevice};

/// HIP device 0, or `None` without an AMD GPU; a GPU that is present but unusable fails the
/// test.
pub fn gpu() -> Option<RocmDevice> {
    match rocm::device_count() {
        Ok(n) if n > 0 => match rocm::default_device() {
            Ok(d) => Some(d),
            Err(e) => panic!("an AMD GPU is present but unusable: {e}"),
        },
        _ => None,
    }
}
