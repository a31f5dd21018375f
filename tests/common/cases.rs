//! The one case matrix: dtypes x weight dtypes x hidden sizes x options x views x extreme
//! values. Inputs are random, drawn per case from the test's seed (`compare::test_seed`,
//! `TEST_SEED` to replay) and the case's id, so a case replays alone.

use super::compare::test_seed;
use super::random::{draw, store, SplitMix64};
use super::reference::Opts;
use super::views::{View, DIM_VIEWS, VIEWS};
use candle_core::DType;
use candle_rmsnorm::{EpsMode, NormConfig, Rounding, WeightMode};

pub const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];
/// Hidden sizes that reach every code path: several rows per block, one row per block with one
/// or two chunks a lane, the two-read loop (long rows), scalar rows (odd sizes), vector rows
/// with a scalar tail, and the CPU's SIMD tails.
pub const HIDDEN: [usize; 29] = [
    1, 2, 3, 7, 8, 9, 31, 64, 100, 127, 128, 129, 130, 256, 500, 512, 1000, 1024, 1536, 2048, 4095,
    4097, 5120, 8192, 8193, 16384, 20000, 40000, 65537,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Every dtype x weight dtype (or none) x [`HIDDEN`].
    Sizes,
    /// Weight modes, rounding, eps (0 and large), no weight.
    Options,
    /// Ranks 1 to 4, zero and one row, odd shapes.
    Shapes,
    /// Many rows: parallel CPU jobs, GPU blocks that take several rows.
    ManyRows,
    /// Huge and tiny magnitudes (the f64 rescue), NaN and infinity confined to their rows.
    Extremes,
    /// Strided views read in place and layouts that are copied first.
    Views,
    /// GPU only (see [`many_rows_per_block`]): grids of one wave of blocks, many rows each.
    ManyRowsPerBlock,
    /// The mean of squares over the first `n` elements of a row (`with_variance_size`).
    VarianceSize,
    /// A norm over another dimension than the last (`with_dim`), and `EpsMode::ClampNorm`.
    Dims,
}

/// How the input values are drawn.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// Normal with this standard deviation.
    Normal(f64),
    /// Uniform in `[-s, s)`.
    Uniform(f64),
    /// Rows of 8: 1e30 (f32 squares overflow), 1, 1e-30, one NaN, 1, one infinity, 3e-3, 1.
    Extremes,
    /// Near 6e4: squares overflow f16 but not f32.
    NearF16Max,
}

#[derive(Debug, Clone)]
pub struct Case {
    /// Position in its list; with the seed, picks the inputs.
    pub id: usize,
    pub group: Group,
    pub dtype: DType,
    /// The weight's dtype, `None` for no weight.
    pub wdtype: Option<DType>,
    /// The shape of `x` (of the base tensor for a view).
    pub dims: Vec<usize>,
    pub view: Option<View>,
    pub mode: WeightMode,
    pub rounding: Rounding,
    pub eps: f64,
    pub values: Values,
    /// A zero residual (so `sum == x`) instead of one drawn like `x`.
    pub zero_residual: bool,
    /// A flat index of `x` set to NaN.
    pub nan_at: Option<usize>,
    /// `NormConfig::with_variance_size`.
    pub var_size: Option<usize>,
    /// `NormConfig::with_dim`: the dimension normalised over (`None`: the last).
    pub dim: Option<usize>,
    pub eps_mode: EpsMode,
}

/// The values of one case's inputs as stored in their dtypes.
pub struct Inputs {
    pub x: Vec<f64>,
    pub r: Vec<f64>,
    pub w: Option<Vec<f64>>,
}

impl Case {
    /// A plain case: weight of the input dtype, `Scale`, `AtEnd`, eps 1e-6, normal inputs.
    pub fn new(group: Group, dtype: DType, dims: &[usize]) -> Self {
        Self {
            id: 0,
            group,
            dtype,
            wdtype: Some(dtype),
            dims: dims.to_vec(),
            view: None,
            mode: WeightMode::Scale,
            rounding: Rounding::AtEnd,
            eps: 1e-6,
            values: Values::Normal(1.0),
            zero_residual: false,
            nan_at: None,
            var_size: None,
            dim: None,
            eps_mode: EpsMode::AddToMean,
        }
    }

