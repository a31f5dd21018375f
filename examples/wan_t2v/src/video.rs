//! Writing the decoded video: an animated GIF and optionally one PNG per frame.

use candle_core::{Error, Result, Tensor};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// `video` [F, 3, H, W] in [-1, 1] -> F frames of packed RGB bytes.
pub fn to_rgb8(video: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (f, c, h, w) = video.dims4()?;
    if c != 3 {
        return Err(Error::Msg(format!("video: expected 3 channels, got {c}")));
    }
    let data = video
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let frame = h * w * 3;
    Ok((0..f)
        .map(|i| {
            data[i * frame..(i + 1) * frame]
                .iter()
                .map(|v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8)
                .collect()
        })
        .collect())
}

fn io_err(flag: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{flag}: cannot write {}: {e}", path.display()))
}

/// Writes a looping GIF at `fps` frames per second (GIF delays are in 1/100 s).
pub fn write_gif(
    path: &Path,
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
    fps: u32,
) -> Result<()> {
    let (w, h) = (
        u16::try_from(width)
            .map_err(|_| Error::Msg(format!("--width {width}: too wide for a GIF (max 65535)")))?,
        u16::try_from(height).map_err(|_| {
            Error::Msg(format!("--height {height}: too tall for a GIF (max 65535)"))
        })?,
    );
    let file = File::create(path).map_err(|e| io_err("--output", path, e))?;
    let mut enc = gif::Encoder::new(BufWriter::new(file), w, h, &[])
        .map_err(|e| io_err("--output", path, e))?;
    enc.set_repeat(gif::Repeat::Infinite)
        .map_err(|e| io_err("--output", path, e))?;
    let delay = (100.0 / fps.max(1) as f64).round().max(1.0) as u16;
    for rgb in frames {
        let mut frame = gif::Frame::from_rgb_speed(w, h, rgb, 10);
        frame.delay = delay;
        enc.write_frame(&frame)
            .map_err(|e| io_err("--output", path, e))?;
    }
    Ok(())
}

/// Writes `frame_0000.png`, ... into `dir` (created if missing); returns the paths.
pub fn write_pngs(
    dir: &Path,
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("--frames-dir", dir, e))?;
    let mut paths = Vec::with_capacity(frames.len());
    for (i, rgb) in frames.iter().enumerate() {
        let path = dir.join(format!("frame_{i:04}.png"));
        let file = File::create(&path).map_err(|e| io_err("--frames-dir", &path, e))?;
        let mut enc = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| io_err("--frames-dir", &path, e))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| io_err("--frames-dir", &path, e))?;
        paths.push(path);
    }
    Ok(paths)
}
