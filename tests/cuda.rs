//! GPU tests of the CUDA kernels against an independent f64 reference written as plain loops.
//! Compiled only with feature `cuda`; every test prints "skipped: no CUDA device" and passes
//! when no device can be opened. Inputs are fresh random numbers each run (the seed is printed
//! on failure); output memory is poisoned with all-ones bytes (NaN in every float format)
//! before each launch, so an element the kernel forgot to write shows up as NaN.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm_with, rms_norm, rms_norm_with, Backend, NormConfig, Rounding, WeightMode,
};
use rand::{Rng, SeedableRng};

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

macro_rules! gpu_or_skip {
    () => {
        match gpu() {
            Some(d) => d,
            None => return Ok(()),
        }
    };
}

fn rng() -> (rand::rngs::StdRng, u64) {
    let seed: u64 = rand::thread_rng().gen();
    (rand::rngs::StdRng::seed_from_u64(seed), seed)
}

/// Fills and frees `bytes` of device memory with all-ones bytes, so Candle's stream-ordered pool
/// hands the same poisoned memory to the next allocation of that size.
fn poison(dev: &Device, bytes: usize) -> Result<()> {
    let t = Tensor::full(u32::MAX, bytes.div_ceil(4), dev)?;
    drop(t);
    Ok(())
}

/// Rounds an f64 to `dt` and back (what storing in `dt` does).
fn round_to(dt: DType, v: f64) -> f64 {
    match dt {
        DType::F32 => v as f32 as f64,
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// Relative tolerance per element for an output of dtype `dt` (output rounding, and with
/// rounding before the weight a second rounding, dominate for 16-bit types).
fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 2e-5,
        DType::F16 => 2.0 * 2f64.powi(-10),
        DType::BF16 => 2.0 * 2f64.powi(-7),
        _ => 1e-12,
    }
}

#[derive(Debug, Clone, Copy)]
struct Opts {
    eps: f64,
    offset_one: bool,
    round_before: bool,
}

/// The f64 reference: `(normed, sum)` for rows of `hidden` (x, r already rounded to their
/// dtype, given here in f64).
fn reference(
    dt: DType,
    x: &[f64],
    r: Option<&[f64]>,
    w: Option<&[f64]>,
    hidden: usize,
    o: Opts,
) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len().checked_div(hidden).unwrap_or(0);
    let mut normed = vec![0f64; x.len()];
    let mut sum = vec![0f64; if r.is_some() { x.len() } else { 0 }];
    // eps reaches the f32 kernels as f32
    let eps = if dt == DType::F64 {
        o.eps
    } else {
        o.eps as f32 as f64
    };
    for row in 0..rows {
        let s: Vec<f64> = (0..hidden)
            .map(|i| {
                let j = row * hidden + i;
                x[j] + r.map_or(0.0, |r| r[j])
            })
            .collect();
        let mut ss = 0f64;
        for v in &s {
            ss += v * v;
        }
        let scale = 1.0 / (ss / hidden as f64 + eps).sqrt();
        for i in 0..hidden {
            let j = row * hidden + i;
            if r.is_some() {
                sum[j] = round_to(dt, s[i]);
            }
            let mut n = s[i] * scale;
            if o.round_before {
                n = round_to(dt, n);
            }
            let wi = w.map_or(1.0, |w| if o.offset_one { 1.0 + w[i] } else { w[i] });
            normed[j] = n * wi;
        }
    }
    (normed, sum)
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
}

