//! The channel kernels (`hip/norm_channel.h`) on the host simulator (see `sim.rs`): norms over
//! the middle dimension of `outer x channels x inner`, planned by [`Call::plan`] exactly as the
//! launchers plan them, against an f64 reference written here. Strided and padded inputs,
//! misaligned ones (the scalar path), strided positions, every dtype and weight kind, the
//! options, the variance size, the clamp, huge and tiny values (the rescue), warp sizes 32 and
//! 64, channels held in registers and read twice.

use super::call::{Call, Channels, DeviceShape, Operands};
use super::sim::{case_config, clamp_eps, round, sim, tolerance, Buf, Inputs, DTYPES};
use crate::config::{Backend, NormConfig};
use crate::op::NormOp;
use candle_core::DType;
use std::ffi::CString;

/// One channel call.
#[derive(Debug, Clone, Copy)]
struct Case {
    warp: u32,
    x: DType,
    w: Option<DType>,
    outer: usize,
    channels: usize,
    inner: usize,
    /// Extra elements after each channel's positions and after each outer index.
    pad: usize,
    /// Elements between positions of the inputs.
    step: usize,
    /// Elements the inputs start past a 16-byte boundary.
    misalign: usize,
    fused: bool,
    options: bool,
    clamp: bool,
    /// The variance size; 0: every channel.
    var_size: usize,
    /// Inputs are uniform in [-2, 2) times this.
    mag: f64,
    eps: f64,
    /// Shared memory a block may stage tiles in (0: the register kernel, as on AMD).
    stage_bytes: u64,
}

impl Case {
    fn plain(warp: u32, (x, w): (DType, Option<DType>), shape: [usize; 3]) -> Self {
        Self {
            warp,
            x,
            w,
            outer: shape[0],
            channels: shape[1],
            inner: shape[2],
            pad: 0,
            step: 1,
            misalign: 0,
            fused: false,
            options: false,
            clamp: false,
            var_size: 0,
            mag: 1.0,
            eps: 1e-5,
            stage_bytes: 0,
        }
    }
    fn x_stride(&self) -> usize {
        self.inner * self.step + self.pad
    }
    fn x_outer(&self) -> usize {
        self.channels * self.x_stride() + self.pad
    }
    fn at(&self, o: usize, c: usize, i: usize) -> usize {
        o * self.x_outer() + c * self.x_stride() + i * self.step
    }
    fn vs(&self) -> usize {
        if self.var_size > 0 {
            self.var_size
        } else {
            self.channels
        }
    }
    fn cfg(&self) -> NormConfig {
        let clamp = self.clamp.then(|| clamp_eps(self.vs()) * self.mag);
        case_config(self.eps, clamp, self.var_size, self.options)
    }
}

