//! Comparing results with the reference: the tolerances, the metrics, the one [`check`], and the
//! per-test seed it names when it fails.

use super::reference::{max_finite, round_to, ulp, unit};
use candle_core::DType;
use std::cell::Cell;

thread_local! {
    static SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// This test's seed: `TEST_SEED` when set (to replay a failure), else fresh; printed once per
/// test thread and named by every failing [`check`].
pub fn test_seed() -> u64 {
    SEED.with(|s| match s.get() {
        Some(v) => v,
        None => {
            let v = std::env::var("TEST_SEED")
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_else(rand::random);
            eprintln!("TEST_SEED={v}");
            s.set(Some(v));
            v
        }
    })
}

/// What is compared: the normalised output or the fused op's sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Normed,
    Sum,
}

/// The bounds for one dtype. An element passes when `|got - want|` is at most
/// `min(rel * |want|, ulps * ulp(want))`, or at most one `ulp(want)`: a faithful rounding of
/// the reference, which that bound can exclude only for subnormal results. The whole tensor
/// passes when every element does and its relative L2 error is at most `rel_l2` (NaN and
/// infinite results excluded: those must match the reference rounded to the dtype exactly).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rel: f64,
    pub ulps: f64,
    pub rel_l2: f64,
}

/// The tolerance table: for each bound the strictest of the former CPU, CUDA and ROCm suites.
pub fn tolerance(dt: DType, q: Quantity) -> Tolerance {
    let rel_l2 = match dt {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        other => panic!("no float dtype: {other:?}"),
    };
    let (rel, ulps) = match (q, dt) {
        // The sum is one f32 (f64) addition rounded to the dtype.
        (Quantity::Sum, DType::F64) => (unit(dt), f64::INFINITY),
        (Quantity::Sum, _) => (unit(dt), 4.0),
        (Quantity::Normed, DType::F64) => (1e-12, f64::INFINITY),
        // The f32 sum of squares: its error grows with the row length.
        (Quantity::Normed, DType::F32) => (64.0 * unit(dt), 64.0),
        // Output rounding, and with Rounding::BeforeWeight a second one before the weight.
        (Quantity::Normed, _) => (2.0 * unit(dt), 4.0),
    };
    Tolerance { rel, ulps, rel_l2 }
}

impl Tolerance {
    /// The per-element bound at reference value `want`.
    pub fn bound(&self, dt: DType, want: f64) -> f64 {
        let u = ulp(want, dt);
        (self.rel * want.abs()).min(self.ulps * u).max(u)
    }
}

/// How close a result came: the worst `|got - want| / bound` over the elements (<= 1 passes)
/// and the relative L2 error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub worst: f64,
    pub rel_l2: f64,
}

/// Asserts that `got` (of dtype `dt`) matches the reference `want` for rows of `hidden`; panics
/// with the element, its row, both values, the bound and the seed.
pub fn check(
    what: &str,
    dt: DType,
    q: Quantity,
    hidden: usize,
    got: &[f64],
    want: &[f64],
) -> Stats {
    let seed = SEED
        .with(Cell::get)
        .map_or(String::new(), |s| format!(" (replay: TEST_SEED={s})"));
    assert_eq!(got.len(), want.len(), "{what}: length{seed}");
    let (tol, max) = (tolerance(dt, q), max_finite(dt));
    let (mut num, mut den, mut worst) = (0.0, 0.0, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let at = || format!("{what}: element {i} (row {})", i / hidden.max(1));
        if w.is_nan() || g.is_nan() {
            assert!(
                w.is_nan() && g.is_nan(),
                "{}: want {w:e}, got {g:e}{seed}",
                at()
            );
            continue;
        }
        if g.is_infinite() || w.abs() > max {
            let rounded = round_to(w, dt);
            if g.is_infinite() || rounded.is_infinite() {
                assert_eq!(g, rounded, "{}: want {w:e} rounded{seed}", at());
                continue;
            }
        }
        let (bound, err) = (tol.bound(dt, w), (g - w).abs());
        assert!(
            err <= bound,
            "{}: want {w:e}, got {g:e}: |diff| {err:e} > bound {bound:e} ({tol:?}){seed}",
            at()
        );
        if err > worst * bound {
            worst = err / bound;
        }
        num += err * err;
        den += w * w;
    }
    let rel_l2 = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
    assert!(
        rel_l2 <= tol.rel_l2,
        "{what}: relative L2 error {rel_l2:e} > {:e}{seed}",
        tol.rel_l2
    );
    Stats { worst, rel_l2 }
}
