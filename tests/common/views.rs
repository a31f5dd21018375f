//! Views of the case matrices: strided layouts read in place and layouts that are copied first
//! (`RopeView`: those of `rms_norm_rope`'s `[B, L, dim]` inputs).

use candle_core::{Device, IndexOp, Result, Tensor};

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

/// How x (and k) are laid out: a view of a base tensor whose other elements are NaN, so an
/// element read from outside the view shows up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeView {
    Contiguous,
    /// `narrow(1, 2, L)` of `[B, L + 3, dim]`.
    SeqNarrowed,
    /// `narrow(0, 1, B)` of `[B + 2, L, dim]`.
    BatchNarrowed,
    /// `transpose(0, 1)` of `[L, B, dim]`.
    Transposed,
    /// `narrow(2, 3, dim)` of `[B, L, dim + 6]`: rows further apart than `dim`.
    RowPadded,
    /// `transpose(1, 2)` of `[B, dim, L]`: a last dim that is not contiguous (copied first).
    LastDimStrided,
}

impl RopeView {
    pub const ALL: [RopeView; 6] = [
        Self::Contiguous,
        Self::SeqNarrowed,
        Self::BatchNarrowed,
        Self::Transposed,
        Self::RowPadded,
        Self::LastDimStrided,
    ];

    /// `x` (a host `[B, L, dim]` tensor) on `dev` seen through this view.
    pub fn make(self, x: &Tensor, dev: &Device) -> Result<Tensor> {
        let (b, l, dim) = x.dims3()?;
        let nan = |d: &[usize]| Tensor::full(f32::NAN, d, &Device::Cpu)?.to_dtype(x.dtype());
        let base = match self {
            Self::Contiguous => x.clone(),
            Self::SeqNarrowed => Tensor::cat(&[&nan(&[b, 2, dim])?, x, &nan(&[b, 1, dim])?], 1)?,
            Self::BatchNarrowed => Tensor::cat(&[&nan(&[1, l, dim])?, x, &nan(&[1, l, dim])?], 0)?,
            Self::Transposed => x.transpose(0, 1)?.contiguous()?,
            Self::RowPadded => Tensor::cat(&[&nan(&[b, l, 3])?, x, &nan(&[b, l, 3])?], 2)?,
            Self::LastDimStrided => x.transpose(1, 2)?.contiguous()?,
        }
        .to_device(dev)?;
        match self {
            Self::Contiguous => Ok(base),
            Self::SeqNarrowed => base.narrow(1, 2, l),
            Self::BatchNarrowed => base.narrow(0, 1, b),
            Self::Transposed => base.transpose(0, 1),
            Self::RowPadded => base.narrow(2, 3, dim),
            Self::LastDimStrided => base.transpose(1, 2),
        }
    }
}