/// Element-wise check: NaN exactly where the reference is NaN, otherwise within `tol`; plus
/// the relative L2 bound of DESIGN.md over the finite elements.
fn check(what: &str, dt: DType, got: &[f64], want: &[f64], seed: u64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let t = tol(dt);
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        if r.is_nan() {
            assert!(
                g.is_nan(),
                "{what} [seed {seed}]: element {i}: want NaN, got {g}"
            );
            continue;
        }
        // The reference may exceed the dtype's range only in cases built to do so.
        let rr = round_to(dt, r);
        if rr.is_infinite() {
            assert_eq!(g, rr, "{what} [seed {seed}]: element {i}");
            continue;
        }
        assert!(
            (g - r).abs() <= t * r.abs() + 1e-300 || g == rr,
            "{what} [seed {seed}]: element {i}: got {g}, want {r} (tol {t})"
        );
        num += (g - r) * (g - r);
        den += r * r;
    }
    if den > 0.0 {
        let rel = (num / den).sqrt();
        let bound = match dt {
            DType::F32 => 1e-5,
            DType::F16 => 2e-3,
            DType::BF16 => 1e-2,
            _ => 1e-12,
        };
        assert!(
            rel <= bound,
            "{what} [seed {seed}]: relative L2 {rel} > {bound}"
        );
    }
}

fn weight_dtypes(dt: DType) -> Vec<Option<DType>> {
    let other = match dt {
        DType::F16 => DType::BF16,
        DType::BF16 => DType::F16,
        DType::F32 => DType::BF16,
        _ => DType::F32,
    };
    vec![None, Some(dt), Some(DType::F32), Some(other)]
}

/// Random host data of `n` values in [-2, 2) times `scale`, as a tensor of `dt` on `dev`, and
/// the same values (after rounding to `dt`) in f64.
fn rand_tensor(
    rng: &mut impl Rng,
    shape: &[usize],
    scale: f32,
    dt: DType,
    dev: &Device,
) -> Result<(Tensor, Vec<f64>)> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-2f32..2f32) * scale).collect();
    let host = Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dt)?;
    let f = host.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok((host.to_device(dev)?, f))
}

/// Runs one case on the GPU (plain and fused) and checks it against the reference.
#[allow(clippy::too_many_arguments)]
fn run_case(
    dev: &Device,
    rng: &mut impl Rng,
    seed: u64,
    dt: DType,
    wdt: Option<DType>,
    rows: usize,
    hidden: usize,
    fused: bool,
    o: Opts,
) -> Result<()> {
    let (x, xf) = rand_tensor(rng, &[rows, hidden], 1.0, dt, dev)?;
    let (r, rf) = rand_tensor(rng, &[rows, hidden], 1.0, dt, dev)?;
    let w = match wdt {
        Some(wd) => {
            let (w, wf) = rand_tensor(rng, &[hidden], 1.0, wd, dev)?;
            Some((w, wf))
        }
        None => None,
    };
    let cfg = NormConfig::new(o.eps)
        .with_weight_mode(if o.offset_one {
            WeightMode::OffsetOne
        } else {
            WeightMode::Scale
        })
        .with_rounding(if o.round_before {
            Rounding::BeforeWeight
        } else {
            Rounding::AtEnd
        })
        .with_backend(Backend::Cuda);
    let what = format!("{dt:?} w={wdt:?} {rows}x{hidden} fused={fused} {o:?}");
    let (want_n, want_s) = reference(
        dt,
        &xf,
        fused.then_some(&rf[..]),
        w.as_ref().map(|w| &w.1[..]),
        hidden,
        o,
    );
    poison(
        dev,
        rows * hidden * dt.size_in_bytes() * if fused { 2 } else { 1 },
    )?;
    if fused {
        let (n, s) = fused_add_rms_norm_with(&x, &r, w.as_ref().map(|w| &w.0), &cfg)?;
        assert_eq!((n.dtype(), s.dtype()), (dt, dt));
        check(&format!("{what} normed"), dt, &to_f64(&n)?, &want_n, seed);
        check(&format!("{what} sum"), dt, &to_f64(&s)?, &want_s, seed);
    } else {
        let n = rms_norm_with(&x, w.as_ref().map(|w| &w.0), &cfg)?;
        assert_eq!(n.dtype(), dt);
        check(&what, dt, &to_f64(&n)?, &want_n, seed);
    }
    Ok(())
}

