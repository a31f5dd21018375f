//! The q/k norm + rotary embedding kernels (`hip/norm_rope.h`) on the host simulator (see
//! `sim.rs`), planned by [`plan_rope`] exactly as the launchers plan them, against an f64
//! reference written here: every dtype, both scopes, both pairings, both layouts, q alone and
//! q + k, weights or none (of the compute or the input dtype), the options, padded and
//! misaligned rows (the single-value kernel),
//! head sizes that are not whole chunks, huge and tiny rows (the rescue), NaN, warps of 32 and
//! 64.

use super::abi::{
    RopeArgs, ROPE_CLAMP_NORM, ROPE_HALF_SPLIT, ROPE_OFFSET_ONE, ROPE_PER_HEAD,
    ROPE_ROUND_BEFORE_WEIGHT, ROPE_TABLES_IN_T, ROPE_WEIGHT_IN_T,
};
use super::rope_plan::plan_rope;
use super::sim::{round, sim, tolerance, Buf, Inputs};
use candle_core::DType;
use std::ffi::CString;

#[derive(Debug, Clone, Copy)]
struct Case {
    warp: u32,
    dt: DType,
    batch: usize,
    seq: usize,
    heads: usize,
    d: usize,
    per_head: bool,
    half: bool,
    /// `[B, heads, L, D]`; else `[B, L, heads, D]`.
    bhld: bool,
    tensors: usize,
    weight: bool,
    /// Rounding before the weight and `1 + w`.
    options: bool,
    /// Rounding before the weight and weights of the input dtype (the `_wt` kernels).
    wt: bool,
    /// Tables of the input dtype (`ROPE_TABLES_IN_T`; bf16/f16 only).
    tt: bool,
    clamp: bool,
    /// Extra elements after each row of the inputs.
    pad: usize,
    /// Elements the inputs start past a 16-byte boundary.
    misalign: usize,
    /// Inputs uniform in [-2, 2) times this.
    mag: f64,
    /// A NaN at element 1 of this row of q (`usize::MAX`: none).
    nan_row: usize,
}

impl Case {
    fn plain(warp: u32, dt: DType, heads: usize, d: usize) -> Self {
        Self {
            warp,
            dt,
            batch: 2,
            seq: 5,
            heads,
            d,
            per_head: false,
            half: false,
            bhld: true,
            tensors: 2,
            weight: true,
            options: false,
            wt: false,
            tt: false,
            clamp: false,
            pad: 0,
            misalign: 0,
            mag: 1.0,
            nan_row: usize::MAX,
        }
    }

    fn dim(&self) -> usize {
        self.heads * self.d
    }

    fn norm_len(&self) -> usize {
        if self.per_head {
            self.d
        } else {
            self.dim()
        }
    }

