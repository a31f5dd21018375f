//! Build script: embeds the GPU machine code of the kernels in `hip/`: cubins and PTX for
//! NVIDIA (feature `cuda`, `build/cuda.rs`) and one HSACO code object per AMD architecture
//! (feature `rocm`, `build/hsaco.rs`). By default both come from the files shipped in
//! `kernels/`, so no GPU toolchain is needed; `CANDLE_RMSNORM_KERNELS=build|check|update` builds
//! them from `hip/` instead (`build/kernels.rs`). The default build (no features) does nothing.

#[path = "build/cuda.rs"]
mod cuda;
#[path = "build/hsaco.rs"]
mod hsaco;
#[path = "build/kernels.rs"]
mod kernels;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda::build();
    }
    if std::env::var_os("CARGO_FEATURE_ROCM").is_some() {
        hsaco::build();
    }
}