    /// Normalised over dimension `d`.
    pub fn over(self, d: usize) -> Self {
        Self {
            dim: Some(d),
            ..self
        }
    }

    /// With `EpsMode::ClampNorm`.
    pub fn clamp(self) -> Self {
        Self {
            eps_mode: EpsMode::ClampNorm,
            ..self
        }
    }

    pub fn w(self, wdtype: Option<DType>) -> Self {
        Self { wdtype, ..self }
    }

    pub fn opt(mut self, mode: WeightMode, rounding: Rounding, eps: f64) -> Self {
        (self.mode, self.rounding, self.eps) = (mode, rounding, eps);
        self
    }

    /// The mean of squares over the first `n` elements of each row.
    pub fn var(self, n: usize) -> Self {
        Self {
            var_size: Some(n),
            ..self
        }
    }

    pub fn vals(self, values: Values) -> Self {
        Self { values, ..self }
    }

    /// A zero residual and optionally a NaN at flat index `nan_at` of `x`.
    pub fn zero_residual(mut self, nan_at: Option<usize>) -> Self {
        (self.zero_residual, self.nan_at) = (true, nan_at);
        self
    }

    /// The size of the dimension the ops normalise over (a view's `hidden` is that size).
    pub fn hidden(&self) -> usize {
        let d = self.dim.unwrap_or(self.dims.len() - 1);
        self.view.map_or_else(|| self.dims[d], |v| v.hidden)
    }

    pub fn opts(&self) -> Opts {
        Opts {
            eps: self.eps,
            mode: self.mode,
            rounding: self.rounding,
            var_size: self.var_size,
            clamp: self.eps_mode == EpsMode::ClampNorm,
        }
    }

    /// The options without a backend: the caller pins one.
    pub fn config(&self) -> NormConfig {
        let mut cfg = NormConfig::new(self.eps)
            .with_weight_mode(self.mode)
            .with_rounding(self.rounding)
            .with_eps_mode(self.eps_mode);
        if let Some(d) = self.dim {
            cfg = cfg.with_dim(d);
        }
        match self.var_size {
            Some(n) => cfg.with_variance_size(n),
            None => cfg,
        }
    }

    pub fn describe(&self) -> String {
        let view = self
            .view
            .map_or(String::new(), |v| format!(" view {:?}", v.name));
        format!(
            "case {} ({:?}): {:?} {:?}{view} w {:?} {:?} {:?} eps {:e} {:?}{}{}",
            self.id,
            self.group,
            self.dtype,
            self.dims,
            self.wdtype,
            self.mode,
            self.rounding,
            self.eps,
            self.values,
            self.nan_at
                .map_or(String::new(), |i| format!(" NaN at {i}")),
            self.var_size
                .map_or(String::new(), |n| format!(" variance size {n}")),
        ) + &self.dim.map_or(String::new(), |d| format!(" over dim {d}"))
            + if self.eps_mode == EpsMode::ClampNorm {
                " clamp"
            } else {
                ""
            }
    }

