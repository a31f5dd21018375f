//! Tests of crate internals (`abi`, `launch`) that are public today and will become private:
//! moved here verbatim from `tests/rocm.rs`, to become unit tests of those modules. No other
//! test relies on them.
#![cfg(feature = "rocm")]

use candle_rmsnorm::{abi, rocm};

/// Every kernel name of the ABI is in every embedded code object's kernel table, and nothing
/// else is (`code_objects_for_every_architecture` in `tests/rocm.rs` checked the ABI's names
/// against the ELF; it now takes them from that public table and checks the table against the
/// ELF symbols and metadata).
#[test]
fn abi_kernel_names_are_embedded() {
    let names = abi::all_kernel_names();
    for co in rocm::code_objects() {
        let embedded: Vec<&str> = co.kernels.iter().map(|k| k.name).collect();
        for n in &names {
            assert!(
                embedded.contains(&n.as_str()),
                "{}: kernel {n} not embedded",
                co.arch
            );
        }
        assert_eq!(embedded.len(), names.len(), "{}: {embedded:?}", co.arch);
    }
}

/// Every block size the shared launch geometry can choose fits the work-group bound each AMD
/// kernel was compiled with (a larger launch would fail on AMD, where the bound is a contract).
#[test]
fn launch_geometry_fits_the_compiled_kernels() {
    use candle_rmsnorm::launch::{plan, Problem, Variant};
    for co in rocm::code_objects() {
        let wave = co.kernels[0].wavefront_size;
        for eb in [2u32, 4, 8] {
            for vector in [false, true] {
                for hidden in (1..=300u64).chain([511, 512, 1024, 1536, 4096, 5120, 8193, 40000]) {
                    for rows in [1u64, 7, 1000, 3_024_000] {
                        let p = plan(&Problem {
                            rows,
                            hidden,
                            elem_bytes: eb,
                            vector,
                            warp_size: wave,
                            multiprocessors: 104,
                            blocks_per_mp: 0,
                        })
                        .unwrap();
                        let suffix = if p.variant == Variant::Rows {
                            "_rows"
                        } else {
                            ""
                        };
                        let name = format!("rms_norm_f32{suffix}");
                        let k = co.kernel(&name).unwrap();
                        assert!(
                            p.block <= k.max_block,
                            "{}: {name} compiled for <= {} threads, plan {p:?}",
                            co.arch,
                            k.max_block
                        );
                        assert!(u64::from(p.grid) * u64::from(p.block) <= u64::from(u32::MAX));
                    }
                }
            }
        }
    }
}
