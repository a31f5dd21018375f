//! Fast RMSNorm and fused residual-add + RMSNorm for [Candle](https://github.com/huggingface/candle).
//!
//! - [`rms_norm`] / [`rms_norm_with`]: `xs * rsqrt(mean(xs^2) + eps) * weight` over the last dim.
//! - [`fused_add_rms_norm`] / [`fused_add_rms_norm_with`]: `sum = xs + residual`, then the norm
//!   of `sum`, in one pass; returns `(normed, sum)`.
//! - [`rms_norm_inplace`], [`fused_add_rms_norm_inplace`] (on a [`residual_pair`]): the same
//!   results written into memory the caller holds, with no allocation.
//! - [`rms_norm_rope`] / [`qk_rms_norm_rope`]: q/k RMSNorm (per row or per head) + rotary
//!   embedding, written in the attention layout in one pass ([`RopeConfig`]).
//! - [`rms_norm_quant`] / [`fused_add_rms_norm_quant`]: the norm written as fp8 e4m3 or i8 with
//!   an f32 scale per row (dynamic or static, [`QuantConfig`]).
//! - [`RmsNorm`]: the layer, a `candle_nn::Module`, with [`RmsNorm::forward_residual`].
//!
//! Layers, each using only those below it: kernels (`hip/`, compiled by `build.rs`; the SIMD CPU
//! kernel in `cpu`), the op descriptor and shared checks, backends (`cpu`, `cuda`, `rocm`),
//! Candle custom ops, and this public API. `docs/design.md` walks through them.
//!
//! # Numerics
//! The sum of squares is accumulated in f32 (f64 for f64 input); the output has the dtype of
//! `xs`; the weight may have any float dtype. bf16/f16 results are rounded to nearest even. A NaN
//! in a row makes that row NaN and leaves the other rows alone. Rows whose f32 sum of squares
//! would overflow (|x| above about 1e19) are recomputed with an f64 sum, so huge values still
//! normalise correctly.
//!
//! # Other dimensions
//! [`NormConfig::with_dim`] normalises over any dimension (the channels of a video tensor),
//! reading strided layouts in place; [`EpsMode::ClampNorm`] gives `F.normalize`'s eps clamp.
//!
//! # Layouts
//! Any rank >= 1 and any hidden size. Views whose last dimension is contiguous and whose leading
//! dimensions collapse into one row stride (offsets, narrowed rows, row steps) are read in place;
//! any other layout (a transposed last dimension, a broadcast) is first copied with
//! `Tensor::contiguous`. Outputs are always contiguous.
//!
//! # Backends
//! [`Backend`] picks CPU, CUDA, ROCm or the portable `Candle` backend (Candle's own tensor ops,
//! on any device, e.g. Metal), per call through [`NormConfig::with_backend`] or per process
//! through `CANDLE_RMSNORM_BACKEND=auto|cpu|cuda|rocm|candle`.

// Layers, bottom up (rustfmt sorts the declarations below, so the order is written here): config;
// error; quant; rope_config; op; rope_op; rope_check; layout; host; gpu; the backends cpu, cuda, rocm, portable; backward; custom_op; api;
// quant_api; inplace; module. Each module uses only modules of lower layers (docs/design.md).
mod api;
mod backward;
mod config;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod custom_op;
mod error;
#[cfg(any(feature = "cuda", feature = "rocm", test))]
mod gpu;
mod host;
mod inplace;
mod layout;
mod module;
mod op;
mod portable;
mod quant;
mod quant_api;
#[cfg(feature = "rocm")]
pub mod rocm;
mod rope_api;
mod rope_check;
mod rope_config;
mod rope_op;

pub use api::{fused_add_rms_norm, fused_add_rms_norm_with, rms_norm, rms_norm_with};
pub use config::{Backend, EpsMode, NormConfig, Rounding, WeightMode, BACKEND_ENV};
pub use cpu::cpu_tier_name;
pub use inplace::{
    fused_add_rms_norm_inplace, fused_add_rms_norm_inplace_with, keep_memory_pool, residual_pair,
    rms_norm_inplace, rms_norm_inplace_with,
};
pub use module::RmsNorm;
pub use quant::{QuantConfig, QuantDType, QuantScale, Quantized};
pub use quant_api::{fused_add_rms_norm_quant, rms_norm_quant};
pub use rope_api::{qk_rms_norm_rope, rms_norm_rope};
pub use rope_config::{HeadLayout, NormScope, RopeConfig, RopeStyle};
