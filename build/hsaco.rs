//! HSACO for AMD GPUs (feature `rocm`): one plain ELF code object per architecture, shipped in
//! `kernels/hsaco/` (see `build/kernels.rs`) or built fresh: every `hip/*.hip` source compiled
//! by clang, each object's metadata checked (no scratch, no spills). The objects and their
//! kernels' resources are embedded through `$OUT_DIR/hsaco_table.rs`.
//!
//! Inputs of a fresh build (each one reruns this script when it changes):
//! - the sources and headers under `hip/`;
//! - `CANDLE_RMSNORM_CLANG` (the clang for both GPU builds, PTX and HSACO), else `HIP_CLANG`,
//!   else clang-21, clang-20, clang-19 or clang on `PATH`, else `$ROCM_PATH/llvm/bin/clang`;
//!   the chosen binary itself;
//! - `AMDGPU_TARGETS` (architectures, separated by `,`, `;` or blanks), else [`DEFAULT_ARCHS`]
//!   plus gfx950 when clang >= 20;
//!
//! No ROCm install is needed: only clang and lld with the AMDGPU target (Debian: clang-19 lld-19).

#[path = "amdgpu_elf.rs"]
mod amdgpu_elf;

use crate::kernels::{self, Mode};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Architectures built when `AMDGPU_TARGETS` is unset: MI200, MI300, RDNA2, RDNA3 (two), RDNA4.
const DEFAULT_ARCHS: &[&str] = &[
    "gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101", "gfx1201",
];
/// Added to the defaults when the clang is at least [`GFX950_MIN_CLANG`] (MI350).
const GFX950: &str = "gfx950";
const GFX950_MIN_CLANG: u32 = 20;
/// Oldest clang whose AMDGPU backend builds the default architectures.
const MIN_CLANG: u32 = 19;
const HIP_DIR: &str = "hip";
/// A fixed compilation-unit id: without it clang adds a random `__hip_cuid_*` symbol.
const CUID: &str = "candle_rmsnorm";
/// Variables naming the clang to use, in order of precedence.
const CLANG_VARS: [&str; 2] = ["CANDLE_RMSNORM_CLANG", "HIP_CLANG"];
const ENV_VARS: &[&str] = &[
    "CANDLE_RMSNORM_CLANG",
    "HIP_CLANG",
    "ROCM_PATH",
    "AMDGPU_TARGETS",
];
/// The directory under `kernels/`.
const BACKEND: &str = "hsaco";
const INSTALL_HINT: &str = "install clang >= 19 and lld with the AMDGPU target (Debian/Ubuntu: \
    `apt-get install clang-19 lld-19`), or point CANDLE_RMSNORM_CLANG at one (ROCm's \
    $ROCM_PATH/llvm/bin/clang works too); no ROCm install is needed to build";

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("candle-rmsnorm build (feature rocm): {msg}");
    std::process::exit(1);
}

/// One compiled architecture.
struct Built {
    arch: String,
    path: PathBuf,
    meta: amdgpu_elf::CodeObjectMeta,
}

pub fn build() {
    let mode = kernels::mode().unwrap_or_else(|e| fail(e));
    for v in ENV_VARS {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let out_dir =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR unset")));
    if mode == Mode::Shipped {
        if std::env::var_os("AMDGPU_TARGETS").is_some() {
            println!(
                "cargo:warning=candle-rmsnorm: AMDGPU_TARGETS only applies to a fresh build \
                 ({}=build); the shipped code objects are embedded",
                kernels::ENV
            );
        }
        kernels::warn_if_sources_changed(BACKEND);
        let built = shipped().unwrap_or_else(|e| fail(e));
        let tools = kernels::shipped_toolchain(BACKEND);
        let clang = tools.lines().find_map(|l| l.strip_prefix("clang: "));
        write_table(&out_dir, clang.unwrap_or("unknown"), &built);
        return;
    }
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| fail("CARGO_MANIFEST_DIR unset")),
    );
    let hip_dir = manifest.join(HIP_DIR);
    kernels::watch_sources().unwrap_or_else(|e| fail(e));
    // The translation units: the `*.hip` files directly under `hip/` (the rest are headers).
    let sources: Vec<PathBuf> = kernels::hip_files()
        .unwrap_or_else(|e| fail(e))
        .into_iter()
        .filter(|p| p.parent() == Some(&hip_dir) && p.extension().is_some_and(|x| x == "hip"))
        .collect();
    if sources.is_empty() {
        fail(format!(
            "no kernel sources (*.hip) in {}",
            hip_dir.display()
        ));
    }
    let (clang, major, version) = find_clang();
    println!("cargo:rerun-if-changed={}", clang.display());
    let archs = targets(major);
    let entry = entry_source(&out_dir, &hip_dir, &sources);

    let built: Vec<Built> = std::thread::scope(|s| {
        let jobs: Vec<_> = archs
            .iter()
            .map(|arch| {
                let (clang, entry, hip_dir, out_dir) = (&clang, &entry, &hip_dir, &out_dir);
                s.spawn(move || compile(clang, arch, entry, hip_dir, out_dir))
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|_| fail("a compile thread panicked"))
            })
            .collect::<Result<Vec<_>, String>>()
            .unwrap_or_else(|e| fail(e))
    });
    let mut bad = Vec::new();
    for b in &built {
        for k in &b.meta.kernels {
            if let Some(why) = k.problem() {
                bad.push(format!("{} {}: {why}", b.arch, k.name));
            }
        }
    }
    if !bad.is_empty() {
        fail(format!(
            "kernels must not use scratch or spill registers (they would run far below memory \
             bandwidth). Scratch comes from spilled registers, a local array indexed at run \
             time, or a non-inlined call that takes a pointer or reference to a kernel argument \
             or local; clang's -Rpass-analysis=kernel-resource-usage shows the culprit:\n  {}",
            bad.join("\n  ")
        ));
    }
    let files: Vec<(String, PathBuf)> = built
        .iter()
        .map(|b| (format!("{}.hsaco", b.arch), b.path.clone()))
        .collect();
    let toolchain = format!(
        "clang: {version}\n{}\n",
        kernels::source_line().unwrap_or_else(|e| fail(e))
    );
    kernels::finish(mode, BACKEND, &toolchain, &files).unwrap_or_else(|e| fail(e));
    write_table(&out_dir, &version, &built);
}

