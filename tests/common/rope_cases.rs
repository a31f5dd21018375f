//! The case matrix of `rms_norm_rope` / `qk_rms_norm_rope` and its runner, shared by
//! `tests/rope.rs` (CPU and portable backends), `tests/rope_cuda.rs` and `tests/rocm_ops.rs`. Inputs are random,
//! drawn per case from the test's seed (`TEST_SEED` to replay) and the case's id.

use super::compare::test_seed;
use super::random::{randn, store, SplitMix64};
use super::reference::Opts;
use super::rope_reference::{
    check_rope, check_rope_within, rope_reference, Geometry, RopeExpected,
};
use super::runner::{tensor, values};
use super::views::RopeView;
use candle_core::{DType, Device, Result, Tensor};
use candle_rmsnorm::{
    qk_rms_norm_rope, rms_norm_rope, Backend, EpsMode, HeadLayout, NormConfig, NormScope,
    RopeConfig, RopeStyle, Rounding, WeightMode,
};
use rand::Rng;
use std::collections::BTreeMap;

pub use super::rope_matrix::rope_matrix;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeGroup {
    /// Every dtype x scope x style x layout x head size; heads, lengths, batch, weight, tables,
    /// views and the two-tensor op varied across them.
    Core,
    /// Weight kinds x weight modes, rounding, eps and `EpsMode::ClampNorm` (active and not).
    Options,
    /// Huge and tiny rows (the f64 rescue), NaN, zero rows, empty tensors, model shapes.
    Extremes,
}

#[derive(Debug, Clone)]
pub struct RopeCase {
    /// Position in the matrix; with the seed, picks the inputs.
    pub id: usize,
    pub group: RopeGroup,
    pub dtype: DType,
    /// The weights' dtype, `None` for no weight.
    pub wdtype: Option<DType>,
    /// The dtype of cos and sin.
    pub tdtype: DType,
    pub geom: Geometry,
    /// Rows of cos and sin (>= L).
    pub table_rows: usize,
    pub mode: WeightMode,
    pub rounding: Rounding,
    pub eps: f64,
    pub eps_mode: EpsMode,
    pub view: RopeView,
    /// Inputs are normal with this standard deviation.
    pub sd: f64,
    /// A flat index of q (as `[B, L, dim]`) set to NaN.
    pub nan_at: Option<usize>,
    /// A row `b * L + l` of q set to zero.
    pub zero_row: Option<usize>,
    /// `qk_rms_norm_rope`: k drawn like q (never NaN), with its own weight values.
    pub qk: bool,
}

/// The values of one case's inputs as stored in their dtypes (q and k as `[B, L, dim]`).
pub struct RopeInputs {
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub wq: Option<Vec<f64>>,
    pub wk: Option<Vec<f64>>,
    pub cos: Vec<f64>,
    pub sin: Vec<f64>,
}

impl RopeCase {
    /// A plain case: contiguous, weight of the input dtype, f32 tables with L rows, `Scale`,
    /// `AtEnd`, eps 1e-6, standard normal inputs, q only.
    pub fn new(group: RopeGroup, dtype: DType, geom: Geometry) -> Self {
        Self {
            id: 0,
            group,
            dtype,
            wdtype: Some(dtype),
            tdtype: DType::F32,
            geom,
            table_rows: geom.seq,
            mode: WeightMode::Scale,
            rounding: Rounding::AtEnd,
            eps: 1e-6,
            eps_mode: EpsMode::AddToMean,
            view: RopeView::Contiguous,
            sd: 1.0,
            nan_at: None,
            zero_row: None,
            qk: false,
        }
    }

    pub fn opts(&self) -> Opts {
        Opts {
            eps: self.eps,
            mode: self.mode,
            rounding: self.rounding,
            var_size: None,
            clamp: self.eps_mode == EpsMode::ClampNorm,
        }
    }

    pub fn config(&self, backend: Backend) -> RopeConfig {
        let norm = NormConfig::new(self.eps)
            .with_weight_mode(self.mode)
            .with_rounding(self.rounding)
            .with_eps_mode(self.eps_mode)
            .with_backend(backend);
        RopeConfig::new(self.geom.heads, norm)
            .with_scope(self.geom.scope)
            .with_style(self.geom.style)
            .with_layout(self.geom.layout)
    }

    /// Everything about the case and the seed that replays it.
    pub fn describe(&self) -> String {
        format!("{self:?} (replay: TEST_SEED={})", test_seed())
    }

    pub fn has_elements(&self) -> bool {
        self.geom.batch * self.geom.seq > 0
    }

    /// The inputs, from the test's seed and this case's id.
    pub fn inputs(&self) -> RopeInputs {
        let seed = test_seed() ^ (self.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = SplitMix64(seed);
        let g = &self.geom;
        let n = g.batch * g.seq * g.dim();
        let mut q = store(&randn(&mut rng, n, self.sd), self.dtype);
        if let Some(row) = self.zero_row {
            q[row * g.dim()..(row + 1) * g.dim()].fill(0.0);
        }
        if let Some(i) = self.nan_at {
            q[i] = f64::NAN;
        }
        let k = match self.qk {
            true => store(&randn(&mut rng, n, self.sd), self.dtype),
            false => Vec::new(),
        };
        let weight = |rng: &mut SplitMix64| {
            (self.wdtype).map(|wdt| store(&randn(rng, g.norm_len(), 1.0), wdt))
        };
        let (wq, wk) = (weight(&mut rng), weight(&mut rng));
        // Random angles per position and pair: a table row of another position does not fit.
        let half = g.head_dim / 2;
        let angles: Vec<f64> = (0..self.table_rows * half)
            .map(|_| rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI))
            .collect();
        let cos: Vec<f64> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f64> = angles.iter().map(|a| a.sin()).collect();
        let (cos, sin) = (store(&cos, self.tdtype), store(&sin, self.tdtype));
        RopeInputs {
            q,
            k,
            wq,
            wk,
            cos,
            sin,
        }
    }

