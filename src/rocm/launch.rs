//! Launch planning for AMD on top of the backend-neutral geometry in [`crate::launch`]: the
//! kernel name, the launch pieces (an HSA dispatch counts its grid in work-items with 32-bit
//! sizes; `launch::plan` bounds `rows_per_launch` accordingly and this module splits), and the
//! packed [`NormArgs`] of each piece.

use crate::abi::{self, NormArgs};
use crate::launch::{self as geometry, Plan, Problem, Variant};
use candle_core::DType;

/// One dispatch: the first row it covers, its row count and its grid size (work-groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dispatch {
    pub first_row: u64,
    pub rows: u64,
    pub grid: u32,
}

/// The kernel and geometry for `rows x hidden` of `x` with weight dtype `w` (already
/// [`abi::kernel_weight_dtype`]) on a device with `wave`-lane wavefronts and `cus` compute
/// units, for the operands `o`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan(
    fused: bool,
    x: DType,
    w: DType,
    rows: u64,
    hidden: u64,
    wave: u32,
    cus: u32,
    o: &Operands,
) -> Result<(String, Plan), String> {
    let eb = x.size_in_bytes();
    let mut addrs = vec![o.x, o.out, o.weight];
    let mut strides = vec![o.x_stride as usize, o.out_stride as usize];
    if fused {
        addrs.extend([o.residual, o.sum_out]);
        strides.extend([o.res_stride as usize, o.sum_stride as usize]);
    }
    let p = geometry::plan(&Problem {
        rows,
        hidden,
        elem_bytes: eb as u32,
        vector: geometry::vector_ok(&addrs, &strides, hidden as usize, eb),
        warp_size: wave,
        multiprocessors: cus,
        // No occupancy query on the HIP side yet: the shared geometry's "unknown" grid.
        blocks_per_mp: 0,
    })?;
    let kernel = abi::kernel_name(fused, x, w, p.variant == Variant::Rows)
        .ok_or_else(|| format!("no kernel for input {x:?} with weight {w:?}"))?;
    Ok((kernel, p))
}

/// Splits `rows` into pieces of at most `plan.rows_per_launch` rows.
pub(crate) fn dispatches(rows: u64, plan: &Plan) -> Vec<Dispatch> {
    let rpb = u64::from(plan.rows_per_block.max(1));
    let max_rows = plan.rows_per_launch.max(rpb);
    let mut out = Vec::new();
    let mut first = 0;
    while first < rows {
        let n = (rows - first).min(max_rows);
        out.push(Dispatch {
            first_row: first,
            rows: n,
            grid: n.div_ceil(rpb) as u32,
        });
        first += n;
    }
    out
}

/// Device addresses and strides (in elements) of one call; null residual/sum/weight when unused.
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

