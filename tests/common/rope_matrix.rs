//! The case matrix of `rms_norm_rope` / `qk_rms_norm_rope` (`rope_cases` runs it): every
//! dtype x scope x style x layout x head size, the options, the extremes.

use super::random::SplitMix64;
use super::rope_cases::{RopeCase, RopeGroup};
use super::rope_reference::Geometry;
use super::views::RopeView;
use candle_core::DType;
use candle_rmsnorm::{EpsMode, HeadLayout, NormScope, RopeStyle, Rounding, WeightMode};

/// A fixed choice from `from` for slot `s` (a hash of `s` and `salt`): varies the secondary
/// parameters across the matrix without tying them to each other.
fn pick<T: Copy>(s: usize, salt: u64, from: &[T]) -> T {
    let mut h = SplitMix64(((s as u64) << 8) ^ salt);
    from[(rand::RngCore::next_u64(&mut h) % from.len() as u64) as usize]
}

const HEAD_DIMS: [usize; 8] = [2, 6, 8, 16, 64, 80, 128, 250];

fn geom(b: usize, l: usize, heads: usize, d: usize) -> Geometry {
    Geometry {
        batch: b,
        seq: l,
        heads,
        head_dim: d,
        scope: NormScope::Full,
        style: RopeStyle::Interleaved,
        layout: HeadLayout::Bhld,
    }
}

/// The matrix every backend runs (filter it by [`RopeGroup`] or anything else).
pub fn rope_matrix() -> Vec<RopeCase> {
    use {DType::*, RopeGroup::*};
    let dtypes = [F32, F16, BF16, F64];
    let mut m = Vec::new();
    for dt in dtypes {
        for scope in [NormScope::Full, NormScope::PerHead] {
            for style in [RopeStyle::Interleaved, RopeStyle::HalfSplit] {
                for layout in [HeadLayout::Bhld, HeadLayout::Blhd] {
                    for d in HEAD_DIMS {
                        let s = m.len();
                        let g = Geometry {
                            scope,
                            style,
                            layout,
                            ..geom(pick(s, 1, &[1, 2]), pick(s, 2, &[1, 3, 17]), 1, d)
                        };
                        let g = Geometry {
                            heads: pick(s, 3, &[1, 2, 3, 4, 5]),
                            ..g
                        };
                        let mut c = RopeCase::new(Core, dt, g);
                        c.wdtype = pick(s, 4, &[Some(dt), None, Some(F32), Some(BF16)]);
                        c.tdtype = pick(s, 5, &[F32, F32, BF16, F64, F16]);
                        c.table_rows = g.seq + pick(s, 6, &[0, 0, 1, 5, 40]);
                        c.view = pick(s, 7, &RopeView::ALL);
                        c.qk = pick(s, 8, &[false, false, true]);
                        m.push(c);
                    }
                }
            }
        }
    }
    options(&mut m);
    extremes(&mut m);
    for (i, c) in m.iter_mut().enumerate() {
        c.id = i;
    }
    m
}

/// Every weight kind with every option set, both scopes; inputs of sd 0.1, so the clamp with
/// eps 0.5 is active for most heads (norm ~0.4) and for few full rows (~0.7).
fn options(m: &mut Vec<RopeCase>) {
    use {DType::*, EpsMode::*, Rounding::*, WeightMode::*};
    let opts = [
        (Scale, AtEnd, AddToMean, 1e-6),
        (OffsetOne, AtEnd, AddToMean, 1e-6),
        (Scale, BeforeWeight, AddToMean, 1e-5),
        (OffsetOne, BeforeWeight, AddToMean, 0.0),
        (Scale, AtEnd, ClampNorm, 1e-12),
        (OffsetOne, BeforeWeight, ClampNorm, 0.5),
    ];
    for dt in [F32, F16, BF16, F64] {
        let other = match dt {
            F32 => BF16,
            _ => F32,
        };
        for scope in [NormScope::Full, NormScope::PerHead] {
            for w in [None, Some(dt), Some(other)] {
                for (mode, rounding, eps_mode, eps) in opts {
                    let s = m.len();
                    let g = Geometry {
                        scope,
                        style: pick(s, 1, &[RopeStyle::Interleaved, RopeStyle::HalfSplit]),
                        layout: pick(s, 2, &[HeadLayout::Bhld, HeadLayout::Blhd]),
                        ..geom(2, 5, 3, 16)
                    };
                    let mut c = RopeCase::new(RopeGroup::Options, dt, g);
                    (c.wdtype, c.mode, c.rounding, c.eps_mode, c.eps) =
                        (w, mode, rounding, eps_mode, eps);
                    (c.sd, c.qk) = (0.1, s % 2 == 1);
                    m.push(c);
                }
            }
        }
    }
}

fn extremes(m: &mut Vec<RopeCase>) {
    use {DType::*, NormScope::*};
    let e =
        |dt, scope, g: Geometry| RopeCase::new(RopeGroup::Extremes, dt, Geometry { scope, ..g });
    for scope in [Full, PerHead] {
        // Huge rows: f32 squares overflow (1e30; the f64 rescue), f16 squares overflow f16.
        for (dt, sd) in [(F32, 1e30), (BF16, 1e30), (F16, 2e4)] {
            let mut c = e(dt, scope, geom(2, 3, 4, 64));
            (c.sd, c.wdtype, c.qk) = (sd, Some(F32), dt == BF16);
            m.push(c);
        }
        // Tiny rows: eps dominates (1e-6), or with eps 0 they normalise to ~1 (the rescue).
        for dt in [F32, BF16] {
            for eps in [0.0, 1e-6] {
                let mut c = e(dt, scope, geom(1, 3, 2, 16));
                (c.sd, c.eps) = (1e-30, eps);
                m.push(c);
            }
        }
        for dt in [F32, F16, BF16, F64] {
            // A NaN in row (1, 2), head 1: that row (Full) or that head (PerHead) only.
            let g = Geometry {
                style: RopeStyle::HalfSplit,
                ..geom(2, 3, 3, 16)
            };
            let mut c = e(dt, scope, g);
            (c.nan_at, c.qk) = (Some((3 + 2) * 48 + 16 + 5), true);
            m.push(c);
            // A zero row, with eps added to the mean and with the clamp.
            for eps_mode in [EpsMode::AddToMean, EpsMode::ClampNorm] {
                let mut c = e(dt, scope, geom(2, 3, 3, 16));
                (c.zero_row, c.eps_mode, c.view) = (Some(4), eps_mode, RopeView::SeqNarrowed);
                m.push(c);
            }
        }
        // Empty tensors (B = 0, L = 0), both layouts, tables of 0 rows and more.
        for (b, l, rows) in [(0, 3, 3), (2, 0, 0), (2, 0, 4)] {
            for layout in [HeadLayout::Bhld, HeadLayout::Blhd] {
                let mut c = e(
                    BF16,
                    scope,
                    Geometry {
                        layout,
                        ..geom(b, l, 2, 8)
                    },
                );
                (c.table_rows, c.qk) = (rows, l == 0);
                m.push(c);
            }
        }
    }
    // Model shapes: Wan 2.1 (40 heads of 128, full-row norm), Flux (24 heads, per-head norm).
    for dt in [BF16, F32] {
        let mut c = e(dt, Full, geom(1, 9, 40, 128));
        (c.wdtype, c.table_rows, c.qk) = (Some(F32), 64, true);
        m.push(c);
        let g = Geometry {
            style: RopeStyle::HalfSplit,
            layout: HeadLayout::Blhd,
            ..geom(2, 7, 24, 128)
        };
        m.push(e(dt, PerHead, g));
    }
}
