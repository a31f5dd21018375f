//! Geometry shared by every backend: a tensor seen as `rows` rows of `hidden` contiguous
//! elements, row `r` starting at `offset + r * row_stride` ([`RowLayout`]), or, for a norm over
//! another dimension, as `outer x channels x inner` with one stride each ([`ChannelLayout`]).

use crate::error::op_error;
use candle_core::{Layout, Result};

/// A layout the kernels can read without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowLayout {
    pub offset: usize,
    pub row_stride: usize,
    pub rows: usize,
    pub hidden: usize,
}

impl RowLayout {
    /// `Some` when the last dimension is contiguous and the leading dimensions collapse into a
    /// single row stride (any contiguous tensor, a narrowed or offset view, a slice of rows with a
    /// step, a transposed pair of leading dims whose strides still nest); `None` otherwise.
    pub fn of(layout: &Layout) -> Option<Self> {
        let dims = layout.dims();
        let strides = layout.stride();
        let (&hidden, lead) = dims.split_last()?;
        let offset = layout.start_offset();
        if hidden > 1 && strides[dims.len() - 1] != 1 {
            return None;
        }
        let (rows, row_stride) = collapse(lead, &strides[..lead.len()], hidden)?;
        // Rows must not overlap (a broadcast has stride 0): the kernels write one row per row.
        if rows > 1 && row_stride < hidden {
            return None;
        }
        Some(Self {
            offset,
            row_stride,
            rows,
            hidden,
        })
    }

    /// The rows of operand `arg` of `op` in a storage of `len` elements: the one check every
    /// backend applies to `xs`, `residual` (and their device copies).
    ///
    /// # Errors
    /// A layout the kernels cannot read (see [`RowLayout::of`]) or rows past the storage end.
    pub fn checked(op: &str, arg: &str, l: &Layout, len: usize) -> Result<Self> {
        let rl = Self::of(l).ok_or_else(|| {
            op_error(
                op,
                arg,
                "rows with a contiguous last dimension",
                format!("strides {:?} for shape {:?}", l.stride(), l.dims()),
            )
        })?;
        within(op, arg, rl.end(), len)?;
        Ok(rl)
    }

    /// The element range of a weight of `hidden` elements with layout `l` in a storage of `len`
    /// elements.
    ///
    /// # Errors
    /// A weight that is not one contiguous row of `hidden`, or past the storage end.
    pub fn weight_range(
        op: &str,
        l: &Layout,
        hidden: usize,
        len: usize,
    ) -> Result<std::ops::Range<usize>> {
        let rl = Self::of(l)
            .filter(|r| r.rows == 1 && r.hidden == hidden)
            .ok_or_else(|| {
                op_error(
                    op,
                    "weight",
                    format!("a contiguous rank-1 tensor of length {hidden}"),
                    format!("layout {:?} {:?}", l.dims(), l.stride()),
                )
            })?;
        Self::checked(op, "weight", l, len)?;
        Ok(rl.offset..rl.offset + hidden)
    }

    /// One past the last element any row touches, relative to the buffer start.
    pub fn end(&self) -> usize {
        if self.rows == 0 || self.hidden == 0 {
            self.offset
        } else {
            self.offset + (self.rows - 1) * self.row_stride + self.hidden
        }
    }
}

/// Collapses `dims` (with `strides`) into one count and one stride: `Some((count, stride))`
/// when every dim of size > 1 steps by the product of the inner ones' counts times the
/// innermost stride, walking from the innermost out (dims of size 1 ignored; none of size > 1:
/// stride `alone`, which no element uses).
fn collapse(dims: &[usize], strides: &[usize], alone: usize) -> Option<(usize, usize)> {
    let mut stride = None;
    let mut span = 1usize; // elements covered by the dims walked so far
    for (&d, &s) in dims.iter().zip(strides).rev() {
        if d == 1 {
            continue;
        }
        match stride {
            None => stride = Some(s),
            Some(st) if s != st * span => return None,
            Some(_) => {}
        }
        span *= d;
    }
    Some((dims.iter().product(), stride.unwrap_or(alone)))
}

/// Checks that elements up to `end` lie in a storage of `len` elements.
fn within(op: &str, arg: &str, end: usize, len: usize) -> Result<()> {
    if end > len {
        return Err(op_error(
            op,
            arg,
            format!("a storage of at least {end} elements"),
            len,
        ));
    }
    Ok(())
}

/// A tensor normalised over one dimension, seen as `outer x channels x inner`: element
/// `(o, c, i)` at `offset + o * outer_stride + c * c_stride + i * inner_stride`, the norm taken
/// over `c` for each `(o, i)`. The outputs of such a norm are contiguous in the input's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelLayout {
    pub offset: usize,
    pub outer: usize,
    pub outer_stride: usize,
    pub channels: usize,
    pub c_stride: usize,
    pub inner: usize,
    pub inner_stride: usize,
}

impl ChannelLayout {
    /// `Some` when the dims before `dim` collapse into one stride and so do the dims after it
    /// (any contiguous tensor, offset and narrowed views, a permutation that keeps each side
    /// nested). Strides of 0 (broadcasts) are allowed: the layout is only read.
    pub fn of(layout: &Layout, dim: usize) -> Option<Self> {
        let (dims, strides) = (layout.dims(), layout.stride());
        if dim >= dims.len() {
            return None;
        }
        // One outer index (no dim of size > 1 before `dim`): stride 0, which no element uses and
        // which keeps every stride test (the GPU kernels' 16-byte chunks) neutral.
        let (outer, outer_stride) = collapse(&dims[..dim], &strides[..dim], 0)?;
        let (inner, inner_stride) = collapse(&dims[dim + 1..], &strides[dim + 1..], 1)?;
        Some(Self {
            offset: layout.start_offset(),
            outer,
            outer_stride,
            channels: dims[dim],
            c_stride: strides[dim],
            inner,
            inner_stride,
        })
    }

