//! The ROCm path (feature `rocm`).
//!
//! Runs everywhere: the embedded code objects (one per architecture, every kernel exported, no
//! scratch, no spills, register counts printed), the HIP runtime loading for real, `Auto`
//! matching the CPU path bit for bit, and `Rocm` failing cleanly without a device.
//! Runs only with an AMD GPU (and says "skipped" otherwise): the case matrix (`common::cases`)
//! through the host-staged ops (`Backend::Rocm`) and through the device-resident API, and the
//! raw launchers.
#![cfg(feature = "rocm")]

#[path = "../build/amdgpu_elf.rs"]
mod amdgpu_elf;
mod common;

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::rocm::{self, RocmDevice, RocmTensor};
use candle_rmsnorm::{Backend, NormConfig};
use common::rocm_gpu::gpu;
use common::*;
use rand::Rng;

const DEFAULT_ARCHS: &[&str] = &[
    "gfx1030", "gfx1100", "gfx1101", "gfx1201", "gfx90a", "gfx942",
];

fn expected_archs() -> Vec<String> {
    if let Some(list) = option_env!("AMDGPU_TARGETS").filter(|s| !s.trim().is_empty()) {
        let mut v: Vec<String> = list
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        return v;
    }
    let mut v: Vec<String> = DEFAULT_ARCHS.iter().map(|s| s.to_string()).collect();
    let major: u32 = rocm::compiler()
        .split("version ")
        .nth(1)
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if major >= 20 {
        v.push("gfx950".into());
    }
    v.sort();
    v
}

#[test]
fn code_objects_for_every_architecture() {
    let objects = rocm::code_objects();
    let built: Vec<String> = objects.iter().map(|c| c.arch.to_string()).collect();
    assert_eq!(built, rocm::built_archs());
    // The documented defaults (README), or AMDGPU_TARGETS: an independent statement of them.
    assert_eq!(built, expected_archs(), "compiler: {}", rocm::compiler());
    // The kernel names from the public table of the first object: every object embeds the
    // same kernels (each op for every input dtype), exports them, and its metadata agrees.
    let names: Vec<String> = objects[0]
        .kernels
        .iter()
        .map(|k| k.name.to_string())
        .collect();
    for t in ["f32", "f16", "bf16", "f64"] {
        for op in ["rms_norm", "fused_add_rms_norm"] {
            assert!(
                names.contains(&format!("{op}_{t}")),
                "{op}_{t} in {names:?}"
            );
        }
    }
    println!("compiler: {}", rocm::compiler());
    println!(
        "{:<8} {:<36} {:>5} {:>5} {:>5} {:>6} {:>5}",
        "arch", "kernel", "vgpr", "sgpr", "agpr", "lds", "wave"
    );
    for co in objects {
        assert!(!co.bytes.is_empty(), "{} is empty", co.arch);
        let syms = amdgpu_elf::dynamic_symbols(co.bytes).expect("ELF symbols");
        let meta = amdgpu_elf::code_object_meta(co.bytes).expect("AMDGPU metadata");
        let listed: Vec<&str> = co.kernels.iter().map(|k| k.name).collect();
        assert_eq!(listed, names, "{}: kernel table", co.arch);
        assert_eq!(
            meta.kernels.len(),
            names.len(),
            "{}: kernels in the metadata",
            co.arch
        );
        assert_eq!(meta.target, co.target);
        assert!(
            meta.target.ends_with(co.arch),
            "{} vs {}",
            meta.target,
            co.arch
        );
        for n in &names {
            assert!(syms.contains(n), "{}: kernel {n} not exported", co.arch);
            assert!(
                syms.contains(&format!("{n}.kd")),
                "{}: kernel descriptor {n}.kd not exported",
                co.arch
            );
            let k = meta
                .kernels
                .iter()
                .find(|k| &k.name == n)
                .unwrap_or_else(|| panic!("{}: no metadata for {n}", co.arch));
            assert_eq!(k.problem(), None, "{} {n}", co.arch);
            assert_eq!(k.private_segment_fixed_size, 0);
            assert_eq!(k.vgpr_spill_count + k.sgpr_spill_count, 0);
            // One by-value NormArgs: the ABI of hip/norm_args.h and src/gpu/abi.rs.
            assert_eq!(
                k.explicit_args,
                vec![(0, rocm::KERNEL_ARG_BYTES as u64, "by_value".to_string())],
                "{} {n}: kernel arguments",
                co.arch
            );
            let expected_wave = if co.arch.starts_with("gfx9") { 64 } else { 32 };
            assert_eq!(k.wavefront_size, expected_wave, "{} {n}", co.arch);
            let r = co.kernel(n).expect("resources in the embedded table");
            assert_eq!(
                (u64::from(r.vgprs), u64::from(r.sgprs), u64::from(r.agprs)),
                (k.vgpr_count, k.sgpr_count, k.agpr_count)
            );
            println!(
                "{:<8} {:<36} {:>5} {:>5} {:>5} {:>6} {:>5}",
                co.arch,
                n,
                k.vgpr_count,
                k.sgpr_count,
                k.agpr_count,
                k.group_segment_fixed_size,
                k.wavefront_size
            );
        }
    }
}

