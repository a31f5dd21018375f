//! Special inputs of the quantised ops, on any device and backend (shared by `tests/quant.rs`
//! and `tests/quant_cuda.rs`): rows from given values ([`quant_rows`]), inputs whose norm is
//! exact everywhere ([`check_constructed`]), strided views ([`check_views`]).

use super::quant_cases::{check_against_norm, draw_scale, quant_configs, quant_op};
use super::quant_checks::{
    check_exact, close_values, codes, codes_adjacent, f32s, replay, same_bits,
};
use super::reference::quantize;
use super::runner::tensor;
use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm_quant, rms_norm_quant, rms_norm_with, Backend, EpsMode, NormConfig,
    QuantConfig, Rounding,
};
use rand::Rng;

/// One backend's codes and scales, by row.
pub struct Rows {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub h: usize,
}

impl Rows {
    pub fn row(&self, r: usize) -> &[u8] {
        &self.codes[r * self.h..(r + 1) * self.h]
    }
}

/// `x` of shape `dims` from `vals` in `dt` on the CPU: both ops quantised with `backend` and
/// checked against the unquantised ops ([`check_against_norm`], a zero residual); returns the
/// plain op's codes and scales.
pub fn quant_rows(
    what: &str,
    vals: &[f32],
    dims: &[usize],
    dt: DType,
    quant: &QuantConfig,
    backend: Backend,
) -> Result<Rows> {
    let x = Tensor::from_vec(vals.to_vec(), dims, &Device::Cpu)?.to_dtype(dt)?;
    let cfg = NormConfig::new(1e-6).with_backend(backend);
    let what = format!("{what} {dt:?} {quant:?} backend {backend}");
    let (q, _) = check_against_norm(&what, &x, None, None, &cfg, quant)?;
    check_against_norm(&what, &x, Some(&x.zeros_like()?), None, &cfg, quant)?;
    Ok(Rows {
        codes: codes(&q.values)?,
        scales: f32s(&q.scales)?,
        h: dims[dims.len() - 1],
    })
}

/// Inputs whose norm every backend computes exactly, whatever its summation order: bf16 and
/// f16 rows of `±2` (`±1 + ±1` for the fused op), eps 0, `Rounding::BeforeWeight` (so `x / rms`
/// rounds to `±1` even from an approximate rsqrt), weights of the dtype spread over `2^-12` to
/// `2^13`: `y = ±w`. Checks that premise on the unquantised op, then every code and scale bit
/// for bit against the reference quantisation of `±w`, for dynamic scales, a drawn static one
/// and `2^-4` (which saturates the large weights; the small ones give e4m3 subnormals).
pub fn check_constructed(dev: &Device, backend: Backend, shapes: &[(usize, usize)]) -> Result<()> {
    let (mut rng, _) = super::rng();
    let sign = |rng: &mut rand::rngs::StdRng| if rng.gen() { 1.0 } else { -1.0 };
    for dt in [DType::BF16, DType::F16] {
        for &(rows, h) in shapes {
            let (n, dims) = (rows * h, [rows, h]);
            let signs: Vec<f64> = (0..n).map(|_| sign(&mut rng)).collect();
            let w: Vec<f64> = (0..h)
                .map(|_| {
                    sign(&mut rng) * (1.0 + rng.gen::<f64>()) * 2f64.powi(rng.gen_range(-12..13))
                })
                .collect();
            let w = quantize(&w, dt);
            let y: Vec<f32> = (0..n).map(|i| (signs[i] * w[i % h]) as f32).collect();
            let place = |v: &[f64], d: &[usize]| tensor(v, d, dt)?.to_device(dev);
            let x2 = place(&signs.iter().map(|s| 2.0 * s).collect::<Vec<_>>(), &dims)?;
            let x1 = place(&signs, &dims)?;
            let wt = place(&w, &[h])?;
            let cfg = NormConfig::new(0.0)
                .with_rounding(Rounding::BeforeWeight)
                .with_backend(backend);
            let what = format!("±2 rows {dt:?} {dims:?} backend {backend}");
            let premise = f32s(&rms_norm_with(&x2, Some(&wt), &cfg)?)?;
            assert!(
                premise == y,
                "{what}: the norm is not exactly ±w {}",
                replay()
            );
            let scale = 10f64.powf(rng.gen_range(-2.5..-0.5)) as f32;
            for quant in quant_configs(scale)
                .into_iter()
                .chain(quant_configs(0.0625))
            {
                let what = format!("{what} {quant:?}");
                let q = rms_norm_quant(&x2, Some(&wt), &cfg, &quant)?;
                check_exact(&what, &q, &quant, &dims, &y);
                let (q, sum) = fused_add_rms_norm_quant(&x1, &x1, Some(&wt), &cfg, &quant)?;
                check_exact(&format!("fused {what}"), &q, &quant, &dims, &y);
                assert!(same_bits(&sum, &x2)?, "fused {what}: sum {}", replay());
            }
        }
    }
    Ok(())
}

