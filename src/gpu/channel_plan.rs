//! Launch geometry of the channel kernels (`hip/norm_channel.h`, [`Variant::Channel`]): a norm
//! over another dimension than the last, the tensor seen as `outer x channels x inner`.
//!
//! A block covers one outer index and a tile of `lanes_per_row * V` consecutive positions (`V`
//! elements a 16-byte chunk on the vector path, 1 otherwise); its threads are `L` lanes along
//! the positions times `G = block / L` channel groups. The plan keeps every thread's channels in
//! registers (`chunks_per_lane = K`, `K * G >= channels`, `K` at most [`channel_hold`]) when a
//! block of at most [`CHANNEL_MAX_BLOCK`] threads allows it, and falls back to reading each
//! input twice (`K = 0`) for more channels than that. Lanes along positions are preferred up
//! to 8 (128-byte segments of a channel for 2-byte input) and the block aims at
//! [`CHANNEL_BLOCK`] threads.

use super::abi::Variant;
use super::geometry::{max_blocks, vector_width, Plan};

/// Threads a block aims at.
pub const CHANNEL_BLOCK: u32 = 256;
/// The most threads a channel block has (`NORM_LAUNCH_BOUNDS_CHAN`: two such blocks a
/// multiprocessor, 128 registers a thread).
pub const CHANNEL_MAX_BLOCK: u32 = 256;
/// Bytes of the kernels' cross-warp reduction buffer (`CHANNEL_RED_BYTES` in
/// `hip/norm_channel.h`): warps x positions of a tile x the accumulator's bytes must fit.
pub const CHANNEL_RED_BYTES: u64 = 8192;
/// Lanes along positions the plan prefers before it shrinks them for more channel groups.
const MIN_LANES: u64 = 8;

/// The most channel chunks a thread holds in registers (`channel_hold` in
/// `hip/norm_channel.h`): 32 registers of raw inputs, x alone or x and the residual.
pub fn channel_hold(fused: bool) -> u64 {
    if fused {
        4
    } else {
        8
    }
}

/// What [`plan_channels`] needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelProblem {
    pub outer: u64,
    pub channels: u64,
    pub inner: u64,
    /// Bytes of one input element.
    pub elem_bytes: u32,
    /// Whether 16-byte chunks of positions are allowed (see `Call::plan`).
    pub vector: bool,
    pub warp_size: u32,
    pub fused: bool,
    /// Dynamic shared memory a block may stage tiles in (`DeviceShape::stage_bytes`; 0: the
    /// staged kernels are not there, as on AMD).
    pub stage_bytes: u64,
}

/// Bytes of the kernels' compute type for elements of `elem_bytes`: f64 for f64, else f32.
fn acc_bytes(elem_bytes: u32) -> u64 {
    if elem_bytes == 8 {
        8
    } else {
        4
    }
}

/// Positions one block (tile) of `plan` covers, for elements of `elem_bytes`.
pub fn tile(elem_bytes: u32, plan: &Plan) -> u64 {
    let v = if plan.vector {
        vector_width(elem_bytes as usize) as u64
    } else {
        1
    };
    u64::from(plan.lanes_per_row) * v
}

/// Blocks per outer index of `inner` positions under `plan` (`hip/norm_channel.h` derives the
/// same count from the launch).
pub fn tiles(inner: u64, elem_bytes: u32, plan: &Plan) -> u64 {
    inner.div_ceil(tile(elem_bytes, plan))
}

