//! Launch geometry of the q/k norm + rotary embedding kernels (`hip/norm_rope.h`), the only place
//! it is decided: 16-byte chunks or single values, lanes per head, teams a row, rows a block.
//!
//! A unit is two chunks: with chunks, one at offset o of a head and one at o + head_dim / 2
//! (`rope` pairs their values, `rope_i` the pairs inside each); with single values, the two a
//! rotation pairs. With chunks (`rms_norm_rope_{dtype}`) a lane
//! takes one unit of each of its team's heads, the team's lanes covering a head
//! (`lanes_per_head` = the head's units rounded up to a power of two, at most a warp); with single
//! values (`_scalar`: a layout that is not 16-byte aligned, or a head size that is not a whole
//! number of units) four units a head. A team takes two heads of a row (64 bytes of bf16 a lane
//! with chunks), so a row has `ceil(heads / 2)` teams. A norm over the whole row runs one row a
//! block (its warps combine through shared memory); a norm per head packs rows into blocks of
//! about 256 threads. Block i takes rows of input i % tensors (q's and k's blocks of a position
//! side by side). Weights of the input dtype (`ROPE_WEIGHT_IN_T`) take the `_wt` kernels.

use super::abi::{
    self, RopeArgs, ROPE_CLAMP_NORM, ROPE_HALF_SPLIT, ROPE_OFFSET_ONE, ROPE_PER_HEAD,
    ROPE_ROUND_BEFORE_WEIGHT, ROPE_TABLES_IN_T, ROPE_VECTOR, ROPE_WEIGHT_IN_T,
};
use crate::config::{EpsMode, Rounding, WeightMode};
use crate::rope_config::{HeadLayout, NormScope, RopeStyle};
use crate::rope_op::RopeParams;
use candle_core::DType;

/// The most threads a block (`NORM_LAUNCH_BOUNDS_ROPE` in `hip/portable.h`).
pub(crate) const ROPE_MAX_BLOCK: u32 = 512;
/// Heads a team takes (`RopeSlots / units_per_lane` in `hip/norm_rope.h`).
const HEADS_PER_TEAM: u32 = 2;
/// Units a lane holds per head with single values (`rope_entry<T, 1, 4>`).
const SCALAR_UNITS: u32 = 4;
/// The block size per-head plans aim at.
const TARGET_BLOCK: u32 = 256;

/// One planned launch: kernel, block, grid and the complete argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeLaunch {
    pub kernel: String,
    pub block: u32,
    pub grid: u32,
    pub args: RopeArgs,
}

/// The `RopeArgs::flags` bits of the call's options (`wt`: weights, `tt`: tables of the input
/// dtype).
fn flags(p: &RopeParams, wt: bool, tt: bool) -> u32 {
    [
        (wt, ROPE_WEIGHT_IN_T),
        (tt, ROPE_TABLES_IN_T),
        (p.style == RopeStyle::HalfSplit, ROPE_HALF_SPLIT),
        (p.scope == NormScope::PerHead, ROPE_PER_HEAD),
        (
            p.rounding == Rounding::BeforeWeight,
            ROPE_ROUND_BEFORE_WEIGHT,
        ),
        (p.weight_mode == WeightMode::OffsetOne, ROPE_OFFSET_ONE),
        (p.eps_mode == EpsMode::ClampNorm, ROPE_CLAMP_NORM),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |f, (_, bit)| f | bit)
}

/// The argument of a call of `p` on `batch` x `seq` rows writing a fresh contiguous output at
/// `out`: sizes, options, eps and the output's strides set; the inputs' addresses and strides,
/// the weights' and tables' addresses are the launcher's to set, the geometry
/// [`plan_rope`]'s. `wt`: the weights are of the input dtype
/// ([`RopeParams::weights_in_input`]); `tt`: the tables are ([`RopeParams::table_dtype`]).
pub(crate) fn rope_args(
    p: &RopeParams,
    batch: usize,
    seq: usize,
    out: u64,
    wt: bool,
    tt: bool,
) -> RopeArgs {
    let (h, d, l, b) = (p.heads as i64, p.head_dim as i64, seq as i64, batch as i64);
    let (out_t, out_b, out_l, out_h) = match p.layout {
        HeadLayout::Bhld => (b * h * l * d, h * l * d, d, l * d),
        HeadLayout::Blhd => (b * l * h * d, l * h * d, h * d, d),
    };
    RopeArgs {
        out,
        out_t,
        out_b,
        out_l,
        out_h,
        batch: b,
        seq: l,
        eps: p.eps_arg(),
        flags: flags(p, wt, tt),
        heads: p.heads as u32,
        head_dim: p.head_dim as u32,
        tensors: p.tensors as u32,
        ..Default::default()
    }
}

