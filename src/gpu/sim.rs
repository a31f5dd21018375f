//! The kernels of `hip/` run on the host, in the ordinary test suite: `tests/sim/sim.cpp` built
//! with clang++ as a shared library (`-DNORM_HOST_SIM=32` and `=64`: every GPU thread a fiber
//! that yields at barriers and warp shuffles), every launch planned by [`Call::plan`] and
//! [`Call::launches`] exactly as the CUDA and ROCm launchers plan it, on host memory. Checks the
//! results against an f64 reference written here, the fused sum bit for bit, and the in-place
//! forms (out = x; sum = residual) bit for bit against the out-of-place ones.
//!
//! What it proves: indexing, team shapes, reductions, the register and two-read row loops,
//! vector and scalar paths, tails, row strides, aliasing, on warp sizes 32 and 64. Not: timing,
//! memory ordering on a real GPU, or the device compilers' code (the GPU tests do that).
//! It runs with `CANDLE_RMSNORM_SIM=1` (about a minute on two cores) and needs clang++ (`CANDLE_RMSNORM_SIM_CXX`, else `clang++-19`, else `clang++`);
//! without one it prints "skipped", unless `CANDLE_RMSNORM_SIM=require` (CI), which fails.

use super::abi::NormArgs;
use super::call::{Call, DeviceShape, Operands};
use crate::config::{Backend, NormConfig, Rounding, WeightMode};
use crate::op::NormOp;
use candle_core::DType;
use half::{bf16, f16};
use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `norm_sim_launch(name, args, grid, block, smem)`: `args` points at a `NormArgs`, or a
/// `RopeArgs` for the `rms_norm_rope_*` kernels.
pub(super) type Launch = unsafe extern "C" fn(*const c_char, *const c_void, u32, u32, u32) -> i32;

/// A loaded simulator library (kept for the process).
pub(super) struct Sim {
    pub(super) launch: Launch,
}

fn build(warp: u32) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!(
        "candle-rmsnorm-sim-{}-{warp}.so",
        std::process::id()
    ));
    let mut cands: Vec<String> = std::env::var("CANDLE_RMSNORM_SIM_CXX")
        .into_iter()
        .collect();
    cands.extend(["clang++-19".to_string(), "clang++".to_string()]);
    let mut last = String::from("no compiler tried");
    for cxx in cands {
        let r = Command::new(&cxx)
            .args(["-std=c++20", "-O1", "-shared", "-fPIC", "-w"])
            .arg(format!("-DNORM_HOST_SIM={warp}"))
            .arg("-o")
            .arg(&out)
            .arg(root.join("tests/sim/sim.cpp"))
            .output();
        match r {
            Ok(o) if o.status.success() => return Ok(out),
            Ok(o) => last = format!("{cxx}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => last = format!("{cxx}: {e}"),
        }
    }
    Err(last)
}

fn load(path: &Path) -> Result<Sim, String> {
    let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen of the library just built from tests/sim/sim.cpp, kept open for the
    // process; dlsym of its `norm_sim_launch`, whose C signature `Launch` mirrors.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return Err(format!("dlopen {} failed", path.display()));
        }
        let f = libc::dlsym(h, c"norm_sim_launch".as_ptr());
        if f.is_null() {
            return Err("no norm_sim_launch".into());
        }
        Ok(Sim {
            launch: std::mem::transmute::<*mut c_void, Launch>(f),
        })
    }
}

/// The simulator for `warp`, or `None` (printed) when it is not asked for or no clang++ can
/// build it.
pub(super) fn sim(warp: u32) -> Option<&'static Sim> {
    let mode = std::env::var("CANDLE_RMSNORM_SIM").unwrap_or_default();
    if mode.is_empty() || mode == "0" {
        println!("skipped: set CANDLE_RMSNORM_SIM=1 to run the kernels on the host simulator");
        return None;
    }
    static SIMS: [OnceLock<Result<Sim, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let s = SIMS[usize::from(warp == 64)].get_or_init(|| load(&build(warp)?));
    match s {
        Ok(s) => Some(s),
        Err(e) if mode == "require" => {
            panic!("kernel simulator (warp {warp}) unavailable: {e}")
        }
        Err(e) => {
            println!("skipped: kernel simulator unavailable: {e}");
            None
        }
    }
}

