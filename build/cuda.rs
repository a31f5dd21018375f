//! NVIDIA machine code (feature `cuda`): a cubin for each of sm_80, sm_86, sm_89 and sm_90, and
//! PTX for sm_80, which the driver compiles for GPUs without a cubin here (sm_87, Blackwell and
//! later). Shipped in `kernels/cuda/` (see `build/kernels.rs`); built fresh from
//! `hip/rms_norm.hip` by clang's CUDA front end with no CUDA SDK headers (`-nocudainc
//! -nocudalib`: `hip/portable.h` maps everything onto `__nvvm_*` builtins) and by ptxas.
//! Writes `$OUT_DIR/cuda_images.rs`, which `src/cuda/device.rs` includes.
//!
//! Inputs of a fresh build (each a `rerun-if-*`): the files under `hip/`;
//! `CANDLE_RMSNORM_CLANG` (the clang for both GPU builds; `build/hsaco.rs` reads it too), else the
//! first of clang-19, clang-20, clang-18, clang-21, clang on `PATH`; `CANDLE_RMSNORM_PTXAS`, else
//! `ptxas` on `PATH`, else `$CUDA_HOME/bin/ptxas`. The shipped files were made with the tools
//! named in `kernels/cuda/TOOLCHAIN` (ptxas from CUDA 13.0: drivers from 580 on load the cubins;
//! `src/cuda/device.rs` falls back to the PTX where a driver refuses them).

use crate::kernels::{self, Mode};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The translation unit; it includes every header under `hip/`.
const SOURCE: &str = "hip/rms_norm.hip";
const CLANGS: [&str; 5] = ["clang-19", "clang-20", "clang-18", "clang-21", "clang"];
/// Compute capabilities with a cubin, and the PTX ISA each needs (`build/nvptx-archs`, which the
/// checking and lab scripts read too), ascending; the PTX fallback is built for the first.
fn archs() -> Vec<(u32, &'static str)> {
    let v: Vec<(u32, &str)> = entries(include_str!("nvptx-archs"))
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [cap, isa] => (
                cap.parse()
                    .unwrap_or_else(|_| fail(format!("build/nvptx-archs: {l:?}"))),
                isa,
            ),
            _ => fail(format!("build/nvptx-archs: {l:?}")),
        })
        .collect();
    if v.is_empty() || !v.windows(2).all(|w| w[0].0 < w[1].0) {
        fail("build/nvptx-archs: no architectures, or not ascending");
    }
    v
}
const BACKEND: &str = "cuda";

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("candle-rmsnorm build (feature cuda): {msg}");
    std::process::exit(1);
}

fn cubin_name(cap: u32) -> String {
    format!("sm_{cap}.cubin")
}

fn ptx_name() -> String {
    format!("sm_{}.ptx", archs()[0].0)
}

