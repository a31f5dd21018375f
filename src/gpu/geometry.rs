//! Launch geometry for the kernels in `hip/`, shared by the CUDA and ROCm launchers: the one
//! place where it is decided. The kernels receive every decision in `NormArgs` (vector chunks,
//! lanes per row, chunks per lane, rows per block) and never re-derive it.
//! Pure Rust, no GPU calls: every decision is a function of the problem's numbers.
//!
//! API:
//! - [`vector_ok`]`(addrs, strides, hidden, elem_bytes)`: whether the kernel may use 16-byte
//!   chunks: every byte address (row 0 of x, out, and residual/sum for the fused op, and the
//!   weight if any) 16-byte aligned, every row stride a multiple of the chunk, and
//!   `hidden >= chunk`.
//! - [`plan`]`(&Problem)` -> [`Plan`]: the variant (one row per block, or several rows per block
//!   for small hidden), block size, grid size, `rows_per_block` (the `NormArgs` field), and how
//!   many rows one launch may cover (`rows_per_launch`; larger problems are split by the
//!   launcher, shifting the row pointers by whole rows).
//!
//! The numbers that tie this file to the kernel: at most [`MAX_BLOCK`] threads a block and at
//! most [`REG_CHUNKS`] chunks a lane kept in registers; a longer row is read twice.

/// The most threads in a block of the one-row-per-block kernels (their launch bounds, which cap
/// the compiler at 65536 / 768 = 85 registers a thread).
pub const MAX_BLOCK: u32 = 768;
/// The same for the fused op's one-row-per-block kernels with an f32 weight for 2-byte input,
/// and both ops' partial-variance kernels with one (`NORM_LAUNCH_BOUNDS_WIDE`): 96 registers a
/// thread, so that two chunks a lane of x, the residual and the wider weight stay in registers
/// without spilling.
pub const MAX_BLOCK_WIDE: u32 = 640;
/// Most rows one block handles (one after another, or `block / lanes_per_row` at a time).
pub const MAX_ROW_ITERS: u64 = 16;
/// The most threads a block of the quantised one-row-per-block kernels has
/// (`NORM_LAUNCH_BOUNDS_QUANT` in `hip/portable.h`: 128 registers a thread).
pub const QUANT_MAX_BLOCK: u32 = 512;
/// Blocks wanted per multiprocessor before blocks take several rows each: enough waves that the
/// last, partial one costs little.
pub const BLOCKS_PER_MP: u64 = 16;
/// Chunks a lane holds in registers before the kernel switches to its two-read loop.
pub const REG_CHUNKS: u64 = 2;
/// Block size of the several-rows-per-block variant when there are rows enough.
pub const ROWS_BLOCK: u32 = 256;
/// Block size of the two-read loop for rows longer than registers hold.
pub const LOOP_BLOCK: u32 = 512;
/// The most threads a block of the partial-variance kernels ([`Variant::Partial`]) has in their
/// two-read loop (rows too long for registers), and the chunks a lane aims to take: such a
/// block handles one row at a time, so several blocks a multiprocessor keep rows in flight
/// during each other's reductions. Measured on the H200 (2026-12-03, 75600x5120 bf16, variance
/// over the first 4992, then always the loop): blocks of 512 threads (one a multiprocessor at 75
/// registers) ran at 16.3% DRAM throughput, 22.4% of copy; these, 56.8%.
pub const PARTIAL_BLOCK: u32 = 256;
pub const PARTIAL_LANE_CHUNKS: u64 = 4;
/// The most threads a block of the staged kernels is launched with (`NORM_LAUNCH_BOUNDS_STAGED` in
/// `hip/portable.h`: four such blocks fit a multiprocessor's registers).
pub const STAGED_BLOCK: u32 = 256;
/// The most threads a block of the staged several-rows-per-block kernels
/// ([`Variant::RowsStaged`]) has. Measured on the H200 (probe, 2026-12-02, 3024000x128, 8 rows a
/// team for `rms_norm`, 2 for the fused op): 128 threads against 256, `rms_norm` bf16 93.3 vs
/// 92.0% of copy, f16 87.4 vs 86.7%, the fused op bf16 97.1 vs 94.4%.
pub const STAGED_ROWS_BLOCK: u32 = 128;
/// The fewest threads a block of the staged kernels is launched with.
pub const STAGED_MIN_BLOCK: u32 = 64;
/// Input bytes of a staged row per lane the block size aims at (5 chunks of 16 bytes).
/// Measured for the quantised rows on the H200 (2026-12-04, `rms_norm_quant` 75600x5120 bf16 ->
/// fp8, blocks of two rows, alternating runs): 40 bytes (256 threads) 498-501 us, 80 bytes
/// (128) 343-344 us, 160 bytes (64) 413-414 us.
pub const STAGED_LANE_BYTES: u64 = 80;
/// Input bytes a lane of a staged quantised row of 2-byte elements of at least
/// [`STAGED_PAIR_BELOW`], one row a block: half the lanes a row (so half the per-row work of
/// reductions, scales and loop set-up a row), the same shared memory a warp as two rows at
/// [`STAGED_LANE_BYTES`]. Measured on the H200 (2026-12-04, 75600x5120, lane bytes x rows a
/// block, one run each; 80 x 2 was the rule): `rms_norm_quant` bf16 -> fp8 80 x 2 321.9 us,
/// 80 x 4 315.3, 160 x 1 315.6, 160 x 2 414.0; -> i8 369.3, 358.8, 347.1; f16 -> fp8 334.1,
/// 325.3, 305.4; the fused op bf16 -> fp8 668.9, 672.7, 647.7; -> i8 679.5, 674.3, 659.6.
/// f32 rows keep 80 x 2 (`rms_norm_quant` 537.8 us against 561.6 at 160 x 1).
pub const STAGED_QUANT_LANE_BYTES: u64 = 160;
/// Row buffers the staged kernels are told they have (`S`, the `NORM_STAGES` bits): the copies of
/// the block's next row are issued before this row is reduced. A block holds `rows_per_block`
/// (at most `S`) buffers.
pub const STAGES: u32 = 2;
/// Staged rows shorter than this (input bytes) go two to a block, so that a block has two rows'
/// copies in flight; longer rows go one to a block.
pub const STAGED_PAIR_BELOW: u64 = 4 << 10;
/// Rows each team of a staged several-rows-per-block plan ([`Variant::RowsStaged`]) takes in
/// turn (each row's successor's copies in flight while it is reduced): `rms_norm`, the fused op.
/// Measured on the H200 (README, probe): `rms_norm` 128 bf16 78% of copy at 2 rows a team, 88% at
/// 4, 92.5% at 8; f32 97% at 4, 95% at 8; the fused op 94-96% at 2 (128 and 512 bf16).
pub const STAGED_TEAM_ITERS: [u64; 2] = [8, 2];
/// The shortest row (bytes) `rms_norm` stages; the fused op and the quantised ops (whose
/// register kernels hold a row at 512 threads, one block a multiprocessor) stage any.
pub const STAGE_MIN_ROW_BYTES: u64 = 3 << 10;

