//! Tests of the wan_t2v example: unit tests of its parts against independent references, a CI
//! smoke run of the whole pipeline (tiny model, 2 steps), and bad-input errors.
#![allow(dead_code)]

#[path = "../examples/wan_t2v/config.rs"]
mod config;
#[path = "../examples/wan_t2v/dit.rs"]
mod dit;
#[path = "../examples/wan_t2v/norms.rs"]
mod norms;
#[path = "../examples/wan_t2v/pipeline.rs"]
mod pipeline;
#[path = "../examples/wan_t2v/rng.rs"]
mod rng;
#[path = "../examples/wan_t2v/sampler.rs"]
mod sampler;
#[path = "../examples/wan_t2v/t5.rs"]
mod t5;
#[path = "../examples/wan_t2v/tokenizer.rs"]
mod tokenizer;
#[path = "../examples/wan_t2v/vae.rs"]
mod vae;
#[path = "../examples/wan_t2v/video.rs"]
mod video;
#[path = "../examples/wan_t2v/weights.rs"]
mod weights;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use norms::NormImpl;
use pipeline::{Options, Silent};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wan_t2v_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A configuration smaller than the tiny default, for debug-mode CI.
const SMOKE_JSON: &str = r#"{
  "name": "smoke",
  "t5": { "dim": 32, "heads": 2, "ffn_dim": 48, "layers": 2 },
  "dit": { "dim": 48, "ffn_dim": 64, "heads": 2, "layers": 2, "text_dim": 32, "text_len": 16, "freq_dim": 32 },
  "vae": { "dim": 8 },
  "defaults": { "frames": 5, "height": 32, "width": 48, "steps": 2 }
}"#;

/// A fresh copy of the smoke config per call: tests run in parallel, and rewriting one shared
/// file while another test reads it made that test see a half-written config.
fn smoke_config() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = tmp(&format!("smoke-{n}.json"));
    std::fs::write(&p, SMOKE_JSON).unwrap();
    p
}

fn smoke_options(output: PathBuf, imp: NormImpl) -> Options {
    let mut o = Options::new("a red fox running through snow", output);
    o.config = Some(smoke_config());
    o.norm_impl = imp;
    o
}

// ---------- sampler ----------

#[test]
fn sigma_schedule_matches_reference_formula() {
    for (steps, shift) in [(1usize, 1.0f64), (2, 5.0), (50, 5.0), (7, 3.0), (30, 12.0)] {
        let got = sampler::sigmas(steps, shift);
        assert_eq!(got.len(), steps + 1);
        // numpy: linspace(0.999, 0, steps + 1)[:-1], then the shift, then a final 0.
        for (i, g) in got.iter().take(steps).enumerate() {
            let s = 0.999 + i as f64 * ((0.0 - 0.999) / steps as f64);
            let want = shift * s / (1.0 + (shift - 1.0) * s);
            assert!(
                (g - want).abs() < 1e-12,
                "steps {steps} shift {shift} i {i}: {g} vs {want}"
            );
        }
        assert_eq!(got[steps], 0.0);
        assert!(
            got.windows(2).all(|w| w[0] > w[1]),
            "not decreasing: {got:?}"
        );
    }
    // First sigma for shift 5: 5 * 0.999 / (1 + 4 * 0.999).
    let s = sampler::sigmas(50, 5.0);
    assert!((s[0] - 4.995 / 4.996).abs() < 1e-12);
}

#[test]
fn euler_and_guidance() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[1f32, 2.0], &dev)?;
    let v = Tensor::new(&[0.5f32, -1.0], &dev)?;
    let y = sampler::euler_step(&x, &v, 0.8, 0.6)?.to_vec1::<f32>()?;
    assert!(
        (y[0] - 0.9).abs() < 1e-6 && (y[1] - 2.2).abs() < 1e-6,
        "{y:?}"
    );
    let c = Tensor::new(&[1f32, 0.0], &dev)?;
    let u = Tensor::new(&[0f32, 1.0], &dev)?;
    let g = sampler::guide(&c, &u, 5.0)?.to_vec1::<f32>()?;
    assert_eq!(g, vec![5.0, -4.0]);
    Ok(())
}

// ---------- DiT ----------

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

// ---------- T5 ----------

