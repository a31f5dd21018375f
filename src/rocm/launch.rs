//! Launch planning for AMD: which kernel, the work-group and grid sizes, the packed
//! [`NormArgs`], and the split of huge row counts into several dispatches (an HSA dispatch
//! counts its grid in work-items with 32-bit sizes, so `grid * block` must stay below 2^32).
//!
//! The geometry itself (variant choice, block size, rows per block) belongs to the kernels and
//! is meant to be shared with the CUDA launcher; this module keeps it in [`geometry`] until the
//! backend-neutral version exists, and only adds what is AMD-specific (the dispatch split).

use crate::abi::{self, NormArgs};
use candle_core::DType;

/// Hidden sizes up to this use the `_rows` variant (several rows per work-group).
pub(crate) const ROWS_VARIANT_MAX_HIDDEN: usize = 256;
/// Work-group size of the `_rows` variant.
pub(crate) const ROWS_BLOCK: u32 = 256;
/// Largest work-group any kernel is launched with.
pub(crate) const MAX_BLOCK: u32 = 1024;
/// An HSA dispatch packet holds the grid size in work-items as a u32.
pub(crate) const MAX_WORK_ITEMS: u64 = u32::MAX as u64;

/// Kernel, work-group size and rows per work-group for one problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kernel: String,
    pub block: u32,
    pub rows_per_block: u32,
}

/// One dispatch: the first row it covers, its row count and its grid size (work-groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dispatch {
    pub first_row: u64,
    pub rows: u64,
    pub grid: u32,
}

pub(crate) fn dtype_size(dt: DType) -> usize {
    dt.size_in_bytes()
}

/// The geometry for `rows x hidden` of `x` with weight dtype `w` (already
/// [`abi::kernel_weight_dtype`]), on a device whose wavefront has `wave` lanes.
pub(crate) fn geometry(
    fused: bool,
    x: DType,
    w: DType,
    hidden: usize,
    wave: u32,
) -> Option<Geometry> {
    let rows_variant = hidden <= ROWS_VARIANT_MAX_HIDDEN;
    let kernel = abi::kernel_name(fused, x, w, rows_variant)?;
    let wave = wave.clamp(32, 64);
    if rows_variant {
        return Some(Geometry {
            kernel,
            block: ROWS_BLOCK,
            rows_per_block: ROWS_BLOCK / wave,
        });
    }
    // One row per work-group: one 16-byte vector per lane per step, rounded up to whole waves.
    let vec = (16 / dtype_size(x)).max(1);
    let lanes = hidden.div_ceil(vec) as u64;
    let block = lanes
        .div_ceil(u64::from(wave))
        .saturating_mul(u64::from(wave))
        .clamp(u64::from(wave), u64::from(MAX_BLOCK)) as u32;
    Some(Geometry {
        kernel,
        block,
        rows_per_block: 1,
    })
}

/// Splits `rows` into dispatches whose grids stay within the HSA limits.
pub(crate) fn dispatches(rows: u64, g: &Geometry) -> Vec<Dispatch> {
    let rpb = u64::from(g.rows_per_block.max(1));
    let max_groups = (MAX_WORK_ITEMS / u64::from(g.block.max(1))).min(u64::from(u32::MAX));
    let max_rows = max_groups * rpb;
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
    g: &Geometry,
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
        rows_per_block: if g.rows_per_block > 1 || g.kernel.ends_with("_rows") {
            g.rows_per_block
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_and_blocks() {
        let g = geometry(false, DType::BF16, DType::BF16, 128, 64).unwrap();
        assert_eq!(g.kernel, "rms_norm_bf16_rows");
        assert_eq!((g.block, g.rows_per_block), (256, 4));
        let g = geometry(false, DType::BF16, DType::BF16, 128, 32).unwrap();
        assert_eq!(g.rows_per_block, 8);
        let g = geometry(true, DType::F16, DType::F32, 5120, 64).unwrap();
        assert_eq!(g.kernel, "fused_add_rms_norm_f16_wf32");
        assert_eq!((g.block, g.rows_per_block), (640, 1));
        let g = geometry(false, DType::F32, DType::F32, 1_000_000, 32).unwrap();
        assert_eq!(g.block, MAX_BLOCK);
        let g = geometry(false, DType::F64, DType::F64, 257, 64).unwrap();
        assert_eq!((g.kernel.as_str(), g.block), ("rms_norm_f64", 192));
        assert!(geometry(false, DType::U8, DType::U8, 8, 64).is_none());
        // Every geometry names an exported kernel.
        let all = abi::all_kernel_names();
        for hidden in [1, 7, 64, 256, 257, 1536, 5120] {
            for x in abi::X_DTYPES {
                for fused in [false, true] {
                    let w = abi::kernel_weight_dtype(x, DType::F32);
                    let g = geometry(fused, x, w, hidden, 64).unwrap();
                    assert!(all.contains(&g.kernel), "{}", g.kernel);
                    assert!(g.block <= MAX_BLOCK && g.block % 32 == 0);
                }
            }
        }
    }

    #[test]
    fn dispatch_split() {
        let g = Geometry {
            kernel: "rms_norm_f32".into(),
            block: 1024,
            rows_per_block: 1,
        };
        assert!(dispatches(0, &g).is_empty());
        let d = dispatches(10, &g);
        assert_eq!(
            d,
            vec![Dispatch {
                first_row: 0,
                rows: 10,
                grid: 10
            }]
        );
        let rows = 5_000_000u64; // 5e6 * 1024 work-items > 2^32
        let d = dispatches(rows, &g);
        assert!(d.len() == 2, "{d:?}");
        assert_eq!(d.iter().map(|x| x.rows).sum::<u64>(), rows);
        for x in &d {
            assert!(u64::from(x.grid) * 1024 <= MAX_WORK_ITEMS);
        }
        assert_eq!(d[1].first_row, d[0].rows);
        let g = Geometry {
            kernel: "rms_norm_f32_rows".into(),
            block: 256,
            rows_per_block: 4,
        };
        let d = dispatches(3_024_001, &g);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].grid, 756_001);
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
        let g = geometry(false, DType::F32, DType::F32, 8, 64).unwrap();
        let d = Dispatch {
            first_row: 3,
            rows: 5,
            grid: 2,
        };
        let a = pack(&o, 4, 8, 1e-6, abi::NORM_OFFSET_ONE, &g, &d);
        assert_eq!(a.out, 0x1000 + 3 * 8 * 4);
        assert_eq!(a.x, 0x2000 + 3 * 16 * 4);
        assert_eq!((a.sum_out, a.residual), (0, 0));
        assert_eq!(a.weight, 0x3000);
        assert_eq!((a.rows, a.hidden, a.x_stride, a.out_stride), (5, 8, 16, 8));
        assert_eq!(a.eps, 1e-6);
        assert_eq!((a.flags, a.rows_per_block), (1, 4));
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
