//! The quantised ops: RMSNorm (and fused add + RMSNorm) written as fp8 e4m3 or i8 with an f32
//! scale per row. Validates once, picks the backend and wraps the backend's buffers as tensors.

use crate::api::{check_common, check_like, readable, resolve_backend};
use crate::config::{Backend, NormConfig};
use crate::error::backend_unavailable;
use crate::op::{Inputs, NormOp};
use crate::quant::{scale_dims, QuantConfig, QuantSpec, Quantized};
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

const RMS_NORM: &str = "candle_rmsnorm::rms_norm_quant";
const FUSED: &str = "candle_rmsnorm::fused_add_rms_norm_quant";

/// RMSNorm over the last dimension, written as 8-bit values with one f32 scale per row.
///
/// `y` is what [`rms_norm_with`](crate::rms_norm_with) returns for the same arguments on the
/// same backend, in the dtype of `xs` (f64 input: then rounded to f32): exactly that tensor on
/// the CPU and portable backends; on CUDA the same formula and rounding points, with the
/// squares possibly summed in another order (`docs/numerics.md`). Each row then gets `scale` ([`QuantScale`](crate::QuantScale): `max(amax / max_value,
/// min_scale)`, or the static one) and each value is `y * (1 / scale)` in f32 rounded to nearest
/// even into the format, saturated to its range (fp8 e4m3: +-448, infinities too; NaN stays NaN;
/// i8: -128..=127, NaN to 0). Dequantise with `values * scales` ([`Quantized::dequantize`]).
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// use candle_rmsnorm::{rms_norm_quant, NormConfig, QuantConfig, QuantDType};
/// let xs = Tensor::randn(0f32, 1., (4, 64), &Device::Cpu)?.to_dtype(DType::BF16)?;
/// let q = rms_norm_quant(&xs, None, &NormConfig::new(1e-6), &QuantConfig::new(QuantDType::F8E4M3))?;
/// assert_eq!((q.values.dtype(), q.scales.dims()), (DType::F8E4M3, &[4usize, 1][..]));
/// # Ok(()) }
/// ```
///
/// The results are detached (no gradient). Every [`NormConfig`] option applies but
/// [`NormConfig::with_dim`] (other than the last) and [`NormConfig::with_variance_size`].
///
/// Backends: the CPU path (SIMD, multi-threaded), CUDA kernels (`{op}_{dtype}[_rows]_quant`,
/// `hip/quant.h`), the same kernels on ROCm (`Backend::Rocm`: host tensors uploaded, run,
/// downloaded; `candle_rmsnorm::rocm` has the ops on device tensors; compiled and their
/// no-device errors tested, not yet run on AMD hardware) and the portable one (Candle's ops,
/// any device).
///
/// # Errors
/// As [`rms_norm`](crate::rms_norm); a `dim` other than the last or a variance size (naming
/// them); a static scale that is not finite and > 0; `Backend::Rocm` without a usable AMD GPU.
pub fn rms_norm_quant(
    xs: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
) -> Result<Quantized> {
    let (q, _) = quant_impl(RMS_NORM, xs, None, weight, cfg, quant)?;
    Ok(q)
}

/// Fused residual add + RMSNorm, the normed output quantised as [`rms_norm_quant`] does;
/// returns `(quantised, sum)` with `sum = xs + residual` rounded to the dtype of `xs`, as
/// [`fused_add_rms_norm_with`](crate::fused_add_rms_norm_with) returns it.
///
/// # Errors
/// As [`rms_norm_quant`], and a residual whose shape, dtype or device differs from `xs`.
pub fn fused_add_rms_norm_quant(
    xs: &Tensor,
    residual: &Tensor,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
) -> Result<(Quantized, Tensor)> {
    let (q, sum) = quant_impl(FUSED, xs, Some(residual), weight, cfg, quant)?;
    Ok((q, sum.expect("the fused op returns its sum")))
}

/// An operand on the CPU (`check_common` put every operand on the device of `xs`).
fn cpu_operand<'a>((s, l): (&'a Storage, &'a Layout)) -> (&'a CpuStorage, &'a Layout) {
    match s {
        Storage::Cpu(c) => (c, l),
        _ => unreachable!("operands are on the device of xs (checked)"),
    }
}

