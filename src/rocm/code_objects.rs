//! The code objects `build.rs` compiled from `hip/` (one per AMD architecture) and the choice
//! of one for a device.

/// Register and memory use of one kernel in one code object, read from its AMDGPU metadata
/// when the crate was built. Builds fail when a kernel uses scratch or spills, so every
/// embedded kernel has neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelResources {
    /// The exported kernel name, e.g. `rms_norm_bf16`.
    pub name: &'static str,
    /// Vector registers per lane.
    pub vgprs: u32,
    /// Scalar registers per wave.
    pub sgprs: u32,
    /// Accumulation registers per lane (gfx90a/gfx94x), 0 elsewhere.
    pub agprs: u32,
    /// Static LDS bytes per work-group.
    pub lds_bytes: u32,
    /// 64 (gfx9) or 32 (gfx10 and later).
    pub wavefront_size: u32,
    /// The largest work-group the kernel was compiled for.
    pub max_block: u32,
}

/// One embedded HSACO.
#[derive(Debug, Clone, Copy)]
pub struct CodeObject {
    /// The architecture it was built for, e.g. `gfx942` or `gfx11-generic`.
    pub arch: &'static str,
    /// `amdhsa.target` from its metadata, e.g. `amdgcn-amd-amdhsa--gfx942`.
    pub target: &'static str,
    /// The ELF bytes as clang wrote them.
    pub bytes: &'static [u8],
    /// Every kernel it defines, sorted by name.
    pub kernels: &'static [KernelResources],
}

impl CodeObject {
    /// The resources of kernel `name`, if this object defines it.
    pub fn kernel(&self, name: &str) -> Option<&'static KernelResources> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

mod generated {
    use super::{CodeObject, KernelResources};
    include!(concat!(env!("OUT_DIR"), "/hsaco_table.rs"));
}

/// Every code object this build embeds, sorted by architecture (empty on docs.rs).
pub fn code_objects() -> &'static [CodeObject] {
    generated::CODE_OBJECTS
}

/// The clang that compiled them (its `--version` line).
pub fn compiler() -> &'static str {
    generated::COMPILER
}

/// The architectures built, e.g. `["gfx1030", "gfx1100", ..]`.
pub fn built_archs() -> Vec<&'static str> {
    code_objects().iter().map(|c| c.arch).collect()
}

/// `gfx90a:sramecc+:xnack-` -> `gfx90a`.
pub fn base_arch(gcn_arch_name: &str) -> &str {
    gcn_arch_name
        .split(':')
        .next()
        .unwrap_or(gcn_arch_name)
        .trim()
}

/// The generic target that covers `arch` (LLVM's AMDGPU generic processor families).
fn generic_family(arch: &str) -> Option<&'static str> {
    const FAMILIES: &[(&str, &[&str])] = &[
        (
            "gfx9-generic",
            &["gfx900", "gfx902", "gfx904", "gfx906", "gfx909", "gfx90c"],
        ),
        ("gfx9-4-generic", &["gfx940", "gfx941", "gfx942", "gfx950"]),
        (
            "gfx10-1-generic",
            &["gfx1010", "gfx1011", "gfx1012", "gfx1013"],
        ),
        (
            "gfx10-3-generic",
            &[
                "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036",
            ],
        ),
        (
            "gfx11-generic",
            &[
                "gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151", "gfx1152",
                "gfx1153",
            ],
        ),
        ("gfx12-generic", &["gfx1200", "gfx1201"]),
    ];
    FAMILIES
        .iter()
        .find(|(_, members)| members.contains(&arch))
        .map(|(g, _)| *g)
}

/// The code object for a device whose `gcnArchName` is `gcn_arch_name`: the one built for its
/// exact architecture, else the one built for its generic family.
///
/// # Errors
/// When none fits: the message names the device's architecture, the built ones, and how to
/// build for it (`AMDGPU_TARGETS`).
pub fn select(gcn_arch_name: &str) -> candle_core::Result<&'static CodeObject> {
    select_from(code_objects(), gcn_arch_name)
}

pub(crate) fn select_from(
    objects: &'static [CodeObject],
    gcn_arch_name: &str,
) -> candle_core::Result<&'static CodeObject> {
    let arch = base_arch(gcn_arch_name);
    if let Some(c) = objects.iter().find(|c| c.arch == arch) {
        return Ok(c);
    }
    if let Some(g) = generic_family(arch) {
        if let Some(c) = objects.iter().find(|c| c.arch == g) {
            return Ok(c);
        }
    }
    let built: Vec<&str> = objects.iter().map(|c| c.arch).collect();
    Err(candle_core::Error::Msg(format!(
        "candle-rmsnorm rocm: the device's architecture is {arch} ({gcn_arch_name}), but this \
         build has code objects only for [{}]; rebuild with AMDGPU_TARGETS=\"{arch}\" (or add it \
         to the list) and feature `rocm`",
        built.join(", ")
    ))
    .bt())
}

#[cfg(test)]
mod tests {
    use super::*;

    static FAKE: [CodeObject; 2] = [
        CodeObject {
            arch: "gfx90a",
            target: "amdgcn-amd-amdhsa--gfx90a",
            bytes: &[],
            kernels: &[],
        },
        CodeObject {
            arch: "gfx11-generic",
            target: "amdgcn-amd-amdhsa--gfx11-generic",
            bytes: &[],
            kernels: &[],
        },
    ];

    #[test]
    fn arch_names() {
        assert_eq!(base_arch("gfx90a:sramecc+:xnack-"), "gfx90a");
        assert_eq!(base_arch("gfx1100"), "gfx1100");
        assert_eq!(
            select_from(&FAKE, "gfx90a:sramecc-:xnack+").unwrap().arch,
            "gfx90a"
        );
        assert_eq!(select_from(&FAKE, "gfx1102").unwrap().arch, "gfx11-generic");
        let e = select_from(&FAKE, "gfx942:sramecc+:xnack-")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gfx942") && e.contains("gfx90a, gfx11-generic"),
            "{e}"
        );
        assert!(e.contains("AMDGPU_TARGETS"), "{e}");
    }
}