/// A host buffer aligned to 16 bytes (the kernels' vector chunks), `off` elements in.
pub(super) struct Buf {
    mem: Vec<u128>,
    dt: DType,
    off: usize,
}

impl Buf {
    pub(super) fn new(dt: DType, n: usize, off: usize) -> Self {
        let bytes = (n + off) * dt.size_in_bytes();
        Self {
            mem: vec![0; bytes.div_ceil(16) + 1],
            dt,
            off,
        }
    }
    pub(super) fn addr(&self) -> u64 {
        self.mem.as_ptr() as u64 + (self.off * self.dt.size_in_bytes()) as u64
    }
    fn bytes(&mut self) -> &mut [u8] {
        let n = self.mem.len() * 16;
        // SAFETY: the u128 vector viewed as its bytes (any bit pattern is a valid u8).
        unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr() as *mut u8, n) }
    }
    /// Byte `i` (of a one-byte dtype).
    pub(super) fn byte(&mut self, i: usize) -> u8 {
        let at = (self.off + i) * self.dt.size_in_bytes();
        self.bytes()[at]
    }
    pub(super) fn set(&mut self, i: usize, v: f64) {
        let (dt, at) = (self.dt, (self.off + i) * self.dt.size_in_bytes());
        let b = self.bytes();
        match dt {
            DType::F64 => b[at..at + 8].copy_from_slice(&v.to_le_bytes()),
            DType::F32 => b[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => b[at..at + 2].copy_from_slice(&f16::from_f64(v).to_bits().to_le_bytes()),
            _ => b[at..at + 2].copy_from_slice(&bf16::from_f64(v).to_bits().to_le_bytes()),
        }
    }
    pub(super) fn get(&mut self, i: usize) -> f64 {
        let (dt, at) = (self.dt, (self.off + i) * self.dt.size_in_bytes());
        let b = self.bytes();
        let two = |b: &[u8]| u16::from_le_bytes([b[at], b[at + 1]]);
        match dt {
            DType::F64 => f64::from_le_bytes(b[at..at + 8].try_into().unwrap()),
            DType::F32 => f32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as f64,
            DType::F16 => f16::from_bits(two(b)).to_f64(),
            _ => bf16::from_bits(two(b)).to_f64(),
        }
    }
}

/// The inputs of a case: uniform in [-2, 2), the same sequence for the run and the reference.
pub(super) struct Inputs(pub(super) u64);

impl Inputs {
    pub(super) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }
}

/// A value of `dt` (rounded to nearest even).
pub(super) fn round(v: f64, dt: DType) -> f64 {
    match dt {
        DType::F64 => v,
        DType::F32 => v as f32 as f64,
        DType::F16 => f16::from_f64(v).to_f64(),
        _ => bf16::from_f64(v).to_f64(),
    }
}

/// One call: shapes, dtypes, options, and where the outputs go.
#[derive(Debug, Clone, Copy)]
struct Case {
    warp: u32,
    x: DType,
    w: Option<DType>,
    rows: usize,
    hidden: usize,
    /// Extra elements between rows of x and the residual (a strided view).
    pad: usize,
    /// Elements the operands start past a 16-byte boundary (0: the vector path may run).
    misalign: usize,
    fused: bool,
    options: bool,
    /// Shared memory a block may stage rows in (0: not staged, as on AMD).
    stage_bytes: u64,
    /// The variance size (`NormConfig::with_variance_size`); 0: the whole row.
    var_size: usize,
    /// `EpsMode::ClampNorm` with eps [`clamp_eps`] (active for some rows), instead of eps 1e-5.
    clamp: bool,
}

/// The clamp's eps for rows of `h` inputs uniform in [-2, 2) (L2 norm about 1.15 sqrt(h)):
/// some rows fall below it.
pub(super) fn clamp_eps(h: usize) -> f64 {
    1.2 * (h as f64).sqrt()
}

