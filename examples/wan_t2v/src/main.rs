//! Wan 2.1 text-to-video in Candle, with every RMSNorm through `candle_rmsnorm`.
//!
//! ```text
//! cargo run --release -p wan_t2v -- --prompt "a red fox running through snow"
//! ```
//!
//! Without `--weights` it runs an embedded tiny configuration with seeded random weights (it
//! shows the pipeline and the norm calls, not a trained model's pictures). With `--config` and
//! `--weights` it loads Wan 2.1 checkpoints, original or diffusers layout (`checkpoint.rs`).

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use wan_t2v::norms::NormImpl;
use wan_t2v::pipeline::{self, Observer, Options};
use wan_t2v::sampler::SamplerKind;

#[derive(Parser, Debug)]
#[command(about = "Wan 2.1 text-to-video with candle-rmsnorm's RMSNorm ops")]
struct Args {
    /// The text prompt.
    #[arg(long)]
    prompt: String,
    /// Negative prompt for classifier-free guidance [default: the configuration's, "" for tiny].
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Number of frames, snapped to 4k+1 [default: 17 tiny, 81 for Wan 2.1].
    #[arg(long)]
    frames: Option<usize>,
    /// Height in pixels, snapped to a multiple of 16 [default: from the configuration].
    #[arg(long)]
    height: Option<usize>,
    /// Width in pixels, snapped to a multiple of 16 [default: from the configuration].
    #[arg(long)]
    width: Option<usize>,
    /// Denoising steps [default: 20 tiny, 50 for Wan 2.1].
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (1 = no unconditional pass) [default: 5.0].
    #[arg(long)]
    guidance_scale: Option<f64>,
    /// Sigma schedule shift [default: 5.0].
    #[arg(long)]
    shift: Option<f64>,
    /// Sampler: the reference's UniPC (order 2, bh2) or first-order Euler.
    #[arg(long, value_enum, default_value_t = SamplerKind::Unipc)]
    sampler: SamplerKind,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output animated GIF.
    #[arg(long, default_value = "wan_t2v.gif")]
    output: PathBuf,
    /// Also write every frame as a PNG into this folder.
    #[arg(long)]
    frames_dir: Option<PathBuf>,
    /// Frames per second of the GIF [default: from the configuration].
    #[arg(long)]
    fps: Option<u32>,
    /// JSON file overriding keys of the embedded tiny configuration.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Safetensors file(s), Wan 2.1 original or diffusers names (repeatable; see checkpoint.rs).
    #[arg(long)]
    weights: Vec<PathBuf>,
    /// A tokenizer.json for the text encoder [default: built-in byte tokenizer].
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// RMSNorm implementation: this crate's ops, or candle_nn::ops::rms_norm plus a separate add.
    #[arg(long, value_enum, default_value_t = NormImpl::Ours)]
    norm_impl: NormImpl,
    /// Compute dtype of the text encoder and the DiT's matmuls (VAE and latents stay f32).
    #[arg(long, value_enum, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Run on the CPU (the default unless --cuda).
    #[arg(long, conflicts_with = "cuda")]
    cpu: bool,
    /// Run on CUDA device 0 (needs the `cuda` feature).
    #[arg(long)]
    cuda: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ComputeDtype {
    F32,
    Bf16,
    F16,
}

/// Progress: an indicatif bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Observer for Progress {
    fn message(&mut self, msg: &str) {
        eprintln!("{msg}");
    }
    fn steps_start(&mut self, steps: usize) {
        if self.tty {
            let bar = ProgressBar::new(steps as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "denoising {bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}",
            ) {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        }
    }
    fn step_done(&mut self, step: usize, steps: usize, sigma: f64, took: Duration) {
        match &self.bar {
            Some(b) => {
                b.set_message(format!(
                    "sigma {sigma:.3}, {:.0} ms/step",
                    took.as_secs_f64() * 1e3
                ));
                b.inc(1);
            }
            None => eprintln!(
                "step {}/{steps}: sigma {sigma:.4}, {:.1} ms",
                step + 1,
                took.as_secs_f64() * 1e3
            ),
        }
    }
    fn steps_end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            eprintln!(
                "denoised {} steps in {:.1} s",
                b.position(),
                b.elapsed().as_secs_f64()
            );
        }
    }
}

fn device(args: &Args) -> candle_core::Result<candle_core::Device> {
    if args.cuda {
        cuda_device()
    } else {
        Ok(candle_core::Device::Cpu)
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> candle_core::Result<candle_core::Device> {
    candle_core::Device::new_cuda(0)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> candle_core::Result<candle_core::Device> {
    Err(candle_core::Error::Msg(
        "--cuda: this build has no CUDA support; rebuild with `--features cuda`".into(),
    ))
}

fn ms(d: Duration) -> String {
    format!("{:>10.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> candle_core::Result<()> {
    let dev = device(&args)?;
    let mut opts = Options::new(&args.prompt, args.output);
    opts.negative_prompt = args.negative_prompt;
    opts.frames = args.frames;
    opts.height = args.height;
    opts.width = args.width;
    opts.steps = args.steps;
    opts.guidance_scale = args.guidance_scale;
    opts.shift = args.shift;
    opts.sampler = args.sampler;
    opts.seed = args.seed;
    opts.frames_dir = args.frames_dir;
    opts.fps = args.fps;
    opts.config = args.config;
    opts.weights = args.weights;
    opts.tokenizer = args.tokenizer;
    opts.norm_impl = args.norm_impl;
    opts.dtype = match args.dtype {
        ComputeDtype::F32 => candle_core::DType::F32,
        ComputeDtype::Bf16 => candle_core::DType::BF16,
        ComputeDtype::F16 => candle_core::DType::F16,
    };
    let mut progress = Progress {
        bar: None,
        tty: std::io::stderr().is_terminal(),
    };
    let r = pipeline::run(&opts, &dev, &mut progress)?;
    let t = &r.timings;
    let s = &r.settings;
    let shown = std::fs::canonicalize(&r.output).unwrap_or_else(|_| r.output.clone());
    println!(
        "wrote {} ({} frames, {}x{}, {} fps)",
        shown.display(),
        s.frames,
        s.width,
        s.height,
        s.fps
    );
    if let Some(first) = r.pngs.first() {
        println!(
            "wrote {} PNG frames ({} ...)",
            r.pngs.len(),
            first.display()
        );
    }
    let per_step = t.denoising / t.steps.max(1) as u32;
    println!(
        "timings ({}, {:?}, norms: {:?}):",
        r.config_name,
        dev.location(),
        opts.norm_impl
    );
    println!("  loading weights      {}", ms(t.loading));
    println!("  text encoding        {}", ms(t.text_encoding));
    println!("  denoising total      {}", ms(t.denoising));
    println!("  denoising per step   {}", ms(per_step));
    println!("  VAE decode           {}", ms(t.vae_decode));
    println!("  writing              {}", ms(t.writing));
    println!("  total                {}", ms(t.total));
    println!(
        "  inside norm ops      {}  ({} calls, {:.1}% of total)",
        ms(t.norm),
        t.norm_calls,
        100.0 * t.norm.as_secs_f64() / t.total.as_secs_f64().max(1e-9)
    );
    println!(
        "  inside DiT attention {}  ({} calls, {:.1}% of denoising)",
        ms(t.attention),
        t.attention_calls,
        100.0 * t.attention.as_secs_f64() / t.denoising.as_secs_f64().max(1e-9)
    );
    if !t.softmax.is_zero() {
        println!("    of which softmax   {}", ms(t.softmax));
    }
    Ok(())
}