/// The shipped code objects (`kernels/hsaco/<arch>.hsaco`), sorted by architecture, with
/// their metadata read back.
fn shipped() -> Result<Vec<Built>, String> {
    let dir = kernels::shipped_dir(BACKEND);
    println!("cargo:rerun-if-changed={}", dir.display());
    let rd = std::fs::read_dir(&dir).map_err(|e| {
        format!(
            "{}: {e}; build the code objects from hip/ with {}=build ({INSTALL_HINT})",
            dir.display(),
            kernels::ENV
        )
    })?;
    let mut built = Vec::new();
    for e in rd {
        let path = e.map_err(|e| e.to_string())?.path();
        let Some(arch) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".hsaco"))
        else {
            continue;
        };
        let path = kernels::shipped(BACKEND, &format!("{arch}.hsaco"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta =
            amdgpu_elf::code_object_meta(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        built.push(Built {
            arch: arch.to_string(),
            path,
            meta,
        });
    }
    built.sort_by(|a, b| a.arch.cmp(&b.arch));
    Ok(built)
}

/// The clang to use, its major version and its version line.
fn find_clang() -> (PathBuf, u32, String) {
    let mut tried = Vec::new();
    let mut candidates: Vec<(PathBuf, Option<&str>)> = Vec::new();
    let explicit = CLANG_VARS
        .iter()
        .find_map(|v| std::env::var_os(v).map(|c| (*v, c)));
    if let Some((var, c)) = explicit {
        candidates.push((PathBuf::from(c), Some(var)));
    } else {
        for name in ["clang-21", "clang-20", "clang-19", "clang"] {
            if let Some(p) = on_path(name) {
                candidates.push((p, None));
            } else {
                tried.push(format!("{name} (not on PATH)"));
            }
        }
        if let Some(r) = std::env::var_os("ROCM_PATH") {
            candidates.push((Path::new(&r).join("llvm/bin/clang"), None));
        } else {
            tried.push("$ROCM_PATH/llvm/bin/clang (ROCM_PATH unset)".into());
        }
    }
    for (c, var) in candidates {
        match clang_version(&c) {
            Ok((major, line)) if major >= MIN_CLANG => return (c, major, line),
            Ok((major, _)) => {
                tried.push(format!("{} (version {major} < {MIN_CLANG})", c.display()))
            }
            Err(e) => tried.push(format!("{} ({e})", c.display())),
        }
        if let Some(var) = var {
            fail(format!(
                "{var}={} is not usable: {}; {INSTALL_HINT}",
                c.display(),
                tried.join(", ")
            ));
        }
    }
    fail(format!(
        "no suitable clang found (tried: {}); {INSTALL_HINT}",
        tried.join(", ")
    ))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn clang_version(clang: &Path) -> Result<(u32, String), String> {
    let out = Command::new(clang)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    if !out.status.success() {
        return Err("`--version` failed".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    let major = line
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .ok_or_else(|| format!("cannot read a version from {line:?}"))?;
    Ok((major, line))
}

fn valid_arch(a: &str) -> bool {
    let Some(rest) = a.strip_prefix("gfx") else {
        return false;
    };
    let core = rest.strip_suffix("-generic").unwrap_or(rest);
    !core.is_empty() && core.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn targets(clang_major: u32) -> Vec<String> {
    let mut archs: Vec<String> = match std::env::var("AMDGPU_TARGETS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => {
            let mut v: Vec<String> = DEFAULT_ARCHS.iter().map(|s| s.to_string()).collect();
            if clang_major >= GFX950_MIN_CLANG {
                v.push(GFX950.into());
            }
            v
        }
    };
    for a in &archs {
        if !valid_arch(a) {
            fail(format!(
                "AMDGPU_TARGETS entry {a:?} is not an architecture name like gfx942 or \
                 gfx11-generic (feature suffixes such as :xnack+ are not supported; the code \
                 objects are built for any xnack/sramecc setting)"
            ));
        }
    }
    archs.sort();
    archs.dedup();
    archs
}

/// One translation unit including every source, so each architecture gets one code object.
fn entry_source(out_dir: &Path, hip_dir: &Path, sources: &[PathBuf]) -> PathBuf {
    let mut text = String::from("// Generated by build/hsaco.rs: every hip/*.hip source.\n");
    for s in sources {
        let rel = s.strip_prefix(hip_dir).unwrap_or(s);
        let _ = writeln!(text, "#include \"{}\"", rel.display());
    }
    let entry = out_dir.join("candle_rmsnorm_kernels.hip");
    std::fs::write(&entry, text)
        .unwrap_or_else(|e| fail(format!("cannot write {}: {e}", entry.display())));
    entry
}

fn compile(
    clang: &Path,
    arch: &str,
    entry: &Path,
    hip_dir: &Path,
    out_dir: &Path,
) -> Result<Built, String> {
    let out = out_dir.join(format!("{arch}.hsaco"));
    let mut cmd = Command::new(clang);
    cmd.args(["-x", "hip", "-std=c++17"])
        .arg(format!("--offload-arch={arch}"))
        .args([
            "-nogpulib",
            "-nogpuinc",
            "--cuda-device-only",
            "--no-gpu-bundle-output",
            "-O3",
            "-Wall",
            "-Werror",
        ])
        .arg(format!("-cuid={CUID}"))
        .arg("-I")
        .arg(hip_dir)
        .arg(format!("-ffile-prefix-map={}=hip", hip_dir.display()))
        .arg(format!("-ffile-prefix-map={}=out", out_dir.display()));
    if arch.ends_with("-generic") {
        cmd.arg("-mcode-object-version=6");
    }
    cmd.arg("-o").arg(&out).arg(entry);
    let res = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {INSTALL_HINT}", clang.display()))?;
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        let hint = if err.contains("lld") {
            " (the AMDGPU link step needs lld: install lld-19 or the lld matching your clang)"
        } else {
            ""
        };
        return Err(format!(
            "compiling hip/ for {arch} failed{hint}:\n{:?}\n{err}",
            cmd
        ));
    }
    let bytes = std::fs::read(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
    let meta =
        amdgpu_elf::code_object_meta(&bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    if !meta.target.ends_with(arch) && !meta.target.contains(&format!("{arch}:")) {
        return Err(format!(
            "{}: target {} is not {arch}",
            out.display(),
            meta.target
        ));
    }
    Ok(Built {
        arch: arch.to_string(),
        path: out,
        meta,
    })
}

fn write_table(out_dir: &Path, compiler: &str, built: &[Built]) {
    let mut t = String::from("// Generated by build/hsaco.rs.\n");
    let _ = writeln!(t, "/// The compiler that built the code objects.");
    let _ = writeln!(t, "pub const COMPILER: &str = {compiler:?};");
    let _ = writeln!(
        t,
        "/// One code object per architecture, sorted by architecture."
    );
    let _ = writeln!(t, "pub static CODE_OBJECTS: &[CodeObject] = &[");
    for b in built {
        let _ = writeln!(t, "    CodeObject {{");
        let _ = writeln!(t, "        arch: {:?},", b.arch);
        let _ = writeln!(t, "        target: {:?},", b.meta.target);
        let _ = writeln!(
            t,
            "        bytes: include_bytes!({:?}),",
            b.path.display().to_string()
        );
        let _ = writeln!(t, "        kernels: &[");
        for k in &b.meta.kernels {
            let _ = writeln!(
                t,
                "            KernelResources {{ name: {:?}, vgprs: {}, sgprs: {}, agprs: {}, \
                 lds_bytes: {}, wavefront_size: {}, max_block: {} }},",
                k.name,
                k.vgpr_count,
                k.sgpr_count,
                k.agpr_count,
                k.group_segment_fixed_size,
                k.wavefront_size,
                k.max_flat_workgroup_size
            );
        }
        let _ = writeln!(t, "        ],");
        let _ = writeln!(t, "    }},");
    }
    let _ = writeln!(t, "];");
    let path = out_dir.join("hsaco_table.rs");
    std::fs::write(&path, t)
        .unwrap_or_else(|e| fail(format!("cannot write {}: {e}", path.display())));
}
