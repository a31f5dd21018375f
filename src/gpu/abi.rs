//! The kernel ABI shared by the CUDA and ROCm launchers: the by-value parameter struct, its flag
//! bits and the exported kernel names. Mirrors `hip/norm_args.h` field for field.

use candle_core::DType;

/// `y = n * (1 + w)`.
pub(crate) const NORM_OFFSET_ONE: u32 = 1;
/// Round `n` to the input dtype before the weight multiply.
pub(crate) const NORM_ROUND_BEFORE_WEIGHT: u32 = 2;
/// Every operand allows 16-byte chunks (decided on the host: `geometry::vector_ok`).
pub(crate) const NORM_VECTOR: u32 = 4;
/// `scale = sqrt(n) / max(sqrt(ss), eps)` (`EpsMode::ClampNorm`).
pub(crate) const NORM_CLAMP_NORM: u32 = 8;
/// `_quant` kernels: the values are i8 (else fp8 e4m3).
pub(crate) const NORM_QUANT_I8: u32 = 16;
/// `_quant` kernels: every row's scale is `NormArgs::quant_scale`.
pub(crate) const NORM_QUANT_STATIC: u32 = 32;
/// Where the staged loop's row-buffer count goes in the flags (`geometry::Plan::stages`).
pub(crate) const NORM_STAGES_SHIFT: u32 = 8;

/// The single by-value parameter of every kernel (`struct NormArgs` in `hip/norm_args.h`).
/// Pointers are device addresses; strides and sizes are in elements. The launch geometry
/// (`rows_per_block`, `lanes_per_row`, `chunks_per_lane`, [`NORM_VECTOR`]) is decided on the
/// host by `geometry::plan` and only followed by the kernel.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct NormArgs {
    pub out: u64,
    pub sum_out: u64,
    pub x: u64,
    pub residual: u64,
    pub weight: u64,
    pub out_stride: i64,
    pub sum_stride: i64,
    pub x_stride: i64,
    pub res_stride: i64,
    pub rows: i64,
    pub hidden: i64,
    pub eps: f64,
    pub flags: u32,
    pub rows_per_block: u32,
    pub lanes_per_row: u32,
    pub chunks_per_lane: u32,
    /// [`Variant::Partial`] and [`Variant::Channel`]: the elements of a row the mean of
    /// squares is over.
    pub var_size: i64,
    /// [`Variant::Channel`] only (`hip/norm_channel.h`; `rows` are outer indices, `hidden` the
    /// channels and the `*_stride` fields channel strides): positions per outer index, each
    /// operand's outer stride, and the inputs' position strides (the outputs' is 1).
    pub inner: i64,
    pub x_outer: i64,
    pub res_outer: i64,
    pub out_outer: i64,
    pub sum_outer: i64,
    pub x_inner: i64,
    pub res_inner: i64,
    /// [`Variant::Quant`] and [`Variant::RowsQuant`] only (`hip/quant.h`; `out` then holds the
    /// values' bytes): the f32 scale of each row, written, and with [`NORM_QUANT_STATIC`] the
    /// scale of every row.
    pub scales: u64,
    pub quant_scale: f32,
    pub reserved: u32,
}

/// Bytes of `NormArgs`, the one kernel argument (also checked in the code-object metadata;
/// `RopeArgs` has the same size).
pub const NORM_ARGS_BYTES: usize = 192;
const _: () = assert!(std::mem::size_of::<NormArgs>() == NORM_ARGS_BYTES);
const _: () = assert!(std::mem::size_of::<RopeArgs>() == NORM_ARGS_BYTES);

/// `RopeArgs::flags` bits (`hip/rope_args.h`).
pub(crate) const ROPE_VECTOR: u32 = 1;
pub(crate) const ROPE_HALF_SPLIT: u32 = 2;
pub(crate) const ROPE_PER_HEAD: u32 = 4;
pub(crate) const ROPE_ROUND_BEFORE_WEIGHT: u32 = 8;
pub(crate) const ROPE_OFFSET_ONE: u32 = 16;
pub(crate) const ROPE_CLAMP_NORM: u32 = 32;
/// The weights are of the input dtype (`rms_norm_rope_{dtype}_wt[_scalar]`).
pub(crate) const ROPE_WEIGHT_IN_T: u32 = 64;
/// The cos/sin tables are of the input dtype (bf16/f16 input; any kernel).
pub(crate) const ROPE_TABLES_IN_T: u32 = 128;