/// An operand on a CUDA device, as [`cpu_operand`].
#[cfg(feature = "cuda")]
fn cuda_operand<'a>(
    (s, l): (&'a Storage, &'a Layout),
) -> (&'a candle_core::CudaStorage, &'a Layout) {
    match s {
        Storage::Cuda(c) => (c, l),
        _ => unreachable!("operands are on the device of xs (checked)"),
    }
}

/// The quantised forward on host storages: the CPU path, or with `Backend::Rocm` staged
/// through the ROCm kernels.
fn host_forward(
    name: &str,
    op: &NormOp,
    spec: &QuantSpec,
    inputs: Inputs<'_, CpuStorage>,
) -> Result<crate::host::QuantOut> {
    match op.backend {
        #[cfg(feature = "rocm")]
        Backend::Rocm => crate::rocm::host_forward_quant(name, op, spec, inputs),
        Backend::Cpu => crate::cpu::quant::forward(op, spec, inputs),
        b => Err(backend_unavailable(name, b)),
    }
}

fn detached(storage: Storage, dims: &[usize]) -> Tensor {
    Tensor::from_storage(storage, dims, BackpropOp::none(), false)
}

fn quant_impl(
    op: &str,
    xs: &Tensor,
    residual: Option<&Tensor>,
    weight: Option<&Tensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
) -> Result<(Quantized, Option<Tensor>)> {
    check_common(op, xs, weight, cfg)?;
    if let Some(r) = residual {
        check_like(op, "residual", r, xs, xs.dims(), "the shape of xs")?;
    }
    let spec = QuantSpec::checked(op, xs.dims(), cfg, quant)?;
    let backend = resolve_backend(op, cfg, xs.device())?;
    let dtype = quant.dtype();
    if xs.elem_count() == 0 {
        let values = Tensor::zeros(xs.shape(), dtype.storage_dtype(), xs.device())?;
        let scales = (Tensor::ones(scale_dims(xs.dims()), DType::F32, xs.device())?
            * spec.row_scale(0.0) as f64)?;
        let sum = residual.map(|_| xs.zeros_like()).transpose()?;
        return Ok((
            Quantized {
                values,
                scales,
                dtype,
            },
            sum,
        ));
    }
    let nop = NormOp::new(cfg, backend, residual.is_some());
    if backend == Backend::Candle {
        let (values, scales, sum) = crate::portable::norm_quant(&nop, &spec, xs, residual, weight)?;
        return Ok((
            Quantized {
                values: values.detach(),
                scales: scales.detach(),
                dtype,
            },
            sum.map(|s| s.detach()),
        ));
    }
    let x = readable(xs, None)?;
    let r = residual.map(|r| readable(r, None)).transpose()?;
    let w = weight.map(|w| w.contiguous()).transpose()?;
    let (xs_s, xl) = x.storage_and_layout();
    let rs = r.as_ref().map(|r| r.storage_and_layout());
    let ws = w.as_ref().map(|w| w.storage_and_layout());
    let sdims = scale_dims(xs.dims());
    let rs = rs.as_ref().map(|(g, l)| (&**g, *l));
    let ws = ws.as_ref().map(|(g, l)| (&**g, *l));
    let (values, scales, sum) = match (&*xs_s, backend) {
        (Storage::Cpu(xc), Backend::Cpu | Backend::Rocm) => {
            let inputs = Inputs {
                x: (xc, xl),
                residual: rs.map(cpu_operand),
                weight: ws.map(cpu_operand),
            };
            let out = host_forward(op, &nop, &spec, inputs)?;
            (
                Storage::Cpu(out.values),
                Storage::Cpu(CpuStorage::F32(out.scales)),
                out.sum.map(Storage::Cpu),
            )
        }
        #[cfg(feature = "cuda")]
        (Storage::Cuda(xc), Backend::Cuda) => {
            let inputs = Inputs {
                x: (xc, xl),
                residual: rs.map(cuda_operand),
                weight: ws.map(cuda_operand),
            };
            let out = crate::cuda::quant::forward(&nop, &spec, inputs)?;
            (
                Storage::Cuda(out.values),
                Storage::Cuda(out.scales),
                out.sum.map(Storage::Cuda),
            )
        }
        (_, b) => return Err(backend_unavailable(op, b)),
    };
    Ok((
        Quantized {
            values: detached(values, xs.dims()),
            scales: detached(scales, &sdims),
            dtype,
        },
        sum.map(|s| detached(s, xs.dims())),
    ))
}
