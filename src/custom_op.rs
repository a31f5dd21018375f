//! The Candle custom ops: routing only. One descriptor, [`NormOp`], serves every variant:
//!
//! | operands                 | trait       | output                           |
//! |--------------------------|-------------|----------------------------------|
//! | `xs`                     | `CustomOp1` | `normed`                         |
//! | `xs, weight`             | `CustomOp2` | `normed`                         |
//! | `xs, residual`           | `CustomOp2` | `[normed; sum]`, shape `[2, ..]` |
//! | `xs, residual, weight`   | `CustomOp3` | `[normed; sum]`, shape `[2, ..]` |
//!
//! A Candle custom op returns one tensor, so the fused op writes both results into one buffer
//! with a new leading dimension of 2; the public function hands out the two halves as
//! contiguous views (no copy), and the backward pass receives both gradients in that layout.

use crate::config::Backend;
use crate::error::backend_unavailable;
use crate::op::{NormOp, Operand};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

fn cpu_fwd(op: &NormOp, ops: &[Operand<'_, CpuStorage>]) -> Result<(CpuStorage, Shape)> {
    match op.backend {
        Backend::Auto | Backend::Cpu => crate::cpu::forward(op, op.inputs(ops)),
        #[cfg(feature = "rocm")]
        Backend::Rocm => crate::rocm::host_forward(op, op.inputs(ops)),
        other => Err(backend_unavailable(op.name(), other)),
    }
}

#[cfg(feature = "cuda")]
fn cuda_fwd(
    op: &NormOp,
    ops: &[Operand<'_, candle_core::CudaStorage>],
) -> Result<(candle_core::CudaStorage, Shape)> {
    match op.backend {
        Backend::Auto | Backend::Cuda => crate::cuda::forward(op, op.inputs(ops)),
        other => Err(backend_unavailable(op.name(), other)),
    }
}

/// Gradients of the positional operands `[xs, ..]`, in their order.
fn bwd(op: &NormOp, args: &[&Tensor], grad: &Tensor) -> Result<[Option<Tensor>; 3]> {
    let (x, b, c) = (args[0], args.get(1).copied(), args.get(2).copied());
    let (r, w) = if op.fused { (b, c) } else { (None, b) };
    let (gx, gr, gw) = crate::backward::grads(op, x, r, w, grad)?;
    Ok(if op.fused {
        [Some(gx), gr, gw]
    } else {
        [Some(gx), gw, None]
    })
}

/// The forward methods of a `CustomOpN` over operands `$s`, `$l` (storage, layout).
macro_rules! forwards {
    ($($s:ident $l:ident),+) => {
        fn name(&self) -> &'static str {
            NormOp::name(self)
        }

        fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
            cpu_fwd(self, &[$(($s, $l)),+])
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            $($s: &candle_core::CudaStorage, $l: &Layout),+
        ) -> Result<(candle_core::CudaStorage, Shape)> {
            cuda_fwd(self, &[$(($s, $l)),+])
        }
    };
}

impl CustomOp1 for NormOp {
    forwards!(s1 l1);

    fn bwd(&self, a1: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let [g1, _, _] = bwd(self, &[a1], grad)?;
        Ok(g1)
    }
}

impl CustomOp2 for NormOp {
    forwards!(s1 l1, s2 l2);

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [g1, g2, _] = bwd(self, &[a1, a2], grad)?;
        Ok((g1, g2))
    }
}

impl CustomOp3 for NormOp {
    forwards!(s1 l1, s2 l2, s3 l3);

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        a3: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [g1, g2, g3] = bwd(self, &[a1, a2, a3], grad)?;
        Ok((g1, g2, g3))
    }
}