const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];
const PLAIN: Opts = Opts {
    eps: 1e-6,
    offset_one: false,
    round_before: false,
};

/// Every dtype and weight dtype, plain and fused, over hidden sizes that reach every code path:
/// several rows per block (1..1024), one row per block with 1 or 2 chunks a lane, the two-read
/// loop (long rows), scalar rows (odd sizes) and vector rows with a scalar tail.
#[test]
fn every_dtype_and_hidden() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    let hiddens = [
        1usize, 2, 3, 7, 8, 9, 31, 64, 100, 127, 128, 256, 500, 512, 1000, 1024, 1536, 2048, 4097,
        5120, 8192, 16384, 20000, 40000,
    ];
    for dt in DTYPES {
        for wdt in weight_dtypes(dt) {
            for fused in [false, true] {
                for &h in &hiddens {
                    let rows = if h >= 8192 { 3 } else { 37 };
                    run_case(&dev, &mut rng, seed, dt, wdt, rows, h, fused, PLAIN)?;
                }
            }
        }
    }
    Ok(())
}

/// Weight modes, rounding before the weight, eps 0 and large eps.
#[test]
fn options() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    for dt in DTYPES {
        for offset_one in [false, true] {
            for round_before in [false, true] {
                for eps in [0.0, 1e-5, 0.5] {
                    let o = Opts {
                        eps,
                        offset_one,
                        round_before,
                    };
                    for &h in &[96usize, 1536, 5121] {
                        for fused in [false, true] {
                            run_case(&dev, &mut rng, seed, dt, Some(dt), 11, h, fused, o)?;
                            run_case(&dev, &mut rng, seed, dt, Some(DType::F32), 11, h, fused, o)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A small set covering every kernel and path, cheap enough for compute-sanitizer.
#[test]
fn sanitizer_subset() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    for dt in DTYPES {
        for fused in [false, true] {
            for &h in &[1usize, 7, 128, 130, 1536, 5120, 20000] {
                let wdts = [Some(dt), Some(DType::F32)];
                for wdt in wdts {
                    run_case(&dev, &mut rng, seed, dt, wdt, 5, h, fused, PLAIN)?;
                }
            }
        }
    }
    // Blocks that take several rows (one after another, and several teams at a time).
    for fused in [false, true] {
        run_case(
            &dev,
            &mut rng,
            seed,
            DType::BF16,
            Some(DType::BF16),
            3000,
            1536,
            fused,
            PLAIN,
        )?;
        run_case(
            &dev,
            &mut rng,
            seed,
            DType::BF16,
            Some(DType::F32),
            40000,
            64,
            fused,
            PLAIN,
        )?;
    }
    // Views and the rescue path too.
    strided_views_on(&dev, &mut rng, seed, &[DType::BF16, DType::F32])?;
    extremes_on(&dev)?;
    Ok(())
}

/// Zero and one row.
#[test]
fn zero_and_one_row() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    for dt in DTYPES {
        for fused in [false, true] {
            run_case(&dev, &mut rng, seed, dt, Some(dt), 1, 4096, fused, PLAIN)?;
            run_case(&dev, &mut rng, seed, dt, Some(dt), 1, 64, fused, PLAIN)?;
        }
        let x = Tensor::zeros((0, 64), dt, &dev)?;
        let w = Tensor::ones(64, dt, &dev)?;
        assert_eq!(rms_norm(&x, &w, 1e-6)?.dims(), &[0, 64]);
        let (n, s) = candle_rmsnorm::fused_add_rms_norm(&x, &x, &w, 1e-6)?;
        assert_eq!((n.dims(), s.dims()), (&[0usize, 64][..], &[0usize, 64][..]));
    }
    Ok(())
}

/// The reference on a host copy of `t` (a view), normalised with a weight of ones.
fn check_view(what: &str, t: &Tensor, got: &Tensor, seed: u64) -> Result<()> {
    let dt = t.dtype();
    let hidden = *t.dims().last().unwrap();
    let xf = to_f64(&t.contiguous()?)?;
    let (want, _) = reference(dt, &xf, None, None, hidden, PLAIN);
    check(what, dt, &to_f64(got)?, &want, seed);
    Ok(())
}

fn strided_views_on(dev: &Device, rng: &mut impl Rng, seed: u64, dts: &[DType]) -> Result<()> {
    let cfg = NormConfig::new(1e-6).with_backend(Backend::Cuda);
    for &dt in dts {
        let (base, _) = rand_tensor(rng, &[4, 9, 136], 1.0, dt, dev)?;
        let views = [
            ("last dim narrowed, vector + tail", base.narrow(2, 0, 130)?),
            ("last dim narrowed, misaligned", base.narrow(2, 1, 128)?),
            ("rows narrowed", base.narrow(0, 1, 2)?),
            ("row step", base.narrow(2, 8, 64)?),
            ("transposed (copied)", base.transpose(1, 2)?),
        ];
        for (name, v) in views {
            poison(dev, v.elem_count() * dt.size_in_bytes())?;
            let got = rms_norm_with(&v, None, &cfg)?;
            check_view(&format!("{dt:?} {name}"), &v, &got, seed)?;
        }
        // Fused with strided operands.
        let (b2, _) = rand_tensor(rng, &[4, 9, 136], 1.0, dt, dev)?;
        let x = base.narrow(2, 0, 128)?;
        let r = b2.narrow(2, 8, 128)?;
        poison(dev, 2 * x.elem_count() * dt.size_in_bytes())?;
        let (n, s) = fused_add_rms_norm_with(&x, &r, None, &cfg)?;
        let sum = (x.to_dtype(DType::F64)? + r.to_dtype(DType::F64)?)?;
        let hidden = 128;
        let (want, _) = reference(dt, &to_f64(&sum)?, None, None, hidden, PLAIN);
        check(
            &format!("{dt:?} fused strided normed"),
            dt,
            &to_f64(&n)?,
            &want,
            seed,
        );
        let want_s: Vec<f64> = to_f64(&sum)?.iter().map(|&v| round_to(dt, v)).collect();
        check(
            &format!("{dt:?} fused strided sum"),
            dt,
            &to_f64(&s)?,
            &want_s,
            seed,
        );
    }
    Ok(())
}

#[test]
fn strided_views() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    strided_views_on(&dev, &mut rng, seed, &DTYPES)
}

/// Huge and tiny magnitudes (the f64 rescue), NaN and infinity confined to their rows.
fn extremes_on(dev: &Device) -> Result<()> {
    let cfg0 = NormConfig::new(0.0).with_backend(Backend::Cuda);
    for &h in &[64usize, 1536, 20000] {
        // f32: rows of 1e30 (sum of squares overflows), 1e-30 with eps 0 (mean below 1e-30),
        // a NaN row, an inf row, and ordinary rows between them.
        let mut v = Vec::new();
        let kinds = [1e30f32, 1.0, 1e-30, f32::NAN, 1.0, f32::INFINITY, 3e-3, 1.0];
        for (k, &m) in kinds.iter().enumerate() {
            for i in 0..h {
                let s = ((i * 7 + k) % 13) as f32 / 6.5 - 1.0 + 0.05;
                v.push(if m.is_nan() && i != 3 {
                    s
                } else if m.is_nan() {
                    f32::NAN
                } else if m.is_infinite() && i == 5 {
                    f32::INFINITY
                } else if m.is_infinite() {
                    s
                } else {
                    s * m
                });
            }
        }
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let host = Tensor::from_vec(v.clone(), (kinds.len(), h), &Device::Cpu)?.to_dtype(dt)?;
            let x = host.to_device(dev)?;
            let xf = to_f64(&host)?;
            poison(dev, x.elem_count() * dt.size_in_bytes())?;
            let got = to_f64(&rms_norm_with(&x, None, &cfg0)?)?;
            let (mut want, _) = reference(dt, &xf, None, None, h, Opts { eps: 0.0, ..PLAIN });
            // The inf row: inf * 0 is NaN, the other elements 0 (as on the CPU path).
            for i in 0..h {
                let j = 5 * h + i;
                want[j] = if xf[j].is_infinite() { f64::NAN } else { 0.0 };
            }
            check(&format!("extremes {dt:?} hidden {h}"), dt, &got, &want, 0);
            // The NaN row is all NaN, and only it.
            assert!(got[3 * h..4 * h].iter().all(|v| v.is_nan()));
            assert!(got[4 * h..5 * h].iter().all(|v| v.is_finite()));
        }
        // f16: values near 6e4, whose squares overflow f16 but not f32.
        let x16: Vec<f32> = (0..4 * h)
            .map(|i| 60000.0 - (i % 17) as f32 * 100.0)
            .collect();
        let host = Tensor::from_vec(x16, (4, h), &Device::Cpu)?.to_dtype(DType::F16)?;
        let got = to_f64(&rms_norm_with(&host.to_device(dev)?, None, &cfg0)?)?;
        let (want, _) = reference(
            DType::F16,
            &to_f64(&host)?,
            None,
            None,
            h,
            Opts { eps: 0.0, ..PLAIN },
        );
        check("f16 near 6e4", DType::F16, &got, &want, 0);
    }
    Ok(())
}

#[test]
fn extremes() -> Result<()> {
    let dev = gpu_or_skip!();
    extremes_on(&dev)
}

/// Same inputs, same bits, run after run.
#[test]
fn bitwise_deterministic() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, _) = rng();
    for dt in [DType::BF16, DType::F32] {
        for &h in &[128usize, 5120, 40000] {
            let (x, _) = rand_tensor(&mut rng, &[64, h], 1.0, dt, &dev)?;
            let (r, _) = rand_tensor(&mut rng, &[64, h], 1.0, dt, &dev)?;
            let (w, _) = rand_tensor(&mut rng, &[h], 1.0, dt, &dev)?;
            let cfg = NormConfig::new(1e-6);
            let bits = |t: &Tensor| -> Result<Vec<u8>> {
                let t = t.to_device(&Device::Cpu)?;
                Ok(match dt {
                    DType::BF16 => t
                        .flatten_all()?
                        .to_vec1::<half::bf16>()?
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                    _ => t
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                })
            };
            let a = fused_add_rms_norm_with(&x, &r, Some(&w), &cfg)?;
            let b = fused_add_rms_norm_with(&x, &r, Some(&w), &cfg)?;
            assert_eq!(bits(&a.0)?, bits(&b.0)?);
            assert_eq!(bits(&a.1)?, bits(&b.1)?);
            let a = rms_norm(&x, &w, 1e-6)?;
            let b = rms_norm(&x, &w, 1e-6)?;
            assert_eq!(bits(&a)?, bits(&b)?);
        }
    }
    Ok(())
}

