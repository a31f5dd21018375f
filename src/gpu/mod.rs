//! What the CUDA and ROCm launchers share: the kernel ABI ([`abi`]), the launch geometry
//! ([`geometry`], the one place it is decided) and the vendor-neutral call ([`call`]: operands
//! in, kernel name and packed launches out). No GPU calls and no `unsafe` here.

pub(crate) mod abi;
pub(crate) mod call;
pub(crate) mod channel_plan;
pub(crate) mod geometry;
// The ROCm launcher of the q/k norm + RoPE kernels is not written yet.
#[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
pub(crate) mod rope_plan;
#[cfg(all(test, target_os = "linux"))]
mod sim;
#[cfg(all(test, target_os = "linux"))]
mod sim_channels;
#[cfg(all(test, target_os = "linux"))]
mod sim_quant;
#[cfg(all(test, target_os = "linux"))]
mod sim_rope;