/// Elements in one 16-byte chunk.
pub fn vector_width(elem_bytes: usize) -> usize {
    16 / elem_bytes.clamp(1, 16)
}

/// The vector rule (see the module docs). `addrs` are byte addresses of the first row
/// of every operand the kernel touches (a null weight may be passed as 0); `strides` the row
/// strides in elements of x, out and (fused) residual and sum.
pub fn vector_ok(addrs: &[u64], strides: &[usize], hidden: usize, elem_bytes: usize) -> bool {
    let v = vector_width(elem_bytes);
    addrs.iter().all(|a| a % 16 == 0) && strides.iter().all(|s| s % v == 0) && hidden >= v
}

/// What [`plan`] needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub rows: u64,
    pub hidden: u64,
    /// Bytes of one input element (2 for f16/bf16, 4 for f32, 8 for f64).
    pub elem_bytes: u32,
    /// Whether [`vector_ok`] holds for this call.
    pub vector: bool,
    /// 32 on NVIDIA and AMD gfx10+, 64 on AMD gfx9.
    pub warp_size: u32,
    /// Streaming multiprocessors (NVIDIA) or compute units (AMD).
    pub multiprocessors: u32,
    /// Blocks of the chosen kernel and block size that fit on one multiprocessor at once (the
    /// driver's occupancy query for [`Plan::block`] of a first `plan` with 0 here), or 0 when
    /// unknown. When known, the grid is exactly the blocks that fit at once, each taking an
    /// equal share of the rows (no partial last wave, and every block pipelines its rows).
    pub blocks_per_mp: u32,
    /// Dynamic shared memory a block may use to stage rows (`hip/norm_staged.h`: asynchronous
    /// copies, NVIDIA sm_80+), 0 where rows are not staged.
    pub stage_bytes: u64,
    /// Row inputs a staged row holds: 1 (x), 2 for the fused op (x and the residual).
    pub inputs: u32,
    /// Whether the weight's elements are wider than the input's (an f32 weight for f16/bf16
    /// input: the `_wf32` kernels).
    pub wide_weight: bool,
    /// Whether the mean of squares is over part of the row only (a variance size below hidden):
    /// [`Variant::Partial`].
    pub partial_variance: bool,
    /// Whether the output is quantised ([`Variant::Quant`], [`Variant::RowsQuant`],
    /// [`Variant::StagedQuant`], [`Variant::RowsStagedQuant`]): register blocks of
    /// at most [`QUANT_MAX_BLOCK`] threads; staged wherever rows can be, whatever their length.
    pub quant: bool,
}