#[test]
fn t5_relative_buckets() {
    // 32 buckets, bidirectional: 16 per side, 8 exact, log-spaced up to distance 128.
    let b = |r| t5::relative_bucket(r, 32, 128);
    assert_eq!(b(0), 0);
    assert_eq!(b(-1), 1);
    assert_eq!(b(-7), 7);
    assert_eq!(b(-8), 8);
    assert_eq!(b(1), 17);
    assert_eq!(b(7), 23);
    assert_eq!(b(-16), 10); // 8 + trunc(ln 2 / ln 16 * 8) = 8 + 2
    assert_eq!(b(-127), 15);
    assert_eq!(b(-128), 15);
    assert_eq!(b(-10_000), 15);
    assert_eq!(b(10_000), 31);
}

// ---------- VAE ----------

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
    for ci in 0..c {
        xv[(ci * h) * w] = 0.0; // pixel (0, 0) of frame 0 is all zero
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

// ---------- config / settings ----------

#[test]
fn embedded_config_and_snapping() -> Result<()> {
    let cfg = config::WanConfig::tiny()?;
    assert_eq!(cfg.vae.temporal_factor(), 4);
    assert_eq!(cfg.vae.spatial_factor(), 8);
    let mut o = Options::new("x", tmp("unused.gif"));
    o.frames = Some(16);
    o.height = Some(100);
    o.width = Some(130);
    let mut notes = Vec::new();
    let s = pipeline::resolve(&o, &cfg, &mut notes)?;
    assert_eq!((s.frames, s.height, s.width), (17, 96, 128));
    assert_eq!(s.latent, [16, 5, 12, 16]);
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes[0].contains("--frames 16 snapped to 17"), "{notes:?}");
    o.frames = Some(1);
    o.height = Some(5);
    o.width = Some(16);
    let mut notes = Vec::new();
    let s = pipeline::resolve(&o, &cfg, &mut notes)?;
    assert_eq!((s.frames, s.height, s.width), (1, 16, 16));
    assert_eq!(notes.len(), 1);
    // The shipped 1.3B configuration parses.
    let big = config::WanConfig::from_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/wan_t2v/wan2.1_t2v_1.3b.json"
    )))?;
    assert_eq!(
        (big.dit.dim, big.dit.layers, big.t5.dim, big.vae.dim),
        (1536, 30, 4096, 96)
    );
    Ok(())
}