/// Inputs (x, residual, weight) of a case as f64 values of their dtypes, in buffer order.
fn inputs(c: &Case, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = Inputs(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n = c.outer * c.x_outer();
    let kw = c.w.map(|w| super::abi::kernel_weight_dtype(c.x, w));
    let mut next = |dt, scale| round(rng.next() * scale, dt);
    let x: Vec<f64> = (0..n).map(|_| next(c.x, c.mag)).collect();
    let r: Vec<f64> = (0..n).map(|_| next(c.x, c.mag)).collect();
    let wd = kw.unwrap_or(c.x);
    let w: Vec<f64> = (0..c.channels)
        .map(|_| round(1.0 + 0.25 * rng.next(), wd))
        .collect();
    (x, r, w)
}

/// Runs `c` on the simulator; its outputs (normed, sum) contiguous `[outer, channels, inner]`.
fn run(c: &Case, seed: u64) -> Option<(Vec<f64>, Vec<f64>)> {
    let s = sim(c.warp)?;
    let (xv, rv, wv) = inputs(c, seed);
    let n = xv.len();
    let mut x = Buf::new(c.x, n, c.misalign);
    let mut r = Buf::new(c.x, n, c.misalign);
    for i in 0..n {
        x.set(i, xv[i]);
        r.set(i, rv[i]);
    }
    let kw = c.w.map(|w| super::abi::kernel_weight_dtype(c.x, w));
    let mut w = Buf::new(kw.unwrap_or(c.x), c.channels, 0);
    for (i, v) in wv.iter().enumerate() {
        w.set(i, *v);
    }
    let len = c.outer * c.channels * c.inner;
    let mut out = Buf::new(c.x, len, 0);
    let mut sum = Buf::new(c.x, len, 0);
    let ci = (c.channels * c.inner) as u64;
    let call = Call {
        op: NormOp::new(&c.cfg(), Backend::Auto, c.fused),
        x_dtype: c.x,
        w_dtype: kw.unwrap_or(c.x),
        rows: c.outer as u64,
        hidden: c.channels as u64,
        operands: Operands {
            out: out.addr(),
            out_stride: c.inner as u64,
            sum_out: if c.fused { sum.addr() } else { 0 },
            sum_stride: c.inner as u64,
            x: x.addr(),
            x_stride: c.x_stride() as u64,
            residual: if c.fused { r.addr() } else { 0 },
            res_stride: c.x_stride() as u64,
            weight: if c.w.is_some() { w.addr() } else { 0 },
        },
        channels: Some(Channels {
            inner: c.inner as u64,
            x_outer: c.x_outer() as u64,
            res_outer: c.x_outer() as u64,
            out_outer: ci,
            sum_outer: ci,
            x_inner: c.step as u64,
            res_inner: c.step as u64,
        }),
        quant: None,
    };
    let shape = DeviceShape {
        warp_size: c.warp,
        multiprocessors: 1,
        stage_bytes: c.stage_bytes,
    };
    let (kernel, plan) = call.plan(shape, 0).expect("plan");
    let want = if c.stage_bytes > 0 && plan.vector {
        "_chan_staged"
    } else {
        "_chan"
    };
    assert!(kernel.ends_with(want), "{kernel}");
    let name = CString::new(kernel.clone()).unwrap();
    for l in call.launches(&plan) {
        // SAFETY: every address in the args points into a live buffer of this function sized
        // for the outer indices, channels, positions and strides the call states.
        let args = (&l.args as *const crate::gpu::abi::NormArgs).cast();
        let rc = unsafe { (s.launch)(name.as_ptr(), args, l.grid, plan.block, l.smem_bytes) };
        assert_eq!(rc, 0, "{kernel}: launch failed ({rc})");
    }
    let normed = (0..len).map(|i| out.get(i)).collect();
    let sums = if c.fused {
        (0..len).map(|i| sum.get(i)).collect()
    } else {
        Vec::new()
    };
    Some((normed, sums))
}

/// The f64 reference: per (outer, position), the norm over the channels.
fn reference(c: &Case, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let (xv, rv, wv) = inputs(c, seed);
    let acc = if c.x == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let len = c.outer * c.channels * c.inner;
    let (mut normed, mut sums) = (vec![0.0; len], vec![0.0; len]);
    let vs = c.vs();
    let eps = c.cfg().eps();
    for o in 0..c.outer {
        for i in 0..c.inner {
            let v: Vec<f64> = (0..c.channels)
                .map(|ch| {
                    let k = c.at(o, ch, i);
                    if c.fused {
                        round(xv[k] + rv[k], acc)
                    } else {
                        xv[k]
                    }
                })
                .collect();
            let ss: f64 = v[..vs].iter().map(|a| a * a).sum();
            let scale = if c.clamp {
                (vs as f64).sqrt() / ss.sqrt().max(eps)
            } else {
                1.0 / (ss / vs as f64 + eps).sqrt()
            };
            for (ch, a) in v.iter().enumerate() {
                let mut y = a * scale;
                let mut we = if c.w.is_some() { wv[ch] } else { 1.0 };
                if c.options {
                    y = round(y, c.x);
                    if c.w.is_some() {
                        we = round(1.0 + we, acc);
                    }
                }
                let at = (o * c.channels + ch) * c.inner + i;
                normed[at] = y * we;
                sums[at] = round(*a, c.x);
            }
        }
    }
    if !c.fused {
        sums.clear();
    }
    (normed, sums)
}

fn check(c: Case) {
    let seed = (c.channels * 131 + c.inner * 7 + c.pad) as u64 ^ u64::from(c.fused);
    let Some((got_n, got_s)) = run(&c, seed) else {
        return;
    };
    let (want_n, want_s) = reference(&c, seed);
    for (i, (g, w)) in got_n.iter().zip(&want_n).enumerate() {
        let b = tolerance(c.x, c.vs(), c.options, *w);
        assert!(
            (g - w).abs() <= b,
            "{c:?}: normed[{i}] {g} vs {w} (bound {b})"
        );
    }
    assert_eq!(got_s, want_s, "{c:?}: sum");
}

/// Shapes: held in registers (few and many channels, one position, positions in and past a
/// tile), and read twice (more channels than a block holds).
const SHAPES: [[usize; 3]; 7] = [
    [2, 7, 9],
    [3, 96, 40],
    [1, 384, 72],
    [2, 1, 17],
    [3, 5, 1],
    [1, 40, 1000],
    [2, 2500, 16],
];

#[test]
fn channel_shapes_and_dtypes() {
    for warp in [32, 64] {
        for shape in SHAPES {
            let dtypes = if shape[1] > 1000 {
                &DTYPES[3..5]
            } else {
                &DTYPES[..]
            };
            for &(x, w) in dtypes {
                for fused in [false, true] {
                    check(Case {
                        fused,
                        ..Case::plain(warp, (x, w), shape)
                    });
                }
            }
        }
    }
}

/// Padded and offset views, misaligned inputs and strided positions (the scalar path), the
/// options, a variance size and the clamp.
#[test]
fn channel_views_and_options() {
    for warp in [32, 64] {
        for shape in [[2usize, 7, 9], [3, 96, 40], [2, 2500, 16]] {
            for (x, w) in [(DType::BF16, Some(DType::F32)), (DType::F32, None)] {
                for fused in [false, true] {
                    for (pad, step, misalign) in [(8, 1, 0), (3, 1, 1), (0, 2, 0)] {
                        for (options, clamp, var_size) in
                            [(false, false, 0), (true, true, shape[1].div_ceil(2))]
                        {
                            check(Case {
                                pad,
                                step,
                                misalign,
                                fused,
                                options,
                                clamp,
                                var_size,
                                ..Case::plain(warp, (x, w), shape)
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The staged kernels (NVIDIA sm_80+; the H200's budget): one tile a block in shared memory, 2
/// to 16 lanes (1500 channels: the narrowest tiles), a partial last tile, padded views, every
/// dtype, plain and fused, the options, the clamp and the rescue.
#[test]
fn channel_staged() {
    let stage_bytes = 113 << 10;
    for shape in [
        [2usize, 7, 72],
        [3, 96, 40],
        [1, 384, 72],
        [2, 5, 16],
        [1, 1500, 16],
    ] {
        for &(x, w) in &DTYPES {
            for fused in [false, true] {
                for (pad, options, clamp) in [(0, false, false), (8, true, true)] {
                    check(Case {
                        pad,
                        fused,
                        options,
                        clamp,
                        stage_bytes,
                        ..Case::plain(32, (x, w), shape)
                    });
                }
            }
        }
        for (mag, eps) in [(1e25, 1e-5), (1e-25, 0.0)] {
            check(Case {
                mag,
                eps,
                stage_bytes,
                fused: true,
                ..Case::plain(32, (DType::BF16, Some(DType::F32)), shape)
            });
        }
    }
}

/// Sums of squares that overflow f32 (huge inputs) or whose mean falls below 1e-30 (tiny
/// inputs, eps 0): the rescue, position by position.
#[test]
fn channel_rescue() {
    for warp in [32, 64] {
        for shape in [[2, 7, 9], [1, 384, 72], [2, 2500, 16]] {
            for (x, w) in [
                (DType::F32, Some(DType::F32)),
                (DType::BF16, Some(DType::F32)),
            ] {
                for fused in [false, true] {
                    for (mag, eps) in [(1e25, 1e-5), (1e-25, 0.0)] {
                        check(Case {
                            fused,
                            mag,
                            eps,
                            ..Case::plain(warp, (x, w), shape)
                        });
                    }
                }
            }
        }
    }
}
