//! The text-to-video pipeline: settings, loading, text encoding, denoising, decoding, writing.

use crate::config::{WanConfig, PATCH};
use crate::dit::WanDit;
use crate::norms::NormImpl;
use crate::t5::T5Encoder;
use crate::timing::{self, Part};
use crate::tokenizer::PromptTokenizer;
use crate::vae::WanVaeDecoder;
use crate::{sampler, video, weights};
use candle_core::{DType, Device, Error, Result, Tensor};
use candle_nn::VarBuilder;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the command line asks for; `None` takes the configuration's default.
#[derive(Debug, Clone)]
pub struct Options {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub frames: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub steps: Option<usize>,
    pub guidance_scale: Option<f64>,
    pub shift: Option<f64>,
    pub sampler: sampler::SamplerKind,
    pub seed: u64,
    pub output: PathBuf,
    pub frames_dir: Option<PathBuf>,
    pub fps: Option<u32>,
    pub config: Option<PathBuf>,
    pub weights: Vec<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub norm_impl: NormImpl,
    /// Dtype of the text encoder and the DiT's linear layers and attention (the VAE, the
    /// latents and the DiT's modulation path stay f32).
    pub dtype: DType,
}

impl Options {
    pub fn new(prompt: &str, output: PathBuf) -> Self {
        Self {
            prompt: prompt.to_string(),
            negative_prompt: None,
            frames: None,
            height: None,
            width: None,
            steps: None,
            guidance_scale: None,
            shift: None,
            sampler: sampler::SamplerKind::Unipc,
            seed: 42,
            output,
            frames_dir: None,
            fps: None,
            config: None,
            weights: Vec::new(),
            tokenizer: None,
            norm_impl: NormImpl::Ours,
            dtype: DType::F32,
        }
    }
}

/// The settings a run uses, after defaults and snapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub guidance_scale: f64,
    pub shift: f64,
    pub sampler: sampler::SamplerKind,
    pub fps: u32,
    pub negative_prompt: String,
    /// Latent shape [C, T, h, w].
    pub latent: [usize; 4],
}

/// Snaps `frames` (>= 1) to the nearest `tf * k + 1` (4k+1 for Wan).
pub fn snap_frames(frames: usize, tf: usize) -> usize {
    let k = ((frames - 1) as f64 / tf as f64).round() as usize;
    tf * k + 1
}

/// Snaps a size to the nearest positive multiple of `m`.
pub fn snap_size(size: usize, m: usize) -> usize {
    (((size as f64) / m as f64).round() as usize).max(1) * m
}

/// Resolves defaults, validates and snaps; `notes` receives a message for every snapped value.
pub fn resolve(opts: &Options, cfg: &WanConfig, notes: &mut Vec<String>) -> Result<Settings> {
    let d = &cfg.defaults;
    let frames = opts.frames.unwrap_or(d.frames);
    let height = opts.height.unwrap_or(d.height);
    let width = opts.width.unwrap_or(d.width);
    let steps = opts.steps.unwrap_or(d.steps);
    let guidance_scale = opts.guidance_scale.unwrap_or(d.guidance_scale);
    let shift = opts.shift.unwrap_or(d.shift);
    let fps = opts.fps.unwrap_or(d.fps);
    for (flag, v) in [
        ("--frames", frames),
        ("--height", height),
        ("--width", width),
        ("--steps", steps),
    ] {
        if v == 0 {
            return Err(Error::Msg(format!("{flag} must be positive, got 0")));
        }
    }
    if fps == 0 {
        return Err(Error::Msg("--fps must be positive, got 0".into()));
    }
    if !(guidance_scale.is_finite() && guidance_scale >= 0.0) {
        return Err(Error::Msg(format!(
            "--guidance-scale must be finite and >= 0, got {guidance_scale}"
        )));
    }
    if !(shift.is_finite() && shift > 0.0) {
        return Err(Error::Msg(format!(
            "--shift must be finite and > 0, got {shift}"
        )));
    }
    let tf = cfg.vae.temporal_factor();
    let sf = cfg.vae.spatial_factor() * PATCH.1;
    let f2 = snap_frames(frames, tf);
    if f2 != frames {
        notes.push(format!(
            "--frames {frames} snapped to {f2} (the VAE makes {tf}k+1 frames)"
        ));
    }
    let h2 = snap_size(height, sf);
    if h2 != height {
        notes.push(format!(
            "--height {height} snapped to {h2} (a multiple of {sf})"
        ));
    }
    let w2 = snap_size(width, sf);
    if w2 != width {
        notes.push(format!(
            "--width {width} snapped to {w2} (a multiple of {sf})"
        ));
    }
    if h2 > u16::MAX as usize || w2 > u16::MAX as usize {
        return Err(Error::Msg(format!(
            "--height/--width {h2}x{w2}: a GIF holds at most 65535 per side"
        )));
    }
    // Refuse sizes whose decoded f32 video alone would exceed 64 GiB instead of aborting on
    // a failed allocation.
    let values = (f2 as u128) * (h2 as u128) * (w2 as u128) * 3;
    if values > (1u128 << 34) {
        return Err(Error::Msg(format!(
            "--frames/--height/--width {f2}x{h2}x{w2}: the video would hold {values} values, more than 2^34"
        )));
    }
    let vs = cfg.vae.spatial_factor();
    Ok(Settings {
        frames: f2,
        height: h2,
        width: w2,
        steps,
        guidance_scale,
        shift,
        sampler: opts.sampler,
        fps,
        // As the reference (`text2video.py`): an empty negative prompt means the
        // configuration's default (`sample_neg_prompt` for Wan 2.1, in its JSON here).
        negative_prompt: opts
            .negative_prompt
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| d.negative_prompt.clone()),
        latent: [cfg.vae.z_dim, (f2 - 1) / tf + 1, h2 / vs, w2 / vs],
    })
}

