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
use crate::op::NormOp;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Positional operands `(a, b, c)` in their roles `(xs, residual, weight)` (see the table).
fn roles<S>(op: &NormOp, a: S, b: Option<S>, c: Option<S>) -> (S, Option<S>, Option<S>) {
    if op.fused {
        (a, b, c)
    } else {
        (a, None, b)
    }
}

type Operand<'a, S> = (&'a S, &'a Layout);

fn cpu_fwd(
    op: &NormOp,
    a: Operand<'_, CpuStorage>,
    b: Option<Operand<'_, CpuStorage>>,
    c: Option<Operand<'_, CpuStorage>>,
) -> Result<(CpuStorage, Shape)> {
    let (x, r, w) = roles(op, a, b, c);
    match op.backend {
        Backend::Auto | Backend::Cpu => crate::cpu::forward(op, x, r, w),
        #[cfg(feature = "rocm")]
        Backend::Rocm => crate::rocm::host_forward(op, x, r, w),
        other => Err(backend_unavailable(op.name(), other)),
    }
}

#[cfg(feature = "cuda")]
fn cuda_fwd(
    op: &NormOp,
    a: Operand<'_, candle_core::CudaStorage>,
    b: Option<Operand<'_, candle_core::CudaStorage>>,
    c: Option<Operand<'_, candle_core::CudaStorage>>,
) -> Result<(candle_core::CudaStorage, Shape)> {
    let (x, r, w) = roles(op, a, b, c);
    match op.backend {
        Backend::Auto | Backend::Cuda => crate::cuda::forward(op, x, r, w),
        other => Err(backend_unavailable(op.name(), other)),
    }
}

/// Gradients of the positional operands `(a, b, c)`.
fn bwd(
    op: &NormOp,
    a: &Tensor,
    b: Option<&Tensor>,
    c: Option<&Tensor>,
    grad: &Tensor,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let (x, r, w) = roles(op, a, b, c);
    let (gx, gr, gw) = crate::backward::grads(op, x, r, w, grad)?;
    Ok(if op.fused {
        (gx, gr, gw)
    } else {
        (gx, gw, None)
    })
}

impl CustomOp1 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_fwd(self, (s, l), None, None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_fwd(self, (s, l), None, None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(bwd(self, x, None, None, grad)?.0))
    }
}

impl CustomOp2 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_fwd(self, (s1, l1), Some((s2, l2)), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_fwd(self, (s1, l1), Some((s2, l2)), None)
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g1, g2, _) = bwd(self, a1, Some(a2), None, grad)?;
        Ok((Some(g1), g2))
    }
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_fwd(self, (s1, l1), Some((s2, l2)), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_fwd(self, (s1, l1), Some((s2, l2)), Some((s3, l3)))
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        a3: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g1, g2, g3) = bwd(self, a1, Some(a2), Some(a3), grad)?;
        Ok((Some(g1), g2, g3))
    }
}
