//! The ROCm path (feature `rocm`).
//!
//! Runs everywhere: the embedded code objects (one per architecture, every kernel exported, no
//! scratch, no spills, register counts printed), the HIP runtime loading for real, `Auto`
//! matching the CPU path bit for bit, and `Rocm` failing cleanly without a device.
//! Runs only with an AMD GPU (and says "skipped" otherwise): the numerics suite through the
//! host-staged ops, the device-resident API and the raw launchers.
#![cfg(feature = "rocm")]

#[path = "../build/amdgpu_elf.rs"]
mod amdgpu_elf;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_rmsnorm::rocm::{self, RocmDevice, RocmTensor};
use candle_rmsnorm::{Backend, NormConfig, Rounding, WeightMode};
use rand::{Rng, SeedableRng};

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
    assert_eq!(built, expected_archs(), "compiler: {}", rocm::compiler());
    let names = rocm::kernel_names();
    println!("compiler: {}", rocm::compiler());
    println!(
        "{:<8} {:<36} {:>5} {:>5} {:>5} {:>6} {:>5}",
        "arch", "kernel", "vgpr", "sgpr", "agpr", "lds", "wave"
    );
    for co in objects {
        assert!(!co.bytes.is_empty(), "{} is empty", co.arch);
        let syms = amdgpu_elf::dynamic_symbols(co.bytes).expect("ELF symbols");
        let meta = amdgpu_elf::code_object_meta(co.bytes).expect("AMDGPU metadata");
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
            // One by-value NormArgs: the ABI of hip/norm_args.h and src/abi.rs.
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

fn gpu() -> Option<RocmDevice> {
    match rocm::device_count() {
        Ok(n) if n > 0 => match rocm::default_device() {
            Ok(d) => Some(d),
            Err(e) => panic!("an AMD GPU is present but unusable: {e}"),
        },
        _ => None,
    }
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

fn bits(t: &Tensor) -> Vec<u64> {
    let t = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| u64::from(x.to_bits()))
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()
            .unwrap()
            .iter()
            .map(|x| u64::from(x.to_bits()))
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()
            .unwrap()
            .iter()
            .map(|x| u64::from(x.to_bits()))
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// With feature `rocm`, `Auto` keeps host tensors on the CPU path: results equal `Cpu` bit for bit.
#[test]
fn auto_matches_cpu_bitwise() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
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

/// Round an f64 to the dtype and back (round to nearest even).
fn round_to(v: f64, dt: DType) -> f64 {
    match dt {
        DType::F32 => f64::from(v as f32),
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// Unit in the last place of the dtype at |v| (for the per-element bound).
fn ulp(v: f64, dt: DType) -> f64 {
    let mant_bits = match dt {
        DType::F32 => 23,
        DType::F16 => 10,
        DType::BF16 => 7,
        _ => 52,
    };
    let min_exp = match dt {
        DType::F16 => -14,
        DType::F32 | DType::BF16 => -126,
        _ => -1022,
    };
    let e = if v == 0.0 {
        min_exp
    } else {
        (v.abs().log2().floor() as i32).max(min_exp)
    };
    2f64.powi(e - mant_bits)
}

struct Case {
    x: Vec<f64>,
    r: Option<Vec<f64>>,
    w: Option<Vec<f64>>,
    rows: usize,
    hidden: usize,
    dt: DType,
    eps: f64,
    mode: WeightMode,
    rounding: Rounding,
}

/// The f64 reference, as plain loops: (normed, sum).
#[allow(clippy::needless_range_loop)]
fn reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let mut normed = vec![0.0; c.rows * c.hidden];
    let mut sums = vec![0.0; c.rows * c.hidden];
    for row in 0..c.rows {
        let mut v = vec![0.0f64; c.hidden];
        for i in 0..c.hidden {
            let k = row * c.hidden + i;
            v[i] = c.x[k];
            if let Some(r) = &c.r {
                // x + residual in f32 (f64 for f64), as the kernels compute it.
                v[i] = if c.dt == DType::F64 {
                    c.x[k] + r[k]
                } else {
                    f64::from((c.x[k] as f32) + (r[k] as f32))
                };
                sums[k] = round_to(v[i], c.dt);
            }
        }
        let mut ss = 0.0;
        for &a in &v {
            ss += a * a;
        }
        let inv = 1.0 / (ss / c.hidden as f64 + c.eps).sqrt();
        for i in 0..c.hidden {
            let mut n = v[i] * inv;
            if c.rounding == Rounding::BeforeWeight {
                n = round_to(n, c.dt);
            }
            let w = match (&c.w, c.mode) {
                (None, _) => 1.0,
                (Some(w), WeightMode::Scale) => w[i],
                (Some(w), WeightMode::OffsetOne) => f64::from(1.0f32 + w[i] as f32),
            };
            normed[row * c.hidden + i] = round_to(n * w, c.dt);
        }
    }
    (normed, sums)
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn check(what: &str, dt: DType, got: &[f64], want: &[f64], hidden: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = match dt {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        _ => 1e-12,
    };
    let (mut num, mut den) = (0.0, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(
                g.is_nan(),
                "{what}: element {i} (row {}) should be NaN, got {g}",
                i / hidden.max(1)
            );
            continue;
        }
        assert!(
            g.is_finite() || !w.is_finite(),
            "{what}: element {i} = {g}, want {w}"
        );
        // A few ulps for the 16-bit types; f32 also carries the f32 sum-of-squares error.
        let ulps = if dt == DType::F32 { 64.0 } else { 4.0 };
        let bound = ulps * ulp(w, dt)
            + if dt == DType::F64 {
                1e-12 * w.abs()
            } else {
                0.0
            };
        assert!(
            (g - w).abs() <= bound,
            "{what}: element {i}: got {g}, want {w} (bound {bound})"
        );
        num += (g - w) * (g - w);
        den += w * w;
    }
    if den > 0.0 {
        let rel = (num / den).sqrt();
        assert!(rel <= tol, "{what}: relative L2 {rel} > {tol}");
    }
}

fn case_tensors(c: &Case) -> (Tensor, Option<Tensor>, Option<Tensor>) {
    let t = |v: &Vec<f64>, shape: &[usize], dt| {
        Tensor::from_vec(v.clone(), shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap()
    };
    let x = t(&c.x, &[c.rows, c.hidden], c.dt);
    let r = c.r.as_ref().map(|r| t(r, &[c.rows, c.hidden], c.dt));
    let w = c.w.as_ref().map(|w| {
        t(
            w,
            &[c.hidden],
            if c.dt == DType::F64 {
                DType::F64
            } else {
                DType::F32
            },
        )
    });
    (x, r, w)
}

/// Inputs already rounded to the dtype, so the reference sees what the kernel sees.
fn make_case(
    rng: &mut rand::rngs::StdRng,
    rows: usize,
    hidden: usize,
    dt: DType,
    fused: bool,
    weighted: bool,
    scale: f64,
) -> Case {
    let gen = |rng: &mut rand::rngs::StdRng, n: usize, s: f64| -> Vec<f64> {
        (0..n)
            .map(|_| round_to(rng.gen_range(-1.0..1.0) * s, dt))
            .collect()
    };
    let x = gen(rng, rows * hidden, scale);
    let r = fused.then(|| gen(rng, rows * hidden, scale));
    let w = weighted.then(|| {
        (0..hidden)
            .map(|_| f64::from(rng.gen_range(-2.0f32..2.0)))
            .collect()
    });
    Case {
        x,
        r,
        w,
        rows,
        hidden,
        dt,
        eps: 1e-6,
        mode: WeightMode::Scale,
        rounding: Rounding::AtEnd,
    }
}

fn run_host(c: &Case) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
    let cfg = NormConfig::new(c.eps)
        .with_weight_mode(c.mode)
        .with_rounding(c.rounding)
        .with_backend(Backend::Rocm);
    let (x, r, w) = case_tensors(c);
    Ok(match r {
        Some(r) => {
            let (n, s) = candle_rmsnorm::fused_add_rms_norm_with(&x, &r, w.as_ref(), &cfg)?;
            (to_f64(&n), Some(to_f64(&s)))
        }
        None => (
            to_f64(&candle_rmsnorm::rms_norm_with(&x, w.as_ref(), &cfg)?),
            None,
        ),
    })
}

fn run_device(dev: &RocmDevice, c: &Case) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
    let cfg = NormConfig::new(c.eps)
        .with_weight_mode(c.mode)
        .with_rounding(c.rounding);
    let (x, r, w) = case_tensors(c);
    let stream = dev.stream()?;
    let xd = RocmTensor::from_tensor(dev, &x)?;
    let wd = w
        .as_ref()
        .map(|w| RocmTensor::from_tensor(dev, w))
        .transpose()?;
    Ok(match r {
        Some(r) => {
            let rd = RocmTensor::from_tensor(dev, &r)?;
            let (n, s) = rocm::fused_add_rms_norm(&xd, &rd, wd.as_ref(), &cfg, stream)?;
            (to_f64(&n.to_tensor()?), Some(to_f64(&s.to_tensor()?)))
        }
        None => (
            to_f64(&rocm::rms_norm(&xd, wd.as_ref(), &cfg, stream)?.to_tensor()?),
            None,
        ),
    })
}

#[test]
fn gpu_numerics() {
    let Some(dev) = gpu() else {
        return skipped("gpu_numerics");
    };
    println!(
        "device {} {} ({}, {} CUs), code object {}",
        dev.ordinal(),
        dev.name(),
        dev.gcn_arch_name(),
        dev.compute_units(),
        dev.code_object().arch
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for dt in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for &(rows, hidden) in &[
            (0usize, 64usize),
            (1, 1),
            (3, 7),
            (17, 64),
            (9, 128),
            (5, 255),
            (4, 257),
            (3, 1536),
            (2, 5120),
            (2, 8191),
            (1, 20000),
        ] {
            for fused in [false, true] {
                for weighted in [false, true] {
                    for (mode, rounding) in [
                        (WeightMode::Scale, Rounding::AtEnd),
                        (WeightMode::OffsetOne, Rounding::BeforeWeight),
                    ] {
                        let mut c = make_case(&mut rng, rows, hidden, dt, fused, weighted, 4.0);
                        c.mode = mode;
                        c.rounding = rounding;
                        let (want, want_sum) = reference(&c);
                        let what = format!("{dt:?} {rows}x{hidden} fused={fused} weight={weighted} {mode:?} {rounding:?}");
                        for (how, (got, got_sum)) in [
                            ("host", run_host(&c).unwrap()),
                            ("device", run_device(&dev, &c).unwrap()),
                        ] {
                            check(&format!("{how} {what}"), dt, &got, &want, hidden);
                            if let Some(s) = got_sum {
                                check(&format!("{how} sum {what}"), dt, &s, &want_sum, hidden);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gpu_nasty_values_and_views() {
    let Some(dev) = gpu() else {
        return skipped("gpu_nasty_values_and_views");
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    // Huge magnitudes (f32 sum of squares overflows; f16 squares overflow) and a NaN row.
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let scale = match dt {
            DType::F16 => 6.0e4,
            _ => 1.0e30,
        };
        let mut c = make_case(&mut rng, 4, 1000, dt, false, true, scale);
        c.x[2 * 1000 + 17] = f64::NAN;
        let (want, _) = reference(&c);
        let (got, _) = run_host(&c).unwrap();
        check(&format!("huge {dt:?}"), dt, &got, &want, 1000);
        let (got, _) = run_device(&dev, &c).unwrap();
        check(&format!("huge device {dt:?}"), dt, &got, &want, 1000);
    }
    // Strided views: narrowed columns, every other row, an offset start.
    let base = rand_tensor(&mut rng, &[10, 40], DType::BF16, 2.0);
    let w = rand_tensor(&mut rng, &[33], DType::BF16, 1.0);
    let view = base.narrow(1, 3, 33).unwrap().i((1..9, ..)).unwrap();
    let cfg = NormConfig::new(1e-5);
    let got =
        candle_rmsnorm::rms_norm_with(&view, Some(&w), &cfg.with_backend(Backend::Rocm)).unwrap();
    let cpu = candle_rmsnorm::rms_norm_with(
        &view.contiguous().unwrap(),
        Some(&w),
        &cfg.with_backend(Backend::Cpu),
    )
    .unwrap();
    let c = Case {
        x: to_f64(&view),
        r: None,
        w: Some(to_f64(&w)),
        rows: 8,
        hidden: 33,
        dt: DType::BF16,
        eps: 1e-5,
        mode: WeightMode::Scale,
        rounding: Rounding::AtEnd,
    };
    let (want, _) = reference(&c);
    check("strided view", DType::BF16, &to_f64(&got), &want, 33);
    check("cpu strided view", DType::BF16, &to_f64(&cpu), &want, 33);
}

#[test]
fn gpu_raw_launch_poisoned_and_deterministic() {
    let Some(dev) = gpu() else {
        return skipped("gpu_raw_launch_poisoned_and_deterministic");
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
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
    let got = outs[0].narrow(1, 0, hidden).unwrap();
    let c = Case {
        x: to_f64(&x.narrow(1, 0, hidden).unwrap()),
        r: None,
        w: Some(to_f64(&w)),
        rows,
        hidden,
        dt: DType::BF16,
        eps: 1e-6,
        mode: WeightMode::Scale,
        rounding: Rounding::AtEnd,
    };
    let (want, _) = reference(&c);
    check("raw", DType::BF16, &to_f64(&got), &want, hidden);
    // The padding columns were not written.
    let pad = to_f64(&outs[0].narrow(1, hidden, stride - hidden).unwrap());
    assert!(pad.iter().all(|v| v.is_nan()), "padding written");
}