/// Hooks for the command line's messages and progress bar.
pub trait Observer {
    fn message(&mut self, _msg: &str) {}
    fn steps_start(&mut self, _steps: usize) {}
    fn step_done(&mut self, _step: usize, _steps: usize, _sigma: f64, _took: Duration) {}
    fn steps_end(&mut self) {}
}

/// An observer that says nothing (used by the tests).
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub loading: Duration,
    pub text_encoding: Duration,
    pub denoising: Duration,
    pub steps: usize,
    pub vae_decode: Duration,
    pub writing: Duration,
    pub total: Duration,
    /// Inside norm calls (every RMSNorm of the pipeline).
    pub norm: Duration,
    pub norm_calls: u64,
    /// Inside the DiT's attention calls (self- and cross-attention).
    pub attention: Duration,
    pub attention_calls: u64,
    /// Inside the softmax of the DiT's attention (GPU only; part of `attention`).
    pub softmax: Duration,
}

#[derive(Debug)]
pub struct Report {
    pub settings: Settings,
    pub config_name: String,
    /// The decoded video [F, 3, H, W] in [-1, 1] (read by the tests).
    pub video: Tensor,
    pub output: PathBuf,
    pub pngs: Vec<PathBuf>,
    pub timings: Timings,
}

/// Loads the configuration named by `--config` or the embedded default.
pub fn load_config(opts: &Options) -> Result<WanConfig> {
    match &opts.config {
        Some(p) => WanConfig::from_file(p),
        None => WanConfig::tiny(),
    }
}

/// Builds the three models from one VarBuilder: the DiT at its root, the text encoder under
/// `text_encoder.`, the VAE under `vae.`.
pub fn load_models(
    cfg: &WanConfig,
    vb: &VarBuilder,
    imp: NormImpl,
) -> Result<(T5Encoder, WanDit, WanVaeDecoder)> {
    Ok((
        T5Encoder::new(&cfg.t5, vb.pp("text_encoder"), imp)?,
        WanDit::new(&cfg.dit, vb.clone(), imp)?,
        WanVaeDecoder::new(&cfg.vae, vb.pp("vae").to_dtype(DType::F32), imp)?,
    ))
}