fn run_err(o: &Options) -> String {
    match pipeline::run(o, &Device::Cpu, &mut Silent) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_name_the_flag_or_tensor() -> Result<()> {
    let out = tmp("bad.gif");
    let base = smoke_options(out.clone(), NormImpl::Ours);

    let mut o = base.clone();
    o.frames = Some(0);
    assert!(
        run_err(&o).contains("--frames must be positive"),
        "{}",
        run_err(&o)
    );
    let mut o = base.clone();
    o.height = Some(0);
    assert!(run_err(&o).contains("--height must be positive"));
    let mut o = base.clone();
    o.width = Some(0);
    assert!(run_err(&o).contains("--width must be positive"));
    let mut o = base.clone();
    o.steps = Some(0);
    assert!(run_err(&o).contains("--steps must be positive"));

    let mut o = base.clone();
    o.frames = Some(1 << 40);
    let e = run_err(&o);
    assert!(e.contains("--frames/--height/--width"), "{e}");

    let mut o = base.clone();
    o.weights = vec![tmp("does_not_exist.safetensors")];
    let e = run_err(&o);
    assert!(
        e.contains("--weights") && e.contains("does_not_exist"),
        "{e}"
    );

    // A weights file whose tensor has the wrong shape, and one missing a tensor.
    let dev = Device::Cpu;
    let bad = tmp("bad_shape.safetensors");
    let t = Tensor::zeros((7, 3), DType::F32, &dev)?;
    candle_core::safetensors::save(
        &HashMap::from([("text_encoder.token_embedding.weight".to_string(), t)]),
        &bad,
    )?;
    let mut o = base.clone();
    o.weights = vec![bad];
    let e = run_err(&o);
    assert!(
        e.contains("--weights") && e.contains("text_encoder.token_embedding.weight"),
        "{e}"
    );
    assert!(e.contains("shape"), "{e}");
    let partial = tmp("partial.safetensors");
    let t = Tensor::zeros((259, 32), DType::F32, &dev)?;
    candle_core::safetensors::save(
        &HashMap::from([("text_encoder.token_embedding.weight".to_string(), t)]),
        &partial,
    )?;
    let mut o = base.clone();
    o.weights = vec![partial];
    let e = run_err(&o);
    assert!(
        e.contains("--weights") && e.contains("text_encoder.blocks.0.norm1.weight"),
        "{e}"
    );

    // Unreadable, invalid or mistyped configs.
    let mut o = base.clone();
    o.config = Some(tmp("no_such_config.json"));
    let e = run_err(&o);
    assert!(
        e.contains("--config") && e.contains("no_such_config"),
        "{e}"
    );
    let broken = tmp("broken.json");
    std::fs::write(&broken, "{ \"dit\": ").unwrap();
    o.config = Some(broken);
    assert!(run_err(&o).contains("--config"));
    let typo = tmp("typo.json");
    std::fs::write(&typo, r#"{ "dit": { "dimm": 3 } }"#).unwrap();
    o.config = Some(typo);
    let e = run_err(&o);
    assert!(e.contains("--config") && e.contains("dimm"), "{e}");
    let inconsistent = tmp("inconsistent.json");
    std::fs::write(&inconsistent, r#"{ "dit": { "heads": 3 } }"#).unwrap();
    o.config = Some(inconsistent);
    let e = run_err(&o);
    assert!(e.contains("--config") && e.contains("dit.dim"), "{e}");

    // A missing tokenizer file.
    let mut o = base.clone();
    o.tokenizer = Some(tmp("no_tokenizer.json"));
    assert!(run_err(&o).contains("--tokenizer"));
    assert!(!out.exists(), "no output should be written on errors");
    Ok(())
}

// ---------- the whole pipeline ----------

/// Decodes a GIF: (frame count, width, height, RGBA of every frame).
fn decode_gif(path: &Path) -> (usize, u16, u16, Vec<Vec<u8>>) {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut d = opts.read_info(std::fs::File::open(path).unwrap()).unwrap();
    let (w, h) = (d.width(), d.height());
    let mut frames = Vec::new();
    while let Some(f) = d.read_next_frame().unwrap() {
        assert_eq!((f.width, f.height), (w, h));
        frames.push(f.buffer.to_vec());
    }
    (frames.len(), w, h, frames)
}

#[test]
fn smoke_two_steps_gif_and_norm_impls_agree() -> Result<()> {
    let out_ours = tmp("smoke_ours.gif");
    let out_candle = tmp("smoke_candle.gif");
    let pngs = tmp("smoke_frames");
    let mut o = smoke_options(out_ours.clone(), NormImpl::Ours);
    o.frames_dir = Some(pngs.clone());
    let ours = pipeline::run(&o, &Device::Cpu, &mut Silent)?;
    let candle = pipeline::run(
        &smoke_options(out_candle.clone(), NormImpl::Candle),
        &Device::Cpu,
        &mut Silent,
    )?;

    let s = &ours.settings;
    assert_eq!((s.frames, s.height, s.width, s.steps), (5, 32, 48, 2));
    assert_eq!(ours.video.dims(), &[5, 3, 32, 48]);
    assert!(ours.timings.norm_calls > 0);
    for path in [&out_ours, &out_candle] {
        let (n, w, h, frames) = decode_gif(path);
        assert_eq!((n, w, h), (5, 48, 32));
        assert!(
            frames.windows(2).any(|p| p[0] != p[1]),
            "all frames identical"
        );
    }
    assert_eq!(ours.pngs.len(), 5);
    let dec = png::Decoder::new(std::fs::File::open(&ours.pngs[4]).unwrap());
    let reader = dec.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (48, 32));

    // Same video from both norm implementations, within f32 tolerance.
    let diff = (&ours.video - &candle.video)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(diff < 2e-3, "ours vs candle max |diff| = {diff}");
    // And the video is not flat: values spread over the range.
    let std = ours
        .video
        .flatten_all()?
        .var(0)?
        .sqrt()?
        .to_scalar::<f32>()?;
    assert!(std > 0.01, "video std {std}");
    Ok(())
}

/// Records every tensor the random backend hands out, so they can be saved as a weights file.
struct Recording {
    inner: weights::RandomWeights,
    seen: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        self.seen
            .lock()
            .unwrap()
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

#[test]
fn weights_file_with_checkpoint_names_reproduces_the_random_model() -> Result<()> {
    let cfg = config::WanConfig::from_file(&smoke_config())?;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let rec = Recording {
        inner: weights::RandomWeights::new(cfg.weights_seed),
        seen: seen.clone(),
    };
    let vb = candle_nn::VarBuilder::from_backend(Box::new(rec), DType::F32, Device::Cpu);
    pipeline::load_models(&cfg, &vb, NormImpl::Ours)?;
    let seen = seen.lock().unwrap().clone();
    // Names as in the Wan 2.1 checkpoints.
    for name in [
        "patch_embedding.weight",
        "blocks.1.self_attn.norm_q.weight",
        "blocks.0.cross_attn.norm_k.weight",
        "blocks.0.norm3.bias",
        "blocks.0.ffn.2.weight",
        "time_projection.1.weight",
        "head.modulation",
        "head.head.weight",
        "text_encoder.blocks.1.pos_embedding.embedding.weight",
        "text_encoder.blocks.0.ffn.gate.0.weight",
        "text_encoder.norm.weight",
        "vae.conv2.weight",
        "vae.decoder.middle.1.to_qkv.weight",
        "vae.decoder.upsamples.3.time_conv.weight",
        "vae.decoder.upsamples.11.resample.1.weight",
        "vae.decoder.upsamples.12.residual.0.gamma",
        "vae.decoder.head.2.weight",
    ] {
        assert!(seen.contains_key(name), "{name} not requested");
    }
    assert_eq!(seen["patch_embedding.weight"].dims(), &[48, 16, 1, 2, 2]);
    assert_eq!(
        seen["vae.decoder.upsamples.4.shortcut.weight"].dims(),
        &[32, 16, 1, 1, 1]
    );
    let file = tmp("roundtrip.safetensors");
    candle_core::safetensors::save(&seen, &file)?;

    let random = pipeline::run(
        &smoke_options(tmp("rt_random.gif"), NormImpl::Ours),
        &Device::Cpu,
        &mut Silent,
    )?;
    let mut o = smoke_options(tmp("rt_file.gif"), NormImpl::Ours);
    o.weights = vec![file];
    let loaded = pipeline::run(&o, &Device::Cpu, &mut Silent)?;
    let diff = (&random.video - &loaded.video)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}

#[test]
fn bf16_run_is_close_to_f32() -> Result<()> {
    let f32run = pipeline::run(
        &smoke_options(tmp("f32.gif"), NormImpl::Ours),
        &Device::Cpu,
        &mut Silent,
    )?;
    for imp in [NormImpl::Ours, NormImpl::Candle] {
        let mut o = smoke_options(tmp("bf16.gif"), imp);
        o.dtype = DType::BF16;
        let r = pipeline::run(&o, &Device::Cpu, &mut Silent)?;
        assert_eq!(r.video.dtype(), DType::F32);
        let d = (&r.video - &f32run.video)?.abs()?.flatten_all()?;
        let max = d.max(0)?.to_scalar::<f32>()?;
        let mean = d.mean(0)?.to_scalar::<f32>()?;
        eprintln!("{imp:?} bf16 vs f32: max {max} mean {mean}");
        assert!(
            mean < 0.05,
            "{imp:?}: bf16 vs f32 mean |diff| {mean} (max {max})"
        );
    }
    Ok(())
}

#[test]
fn tokenizers_bytes_and_json() -> Result<()> {
    let b = tokenizer::PromptTokenizer::Bytes;
    // Whitespace collapsed as Wan's `clean='whitespace'`, bytes + 3, eos 1 appended.
    assert_eq!(
        b.encode("  a \n b ", 64, 259)?,
        vec![97 + 3, 32 + 3, 98 + 3, 1]
    );
    assert_eq!(b.encode("abcdef", 3, 259)?, vec![100, 101, 102]);
    assert_eq!(b.encode("", 8, 259)?, vec![1]);
    let e = b.encode("z", 8, 100).unwrap_err().to_string();
    assert!(e.contains("--tokenizer") && e.contains("t5.vocab"), "{e}");

    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
      "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
      "model":{"type":"WordLevel","vocab":{"<unk>":0,"a":5,"red":6,"fox":7},"unk_token":"<unk>"}}"#;
    let path = tmp("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let t = tokenizer::PromptTokenizer::from_file(&path)?;
    assert_eq!(t.encode("a red  fox jumps", 64, 259)?, vec![5, 6, 7, 0]);
    let e = tokenizer::PromptTokenizer::from_file(&tmp("missing_tokenizer.json")).unwrap_err();
    assert!(e.to_string().contains("--tokenizer"));
    Ok(())
}
