//! Runs cases of the matrix on a backend and checks every result against the reference.
//!
//! A backend is a [`Target`]: where the inputs go and how the ops are called. [`Api`] is the
//! public Candle API with a pinned [`Backend`] on a `Device`; a test file adds a target by
//! implementing the trait (see `tests/rocm.rs` for the device-resident ROCm API).

use super::cases::{matrix, Case, Inputs};
use super::compare::{check, Quantity, Stats};
use super::reference::{move_dim_last, reference, Expected};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_rmsnorm::{
    fused_add_rms_norm_inplace_with, fused_add_rms_norm_with, residual_pair, rms_norm_inplace_with,
    rms_norm_with, Backend, RmsNorm,
};
use std::collections::BTreeMap;

/// Host tensor of `vals` rounded to `dt` (through f32 for f16/bf16: exact for values that
/// `quantize` made representable).
pub fn tensor(vals: &[f64], dims: &[usize], dt: DType) -> Result<Tensor> {
    if dt == DType::F64 {
        return Tensor::from_vec(vals.to_vec(), dims, &Device::Cpu);
    }
    let v: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dt)
}

/// The values of `t` (on any device) in f64, row-major.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
}

/// A backend the matrix runs on.
pub trait Target {
    /// Named in failure messages and the summary.
    fn label(&self) -> String;
    /// Whether the target can run `c` at all (e.g. no views on contiguous-only APIs).
    fn supports(&self, _c: &Case) -> bool {
        true
    }
    /// Moves a host input to where the op reads it; views are taken after.
    fn place(&self, t: &Tensor) -> Result<Tensor>;
    /// `rms_norm` (no residual) or the fused op: `(normed, Some(sum))`.
    fn call(
        &self,
        c: &Case,
        x: &Tensor,
        r: Option<&Tensor>,
        w: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)>;
}

/// The public API on `device` with `backend` pinned through `NormConfig::with_backend`; even
/// case ids call the functions, odd ones the `RmsNorm` layer. `before_call` runs right before
/// each op with the bytes it will write (CUDA poisons that much memory).
pub struct Api<'a> {
    pub device: Device,
    pub backend: Backend,
    pub before_call: Option<&'a dyn Fn(usize) -> Result<()>>,
}

impl Api<'_> {
    pub fn new(device: &Device, backend: Backend) -> Self {
        Self {
            device: device.clone(),
            backend,
            before_call: None,
        }
    }
}

impl Target for Api<'_> {
    fn label(&self) -> String {
        format!("backend {} on {:?}", self.backend, self.device.location())
    }

    fn place(&self, t: &Tensor) -> Result<Tensor> {
        t.to_device(&self.device)
    }

    fn call(
        &self,
        c: &Case,
        x: &Tensor,
        r: Option<&Tensor>,
        w: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cfg = c.config().with_backend(self.backend);
        if let Some(hook) = self.before_call {
            hook(x.elem_count() * c.dtype.size_in_bytes() * if r.is_some() { 2 } else { 1 })?;
        }
        let layer = (c.id % 2 == 1).then(|| RmsNorm::with_config(w.cloned(), cfg));
        Ok(match (r, layer) {
            (Some(r), Some(l)) => l.forward_residual(x, r).map(|(n, s)| (n, Some(s)))?,
            (Some(r), None) => fused_add_rms_norm_with(x, r, w, &cfg).map(|(n, s)| (n, Some(s)))?,
            (None, Some(l)) => (l.forward(x)?, None),
            (None, None) => (rms_norm_with(x, w, &cfg)?, None),
        })
    }
}

/// The in-place ops on `device` with `backend` pinned: `rms_norm_inplace_with` on a copy of `x`
/// that keeps its layout (a contiguous copy for layouts that cannot be written in place), the
/// fused op on a pair made from `r` by `residual_pair`. Outputs are handed back contiguous.
pub struct InPlace {
    pub device: Device,
    pub backend: Backend,
}

impl Target for InPlace {
    fn label(&self) -> String {
        format!(
            "in place, backend {} on {:?}",
            self.backend,
            self.device.location()
        )
    }

    /// Candle writes only contiguous tensors in place (the portable backend); the in-place ops
    /// normalise over the last dimension only.
    fn supports(&self, c: &Case) -> bool {
        (self.backend != Backend::Candle || c.view.is_none()) && c.dim.is_none()
    }

    fn place(&self, t: &Tensor) -> Result<Tensor> {
        t.to_device(&self.device)
    }

    fn call(
        &self,
        c: &Case,
        x: &Tensor,
        r: Option<&Tensor>,
        w: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cfg = c.config().with_backend(self.backend);
        let Some(r) = r else {
            let t = x.copy()?; // same layout, own storage
            let t = match rms_norm_inplace_with(&t, w, &cfg) {
                Ok(()) => t,
                Err(e) if e.to_string().contains("contiguous last dimension") => {
                    let t = x.contiguous()?.copy()?;
                    rms_norm_inplace_with(&t, w, &cfg)?;
                    t
                }
                Err(e) => return Err(e),
            };
            return Ok((t.contiguous()?, None));
        };
        let pair = residual_pair(r)?;
        fused_add_rms_norm_inplace_with(&pair, x, w, &cfg)?;
        Ok((pair.get(0)?, Some(pair.get(1)?)))
    }
}

/// A case's host tensors: x and the residual (shape `c.dims`), and the weight if it has one.
fn host_tensors(c: &Case, inputs: &Inputs) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let w = match (&inputs.w, c.wdtype) {
        (Some(w), Some(wdt)) => Some(tensor(w, &[w.len()], wdt)?),
        _ => None,
    };
    Ok((
        tensor(&inputs.x, &c.dims, c.dtype)?,
        tensor(&inputs.r, &c.dims, c.dtype)?,
        w,
    ))
}