/// On `dev` with `backend`: the views of `views::VIEWS` give the bits their contiguous copies
/// give (both ops, every quantisation; not `exact`: codes within one step and scales to 1e-6,
/// for kernels whose misaligned views take a path that sums in another order; sums always bit
/// for bit); and, when `exact`, row ranges with narrowed last dims (`i((.., a..b, c..d))`),
/// transposed leading dims and a row step (with `ClampNorm`) through [`check_against_norm`].
pub fn check_views(dev: &Device, backend: Backend, exact: bool) -> Result<()> {
    let (mut rng, _) = super::rng();
    let cfg = NormConfig::new(1e-6).with_backend(backend);
    let copy = |t: &Tensor| t.contiguous()?.copy();
    for view in super::views::VIEWS {
        for dt in [DType::BF16, DType::F32] {
            let n = view.base.iter().product();
            let base = tensor(&super::randn(&mut rng, n, 1.0), view.base, dt)?.to_device(dev)?;
            let (x, r) = ((view.x)(&base)?, (view.r)(&base.sin()?)?);
            for quant in quant_configs(draw_scale(&mut rng)) {
                for r in [None, Some(&r)] {
                    let (a, sa) = quant_op(&x, r, None, &cfg, &quant)?;
                    let rc = r.map(copy).transpose()?;
                    let (c, sc) = quant_op(&copy(&x)?, rc.as_ref(), None, &cfg, &quant)?;
                    let what = format!("{} {dt:?} {quant:?} fused {}", view.name, r.is_some());
                    let (ca, cc) = (codes(&a.values)?, codes(&c.values)?);
                    if exact {
                        assert_eq!(ca, cc, "{what} {}", replay());
                        assert!(
                            same_bits(&a.scales, &c.scales)?,
                            "{what}: scales {}",
                            replay()
                        );
                    } else {
                        assert!(
                            codes_adjacent(quant.dtype(), &ca, &cc),
                            "{what}: codes {}",
                            replay()
                        );
                        assert!(
                            close_values(&a.scales, &c.scales, 1e-6)?,
                            "{what}: scales {}",
                            replay()
                        );
                    }
                    if let (Some(sa), Some(sc)) = (sa, sc) {
                        assert!(same_bits(&sa, &sc)?, "{what}: sum");
                    }
                }
            }
        }
    }
    if !exact {
        return Ok(());
    }
    let base = tensor(
        &super::randn(&mut rng, 5 * 12 * 48, 1.5),
        &[5, 12, 48],
        DType::BF16,
    )?;
    let base = base.to_device(dev)?;
    let views = [
        base.i((.., 2..9, 3..40))?,
        base.i((1..4, .., ..))?.transpose(0, 1)?,
        base.narrow(2, 1, 45)?.i((.., 3))?,
    ];
    for (k, x) in views.iter().enumerate() {
        let cfg = match k {
            2 => cfg.with_eps_mode(EpsMode::ClampNorm),
            _ => cfg,
        };
        for quant in quant_configs(draw_scale(&mut rng)) {
            let r = (x * 0.5)?;
            for r in [None, Some(&r)] {
                let what = format!("view {k} {:?} {backend} {quant:?}", x.dims());
                check_against_norm(&what, x, r, None, &cfg, &quant)?;
            }
        }
    }
    Ok(())
}