/// Whether `a`'s addresses and strides allow 16-byte chunks of `dt` (the kernel's
/// `rope_vector_holds`, the same rule).
fn vector_ok(a: &RopeArgs, dt: DType) -> bool {
    let v = (16 / dt.size_in_bytes()) as i64;
    let mut addr = a.out | a.cos | a.sin | a.x[0] | a.w[0];
    let mut strides = a.out_t | a.out_b | a.out_l | a.out_h | a.x_b[0] | a.x_l[0];
    if a.tensors == 2 {
        addr |= a.x[1] | a.w[1];
        strides |= a.x_b[1] | a.x_l[1];
    }
    addr.is_multiple_of(16) && strides % v == 0 && i64::from(a.head_dim) % (2 * v) == 0
}

/// Completes `a` (addresses, strides, sizes and option flags set; geometry fields ignored) for a
/// device of `warp` lanes: the kernel, block and grid. Errors name what does not fit.
pub(crate) fn plan_rope(mut a: RopeArgs, dt: DType, warp: u32) -> Result<RopeLaunch, String> {
    let vector = vector_ok(&a, dt);
    let vec = if vector {
        16 / dt.size_in_bytes() as u32
    } else {
        1
    };
    let upl = if vector { 1 } else { SCALAR_UNITS };
    let uph = a.head_dim / (2 * vec);
    let lph = uph.div_ceil(upl).max(1).next_power_of_two();
    if lph > warp {
        return Err(format!(
            "a head size of at most {} ({} layout), got {}",
            2 * vec * upl * warp,
            if vector { "16-byte aligned" } else { "this" },
            a.head_dim
        ));
    }
    let teams = a.heads.div_ceil(HEADS_PER_TEAM);
    let per_row = teams * lph;
    let per_head = a.flags & ROPE_PER_HEAD != 0;
    let rows = if per_head {
        (TARGET_BLOCK / per_row).max(1)
    } else {
        1
    };
    let block = (rows * per_row).next_multiple_of(warp);
    if block > ROPE_MAX_BLOCK {
        return Err(format!(
            "at most {} threads a row ({} teams of {lph} lanes for {} heads of {})",
            ROPE_MAX_BLOCK, teams, a.heads, a.head_dim
        ));
    }
    let plane = (a.batch * a.seq) as u64;
    let grid = u64::from(a.tensors) * plane.div_ceil(u64::from(rows));
    let grid = u32::try_from(grid)
        .ok()
        .filter(|&g| g < i32::MAX as u32)
        .ok_or_else(|| format!("fewer than 2^31 blocks, got {grid}"))?;
    a.flags = (a.flags & !ROPE_VECTOR) | if vector { ROPE_VECTOR } else { 0 };
    a.rows_per_block = rows;
    a.lanes_per_head = lph;
    a.teams = teams;
    a.units_per_lane = upl;
    let wt = a.flags & ROPE_WEIGHT_IN_T != 0;
    let kernel = abi::rope_kernel_name(dt, wt, !vector)
        .ok_or_else(|| format!("a float dtype (weights of it: bf16 or f16), got {dt:?}"))?;
    Ok(RopeLaunch {
        kernel,
        block,
        grid,
        args: a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(heads: u32, head_dim: u32, per_head: bool) -> RopeArgs {
        let dim = i64::from(heads * head_dim);
        RopeArgs {
            out: 1 << 20,
            x: [2 << 20, 0],
            cos: 3 << 20,
            sin: 4 << 20,
            x_b: [7 * dim, 0],
            x_l: [dim, 0],
            out_t: 7 * dim,
            out_b: 7 * dim,
            out_l: i64::from(head_dim),
            out_h: 7 * i64::from(head_dim),
            batch: 1,
            seq: 7,
            heads,
            head_dim,
            tensors: 1,
            flags: if per_head { ROPE_PER_HEAD } else { 0 },
            ..Default::default()
        }
    }

    #[test]
    fn argument_of_the_params() {
        let p = RopeParams {
            eps: 0.5,
            eps_mode: EpsMode::ClampNorm,
            weight_mode: WeightMode::OffsetOne,
            rounding: Rounding::AtEnd,
            heads: 4,
            head_dim: 16,
            scope: NormScope::PerHead,
            style: RopeStyle::HalfSplit,
            layout: HeadLayout::Bhld,
            tensors: 2,
        };
        let a = rope_args(&p, 3, 5, 0x1000, false, false);
        assert_eq!(
            (a.out, a.batch, a.seq, a.heads, a.head_dim, a.tensors),
            (0x1000, 3, 5, 4, 16, 2)
        );
        // [2, B, H, L, D]: tensor, batch, position and head strides.
        assert_eq!(
            (a.out_t, a.out_b, a.out_l, a.out_h),
            (3 * 4 * 5 * 16, 4 * 5 * 16, 16, 5 * 16)
        );
        assert_eq!(
            a.flags,
            ROPE_HALF_SPLIT | ROPE_PER_HEAD | ROPE_OFFSET_ONE | ROPE_CLAMP_NORM
        );
        assert_eq!(a.eps, 0.25 / 16.0);
        let b = rope_args(
            &RopeParams {
                layout: HeadLayout::Blhd,
                rounding: Rounding::BeforeWeight,
                eps_mode: EpsMode::AddToMean,
                ..p
            },
            3,
            5,
            0,
            true,
            true,
        );
        // [2, B, L, H, D].
        assert_eq!(
            (b.out_t, b.out_b, b.out_l, b.out_h),
            (3 * 5 * 4 * 16, 5 * 4 * 16, 4 * 16, 16)
        );
        assert_eq!(b.flags & ROPE_ROUND_BEFORE_WEIGHT, ROPE_ROUND_BEFORE_WEIGHT);
        // Weights and tables of the input dtype.
        assert_eq!(
            b.flags & (ROPE_WEIGHT_IN_T | ROPE_TABLES_IN_T),
            ROPE_WEIGHT_IN_T | ROPE_TABLES_IN_T
        );
        assert_eq!(b.eps, 0.5);
    }

    #[test]
    fn wan_and_flux_shapes() {
        // Wan 14B: 40 heads of 128 bf16, one row a block: 20 teams of 8 lanes.
        let p = plan_rope(args(40, 128, false), DType::BF16, 32).unwrap();
        assert_eq!(
            (p.kernel.as_str(), p.block, p.grid),
            ("rms_norm_rope_bf16", 160, 7)
        );
        assert_eq!((p.args.lanes_per_head, p.args.teams), (8, 20));
        assert_eq!((p.args.rows_per_block, p.args.units_per_lane), (1, 1));
        // Weights of the input dtype: the _wt kernels (16-bit types only).
        let mut a = args(40, 128, false);
        a.flags |= ROPE_WEIGHT_IN_T;
        let p = plan_rope(a, DType::F16, 32).unwrap();
        assert_eq!(p.kernel, "rms_norm_rope_f16_wt");
        a.x[0] += 2;
        let p = plan_rope(a, DType::BF16, 32).unwrap();
        assert_eq!(p.kernel, "rms_norm_rope_bf16_wt_scalar");
        assert!(plan_rope(a, DType::F32, 32).is_err());
        // Flux: 24 heads of 128, per head: 12 teams of 8 lanes, 2 rows a block.
        let p = plan_rope(args(24, 128, true), DType::BF16, 32).unwrap();
        assert_eq!((p.block, p.args.rows_per_block, p.grid), (192, 2, 4));
    }

    #[test]
    fn scalar_and_limits() {
        // A misaligned base takes single values, four units a lane: 128 / 2 / 4 = 16 lanes.
        let mut a = args(2, 128, false);
        a.x[0] += 2;
        let p = plan_rope(a, DType::BF16, 32).unwrap();
        assert_eq!(
            (p.kernel.as_str(), p.args.lanes_per_head),
            ("rms_norm_rope_bf16_scalar", 16)
        );
        assert_eq!(p.args.flags & ROPE_VECTOR, 0);
        // Head size 72 (not whole units of 16 bf16): scalar, 36 / 4 -> 16 lanes.
        let p = plan_rope(args(3, 72, true), DType::BF16, 32).unwrap();
        assert_eq!(p.args.lanes_per_head, 16);
        // Too long a head for single values on a 32-lane warp; fine with 64.
        assert!(plan_rope(args(1, 300, false), DType::F32, 32).is_err());
        assert!(plan_rope(args(1, 300, false), DType::F32, 64).is_ok());
        // Too many heads for one block.
        assert!(plan_rope(args(1024, 64, false), DType::BF16, 32).is_err());
    }
}
