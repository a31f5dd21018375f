//! One kernel call, vendor-neutral: the operands' device addresses, the kernel name and plan
//! for a device, and the packed [`NormArgs`] of each launch. The CUDA and ROCm launchers only
//! load the named kernel and queue these launches.

use super::abi::{self, NormArgs};
use super::channel_plan::{self, plan_channels, ChannelProblem};
use super::geometry::{self, Plan, Problem};
use crate::config::{EpsMode, Rounding, WeightMode};
use crate::op::NormOp;
use crate::quant::{QuantDType, QuantSpec};
use candle_core::DType;

/// Device addresses and row strides (in elements) of one call; 0 for an unused residual, sum
/// or weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Operands {
    pub out: u64,
    pub out_stride: u64,
    pub sum_out: u64,
    pub sum_stride: u64,
    pub x: u64,
    pub x_stride: u64,
    pub residual: u64,
    pub res_stride: u64,
    pub weight: u64,
}

/// What a device contributes to a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceShape {
    /// 32 on NVIDIA and AMD gfx10+, 64 on AMD gfx9.
    pub warp_size: u32,
    /// Streaming multiprocessors or compute units.
    pub multiprocessors: u32,
    /// Dynamic shared memory a block may use to stage rows (see [`Problem::stage_bytes`]).
    pub stage_bytes: u64,
}

/// The rest of a norm over another dimension than the last ([`abi::Variant::Channel`]): the
/// call's `rows` are outer indices, `hidden` the channels and the operands' strides channel
/// strides; these are positions per outer index and the other strides, in elements (the
/// outputs' position stride is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Channels {
    pub inner: u64,
    pub x_outer: u64,
    pub res_outer: u64,
    pub out_outer: u64,
    pub sum_outer: u64,
    pub x_inner: u64,
    pub res_inner: u64,
}

/// A quantised output's part of a call ([`abi::Variant::Quant`]): the operands' `out` is then the
/// values' bytes (`out_stride` in bytes) and `scales` one f32 a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QuantCall {
    pub scales: u64,
    pub spec: QuantSpec,
}

/// One call of a kernel over `rows x hidden`, or with `channels` over
/// `rows x hidden x channels.inner` normalised over the middle dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Call {
    pub op: NormOp,
    /// The dtype of x, residual, out and sum.
    pub x_dtype: DType,
    /// The weight dtype the kernel takes (`abi::kernel_weight_dtype`); `x_dtype` without weight.
    pub w_dtype: DType,
    pub rows: u64,
    pub hidden: u64,
    pub operands: Operands,
    pub channels: Option<Channels>,
    /// A quantised output (rows over the last dimension only).
    pub quant: Option<QuantCall>,
}

/// One launch of a call: its grid (blocks) and its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Launch {
    pub grid: u32,
    pub args: NormArgs,
    /// Dynamic shared memory per block (the staged loop's row buffers), bytes.
    pub smem_bytes: u32,
}

/// The `NormArgs::flags` bits of an op's options.
pub(crate) fn option_flags(op: &NormOp) -> u32 {
    let mut f = 0;
    if op.weight_mode == WeightMode::OffsetOne {
        f |= abi::NORM_OFFSET_ONE;
    }
    if op.rounding == Rounding::BeforeWeight {
        f |= abi::NORM_ROUND_BEFORE_WEIGHT;
    }
    if op.eps_mode == EpsMode::ClampNorm {
        f |= abi::NORM_CLAMP_NORM;
    }
    f
}

impl Call {
    /// The kernel name and launch plan on a device of `shape`, with `blocks_per_mp` blocks of
    /// the planned kernel resident per multiprocessor (0: unknown; see [`Problem`]).
    pub fn plan(&self, shape: DeviceShape, blocks_per_mp: u32) -> Result<(String, Plan), String> {
        let (fused, x, w) = (self.op.fused, self.x_dtype, self.w_dtype);
        let p = match self.channel_problem(shape) {
            Some(cp) => plan_channels(&cp)?,
            None => self.row_plan(shape, blocks_per_mp)?,
        };
        let kernel = abi::kernel_name(fused, x, w, p.variant)
            .ok_or_else(|| format!("no kernel for input {x:?} with weight {w:?}"))?;
        Ok((kernel, p))
    }