/// Picks the launch for `p` (`rows_per_launch` counts outer indices).
///
/// # Errors
/// A warp size that is not 32 or 64, a zero size, or more positions than one launch's grid.
pub fn plan_channels(p: &ChannelProblem) -> Result<Plan, String> {
    let w = u64::from(p.warp_size);
    if w != 32 && w != 64 {
        return Err(format!("warp size must be 32 or 64, got {w}"));
    }
    if p.channels == 0 || p.inner == 0 || p.elem_bytes == 0 {
        return Err(format!(
            "channels, positions and element size must be >= 1, got {}, {} and {}",
            p.channels, p.inner, p.elem_bytes
        ));
    }
    let v = vector_width(p.elem_bytes as usize) as u64;
    let vector = p.vector && p.inner.is_multiple_of(v);
    let chunks = if vector { p.inner / v } else { p.inner };
    let lanes_max = chunks.next_power_of_two().min(w);
    if vector {
        if let Some(plan) = plan_staged(p, lanes_max)? {
            return Ok(plan);
        }
    }
    let hold = channel_hold(p.fused);
    let need = p.channels.div_ceil(hold).next_power_of_two();
    let max_block = u64::from(CHANNEL_MAX_BLOCK);
    let (lanes, mut groups) = if need <= max_block {
        let pref = (u64::from(CHANNEL_BLOCK) / need).max(MIN_LANES.min(lanes_max));
        let lanes = lanes_max.min(pref).min(max_block / need).max(1);
        (lanes, need)
    } else {
        let lanes = lanes_max.min(MIN_LANES);
        (lanes, u64::from(CHANNEL_BLOCK) / lanes)
    };
    // Whole warps: more groups (idle past the last channel) when a block would be smaller.
    if lanes * groups < w {
        groups = w / lanes;
    }
    let block = lanes * groups;
    let k = if need <= max_block {
        p.channels.div_ceil(groups)
    } else {
        0
    };
    debug_assert!(k <= hold && block <= max_block && block % w == 0);
    let red = block / w * lanes * if vector { v } else { 1 } * acc_bytes(p.elem_bytes);
    if red > CHANNEL_RED_BYTES {
        return Err(format!("internal: a reduction of {red} bytes"));
    }
    let mut plan = Plan {
        variant: Variant::Channel,
        vector,
        block: block as u32,
        grid: 0,
        rows_per_block: 1,
        lanes_per_row: lanes as u32,
        chunks_per_lane: k as u32,
        rows_per_launch: 0,
        stages: 0,
        smem_bytes: 0,
    };
    let tiles = tiles(p.inner, p.elem_bytes, &plan);
    let per_launch = max_blocks(block as u32) / tiles;
    if per_launch == 0 {
        return Err(format!(
            "{} positions need {tiles} blocks, more than one launch has",
            p.inner
        ));
    }
    plan.rows_per_launch = per_launch;
    plan.grid = (p.outer.max(1).min(per_launch) * tiles) as u32;
    Ok(plan)
}

/// Threads of a staged channel block (`CHANNEL_STAGED_BLOCK` in `hip/norm_channel_staged.h`).
pub const CHANNEL_STAGED_BLOCK: u32 = 256;
/// The most lanes along positions the staged plan takes (`hip/norm_channel_staged.h` sizes its
/// reduction arrays for at most 16).
const STAGED_LANES: u64 = 16;

/// Dynamic shared memory of a staged channel block with `lanes` lanes: the tile (inputs x
/// channels x lanes chunks of 16 bytes) and the weights in the compute type.
fn staged_bytes(p: &ChannelProblem, lanes: u64) -> u64 {
    let inputs = if p.fused { 2 } else { 1 };
    inputs * p.channels * lanes * 16 + p.channels * acc_bytes(p.elem_bytes)
}

