//! The CUDA backend (feature `cuda`): launches the kernels of `hip/rms_norm.hip`, compiled to PTX
//! by `build.rs`, on Candle's stream for the device, honouring layouts and offsets. No device-wide
//! synchronisation: the launch is queued behind whatever Candle queued before.

use crate::abi::{self, NormArgs};
use crate::config::Backend;
use crate::launch::{self, Problem};
use crate::layout::RowLayout;
use crate::ops::{op_error, NormOp};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{
    sys, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, SyncOnDrop,
};
use candle_core::cuda::{CudaStorageSlice, DeviceId, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Every kernel, as PTX for the `CUDA_COMPUTE_CAP` the crate was built for (default sm_80).
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rms_norm.ptx"));
/// The module name under which Candle caches the loaded PTX, per device.
const MODULE: &str = "candle_rmsnorm_v1";

// SAFETY: `NormArgs` is `#[repr(C)]`, `Copy`, made only of integers and an f64, and has the
// layout of `struct NormArgs` in hip/norm_args.h (both sides assert 104 bytes); every kernel
// takes it by value, so the driver copies these bytes as the one kernel parameter.
unsafe impl DeviceRepr for NormArgs {}

fn elem_bytes(dt: DType) -> usize {
    dt.size_in_bytes()
}

/// The device address of a storage's buffer, with the guard that records the read (or write)
/// on `stream` when dropped. The guard must outlive the launch that uses the address.
fn base_ptr<'a>(
    op: &NormOp,
    arg: &str,
    s: &'a CudaStorage,
    st: &'a CudaStream,
) -> Result<(u64, usize, SyncOnDrop<'a>)> {
    Ok(match &s.slice {
        CudaStorageSlice::F32(v) => {
            let (p, g) = v.device_ptr(st);
            (p, v.len(), g)
        }
        CudaStorageSlice::F16(v) => {
            let (p, g) = v.device_ptr(st);
            (p, v.len(), g)
        }
        CudaStorageSlice::BF16(v) => {
            let (p, g) = v.device_ptr(st);
            (p, v.len(), g)
        }
        CudaStorageSlice::F64(v) => {
            let (p, g) = v.device_ptr(st);
            (p, v.len(), g)
        }
        _ => {
            return Err(op_error(
                op.name(),
                arg,
                "of dtype f32, f16, bf16 or f64",
                format!("{:?}", s.dtype()),
            ))
        }
    })
}

fn rows_of(op: &NormOp, arg: &str, l: &Layout) -> Result<RowLayout> {
    RowLayout::of(l).ok_or_else(|| {
        op_error(
            op.name(),
            arg,
            "rows with a contiguous last dimension",
            format!("strides {:?} for shape {:?}", l.stride(), l.dims()),
        )
    })
}

fn check_len(op: &NormOp, arg: &str, rl: &RowLayout, len: usize) -> Result<()> {
    if rl.end() > len {
        return Err(op_error(
            op.name(),
            arg,
            format!("a storage of at least {} elements", rl.end()),
            len,
        ));
    }
    Ok(())
}

/// An uninitialised output buffer of `n` elements of `dt` (every element is written by the
/// kernel).
enum Out {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    BF16(CudaSlice<bf16>),
    F64(CudaSlice<f64>),
}

impl Out {
    fn alloc(dev: &CudaDevice, dt: DType, n: usize) -> Result<Self> {
        // SAFETY: the buffer is only read after the kernel has written all `n` elements (every
        // row of every output the launch covers; the launcher covers all rows).
        unsafe {
            Ok(match dt {
                DType::F32 => Out::F32(dev.alloc::<f32>(n)?),
                DType::F16 => Out::F16(dev.alloc::<f16>(n)?),
                DType::BF16 => Out::BF16(dev.alloc::<bf16>(n)?),
                DType::F64 => Out::F64(dev.alloc::<f64>(n)?),
                other => candle_core::bail!("candle-rmsnorm: no CUDA kernel for {other:?}"),
            })
        }
    }

