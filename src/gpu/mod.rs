//! What the CUDA and ROCm launchers share: the kernel ABI ([`abi`]), the launch geometry
//! ([`geometry`], the one place it is decided) and the vendor-neutral call ([`call`]: operands
//! in, kernel name and packed launches out) and the q/k norm + RoPE argument and plan
//! ([`rope_plan`]). No GPU calls and no `unsafe` here.

pub(crate) mod abi;
pub(crate) mod call;
pub(crate) mod channel_plan;
pub(crate) mod geometry;
pub(crate) mod rope_plan;
#[cfg(all(test, target_os = "linux"))]
mod sim;
#[cfg(all(test, target_os = "linux"))]
mod sim_channels;
#[cfg(all(test, target_os = "linux"))]
mod sim_quant;
#[cfg(all(test, target_os = "linux"))]
mod sim_rope;