/// The one parameter of the q/k norm + rotary embedding kernels (`struct RopeArgs` in
/// `hip/rope_args.h`, `rms_norm_rope_{dtype}[_wt][_scalar]`): device addresses, strides in
/// elements, the geometry `gpu::rope_plan` decides.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RopeArgs {
    pub out: u64,
    pub x: [u64; 2],
    pub w: [u64; 2],
    pub cos: u64,
    pub sin: u64,
    pub x_b: [i64; 2],
    pub x_l: [i64; 2],
    pub out_t: i64,
    pub out_b: i64,
    pub out_l: i64,
    pub out_h: i64,
    pub batch: i64,
    pub seq: i64,
    pub eps: f64,
    pub flags: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub tensors: u32,
    pub rows_per_block: u32,
    pub lanes_per_head: u32,
    pub teams: u32,
    pub units_per_lane: u32,
    /// 0: pads `RopeArgs` to the size of `NormArgs` (one argument buffer serves both in the
    /// host simulator).
    pub reserved: [i64; 2],
}

/// The q/k norm + RoPE kernel of input dtype `x`: 16-byte chunks, or (`scalar`) single values;
/// with weights of the compute dtype, or (`wt`, bf16 and f16 only) of `x`'s.
pub(crate) fn rope_kernel_name(x: DType, wt: bool, scalar: bool) -> Option<String> {
    if wt && !matches!(x, DType::BF16 | DType::F16) {
        return None;
    }
    let wt = if wt { "_wt" } else { "" };
    let scalar = if scalar { "_scalar" } else { "" };
    Some(format!("rms_norm_rope_{}{wt}{scalar}", dtype_tag(x)?))
}

fn dtype_tag(dt: DType) -> Option<&'static str> {
    match dt {
        DType::F32 => Some("f32"),
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        DType::F64 => Some("f64"),
        _ => None,
    }
}

/// The weight dtype a kernel for input `x` takes when given weight dtype `w`: `x` itself, or
/// f32 (the launcher converts any other weight to f32; f64 inputs take f64 weights).
pub fn kernel_weight_dtype(x: DType, w: DType) -> DType {
    match x {
        DType::F64 => DType::F64,
        DType::F32 => DType::F32,
        _ if w == x => x,
        _ => DType::F32,
    }
}

/// Which kernel of an op and dtype runs: the name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `{op}_{dtype}`: one row per block.
    Block,
    /// `{op}_{dtype}_rows`: `rows_per_block` rows per block, `lanes_per_row` lanes each.
    Rows,
    /// `{op}_{dtype}_staged`: one row per block, rows staged in shared memory ahead; only
    /// where copies are asynchronous (NVIDIA sm_80+, `NORM_ASYNC` in `hip/portable.h`).
    Staged,
    /// `{op}_{dtype}_rows_staged`: as [`Variant::Rows`], each team's rows staged in shared
    /// memory; NVIDIA sm_80+ only, as [`Variant::Staged`].
    RowsStaged,
    /// `{op}_{dtype}_var`: as [`Variant::Block`] with rows read twice, the mean of squares over
    /// each row's first `var_size` elements (`NormConfig::with_variance_size`).
    Partial,
    /// `{op}_{dtype}_chan`: a norm over another dimension than the last
    /// (`NormConfig::with_dim`), the operands read in place as `outer x channels x inner`.
    Channel,
    /// `{op}_{dtype}_chan_staged`: as [`Variant::Channel`], each block's tile copied whole into
    /// shared memory first; NVIDIA sm_80+ only, as [`Variant::Staged`].
    ChannelStaged,
    /// `{op}_{dtype}_quant`: as [`Variant::Block`], the output written as fp8 e4m3 or i8 with
    /// a scale per row (`rms_norm_quant`).
    Quant,
    /// `{op}_{dtype}_rows_quant`: as [`Variant::Rows`], quantised as [`Variant::Quant`].
    RowsQuant,
    /// `{op}_{dtype}_staged_quant`: as [`Variant::Staged`], quantised as [`Variant::Quant`];
    /// NVIDIA sm_80+ only.
    StagedQuant,
    /// `{op}_{dtype}_rows_staged_quant`: as [`Variant::RowsStaged`], quantised as
    /// [`Variant::Quant`]; NVIDIA sm_80+ only.
    RowsStagedQuant,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Block => "",
            Variant::Rows => "_rows",
            Variant::Staged => "_staged",
            Variant::RowsStaged => "_rows_staged",
            Variant::Partial => "_var",
            Variant::Channel => "_chan",
            Variant::ChannelStaged => "_chan_staged",
            Variant::Quant => "_quant",
            Variant::RowsQuant => "_rows_quant",
            Variant::StagedQuant => "_staged_quant",
            Variant::RowsStagedQuant => "_rows_staged_quant",
        }
    }
}

