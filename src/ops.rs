//! The Candle custom ops. One struct, [`NormOp`], serves every variant:
//!
//! | operands                 | trait       | output                         |
//! |--------------------------|-------------|--------------------------------|
//! | `xs`                     | `CustomOp1` | `normed`                       |
//! | `xs, weight`             | `CustomOp2` | `normed`                       |
//! | `xs, residual`           | `CustomOp2` | `[normed; sum]`, shape `[2, ..]` |
//! | `xs, residual, weight`   | `CustomOp3` | `[normed; sum]`, shape `[2, ..]` |
//!
//! A Candle custom op returns one tensor, so the fused op writes both results into one buffer
//! with a new leading dimension of 2; the public function hands out the two halves as
//! contiguous views (no copy), and the backward pass receives both gradients in that layout.

use crate::config::{Backend, Rounding, WeightMode};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// An error naming the op, the argument, what was expected and what was given.
pub(crate) fn op_error(
    op: &str,
    arg: &str,
    expected: impl std::fmt::Display,
    got: impl std::fmt::Display,
) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: {arg} must be {expected}, got {got}")).bt()
}

/// The op parameters; weights and residuals are operands, never fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NormOp {
    pub eps: f64,
    pub weight_mode: WeightMode,
    pub rounding: Rounding,
    pub backend: Backend,
    pub fused: bool,
}

impl NormOp {
    pub fn name(&self) -> &'static str {
        if self.fused {
            "fused_add_rms_norm"
        } else {
            "rms_norm"
        }
    }

    pub fn out_shape(&self, x: &Shape) -> Shape {
        if self.fused {
            let mut d = vec![2];
            d.extend_from_slice(x.dims());
            Shape::from(d)
        } else {
            x.clone()
        }
    }

    fn cpu(
        &self,
        x: (&CpuStorage, &Layout),
        r: Option<(&CpuStorage, &Layout)>,
        w: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        match self.backend {
            Backend::Auto | Backend::Cpu => crate::cpu::forward(self, x, r, w),
            #[cfg(feature = "rocm")]
            Backend::Rocm => crate::rocm::host_forward(self, x, r, w),
            other => Err(crate::api::backend_unavailable(self.name(), other)),
        }
    }
}

impl CustomOp1 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu((s, l), None, None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::forward(self, (s, l), None, None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (gx, _, _) = crate::backward::grads(self, x, None, None, grad)?;
        Ok(Some(gx))
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
        if self.fused {
            self.cpu((s1, l1), Some((s2, l2)), None)
        } else {
            self.cpu((s1, l1), None, Some((s2, l2)))
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        if self.fused {
            crate::cuda::forward(self, (s1, l1), Some((s2, l2)), None)
        } else {
            crate::cuda::forward(self, (s1, l1), None, Some((s2, l2)))
        }
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.fused {
            let (gx, gr, _) = crate::backward::grads(self, a1, Some(a2), None, grad)?;
            Ok((Some(gx), gr))
        } else {
            let (gx, _, gw) = crate::backward::grads(self, a1, None, Some(a2), grad)?;
            Ok((Some(gx), gw))
        }
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
        self.cpu((s1, l1), Some((s2, l2)), Some((s3, l3)))
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
        crate::cuda::forward(self, (s1, l1), Some((s2, l2)), Some((s3, l3)))
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        a3: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gr, gw) = crate::backward::grads(self, a1, Some(a2), Some(a3), grad)?;
        Ok((Some(gx), gr, gw))
    }
}