/// The most threads a block of the one-row-per-block kernel for `p` has: [`MAX_BLOCK_WIDE`]
/// for the fused op with a wide weight and for the partial-variance kernels with one,
/// [`MAX_BLOCK`] otherwise.
pub fn max_block(p: &Problem) -> u32 {
    if p.quant {
        QUANT_MAX_BLOCK
    } else if (p.inputs >= 2 || p.partial_variance) && p.wide_weight {
        MAX_BLOCK_WIDE
    } else {
        MAX_BLOCK
    }
}

/// Rows per block for `units` row-units (rows, or groups of `conc` rows) over the grid: with a
/// known occupancy, an equal share for exactly the blocks that fit at once; otherwise enough
/// blocks for many waves, capped at [`MAX_ROW_ITERS`] units a block.
fn units_per_block(units: u64, p: &Problem) -> u64 {
    let mps = p.multiprocessors.max(1) as u64;
    if p.blocks_per_mp > 0 {
        units
            .div_ceil(p.blocks_per_mp as u64 * mps)
            .clamp(1, 1 << 24)
    } else {
        (units / (BLOCKS_PER_MP * mps)).clamp(1, MAX_ROW_ITERS)
    }
}

pub use super::abi::Variant;

/// A launch configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub variant: Variant,
    /// Whether the kernel reads and writes 16-byte chunks (`NORM_VECTOR`).
    pub vector: bool,
    /// Threads per block (a multiple of the warp size, at most [`MAX_BLOCK`]).
    pub block: u32,
    /// Blocks for the whole problem (or for `rows_per_launch` rows when the problem is split).
    pub grid: u32,
    /// Rows per block in all (the `NormArgs::rows_per_block` field): [`Variant::Block`] takes
    /// them one after another, [`Variant::Rows`] `block / lanes_per_row` at a time.
    pub rows_per_block: u32,
    /// Lanes that share one row: `block` for [`Variant::Block`], a power of two <= warp size
    /// for [`Variant::Rows`].
    pub lanes_per_row: u32,
    /// Chunks (16-byte or single elements) each lane holds in registers; 0 = two-read loop.
    pub chunks_per_lane: u32,
    /// The most rows one launch may cover (grid limits); the launcher splits beyond.
    pub rows_per_launch: u64,
    /// Row buffers of the staged loop ([`Variant::Staged`] only; 0: not staged) and the dynamic
    /// shared memory they take (the launch's).
    pub stages: u32,
    pub smem_bytes: u32,
}

fn round_up(v: u64, m: u64) -> u64 {
    v.div_ceil(m) * m
}

/// The most blocks one launch may have: CUDA allows 2^31 - 1 in x; HIP counts the grid in
/// threads in a `u32`.
pub(crate) fn max_blocks(block: u32) -> u64 {
    ((u32::MAX as u64) / block as u64).min(i32::MAX as u64)
}

/// A row of `n` chunks in registers, one row a block of at most `max` threads (warps of `w`):
/// the block and chunks a lane (1 to [`REG_CHUNKS`]) that cover it with the least idle lanes,
/// preferring more chunks a lane (measured on the H200, bf16 rows of 1024-2048 at 32760 rows: 2
/// chunks a lane 86-89% of copy, 1 chunk 68-72%: smaller blocks, more of them resident, more
/// bytes in flight); `None` when the row does not fit.
fn register_fit(n: u64, w: u64, max: u64) -> Option<(u64, u64)> {
    let mut best: Option<(f64, u64, u64)> = None;
    for k in 1..=REG_CHUNKS {
        let t = round_up(n.div_ceil(k), w);
        if t > max {
            continue;
        }
        let waste = (t * k - n) as f64 / n as f64;
        let score = 4.0 * waste + 0.5 * (REG_CHUNKS - k) as f64;
        if best.is_none_or(|(s, _, _)| score < s) {
            best = Some((score, t, k));
        }
    }
    best.map(|(_, t, k)| (t, k))
}

