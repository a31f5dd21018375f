//! HSACO for AMD (feature `rocm`). To be written.
pub fn build() {}
