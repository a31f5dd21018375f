//! Row geometry shared by every backend: a tensor seen as `rows` rows of `hidden` contiguous
//! elements, row `r` starting at `offset + r * row_stride`.

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
        let rows: usize = lead.iter().product();
        if hidden > 1 && strides[dims.len() - 1] != 1 {
            return None;
        }
        // Walk the leading dims from the innermost out, ignoring dims of size 1.
        let mut row_stride = None;
        let mut span = 1usize; // rows covered by the dims walked so far
        for (&d, &s) in lead.iter().zip(strides).rev() {
            if d == 1 {
                continue;
            }
            match row_stride {
                None => row_stride = Some(s),
                Some(rs) => {
                    if s != rs * span {
                        return None;
                    }
                }
            }
            span *= d;
        }
        let row_stride = row_stride.unwrap_or(hidden);
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
        if rl.end() > len {
            return Err(op_error(
                op,
                arg,
                format!("a storage of at least {} elements", rl.end()),
                len,
            ));
        }
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

    trait First {
        fn i_first(&self) -> candle_core::Result<Tensor>;
    }
    impl First for Tensor {
        fn i_first(&self) -> candle_core::Result<Tensor> {
            self.get(1)
        }
    }
}