/// `Backend::Auto` runs CUDA tensors on the CUDA kernels and agrees with candle_nn.
#[test]
fn auto_backend_matches_candle_nn() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let (x, _) = rand_tensor(&mut rng, &[33, 1536], 1.0, dt, &dev)?;
        let (w, _) = rand_tensor(&mut rng, &[1536], 1.0, dt, &dev)?;
        let ours = rms_norm(&x, &w, 1e-6)?;
        assert!(ours.device().is_cuda());
        let theirs = candle_nn::ops::rms_norm(&x, &w, 1e-6)?;
        check(
            &format!("vs candle_nn {dt:?}"),
            dt,
            &to_f64(&ours)?,
            &to_f64(&theirs)?,
            seed,
        );
    }
    Ok(())
}

/// The poisoning really reaches the next allocation (else the other tests prove less).
#[test]
fn poisoning_reaches_outputs() -> Result<()> {
    let dev = gpu_or_skip!();
    let n = 1 << 20;
    poison(&dev, n * 4)?;
    let Device::Cuda(cd) = &dev else {
        unreachable!()
    };
    // SAFETY: the slice is only read back, to see what the pool handed out.
    let s = unsafe { cd.alloc::<u32>(n)? };
    let host = cd.clone_dtoh(&s)?;
    let poisoned = host.iter().filter(|&&v| v == u32::MAX).count();
    println!("poisoned elements in a fresh allocation: {poisoned} of {n}");
    assert_eq!(poisoned, n, "the pool did not reuse the poisoned memory");
    Ok(())
}