impl Case {
    /// `rows` contiguous aligned rows of `hidden`, input `x` and weight `w`, no options.
    fn plain(warp: u32, (x, w): (DType, Option<DType>), rows: usize, hidden: usize) -> Self {
        Self {
            warp,
            x,
            w,
            rows,
            hidden,
            pad: 0,
            misalign: 0,
            fused: false,
            options: false,
            stage_bytes: 0,
            var_size: 0,
            clamp: false,
        }
    }
}

/// The config of a case: `eps`, or with `clamp` `EpsMode::ClampNorm` with that eps; a variance
/// size (0: none); the options (`1 + w`, rounding before the weight).
pub(super) fn case_config(
    eps: f64,
    clamp: Option<f64>,
    var_size: usize,
    options: bool,
) -> NormConfig {
    let mut cfg = NormConfig::new(eps);
    if let Some(e) = clamp {
        cfg = cfg
            .with_eps(e)
            .with_eps_mode(crate::config::EpsMode::ClampNorm);
    }
    if var_size > 0 {
        cfg = cfg.with_variance_size(var_size);
    }
    if options {
        cfg = cfg
            .with_weight_mode(WeightMode::OffsetOne)
            .with_rounding(Rounding::BeforeWeight);
    }
    cfg
}

/// The outputs of a run: normed and (fused) sum, row-major contiguous.
type Outs = (Vec<f64>, Vec<f64>);

/// Where a run writes: fresh buffers, x itself (and the residual itself for the sum), or a
/// pair-like split (normed to a fresh buffer, the sum into the residual).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dest {
    Fresh,
    IntoX,
    IntoResidual,
}