    /// The inputs, from the test's seed and this case's id.
    pub fn inputs(&self) -> Inputs {
        let seed = test_seed() ^ (self.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = SplitMix64(seed);
        let n: usize = self.dims.iter().product();
        let mut x = store(&draw(&mut rng, self.values, &self.dims), self.dtype);
        if let Some(i) = self.nan_at {
            x[i] = f64::NAN;
        }
        let r = match self.zero_residual {
            false => store(&draw(&mut rng, self.values, &self.dims), self.dtype),
            true => vec![0.0; n],
        };
        let w = self.wdtype.map(|wdt| {
            let h = self.hidden();
            store(&draw(&mut rng, Values::Normal(1.0), &[h]), wdt)
        });
        Inputs { x, r, w }
    }
}

/// Ranks 1 to 4, empty tensors, zero and one row, odd sizes.
#[rustfmt::skip]
const SHAPES: [&[usize]; 19] = [
    &[7], &[3, 7], &[2, 3, 7], &[2, 1, 3, 7], &[0, 7], &[2, 0, 7], &[3, 0], &[0, 64], &[1, 1],
    &[17, 64], &[9, 128], &[5, 255], &[4, 257], &[3, 1536], &[1, 4096], &[2, 5120], &[2, 8191],
    &[1, 20000], &[1, 64],
];

/// Collects cases, numbering them.
#[derive(Default)]
struct Matrix(Vec<Case>);

impl Matrix {
    fn push(&mut self, mut c: Case) {
        c.id = self.0.len();
        self.0.push(c);
    }
}

/// The matrix every backend runs (filter it by [`Group`] or anything else).
pub fn matrix() -> Vec<Case> {
    use {DType::*, Group::*, Rounding::*, WeightMode::*};
    let mut m = Matrix::default();
    for &h in &HIDDEN {
        let rows = match h {
            8193 => 24,
            h if h >= 8192 => 3,
            _ => 37,
        };
        for dt in DTYPES {
            for w in [None].into_iter().chain(DTYPES.map(Some)) {
                m.push(Case::new(Sizes, dt, &[rows, h]).w(w));
            }
        }
    }
    // Options at eps 1e-6, no weight included; then every weight mode and rounding at eps 0,
    // 1e-5 and 0.5, with weights of the input dtype and f32.
    let opt = |dt, h, rows| Case::new(Options, dt, &[rows, h]).vals(Values::Normal(3.0));
    for h in [5usize, 64, 130, 1536] {
        for dt in DTYPES {
            let wm = [(None, Scale), (Some(F32), OffsetOne), (Some(dt), OffsetOne)];
            for (w, mode) in wm.into_iter().chain([(Some(dt), Scale)]) {
                for rounding in [AtEnd, BeforeWeight] {
                    m.push(opt(dt, h, 9).w(w).opt(mode, rounding, 1e-6));
                }
            }
        }
    }
    for h in [96usize, 1536, 5121] {
        for dt in DTYPES {
            for (mode, rounding) in [Scale, OffsetOne]
                .map(|m| [(m, AtEnd), (m, BeforeWeight)])
                .concat()
            {
                for eps in [0.0, 1e-5, 0.5] {
                    for w in if dt == F32 { vec![F32] } else { vec![dt, F32] } {
                        m.push(opt(dt, h, 11).w(Some(w)).opt(mode, rounding, eps));
                    }
                }
            }
        }
    }
    for dims in SHAPES {
        for dt in DTYPES {
            for w in [None, Some(F32), Some(dt)] {
                let options = [(Scale, AtEnd, 1e-6), (OffsetOne, BeforeWeight, 1e-5)];
                for (mode, rounding, eps) in options {
                    let c = Case::new(Shapes, dt, dims).vals(Values::Uniform(4.0));
                    m.push(c.w(w).opt(mode, rounding, eps));
                }
            }
        }
    }
    for dt in [BF16, F16, F32] {
        m.push(Case::new(ManyRows, dt, &[4099, 256]).w(Some(F32)));
        m.push(Case::new(ManyRows, dt, &[333, 1537]).opt(Scale, BeforeWeight, 1e-6));
    }
    extremes(&mut m);
    variance_sizes(&mut m);
    dims(&mut m);
    for view in VIEWS {
        for dt in DTYPES {
            for w in [None, Some(F32), Some(dt)] {
                let eps = if view.base.len() == 2 { 1e-5 } else { 1e-6 };
                let c = Case::new(Views, dt, view.base).vals(Values::Normal(2.0));
                m.push(Case {
                    view: Some(view),
                    ..c.w(w).opt(Scale, AtEnd, eps)
                });
            }
        }
    }
    m.0
}

/// The mean of squares over part of each row: every dtype, weights of the input dtype, f32 and
/// none, with the options; parts ending inside and past the SIMD blocks and GPU chunks, of one
/// element, of all but one; huge and tiny values (the rescue over the part), a NaN past the
/// part (only its own element turns NaN), strided views.
fn variance_sizes(m: &mut Matrix) {
    use {DType::*, Group::VarianceSize as G, Rounding::*, Values::*, WeightMode::*};
    let parts = [
        (7, 3),
        (64, 48),
        (130, 1),
        (1536, 1000),
        (5120, 5119),
        (20000, 12345),
    ];
    for (h, n) in parts {
        for dt in DTYPES {
            for (w, mode, rounding) in [
                (Some(dt), Scale, AtEnd),
                (Some(F32), OffsetOne, BeforeWeight),
                (None, Scale, AtEnd),
            ] {
                let c = Case::new(G, dt, &[9, h]).w(w).opt(mode, rounding, 1e-6);
                m.push(c.var(n));
            }
        }
    }
    for dt in [F32, BF16] {
        m.push(
            Case::new(G, dt, &[5, 1536])
                .vals(Normal(1e30))
                .w(Some(F32))
                .var(1000),
        );
        m.push(
            Case::new(G, dt, &[5, 300])
                .vals(Normal(1e-25))
                .opt(Scale, AtEnd, 0.0)
                .var(17),
        );
    }
    for dt in [F32, F16] {
        m.push(
            Case::new(G, dt, &[4, 1000])
                .zero_residual(Some(2 * 1000 + 900))
                .var(800),
        );
    }
    for view in VIEWS {
        let c = Case::new(G, BF16, view.base).w(Some(F32));
        m.push(Case {
            view: Some(view),
            ..c.var(view.hidden.div_ceil(2))
        });
    }
}

/// Norms over another dimension than the last: channels of video- and image-shaped tensors
/// (inner sizes in and past the 16-lane blocks, inner 1 and 2, one channel, few and many
/// channels, positions in whole 16-byte chunks and not), every dtype and
/// weight kind, the options, the variance size along the dimension, `EpsMode::ClampNorm` with
/// the clamp inactive and active, huge values (the rescue), a NaN (its column only), and views
/// read in place or copied first.
fn dims(m: &mut Matrix) {
    use {DType::*, Group::Dims as G, Rounding::*, Values::*, WeightMode::*};
    // The last three: whole 16-byte chunks of positions (the GPU kernels' vector path), many
    // channels (held in registers in groups of threads), more channels than a GPU block holds
    // (read twice).
    let shapes: [(&[usize], usize); 11] = [
        (&[2, 7, 3, 5], 1),
        (&[1, 24, 3, 10, 13], 1),
        (&[3, 16, 130], 1),
        (&[5, 9], 0),
        (&[4, 33, 2], 1),
        (&[2, 3, 4], 2),
        (&[6, 1, 40], 1),
        (&[64, 1], 0),
        (&[2, 96, 136], 1),
        (&[2, 384, 4, 16], 1),
        (&[1, 2500, 24], 1),
    ];
    for (dims, d) in shapes {
        for dt in DTYPES {
            for w in [None, Some(F32), Some(dt)] {
                m.push(Case::new(G, dt, dims).w(w).over(d));
            }
            let c = Case::new(G, dt, dims).w(Some(F32)).over(d);
            m.push(c.clone().opt(OffsetOne, BeforeWeight, 1e-5));
            m.push(c.clone().opt(Scale, AtEnd, 1e-12).clamp());
            m.push(c.var(dims[d].div_ceil(2)));
        }
    }
    for dt in DTYPES {
        // The clamp with eps 0.5 (active for many columns) and with tiny values; rows too.
        let c = Case::new(G, dt, &[2, 8, 37]).w(Some(dt)).over(1);
        m.push(c.clone().opt(Scale, AtEnd, 0.5).clamp().vals(Uniform(0.3)));
        m.push(
            c.opt(Scale, BeforeWeight, 1e-12)
                .clamp()
                .vals(Normal(1e-14)),
        );
        let c = Case::new(G, dt, &[9, 130])
            .opt(OffsetOne, AtEnd, 1e-3)
            .clamp();
        m.push(c.vals(Uniform(0.2)));
    }
    for dt in [F32, BF16] {
        m.push(Case::new(G, dt, &[2, 40, 33]).over(1).vals(Normal(1e30)));
        // Whole 16-byte chunks of positions: the rescue in the staged GPU kernels too.
        m.push(Case::new(G, dt, &[2, 40, 32]).over(1).vals(Normal(1e30)));
        let c = Case::new(G, dt, &[2, 40, 33])
            .over(1)
            .clamp()
            .vals(Normal(1e30));
        m.push(c.opt(Scale, AtEnd, 1e-12));
        let nan = Some(12 * 20 + 5 * 20 + 7);
        m.push(Case::new(G, dt, &[3, 12, 20]).over(1).zero_residual(nan));
        let c = Case::new(G, dt, &[3, 12, 20])
            .opt(Scale, AtEnd, 1e-12)
            .clamp();
        m.push(c.clone().over(1).zero_residual(nan));
        m.push(c.zero_residual(nan));
    }
    for view in DIM_VIEWS {
        for dt in [F32, BF16] {
            let c = Case::new(G, dt, view.base).w(Some(F32)).over(1);
            m.push(Case {
                view: Some(view),
                ..c
            });
        }
    }
}

fn extremes(m: &mut Matrix) {
    use {DType::*, Values::*};
    let e = |dt, dims: &[usize], values| Case::new(Group::Extremes, dt, dims).vals(values);
    // Huge values (f16 squares overflow f16; f32 squares overflow f32: the f64 rescue), tiny
    // ones (eps dominates), and tiny ones with eps 0.
    m.push(e(F16, &[7, 1536], Normal(2e4)));
    for dt in [F32, BF16] {
        m.push(e(dt, &[7, 129], Normal(1e30)).w(Some(F32)));
        let (mode, rounding) = (WeightMode::OffsetOne, Rounding::BeforeWeight);
        m.push(e(dt, &[7, 4096], Normal(1e30)).opt(mode, rounding, 1e-6));
    }
    m.push(e(F32, &[7, 300], Normal(1e-20)).w(Some(F32)));
    let plain0 = (WeightMode::Scale, Rounding::AtEnd, 0.0);
    m.push(
        e(F32, &[3, 200], Normal(1e-25))
            .w(None)
            .opt(plain0.0, plain0.1, plain0.2),
    );
    // Rows of huge, tiny, NaN and infinite values, and values near the f16 maximum; eps 0.
    for h in [64usize, 1536, 20000] {
        for (dt, rows, values) in [
            (F32, 8, Extremes),
            (BF16, 8, Extremes),
            (F16, 8, Extremes),
            (F16, 4, NearF16Max),
        ] {
            let c = e(dt, &[rows, h], values).w(None).zero_residual(None);
            m.push(c.opt(plain0.0, plain0.1, plain0.2));
        }
    }
    // One NaN, among huge values and among ordinary ones: its row only turns NaN.
    for dt in [F32, F16, BF16] {
        let scale = if dt == F16 { 6e4 } else { 1e30 };
        let c = e(dt, &[4, 1000], Uniform(scale)).w(Some(F32));
        m.push(c.zero_residual(Some(2 * 1000 + 17)));
    }
    for dt in DTYPES {
        for h in [17usize, 1536] {
            let c = e(dt, &[4, h], Normal(1.0)).w(Some(F32));
            m.push(c.zero_residual(Some(h + h / 2)));
        }
    }
}

/// GPU only, too large for the CPU suite: a block's rows one after another with the next row
/// prefetched, and for small hidden several teams at a time (the first two, smaller, are in
/// the sanitizer subset).
pub fn many_rows_per_block() -> Vec<Case> {
    use {DType::*, Group::ManyRowsPerBlock as G};
    let mut m = Matrix::default();
    m.push(Case::new(G, BF16, &[3000, 1536]));
    m.push(Case::new(G, BF16, &[40000, 64]).w(Some(F32)));
    for (rows, h) in [
        (300_000usize, 128usize),
        (100_003, 64),
        (20_011, 1536),
        (6_007, 5120),
    ] {
        for dt in [BF16, F32] {
            m.push(Case::new(G, dt, &[rows, h]));
        }
    }
    m.0
}