/// A tensor of more than 2^31 elements: the rows around the 2^31 boundary and the last row.
#[test]
fn over_two_to_the_31_elements() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    let hidden = 4096usize;
    let rows = (1usize << 31) / hidden + 16; // 2^31 + 65536 elements
    let dt = DType::BF16;
    let x = Tensor::randn(0f32, 1f32, (rows, hidden), &dev)?.to_dtype(dt)?;
    let (w, wf) = rand_tensor(&mut rng, &[hidden], 1.0, dt, &dev)?;
    poison(&dev, rows * hidden * 2)?;
    let y = rms_norm(&x, &w, 1e-6)?;
    let r = (1usize << 31) / hidden;
    for &row in &[0usize, r - 1, r, r + 1, rows - 1] {
        let xr = x.narrow(0, row, 1)?;
        let xf = to_f64(&xr)?;
        let (want, _) = reference(dt, &xf, None, Some(&wf), hidden, PLAIN);
        check(
            &format!("row {row} of {rows}x{hidden}"),
            dt,
            &to_f64(&y.narrow(0, row, 1)?)?,
            &want,
            seed,
        );
    }
    // Fused too, on the same sizes.
    let r2 = Tensor::randn(0f32, 1f32, (rows, hidden), &dev)?.to_dtype(dt)?;
    let (n, s) = candle_rmsnorm::fused_add_rms_norm(&x, &r2, &w, 1e-6)?;
    for &row in &[r, rows - 1] {
        let sum = (x.narrow(0, row, 1)?.to_dtype(DType::F64)?
            + r2.narrow(0, row, 1)?.to_dtype(DType::F64)?)?;
        let sf = to_f64(&sum)?;
        let (want, _) = reference(dt, &sf, None, Some(&wf), hidden, PLAIN);
        check(
            &format!("fused row {row}"),
            dt,
            &to_f64(&n.narrow(0, row, 1)?)?,
            &want,
            seed,
        );
        let want_s: Vec<f64> = sf.iter().map(|&v| round_to(dt, v)).collect();
        check(
            &format!("fused sum row {row}"),
            dt,
            &to_f64(&s.narrow(0, row, 1)?)?,
            &want_s,
            seed,
        );
    }
    Ok(())
}

/// Many rows per block: a block's rows one after another with the next row prefetched, and for
/// small hidden several teams at a time, many times (the grid is one wave of blocks, each with
/// an equal share of the rows).
#[test]
fn many_rows_per_block() -> Result<()> {
    let dev = gpu_or_skip!();
    let (mut rng, seed) = rng();
    for &(rows, hidden) in &[
        (300_000usize, 128usize),
        (100_003, 64),
        (20_011, 1536),
        (6_007, 5120),
    ] {
        for dt in [DType::BF16, DType::F32] {
            for fused in [false, true] {
                run_case(
                    &dev,
                    &mut rng,
                    seed,
                    dt,
                    Some(dt),
                    rows,
                    hidden,
                    fused,
                    PLAIN,
                )?;
            }
        }
    }
    Ok(())
}
