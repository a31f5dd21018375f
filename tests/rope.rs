//! `rms_norm_rope` / `qk_rms_norm_rope` on the CPU: the case matrix (`common::rope_cases`)
//! against the f64 reference (`common::rope_reference`) on `Backend::Cpu` and the portable
//! `Backend::Candle`; the reference itself against hand-computed values and Candle's unfused
//! path; what the CPU backend promises (views bit-identical to contiguous copies, the pair op
//! equal to two single calls, determinism, no backward); and every error.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_rmsnorm::{
    qk_rms_norm_rope, rms_norm_rope, Backend, HeadLayout, NormConfig, NormScope, RopeConfig,
    RopeStyle,
};
use common::rope_cases::{rope_matrix, run_rope_cases, RopeGroup};
use common::rope_reference::{rope_reference, Geometry};
use common::views::RopeView;
use common::*;
use rand::rngs::StdRng;

fn group(backend: Backend, g: RopeGroup) -> Result<()> {
    let cases = rope_matrix();
    run_rope_cases(&Device::Cpu, backend, cases.iter().filter(|c| c.group == g)).map(|_| ())
}

/// The matrix that the GPU tests run too holds, for bf16 and f16, cases with tables of the
/// input dtype (which the kernels read as they are) at head sizes of 16-byte chunks and at
/// others, and cases with f32 tables.
#[test]
fn matrix_has_tables_of_the_input_dtype() {
    let m = rope_matrix();
    for dt in [DType::BF16, DType::F16] {
        let of = |same: bool, chunks: bool| {
            m.iter()
                .filter(|c| c.dtype == dt && (c.tdtype == dt) == same)
                .filter(|c| (c.geom.head_dim % 16 == 0) == chunks)
                .count()
        };
        for (same, chunks) in [(true, true), (true, false), (false, true)] {
            assert!(
                of(same, chunks) > 0,
                "{dt:?}: no case with tables of the input dtype {same}, chunked {chunks}"
            );
        }
    }
}

#[test]
fn core_cpu() -> Result<()> {
    group(Backend::Cpu, RopeGroup::Core)
}

#[test]
fn core_portable() -> Result<()> {
    group(Backend::Candle, RopeGroup::Core)
}

#[test]
fn options_cpu() -> Result<()> {
    group(Backend::Cpu, RopeGroup::Options)
}

#[test]
fn options_portable() -> Result<()> {
    group(Backend::Candle, RopeGroup::Options)
}

#[test]
fn extremes_cpu() -> Result<()> {
    group(Backend::Cpu, RopeGroup::Extremes)
}

#[test]
fn extremes_portable() -> Result<()> {
    group(Backend::Candle, RopeGroup::Extremes)
}

fn geom(b: usize, l: usize, heads: usize, d: usize, scope: NormScope) -> Geometry {
    Geometry {
        batch: b,
        seq: l,
        heads,
        head_dim: d,
        scope,
        style: RopeStyle::Interleaved,
        layout: HeadLayout::Bhld,
    }
}

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-15 * w.abs(), "{got:?} vs {want:?}");
    }
}

