//! The quantised ops' cases and how they run (shared by `tests/quant.rs` and
//! `tests/quant_cuda.rs`): [`QCase`], a case of the norm matrix (`cases::Case`) with a
//! quantisation; [`run_qcase`], both ops through the public API on a device and backend,
//! checked with `quant_checks` against the unquantised op of the same backend and the f64
//! reference.

use super::cases::{matrix, Case, Group, Inputs};
use super::compare::{check, Quantity};
use super::quant_checks::{check_exact, check_within, f32s, replay, same_bits};
use super::reference::{quantize, reference};
use super::runner::{tensor, values};
use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm_quant, fused_add_rms_norm_with, rms_norm_quant, rms_norm_with, Backend,
    NormConfig, QuantConfig, QuantDType, Quantized,
};
use rand::Rng;

/// A case of the norm matrix with a quantisation; `spread` scales the elements of `x` by
/// powers of two down to `2^-19` (so rows hold tiny values next to large ones: e4m3
/// subnormals, i8 zeros).
#[derive(Debug, Clone)]
pub struct QCase {
    pub case: Case,
    pub quant: QuantConfig,
    pub spread: bool,
}

impl QCase {
    pub fn new(case: Case, quant: QuantConfig) -> Self {
        Self {
            case,
            quant,
            spread: false,
        }
    }

    pub fn spread(self) -> Self {
        Self {
            spread: true,
            ..self
        }
    }

    pub fn describe(&self) -> String {
        let spread = if self.spread { " spread" } else { "" };
        format!("{}{spread} {:?}", self.case.describe(), self.quant)
    }

    /// The case's inputs (from the test's seed and the case id), spread if asked.
    pub fn inputs(&self) -> Inputs {
        let mut inp = self.case.inputs();
        if self.spread {
            let k = |i: usize| -(((i.wrapping_mul(0x9e37_79b9) >> 7) % 20) as i32);
            let x = inp.x.iter().enumerate().map(|(i, v)| v * 2f64.powi(k(i)));
            inp.x = quantize(&x.collect::<Vec<_>>(), self.case.dtype);
        }
        inp
    }
}

/// `rms_norm_quant`, or the fused op when `r` is given: `(quantised, sum)`.
pub fn quant_op(
    x: &Tensor,
    r: Option<&Tensor>,
    w: Option<&Tensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
) -> Result<(Quantized, Option<Tensor>)> {
    match r {
        Some(r) => fused_add_rms_norm_quant(x, r, w, cfg, quant).map(|(q, s)| (q, Some(s))),
        None => rms_norm_quant(x, w, cfg, quant).map(|q| (q, None)),
    }
}

/// `rms_norm_with`, or `fused_add_rms_norm_with` when `r` is given: `(normed, sum)`.
pub fn norm_op(
    x: &Tensor,
    r: Option<&Tensor>,
    w: Option<&Tensor>,
    cfg: &NormConfig,
) -> Result<(Tensor, Option<Tensor>)> {
    match r {
        Some(r) => fused_add_rms_norm_with(x, r, w, cfg).map(|(n, s)| (n, Some(s))),
        None => rms_norm_with(x, w, cfg).map(|n| (n, None)),
    }
}

/// The quantised op on `x` (and `r`), against the unquantised op on the same backend: the sum
/// bit for bit, and the codes and scales bit for bit the reference quantisation of its output.
pub fn check_against_norm(
    what: &str,
    x: &Tensor,
    r: Option<&Tensor>,
    w: Option<&Tensor>,
    cfg: &NormConfig,
    quant: &QuantConfig,
) -> Result<(Quantized, Option<Tensor>)> {
    let (q, sum) = quant_op(x, r, w, cfg, quant)?;
    let (y, ysum) = norm_op(x, r, w, cfg)?;
    if let (Some(s), Some(ys)) = (&sum, &ysum) {
        assert_eq!(s.dims(), x.dims(), "{what}: sum shape");
        assert_eq!(s.dtype(), x.dtype(), "{what}: sum dtype");
        assert!(same_bits(s, ys)?, "{what}: the sums differ {}", replay());
    }
    assert_eq!(
        sum.is_some(),
        r.is_some(),
        "{what}: a sum for the fused op only"
    );
    check_exact(what, &q, quant, x.dims(), &f32s(&y)?);
    Ok((q, sum))
}

/// Where a case runs: the public API on `device` with `backend` pinned.
pub struct QTarget {
    pub device: Device,
    pub backend: Backend,
}

