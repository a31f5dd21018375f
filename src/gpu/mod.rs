//! What the CUDA and ROCm launchers share: the kernel ABI ([`abi`]), the launch geometry
//! ([`geometry`], the one place it is decided) and the vendor-neutral call ([`call`]: operands
//! in, kernel name and packed launches out). No GPU calls and no `unsafe` here.

pub(crate) mod abi;
pub(crate) mod call;
pub(crate) mod channel_plan;
pub(crate) mod geometry;
#[cfg(all(test, target_os = "linux"))]
mod sim;
#[cfg(all(test, target_os = "linux"))]
mod sim_channels;
