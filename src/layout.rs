//! Row geometry shared by every backend: a tensor seen as `rows` rows of `hidden` contiguous
//! elements, row `r` starting at `offset + r * row_stride`.

use candle_core::Layout;

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