/// The reference on values worked out by hand: the pairs of each style, the angle of each
/// position, the output layouts, the per-head norm, the rounding of y.
#[test]
fn reference_hand_computed() {
    let o = Opts::new(0.0);
    // One head of 4 at two positions; row 0 has rms sqrt(7.5), row 1 rms 2 (y = +-1).
    let x = [1.0, 2.0, 3.0, 4.0, 2.0, -2.0, 2.0, -2.0];
    let r0 = 7.5f64.sqrt();
    let row0 = |v: [f64; 4]| v.map(|v| v / r0);
    // Position 0: pair 0 by 0 rad, pair 1 by 90 degrees; position 1: pair 0 by 180 degrees.
    let (cos, sin) = ([1.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 0.0]);
    let g = geom(1, 2, 1, 4, NormScope::Full);
    let e = rope_reference(DType::F64, &x, None, &cos, &sin, &g, &o);
    close(
        &e.out,
        &[row0([1.0, 2.0, -4.0, 3.0]), [-1.0, 1.0, 1.0, -1.0]].concat(),
    );
    close(&e.mag[2..3], &[7.0 / r0]);
    // HalfSplit pairs (0, 2) and (1, 3).
    let g = Geometry {
        style: RopeStyle::HalfSplit,
        ..g
    };
    let e = rope_reference(DType::F64, &x, None, &cos, &sin, &g, &o);
    close(&e.out, &[row0([1.0, -4.0, 3.0, 2.0]), [-1.0; 4]].concat());
    // Two heads of 2, per-head norms (rms sqrt(12.5), sqrt(0.5), sqrt(50), sqrt(0.5)),
    // weight [1, 2], no rotation; Bhld puts head 0's positions first.
    let x = [3.0, 4.0, 0.0, 1.0, 6.0, 8.0, 1.0, 0.0];
    let (cos, sin) = ([1.0, 1.0], [0.0, 0.0]);
    let g = geom(1, 2, 2, 2, NormScope::PerHead);
    let w = [1.0, 2.0];
    let e = rope_reference(DType::F64, &x, Some(&w), &cos, &sin, &g, &o);
    let (r, s) = (12.5f64.sqrt(), 0.5f64.sqrt());
    let blhd = [
        3.0 / r,
        8.0 / r,
        0.0,
        2.0 / s,
        3.0 / r,
        8.0 / r,
        1.0 / s,
        0.0,
    ];
    close(&e.out, &[0, 1, 4, 5, 2, 3, 6, 7].map(|i| blhd[i]));
    let g = Geometry {
        layout: HeadLayout::Blhd,
        ..g
    };
    close(
        &rope_reference(DType::F64, &x, Some(&w), &cos, &sin, &g, &o).out,
        &blhd,
    );
    // bf16: y is rounded to bf16 before the rotation (1/3 is not a bf16 value).
    let g = geom(1, 1, 1, 2, NormScope::Full);
    let w = [1.0 / 3.0, 1.0];
    let e = rope_reference(DType::BF16, &[1.0, 1.0], Some(&w), &[1.0], &[0.0], &g, &o);
    let third = round_to(round_to(1.0 / 3.0, DType::F32), DType::BF16);
    assert_ne!(third, 1.0 / 3.0);
    assert_eq!(e.out, [third, 1.0]);
}

/// The reference agrees with Candle's unfused f32 path (candle_nn's rms_norm, transpose,
/// rope_i / rope): it reads the pairs and tables as `candle_nn::rotary_emb` does.
#[test]
fn reference_agrees_with_candle_nn() -> Result<()> {
    let (mut rng, _) = rng();
    let (b, l, h, d, rows) = (2, 5, 3, 16, 9);
    for scope in [NormScope::Full, NormScope::PerHead] {
        for style in [RopeStyle::Interleaved, RopeStyle::HalfSplit] {
            let g = Geometry {
                style,
                ..geom(b, l, h, d, scope)
            };
            let x = quantize(&randn(&mut rng, b * l * h * d, 1.0), DType::F32);
            let w = quantize(&randn(&mut rng, g.norm_len(), 1.0), DType::F32);
            let cos = quantize(&randn(&mut rng, rows * d / 2, 0.7), DType::F32);
            let sin = quantize(&randn(&mut rng, rows * d / 2, 0.7), DType::F32);
            let want = rope_reference(DType::F32, &x, Some(&w), &cos, &sin, &g, &Opts::new(1e-6));
            let xt = tensor(&x, &[b, l, h * d], DType::F32)?;
            let xt = match scope {
                NormScope::Full => xt,
                NormScope::PerHead => xt.reshape((b, l, h, d))?,
            };
            let wt = tensor(&w, &[w.len()], DType::F32)?;
            let y = candle_nn::ops::rms_norm(&xt, &wt, 1e-6)?.reshape((b, l, h, d))?;
            let y = y.transpose(1, 2)?.contiguous()?;
            let (ct, st) = (
                tensor(&cos, &[rows, d / 2], DType::F32)?,
                tensor(&sin, &[rows, d / 2], DType::F32)?,
            );
            let (ct, st) = (ct.narrow(0, 0, l)?, st.narrow(0, 0, l)?);
            let got = match style {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&y, &ct, &st)?,
                RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(&y, &ct, &st)?,
            };
            for ((g, w), m) in values(&got)?.iter().zip(&want.out).zip(&want.mag) {
                assert!((g - w).abs() <= 1e-5 * m, "{scope:?} {style:?}: {g} vs {w}");
            }
        }
    }
    Ok(())
}

fn cpu_cfg(heads: usize) -> RopeConfig {
    RopeConfig::new(heads, NormConfig::new(1e-6).with_backend(Backend::Cpu))
}

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(values(t)?.iter().map(|v| v.to_bits()).collect())
}

/// Random normal values of `dt` on the CPU.
fn rand_t(rng: &mut StdRng, dims: &[usize], dt: DType, sd: f64) -> Result<Tensor> {
    tensor(&randn(rng, dims.iter().product(), sd), dims, dt)
}