/// Runs `c` once; returns its outputs and the plan's staged row buffers (0: not staged).
fn run(s: &Sim, c: Case, dest: Dest, seed: u64) -> (Outs, u32) {
    let (h, rows) = (c.hidden, c.rows);
    let stride = h + c.pad;
    let n = rows * stride;
    let mut rng = Inputs(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut next = || rng.next();
    let mut x = Buf::new(c.x, n, c.misalign);
    let mut r = Buf::new(c.x, n, c.misalign);
    for i in 0..n {
        x.set(i, next());
        r.set(i, next());
    }
    let kw = c.w.map(|w| super::abi::kernel_weight_dtype(c.x, w));
    let mut w = Buf::new(kw.unwrap_or(c.x), h, 0);
    for i in 0..h {
        w.set(i, 1.0 + 0.5 * next());
    }
    // Fresh outputs start aligned, as Candle's allocations do.
    let mut out = Buf::new(c.x, rows * h, 0);
    let mut sum = Buf::new(c.x, rows * h, 0);
    let (out_addr, out_stride) = match dest {
        Dest::IntoX => (x.addr(), stride),
        _ => (out.addr(), h),
    };
    let (sum_addr, sum_stride) = match dest {
        Dest::Fresh => (sum.addr(), h),
        _ => (r.addr(), stride),
    };
    let clamp = c.clamp.then(|| clamp_eps(h));
    let cfg = case_config(1e-5, clamp, c.var_size, c.options);
    let call = Call {
        op: NormOp::new(&cfg, Backend::Auto, c.fused),
        x_dtype: c.x,
        w_dtype: kw.unwrap_or(c.x),
        rows: rows as u64,
        hidden: h as u64,
        operands: Operands {
            out: out_addr,
            out_stride: out_stride as u64,
            sum_out: if c.fused { sum_addr } else { 0 },
            sum_stride: if c.fused { sum_stride as u64 } else { 0 },
            x: x.addr(),
            x_stride: stride as u64,
            residual: if c.fused { r.addr() } else { 0 },
            res_stride: if c.fused { stride as u64 } else { 0 },
            weight: if c.w.is_some() { w.addr() } else { 0 },
        },
        channels: None,
        quant: None,
    };
    let shape = DeviceShape {
        warp_size: c.warp,
        multiprocessors: 1,
        stage_bytes: c.stage_bytes,
    };
    let (kernel, plan) = call.plan(shape, 0).expect("plan");
    let name = CString::new(kernel.clone()).unwrap();
    for l in call.launches(&plan) {
        // SAFETY: every address in the args points into a live buffer of this function sized
        // for the rows, strides and hidden size the call states (the kernels' contract).
        let args = (&l.args as *const NormArgs).cast();
        let rc = unsafe { (s.launch)(name.as_ptr(), args, l.grid, plan.block, l.smem_bytes) };
        assert_eq!(rc, 0, "{kernel}: launch failed ({rc})");
    }
    let mut normed = Vec::with_capacity(rows * h);
    let mut sums = Vec::new();
    for row in 0..rows {
        for e in 0..h {
            normed.push(match dest {
                Dest::IntoX => x.get(row * stride + e),
                _ => out.get(row * h + e),
            });
            if c.fused {
                sums.push(match dest {
                    Dest::Fresh => sum.get(row * h + e),
                    _ => r.get(row * stride + e),
                });
            }
        }
    }
    ((normed, sums), plan.stages)
}

/// The f64 reference of the same call (inputs regenerated from the seed).
fn reference(c: Case, seed: u64) -> Outs {
    let (h, stride) = (c.hidden, c.hidden + c.pad);
    let mut rng = Inputs(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut next = || rng.next();
    let n = c.rows * stride;
    let (mut xs, mut rs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        xs.push(round(next(), c.x));
        rs.push(round(next(), c.x));
    }
    let kw = c.w.map(|w| super::abi::kernel_weight_dtype(c.x, w));
    let w: Vec<f64> = (0..h)
        .map(|_| round(1.0 + 0.5 * next(), kw.unwrap_or(c.x)))
        .collect();
    let acc = if c.x == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let (mut normed, mut sums) = (Vec::new(), Vec::new());
    for row in 0..c.rows {
        let v: Vec<f64> = (0..h)
            .map(|e| {
                let i = row * stride + e;
                if c.fused {
                    round(xs[i] + rs[i], acc)
                } else {
                    xs[i]
                }
            })
            .collect();
        let nv = if c.var_size > 0 { c.var_size } else { h };
        let ss: f64 = v[..nv].iter().map(|a| a * a).sum();
        let scale = if c.clamp {
            (nv as f64).sqrt() / ss.sqrt().max(clamp_eps(h))
        } else {
            1.0 / (ss / nv as f64 + 1e-5).sqrt()
        };
        for (e, a) in v.iter().enumerate() {
            let mut y = a * scale;
            let mut we = if c.w.is_some() { w[e] } else { 1.0 };
            if c.options {
                y = round(y, c.x);
                // `1 + w` for a weight; no weight is ones whatever the mode.
                if c.w.is_some() {
                    we = round(1.0 + we, acc);
                }
            }
            normed.push(y * we);
            if c.fused {
                sums.push(round(*a, c.x));
            }
        }
    }
    (normed, sums)
}

/// Bound of |kernel - reference| for the normed output: the output's rounding (twice with
/// rounding before the weight) and the f32 sum of squares.
fn bound(c: Case, want: f64) -> f64 {
    tolerance(c.x, c.hidden, c.options, want)
}

/// The bound of [`bound`] for input `x`, rows of `hidden` and (`options`) rounding before the
/// weight.
pub(super) fn tolerance(x: DType, hidden: usize, options: bool, want: f64) -> f64 {
    let ulp = match x {
        DType::F64 => 2f64.powi(-52),
        DType::F32 => 2f64.powi(-23),
        DType::F16 => 2f64.powi(-10),
        _ => 2f64.powi(-7),
    };
    let sum_err = match x {
        DType::F64 => 1e-13,
        _ => 1e-6 * (hidden as f64).sqrt().max(1.0),
    };
    // The spacing of subnormal results (f16 from 6e-5 down).
    let tiny = match x {
        DType::F64 => 2f64.powi(-1074),
        DType::F32 => 2f64.powi(-149),
        DType::F16 => 2f64.powi(-24),
        _ => 2f64.powi(-133),
    };
    let roundings = if options { 3.0 } else { 1.0 };
    want.abs() * (roundings * ulp + sum_err) + roundings * tiny
}

/// Runs `c` out of place and in place against the reference; returns the staged row buffers
/// its plan used (0: not staged, or not run).
fn check(c: Case) -> u32 {
    let Some(s) = sim(c.warp) else { return 0 };
    let seed = (c.hidden * 131 + c.rows * 7 + c.pad) as u64 ^ u64::from(c.fused);
    let (want_n, want_s) = reference(c, seed);
    let (fresh, stages) = run(s, c, Dest::Fresh, seed);
    for (i, (g, w)) in fresh.0.iter().zip(&want_n).enumerate() {
        let b = bound(c, *w);
        assert!(
            (g - w).abs() <= b,
            "{c:?}: normed[{i}] {g} vs {w} (bound {b})"
        );
    }
    assert_eq!(fresh.1, want_s, "{c:?}: sum");
    let dests: &[Dest] = if c.fused {
        &[Dest::IntoX, Dest::IntoResidual]
    } else {
        &[Dest::IntoX]
    };
    for &d in dests {
        let (got, _) = run(s, c, d, seed);
        let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same(&got.0, &fresh.0), "{c:?} {d:?}: normed differs");
        assert!(same(&got.1, &fresh.1), "{c:?} {d:?}: sum differs");
    }
    stages
}

pub(super) const DTYPES: [(DType, Option<DType>); 7] = [
    (DType::F32, Some(DType::F32)),
    (DType::F16, Some(DType::F16)),
    (DType::BF16, Some(DType::BF16)),
    (DType::BF16, Some(DType::F32)),
    (DType::F16, Some(DType::F32)),
    (DType::F64, Some(DType::F64)),
    (DType::BF16, None),
];

fn sweep(
    warp: u32,
    hidden: &[usize],
    rows: usize,
    dtypes: &[(DType, Option<DType>)],
    stage_bytes: u64,
) {
    for &h in hidden {
        for &(x, w) in dtypes {
            for fused in [false, true] {
                check(Case {
                    fused,
                    stage_bytes,
                    ..Case::plain(warp, (x, w), rows, h)
                });
            }
        }
    }
}

/// The H200's staging budget (half its 228 KiB of shared memory a multiprocessor).
const STAGE_BYTES: u64 = 113 << 10;

/// The devices the sweeps run on, (warp size, staging budget): NVIDIA without staging, AMD
/// wave64, and NVIDIA sm_80+ with the staged kernels.
const DEVICES: [(u32, u64); 3] = [(32, 0), (64, 0), (32, STAGE_BYTES)];

/// Small rows: several rows per block, teams of lanes, tails, staged (warp 32 with a budget)
/// where rows are whole chunks.
#[test]
fn small_rows() {
    for (warp, stage) in DEVICES {
        sweep(warp, &[1, 3, 8, 33, 100, 128, 130, 512], 37, &DTYPES, stage);
    }
}

/// One row per block in registers (one and two chunks a lane), the two-read loop, and (warp 32
/// with a staging budget, as on NVIDIA sm_80+) the staged loop.
#[test]
fn long_rows() {
    for (warp, stage) in DEVICES {
        sweep(warp, &[1000, 4097, 5120], 2, &DTYPES, stage);
        sweep(warp, &[20000], 2, &DTYPES[..3], stage);
    }
}

/// The staged loop as planned: blocks of two short rows (the second row's copies in flight while
/// the first is reduced), of one row, and teams of lanes taking several rows in turn (the ring
/// of two buffers wrapping for `rms_norm`), plain and fused, bf16 rows with f32 weights, options
/// on and off, over an odd row count (the last block's second row missing).
#[test]
fn staged_pipelines() {
    // (hidden, fused): 1536 plain (3 KiB: two rows a block), 1024 fused (4 KiB: one), 1600
    // plain and fused, 4096 plain (8 KiB); 128 and 264 (teams of lanes).
    for (hidden, fused) in [
        (128, false),
        (128, true),
        (264, true),
        (1536, false),
        (1024, true),
        (1600, false),
        (1600, true),
        (4096, false),
    ] {
        for options in [false, true] {
            let used = check(Case {
                pad: 32,
                fused,
                options,
                stage_bytes: STAGE_BYTES,
                ..Case::plain(32, (DType::BF16, Some(DType::F32)), 41, hidden)
            });
            if sim(32).is_some() {
                assert_eq!(used, super::geometry::STAGES, "{hidden} {fused}");
            }
        }
    }
}

/// Strided rows, misaligned operands (the scalar path), the options, staged and not.
#[test]
fn views_alignment_options() {
    for (warp, stage_bytes) in DEVICES {
        for (h, rows) in [(40, 9), (1536, 2), (20000, 2)] {
            for (x, w) in [
                (DType::BF16, Some(DType::F32)),
                (DType::F32, Some(DType::F32)),
            ] {
                for fused in [false, true] {
                    for (pad, misalign, options) in [(8, 0, false), (3, 1, false), (0, 0, true)] {
                        check(Case {
                            pad,
                            misalign,
                            fused,
                            options,
                            stage_bytes,
                            ..Case::plain(warp, (x, w), rows, h)
                        });
                    }
                }
            }
        }
    }
    // Rows whose padding alone makes them 16-byte multiples (130 + 6 f32, 130 + 6 bf16): the
    // out-of-place op's fresh output is not, so the in-place forms must take its path too.
    for (warp, stage_bytes) in DEVICES {
        for x in [DType::F32, DType::BF16] {
            for fused in [false, true] {
                check(Case {
                    pad: 6,
                    fused,
                    stage_bytes,
                    ..Case::plain(warp, (x, Some(x)), 3, 130)
                });
            }
        }
    }
}

/// A variance size below the row (`NormConfig::with_variance_size`): the `_var` kernels in
/// registers and in their loop, vector and scalar rows, tails inside and past the variance part, every dtype (the long rows: the
/// 2- and 4-byte ones), plain and fused, strided and misaligned views, the options, warp sizes
/// 32 and 64 (the kernels never stage, so no staging budget).
#[test]
fn partial_variance() {
    for warp in [32, 64] {
        // Rows in registers (one and two chunks a lane), and (20000) the two-read loop.
        for (h, rows) in [
            (7usize, 9usize),
            (40, 9),
            (130, 5),
            (1536, 2),
            (5120, 2),
            (20000, 1),
        ] {
            let dtypes = if h >= 1536 { &DTYPES[..4] } else { &DTYPES[..] };
            for var_size in [1, h.div_ceil(2) + 1, h - 1] {
                for &(x, w) in dtypes {
                    for fused in [false, true] {
                        for (pad, misalign, options) in [(0, 0, false), (8, 1, true)] {
                            check(Case {
                                pad,
                                misalign,
                                fused,
                                options,
                                var_size,
                                ..Case::plain(warp, (x, w), rows, h)
                            });
                        }
                    }
                }
            }
        }
    }
}

/// `EpsMode::ClampNorm` (NORM_CLAMP_NORM) with an eps that some rows' norms fall below: every
/// dtype, plain and fused, the options, a variance size, warp sizes 32 and 64, the register
/// kernels, the team kernels and the two-read loop.
#[test]
fn clamp_norm() {
    for warp in [32, 64] {
        for (h, rows) in [(7usize, 9usize), (40, 9), (130, 5), (1536, 2), (20000, 1)] {
            let dtypes = if h >= 1536 { &DTYPES[..4] } else { &DTYPES[..] };
            for &(x, w) in dtypes {
                for fused in [false, true] {
                    for (options, var_size) in [(false, 0), (true, h.div_ceil(2))] {
                        check(Case {
                            fused,
                            options,
                            var_size,
                            clamp: true,
                            ..Case::plain(warp, (x, w), rows, h)
                        });
                    }
                }
            }
        }
    }
}