/// Runs `qc` on `t`, both ops: against the f64 reference ([`check_within`], and the fused sum
/// with `compare::check`), and with `exact` against the unquantised op of the same backend
/// ([`check_against_norm`]).
pub fn run_qcase(t: &QTarget, qc: &QCase, exact: bool) -> Result<()> {
    let c = &qc.case;
    assert!(
        c.dim.is_none() && c.var_size.is_none(),
        "quantised: last dim"
    );
    let dt = c.dtype;
    let inp = qc.inputs();
    let (xb, rb) = (tensor(&inp.x, &c.dims, dt)?, tensor(&inp.r, &c.dims, dt)?);
    let w = match (&inp.w, c.wdtype) {
        (Some(w), Some(wdt)) => Some(tensor(w, &[w.len()], wdt)?.to_device(&t.device)?),
        _ => None,
    };
    let (x, r) = (xb.to_device(&t.device)?, rb.to_device(&t.device)?);
    let ((x, r), (xv, rv)) = match c.view {
        Some(v) => (
            ((v.x)(&x)?, (v.r)(&r)?),
            (values(&(v.x)(&xb)?)?, values(&(v.r)(&rb)?)?),
        ),
        None => ((x, r), (inp.x, inp.r)),
    };
    let h = x.dims()[x.rank() - 1];
    let cfg = c.config().with_backend(t.backend);
    for fused in [false, true] {
        let what = format!(
            "{} of {} [backend {} on {:?}]",
            if fused {
                "fused_add_rms_norm_quant"
            } else {
                "rms_norm_quant"
            },
            qc.describe(),
            t.backend,
            t.device.location()
        );
        let r = fused.then_some(&r);
        let want = reference(
            dt,
            &xv,
            fused.then_some(&rv[..]),
            inp.w.as_deref(),
            h,
            &c.opts(),
        );
        let (q, sum) = if exact {
            check_against_norm(&what, &x, r, w.as_ref(), &cfg, &qc.quant)?
        } else {
            quant_op(&x, r, w.as_ref(), &cfg, &qc.quant)?
        };
        check_within(&what, &q, &qc.quant, dt, &want.normed);
        if let Some(s) = sum {
            check(
                &format!("sum of {what}"),
                dt,
                Quantity::Sum,
                h,
                &values(&s)?,
                &want.sum,
            );
        }
    }
    Ok(())
}

/// All the quantisations a case runs with: both formats, dynamic and the static `scale`.
pub fn quant_configs(scale: f32) -> [QuantConfig; 4] {
    let (f, i) = (QuantDType::F8E4M3, QuantDType::I8);
    [
        QuantConfig::new(f),
        QuantConfig::new(f).with_static_scale(scale),
        QuantConfig::new(i),
        QuantConfig::new(i).with_static_scale(scale),
    ]
}

/// Odd and model hidden sizes (1, 3, 7, 100, 257, 4099), from one row to many (several blocks
/// and parallel tasks on the CPU), with a weight of `dt`, none or f32; half of them spread
/// over many binades.
pub fn size_cases(dt: DType) -> Vec<QCase> {
    let mut cases = Vec::new();
    for (k, h) in [1usize, 3, 7, 100, 257, 4099].into_iter().enumerate() {
        for (j, rows) in [1, 37, (1 << 15) / h + 3].into_iter().enumerate() {
            let w = [Some(dt), None, Some(DType::F32)][(k + j) % 3];
            let mut c = Case::new(Group::Sizes, dt, &[rows, h]).w(w);
            c.id = cases.len();
            let qc = QCase::new(c, QuantConfig::new(QuantDType::I8));
            cases.push(if (k + j) % 2 == 0 { qc.spread() } else { qc });
        }
    }
    cases
}

/// The norm matrix's cases of group `g` that normalise over the last dimension.
pub fn group_cases(g: Group) -> Vec<QCase> {
    let cases: Vec<QCase> = matrix()
        .into_iter()
        .filter(|c| c.group == g && c.dim.is_none() && c.var_size.is_none())
        .map(|c| QCase::new(c, QuantConfig::new(QuantDType::F8E4M3)))
        .collect();
    assert!(!cases.is_empty(), "no case in {g:?}");
    cases
}

/// A static scale drawn log-uniformly in `[10^-2.5, 10^-0.5]`: some values of a normalised row
/// saturate, most do not.
pub fn draw_scale(rng: &mut impl Rng) -> f32 {
    10f64.powf(rng.gen_range(-2.5..-0.5)) as f32
}

/// Runs the `cases` that have elements (Candle's CUDA backend allocates none) or all of them
/// (`empty_too`) on `t` with [`run_qcase`]; case `i` with quantisation `i % 4` of
/// [`quant_configs`], or all four with `all`.
pub fn run_qcases(
    t: &QTarget,
    cases: &[QCase],
    all: bool,
    exact: bool,
    empty_too: bool,
) -> Result<()> {
    let (mut rng, _) = super::rng();
    let mut n = 0;
    let kept = cases
        .iter()
        .filter(|c| empty_too || c.case.dims.iter().product::<usize>() > 0);
    for (i, qc) in kept.enumerate() {
        let configs = quant_configs(draw_scale(&mut rng));
        let picked = if all {
            &configs[..]
        } else {
            &configs[i % 4..i % 4 + 1]
        };
        for &quant in picked {
            run_qcase(
                t,
                &QCase {
                    quant,
                    ..qc.clone()
                },
                exact,
            )?;
            n += 1;
        }
    }
    println!(
        "backend {} on {:?}: {n} quantised cases passed",
        t.backend,
        t.device.location()
    );
    assert!(n > 0, "no case ran");
    Ok(())
}

/// `EpsMode::ClampNorm`, with and without eps mattering, every dtype.
pub fn clamp_cases() -> Vec<QCase> {
    let mut cases = Vec::new();
    for dt in super::DTYPES {
        for (h, eps) in [(64usize, 1e-6), (257, 1e-6), (33, 50.0)] {
            let mut c = Case::new(Group::Dims, dt, &[9, h]).clamp();
            c.eps = eps;
            c.id = cases.len();
            cases.push(QCase::new(c, QuantConfig::new(QuantDType::F8E4M3)));
        }
    }
    cases
}