/// x and the residual where target `t` reads them: placed, then viewed as the case says.
fn placed(t: &dyn Target, c: &Case, xb: &Tensor, rb: &Tensor) -> Result<(Tensor, Tensor)> {
    let (x, r) = (t.place(xb)?, t.place(rb)?);
    Ok(match c.view {
        Some(v) => ((v.x)(&x)?, (v.r)(&r)?),
        None => (x, r),
    })
}

/// Runs `cases` through both targets and requires bitwise equal outputs (NaN equal to NaN);
/// returns how many cases ran.
pub fn run_bitwise<'c>(
    a: &dyn Target,
    b: &dyn Target,
    cases: impl IntoIterator<Item = &'c Case>,
) -> Result<usize> {
    let mut n = 0;
    for c in cases.into_iter().filter(|c| a.supports(c) && b.supports(c)) {
        let (xb, rb, w) = host_tensors(c, &c.inputs())?;
        for fused in [false, true] {
            let mut outs = Vec::new();
            for t in [a, b] {
                let (x, r) = placed(t, c, &xb, &rb)?;
                let wt = w.as_ref().map(|w| t.place(w)).transpose()?;
                let (y, s) = t.call(c, &x, fused.then_some(&r), wt.as_ref())?;
                let mut v = values(&y)?;
                if let Some(s) = s {
                    v.extend(values(&s)?);
                }
                outs.push(v);
            }
            let same = outs[0].len() == outs[1].len()
                && outs[0]
                    .iter()
                    .zip(&outs[1])
                    .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()));
            assert!(
                same,
                "{} (fused: {fused}): {} and {} differ",
                c.describe(),
                a.label(),
                b.label()
            );
        }
        n += 1;
    }
    assert!(n > 0, "no case selected");
    Ok(n)
}

/// Runs the matrix (the cases `filter` keeps) through the public API on `device` with `backend`
/// pinned; returns how many cases ran.
pub fn run_matrix(
    device: &Device,
    backend: Backend,
    filter: impl Fn(&Case) -> bool,
) -> Result<usize> {
    run_cases(
        &Api::new(device, backend),
        matrix().iter().filter(|c| filter(c)),
    )
}

/// Runs `cases` the target supports, both ops each; prints a summary of the worst error per
/// dtype relative to its bound. Fails when no case ran.
pub fn run_cases<'c>(t: &dyn Target, cases: impl IntoIterator<Item = &'c Case>) -> Result<usize> {
    let started = std::time::Instant::now();
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0;
    for c in cases.into_iter().filter(|c| t.supports(c)) {
        for s in run_case(t, c)? {
            let e = worst.entry(format!("{:?}", c.dtype)).or_default();
            *e = e.max(s.worst);
        }
        n += 1;
    }
    println!(
        "{}: {n} cases in {:.1?}; worst |error| / bound per dtype: {worst:.3?}",
        t.label(),
        started.elapsed()
    );
    assert!(n > 0, "{}: no case selected", t.label());
    Ok(n)
}

/// One case: both ops against the reference; shapes, dtypes and contiguity of the outputs.
pub fn run_case(t: &dyn Target, c: &Case) -> Result<Vec<Stats>> {
    let (dt, what) = (c.dtype, format!("{} [{}]", c.describe(), t.label()));
    let inputs = c.inputs();
    let (xb, rb, w) = host_tensors(c, &inputs)?;
    // The operands where the op reads them, and the values they show, on the host.
    let (x, r) = placed(t, c, &xb, &rb)?;
    let (xv, rv) = match c.view {
        Some(v) => {
            let d = c.dim.unwrap_or(x.rank() - 1);
            assert_eq!(x.dims()[d], v.hidden, "{what}: view hidden");
            (values(&(v.x)(&xb)?)?, values(&(v.r)(&rb)?)?)
        }
        None => (inputs.x, inputs.r),
    };
    let wt = w.as_ref().map(|w| t.place(w)).transpose()?;
    let hidden = c.hidden();
    let wv = inputs.w.as_deref();
    let mut stats = Vec::new();
    let mut outcome = |name: &str, q: Quantity, got: &Tensor, want: &[f64]| -> Result<()> {
        let what = format!("{name} of {what}");
        assert_eq!((got.dims(), got.dtype()), (x.dims(), dt), "{what}");
        assert!(got.is_contiguous(), "{what}: not contiguous");
        stats.push(check(&what, dt, q, hidden, &values(got)?, want));
        Ok(())
    };

    // A norm over dimension d: the reference on the values with d moved last, moved back.
    let over = c.dim.filter(|&d| d + 1 < x.rank());
    let expect = |r: Option<&[f64]>| -> Expected {
        let Some(d) = over else {
            return reference(dt, &xv, r, wv, hidden, &c.opts());
        };
        let mv = |v: &[f64], back| move_dim_last(v, x.dims(), d, back);
        let rl = r.map(|r| mv(r, false));
        let e = reference(dt, &mv(&xv, false), rl.as_deref(), wv, hidden, &c.opts());
        Expected {
            normed: mv(&e.normed, true),
            sum: if r.is_some() { mv(&e.sum, true) } else { e.sum },
        }
    };
    let want = expect(None);
    let (y, _) = t.call(c, &x, None, wt.as_ref())?;
    outcome("rms_norm", Quantity::Normed, &y, &want.normed)?;

    let want = expect(Some(&rv));
    let (yn, ys) = t.call(c, &x, Some(&r), wt.as_ref())?;
    let ys = ys.expect("the fused op returns the sum");
    outcome("fused normed", Quantity::Normed, &yn, &want.normed)?;
    outcome("fused sum", Quantity::Sum, &ys, &want.sum)?;
    Ok(stats)
}