/// Picks the launch for `p` (a quantised output: the quantised kernel of the same plan,
/// [`Variant::Quant`], [`Variant::RowsQuant`], [`Variant::StagedQuant`] or
/// [`Variant::RowsStagedQuant`]).
///
/// # Errors
/// A warp size that is not 32 or 64, a zero hidden size or element size.
pub fn plan(p: &Problem) -> Result<Plan, String> {
    if !p.quant {
        return plan_unquantised(p);
    }
    if p.partial_variance {
        return Err("quantised outputs are not of a partial variance".into());
    }
    let mut plan = plan_unquantised(p)?;
    plan.variant = match plan.variant {
        Variant::Block => Variant::Quant,
        Variant::Rows => Variant::RowsQuant,
        Variant::Staged => Variant::StagedQuant,
        Variant::RowsStaged => Variant::RowsStagedQuant,
        v => return Err(format!("no quantised kernel for variant {v:?}")),
    };
    Ok(plan)
}

/// [`plan`] without quantised outputs.
fn plan_unquantised(p: &Problem) -> Result<Plan, String> {
    let w = p.warp_size as u64;
    if w != 32 && w != 64 {
        return Err(format!("warp size must be 32 or 64, got {w}"));
    }
    if p.hidden == 0 || p.elem_bytes == 0 {
        return Err(format!(
            "hidden and element size must be >= 1, got {} and {}",
            p.hidden, p.elem_bytes
        ));
    }
    // Chunks per row (16-byte chunks only when hidden >= a chunk).
    let v = vector_width(p.elem_bytes as usize) as u64;
    let vector = p.vector && p.hidden >= v;
    let n = if vector { p.hidden / v } else { p.hidden };
    let rows = p.rows.max(1);
    if p.partial_variance {
        // One row a block at a time: in registers as the plain norm's Block plan where the row
        // fits, else the two-read loop with about PARTIAL_LANE_CHUNKS chunks a lane in blocks
        // of at most PARTIAL_BLOCK threads.
        let (block, k) = register_fit(n, w, max_block(p) as u64).unwrap_or((
            round_up(n.div_ceil(PARTIAL_LANE_CHUNKS), w).min(PARTIAL_BLOCK as u64),
            0,
        ));
        let rpb = units_per_block(rows, p);
        let per_launch = max_blocks(block as u32) * rpb;
        return Ok(Plan {
            variant: Variant::Partial,
            vector,
            block: block as u32,
            grid: rows.min(per_launch).div_ceil(rpb) as u32,
            rows_per_block: rpb as u32,
            lanes_per_row: block as u32,
            chunks_per_lane: k as u32,
            rows_per_launch: per_launch,
            stages: 0,
            smem_bytes: 0,
        });
    }
    if n <= REG_CHUNKS * w {
        // Small rows: a team of `g` lanes per row, `k <= REG_CHUNKS` chunks per lane.
        let g = n.div_ceil(REG_CHUNKS).next_power_of_two().min(w);
        let k = n.div_ceil(g);
        let mut block = ROWS_BLOCK as u64;
        // Few rows: smaller blocks spread them over more multiprocessors.
        let want_blocks = 2 * p.multiprocessors.max(1) as u64;
        while block > w && rows.div_ceil(block / g) < want_blocks {
            block /= 2;
        }
        let block = block.max(w);
        // Where rows can be staged, the teams' rows are: STAGED_TEAM_ITERS rows a team, as
        // many blocks of at most STAGED_ROWS_BLOCK threads as that takes.
        let team_iters = STAGED_TEAM_ITERS[(p.inputs >= 2) as usize];
        let staged_block = block.min(STAGED_ROWS_BLOCK as u64).max(w);
        let smem = stage_row_bytes(p, vector)
            .map(|row| team_iters.min(STAGES as u64) * (staged_block / g) * row)
            .filter(|&bytes| fits_budget(p, bytes));
        let (variant, block, iters, stages, smem) = match smem {
            Some(bytes) => (Variant::RowsStaged, staged_block, team_iters, STAGES, bytes),
            None => (
                Variant::Rows,
                block,
                units_per_block(rows.div_ceil(block / g), p),
                0,
                0,
            ),
        };
        let conc = block / g;
        let rpb = conc * iters;
        let per_launch = max_blocks(block as u32) * rpb;
        return Ok(Plan {
            variant,
            vector,
            block: block as u32,
            grid: rows.min(per_launch).div_ceil(rpb) as u32,
            rows_per_block: rpb as u32,
            lanes_per_row: g as u32,
            chunks_per_lane: k as u32,
            rows_per_launch: per_launch,
            stages,
            smem_bytes: smem as u32,
        });
    }
    // One row per block: in registers where it fits, else the two-read loop.
    let (block, k) = register_fit(n, w, max_block(p) as u64).unwrap_or((LOOP_BLOCK as u64, 0));
    // (variant, block, chunks per lane, rows per block, ring, shared memory)
    let (variant, block, k, rpb, stages, smem) = match staged(p, vector, n) {
        Some((block, rpb, smem)) => (Variant::Staged, block, 0, rpb, STAGES, smem),
        None => (Variant::Block, block, k, units_per_block(rows, p), 0, 0),
    };
    let per_launch = max_blocks(block as u32) * rpb;
    Ok(Plan {
        variant,
        vector,
        block: block as u32,
        grid: rows.min(per_launch).div_ceil(rpb) as u32,
        rows_per_block: rpb as u32,
        lanes_per_row: block as u32,
        chunks_per_lane: k as u32,
        rows_per_launch: per_launch,
        stages,
        smem_bytes: smem as u32,
    })
}