/// The staged plan ([`Variant::ChannelStaged`]: one tile a block, copied whole into shared
/// memory) when the device stages and a tile of at least two chunks of positions fits its
/// budget; `None` otherwise. The widest tile of at least 8 lanes (128 bytes of each channel)
/// in half the budget (four blocks a multiprocessor), else the widest in the whole budget
/// (two), at most [`STAGED_LANES`] lanes. Measured on the H200 (2026-12-04,
/// `scripts/gpu/probe_channels.sh`, bf16 unless said): [1, 384, 131040] rms_norm 8 lanes (four
/// blocks) 82.7-83.7% of copy against 16 (two) 79.4-80.8% and 4 (six) 76.9%; the fused op 8
/// lanes (two) 79.1-79.7% against 4 (four) 70.9%, f32 83.3% against 68.9%; [1, 192, 262080]
/// 16 lanes (four) 86.9% against 8 (six) 85.7%; [1, 96, 499200] 16 lanes 93.1% against 8
/// 86.0%. Tiles of 2 or 4 lanes (thousands of channels) against the register kernel: not
/// measured.
fn plan_staged(p: &ChannelProblem, lanes_max: u64) -> Result<Option<Plan>, String> {
    if p.stage_bytes == 0 {
        return Ok(None);
    }
    let widest = |min: u64, budget: u64| {
        let mut lanes = lanes_max.min(STAGED_LANES);
        while lanes > min && staged_bytes(p, lanes) > budget {
            lanes /= 2;
        }
        (lanes >= min && staged_bytes(p, lanes) <= budget).then_some(lanes)
    };
    // At least two lanes: a lane's 16 bytes are half a 32-byte DRAM sector.
    let Some(lanes) = widest(8, p.stage_bytes / 2).or_else(|| widest(2, p.stage_bytes)) else {
        return Ok(None);
    };
    let block = CHANNEL_STAGED_BLOCK;
    let mut plan = Plan {
        variant: Variant::ChannelStaged,
        vector: true,
        block,
        grid: 0,
        rows_per_block: 1,
        lanes_per_row: lanes as u32,
        chunks_per_lane: 0,
        rows_per_launch: 0,
        stages: 1,
        smem_bytes: staged_bytes(p, lanes) as u32,
    };
    let tiles = tiles(p.inner, p.elem_bytes, &plan);
    // Outer indices a launch may cover: its tiles in at most max_blocks blocks.
    let per_launch = max_blocks(block) / tiles;
    if per_launch == 0 {
        return Err(format!(
            "{} positions need {tiles} tiles, more than one launch has",
            p.inner
        ));
    }
    plan.rows_per_launch = per_launch;
    plan.grid = (p.outer.max(1).min(per_launch) * tiles) as u32;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prob(channels: u64, inner: u64, eb: u32, fused: bool, warp: u32) -> ChannelProblem {
        ChannelProblem {
            outer: 2,
            channels,
            inner,
            elem_bytes: eb,
            vector: true,
            warp_size: warp,
            fused,
            stage_bytes: 0,
        }
    }

    #[test]
    fn wan_vae_shapes() {
        // The VAE decoder's first stage at 480p: 384 channels, 21 x 60 x 104 positions.
        let p = plan_channels(&prob(384, 131_040, 2, false, 32)).unwrap();
        assert_eq!((p.block, p.lanes_per_row, p.chunks_per_lane), (256, 4, 6));
        assert!(p.vector);
        let p = plan_channels(&prob(384, 131_040, 2, true, 32)).unwrap();
        assert_eq!((p.block, p.lanes_per_row, p.chunks_per_lane), (256, 2, 3));
        let p = plan_channels(&prob(96, 131_040, 2, false, 32)).unwrap();
        assert_eq!((p.block, p.lanes_per_row, p.chunks_per_lane), (256, 16, 6));
        // Staged (the H200's budget): 8 lanes (16 would not fit), a 48 KiB tile and the f32
        // weights, one tile a block.
        let staged = ChannelProblem {
            stage_bytes: 113 << 10,
            ..prob(384, 131_040, 2, false, 32)
        };
        let p = plan_channels(&staged).unwrap();
        assert_eq!(p.variant, Variant::ChannelStaged);
        assert_eq!((p.block, p.stages, p.rows_per_block), (256, 1, 1));
        assert_eq!((p.lanes_per_row, p.smem_bytes), (8, 384 * 8 * 16 + 384 * 4));
        assert_eq!(u64::from(p.grid), 2 * tiles(131_040, 2, &p));
        let p = plan_channels(&ChannelProblem {
            fused: true,
            ..staged
        })
        .unwrap();
        assert_eq!(
            (p.lanes_per_row, p.smem_bytes),
            (8, 2 * 384 * 8 * 16 + 384 * 4)
        );
        // 96 channels: 16 lanes (256 bytes of each channel a tile).
        let p = plan_channels(&ChannelProblem {
            channels: 96,
            ..staged
        })
        .unwrap();
        assert_eq!(p.lanes_per_row, 16);
        // Too many channels for the budget: the register kernel.
        let p = plan_channels(&ChannelProblem {
            channels: 5000,
            ..staged
        })
        .unwrap();
        assert_eq!(p.variant, Variant::Channel);
    }

    #[test]
    fn every_shape_is_covered() {
        for warp in [32, 64] {
            for fused in [false, true] {
                for eb in [2, 4, 8] {
                    for channels in [1, 2, 3, 7, 16, 96, 385, 4096, 8192, 8193, 20000] {
                        for inner in [1, 2, 3, 7, 8, 9, 64, 100, 4096, 131_040] {
                            for vector in [false, true] {
                                let pr = ChannelProblem {
                                    vector,
                                    stage_bytes: if warp == 32 { 113 << 10 } else { 0 },
                                    ..prob(channels, inner, eb, fused, warp)
                                };
                                let p = plan_channels(&pr).unwrap();
                                let w = u64::from(warp);
                                let b = u64::from(p.block);
                                let l = u64::from(p.lanes_per_row);
                                assert!(b % w == 0 && b <= u64::from(CHANNEL_MAX_BLOCK));
                                assert!(l.is_power_of_two() && l <= w);
                                let k = u64::from(p.chunks_per_lane);
                                assert!(k == 0 || k * (b / l) >= channels, "{pr:?} {p:?}");
                                assert!(k <= channel_hold(fused));
                                if p.variant == Variant::ChannelStaged {
                                    assert!(u64::from(p.smem_bytes) <= pr.stage_bytes);
                                    assert!(l <= STAGED_LANES && p.rows_per_block == 1);
                                    assert_eq!(p.block, CHANNEL_STAGED_BLOCK);
                                    let t = tiles(inner, eb, &p);
                                    assert_eq!(u64::from(p.grid), t * 2.min(p.rows_per_launch));
                                    continue;
                                }
                                // Holding is only given up past a full block of groups.
                                if k == 0 {
                                    let need = channels.div_ceil(channel_hold(fused));
                                    assert!(need > u64::from(CHANNEL_MAX_BLOCK));
                                }
                                assert!(tiles(inner, eb, &p) * tile(eb, &p) >= inner);
                                assert!(!p.vector || inner % 2 == 0);
                            }
                        }
                    }
                }
            }
        }
    }
}
