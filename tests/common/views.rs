//! Views of the case matrix: strided layouts read in place and layouts that are copied first.

use candle_core::{IndexOp, Result, Tensor};

/// A view: `x` and `r` taken from base tensors of shape `base`; `hidden` is the last dim.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub name: &'static str,
    pub base: &'static [usize],
    pub hidden: usize,
    pub x: fn(&Tensor) -> Result<Tensor>,
    pub r: fn(&Tensor) -> Result<Tensor>,
}

#[rustfmt::skip]
pub const VIEWS: [View; 14] = [
    View { name: "offset rows", base: &[6, 10, 40], hidden: 40,
        x: |t| t.narrow(0, 2, 3), r: |t| t.narrow(0, 1, 3) },
    View { name: "strided rows", base: &[6, 10, 40], hidden: 33,
        x: |t| t.narrow(2, 3, 33), r: |t| t.narrow(2, 0, 33) },
    View { name: "stepped rows", base: &[6, 10, 40], hidden: 40,
        x: |t| t.i((.., 1..8, ..)), r: |t| t.i((.., 2..9, ..)) },
    View { name: "one row", base: &[6, 10, 40], hidden: 40,
        x: |t| t.i((4, 7)), r: |t| t.i((1, 2)) },
    View { name: "transposed", base: &[6, 10, 40], hidden: 10,
        x: |t| t.transpose(1, 2), r: |t| t.transpose(1, 2) },
    View { name: "leading transpose", base: &[6, 10, 40], hidden: 40,
        x: |t| t.transpose(0, 1), r: |t| t.transpose(0, 1) },
    View { name: "broadcast", base: &[6, 10, 40], hidden: 40,
        x: |t| t.i((0, 0))?.broadcast_as((5, 40)), r: |t| t.i((0, 1..6)) },
    View { name: "last dim narrowed, vector + tail", base: &[4, 9, 136], hidden: 130,
        x: |t| t.narrow(2, 0, 130), r: |t| t.narrow(2, 6, 130) },
    View { name: "last dim narrowed, misaligned", base: &[4, 9, 136], hidden: 128,
        x: |t| t.narrow(2, 1, 128), r: |t| t.narrow(2, 8, 128) },
    View { name: "aligned x, shifted residual", base: &[4, 9, 136], hidden: 128,
        x: |t| t.narrow(2, 0, 128), r: |t| t.narrow(2, 8, 128) },
    View { name: "rows narrowed", base: &[4, 9, 136], hidden: 136,
        x: |t| t.narrow(0, 1, 2), r: |t| t.narrow(0, 2, 2) },
    View { name: "row step", base: &[4, 9, 136], hidden: 64,
        x: |t| t.narrow(2, 8, 64), r: |t| t.narrow(2, 0, 64) },
    View { name: "transposed (copied)", base: &[4, 9, 136], hidden: 9,
        x: |t| t.transpose(1, 2), r: |t| t.transpose(1, 2) },
    View { name: "narrowed columns, row range", base: &[10, 40], hidden: 33,
        x: |t| t.narrow(1, 3, 33)?.i(1..9), r: |t| t.narrow(1, 0, 33)?.i(2..10) },
];

/// Views for norms over dim 1 (`hidden`: the size of dim 1 in the view).
#[rustfmt::skip]
pub const DIM_VIEWS: [View; 4] = [
    View { name: "dim 1, outer narrowed", base: &[4, 9, 20], hidden: 9,
        x: |t| t.narrow(0, 1, 2), r: |t| t.narrow(0, 2, 2) },
    View { name: "dim 1, inner narrowed", base: &[4, 9, 20], hidden: 9,
        x: |t| t.narrow(2, 3, 17), r: |t| t.narrow(2, 0, 17) },
    View { name: "dim 1, inner dims transposed (copied)", base: &[2, 8, 5, 6], hidden: 8,
        x: |t| t.transpose(2, 3), r: |t| t.transpose(2, 3) },
    View { name: "dim 1 of a channels-last tensor", base: &[2, 5, 6, 8], hidden: 8,
        x: |t| t.permute((0, 3, 1, 2)), r: |t| t.permute((0, 3, 1, 2)) },
];
