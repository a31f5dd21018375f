//! PTX for NVIDIA (feature `cuda`). To be written.
pub fn build() {}
