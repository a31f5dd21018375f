//! The VAE's building blocks: the causal 3-D convolution and the channel RMS norm.

use candle_core::{Device, Result, Tensor};
use wan_t2v::norms::{self, NormImpl};
use wan_t2v::{rng, vae};

/// Plain-loop causal conv3d: x [T, Cin, H, W], w [Cout, Cin, kt, k, k], front time padding kt-1,
/// spatial padding k/2.
fn conv3d_reference(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 5], b: &[f32]) -> Vec<f64> {
    let [t, cin, h, wd] = xs;
    let [cout, _, kt, k, _] = ws;
    let p = (k / 2) as isize;
    let mut out = vec![0f64; t * cout * h * wd];
    for to in 0..t {
        for co in 0..cout {
            for y in 0..h {
                for xx in 0..wd {
                    let mut acc = b[co] as f64;
                    for dt in 0..kt {
                        let ti = to as isize + dt as isize - (kt as isize - 1);
                        if ti < 0 {
                            continue;
                        }
                        for ci in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let yi = y as isize + ky as isize - p;
                                    let xi = xx as isize + kx as isize - p;
                                    if yi < 0 || xi < 0 || yi >= h as isize || xi >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((ti as usize * cin + ci) * h + yi as usize) * wd
                                        + xi as usize];
                                    let wv = w[(((co * cin + ci) * kt + dt) * k + ky) * k + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                    }
                    out[((to * cout + co) * h + y) * wd + xx] = acc;
                }
            }
        }
    }
    out
}

#[test]
fn causal_conv_matches_reference_shapes_and_causality() -> Result<()> {
    let dev = Device::Cpu;
    for (t, cin, cout, kt, k, h, w) in [
        (5, 3, 4, 3, 3, 6, 7),
        (4, 2, 5, 1, 1, 3, 3),
        (3, 4, 8, 3, 1, 2, 5),
    ] {
        let mut rng = rng::Rng::new(7 + t as u64);
        let xv = rng.normal_vec(t * cin * h * w, 0.0, 1.0);
        let wv = rng.normal_vec(cout * cin * kt * k * k, 0.0, 0.3);
        let bv = rng.normal_vec(cout, 0.0, 0.1);
        let conv = vae::CausalConv3d::from_weights(
            &Tensor::from_vec(wv.clone(), (cout, cin, kt, k, k), &dev)?,
            Tensor::from_vec(bv.clone(), cout, &dev)?,
        )?;
        let x = Tensor::from_vec(xv.clone(), (t, cin, h, w), &dev)?;
        let y = conv.forward(&x)?;
        assert_eq!(y.dims(), &[t, cout, h, w]);
        let want = conv3d_reference(&xv, [t, cin, h, w], &wv, [cout, cin, kt, k, k], &bv);
        let got = y.flatten_all()?.to_vec1::<f32>()?;
        // One frame per conv2d group gives the same values.
        let y1 = conv
            .forward_grouped(&x, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let gdiff = got
            .iter()
            .zip(&y1)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(gdiff < 1e-5, "grouped vs whole: {gdiff}");
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                "elem {i}: {g} vs {r}"
            );
        }
        // Causality: changing frame t-2 leaves frames < t-2 alone and changes frame t-2.
        let changed = t - 2;
        let mut xv2 = xv.clone();
        for v in &mut xv2[changed * cin * h * w..(changed + 1) * cin * h * w] {
            *v += 1.0;
        }
        let y2 = conv.forward(&Tensor::from_vec(xv2, (t, cin, h, w), &dev)?)?;
        let diff = (y2 - &y)?.abs()?.sum((1, 2, 3))?.to_vec1::<f32>()?;
        for (f, d) in diff.iter().enumerate() {
            if f < changed {
                assert_eq!(*d, 0.0, "frame {f} changed by a change in frame {changed}");
            }
        }
        assert!(diff[changed] > 0.0);
    }
    Ok(())
}

#[test]
fn channel_norm_matches_f_normalize() -> Result<()> {
    // F.normalize(x, dim=1) * sqrt(C) * gamma, with normalize's 1e-12 clamp, as plain loops.
    let dev = Device::Cpu;
    let (n, c, h, w) = (2, 5, 3, 4);
    let mut rng = rng::Rng::new(3);
    let mut xv = rng.normal_vec(n * c * h * w, 0.0, 2.0);
    // Pixel (0, 0) of frame 0 is all zero; pixel 5 of frame 1 has a norm below the clamp
    // (F.normalize divides by 1e-12): `ours` computes the clamp itself, `candle` approximates
    // it with eps = 1e-24 / C (not checked there).
    for ci in 0..c {
        xv[(ci * h) * w] = 0.0;
        xv[((c + ci) * h) * w + 5] = 3e-13;
    }
    let gv = rng.normal_vec(c, 1.0, 0.2);
    for imp in [NormImpl::Ours, NormImpl::Candle] {
        let norm =
            norms::ChannelNorm::new(&Tensor::from_vec(gv.clone(), (c, 1, 1, 1), &dev)?, imp)?;
        let got = norm
            .forward(&Tensor::from_vec(xv.clone(), (n, c, h, w), &dev)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for ni in 0..n {
            for p in 0..h * w {
                let idx = |ci: usize| (ni * c + ci) * h * w + p;
                let l2: f64 = (0..c)
                    .map(|ci| (xv[idx(ci)] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if imp == NormImpl::Candle && ni == 1 && p == 5 {
                    continue;
                }
                for ci in 0..c {
                    let want =
                        xv[idx(ci)] as f64 / l2.max(1e-12) * (c as f64).sqrt() * gv[ci] as f64;
                    let g = got[idx(ci)] as f64;
                    assert!(
                        (g - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{imp:?}: {g} vs {want}"
                    );
                }
            }
        }
    }
    Ok(())
}