/// The input bytes of one row (x, and the residual for the fused op) where rows can be staged at
/// all: a staging budget (`p.stage_bytes` > 0: NVIDIA sm_80+) and vector rows of whole chunks.
fn stage_row_bytes(p: &Problem, vector: bool) -> Option<u64> {
    let v = vector_width(p.elem_bytes as usize) as u64;
    (vector && p.hidden.is_multiple_of(v) && p.stage_bytes > 0)
        .then(|| p.inputs.max(1) as u64 * p.hidden * p.elem_bytes as u64)
}

/// Whether `bytes` of staged rows fit a block's budget (and a launch's u32 shared memory size).
fn fits_budget(p: &Problem, bytes: u64) -> bool {
    bytes <= p.stage_bytes.min(u32::MAX as u64)
}

/// The staged launch for rows of `n` chunks, as (block, rows per block, shared memory bytes),
/// or None where rows are not staged: no budget (`p.stage_bytes` 0: not NVIDIA sm_80+), scalar
/// rows or a partial last chunk, an `rms_norm` row shorter than [`STAGE_MIN_ROW_BYTES`], or a
/// block's rows that do not fit the budget.
///
/// Measured on the H200 (README, `scripts/gpu/probe.sh`): blocks of one row each (two below
/// [`STAGED_PAIR_BELOW`]; quantised rows of wider than 2-byte elements two wherever two fit),
/// as many as the rows, reach 97-99% of a copy at 6-40 KiB rows, where one wave of persistent
/// blocks with equal shares of the rows and a 4-row ring reached 84-88%
/// (the slowest multiprocessor sets the end; the hardware's block scheduler balances short
/// blocks). The block size follows the row: about [`STAGED_LANE_BYTES`] a lane
/// ([`STAGED_QUANT_LANE_BYTES`] for quantised rows of 2-byte elements), a power of two in
/// [`STAGED_MIN_BLOCK`], [`STAGED_BLOCK`] (bf16 5120: 128; fused bf16 5120: 256; quantised bf16
/// 5120: 64).
fn staged(p: &Problem, vector: bool, n: u64) -> Option<(u64, u64, u64)> {
    let row = stage_row_bytes(p, vector)?;
    if p.inputs < 2 && !p.quant && row < STAGE_MIN_ROW_BYTES {
        return None;
    }
    // Quantised rows of 2-byte elements from STAGED_PAIR_BELOW on: one a block, twice the lane
    // bytes (STAGED_QUANT_LANE_BYTES). Other quantised rows go two to a block wherever two fit
    // (the next row's copies in flight while this one takes its longer turn: y formed, its
    // largest |y| reduced, the bytes).
    let quant16 = p.quant && p.elem_bytes == 2 && row >= STAGED_PAIR_BELOW;
    let pair = row < STAGED_PAIR_BELOW || (p.quant && !quant16 && fits_budget(p, 2 * row));
    let rpb: u64 = if pair { 2 } else { 1 };
    let smem = rpb * row;
    if !fits_budget(p, smem) {
        return None;
    }
    // The power of two nearest (in ratio) to row / lane bytes lanes.
    let lane_bytes = if quant16 {
        STAGED_QUANT_LANE_BYTES
    } else {
        STAGED_LANE_BYTES
    };
    let lanes = (row as f64 / lane_bytes as f64).max(1.0);
    let block = (1u64 << lanes.log2().round() as u32)
        .clamp(STAGED_MIN_BLOCK as u64, STAGED_BLOCK as u64)
        .min(round_up(n, p.warp_size as u64));
    Some((block, rpb, smem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prob(rows: u64, hidden: u64, elem_bytes: u32, vector: bool, warp: u32) -> Problem {
        Problem {
            rows,
            hidden,
            elem_bytes,
            vector,
            warp_size: warp,
            multiprocessors: 132,
            blocks_per_mp: 0,
            stage_bytes: 0,
            inputs: 1,
            wide_weight: false,
            partial_variance: false,
            quant: false,
        }
    }

    /// Chunks in one row as the kernel walks it.
    fn chunks(p: &Problem, plan: &Plan) -> u64 {
        let v = vector_width(p.elem_bytes as usize) as u64;
        if plan.vector {
            p.hidden / v
        } else {
            p.hidden
        }
    }

    #[test]
    fn invariants_hold_everywhere() {
        for warp in [32u32, 64] {
            for eb in [2u32, 4, 8] {
                for vector in [false, true] {
                    let hiddens =
                        (1..=300u64).chain([511, 512, 1024, 1536, 4096, 5120, 8193, 12288]);
                    let cases = hiddens.flat_map(|h| {
                        [1u64, 7, 100, 75600, 3_024_000]
                            .into_iter()
                            .flat_map(move |r| {
                                [(1, false), (2, false), (2, true)]
                                    .into_iter()
                                    .map(move |io| (h, r, io))
                            })
                    });
                    for (hidden, rows, (inputs, wide_weight)) in cases {
                        let p = Problem {
                            inputs,
                            wide_weight,
                            partial_variance: rows == 7,
                            ..prob(rows, hidden, eb, vector, warp)
                        };
                        let pl = plan(&p).unwrap();
                        assert_eq!(pl.block % warp, 0, "{p:?} {pl:?}");
                        assert!(
                            pl.block <= max_block(&p) && pl.block >= warp,
                            "{p:?} {pl:?}"
                        );
                        assert!(
                            pl.lanes_per_row.is_power_of_two()
                                || matches!(pl.variant, Variant::Block | Variant::Partial)
                        );
                        assert_eq!(pl.variant == Variant::Partial, p.partial_variance);
                        if pl.variant == Variant::Rows {
                            let conc = pl.block / pl.lanes_per_row;
                            assert_eq!(pl.rows_per_block % conc, 0);
                        } else {
                            assert_eq!(pl.block, pl.lanes_per_row);
                        }
                        assert!(pl.rows_per_block as u64 <= MAX_ROW_ITERS * pl.block as u64);
                        // With a known occupancy: one wave of equal shares.
                        let po = plan(&Problem {
                            blocks_per_mp: 3,
                            ..p
                        })
                        .unwrap();
                        assert!(
                            po.grid as u64 <= 3 * 132
                                || po.rows_per_block as u64 * po.lanes_per_row as u64
                                    <= po.block as u64
                        );
                        assert!(po.grid as u64 * po.rows_per_block as u64 >= rows);
                        assert_eq!((po.block, po.lanes_per_row), (pl.block, pl.lanes_per_row));
                        assert!(pl.grid as u64 * pl.rows_per_block as u64 >= rows);
                        // The lanes of a row hold all of it, or the two-read loop runs.
                        let n = chunks(&p, &pl);
                        let k = pl.chunks_per_lane as u64;
                        assert!(k <= REG_CHUNKS, "{p:?} {pl:?}");
                        assert!(k == 0 || k * pl.lanes_per_row as u64 >= n, "{p:?} {pl:?}");
                        assert!(k != 0 || n > REG_CHUNKS * pl.lanes_per_row as u64);
                        assert_eq!(pl.vector, vector && hidden >= 16 / eb as u64);
                        if pl.variant == Variant::Rows {
                            assert!(pl.lanes_per_row <= warp);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn staging_fits_the_shared_memory() {
        // A budget of 113 KiB a block (the H200's 228 KiB a multiprocessor, halved).
        let base = Problem {
            stage_bytes: 113 << 10,
            ..prob(75600, 5120, 2, true, 32)
        };
        let at = |q: &Problem| {
            let p = plan(q).unwrap();
            (
                p.variant,
                p.block,
                p.rows_per_block,
                p.stages,
                p.smem_bytes,
                p.grid,
            )
        };
        // bf16 5120: 10 KiB rows, 128 lanes, one row (one buffer) a block, a block per row.
        assert_eq!(at(&base), (Variant::Staged, 128, 1, STAGES, 10240, 75600));
        // Fused: 20 KiB a row pair, 256 lanes.
        let fused = Problem { inputs: 2, ..base };
        assert_eq!(at(&fused), (Variant::Staged, 256, 1, STAGES, 20480, 75600));
        // 30000 bf16, fused: 120000 bytes a row pair, more than the budget: not staged; plain:
        // 60000 bytes, 256 lanes (the most).
        let long = Problem {
            hidden: 30000,
            ..fused
        };
        assert_eq!(plan(&long).unwrap().stages, 0);
        assert_eq!(
            at(&Problem { inputs: 1, ..long }),
            (Variant::Staged, STAGED_BLOCK, 1, STAGES, 60000, 75600)
        );
        // Per-head rows (128 bf16): teams of 8 lanes, 16 rows at a time (128-thread blocks),
        // eight rows a team (two buffers each); fused: two rows a team.
        let heads = Problem {
            hidden: 128,
            rows: 3_024_000,
            ..base
        };
        let p = plan(&heads).unwrap();
        assert_eq!(
            (p.variant, p.block, p.lanes_per_row, p.rows_per_block),
            (Variant::RowsStaged, STAGED_ROWS_BLOCK, 8, 128)
        );
        assert_eq!(
            (p.stages, p.smem_bytes, p.grid),
            (STAGES, 2 * 16 * 256, 23625)
        );
        let p = plan(&Problem { inputs: 2, ..heads }).unwrap();
        assert_eq!((p.rows_per_block, p.smem_bytes), (32, 2 * 16 * 512));
        // Quantised: the quantised kernel of the same plan; rms_norm stages short rows too
        // (1024 bf16: 2 KiB, below STAGE_MIN_ROW_BYTES), without a budget the register kernels.
        let quant = |q: Problem| plan(&Problem { quant: true, ..q }).unwrap();
        assert_eq!(
            at(&Problem {
                quant: true,
                ..base
            }),
            (Variant::StagedQuant, 64, 1, STAGES, 10240, 75600)
        );
        // Quantised f32 rows of 20 KiB: two a block at STAGED_LANE_BYTES.
        assert_eq!(
            at(&Problem {
                quant: true,
                elem_bytes: 4,
                ..base
            }),
            (Variant::StagedQuant, 256, 2, STAGES, 40960, 37800)
        );
        assert_eq!(quant(heads).variant, Variant::RowsStagedQuant);
        let short = Problem {
            hidden: 1024,
            ..base
        };
        assert_eq!(plan(&short).unwrap().variant, Variant::Block);
        assert_eq!(quant(short).variant, Variant::StagedQuant);
        let unstaged = Problem {
            stage_bytes: 0,
            ..base
        };
        assert_eq!(quant(unstaged).variant, Variant::Quant);
        assert!(quant(unstaged).block <= QUANT_MAX_BLOCK);
        assert_eq!(
            quant(Problem {
                stage_bytes: 0,
                ..heads
            })
            .variant,
            Variant::RowsQuant
        );
        // No budget, scalar rows, a partial last chunk: never staged.
        for q in [
            Problem {
                stage_bytes: 0,
                ..base
            },
            Problem {
                vector: false,
                ..base
            },
            Problem {
                hidden: 5121,
                ..base
            },
            Problem {
                hidden: 130,
                ..heads
            },
        ] {
            let p = plan(&q).unwrap();
            assert_eq!((p.stages, p.smem_bytes), (0, 0), "{q:?}");
        }
    }

    #[test]
    fn staging_rule() {
        // rms_norm stages rows of 3 KiB and more; the fused op any row that fits. Rows below
        // 4 KiB go two to a block; lanes: the power of two nearest row bytes / 80, in 64..=256.
        let short = Problem {
            stage_bytes: 113 << 10,
            ..prob(32760, 1536, 2, true, 32)
        };
        let at = |q: Problem| {
            let p = plan(&q).unwrap();
            (p.variant, p.block, p.rows_per_block, p.smem_bytes)
        };
        assert_eq!(at(short), (Variant::Staged, 64, 2, 6144));
        assert_eq!(
            at(Problem { inputs: 2, ..short }),
            (Variant::Staged, 64, 1, 6144)
        );
        assert_eq!(
            at(Problem {
                hidden: 1024,
                ..short
            })
            .0,
            Variant::Block
        );
        assert_eq!(
            at(Problem {
                hidden: 4096,
                ..short
            }),
            (Variant::Staged, 128, 1, 8192)
        );
        // f32 1536 (6 KiB): 64 lanes; fused f32 5120 (40 KiB): 256.
        let f32s = |hidden, inputs| Problem {
            hidden,
            inputs,
            elem_bytes: 4,
            ..short
        };
        assert_eq!(at(f32s(1536, 1)).1, 64);
        assert_eq!(at(f32s(5120, 2)).1, 256);
        // The grid covers every row; a block's rows fit its buffers.
        for hidden in (520..=8192).step_by(8) {
            for inputs in [1, 2] {
                let q = Problem {
                    hidden,
                    inputs,
                    ..short
                };
                let p = plan(&q).unwrap();
                if p.variant == Variant::Staged {
                    assert!(p.grid as u64 * p.rows_per_block as u64 >= q.rows);
                    assert!(p.rows_per_block <= p.stages);
                    assert_eq!(
                        p.smem_bytes as u64,
                        p.rows_per_block as u64 * inputs as u64 * hidden * 2
                    );
                    assert!(p.block >= STAGED_MIN_BLOCK && p.block <= STAGED_BLOCK);
                }
            }
        }
    }

    #[test]
    fn chosen_shapes() {
        // Wan 14B: 640 chunks of 8 bf16 -> 320 lanes x 2 chunks, 16 rows a block.
        let p = plan(&prob(75600, 5120, 2, true, 32)).unwrap();
        assert_eq!(
            (
                p.variant,
                p.block,
                p.chunks_per_lane,
                p.rows_per_block,
                p.grid
            ),
            (Variant::Block, 320, 2, 16, 4725)
        );
        // Known occupancy, 2 blocks a multiprocessor: 264 blocks of 287 rows (the last 120).
        let p = plan(&Problem {
            blocks_per_mp: 2,
            ..prob(75600, 5120, 2, true, 32)
        })
        .unwrap();
        assert_eq!((p.rows_per_block, p.grid), (287, 264));
        // Wan 1.3B: 192 chunks -> 96 lanes x 2.
        let p = plan(&prob(32760, 1536, 2, true, 32)).unwrap();
        assert_eq!((p.block, p.chunks_per_lane), (96, 2));
        // Per-head q/k norm: 16 chunks -> 8 lanes x 2, 32 rows at a time per 256-thread
        // block, 16 times.
        let p = plan(&prob(3_024_000, 128, 2, true, 32)).unwrap();
        assert_eq!(
            (
                p.variant,
                p.lanes_per_row,
                p.chunks_per_lane,
                p.rows_per_block,
                p.grid
            ),
            (Variant::Rows, 8, 2, 512, 5907)
        );
        // Same on a 64-lane wavefront: a row still takes 8 lanes.
        let p = plan(&prob(3_024_000, 128, 2, true, 64)).unwrap();
        assert_eq!((p.lanes_per_row, p.block), (8, 256));
        // f32 at 5120: 1280 chunks -> 640 lanes x 2.
        let p = plan(&prob(75600, 5120, 4, true, 32)).unwrap();
        assert_eq!((p.block, p.chunks_per_lane), (640, 2));
        // Longer than registers hold: the two-read loop.
        let p = plan(&prob(10, 40000, 2, true, 32)).unwrap();
        assert_eq!((p.block, p.chunks_per_lane), (LOOP_BLOCK, 0));
        // Few rows of small hidden: smaller blocks.
        let p = plan(&prob(4, 64, 4, true, 32)).unwrap();
        assert_eq!(p.block, 32);
        // hidden 1, one lane a row.
        let p = plan(&prob(1000, 1, 4, false, 32)).unwrap();
        assert_eq!((p.lanes_per_row, p.chunks_per_lane), (1, 1));
    }

    #[test]
    fn vector_rule() {
        assert!(vector_ok(&[256, 512, 0], &[5120, 5120], 5120, 2));
        assert!(!vector_ok(&[258, 512], &[5120, 5120], 5120, 2));
        assert!(!vector_ok(&[256, 512], &[5121, 5121], 5121, 2));
        assert!(vector_ok(&[256, 512], &[5128, 5128], 5121, 2)); // padded rows, scalar tail
        assert!(!vector_ok(&[0, 0], &[8, 8], 7, 2));
        assert!(vector_ok(&[0, 0], &[2, 2], 2, 8));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(plan(&prob(1, 8, 2, true, 16)).is_err());
        assert!(plan(&prob(1, 0, 2, true, 32)).is_err());
    }

    #[test]
    fn huge_row_counts_split() {
        let p = plan(&prob(u64::MAX / 4, 1, 4, false, 64)).unwrap();
        assert!(p.rows_per_launch < u64::MAX / 4);
        assert!(p.grid as u64 * p.block as u64 <= u32::MAX as u64);
    }
}