/// The pair op gives the bits of two single calls, each with its own weight (and none).
#[test]
fn qk_equals_two_single_calls() -> Result<()> {
    let (mut rng, _) = rng();
    let (b, l, h, d) = (2, 7, 3, 64);
    let (cos, sin) = (
        rand_t(&mut rng, &[9, d / 2], DType::F32, 0.7)?,
        rand_t(&mut rng, &[9, d / 2], DType::F32, 0.7)?,
    );
    for scope in [NormScope::Full, NormScope::PerHead] {
        let n = if scope == NormScope::Full { h * d } else { d };
        let (q, k) = (
            rand_t(&mut rng, &[b, l, h * d], DType::BF16, 1.0)?,
            rand_t(&mut rng, &[b, l, h * d], DType::BF16, 3.0)?,
        );
        let (wq, wk) = (
            rand_t(&mut rng, &[n], DType::F32, 1.0)?,
            rand_t(&mut rng, &[n], DType::BF16, 1.0)?,
        );
        let cfg = cpu_cfg(h).with_scope(scope).with_layout(HeadLayout::Blhd);
        for wk in [Some(&wk), None] {
            let (qo, ko) = qk_rms_norm_rope(&q, &k, Some(&wq), wk, &cos, &sin, &cfg)?;
            assert_eq!(
                bits(&qo)?,
                bits(&rms_norm_rope(&q, Some(&wq), &cos, &sin, &cfg)?)?
            );
            assert_eq!(bits(&ko)?, bits(&rms_norm_rope(&k, wk, &cos, &sin, &cfg)?)?);
            assert_ne!(bits(&qo)?, bits(&ko)?);
        }
    }
    Ok(())
}

/// Views read in place (or copied first) give the bits of a contiguous copy; runs repeat
/// bit for bit on a tensor large enough for several threads.
#[test]
fn views_and_reruns_are_bitwise_equal() -> Result<()> {
    let (mut rng, _) = rng();
    let (h, d) = (5, 80);
    let (cos, sin) = (
        rand_t(&mut rng, &[20, d / 2], DType::F32, 0.7)?,
        rand_t(&mut rng, &[20, d / 2], DType::F32, 0.7)?,
    );
    for dt in [DType::F32, DType::BF16] {
        let x = rand_t(&mut rng, &[2, 17, h * d], dt, 2.0)?;
        let w = rand_t(&mut rng, &[h * d], dt, 1.0)?;
        let cfg = cpu_cfg(h);
        let want = bits(&rms_norm_rope(&x, Some(&w), &cos, &sin, &cfg)?)?;
        for view in RopeView::ALL {
            let v = view.make(&x, &Device::Cpu)?;
            let got = bits(&rms_norm_rope(&v, Some(&w), &cos, &sin, &cfg)?)?;
            assert!(got == want, "{dt:?} {view:?}");
        }
    }
    let (h, d) = (40, 128);
    let x = rand_t(&mut rng, &[2, 64, h * d], DType::BF16, 1.0)?;
    let (cos, sin) = (
        rand_t(&mut rng, &[64, d / 2], DType::F32, 0.7)?,
        rand_t(&mut rng, &[64, d / 2], DType::F32, 0.7)?,
    );
    let cfg = cpu_cfg(h).with_scope(NormScope::PerHead);
    let a = rms_norm_rope(&x, None, &cos, &sin, &cfg)?;
    assert_eq!(
        bits(&a)?,
        bits(&rms_norm_rope(&x, None, &cos, &sin, &cfg)?)?
    );
    Ok(())
}

/// No backward: a gradient through the CPU op is an error, not a silent zero.
#[test]
fn no_backward() -> Result<()> {
    let (mut rng, _) = rng();
    let x = Var::from_tensor(&rand_t(&mut rng, &[1, 3, 8], DType::F32, 1.0)?)?;
    let (cos, sin) = (
        rand_t(&mut rng, &[3, 2], DType::F32, 0.7)?,
        rand_t(&mut rng, &[3, 2], DType::F32, 0.7)?,
    );
    let y = rms_norm_rope(x.as_tensor(), None, &cos, &sin, &cpu_cfg(2))?;
    assert!(y.sum_all()?.backward().is_err());
    Ok(())
}

/// The error text must name the op and contain every needle (`a|b`: either).
fn expect_err<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) {
    let msg = match r {
        Ok(v) => panic!("expected an error mentioning {needles:?}, got {v:?}"),
        // The first line: the rest is a backtrace when RUST_BACKTRACE is set.
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
    };
    assert!(
        msg.contains("candle_rmsnorm::rms_norm_rope"),
        "{msg:?} names no op"
    );
    for n in needles {
        assert!(
            n.split('|').any(|a| msg.contains(a)),
            "error {msg:?} should mention {n:?}"
        );
    }
}