/// The exported name `{op}_{x}[_wf32]{suffix}` of `variant`, or `None` for an input dtype
/// without kernels. `w` must already be [`kernel_weight_dtype`]`(x, ..)`.
pub(crate) fn kernel_name(fused: bool, x: DType, w: DType, variant: Variant) -> Option<String> {
    let op = if fused {
        "fused_add_rms_norm"
    } else {
        "rms_norm"
    };
    let xt = dtype_tag(x)?;
    let wt = if w == x {
        ""
    } else if w == DType::F32 && matches!(x, DType::F16 | DType::BF16) {
        "_wf32"
    } else {
        return None;
    };
    Some(format!("{op}_{xt}{wt}{}", variant.suffix()))
}

/// Every kernel name of the portable variants, Block, Rows, Partial, Channel, Quant and
/// RowsQuant (72), and the 12 q/k norm + RoPE kernels: every
/// code object has them; the ROCm code-object audit and the tests check them.
#[cfg(any(feature = "rocm", test))]
pub fn portable_kernel_names() -> Vec<String> {
    let mut names = kernel_names(&[
        Variant::Block,
        Variant::Rows,
        Variant::Partial,
        Variant::Channel,
        Variant::Quant,
        Variant::RowsQuant,
    ]);
    for x in crate::error::FLOAT_DTYPES {
        for (wt, scalar) in [(false, false), (false, true), (true, false), (true, true)] {
            names.extend(rope_kernel_name(x, wt, scalar));
        }
    }
    names
}

/// Every kernel name of `variants` (12 each).
#[cfg(any(feature = "rocm", test))]
pub(crate) fn kernel_names(variants: &[Variant]) -> Vec<String> {
    use crate::error::FLOAT_DTYPES;
    let mut names = Vec::new();
    for fused in [false, true] {
        for x in FLOAT_DTYPES {
            let mut ws = vec![x];
            if matches!(x, DType::F16 | DType::BF16) {
                ws.push(DType::F32);
            }
            for w in ws {
                for &v in variants {
                    names.extend(kernel_name(fused, x, w, v));
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let all = portable_kernel_names();
        assert_eq!(all.len(), 84);
        assert!(all.contains(&"rms_norm_rope_bf16_scalar".to_string()));
        assert!(all.contains(&"rms_norm_rope_f16_wt_scalar".to_string()));
        assert!(!all.contains(&"rms_norm_rope_f32_wt".to_string()));
        assert!(all.contains(&"fused_add_rms_norm_bf16_wf32_var".to_string()));
        assert!(all.contains(&"rms_norm_f16_chan".to_string()));
        assert!(all.contains(&"fused_add_rms_norm_bf16_wf32_rows_quant".to_string()));
        assert!(all.contains(&"rms_norm_f64_quant".to_string()));
        let staged = kernel_names(&[
            Variant::Staged,
            Variant::RowsStaged,
            Variant::ChannelStaged,
            Variant::StagedQuant,
            Variant::RowsStagedQuant,
        ]);
        assert_eq!(staged.len(), 60);
        assert!(staged.contains(&"fused_add_rms_norm_f16_wf32_rows_staged_quant".to_string()));
        assert!(staged.contains(&"rms_norm_bf16_chan_staged".to_string()));
        assert!(staged.contains(&"fused_add_rms_norm_bf16_wf32_staged".to_string()));
        assert!(staged.contains(&"rms_norm_f32_rows_staged".to_string()));
        assert!(all.contains(&"rms_norm_bf16_wf32_rows".to_string()));
        assert!(all.contains(&"fused_add_rms_norm_f64".to_string()));
        assert_eq!(kernel_weight_dtype(DType::BF16, DType::F16), DType::F32);
        assert_eq!(
            kernel_name(false, DType::U8, DType::U8, Variant::Block),
            None
        );
    }
}

/// Which of the cubins built for compute capabilities `built` (e.g. `[80, 86, 89, 90]`) a
/// device of compute capability `device` runs: the one of the same major version with the
/// highest minor version not above the device's (a cubin runs on later minor versions of its
/// major version, never across major versions). `None`: no cubin fits; the PTX is used.
#[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
pub(crate) fn cubin_for(built: impl IntoIterator<Item = u32>, device: u32) -> Option<u32> {
    built
        .into_iter()
        .filter(|c| c / 10 == device / 10 && *c <= device)
        .max()
}

#[cfg(test)]
mod cubin_tests {
    #[test]
    fn cubin_for_each_device() {
        let built = [80, 86, 89, 90];
        let pick = |d| super::cubin_for(built, d);
        assert_eq!(pick(80), Some(80));
        assert_eq!(pick(86), Some(86));
        assert_eq!(pick(87), Some(86)); // Jetson Orin
        assert_eq!(pick(89), Some(89));
        assert_eq!(pick(90), Some(90));
        assert_eq!(pick(75), None); // Turing: the PTX (built for sm_80) will not load either
        assert_eq!(pick(100), None); // Blackwell: the PTX
        assert_eq!(pick(120), None);
    }
}