pub fn run(opts: &Options, dev: &Device, obs: &mut dyn Observer) -> Result<Report> {
    let t_start = Instant::now();
    timing::reset();
    let cfg = load_config(opts)?;
    let mut notes = Vec::new();
    let s = resolve(opts, &cfg, &mut notes)?;
    for n in &notes {
        obs.message(n);
    }
    let tokenizer = match &opts.tokenizer {
        Some(p) => PromptTokenizer::from_file(p)?,
        None => PromptTokenizer::Bytes,
    };
    obs.message(&format!(
        "model: {}{}; {} frames {}x{} (latent {:?}), {} steps, guidance {}, shift {}, norms: {:?}, dtype: {:?}",
        cfg.name,
        if opts.weights.is_empty() {
            ""
        } else {
            " (weights from --weights)"
        },
        s.frames,
        s.width,
        s.height,
        s.latent,
        s.steps,
        s.guidance_scale,
        s.shift,
        opts.norm_impl,
        opts.dtype
    ));

    // Loading.
    let t0 = Instant::now();
    let (vb, ck) = weights::var_builder(
        &opts.weights,
        cfg.weights_seed,
        cfg.vae.num_res_blocks,
        opts.dtype,
        dev,
    )?;
    let (t5, dit, vae) = load_models(&cfg, &vb, opts.norm_impl)
        .map_err(|e| weights::loading_context(e, &opts.weights))?;
    if let Some(ck) = &ck {
        ck.check_all_used()?;
        use crate::checkpoint::Model;
        obs.message(&format!(
            "weights: DiT {:?}, text encoder {:?}, VAE {:?} layout",
            ck.layout(Model::Dit),
            ck.layout(Model::TextEncoder),
            ck.layout(Model::Vae)
        ));
    }
    let loading = t0.elapsed();

    // Text encoding.
    let t0 = Instant::now();
    let use_uncond = s.guidance_scale != 1.0;
    let max_len = cfg.dit.text_len;
    let encode = |text: &str| -> Result<Tensor> {
        let ids = tokenizer.encode(text, max_len, cfg.t5.vocab)?;
        dit.embed_text(&t5.forward(&ids, dev)?)
    };
    let context = if use_uncond {
        Tensor::cat(&[encode(&opts.prompt)?, encode(&s.negative_prompt)?], 0)?
    } else {
        encode(&opts.prompt)?
    };
    sync(dev)?;
    let text_encoding = t0.elapsed();

    // Denoising.
    let t0 = Instant::now();
    let [c, t, h, w] = s.latent;
    let mut x = sampler::noise(&[1, c, t, h, w], opts.seed, dev)?;
    let schedule = sampler::schedule(s.steps, s.shift);
    let (sig, timesteps) = (&schedule.sigmas, &schedule.timesteps);
    let mut solver = sampler::Sampler::new(s.sampler, sig)?;
    obs.steps_start(s.steps);
    for i in 0..s.steps {
        let ts = Instant::now();
        let timestep = timesteps[i];
        let v = if use_uncond {
            let xb = Tensor::cat(&[&x, &x], 0)?;
            let out = dit.forward(&xb, &[timestep, timestep], &context)?;
            sampler::guide(
                &out.narrow(0, 0, 1)?,
                &out.narrow(0, 1, 1)?,
                s.guidance_scale,
            )?
        } else {
            dit.forward(&x, &[timestep], &context)?
        };
        x = solver.step(&v, &x)?;
        sync(dev)?;
        obs.step_done(i, s.steps, sig[i], ts.elapsed());
    }
    obs.steps_end();
    let denoising = t0.elapsed();

    // VAE decoding.
    let t0 = Instant::now();
    let video_t = vae.decode(&x.squeeze(0)?)?;
    sync(dev)?;
    let vae_decode = t0.elapsed();
    let (nf, _, vh, vw) = video_t.dims4()?;
    if (nf, vh, vw) != (s.frames, s.height, s.width) {
        return Err(Error::Msg(format!(
            "internal: decoded video is {nf}x{vh}x{vw}, expected {}x{}x{}",
            s.frames, s.height, s.width
        )));
    }

    // Writing.
    let t0 = Instant::now();
    let frames = video::to_rgb8(&video_t)?;
    video::write_gif(&opts.output, &frames, s.width, s.height, s.fps)?;
    let pngs = match &opts.frames_dir {
        Some(d) => video::write_pngs(d, &frames, s.width, s.height)?,
        None => Vec::new(),
    };
    let writing = t0.elapsed();

    let (norm, norm_calls) = timing::spent(Part::Norm);
    let (attention, attention_calls) = timing::spent(Part::Attention);
    let (softmax, _) = timing::spent(Part::Softmax);
    Ok(Report {
        timings: Timings {
            loading,
            text_encoding,
            denoising,
            steps: s.steps,
            vae_decode,
            writing,
            total: t_start.elapsed(),
            norm,
            norm_calls,
            attention,
            attention_calls,
            softmax,
        },
        settings: s,
        config_name: cfg.name.clone(),
        video: video_t,
        output: opts.output.clone(),
        pngs,
    })
}

fn sync(dev: &Device) -> Result<()> {
    if dev.is_cpu() {
        Ok(())
    } else {
        dev.synchronize()
    }
}