    /// The channel problem of a call over another dimension than the last.
    fn channel_problem(&self, shape: DeviceShape) -> Option<ChannelProblem> {
        let ch = self.channels?;
        let o = &self.operands;
        let eb = self.x_dtype.size_in_bytes();
        let v = geometry::vector_width(eb) as u64;
        let mut addrs = vec![o.x, o.out];
        let mut strides = vec![o.x_stride, o.out_stride, ch.x_outer, ch.out_outer, ch.inner];
        let mut unit = ch.x_inner == 1;
        if self.op.fused {
            addrs.extend([o.residual, o.sum_out]);
            strides.extend([o.res_stride, o.sum_stride, ch.res_outer, ch.sum_outer]);
            unit &= ch.res_inner == 1;
        }
        // The kernel's own check (`channel_vector_holds` in hip/norm_channel.h): aligned bases,
        // chunk-multiple strides and position counts, positions contiguous in the inputs.
        let vector =
            unit && addrs.iter().all(|a| a % 16 == 0) && strides.iter().all(|s| s % v == 0);
        Some(ChannelProblem {
            outer: self.rows,
            channels: self.hidden,
            inner: ch.inner,
            elem_bytes: eb as u32,
            vector,
            warp_size: shape.warp_size,
            fused: self.op.fused,
            stage_bytes: shape.stage_bytes,
        })
    }

    /// The plan of a call over rows.
    fn row_plan(&self, shape: DeviceShape, blocks_per_mp: u32) -> Result<Plan, String> {
        let o = &self.operands;
        let eb = self.x_dtype.size_in_bytes();
        let mut addrs = vec![o.x, o.out, o.weight];
        // Also the row stride of a fresh output (`hidden`; its sum half then starts aligned
        // too): an in-place call, whose outputs are its operands, takes the path the
        // out-of-place op takes, so its bits are the same.
        let mut strides = vec![
            o.x_stride as usize,
            o.out_stride as usize,
            self.hidden as usize,
        ];
        if self.op.fused {
            addrs.extend([o.residual, o.sum_out]);
            strides.extend([o.res_stride as usize, o.sum_stride as usize]);
        }
        geometry::plan(&Problem {
            rows: self.rows,
            hidden: self.hidden,
            elem_bytes: eb as u32,
            vector: geometry::vector_ok(&addrs, &strides, self.hidden as usize, eb),
            warp_size: shape.warp_size,
            multiprocessors: shape.multiprocessors,
            blocks_per_mp,
            stage_bytes: shape.stage_bytes,
            inputs: if self.op.fused { 2 } else { 1 },
            wide_weight: self.w_dtype.size_in_bytes() > eb,
            partial_variance: self.op.var_size(self.hidden as usize) < self.hidden as usize,
            quant: self.quant.is_some(),
        })
    }

    /// The launches of `plan`: pieces of at most `plan.rows_per_launch` rows, each with its row
    /// pointers advanced by whole rows.
    /// For a channel call, pieces of at most `plan.rows_per_launch` outer indices, each with
    /// every tile of their positions, one tile a block (`rows_per_block` is 1 in channel plans).
    pub fn launches(&self, plan: &Plan) -> Vec<Launch> {
        let rpb = u64::from(plan.rows_per_block.max(1));
        let max_rows = plan.rows_per_launch.max(rpb);
        let eb = self.x_dtype.size_in_bytes() as u32;
        let tiles = self
            .channels
            .map_or(1, |ch| channel_plan::tiles(ch.inner, eb, plan));
        let mut out = Vec::new();
        let mut first = 0;
        while first < self.rows {
            let n = (self.rows - first).min(max_rows);
            out.push(Launch {
                grid: (n * tiles).div_ceil(rpb) as u32,
                args: self.pack(plan, first, n),
                smem_bytes: plan.smem_bytes,
            });
            first += n;
        }
        out
    }

