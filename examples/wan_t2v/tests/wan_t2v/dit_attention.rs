//! The DiT's softmax attention (`dit::attention_chunked`) against a plain f64 implementation,
//! in one chunk and in chunks of a few query rows (the split at the chunk boundaries).

use candle_core::{Device, Result, Tensor};
use wan_t2v::dit;

/// softmax(q k^T / sqrt(d)) v for one [L, D] head, in f64.
fn reference(q: &[f64], k: &[f64], v: &[f64], lq: usize, lk: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; lq * d];
    for i in 0..lq {
        let s: Vec<f64> = (0..lk)
            .map(|j| (0..d).map(|e| q[i * d + e] * k[j * d + e]).sum::<f64>() / (d as f64).sqrt())
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = p.iter().sum();
        for e in 0..d {
            out[i * d + e] = (0..lk).map(|j| p[j] * v[j * d + e]).sum::<f64>() / z;
        }
    }
    out
}

#[test]
fn attention_matches_f64_reference() -> Result<()> {
    let (b, h, lq, lk, d) = (2usize, 3usize, 37usize, 29usize, 16usize);
    let mut state = 0x2545f4914f6cdd1du64;
    let mut draw = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                3.0 * ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            })
            .collect()
    };
    let (q, k, v) = (
        draw(b * h * lq * d),
        draw(b * h * lk * d),
        draw(b * h * lk * d),
    );
    let t = |x: &[f64], l: usize| {
        let f: Vec<f32> = x.iter().map(|&a| a as f32).collect();
        Tensor::from_vec(f, (b, h, l, d), &Device::Cpu)
    };
    let (qt, kt, vt) = (t(&q, lq)?, t(&k, lk)?, t(&v, lk)?);
    // One chunk, chunks of 5 query rows (the last one short), and of one row.
    for max_scores in [1 << 26, 5 * b * h * lk, 1] {
        let got = dit::attention_chunked(&qt, &kt, &vt, max_scores)?;
        assert_eq!(got.dims(), &[b, h, lq, d]);
        let got: Vec<f32> = got.flatten_all()?.to_vec1()?;
        for head in 0..b * h {
            let want = reference(
                &q[head * lq * d..(head + 1) * lq * d],
                &k[head * lk * d..(head + 1) * lk * d],
                &v[head * lk * d..(head + 1) * lk * d],
                lq,
                lk,
                d,
            );
            for (i, w) in want.iter().enumerate() {
                let g = got[head * lq * d + i] as f64;
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "max_scores {max_scores} head {head} element {i}: {g} vs {w}"
                );
            }
        }
    }
    Ok(())
}
