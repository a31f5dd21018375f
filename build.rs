//! Build script: compiles the kernels in `hip/` to PTX (feature `cuda`) and to one HSACO code
//! object per AMD architecture (feature `rocm`), embedding the results through `OUT_DIR`.
//! The default build (no features) compiles nothing and needs no GPU toolchain.

#[path = "build/hsaco.rs"]
mod hsaco;
#[path = "build/ptx.rs"]
mod ptx;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx::build();
    }
    if std::env::var_os("CARGO_FEATURE_ROCM").is_some() {
        hsaco::build();
    }
}