    /// The kernel argument for rows (outer indices) `first .. first + rows` of the call.
    fn pack(&self, plan: &Plan, first: u64, rows: u64) -> NormArgs {
        let o = &self.operands;
        let ch = self.channels.unwrap_or_default();
        let elem = self.x_dtype.size_in_bytes() as u64;
        // Where the operands' rows (outer indices) step: row or outer strides.
        let step = |row: u64, outer: u64| if self.channels.is_some() { outer } else { row };
        let at = |base: u64, stride: u64| {
            if base == 0 {
                0
            } else {
                base + first * stride * elem
            }
        };
        let mut flags = option_flags(&self.op);
        if plan.vector {
            flags |= abi::NORM_VECTOR;
        }
        flags |= plan.stages << abi::NORM_STAGES_SHIFT;
        let (mut out, mut scales, mut quant_scale) =
            (at(o.out, step(o.out_stride, ch.out_outer)), 0, 0.0);
        if let Some(q) = self.quant {
            // One byte a value, one f32 a row.
            out = o.out + first * o.out_stride;
            scales = q.scales + first * 4;
            if q.spec.dtype == QuantDType::I8 {
                flags |= abi::NORM_QUANT_I8;
            }
            if let Some(s) = q.spec.fixed {
                flags |= abi::NORM_QUANT_STATIC;
                quant_scale = s;
            }
        }
        NormArgs {
            out,
            sum_out: at(o.sum_out, step(o.sum_stride, ch.sum_outer)),
            x: at(o.x, step(o.x_stride, ch.x_outer)),
            residual: at(o.residual, step(o.res_stride, ch.res_outer)),
            weight: o.weight,
            out_stride: o.out_stride as i64,
            sum_stride: o.sum_stride as i64,
            x_stride: o.x_stride as i64,
            res_stride: o.res_stride as i64,
            rows: rows as i64,
            hidden: self.hidden as i64,
            eps: self.op.eps_arg(self.hidden as usize),
            flags,
            rows_per_block: plan.rows_per_block,
            lanes_per_row: plan.lanes_per_row,
            chunks_per_lane: plan.chunks_per_lane,
            var_size: self.op.var_size(self.hidden as usize) as i64,
            inner: ch.inner as i64,
            x_outer: ch.x_outer as i64,
            res_outer: ch.res_outer as i64,
            out_outer: ch.out_outer as i64,
            sum_outer: ch.sum_outer as i64,
            x_inner: ch.x_inner as i64,
            res_inner: ch.res_inner as i64,
            scales,
            quant_scale,
            reserved: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, NormConfig};
    use crate::error::FLOAT_DTYPES;
    use crate::gpu::geometry::Variant;

    fn call(fused: bool, x: DType, w: DType, rows: u64, hidden: u64, o: Operands) -> Call {
        Call {
            op: NormOp::new(&NormConfig::new(1e-6), Backend::Auto, fused),
            x_dtype: x,
            w_dtype: w,
            rows,
            hidden,
            operands: o,
            channels: None,
            quant: None,
        }
    }

    fn ops(x: u64, out: u64, stride: u64) -> Operands {
        Operands {
            out,
            out_stride: stride,
            x,
            x_stride: stride,
            ..Default::default()
        }
    }

    fn shape(warp_size: u32, multiprocessors: u32) -> DeviceShape {
        DeviceShape {
            warp_size,
            multiprocessors,
            stage_bytes: 0,
        }
    }

    #[test]
    fn kernels_and_variants() {
        let c = call(
            false,
            DType::BF16,
            DType::BF16,
            3_024_000,
            128,
            ops(0x1000, 0x2000, 128),
        );
        let (k, p) = c.plan(shape(64, 304), 0).unwrap();
        assert_eq!(k, "rms_norm_bf16_rows");
        assert_eq!(p.variant, Variant::Rows);
        assert!(p.lanes_per_row <= 64 && p.block % 64 == 0);
        let c = call(
            true,
            DType::F16,
            DType::F32,
            75600,
            5120,
            ops(0x1000, 0x2000, 5120),
        );
        let (k, p) = c.plan(shape(32, 96), 0).unwrap();
        assert_eq!(k, "fused_add_rms_norm_f16_wf32");
        assert_eq!(p.variant, Variant::Block);
        assert_eq!(p.lanes_per_row, p.block);
        // Every plan names an exported kernel, for both wavefront sizes.
        let all = abi::kernel_names(&[
            Variant::Block,
            Variant::Rows,
            Variant::Staged,
            Variant::RowsStaged,
            Variant::Partial,
        ]);
        for wave in [32, 64] {
            for hidden in [1u64, 7, 64, 128, 256, 257, 1536, 5120, 40000] {
                for x in FLOAT_DTYPES {
                    for fused in [false, true] {
                        let w = abi::kernel_weight_dtype(x, DType::F32);
                        let c = call(fused, x, w, 1000, hidden, ops(0x1000, 0x2000, hidden));
                        let (k, p) = c.plan(shape(wave, 80), 0).unwrap();
                        assert!(all.contains(&k), "{k}");
                        let max = if fused && w != x {
                            geometry::MAX_BLOCK_WIDE
                        } else {
                            geometry::MAX_BLOCK
                        };
                        assert!(p.block % wave == 0 && p.block <= max, "{k} {p:?}");
                    }
                }
            }
        }
        let c = call(false, DType::U8, DType::U8, 1, 8, ops(0x1000, 0x2000, 8));
        assert!(c.plan(shape(64, 1), 0).is_err());
    }

    #[test]
    fn misaligned_operands_use_scalar_chunks() {
        let aligned = call(
            false,
            DType::BF16,
            DType::BF16,
            10,
            4096,
            ops(0x1000, 0x2000, 4096),
        );
        let (_, p) = aligned.plan(shape(64, 1), 0).unwrap();
        // x starts 2 bytes into a 16-byte chunk.
        let odd = call(
            false,
            DType::BF16,
            DType::BF16,
            10,
            4096,
            ops(0x1002, 0x2000, 4096),
        );
        let (_, q) = odd.plan(shape(64, 1), 0).unwrap();
        assert!(p.vector && !q.vector);
        // Scalar chunks: 8x more chunks per row, so more lanes or more chunks per lane.
        assert!(
            u64::from(q.block) * u64::from(q.chunks_per_lane.max(1))
                > u64::from(p.block) * u64::from(p.chunks_per_lane.max(1))
                || q.chunks_per_lane == 0,
            "{p:?} {q:?}"
        );
        let args = odd.launches(&q)[0].args;
        assert_eq!(args.flags & abi::NORM_VECTOR, 0);
        assert_ne!(aligned.launches(&p)[0].args.flags & abi::NORM_VECTOR, 0);
    }

    #[test]
    fn in_place_takes_the_out_of_place_path() {
        // f32 rows of 130 in a buffer of rows of 136: x alone would allow 16-byte chunks, but
        // the out-of-place op's fresh output (rows of 130) does not, so in place neither.
        let fresh = call(
            false,
            DType::F32,
            DType::F32,
            9,
            130,
            ops(0x1000, 0x2000, 136),
        );
        let fresh = Call {
            operands: Operands {
                out_stride: 130,
                ..fresh.operands
            },
            ..fresh
        };
        let inplace = Call {
            operands: ops(0x1000, 0x1000, 136),
            ..fresh
        };
        let (_, p) = fresh.plan(shape(32, 1), 0).unwrap();
        let (_, q) = inplace.plan(shape(32, 1), 0).unwrap();
        assert!(!p.vector && !q.vector);
    }

    #[test]
    fn launch_split() {
        let c = call(false, DType::F32, DType::F32, 0, 1, ops(0x1000, 0x2000, 1));
        let (_, p) = c.plan(shape(64, 1), 0).unwrap();
        assert!(c.launches(&p).is_empty());
        let c = Call { rows: 10, ..c };
        let l = c.launches(&p);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].args.x, l[0].args.rows), (0x1000, 10));
        // Far more rows than one HSA dispatch can hold (only planned, never allocated).
        let rows = 1_000_000_000u64;
        let c = call(
            false,
            DType::F32,
            DType::F32,
            rows,
            5120,
            ops(0x1000, 0x2000, 5120),
        );
        let (_, p) = c.plan(shape(64, 1), 0).unwrap();
        let l = c.launches(&p);
        assert!(l.len() > 1, "{p:?}");
        assert_eq!(l.iter().map(|x| x.args.rows as u64).sum::<u64>(), rows);
        let mut first = 0u64;
        for x in &l {
            assert!(u64::from(x.grid) * u64::from(p.block) <= u64::from(u32::MAX));
            assert!(u64::from(x.grid) * u64::from(p.rows_per_block) >= x.args.rows as u64);
            assert!(x.args.rows as u64 <= p.rows_per_launch);
            assert_eq!(x.args.x, 0x1000 + first * 5120 * 4);
            first += x.args.rows as u64;
        }
    }

    #[test]
    fn packing() {
        let o = Operands {
            out: 0x1000,
            out_stride: 8,
            x: 0x2000,
            x_stride: 16,
            weight: 0x3000,
            ..Default::default()
        };
        let cfg = NormConfig::new(1e-6).with_weight_mode(WeightMode::OffsetOne);
        let c = Call {
            op: NormOp::new(&cfg, Backend::Auto, false),
            ..call(false, DType::F32, DType::F32, 8, 8, o)
        };
        let (_, p) = c.plan(shape(64, 1), 0).unwrap();
        let a = c.pack(&p, 3, 5);
        assert_eq!(a.out, 0x1000 + 3 * 8 * 4);
        assert_eq!(a.x, 0x2000 + 3 * 16 * 4);
        assert_eq!((a.sum_out, a.residual), (0, 0));
        assert_eq!(a.weight, 0x3000);
        assert_eq!((a.rows, a.hidden, a.x_stride, a.out_stride), (5, 8, 16, 8));
        assert_eq!(a.eps, 1e-6);
        assert_eq!(a.flags, abi::NORM_OFFSET_ONE | abi::NORM_VECTOR);
        assert_eq!(
            (a.rows_per_block, a.lanes_per_row, a.chunks_per_lane),
            (p.rows_per_block, p.lanes_per_row, p.chunks_per_lane)
        );
        // The by-value struct has the C layout of hip/norm_args.h.
        use std::mem::offset_of;
        assert_eq!(std::mem::size_of::<NormArgs>(), abi::NORM_ARGS_BYTES);
        assert_eq!(offset_of!(NormArgs, weight), 32);
        assert_eq!(offset_of!(NormArgs, out_stride), 40);
        assert_eq!(offset_of!(NormArgs, hidden), 80);
        assert_eq!(offset_of!(NormArgs, eps), 88);
        assert_eq!(offset_of!(NormArgs, flags), 96);
        assert_eq!(offset_of!(NormArgs, rows_per_block), 100);
        assert_eq!(offset_of!(NormArgs, lanes_per_row), 104);
        assert_eq!(offset_of!(NormArgs, chunks_per_lane), 108);
        assert_eq!(offset_of!(NormArgs, var_size), 112);
        assert_eq!(offset_of!(NormArgs, inner), 120);
        assert_eq!(offset_of!(NormArgs, res_inner), 168);
    }

    #[test]
    fn channel_calls() {
        // [3, 384, 131040] bf16 over dim 1, fused: outer strides step the launches.
        let (outer, c, inner) = (3u64, 384u64, 131_040u64);
        let o = Operands {
            out: 0x10000,
            out_stride: inner,
            sum_out: 0x20000,
            sum_stride: inner,
            x: 0x30000,
            x_stride: inner,
            residual: 0x40000,
            res_stride: inner,
            weight: 0x50002,
        };
        let ch = Channels {
            inner,
            x_outer: c * inner,
            res_outer: c * inner,
            out_outer: c * inner,
            sum_outer: c * inner,
            x_inner: 1,
            res_inner: 1,
        };
        let cl = Call {
            channels: Some(ch),
            ..call(true, DType::BF16, DType::F32, outer, c, o)
        };
        let (k, p) = cl.plan(shape(32, 132), 0).unwrap();
        assert_eq!(k, "fused_add_rms_norm_bf16_wf32_chan");
        // An unaligned weight does not matter: it is read a channel at a time.
        assert!(p.vector);
        let l = cl.launches(&p);
        assert_eq!(l.len(), 1);
        let tiles = inner.div_ceil(u64::from(p.lanes_per_row) * 8);
        assert_eq!(u64::from(l[0].grid), outer * tiles);
        let a = cl.pack(&p, 2, 1);
        assert_eq!(a.x, 0x30000 + 2 * c * inner * 2);
        assert_eq!(a.sum_out, 0x20000 + 2 * c * inner * 2);
        assert_eq!(
            (a.inner, a.x_inner, a.x_stride),
            (inner as i64, 1, inner as i64)
        );
        // Positions that are not whole chunks, or strided positions: scalar.
        let odd = Call {
            channels: Some(Channels { inner: 7, ..ch }),
            ..cl
        };
        assert!(!odd.plan(shape(32, 132), 0).unwrap().1.vector);
        let strided = Call {
            channels: Some(Channels { x_inner: 2, ..ch }),
            ..cl
        };
        let (_, q) = strided.plan(shape(32, 132), 0).unwrap();
        assert!(!q.vector);
        assert_eq!(strided.launches(&q)[0].args.flags & abi::NORM_VECTOR, 0);
    }

    #[test]
    fn flag_bits() {
        let f = |m, r| {
            option_flags(&NormOp::new(
                &NormConfig::new(1e-6).with_weight_mode(m).with_rounding(r),
                Backend::Auto,
                false,
            ))
        };
        assert_eq!(f(WeightMode::Scale, Rounding::AtEnd), 0);
        assert_eq!(f(WeightMode::OffsetOne, Rounding::AtEnd), 1);
        assert_eq!(f(WeightMode::OffsetOne, Rounding::BeforeWeight), 3);
        let clamp = NormConfig::new(1e-12).with_eps_mode(EpsMode::ClampNorm);
        assert_eq!(option_flags(&NormOp::new(&clamp, Backend::Auto, false)), 8);
    }
}