/// The kernel argument for rows `d.first_row ..` of a call: row pointers advanced by
/// `first_row * stride` elements of `elem` bytes.
pub(crate) fn pack(
    o: &Operands,
    elem: usize,
    hidden: u64,
    eps: f64,
    flags: u32,
    plan: &Plan,
    d: &Dispatch,
) -> NormArgs {
    let at = |base: u64, stride: u64| {
        if base == 0 {
            0
        } else {
            base + d.first_row * stride * elem as u64
        }
    };
    NormArgs {
        out: at(o.out, o.out_stride),
        sum_out: at(o.sum_out, o.sum_stride),
        x: at(o.x, o.x_stride),
        residual: at(o.residual, o.res_stride),
        weight: o.weight,
        out_stride: o.out_stride as i64,
        sum_stride: o.sum_stride as i64,
        x_stride: o.x_stride as i64,
        res_stride: o.res_stride as i64,
        rows: d.rows as i64,
        hidden: hidden as i64,
        eps,
        flags,
        rows_per_block: plan.rows_per_block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(x: u64, out: u64, stride: u64) -> Operands {
        Operands {
            out,
            out_stride: stride,
            x,
            x_stride: stride,
            ..Default::default()
        }
    }

    #[test]
    fn kernels_and_variants() {
        let o = ops(0x1000, 0x2000, 128);
        let (k, p) = plan(false, DType::BF16, DType::BF16, 3_024_000, 128, 64, 304, &o).unwrap();
        assert_eq!(k, "rms_norm_bf16_rows");
        assert_eq!(p.variant, Variant::Rows);
        assert!(p.lanes_per_row <= 64 && p.block % 64 == 0);
        let o = ops(0x1000, 0x2000, 5120);
        let (k, p) = plan(true, DType::F16, DType::F32, 75600, 5120, 32, 96, &o).unwrap();
        assert_eq!(k, "fused_add_rms_norm_f16_wf32");
        assert_eq!(p.variant, Variant::Block);
        assert_eq!(p.lanes_per_row, p.block);
        // Every plan names an exported kernel, for both wavefront sizes.
        let all = abi::all_kernel_names();
        for wave in [32, 64] {
            for hidden in [1u64, 7, 64, 128, 256, 257, 1536, 5120, 40000] {
                for x in abi::X_DTYPES {
                    for fused in [false, true] {
                        let w = abi::kernel_weight_dtype(x, DType::F32);
                        let o = ops(0x1000, 0x2000, hidden);
                        let (k, p) = plan(fused, x, w, 1000, hidden, wave, 80, &o).unwrap();
                        assert!(all.contains(&k), "{k}");
                        assert!(p.block % wave == 0 && p.block <= geometry::MAX_BLOCK);
                    }
                }
            }
        }
        assert!(plan(false, DType::U8, DType::U8, 1, 8, 64, 1, &o).is_err());
    }

    #[test]
    fn misaligned_operands_use_scalar_chunks() {
        let aligned = ops(0x1000, 0x2000, 4096);
        let (_, p) = plan(false, DType::BF16, DType::BF16, 10, 4096, 64, 1, &aligned).unwrap();
        let odd = ops(0x1002, 0x2000, 4096); // x starts 2 bytes into a 16-byte chunk
        let (_, q) = plan(false, DType::BF16, DType::BF16, 10, 4096, 64, 1, &odd).unwrap();
        // Scalar chunks: 8x more chunks per row, so more lanes or more chunks per lane.
        assert!(
            u64::from(q.block) * u64::from(q.chunks_per_lane.max(1))
                > u64::from(p.block) * u64::from(p.chunks_per_lane.max(1))
                || q.chunks_per_lane == 0,
            "{p:?} {q:?}"
        );
    }

    #[test]
    fn dispatch_split() {
        let o = ops(0x1000, 0x2000, 1);
        let (_, p) = plan(false, DType::F32, DType::F32, 10, 1, 64, 1, &o).unwrap();
        assert!(dispatches(0, &p).is_empty());
        let d = dispatches(10, &p);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].first_row, d[0].rows), (0, 10));
        // Far more rows than one HSA dispatch can hold (only planned, never allocated).
        let rows = 1_000_000_000u64;
        let o = ops(0x1000, 0x2000, 5120);
        let (_, p) = plan(false, DType::F32, DType::F32, rows, 5120, 64, 1, &o).unwrap();
        let d = dispatches(rows, &p);
        assert!(d.len() > 1, "{p:?} {d:?}");
        assert_eq!(d.iter().map(|x| x.rows).sum::<u64>(), rows);
        for (i, x) in d.iter().enumerate() {
            assert!(u64::from(x.grid) * u64::from(p.block) <= u64::from(u32::MAX));
            assert!(u64::from(x.grid) * u64::from(p.rows_per_block) >= x.rows);
            assert!(x.rows <= p.rows_per_launch);
            if i > 0 {
                assert_eq!(x.first_row, d[i - 1].first_row + d[i - 1].rows);
            }
        }
    }

    #[test]
    fn packing() {
        let o = Operands {
            out: 0x1000,
            out_stride: 8,
            sum_out: 0,
            sum_stride: 0,
            x: 0x2000,
            x_stride: 16,
            residual: 0,
            res_stride: 0,
            weight: 0x3000,
        };
        let (_, p) = plan(false, DType::F32, DType::F32, 8, 8, 64, 1, &o).unwrap();
        let d = Dispatch {
            first_row: 3,
            rows: 5,
            grid: 2,
        };
        let a = pack(&o, 4, 8, 1e-6, abi::NORM_OFFSET_ONE, &p, &d);
        assert_eq!(a.out, 0x1000 + 3 * 8 * 4);
        assert_eq!(a.x, 0x2000 + 3 * 16 * 4);
        assert_eq!((a.sum_out, a.residual), (0, 0));
        assert_eq!(a.weight, 0x3000);
        assert_eq!((a.rows, a.hidden, a.x_stride, a.out_stride), (5, 8, 16, 8));
        assert_eq!(a.eps, 1e-6);
        assert_eq!((a.flags, a.rows_per_block), (1, p.rows_per_block));
        // The by-value struct has the C layout of hip/norm_args.h.
        use std::mem::offset_of;
        assert_eq!(std::mem::size_of::<NormArgs>(), 104);
        assert_eq!(offset_of!(NormArgs, weight), 32);
        assert_eq!(offset_of!(NormArgs, out_stride), 40);
        assert_eq!(offset_of!(NormArgs, hidden), 80);
        assert_eq!(offset_of!(NormArgs, eps), 88);
        assert_eq!(offset_of!(NormArgs, flags), 96);
        assert_eq!(offset_of!(NormArgs, rows_per_block), 100);
    }
}
