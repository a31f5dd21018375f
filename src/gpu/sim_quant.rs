//! The quantised-output kernels (`{op}_{dtype}[_rows]_quant`, `hip/quant.h`) on the host
//! simulator (see `sim.rs`). Each case runs the plain kernel of the same plan and the quantised
//! one on the same inputs: the quantised bytes and scales must be exactly the host quantiser's
//! (`crate::quant`, itself checked against a search over every e4m3 value) applied to the plain
//! kernel's output, and the fused sums the same bits. Every dtype and weight kind, both formats,
//! dynamic and static scales (saturating), the options, odd sizes and tails, strided and
//! misaligned rows (the scalar path), rows kept in registers and read twice, huge, zero and NaN
//! rows, warp sizes 32 and 64.

use super::abi::NormArgs;
use super::call::{Call, DeviceShape, Operands, QuantCall};
use super::sim::{case_config, sim, Buf, Inputs, DTYPES};
use crate::config::Backend;
use crate::op::NormOp;
use crate::quant::{quantise_row, QuantDType, QuantSpec};
use candle_core::DType;
use std::ffi::CString;

#[derive(Debug, Clone, Copy)]
struct Case {
    warp: u32,
    x: DType,
    w: Option<DType>,
    rows: usize,
    hidden: usize,
    pad: usize,
    misalign: usize,
    fused: bool,
    options: bool,
    spec: QuantSpec,
    /// Inputs are uniform in [-2, 2) times this; row 1 is all zeros and row 2 holds a NaN when
    /// there are enough rows.
    mag: f64,
    /// A staging budget (bytes a block; 0: none), as NVIDIA sm_80+ has: the staged kernels.
    stage_bytes: u64,
}

/// What one run wrote: values (normed, or bytes), scales, sums.
struct Run {
    out: Vec<f64>,
    bytes: Vec<u8>,
    scales: Vec<f32>,
    sums: Vec<f64>,
    /// The kernel that ran.
    kernel: String,
}

fn run(c: Case, quant: bool) -> Option<Run> {
    let s = sim(c.warp)?;
    let (h, rows) = (c.hidden, c.rows);
    let stride = h + c.pad;
    let n = rows * stride;
    let mut rng = Inputs((h * 131 + rows * 7 + c.pad) as u64 | 1);
    let mut x = Buf::new(c.x, n, c.misalign);
    let mut r = Buf::new(c.x, n, c.misalign);
    for i in 0..n {
        let row = i / stride;
        let v = match row {
            1 => 0.0,
            2 if i % stride == h / 2 => f64::NAN,
            _ => rng.next() * c.mag,
        };
        x.set(i, v);
        r.set(i, if row == 1 { 0.0 } else { rng.next() * c.mag });
    }
    let kw = c.w.map(|w| super::abi::kernel_weight_dtype(c.x, w));
    let mut w = Buf::new(kw.unwrap_or(c.x), h, 0);
    for i in 0..h {
        w.set(i, 1.0 + 0.5 * rng.next());
    }
    let out_dt = if quant { DType::U8 } else { c.x };
    let mut out = Buf::new(out_dt, rows * h, 0);
    let mut scales = Buf::new(DType::F32, rows, 0);
    let mut sum = Buf::new(c.x, rows * h, 0);
    let call = Call {
        op: NormOp::new(
            &case_config(1e-5, None, 0, c.options),
            Backend::Auto,
            c.fused,
        ),
        x_dtype: c.x,
        w_dtype: kw.unwrap_or(c.x),
        rows: rows as u64,
        hidden: h as u64,
        operands: Operands {
            out: out.addr(),
            out_stride: h as u64,
            sum_out: if c.fused { sum.addr() } else { 0 },
            sum_stride: if c.fused { h as u64 } else { 0 },
            x: x.addr(),
            x_stride: stride as u64,
            residual: if c.fused { r.addr() } else { 0 },
            res_stride: if c.fused { stride as u64 } else { 0 },
            weight: if c.w.is_some() { w.addr() } else { 0 },
        },
        channels: None,
        quant: Some(QuantCall {
            scales: scales.addr(),
            spec: c.spec,
        }),
    };
    let shape = DeviceShape {
        warp_size: c.warp,
        multiprocessors: 1,
        stage_bytes: c.stage_bytes,
    };
    // The plain run takes the quantised run's plan (its block size, hence its sums' order).
    let (kernel, plan) = call.plan(shape, 0).expect("plan");
    let kernel = match quant {
        true => kernel,
        false => kernel
            .strip_suffix("_quant")
            .expect("a _quant kernel")
            .to_string(),
    };
    let call = Call {
        quant: call.quant.filter(|_| quant),
        ..call
    };
    let name = CString::new(kernel.clone()).unwrap();
    for l in call.launches(&plan) {
        // SAFETY: every address in the args points into a live buffer of this function sized
        // for the rows, strides and hidden size the call states (the kernels' contract).
        let args = (&l.args as *const NormArgs).cast();
        let rc = unsafe { (s.launch)(name.as_ptr(), args, l.grid, plan.block, l.smem_bytes) };
        assert_eq!(rc, 0, "{kernel}: launch failed ({rc})");
    }
    let mut run = Run {
        out: Vec::new(),
        bytes: Vec::new(),
        scales: (0..rows).map(|i| scales.get(i) as f32).collect(),
        sums: Vec::new(),
        kernel,
    };
    for i in 0..rows * h {
        if quant {
            run.bytes.push(out.byte(i));
        } else {
            run.out.push(out.get(i));
        }
        if c.fused {
            run.sums.push(sum.get(i));
        }
    }
    Some(run)
}

