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
//!
//! The in-place ops, [`InPlace`], write into their first operand (no gradient):
//!
//! | operands                 | trait         | writes                                        |
//! |--------------------------|---------------|-----------------------------------------------|
//! | `xs (, weight)`          | `InplaceOp1/2`| `xs` = normed                                 |
//! | `pair, xs (, weight)`    | `InplaceOp2/3`| `pair[1]` = `xs + pair[1]`, `pair[0]` = normed |

use crate::config::Backend;
use crate::error::backend_unavailable;
use crate::op::{NormOp, Operand};
use crate::rope_op::{RopeOp, ROPE_OP};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, InplaceOp1, InplaceOp2, InplaceOp3, Layout,
    Result, Shape, Tensor,
};

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

/// An op that writes its result into its first operand (see the module table).
pub(crate) struct InPlace(pub NormOp);

/// The addend `xs` and the weight among the sources of an in-place op.
fn inplace_roles<'a, S>(op: &NormOp, srcs: &[Operand<'a, S>]) -> Ins<'a, S> {
    let (a, b) = (srcs.first().copied(), srcs.get(1).copied());
    if op.fused {
        (a, b)
    } else {
        (None, a)
    }
}

type Ins<'a, S> = (Option<Operand<'a, S>>, Option<Operand<'a, S>>);

fn cpu_inplace(
    op: &NormOp,
    target: (&mut CpuStorage, &Layout),
    srcs: &[Operand<'_, CpuStorage>],
) -> Result<()> {
    let (xs, w) = inplace_roles(op, srcs);
    match op.backend {
        Backend::Auto | Backend::Cpu => crate::cpu::forward_inplace(op, target, xs, w),
        #[cfg(feature = "rocm")]
        Backend::Rocm => crate::rocm::host_forward_inplace(op, target, xs, w),
        other => Err(backend_unavailable(op.name(), other)),
    }
}

#[cfg(feature = "cuda")]
fn cuda_inplace(
    op: &NormOp,
    target: (&mut candle_core::CudaStorage, &Layout),
    srcs: &[Operand<'_, candle_core::CudaStorage>],
) -> Result<()> {
    let (xs, w) = inplace_roles(op, srcs);
    match op.backend {
        Backend::Auto | Backend::Cuda => crate::cuda::forward_inplace(op, target, xs, w),
        other => Err(backend_unavailable(op.name(), other)),
    }
}

/// The forward methods of an `InplaceOpN` over the target `d`, `dl` and sources `$s`, `$l`.
macro_rules! inplace_forwards {
    ($($s:ident $l:ident),*) => {
        fn name(&self) -> &'static str {
            self.0.name()
        }

        fn cpu_fwd(
            &self,
            d: &mut CpuStorage,
            dl: &Layout,
            $($s: &CpuStorage, $l: &Layout),*
        ) -> Result<()> {
            cpu_inplace(&self.0, (d, dl), &[$(($s, $l)),*])
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            d: &mut candle_core::CudaStorage,
            dl: &Layout,
            $($s: &candle_core::CudaStorage, $l: &Layout),*
        ) -> Result<()> {
            cuda_inplace(&self.0, (d, dl), &[$(($s, $l)),*])
        }
    };
}

impl InplaceOp1 for InPlace {
    inplace_forwards!();
}

impl InplaceOp2 for InPlace {
    inplace_forwards!(s2 l2);
}

impl InplaceOp3 for InPlace {
    inplace_forwards!(s2 l2, s3 l3);
}

/// q/k norm + rotary embedding: `q` (`CustomOp1`) or `q, k` (`CustomOp2`, output `[2, ..]`),
/// the weights and tables riding in the descriptor. No backward (Candle's default: an error).
fn rope_cpu(
    op: &RopeOp,
    q: Operand<'_, CpuStorage>,
    k: Option<Operand<'_, CpuStorage>>,
) -> Result<(CpuStorage, Shape)> {
    match op.backend {
        Backend::Auto | Backend::Cpu => crate::cpu::rope::forward(op, q, k),
        #[cfg(feature = "rocm")]
        Backend::Rocm => crate::rocm::host_forward_rope(op, q, k),
        other => Err(backend_unavailable(ROPE_OP, other)),
    }
}

#[cfg(feature = "cuda")]
fn rope_cuda(
    op: &RopeOp,
    q: Operand<'_, candle_core::CudaStorage>,
    k: Option<Operand<'_, candle_core::CudaStorage>>,
) -> Result<(candle_core::CudaStorage, Shape)> {
    match op.backend {
        Backend::Auto | Backend::Cuda => crate::cuda::rope::forward(op, q, k),
        other => Err(backend_unavailable(ROPE_OP, other)),
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        ROPE_OP
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        rope_cpu(self, (s1, l1), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        rope_cuda(self, (s1, l1), None)
    }
}

impl CustomOp2 for RopeOp {
    fn name(&self) -> &'static str {
        ROPE_OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        rope_cpu(self, (s1, l1), Some((s2, l2)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        rope_cuda(self, (s1, l1), Some((s2, l2)))
    }
}
