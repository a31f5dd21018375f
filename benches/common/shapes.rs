//! The benchmark shapes, `rows x hidden`: the one list every benchmark reads (`benches/cpu.rs`,
//! `benches/gpu/`; `scripts/gpu/torch_bench.py` takes them from the GPU bench's JSONL).
//!
//! Wan 2.1 14B / 1.3B sizes: 75600 tokens of a 720p clip at hidden 5120, 32760 tokens at 1536,
//! smaller token counts, a 4096-wide LLM layer, and the per-head q/k norm (hidden 128, 75600
//! tokens x 40 heads). The CPU bench runs the shapes marked for it: the large GPU ones would
//! take minutes per figure there, so it has its own hidden-128 case.

/// Which benchmarks run a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Both,
    Gpu,
    Cpu,
}

pub const SHAPES: &[(usize, usize, On)] = &[
    (75600, 5120, On::Gpu),
    (32760, 1536, On::Both),
    (8192, 5120, On::Both),
    (4096, 5120, On::Gpu),
    (1024, 5120, On::Gpu),
    (512, 4096, On::Both),
    (3_024_000, 128, On::Gpu),
    (65536, 128, On::Cpu),
];

/// The shapes of the GPU benchmark, in table order.
#[allow(dead_code)] // each benchmark reads its own list
pub fn gpu() -> impl Iterator<Item = (usize, usize)> {
    SHAPES
        .iter()
        .filter(|s| s.2 != On::Cpu)
        .map(|&(r, h, _)| (r, h))
}

/// The shapes of the CPU benchmark, in table order.
#[allow(dead_code)] // each benchmark reads its own list
pub fn cpu() -> impl Iterator<Item = (usize, usize)> {
    SHAPES
        .iter()
        .filter(|s| s.2 != On::Gpu)
        .map(|&(r, h, _)| (r, h))
}
