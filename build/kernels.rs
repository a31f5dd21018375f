//! Where the GPU machine code comes from: the files shipped in `kernels/` (the default: no GPU
//! toolchain needed), or a fresh build from `hip/` that a maintainer asks for with
//! `CANDLE_RMSNORM_KERNELS`:
//!
//! | value            | what the build does                                                  |
//! |------------------|----------------------------------------------------------------------|
//! | unset, `shipped` | embeds `kernels/<backend>/` as shipped                               |
//! | `build`          | compiles `hip/` and embeds the result (the shipped files are unused) |
//! | `check`          | compiles `hip/`; fails unless every file equals the shipped one      |
//! | `update`         | compiles `hip/` and writes the result into `kernels/<backend>/`      |
//!
//! Each backend directory holds its code objects and `TOOLCHAIN`, the version lines of the
//! tools that made them (a fresh build is byte-identical only with the same tools).

use std::path::{Path, PathBuf};

pub const ENV: &str = "CANDLE_RMSNORM_KERNELS";
pub const TOOLCHAIN: &str = "TOOLCHAIN";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Shipped,
    Build,
    Check,
    Update,
}

/// The mode `CANDLE_RMSNORM_KERNELS` asks for; registers it as a rerun trigger.
pub fn mode() -> Result<Mode, String> {
    println!("cargo:rerun-if-env-changed={ENV}");
    match std::env::var(ENV).as_deref().map(str::trim) {
        Err(_) | Ok("") | Ok("shipped") => Ok(Mode::Shipped),
        Ok("build") => Ok(Mode::Build),
        Ok("check") => Ok(Mode::Check),
        Ok("update") => Ok(Mode::Update),
        Ok(other) => Err(format!(
            "{ENV} must be one of shipped, build, check, update, got {other:?}"
        )),
    }
}

/// `kernels/<backend>` in the package.
pub fn shipped_dir(backend: &str) -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    Path::new(&manifest).join("kernels").join(backend)
}

/// The shipped `file` of `backend`, registered as a rerun trigger; an error naming the mode to
/// use when it is missing.
pub fn shipped(backend: &str, file: &str) -> Result<PathBuf, String> {
    let p = shipped_dir(backend).join(file);
    println!("cargo:rerun-if-changed={}", p.display());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing from the package; build the kernels from hip/ with {ENV}=build \
             (needs clang >= 19{})",
            p.display(),
            if backend == "cuda" {
                " and ptxas"
            } else {
                " and lld"
            }
        ))
    }
}

/// The shipped toolchain description of `backend` (empty when absent).
pub fn shipped_toolchain(backend: &str) -> String {
    let p = shipped_dir(backend).join(TOOLCHAIN);
    println!("cargo:rerun-if-changed={}", p.display());
    std::fs::read_to_string(p).unwrap_or_default()
}

/// After a fresh build of `files` (name in `kernels/<backend>/`, path just built) with the
/// tools described by `toolchain`: `Check` compares them with the shipped files, `Update`
/// replaces the shipped files; other modes do nothing.
pub fn finish(
    mode: Mode,
    backend: &str,
    toolchain: &str,
    files: &[(String, PathBuf)],
) -> Result<(), String> {
    let dir = shipped_dir(backend);
    match mode {
        Mode::Check => {
            let mut differ = Vec::new();
            for (name, built) in files {
                let fresh =
                    std::fs::read(built).map_err(|e| format!("{}: {e}", built.display()))?;
                if std::fs::read(dir.join(name)).ok().as_deref() != Some(&fresh[..]) {
                    differ.push(name.clone());
                }
            }
            let mut extra = Vec::new();
            for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let name = e.map_err(|e| e.to_string())?.file_name();
                let name = name.to_string_lossy().to_string();
                if name != TOOLCHAIN && !files.iter().any(|(n, _)| *n == name) {
                    extra.push(name);
                }
            }
            let shipped_tools = shipped_toolchain(backend);
            if differ.is_empty() && extra.is_empty() && shipped_tools == toolchain {
                return Ok(());
            }
            Err(format!(
                "the kernels shipped in {} are not what hip/ builds to: differing {differ:?}, \
                 not built any more {extra:?}; shipped with\n{shipped_tools}built with\n\
                 {toolchain}regenerate them with {ENV}=update (see docs/kernels.md)",
                dir.display()
            ))
        }
        Mode::Update => {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (name, built) in files {
                // Read and written, not copied: a plain file, without the executable bit that
                // the linker gives code objects.
                let bytes =
                    std::fs::read(built).map_err(|e| format!("{}: {e}", built.display()))?;
                std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
            }
            std::fs::write(dir.join(TOOLCHAIN), toolchain).map_err(|e| e.to_string())?;
            println!(
                "cargo:warning=candle-rmsnorm: wrote {} kernel files to {}",
                files.len(),
                dir.display()
            );
            Ok(())
        }
        Mode::Shipped | Mode::Build => Ok(()),
    }
}

/// The line of `tool --version` that names its version, for TOOLCHAIN.
pub fn tool_version(tool: &Path) -> Result<String, String> {
    let out = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version failed", tool.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| l.contains("version") || l.contains("release"))
        .map(str::to_string)
        .ok_or_else(|| format!("{} --version names no version", tool.display()))
}

/// The files under `hip/` (sources and headers), sorted.
pub fn hip_files() -> Result<Vec<PathBuf>, String> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let mut files = Vec::new();
    let mut stack = vec![Path::new(&manifest).join("hip")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Registers every file under `hip/` as a rerun trigger (for a fresh build).
pub fn watch_sources() -> Result<(), String> {
    println!("cargo:rerun-if-changed=hip");
    for f in hip_files()? {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    Ok(())
}

/// `hip sources: fnv1a64 <hash>` over the names (relative to `hip/`) and bytes of every file
/// under `hip/`: recorded in TOOLCHAIN, so shipped kernels that no longer match the sources are
/// noticed.
pub fn source_line() -> Result<String, String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in hip_files()? {
        let name = f.file_name().map(|n| n.to_string_lossy().to_string());
        eat(name.unwrap_or_default().as_bytes());
        eat(&[0]);
        eat(&std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?);
        eat(&[0]);
    }
    Ok(format!("hip sources: fnv1a64 {h:016x}"))
}

/// In shipped mode: a build warning when `hip/` differs from the sources the shipped kernels of
/// `backend` were built from (a maintainer edited the kernels without regenerating them).
pub fn warn_if_sources_changed(backend: &str) {
    watch_sources().ok();
    let (Ok(now), tools) = (source_line(), shipped_toolchain(backend)) else {
        return;
    };
    if !tools.lines().any(|l| l == now) {
        println!(
            "cargo:warning=candle-rmsnorm: hip/ changed since kernels/{backend}/ was built; the \
             build embeds the shipped (old) kernels. Rebuild them with {ENV}=build, or \
             regenerate the shipped files with {ENV}=update"
        );
    }
}