fn find_tool(var: &str, names: &[&str], fallback: Option<PathBuf>) -> Result<PathBuf, String> {
    println!("cargo:rerun-if-env-changed={var}");
    if let Some(c) = std::env::var_os(var) {
        return Ok(PathBuf::from(c));
    }
    for n in names {
        let ok = Command::new(n)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(PathBuf::from(n));
        }
    }
    match fallback {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(format!("none of {names:?} found on PATH; set {var}")),
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let o = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// The lines of one of the `build/nvptx-*` files that carry something: trimmed, without blank
/// lines and `#` comments.
fn entries(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// clang's flags for the device code, all but the architecture options (`build/nvptx-flags`, which
/// the checking and lab scripts read too): one a line.
fn clang_flags() -> impl Iterator<Item = &'static str> {
    entries(include_str!("nvptx-flags"))
}

/// PTX of `src` for `sm_{cap}` with PTX ISA feature `isa`, by clang.
fn ptx(clang: &Path, src: &Path, cap: u32, isa: &str, out: &Path) -> Result<(), String> {
    run(Command::new(clang)
        .args(clang_flags())
        .arg(format!("--cuda-gpu-arch=sm_{cap}"))
        .arg(format!("--cuda-feature={isa}"))
        .arg("-o")
        .arg(out)
        .arg(src))
}

/// Compiles every file of `kernels/cuda/` into `dir`; returns (name, path) pairs and the
/// toolchain description.
fn compile_all(dir: &Path) -> Result<(Vec<(String, PathBuf)>, String), String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let src = manifest.join(SOURCE);
    let clang = find_tool("CANDLE_RMSNORM_CLANG", &CLANGS, None)?;
    let cuda_ptxas = std::env::var_os("CUDA_HOME").map(|h| Path::new(&h).join("bin/ptxas"));
    let ptxas = find_tool("CANDLE_RMSNORM_PTXAS", &["ptxas"], cuda_ptxas)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let results: Vec<Result<Vec<(String, PathBuf)>, String>> = std::thread::scope(|s| {
        let first = archs()[0].0;
        let jobs: Vec<_> = archs()
            .into_iter()
            .map(|(cap, isa)| {
                let (clang, ptxas, src) = (&clang, &ptxas, &src);
                s.spawn(move || {
                    let p = dir.join(format!("sm_{cap}.ptx"));
                    ptx(clang, src, cap, isa, &p)?;
                    let c = dir.join(cubin_name(cap));
                    run(Command::new(ptxas)
                        .arg(format!("-arch=sm_{cap}"))
                        .arg("-O3")
                        .arg("-o")
                        .arg(&c)
                        .arg(&p))?;
                    let mut v = vec![(cubin_name(cap), c)];
                    if cap == first {
                        v.push((ptx_name(), p));
                    }
                    Ok(v)
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|_| Err("a compile thread panicked".into()))
            })
            .collect()
    });
    let mut files = Vec::new();
    for r in results {
        files.extend(r?);
    }
    files.sort();
    let toolchain = format!(
        "clang: {}\nptxas: {}\n{}\n",
        kernels::tool_version(&clang)?,
        kernels::tool_version(&ptxas)?,
        kernels::source_line()?
    );
    Ok((files, toolchain))
}

/// The shipped files, in the order `compile_all` returns them.
fn shipped() -> Result<Vec<(String, PathBuf)>, String> {
    let mut names: Vec<String> = archs().iter().map(|&(c, _)| cubin_name(c)).collect();
    names.push(ptx_name());
    names.sort();
    names
        .into_iter()
        .map(|n| kernels::shipped(BACKEND, &n).map(|p| (n, p)))
        .collect()
}

pub fn build() {
    let mode = kernels::mode().unwrap_or_else(|e| fail(e));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let files = if mode == Mode::Shipped {
        kernels::warn_if_sources_changed(BACKEND);
        shipped().unwrap_or_else(|e| fail(e))
    } else {
        kernels::watch_sources().unwrap_or_else(|e| fail(e));
        let (files, toolchain) = compile_all(&out_dir.join("cuda")).unwrap_or_else(|e| fail(e));
        kernels::finish(mode, BACKEND, &toolchain, &files).unwrap_or_else(|e| fail(e));
        files
    };
    let mut t = String::from("// Generated by build/cuda.rs.\n");
    t.push_str("/// (compute capability, cubin), ascending.\n");
    t.push_str("pub static CUBINS: &[(u32, &[u8])] = &[\n");
    for (cap, _) in archs() {
        let (_, p) = files
            .iter()
            .find(|(n, _)| *n == cubin_name(cap))
            .unwrap_or_else(|| fail(format!("no {}", cubin_name(cap))));
        let _ = writeln!(
            t,
            "    ({cap}, include_bytes!({:?})),",
            p.display().to_string()
        );
    }
    t.push_str("];\n");
    let (_, p) = files
        .iter()
        .find(|(n, _)| *n == ptx_name())
        .unwrap_or_else(|| fail(format!("no {}", ptx_name())));
    let _ = writeln!(
        t,
        "/// PTX for sm_{}, compiled by the driver for GPUs without a cubin above.",
        archs()[0].0
    );
    let _ = writeln!(
        t,
        "pub static PTX: &str = include_str!({:?});",
        p.display().to_string()
    );
    let path = out_dir.join("cuda_images.rs");
    std::fs::write(&path, t).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
}