    /// The reference outputs: q's, and k's for the two-tensor op.
    pub fn expected(&self, inp: &RopeInputs) -> Vec<RopeExpected> {
        let (o, t) = (self.opts(), inp);
        let one = |x: &[f64], w: &Option<Vec<f64>>| {
            rope_reference(self.dtype, x, w.as_deref(), &t.cos, &t.sin, &self.geom, &o)
        };
        let mut e = vec![one(&inp.q, &inp.wq)];
        if self.qk {
            e.push(one(&inp.k, &inp.wk));
        }
        e
    }

    /// The op on `dev` with `backend` pinned: q's output, and k's for the two-tensor op, each
    /// checked for shape, dtype, device and contiguity.
    pub fn run(&self, dev: &Device, backend: Backend, inp: &RopeInputs) -> Result<Vec<Tensor>> {
        let (g, dt, what) = (&self.geom, self.dtype, self.describe());
        let dims = [g.batch, g.seq, g.dim()];
        let q = self.view.make(&tensor(&inp.q, &dims, dt)?, dev)?;
        let shown = values(&q)?;
        let same = |(a, b): (&f64, &f64)| a == b || a.is_nan() && b.is_nan();
        assert!(
            shown.iter().zip(&inp.q).all(same),
            "{what}: the view shows other values"
        );
        let side = |v: &[f64], dt: DType, dims: &[usize]| tensor(v, dims, dt)?.to_device(dev);
        let weight = |w: &Option<Vec<f64>>| match (w, self.wdtype) {
            (Some(w), Some(wdt)) => side(w, wdt, &[w.len()]).map(Some),
            _ => Ok(None),
        };
        let (wq, wk) = (weight(&inp.wq)?, weight(&inp.wk)?);
        let tdims = [self.table_rows, g.head_dim / 2];
        let (cos, sin) = (
            side(&inp.cos, self.tdtype, &tdims)?,
            side(&inp.sin, self.tdtype, &tdims)?,
        );
        let cfg = self.config(backend);
        let outs = if self.qk {
            let k = self.view.make(&tensor(&inp.k, &dims, dt)?, dev)?;
            let (qo, ko) = qk_rms_norm_rope(&q, &k, wq.as_ref(), wk.as_ref(), &cos, &sin, &cfg)?;
            vec![qo, ko]
        } else {
            vec![rms_norm_rope(&q, wq.as_ref(), &cos, &sin, &cfg)?]
        };
        for (o, name) in outs.iter().zip(["q", "k"]) {
            let what = format!("{name} output of {what} [backend {backend}]");
            assert_eq!((o.dims(), o.dtype()), (&g.out_dims()[..], dt), "{what}");
            assert!(o.is_contiguous(), "{what}: not contiguous");
            assert!(o.device().same_device(dev), "{what}: on {:?}", o.device());
        }
        Ok(outs)
    }

    /// Runs the case on `dev` with `backend` and checks every output against the reference;
    /// returns the worst `|error| / bound`.
    pub fn check(&self, dev: &Device, backend: Backend) -> Result<f64> {
        let inp = self.inputs();
        let outs = self.run(dev, backend, &inp)?;
        let mut worst = 0f64;
        for ((o, want), name) in outs.iter().zip(self.expected(&inp)).zip(["q", "k"]) {
            let what = format!("{name} output of {} [backend {backend}]", self.describe());
            worst = worst.max(check_rope(&what, self.dtype, &values(o)?, &want));
        }
        Ok(worst)
    }
}

/// Runs `cases` on `dev` with `backend`; prints the worst error relative to its bound per
/// dtype. Fails when no case ran.
pub fn run_rope_cases<'c>(
    dev: &Device,
    backend: Backend,
    cases: impl IntoIterator<Item = &'c RopeCase>,
) -> Result<usize> {
    let started = std::time::Instant::now();
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0;
    for c in cases {
        let w = c.check(dev, backend)?;
        let e = worst.entry(format!("{:?}", c.dtype)).or_default();
        *e = e.max(w);
        n += 1;
    }
    println!(
        "rms_norm_rope, backend {backend} on {:?}: {n} cases in {:.1?}; worst |error| / bound \
         per dtype: {worst:.3?}",
        dev.location(),
        started.elapsed()
    );
    assert!(n > 0, "no case selected");
    Ok(n)
}

/// Every case of the matrix with elements on `dev` with `backend` against the CPU backend:
/// each within one bound of the reference, so the two within two bounds of each other (NaN in
/// the same places).
pub fn check_against_cpu(dev: &Device, backend: Backend) -> Result<()> {
    for c in rope_matrix().iter().filter(|c| c.has_elements()) {
        let inp = c.inputs();
        let gpu = c.run(dev, backend, &inp)?;
        let cpu = c.run(&Device::Cpu, Backend::Cpu, &inp)?;
        for ((g, cpu), want) in gpu.iter().zip(&cpu).zip(c.expected(&inp)) {
            let cpu = RopeExpected {
                out: values(cpu)?,
                mag: want.mag,
            };
            let what = format!("backend {backend} against CPU: {}", c.describe());
            check_rope_within(&what, c.dtype, &values(g)?, &cpu, 2.0);
        }
    }
    Ok(())
}