/// The case's quantised run against the host quantiser of its plain run; the quantised
/// kernel's name (None: no simulator).
fn check(c: Case) -> Option<String> {
    let (Some(plain), Some(q)) = (run(c, false), run(c, true)) else {
        return None;
    };
    let h = c.hidden;
    let mut want = vec![0u8; h];
    for row in 0..c.rows {
        let y: Vec<f32> = plain.out[row * h..(row + 1) * h]
            .iter()
            .map(|&v| v as f32)
            .collect();
        let scale = quantise_row(&c.spec, &y, &mut want);
        assert_eq!(
            q.scales[row].to_bits(),
            scale.to_bits(),
            "{c:?}: row {row} scale {} vs {scale}",
            q.scales[row]
        );
        let got = &q.bytes[row * h..(row + 1) * h];
        if let Some(e) = (0..h).find(|&e| got[e] != want[e]) {
            panic!(
                "{c:?}: row {row} element {e}: byte {:#04x} vs {:#04x} (y {})",
                got[e], want[e], y[e]
            );
        }
    }
    let same = plain
        .sums
        .iter()
        .zip(&q.sums)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{c:?}: sums differ");
    Some(q.kernel)
}

const SPECS: [QuantSpec; 4] = [
    QuantSpec {
        dtype: QuantDType::F8E4M3,
        fixed: None,
    },
    QuantSpec {
        dtype: QuantDType::I8,
        fixed: None,
    },
    // Small static scales: most values saturate.
    QuantSpec {
        dtype: QuantDType::F8E4M3,
        fixed: Some(1.0 / 256.0),
    },
    QuantSpec {
        dtype: QuantDType::I8,
        fixed: Some(0.01),
    },
];

fn case(
    warp: u32,
    dt: (DType, Option<DType>),
    rows: usize,
    hidden: usize,
    spec: QuantSpec,
) -> Case {
    Case {
        warp,
        x: dt.0,
        w: dt.1,
        rows,
        hidden,
        pad: 0,
        misalign: 0,
        fused: false,
        options: false,
        spec,
        mag: 1.0,
        stage_bytes: 0,
    }
}

#[test]
fn every_dtype_format_and_team_shape() {
    for warp in [32, 64] {
        for (i, &dt) in DTYPES.iter().enumerate() {
            for (j, &spec) in SPECS.iter().enumerate() {
                // Rows of a team, of a block in registers, read twice (odd tails).
                for &h in &[40, 203, 1000 + 8 * (i + j), 20_011] {
                    let fused = (i + j + h) % 2 == 0;
                    check(Case {
                        fused,
                        ..case(warp, dt, 5, h, spec)
                    });
                }
            }
        }
    }
}

#[test]
fn options_views_and_extremes() {
    let bf = (DType::BF16, Some(DType::BF16));
    let f16w = (DType::F16, Some(DType::F32));
    for spec in SPECS {
        for fused in [false, true] {
            let c = case(32, bf, 6, 264, spec);
            check(Case {
                fused,
                options: true,
                ..c
            });
            check(Case {
                fused,
                pad: 5,
                misalign: 3,
                ..case(32, f16w, 6, 77, spec)
            });
            // Huge (the rescue: y still in range) and tiny values.
            check(Case {
                fused,
                mag: 1e30,
                ..case(64, (DType::F32, None), 4, 300, spec)
            });
            check(Case {
                fused,
                mag: 1e-30,
                ..case(32, (DType::F32, Some(DType::F32)), 4, 3000, spec)
            });
            check(Case {
                fused,
                mag: 3e4,
                ..case(32, (DType::F16, Some(DType::F16)), 4, 24, spec)
            });
        }
    }
}

/// The staged kernels (`_staged_quant`, `_rows_staged_quant`): rows of a team and of a block,
/// every dtype, both formats, the options, huge rows (the rescue), scalar rows (not staged).
#[test]
fn staged_kernels() {
    const BUDGET: u64 = 48 << 10;
    for (i, &dt) in DTYPES.iter().enumerate() {
        for (j, &spec) in SPECS.iter().enumerate() {
            for &h in &[64, 256, 1024, 2048 + 64 * i] {
                for fused in [false, true] {
                    let k = check(Case {
                        fused,
                        options: (i + j) % 2 == 0,
                        stage_bytes: BUDGET,
                        ..case(32, dt, 7, h, spec)
                    });
                    if let Some(k) = k {
                        assert!(k.ends_with("staged_quant"), "{k} for {dt:?} {h}");
                    }
                }
            }
        }
    }
    for spec in SPECS {
        check(Case {
            mag: 1e30,
            stage_bytes: BUDGET,
            ..case(32, (DType::F32, None), 4, 512, spec)
        });
        check(Case {
            fused: true,
            misalign: 1,
            stage_bytes: BUDGET,
            ..case(32, (DType::BF16, Some(DType::BF16)), 5, 512, spec)
        });
    }
}
