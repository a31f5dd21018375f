//! Every launch the shared plans can choose fits the kernels as each AMD code object compiled
//! them (a larger launch would fail on AMD, where the work-group bound is a contract): the norm
//! plans, quantised or not, and the q/k norm + RoPE plans, for every embedded architecture.

use super::code_objects::{self, CodeObject, KernelResources};
use crate::gpu::abi::{self, RopeArgs, ROPE_PER_HEAD, ROPE_WEIGHT_IN_T};
use crate::gpu::geometry::{plan, Problem};
use crate::gpu::rope_plan::plan_rope;
use candle_core::DType;

/// LDS a work-group may use on every architecture built (64 KiB; gfx950 has more).
const LDS_BYTES: u32 = 64 << 10;

/// `block` threads with `smem` bytes of dynamic LDS fit kernel `k` of `co`.
fn fits(co: &CodeObject, k: &KernelResources, block: u32, smem: u32, what: &str) {
    assert!(
        block <= k.max_block,
        "{}: {} compiled for <= {} threads, {what}",
        co.arch,
        k.name,
        k.max_block
    );
    assert!(
        k.lds_bytes + smem <= LDS_BYTES,
        "{}: {} uses {} bytes of LDS and {smem} dynamic, {what}",
        co.arch,
        k.name,
        k.lds_bytes
    );
}

/// Both ops, every input dtype, the weight of the input's dtype and f32, vector or not,
/// quantised or not.
#[test]
fn launch_geometry_fits_the_compiled_kernels() {
    for co in code_objects::code_objects() {
        let wave = co.kernels[0].wavefront_size;
        for x in crate::error::FLOAT_DTYPES {
            for w in [x, abi::kernel_weight_dtype(x, DType::F32)] {
                for fused in [false, true] {
                    for vector in [false, true] {
                        for quant in [false, true] {
                            check_plans(co, wave, (x, w), fused, vector, quant);
                        }
                    }
                }
            }
        }
    }
}

fn check_plans(
    co: &CodeObject,
    wave: u32,
    (x, w): (DType, DType),
    fused: bool,
    vector: bool,
    quant: bool,
) {
    let long = [511, 512, 1024, 1536, 4096, 5120, 8193, 10240, 12288, 40000];
    for hidden in (1..=300u64).chain(long) {
        for rows in [1u64, 7, 1000, 3_024_000] {
            let p = plan(&Problem {
                rows,
                hidden,
                elem_bytes: x.size_in_bytes() as u32,
                vector,
                warp_size: wave,
                multiprocessors: 104,
                blocks_per_mp: 0,
                // As `RocmDevice::shape`: rows are not staged on AMD.
                stage_bytes: 0,
                inputs: if fused { 2 } else { 1 },
                wide_weight: w.size_in_bytes() > x.size_in_bytes(),
                // The quantised ops take the mean over whole rows.
                partial_variance: rows == 7 && !quant,
                quant,
            })
            .unwrap();
            let name = abi::kernel_name(fused, x, w, p.variant).unwrap();
            let k = co
                .kernel(&name)
                .unwrap_or_else(|| panic!("{}: plan {p:?} names {name}, not built", co.arch));
            fits(co, k, p.block, p.smem_bytes, &format!("plan {p:?}"));
            assert!(u64::from(p.grid) * u64::from(p.block) <= u64::from(u32::MAX));
        }
    }
}

/// A RoPE argument of `heads` heads of `head_dim` over 3 x 5 positions, contiguous rows;
/// 16-byte aligned or not.
fn rope_args(heads: u32, head_dim: u32, per_head: bool, tensors: u32, aligned: bool) -> RopeArgs {
    let dim = i64::from(heads * head_dim);
    let base = if aligned { 0 } else { 2 };
    RopeArgs {
        out: 1 << 30,
        x: [(2 << 30) + base, if tensors == 2 { 3 << 30 } else { 0 }],
        w: [4 << 30, 0],
        cos: 5 << 30,
        sin: 6 << 30,
        x_b: [5 * dim; 2],
        x_l: [dim; 2],
        out_t: 15 * dim,
        out_b: 5 * dim,
        out_l: i64::from(head_dim),
        out_h: 5 * i64::from(head_dim),
        batch: 3,
        seq: 5,
        heads,
        head_dim,
        tensors,
        flags: if per_head { ROPE_PER_HEAD } else { 0 },
        ..Default::default()
    }
}

/// Every q/k norm + RoPE plan that `plan_rope` accepts fits its kernel in every code object;
/// the model shapes below are accepted on every wavefront width.
#[test]
fn rope_geometry_fits_the_compiled_kernels() {
    let heads = [1u32, 2, 3, 5, 8, 16, 24, 32, 40, 64, 96, 128, 200, 256, 512];
    for co in code_objects::code_objects() {
        let wave = co.kernels[0].wavefront_size;
        let dts = crate::error::FLOAT_DTYPES.into_iter().flat_map(|dt| {
            let wts: &[bool] = if matches!(dt, DType::BF16 | DType::F16) {
                &[false, true]
            } else {
                &[false]
            };
            wts.iter().map(move |&wt| (dt, wt))
        });
        for (dt, wt) in dts {
            for (per_head, tensors, aligned) in [
                (false, 1, true),
                (true, 1, true),
                (false, 2, true),
                (true, 2, false),
                (false, 1, false),
            ] {
                for &h in &heads {
                    for d in (2..=512u32).step_by(2) {
                        let mut a = rope_args(h, d, per_head, tensors, aligned);
                        a.flags |= if wt { ROPE_WEIGHT_IN_T } else { 0 };
                        let Ok(p) = plan_rope(a, dt, wave) else {
                            continue;
                        };
                        let k = co
                            .kernel(&p.kernel)
                            .unwrap_or_else(|| panic!("{}: {} not built", co.arch, p.kernel));
                        let what = format!("{h} heads of {d} {dt:?}: {p:?}");
                        fits(co, k, p.block, 0, &what);
                        assert!(p.block.is_multiple_of(wave), "{what}");
                    }
                }
                // Model shapes: Wan's 40 heads of 128, Flux's 24, 64 of 128, 32 of 64, 8 of 256
                // (f64 heads of 128 and more need more lanes than a wave32 has).
                for (h, d) in [(40u32, 128u32), (24, 128), (64, 128), (32, 64), (8, 256)] {
                    let mut a = rope_args(h, d, per_head, tensors, aligned);
                    a.flags |= if wt { ROPE_WEIGHT_IN_T } else { 0 };
                    assert!(
                        dt == DType::F64 || plan_rope(a, dt, wave).is_ok(),
                        "{}: {h} heads of {d} {dt:?} aligned {aligned}",
                        co.arch
                    );
                }
            }
        }
    }
}
