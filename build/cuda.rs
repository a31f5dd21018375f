//! PTX for NVIDIA (feature `cuda`): compiles `hip/rms_norm.hip` with clang's CUDA front end and
//! no CUDA SDK headers (`-nocudainc -nocudalib`; `hip/portable.h` maps everything onto `__nvvm_*`
//! builtins), and writes `$OUT_DIR/rms_norm.ptx`, which `src/cuda/device.rs` embeds.
//!
//! Inputs (each a `rerun-if-*`):
//! - `CANDLE_RMSNORM_CLANG` (the clang for both GPU builds; `build/hsaco.rs` reads it too): the
//!   clang to use; else the first of clang-19, clang-20, clang-18, clang-21, clang found on
//!   `PATH`. nvcc is not used: the header is builtin-only.
//! - `CUDA_COMPUTE_CAP` (Candle's own variable, e.g. `90`): the PTX target `sm_XX`; default 80.
//!   PTX is compiled further by the driver, so sm_80 PTX also runs on Hopper and later.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The translation unit; it includes every header under `hip/`.
const SOURCE: &str = "hip/rms_norm.hip";
const CLANGS: [&str; 5] = ["clang-19", "clang-20", "clang-18", "clang-21", "clang"];

fn find_clang() -> PathBuf {
    if let Some(c) = std::env::var_os("CANDLE_RMSNORM_CLANG") {
        return PathBuf::from(c);
    }
    for c in CLANGS {
        let ok = Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return PathBuf::from(c);
        }
    }
    panic!(
        "candle-rmsnorm (feature cuda): no clang found (tried {CLANGS:?}); install clang >= 18 \
         (e.g. `apt-get install clang-19`) or set CANDLE_RMSNORM_CLANG"
    );
}

/// The `sm_XX` target and PTX ISA feature for a compute capability such as 90.
pub fn target(cap: u32) -> (String, &'static str) {
    let ptx = if cap >= 90 { "+ptx78" } else { "+ptx70" };
    (format!("sm_{cap}"), ptx)
}

pub fn compile(clang: &Path, src: &Path, cap: u32, out: &Path) -> Result<(), String> {
    let (arch, ptx) = target(cap);
    let o = Command::new(clang)
        .args([
            "-x",
            "cuda",
            "--cuda-device-only",
            "-nocudainc",
            "-nocudalib",
        ])
        .arg(format!("--cuda-gpu-arch={arch}"))
        .arg(format!("--cuda-feature={ptx}"))
        .args([
            "-std=c++17",
            "-O3",
            "-S",
            "-Wall",
            "-Werror",
            "-Wno-unknown-cuda-version",
        ])
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", clang.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} failed on {}:\n{}",
            clang.display(),
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

pub fn build() {
    println!("cargo:rerun-if-changed=hip");
    for entry in std::fs::read_dir("hip")
        .expect("hip/ is part of the package")
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    println!("cargo:rerun-if-env-changed=CANDLE_RMSNORM_CLANG");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let cap: u32 = match std::env::var("CUDA_COMPUTE_CAP") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CUDA_COMPUTE_CAP must be a number such as 90, got {v:?}")),
        Err(_) => 80,
    };
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let clang = find_clang();
    let out = out_dir.join("rms_norm.ptx");
    if let Err(e) = compile(&clang, &manifest.join(SOURCE), cap, &out) {
        panic!("candle-rmsnorm (feature cuda): {e}");
    }
}