#[test]
fn device_architecture_selection() {
    let first = rocm::code_objects()[0].arch;
    assert_eq!(
        rocm::select(&format!("{first}:sramecc+:xnack-"))
            .unwrap()
            .arch,
        first
    );
    let e = rocm::select("gfx803").unwrap_err().to_string();
    assert!(e.contains("gfx803") && e.contains(first), "{e}");
}

/// The HIP runtime loads here for real (CI installs Debian's libamdhip64-dev).
#[test]
fn hip_runtime_loads() {
    let (path, version) = rocm::runtime_info().expect("the HIP runtime must load");
    let n = rocm::device_count().expect("hipGetDeviceCount");
    println!("HIP runtime {path}, version {version:?}, {n} AMD GPU(s)");
}

fn skipped(what: &str) {
    println!("SKIPPED {what}: no AMD GPU visible to the HIP runtime");
}

#[test]
fn rocm_without_device_errors_cleanly() {
    if gpu().is_some() {
        println!("not applicable: an AMD GPU is present");
        return;
    }
    let e = RocmDevice::new(0).unwrap_err().to_string();
    assert!(e.contains("no AMD GPU"), "{e}");
    let x = Tensor::randn(0f32, 1., (3, 8), &Device::Cpu).unwrap();
    let w = Tensor::ones(8, DType::F32, &Device::Cpu).unwrap();
    let cfg = NormConfig::new(1e-6).with_backend(Backend::Rocm);
    let e = candle_rmsnorm::rms_norm_with(&x, Some(&w), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rms_norm")
            && e.contains("backend rocm is unavailable")
            && e.contains("no AMD GPU"),
        "{e}"
    );
    let e = candle_rmsnorm::fused_add_rms_norm_with(&x, &x, None, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fused_add_rms_norm") && e.contains("unavailable"),
        "{e}"
    );
}

fn rand_tensor(rng: &mut rand::rngs::StdRng, shape: &[usize], dt: DType, scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dt)
        .unwrap()
}

fn bits_of<T: candle_core::WithDType>(t: &Tensor, f: fn(T) -> u64) -> Vec<u64> {
    let v = t.flatten_all().unwrap().to_vec1::<T>().unwrap();
    v.into_iter().map(f).collect()
}

/// The bit patterns of `t`'s elements.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => bits_of(t, |x: f32| x.to_bits().into()),
        DType::F64 => bits_of(t, f64::to_bits),
        DType::F16 => bits_of(t, |x: half::f16| x.to_bits().into()),
        DType::BF16 => bits_of(t, |x: half::bf16| x.to_bits().into()),
        other => panic!("{other:?}"),
    }
}

