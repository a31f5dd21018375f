//! The checks of the q/k norm + rotary embedding operands on their dims and dtypes, in one
//! place for every entry point: the public functions on Candle tensors (`rope_api`) and the
//! device-resident ROCm API. Devices are the callers' to check.

use crate::error::{check_eps, check_float, op_error};
use crate::rope_config::RopeConfig;
use crate::rope_op::{RopeParams, ROPE_OP};
use candle_core::{DType, Result};

/// The names errors give the operands: `x` and `weight` for one tensor, else `q`, `k`,
/// `q_weight` and `k_weight`.
pub(crate) struct Names {
    pub x: &'static str,
    pub weights: [&'static str; 2],
}

pub(crate) const ONE: Names = Names {
    x: "x",
    weights: ["weight", "k_weight"],
};
pub(crate) const PAIR: Names = Names {
    x: "q",
    weights: ["q_weight", "k_weight"],
};

/// Checks operand `arg` (`dims`, `dtype`) as a rank-`n` float operand (`what`: its shape in
/// words).
pub(crate) fn check_operand(
    arg: &str,
    dims: &[usize],
    dtype: DType,
    n: usize,
    what: &str,
) -> Result<()> {
    if dims.len() != n {
        return Err(op_error(
            ROPE_OP,
            arg,
            format!("of rank {n} ({what})"),
            format!("shape {dims:?}"),
        ));
    }
    check_float(ROPE_OP, arg, dtype)
}

const ROWS: &str = "[batch, seq, heads * head_dim]";

/// Checks q (and k: the shape and dtype of q) and the config; returns the call's parameters.
pub(crate) fn rope_params(
    q: (&[usize], DType),
    k: Option<(&[usize], DType)>,
    cfg: &RopeConfig,
    names: &Names,
) -> Result<RopeParams> {
    let (dims, dt) = q;
    check_operand(names.x, dims, dt, 3, ROWS)?;
    let dim = dims[2];
    if let Some((kd, kt)) = k {
        check_operand("k", kd, kt, 3, ROWS)?;
        if kd != dims || kt != dt {
            return Err(op_error(
                ROPE_OP,
                "k",
                format!("of the shape and dtype of q ({dims:?} {dt:?})"),
                format!("{kd:?} {kt:?}"),
            ));
        }
    }
    let heads = cfg.heads();
    if heads == 0 || !dim.is_multiple_of(heads) || !(dim / heads).is_multiple_of(2) {
        return Err(op_error(
            ROPE_OP,
            "heads",
            format!(
                "a divisor of the last dim of {} ({dim}) leaving an even head size",
                names.x
            ),
            heads,
        ));
    }
    let norm = cfg.norm();
    if norm.dim().is_some() || norm.variance_size().is_some() {
        return Err(op_error(
            ROPE_OP,
            "cfg.norm",
            "a NormConfig without with_dim or with_variance_size",
            format!(
                "dim {:?}, variance size {:?}",
                norm.dim(),
                norm.variance_size()
            ),
        ));
    }
    check_eps(ROPE_OP, norm.eps())?;
    Ok(RopeParams {
        eps: norm.eps(),
        eps_mode: norm.eps_mode(),
        weight_mode: norm.weight_mode(),
        rounding: norm.rounding(),
        heads,
        head_dim: dim / heads,
        scope: cfg.scope(),
        style: cfg.style(),
        layout: cfg.layout(),
        tensors: if k.is_some() { 2 } else { 1 },
    })
}

/// Checks side operand `arg` (`dims`, `dtype`) as a rank-`n` float operand (`what`: its shape
/// in words) whose dims `fit`; `expected` describes the shape that fits.
fn check_side(
    arg: &str,
    (dims, dtype): (&[usize], DType),
    (n, what): (usize, &str),
    fit: impl FnOnce(&[usize]) -> bool,
    expected: impl FnOnce() -> String,
) -> Result<()> {
    check_operand(arg, dims, dtype, n, what)?;
    if fit(dims) {
        return Ok(());
    }
    Err(op_error(
        ROPE_OP,
        arg,
        expected(),
        format!("shape {dims:?}"),
    ))
}

/// Checks weight `arg` (`dims`, `dtype`) of a call of `p` on q of shape `q_dims`: one float
/// value per element of a norm.
pub(crate) fn check_weight(
    p: &RopeParams,
    arg: &str,
    shape: (&[usize], DType),
    q_dims: &[usize],
    names: &Names,
) -> Result<()> {
    let n = p.norm_len();
    check_side(
        arg,
        shape,
        (1, "[norm size]"),
        |d| d[0] == n,
        || {
            format!(
                "of shape [{n}] ({:?} norm of {} {q_dims:?})",
                p.scope, names.x
            )
        },
    )
}

/// Checks table `arg` (`cos` or `sin`: `dims`, `dtype`) of a call of `p` on q of shape
/// `q_dims`: a row of `head_dim / 2` angles for each of at least `seq` positions.
pub(crate) fn check_table(
    p: &RopeParams,
    arg: &str,
    shape: (&[usize], DType),
    q_dims: &[usize],
    names: &Names,
) -> Result<()> {
    let (seq, half) = (q_dims[1], p.head_dim / 2);
    check_side(
        arg,
        shape,
        (2, "[seq, head_dim / 2]"),
        |d| d[0] >= seq && d[1] * 2 == p.head_dim,
        || {
            format!(
                "of shape [>= {seq}, {half}] ({} {q_dims:?}, {} heads)",
                names.x, p.heads
            )
        },
    )
}
