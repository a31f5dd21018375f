//! The CUDA forward of q/k norm + rotary embedding (`crate::rope_op`): q (and k) read in place,
//! the weights and tables (contiguous tensors of the descriptor: the compute dtype, or of the
//! input's) by address, one launch of `rms_norm_rope_{dtype}[_wt][_scalar]` planned by
//! `gpu::rope_plan`.

use super::device;
use super::memory::{base_ptr, Out};
use crate::error::op_error;
use crate::gpu::rope_plan::{plan_rope, rope_args};
use crate::op::Operand;
use crate::rope_op::{input_rows, RopeOp, ROPE_OP};
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Result, Shape, Storage, Tensor};

/// The side operands in the order weights q, k, cos, sin (absent weights: `None`).
fn sides(op: &RopeOp) -> [(Option<&Tensor>, &'static str); 4] {
    [
        (op.weights[0].as_ref(), "q_weight"),
        (op.weights[1].as_ref(), "k_weight"),
        (Some(&op.cos), "cos"),
        (Some(&op.sin), "sin"),
    ]
}

pub(crate) fn forward(
    op: &RopeOp,
    q: Operand<'_, CudaStorage>,
    k: Option<Operand<'_, CudaStorage>>,
) -> Result<(CudaStorage, Shape)> {
    let dev = q.0.device().clone();
    let st = dev.cuda_stream();
    let dt = q.0.dtype();
    let eb = dt.size_in_bytes() as u64;
    let dims = q.1.dims();
    let (batch, seq) = (dims[0], dims[1]);
    let shape = op.out_shape(batch, seq);
    let mut out = Out::alloc(ROPE_OP, &dev, dt, shape.elem_count())?;
    let (out_ptr, _og) = out.ptr(&st);
    let (wt, tt) = (op.weights_in_input(dt), op.tables_in_input(dt));
    let mut a = rope_args(op, batch, seq, out_ptr, wt, tt);
    // Read locks of the side tensors, held until the launch is queued.
    let locks: Vec<_> = sides(op)
        .into_iter()
        .map(|(t, arg)| (t.map(|t| (t.storage_and_layout(), t.elem_count())), arg))
        .collect();
    let mut guards = Vec::new();
    for (t, (s, lay)) in std::iter::once(q).chain(k).enumerate() {
        let arg = ["q", "k"][t];
        if s.dtype() != dt {
            return Err(op_error(
                ROPE_OP,
                arg,
                format!("of the dtype of q ({dt:?})"),
                format!("{:?}", s.dtype()),
            ));
        }
        let (p, len, g) = base_ptr(ROPE_OP, arg, s, &st)?;
        let (off, sb, sl, _) = input_rows(arg, lay, len)?;
        a.x[t] = p + off as u64 * eb;
        (a.x_b[t], a.x_l[t]) = (sb as i64, sl as i64);
        guards.push(g);
    }
    let mut addrs = [0u64; 4];
    for (i, (lock, arg)) in locks.iter().enumerate() {
        let Some(((s, lay), n)) = lock else { continue };
        let Storage::Cuda(s) = &**s else {
            return Err(op_error(
                ROPE_OP,
                arg,
                "on the CUDA device of q",
                "another device",
            ));
        };
        let (p, len, g) = base_ptr(ROPE_OP, arg, s, &st)?;
        if !lay.is_contiguous() || lay.start_offset() + n > len {
            return Err(op_error(ROPE_OP, arg, "contiguous", format!("{lay:?}")));
        }
        addrs[i] = p + (lay.start_offset() * s.dtype().size_in_bytes()) as u64;
        guards.push(g);
    }
    (a.w, a.cos, a.sin) = ([addrs[0], addrs[1]], addrs[2], addrs[3]);
    let shape_dev = device::shape(&dev, &st)?;
    let p = plan_rope(a, dt, shape_dev.warp_size).map_err(|e| {
        op_error(
            ROPE_OP,
            "shape",
            e,
            format!("{dims:?} in {} heads", op.heads),
        )
    })?;
    let (func, _) = device::function(&dev, &p.kernel, p.block, 0, 0)?;
    // SAFETY: every address in `p.args` lies in a live buffer whose guard (or read lock) is held
    // until after the launch is queued: q and k checked by `input_rows` against their lengths,
    // the side tensors contiguous and inside theirs (their shapes checked by the public API:
    // weights of the norm's length and tables of `>= seq` rows of `head_dim / 2`, in the
    // dtypes the flags state, from `weights_in_input` and `tables_in_input` of these very
    // tensors); the output is a fresh buffer of exactly the elements the layout strides
    // address. `p` is the plan for this kernel and block size.
    unsafe { device::launch_args(&st, &func, (p.grid, p.block, 0), &p.args)? };
    drop((guards, _og));
    Ok((out.into_storage(&dev), shape))
}