/// With feature `rocm`, `Auto` keeps host tensors on the CPU path: results equal `Cpu` bit for bit.
#[test]
fn auto_matches_cpu_bitwise() {
    let (mut rng, _) = common::rng();
    for dt in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for &(rows, hidden) in &[(1usize, 1usize), (7, 33), (64, 128), (5, 1536)] {
            let x = rand_tensor(&mut rng, &[rows, hidden], dt, 3.0);
            let r = rand_tensor(&mut rng, &[rows, hidden], dt, 3.0);
            let w = rand_tensor(&mut rng, &[hidden], DType::F32, 1.0);
            let auto = NormConfig::new(1e-6).with_backend(Backend::Auto);
            let cpu = NormConfig::new(1e-6).with_backend(Backend::Cpu);
            let a = candle_rmsnorm::rms_norm_with(&x, Some(&w), &auto).unwrap();
            let c = candle_rmsnorm::rms_norm_with(&x, Some(&w), &cpu).unwrap();
            assert_eq!(bits(&a), bits(&c), "{dt:?} {rows}x{hidden}");
            let (an, asum) =
                candle_rmsnorm::fused_add_rms_norm_with(&x, &r, Some(&w), &auto).unwrap();
            let (cn, csum) =
                candle_rmsnorm::fused_add_rms_norm_with(&x, &r, Some(&w), &cpu).unwrap();
            assert_eq!(bits(&an), bits(&cn));
            assert_eq!(bits(&asum), bits(&csum));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// With an AMD GPU.

/// The device-resident API as a matrix target: contiguous device tensors (no views), the
/// weight converted on the host to what the kernels take (the input dtype, or f32 for other
/// weights of f16/bf16 input; f64 for f64 input), as the host-staged path converts it. The
/// flag picks the in-place ops (`x` becomes normed, the residual the sum).
struct DeviceApi(RocmDevice, bool);

impl Target for DeviceApi {
    fn label(&self) -> String {
        format!(
            "rocm device API{} on {} ({})",
            if self.1 { ", in place" } else { "" },
            self.0.name(),
            self.0.gcn_arch_name()
        )
    }

    fn supports(&self, c: &Case) -> bool {
        c.view.is_none()
    }

    fn place(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn call(
        &self,
        c: &Case,
        x: &Tensor,
        r: Option<&Tensor>,
        w: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (dev, stream, cfg) = (&self.0, self.0.stream()?, c.config());
        let wdt = match (c.dtype, c.wdtype) {
            (DType::F64, _) => DType::F64,
            (dt, Some(w)) if w == dt => dt,
            _ => DType::F32,
        };
        let mut xd = RocmTensor::from_tensor(dev, x)?;
        let wd = w
            .map(|w| RocmTensor::from_tensor(dev, &w.to_dtype(wdt)?))
            .transpose()?;
        if self.1 {
            return Ok(match r {
                Some(r) => {
                    let mut rd = RocmTensor::from_tensor(dev, r)?;
                    rocm::fused_add_rms_norm_inplace(&mut xd, &mut rd, wd.as_ref(), &cfg, stream)?;
                    (xd.to_tensor()?, Some(rd.to_tensor()?))
                }
                None => {
                    rocm::rms_norm_inplace(&mut xd, wd.as_ref(), &cfg, stream)?;
                    (xd.to_tensor()?, None)
                }
            });
        }
        Ok(match r {
            Some(r) => {
                let rd = RocmTensor::from_tensor(dev, r)?;
                let (n, s) = rocm::fused_add_rms_norm(&xd, &rd, wd.as_ref(), &cfg, stream)?;
                (n.to_tensor()?, Some(s.to_tensor()?))
            }
            None => (
                rocm::rms_norm(&xd, wd.as_ref(), &cfg, stream)?.to_tensor()?,
                None,
            ),
        })
    }
}

/// The matrix through the Candle ops on host tensors with `Backend::Rocm` (staged through the
/// device).
#[test]
fn gpu_matrix_host_staged() -> Result<()> {
    let Some(dev) = gpu() else {
        skipped("gpu_matrix_host_staged");
        return Ok(());
    };
    println!(
        "device {} {} ({}, {} CUs), code object {}",
        dev.ordinal(),
        dev.name(),
        dev.gcn_arch_name(),
        dev.compute_units(),
        dev.code_object().arch
    );
    run_matrix(&Device::Cpu, Backend::Rocm, |_| true).map(|_| ())
}

/// The in-place ops on host tensors with `Backend::Rocm`: the matrix against the reference and
/// bitwise equal to the out-of-place ops.
#[test]
fn gpu_inplace_host_staged() -> Result<()> {
    if gpu().is_none() {
        skipped("gpu_inplace_host_staged");
        return Ok(());
    }
    let inplace = InPlace {
        device: Device::Cpu,
        backend: Backend::Rocm,
    };
    run_cases(&inplace, &matrix())?;
    run_bitwise(&Api::new(&Device::Cpu, Backend::Rocm), &inplace, &matrix()).map(|_| ())
}

/// The matrix through `rocm::{rms_norm, fused_add_rms_norm}` on `RocmTensor`s.
#[test]
fn gpu_matrix_device_api() -> Result<()> {
    let Some(dev) = gpu() else {
        skipped("gpu_matrix_device_api");
        return Ok(());
    };
    run_cases(&DeviceApi(dev, false), matrix().iter()).map(|_| ())
}

/// The in-place ops on `RocmTensor`s: the matrix, and bitwise equal to the out-of-place ones.
#[test]
fn gpu_inplace_device_api() -> Result<()> {
    let Some(dev) = gpu() else {
        skipped("gpu_inplace_device_api");
        return Ok(());
    };
    let inplace = DeviceApi(dev.clone(), true);
    run_cases(&inplace, matrix().iter())?;
    run_bitwise(&DeviceApi(dev, false), &inplace, &matrix()).map(|_| ())
}

#[test]
fn gpu_raw_launch_poisoned_and_deterministic() {
    let Some(dev) = gpu() else {
        return skipped("gpu_raw_launch_poisoned_and_deterministic");
    };
    let (mut rng, _) = common::rng();
    let (rows, hidden, stride) = (300usize, 1000usize, 1024usize);
    let x = rand_tensor(&mut rng, &[rows, stride], DType::BF16, 3.0);
    let w = rand_tensor(&mut rng, &[hidden], DType::F32, 1.0);
    let stream = dev.stream().unwrap();
    let xd = RocmTensor::from_tensor(&dev, &x).unwrap();
    let wd = RocmTensor::from_tensor(&dev, &w).unwrap();
    let mut outs = Vec::new();
    for _ in 0..2 {
        let mut out = RocmTensor::alloc(&dev, DType::BF16, (rows, stride)).unwrap();
        out.fill_bytes(0xff, stream).unwrap(); // NaN everywhere: an unwritten element shows
        let args = rocm::RawNorm {
            dtype: DType::BF16,
            weight_dtype: Some(DType::F32),
            rows,
            hidden,
            x: xd.as_ptr(),
            x_stride: stride,
            out: out.as_mut_ptr(),
            out_stride: stride,
            weight: wd.as_ptr(),
            ..Default::default()
        };
        // SAFETY: all pointers are live allocations of `dev` with `rows` rows of `stride`.
        unsafe { rocm::rms_norm_raw(&dev, stream.raw(), &args, &NormConfig::new(1e-6)).unwrap() };
        stream.synchronize().unwrap();
        outs.push(out.to_tensor().unwrap());
    }
    assert_eq!(bits(&outs[0]), bits(&outs[1]), "run to run");
    let got = values(&outs[0].narrow(1, 0, hidden).unwrap()).unwrap();
    let xv = values(&x.narrow(1, 0, hidden).unwrap()).unwrap();
    let want = reference(
        DType::BF16,
        &xv,
        None,
        Some(&values(&w).unwrap()),
        hidden,
        &Opts::new(1e-6),
    );
    check(
        "raw",
        DType::BF16,
        Quantity::Normed,
        hidden,
        &got,
        &want.normed,
    );
    // The padding columns were not written.
    let pad = values(&outs[0].narrow(1, hidden, stride - hidden).unwrap()).unwrap();
    assert!(pad.iter().all(|v| v.is_nan()), "padding written");
}

/// Every kernel name of the ABI is in every embedded code object's kernel table, and nothing
/// else is (the table itself is checked against the ELF symbols and metadata above).
#[test]
fn abi_kernel_names_are_embedded() {
    let names = rocm::kernel_names();
    for co in rocm::code_objects() {
        let embedded: Vec<&str> = co.kernels.iter().map(|k| k.name).collect();
        for n in &names {
            assert!(
                embedded.contains(&n.as_str()),
                "{}: kernel {n} not embedded",
                co.arch
            );
        }
        assert_eq!(embedded.len(), names.len(), "{}: {embedded:?}", co.arch);
    }
}
