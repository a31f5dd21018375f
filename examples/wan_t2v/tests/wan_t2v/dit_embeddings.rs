//! The DiT's position and time embeddings: the 3-axis RoPE split and tables, and the sinusoidal
//! timestep embedding.

use candle_core::{Device, Result};
use wan_t2v::dit;

#[test]
fn rope_dimension_split() {
    assert_eq!(dit::rope_split(128), (44, 42, 42));
    assert_eq!(dit::rope_split(64), (24, 20, 20));
    assert_eq!(dit::rope_split(24), (8, 8, 8));
    for d in (2..=256).step_by(2) {
        let (t, h, w) = dit::rope_split(d);
        assert_eq!(t + h + w, d);
        assert!(
            t % 2 == 0 && h % 2 == 0 && w % 2 == 0,
            "d {d}: odd part {t} {h} {w}"
        );
        assert_eq!(h, w);
    }
}

#[test]
fn rope_tables_match_reference_params() -> Result<()> {
    let d = 20; // parts 20 - 4 * 3 = 8, 6, 6 -> 4, 3, 3 complex pairs
    let (f, h, w) = (3, 2, 5);
    let (cos, sin) = dit::rope_tables(d, (f, h, w), &Device::Cpu)?;
    assert_eq!(cos.dims(), &[f * h * w, d / 2]);
    let cos = cos.to_vec2::<f32>()?;
    let sin = sin.to_vec2::<f32>()?;
    // rope_params(n, part): angle(pos, j) = pos / 10000^(2j / part), concatenated t | h | w.
    let parts = [(8usize, 0usize), (6, 1), (6, 2)];
    for fi in 0..f {
        for hi in 0..h {
            for wi in 0..w {
                let tok = (fi * h + hi) * w + wi;
                let pos = [fi, hi, wi];
                let mut col = 0;
                for (part, axis) in parts {
                    for j in 0..part / 2 {
                        let ang = pos[axis] as f64 / 10000f64.powf((2 * j) as f64 / part as f64);
                        assert!((cos[tok][col] as f64 - ang.cos()).abs() < 1e-6);
                        assert!((sin[tok][col] as f64 - ang.sin()).abs() < 1e-6);
                        col += 1;
                    }
                }
                assert_eq!(col, d / 2);
            }
        }
    }
    Ok(())
}

#[test]
fn sinusoidal_embedding_is_cos_then_sin() -> Result<()> {
    let e = dit::sinusoidal_embedding(8, &[0.0, 500.0], &Device::Cpu)?.to_vec2::<f32>()?;
    assert_eq!(&e[0][..4], &[1.0, 1.0, 1.0, 1.0]);
    assert_eq!(&e[0][4..], &[0.0, 0.0, 0.0, 0.0]);
    for i in 0..4 {
        let a = 500.0 * 10000f64.powf(-(i as f64) / 4.0);
        assert!((e[1][i] as f64 - a.cos()).abs() < 1e-4);
        assert!((e[1][4 + i] as f64 - a.sin()).abs() < 1e-4);
    }
    Ok(())
}