    fn cdt(&self) -> DType {
        if self.dt == DType::F64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// The tables' dtype.
    fn tdt(&self) -> DType {
        if self.tt {
            self.dt
        } else {
            self.cdt()
        }
    }

    /// The weights' dtype.
    fn wdt(&self) -> DType {
        if self.wt {
            self.dt
        } else {
            self.cdt()
        }
    }

    fn eps(&self) -> f64 {
        if self.clamp {
            1.2 * (self.norm_len() as f64).sqrt() * self.mag
        } else if self.mag < 1e-20 {
            0.0 // tiny rows: only the rescue keeps their mean of squares
        } else {
            1e-5
        }
    }

    /// Output element of (tensor, b, l, head, e).
    fn out_index(&self, t: usize, b: usize, l: usize, h: usize, e: usize) -> usize {
        let (bs, s, hs, d) = (self.batch, self.seq, self.heads, self.d);
        let base = t * bs * s * hs * d;
        base + if self.bhld {
            ((b * hs + h) * s + l) * d + e
        } else {
            ((b * s + l) * hs + h) * d + e
        }
    }
}

/// The case's inputs: x values (per tensor, row-major rows of `dim`), weights, cos, sin.
type Values = (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<f64>, Vec<f64>);

fn values(c: Case, seed: u64) -> Values {
    let mut g = Inputs(seed | 1);
    let rows = c.batch * c.seq;
    let xs = (0..c.tensors)
        .map(|t| {
            (0..rows * c.dim())
                .map(|i| {
                    if t == 0 && i / c.dim() == c.nan_row && i % c.dim() == 1 {
                        f64::NAN
                    } else {
                        round(g.next() * c.mag, c.dt)
                    }
                })
                .collect()
        })
        .collect();
    let ws = (0..c.tensors)
        .map(|_| {
            (0..c.norm_len())
                .map(|_| round(1.0 + 0.25 * g.next(), c.wdt()))
                .collect()
        })
        .collect();
    let ang: Vec<f64> = (0..c.seq * c.d / 2).map(|_| 1.6 * g.next()).collect();
    let cos = ang.iter().map(|a| round(a.cos(), c.tdt())).collect();
    let sin = ang.iter().map(|a| round(a.sin(), c.tdt())).collect();
    (xs, ws, cos, sin)
}

/// The f64 reference: `(value, bound)` of every output element.
fn reference(c: Case, v: &Values) -> Vec<(f64, f64)> {
    let (xs, ws, cos, sin) = v;
    let (d, n) = (c.d, c.norm_len());
    let mut out = vec![(0.0, 0.0); c.tensors * c.batch * c.seq * c.dim()];
    for t in 0..c.tensors {
        for r in 0..c.batch * c.seq {
            let row = &xs[t][r * c.dim()..(r + 1) * c.dim()];
            for h in 0..c.heads {
                let g0 = if c.per_head { h * d } else { 0 };
                let ss: f64 = row[g0..g0 + n].iter().map(|x| x * x).sum();
                let mean = ss / n as f64;
                let under = if c.clamp {
                    mean.max(c.eps() * c.eps() / n as f64)
                } else {
                    mean + c.eps()
                };
                let scale = 1.0 / under.sqrt();
                let rb = c.options || c.wt;
                let y = |e: usize| {
                    let mut m = row[h * d + e] * scale;
                    if rb {
                        m = round(m, c.dt);
                    }
                    let w = if c.weight {
                        ws[t][h * d + e - g0] + if c.options { 1.0 } else { 0.0 }
                    } else {
                        1.0
                    };
                    round(m * round(w, c.cdt()), c.dt)
                };
                for i in 0..d / 2 {
                    let (a, b) = if c.half {
                        (i, i + d / 2)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (ya, yb) = (y(a), y(b));
                    let (cs, sn) = (cos[(r % c.seq) * d / 2 + i], sin[(r % c.seq) * d / 2 + i]);
                    let m = ya.abs() + yb.abs();
                    // y may sit one ulp off where the f32 sum moves a rounding boundary.
                    let bound = tolerance(c.dt, n, rb, m) * 2.0 + m * 2f64.powi(-22);
                    let ulp_y = match c.dt {
                        DType::BF16 => 2f64.powi(-7),
                        DType::F16 => 2f64.powi(-10),
                        DType::F32 => 2f64.powi(-23),
                        _ => 2f64.powi(-52),
                    } * m;
                    let (bb, l) = (r / c.seq, r % c.seq);
                    out[c.out_index(t, bb, l, h, a)] = (ya * cs - yb * sn, bound + ulp_y);
                    out[c.out_index(t, bb, l, h, b)] = (ya * sn + yb * cs, bound + ulp_y);
                }
            }
        }
    }
    out
}

/// Runs `c` on the simulator; the outputs, or `None` when the simulator is not asked for.
fn run(c: Case, v: &Values) -> Option<Vec<f64>> {
    let s = sim(c.warp)?;
    let (xs, ws, cos, sin) = v;
    let (rows, dim) = (c.batch * c.seq, c.dim());
    let stride = dim + c.pad;
    let xb: Vec<Buf> = (0..c.tensors)
        .map(|t| {
            let mut b = Buf::new(c.dt, rows * stride, c.misalign);
            for r in 0..rows {
                for e in 0..dim {
                    b.set(r * stride + e, xs[t][r * dim + e]);
                }
                for e in dim..stride {
                    b.set(r * stride + e, f64::NAN);
                }
            }
            b
        })
        .collect();
    let wb: Vec<Buf> = ws
        .iter()
        .map(|w| {
            let mut b = Buf::new(c.wdt(), w.len(), 0);
            for (i, v) in w.iter().enumerate() {
                b.set(i, *v);
            }
            b
        })
        .collect();
    let table = |vals: &[f64]| {
        let mut b = Buf::new(c.tdt(), vals.len(), 0);
        for (i, v) in vals.iter().enumerate() {
            b.set(i, *v);
        }
        b
    };
    let (cb, sb) = (table(cos), table(sin));
    let len = c.tensors * rows * dim;
    let mut out = Buf::new(c.dt, len, 0);
    for i in 0..len {
        out.set(i, f64::NAN);
    }
    let (h, d, l) = (c.heads as i64, c.d as i64, c.seq as i64);
    let (ob, ol, oh) = if c.bhld {
        (h * l * d, d, l * d)
    } else {
        (l * h * d, h * d, d)
    };
    let mut flags = 0;
    for (on, bit) in [
        (c.half, ROPE_HALF_SPLIT),
        (c.per_head, ROPE_PER_HEAD),
        (c.options, ROPE_ROUND_BEFORE_WEIGHT | ROPE_OFFSET_ONE),
        (c.wt, ROPE_ROUND_BEFORE_WEIGHT | ROPE_WEIGHT_IN_T),
        (c.tt, ROPE_TABLES_IN_T),
        (c.clamp, ROPE_CLAMP_NORM),
    ] {
        if on {
            flags |= bit;
        }
    }
    let addr = |i: usize, bufs: &[Buf]| bufs.get(i).map_or(0, Buf::addr);
    let n = c.norm_len() as f64;
    let a = RopeArgs {
        out: out.addr(),
        x: [addr(0, &xb), addr(1, &xb)],
        w: if c.weight {
            [addr(0, &wb), addr(1, &wb)]
        } else {
            [0, 0]
        },
        cos: cb.addr(),
        sin: sb.addr(),
        x_b: [(c.seq * stride) as i64; 2],
        x_l: [stride as i64; 2],
        out_t: (rows * dim) as i64,
        out_b: ob,
        out_l: ol,
        out_h: oh,
        batch: c.batch as i64,
        seq: l,
        eps: if c.clamp {
            c.eps() * c.eps() / n
        } else {
            c.eps()
        },
        flags,
        heads: c.heads as u32,
        head_dim: c.d as u32,
        tensors: c.tensors as u32,
        ..Default::default()
    };
    let p = plan_rope(a, c.dt, c.warp).expect("plan");
    let vector = c.misalign == 0 && c.pad.is_multiple_of(16 / c.dt.size_in_bytes());
    let whole = c.d.is_multiple_of(2 * 16 / c.dt.size_in_bytes());
    assert_eq!(
        !p.kernel.ends_with("_scalar"),
        vector && whole,
        "{c:?}: {}",
        p.kernel
    );
    assert_eq!(p.kernel.contains("_wt"), c.wt, "{c:?}: {}", p.kernel);
    let name = CString::new(p.kernel.clone()).unwrap();
    // SAFETY: every address in the args points into a live buffer of this function sized for
    // the rows, strides and heads the args state.
    let rc = unsafe {
        (s.launch)(
            name.as_ptr(),
            (&p.args as *const RopeArgs).cast(),
            p.grid,
            p.block,
            0,
        )
    };
    assert_eq!(rc, 0, "{}: launch failed ({rc})", p.kernel);
    Some((0..len).map(|i| out.get(i)).collect())
}

fn check(c: Case) {
    let seed = (c.heads * 7919 + c.d * 31 + c.pad) as u64 ^ u64::from(c.half);
    let v = values(c, seed);
    let Some(got) = run(c, &v) else { return };
    let want = reference(c, &v);
    for (i, (g, (w, b))) in got.iter().zip(&want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            (g - w).abs() <= *b
        };
        assert!(ok, "{c:?}: element {i}: got {g}, want {w} (bound {b})");
    }
}

const DTS: [DType; 4] = [DType::BF16, DType::F16, DType::F32, DType::F64];

#[test]
fn scopes_styles_layouts() {
    for warp in [32, 64] {
        for dt in DTS {
            for (heads, d) in [(3, 16), (5, 64), (1, 128), (4, 8)] {
                for (per_head, half, bhld) in [
                    (false, false, true),
                    (true, false, false),
                    (false, true, false),
                    (true, true, true),
                ] {
                    check(Case {
                        per_head,
                        half,
                        bhld,
                        ..Case::plain(warp, dt, heads, d)
                    });
                }
            }
        }
    }
}

#[test]
fn views_sizes_options() {
    for dt in DTS {
        let base = Case::plain(32, dt, 3, 32);
        check(Case { pad: 8, ..base });
        check(Case {
            misalign: 1,
            ..base
        }); // single values
        check(Case {
            pad: 3,
            per_head: true,
            ..base
        });
        check(Case {
            d: 80,
            per_head: true,
            ..base
        }); // not whole chunks of 2-byte types
        check(Case {
            d: 6,
            heads: 5,
            half: true,
            ..base
        });
        check(Case {
            d: 250,
            heads: 1,
            misalign: 1,
            ..base
        });
        check(Case {
            tensors: 1,
            weight: false,
            ..base
        });
        check(Case {
            options: true,
            ..base
        });
        check(Case {
            options: true,
            per_head: true,
            half: true,
            ..base
        });
        check(Case {
            clamp: true,
            ..base
        });
        check(Case {
            clamp: true,
            per_head: true,
            misalign: 1,
            ..base
        });
        check(Case {
            seq: 37,
            batch: 1,
            heads: 40,
            d: 16,
            per_head: true,
            ..base
        });
    }
}

#[test]
fn extremes() {
    for dt in [DType::F32, DType::BF16] {
        let base = Case::plain(32, dt, 4, 32);
        for per_head in [false, true] {
            for mag in [1e30, 1e-30] {
                check(Case {
                    mag,
                    per_head,
                    ..base
                });
                check(Case {
                    mag,
                    per_head,
                    misalign: 1,
                    warp: 64,
                    ..base
                });
            }
            check(Case {
                nan_row: 3,
                per_head,
                ..base
            });
        }
    }
}

/// Weights of the input dtype (`_wt` kernels: one packed multiply a pair where the target has
/// it, the f32 product elsewhere, as here), tables of the input dtype (`ROPE_TABLES_IN_T`: each
/// angle widened from bf16/f16 as it is read), and both: chunks and single values, both scopes
/// and pairings, q alone and q + k, one batch and several, warps of 32 and 64, huge and tiny
/// rows, NaN.
#[test]
fn weights_and_tables_of_the_input_dtype() {
    for dt in [DType::BF16, DType::F16] {
        for warp in [32, 64] {
            for (wt, tt) in [(true, false), (false, true), (true, true)] {
                let base = Case {
                    wt,
                    tt,
                    ..Case::plain(warp, dt, 5, 64)
                };
                check(base);
                check(Case {
                    misalign: 1,
                    ..base
                });
                check(Case {
                    per_head: true,
                    half: true,
                    bhld: false,
                    ..base
                });
                check(Case {
                    tensors: 1,
                    batch: 1,
                    seq: 9,
                    ..base
                });
                check(Case {
                    d: 80,
                    per_head: true,
                    ..base
                });
                check(Case { nan_row: 2, ..base });
                // f16 holds neither; bf16 rows of these magnitudes go through the rescue.
                if dt == DType::BF16 {
                    for mag in [1e30, 1e-30] {
                        check(Case { mag, ..base });
                    }
                }
            }
        }
    }
}