    fn ptr<'a>(&'a mut self, st: &'a CudaStream) -> (u64, SyncOnDrop<'a>) {
        match self {
            Out::F32(v) => v.device_ptr_mut(st),
            Out::F16(v) => v.device_ptr_mut(st),
            Out::BF16(v) => v.device_ptr_mut(st),
            Out::F64(v) => v.device_ptr_mut(st),
        }
    }

    fn into_storage(self, dev: &CudaDevice) -> CudaStorage {
        match self {
            Out::F32(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
            Out::F16(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
            Out::BF16(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
            Out::F64(v) => CudaStorage::wrap_cuda_slice(v, dev.clone()),
        }
    }
}

/// Per-device facts the launcher needs on every call, looked up once: multiprocessor count,
/// warp size, and the loaded kernels by name (so a call costs no driver lookups).
#[derive(Default)]
struct DeviceCache {
    shape: HashMap<DeviceId, (u32, u32)>,
    funcs: HashMap<(DeviceId, String), CudaFunction>,
    /// Blocks of (kernel, block size) resident per multiprocessor.
    fit: HashMap<(DeviceId, String, u32), u32>,
}

fn cache() -> &'static Mutex<DeviceCache> {
    static CACHE: OnceLock<Mutex<DeviceCache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn cached_shape(dev: &CudaDevice, st: &CudaStream) -> Result<(u32, u32)> {
    if let Some(&s) = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .shape
        .get(&dev.id())
    {
        return Ok(s);
    }
    let s = device_shape(st)?;
    cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .shape
        .insert(dev.id(), s);
    Ok(s)
}

/// The kernel `name` and how many blocks of `block` threads of it fit on a multiprocessor at
/// once (the driver's occupancy query), both looked up once per device.
fn cached_func(dev: &CudaDevice, name: &str, block: u32) -> Result<(CudaFunction, u32)> {
    let key = (dev.id(), name.to_string());
    let fit_key = (dev.id(), name.to_string(), block);
    {
        let c = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(f), Some(&n)) = (c.funcs.get(&key), c.fit.get(&fit_key)) {
            return Ok((f.clone(), n));
        }
    }
    let f = dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function();
    let n = f
        .occupancy_max_active_blocks_per_multiprocessor(block, 0, None)
        .w()?;
    let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    c.funcs.insert(key, f.clone());
    c.fit.insert(fit_key, n);
    Ok((f, n))
}

/// Multiprocessor count and warp size of the device behind `st`.
fn device_shape(st: &CudaStream) -> Result<(u32, u32)> {
    let ctx = st.context();
    let mps = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()?;
    let warp = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE)
        .w()?;
    Ok((mps.max(1) as u32, warp as u32))
}

