//! The whole pipeline on the smoke configuration: GIF and PNG output, both norm implementations,
//! bf16 against f32.

use crate::common::{smoke_options, tmp};
use candle_core::{DType, Device, Result};
use std::path::Path;
use wan_t2v::norms::NormImpl;
use wan_t2v::pipeline::{self, Silent};

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
    assert!(ours.timings.attention_calls > 0);
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