#[test]
fn errors() -> Result<()> {
    let z = |dims: &[usize], dt| Tensor::zeros(dims, dt, &Device::Cpu);
    let (f, x) = (DType::F32, z(&[1, 5, 16], DType::F32)?);
    let (cos, sin) = (z(&[5, 4], f)?, z(&[5, 4], f)?);
    let cfg = RopeConfig::new(2, NormConfig::new(1e-6)); // head size 8
    let one = |x: &Tensor, w: Option<&Tensor>, c: &Tensor, s: &Tensor, cfg: &RopeConfig| {
        rms_norm_rope(x, w, c, s, cfg)
    };
    // x: rank, dtype (the argument is `x`; the implementation may call it q).
    let xm = "x must|q must";
    let r = one(&z(&[5, 16], f)?, None, &cos, &sin, &cfg);
    expect_err(r, &[xm, "rank 3", "[5, 16]"]);
    let r = one(&z(&[1, 1, 5, 16], f)?, None, &cos, &sin, &cfg);
    expect_err(r, &[xm, "rank 3", "[1, 1, 5, 16]"]);
    let r = one(&z(&[1, 5, 16], DType::U32)?, None, &cos, &sin, &cfg);
    expect_err(r, &[xm, "f32", "U32"]);
    // heads: not dividing the dim, an odd head size, zero.
    for heads in [3, 16, 0] {
        let c = RopeConfig::new(heads, NormConfig::new(1e-6));
        let given = format!("got {heads}");
        expect_err(
            one(&x, None, &cos, &sin, &c),
            &["heads must", "16", "even", &given],
        );
    }
    // The norm's options.
    let n = NormConfig::new(1e-6);
    for (norm, given) in [
        (n.with_dim(1), "Some(1)"),
        (n.with_variance_size(4), "Some(4)"),
    ] {
        let r = one(&x, None, &cos, &sin, &cfg.with_norm(norm));
        expect_err(r, &["with_dim", "with_variance_size", given]);
    }
    let r = one(&x, None, &cos, &sin, &cfg.with_norm(NormConfig::new(-1e-6)));
    expect_err(r, &["eps must", ">= 0", "-0.000001"]);
    // Weights: the length of the norm, rank 1, a float dtype.
    for (scope, n, wrong) in [
        (NormScope::Full, "[16]", 8),
        (NormScope::PerHead, "[8]", 16),
    ] {
        let r = one(
            &x,
            Some(&z(&[wrong], f)?),
            &cos,
            &sin,
            &cfg.with_scope(scope),
        );
        expect_err(r, &["weight must", n, &format!("[{wrong}]")]);
    }
    let r = one(&x, Some(&z(&[1, 16], f)?), &cos, &sin, &cfg);
    expect_err(r, &["weight must", "rank 1", "[1, 16]"]);
    let r = one(&x, Some(&z(&[16], DType::U8)?), &cos, &sin, &cfg);
    expect_err(r, &["weight must", "U8"]);
    // Tables: fewer rows than L, width not D / 2, rank, dtype.
    let r = one(&x, None, &z(&[4, 4], f)?, &sin, &cfg);
    expect_err(r, &["cos must", ">= 5, 4", "[4, 4]"]);
    let r = one(&x, None, &cos, &z(&[5, 8], f)?, &cfg);
    expect_err(r, &["sin must", ">= 5, 4", "[5, 8]"]);
    let r = one(&x, None, &z(&[20], f)?, &sin, &cfg);
    expect_err(r, &["cos must", "rank 2", "[20]"]);
    let r = one(&x, None, &cos, &z(&[5, 4], DType::I64)?, &cfg);
    expect_err(r, &["sin must", "I64"]);
    // k: another shape or dtype; the pair op checks the rest as the single op does.
    let qk = |k: &Tensor, wk: Option<&Tensor>, cfg: &RopeConfig| {
        qk_rms_norm_rope(&x, k, None, wk, &cos, &sin, cfg)
    };
    let r = qk(&z(&[1, 4, 16], f)?, None, &cfg);
    expect_err(r, &["k must", "[1, 5, 16]", "[1, 4, 16]"]);
    expect_err(
        qk(&z(&[1, 5, 16], DType::BF16)?, None, &cfg),
        &["k must", "F32", "BF16"],
    );
    expect_err(
        qk(&x, Some(&z(&[3], f)?), &cfg),
        &["k_weight must", "[16]", "[3]"],
    );
    let r = qk(&x, None, &RopeConfig::new(3, NormConfig::new(1e-6)));
    expect_err(r, &["heads must"]);
    Ok(())
}