/// The CUDA forward of every op variant; see [`crate::ops`] for the operand combinations.
pub(crate) fn forward(
    op: &NormOp,
    x: (&CudaStorage, &Layout),
    r: Option<(&CudaStorage, &Layout)>,
    w: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    match op.backend {
        Backend::Auto | Backend::Cuda => {}
        other => return Err(crate::api::backend_unavailable(op.name(), other)),
    }
    let dev = x.0.device().clone();
    let st = dev.cuda_stream();
    let shape = op.out_shape(x.1.shape());
    let xdt = x.0.dtype();
    let eb = elem_bytes(xdt);
    let xl = rows_of(op, "xs", x.1)?;
    let rl = match r {
        Some((rs, l)) => {
            if rs.dtype() != xdt {
                return Err(op_error(
                    op.name(),
                    "residual",
                    format!("of the dtype of xs ({xdt:?})"),
                    format!("{:?}", rs.dtype()),
                ));
            }
            let rl = rows_of(op, "residual", l)?;
            if (rl.rows, rl.hidden) != (xl.rows, xl.hidden) {
                return Err(op_error(
                    op.name(),
                    "residual",
                    format!("of the shape of xs {:?}", x.1.dims()),
                    format!("shape {:?}", l.dims()),
                ));
            }
            Some(rl)
        }
        None => None,
    };
    let (rows, hidden) = (xl.rows, xl.hidden);
    let n = rows * hidden;
    let fused = op.fused;
    if fused != r.is_some() {
        candle_core::bail!("{}: internal error: fused op without residual", op.name());
    }

    // The weight, converted to the dtype the kernel takes when it differs.
    let mut w_conv: Option<CudaStorage> = None;
    let mut w_off = 0usize;
    let mut wdt = abi::kernel_weight_dtype(xdt, xdt);
    if let Some((ws, wl)) = w {
        let wrl = RowLayout::of(wl)
            .filter(|l| l.rows == 1 && l.hidden == hidden)
            .ok_or_else(|| {
                op_error(
                    op.name(),
                    "weight",
                    format!("a contiguous rank-1 tensor of length {hidden}"),
                    format!("layout {:?} {:?}", wl.dims(), wl.stride()),
                )
            })?;
        wdt = abi::kernel_weight_dtype(xdt, ws.dtype());
        if wdt != ws.dtype() {
            w_conv = Some(ws.to_dtype(wl, wdt)?);
        } else {
            w_off = wrl.offset;
        }
    }
    let weight: Option<&CudaStorage> = match (&w_conv, w) {
        (Some(c), _) => Some(c),
        (None, Some((ws, _))) => Some(ws),
        (None, None) => None,
    };

    let name_stem = abi::kernel_name(fused, xdt, wdt, false).ok_or_else(|| {
        op_error(
            op.name(),
            "xs",
            "of dtype f32, f16, bf16 or f64",
            format!("{xdt:?}"),
        )
    })?;

    let mut out = Out::alloc(&dev, xdt, if fused { 2 * n } else { n })?;
    {
        let (xp, xlen, _xg) = base_ptr(op, "xs", x.0, &st)?;
        check_len(op, "xs", &xl, xlen)?;
        let res = match (r, rl) {
            (Some((rs, _)), Some(rl)) => {
                let (p, len, g) = base_ptr(op, "residual", rs, &st)?;
                check_len(op, "residual", &rl, len)?;
                Some((p + (rl.offset * eb) as u64, rl.row_stride, g))
            }
            _ => None,
        };
        let wt = match weight {
            Some(ws) => {
                let (p, len, g) = base_ptr(op, "weight", ws, &st)?;
                if w_off + hidden > len {
                    return Err(op_error(
                        op.name(),
                        "weight",
                        format!("a storage of at least {} elements", w_off + hidden),
                        len,
                    ));
                }
                Some((p + (w_off * elem_bytes(wdt)) as u64, g))
            }
            None => None,
        };
        let (op_ptr, _og) = out.ptr(&st);
        let xa = xp + (xl.offset * eb) as u64;
        let sum_ptr = op_ptr + (n * eb) as u64;

        let mut addrs = vec![xa, op_ptr, wt.as_ref().map_or(0, |w| w.0)];
        let mut strides = vec![xl.row_stride, hidden];
        if let Some((rp, rs, _)) = &res {
            addrs.extend([*rp, sum_ptr]);
            strides.extend([*rs, hidden]);
        }
        let (mps, warp) = cached_shape(&dev, &st)?;
        let problem = Problem {
            rows: rows as u64,
            hidden: hidden as u64,
            elem_bytes: eb as u32,
            vector: launch::vector_ok(&addrs, &strides, hidden, eb),
            warp_size: warp,
            multiprocessors: mps,
            blocks_per_mp: 0,
        };
        let plan_err = |e| op_error(op.name(), "device", "a supported CUDA device", e);
        // First the kernel and block size, then the grid from how many such blocks fit at once.
        let first = launch::plan(&problem).map_err(plan_err)?;
        let name = format!("{name_stem}{}", first.kernel_suffix());
        let (func, fit) = cached_func(&dev, &name, first.block)?;
        // Measured on the H100 (notes/gpu.md): one wave of equal row shares suits the plain op
        // (its blocks prefetch the next row); the fused op, which holds two inputs per row
        // instead, did better with many waves of shorter blocks.
        let plan = launch::plan(&Problem {
            blocks_per_mp: if fused { 0 } else { fit },
            ..problem
        })
        .map_err(plan_err)?;

        let mut flags = 0u32;
        if op.weight_mode == crate::WeightMode::OffsetOne {
            flags |= abi::NORM_OFFSET_ONE;
        }
        if op.rounding == crate::Rounding::BeforeWeight {
            flags |= abi::NORM_ROUND_BEFORE_WEIGHT;
        }
        // Launch over the rows in pieces of at most `rows_per_launch` rows (one piece in any
        // realistic case), shifting every row pointer by whole rows.
        let mut row0 = 0usize;
        while row0 < rows {
            let take = (rows - row0).min(plan.rows_per_launch as usize);
            let shift = |base: u64, stride: usize| base + (row0 * stride * eb) as u64;
            let args = NormArgs {
                out: shift(op_ptr, hidden),
                sum_out: if fused { shift(sum_ptr, hidden) } else { 0 },
                x: shift(xa, xl.row_stride),
                residual: res.as_ref().map_or(0, |(p, s, _)| shift(*p, *s)),
                weight: wt.as_ref().map_or(0, |w| w.0),
                out_stride: hidden as i64,
                sum_stride: hidden as i64,
                x_stride: xl.row_stride as i64,
                res_stride: res.as_ref().map_or(0, |(_, s, _)| *s as i64),
                rows: take as i64,
                hidden: hidden as i64,
                eps: op.eps,
                flags,
                rows_per_block: plan.rows_per_block,
            };
            let grid = (take as u64).div_ceil(plan.rows_per_block as u64) as u32;
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (plan.block, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = st.launch_builder(&func);
            b.arg(&args);
            // SAFETY: `args` matches the kernel's one by-value parameter (see the DeviceRepr impl);
            // every address in it lies inside a live buffer whose guard (`_xg`, the residual and
            // weight guards, `_og`) is held until after this launch is queued, and the row
            // geometry was checked against each buffer's length above (the output was allocated
            // for exactly `rows * hidden` elements, twice for the fused op). The grid covers the
            // rows `row0..row0 + take` with `rows_per_block` rows per block as the kernel expects.
            unsafe { b.launch(cfg) }.w()?;
            row0 += take;
        }
    }
    Ok((out.into_storage(&dev), shape))
}