    /// The layout of operand `arg` of `op` over `dim` in a storage of `len` elements.
    ///
    /// # Errors
    /// A layout [`ChannelLayout::of`] rejects, or elements past the storage end.
    pub fn checked(op: &str, arg: &str, l: &Layout, dim: usize, len: usize) -> Result<Self> {
        let cl = Self::of(l, dim).ok_or_else(|| {
            op_error(
                op,
                arg,
                format!("dims before and after dim {dim} that each collapse into one stride"),
                format!("strides {:?} for shape {:?}", l.stride(), l.dims()),
            )
        })?;
        within(op, arg, cl.end(), len)?;
        Ok(cl)
    }

    /// The index of element `(o, c, i)`.
    #[inline(always)]
    pub fn at(&self, o: usize, c: usize, i: usize) -> usize {
        self.offset + o * self.outer_stride + c * self.c_stride + i * self.inner_stride
    }

    /// Elements in all.
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }

    /// One past the last element read.
    pub fn end(&self) -> usize {
        if self.len() == 0 {
            self.offset
        } else {
            self.at(self.outer - 1, self.channels - 1, self.inner - 1) + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn rl(t: &Tensor) -> Option<RowLayout> {
        RowLayout::of(t.layout())
    }

    #[test]
    fn geometry() -> candle_core::Result<()> {
        let t = Tensor::zeros((4, 6, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(
            rl(&t),
            Some(RowLayout {
                offset: 0,
                row_stride: 8,
                rows: 24,
                hidden: 8
            })
        );
        let v = t.narrow(2, 2, 5)?; // strided rows
        assert_eq!(
            rl(&v),
            Some(RowLayout {
                offset: 2,
                row_stride: 8,
                rows: 24,
                hidden: 5
            })
        );
        let v = t.narrow(1, 1, 3)?; // rows do not nest across dim 0
        assert_eq!(rl(&v), None);
        let v = t.narrow(0, 1, 2)?;
        assert_eq!(
            rl(&v),
            Some(RowLayout {
                offset: 48,
                row_stride: 8,
                rows: 12,
                hidden: 8
            })
        );
        let v = t.transpose(1, 2)?; // last dim not contiguous
        assert_eq!(rl(&v), None);
        let v = t.i_first()?;
        assert_eq!(rl(&v).map(|r| r.rows), Some(6));
        let b = Tensor::zeros(8, candle_core::DType::F32, &Device::Cpu)?.broadcast_as((3, 8))?;
        assert_eq!(rl(&b), None);
        let e = Tensor::zeros((0, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(rl(&e).map(|r| (r.rows, r.end())), Some((0, 0)));
        Ok(())
    }

    #[test]
    fn channel_geometry() -> candle_core::Result<()> {
        let t = Tensor::zeros((2, 3, 4, 5), candle_core::DType::F32, &Device::Cpu)?;
        let cl = |t: &Tensor, d| ChannelLayout::of(t.layout(), d);
        let c = cl(&t, 1).expect("contiguous");
        assert_eq!(
            (
                c.outer,
                c.outer_stride,
                c.channels,
                c.c_stride,
                c.inner,
                c.inner_stride
            ),
            (2, 60, 3, 20, 20, 1)
        );
        assert_eq!(
            (c.end(), cl(&t, 3).map(|c| (c.inner, c.c_stride))),
            (120, Some((1, 1)))
        );
        let v = t.narrow(3, 1, 3)?; // inner dims no longer nest
        assert_eq!(cl(&v, 1), None);
        assert_eq!(
            cl(&v, 2).map(|c| (c.inner, c.offset, c.outer)),
            Some((3, 1, 6))
        );
        // Channels moved last by a permute: normalised over dim 2, read in place.
        let p =
            Tensor::zeros((3, 4, 5), candle_core::DType::F32, &Device::Cpu)?.permute((1, 2, 0))?;
        let c = cl(&p, 2).expect("permuted");
        assert_eq!(
            (c.c_stride, c.inner, c.outer, c.outer_stride),
            (20, 1, 20, 1)
        );
        assert_eq!(cl(&p, 3), None);
        assert_eq!(cl(&t.permute((0, 2, 3, 1))?, 3), None); // outer dims do not nest
        let b =
            Tensor::zeros((3, 1), candle_core::DType::F32, &Device::Cpu)?.broadcast_as((3, 5))?;
        assert_eq!(cl(&b, 0).map(|c| (c.inner, c.inner_stride)), Some((5, 0)));
        // One outer index (the Wan VAE's batch of 1): outer stride 0, not 1, so that the GPU's
        // 16-byte chunk test sees only real strides (with 1 it took the scalar path, 4.5x slower
        // on the H200).
        let one = Tensor::zeros((1, 8, 2, 16), candle_core::DType::BF16, &Device::Cpu)?;
        assert_eq!(cl(&one, 1).map(|c| (c.outer, c.outer_stride)), Some((1, 0)));
        assert_eq!(cl(&one, 0).map(|c| (c.outer, c.outer_stride)), Some((1, 0)));
        Ok(())
    }

    trait First {
        fn i_first(&self) -> candle_core::Result<Tensor>;
    }
    impl First for Tensor {
        fn i_first(&self) -> candle_core::Result<Tensor> {
            self.get(1)
        }
    }
}
