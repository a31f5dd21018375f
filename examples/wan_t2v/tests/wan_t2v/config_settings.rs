//! The configurations (embedded tiny, shipped 1.3B) and the resolution of the run's settings.

use crate::common::tmp;
use candle_core::Result;
use std::path::Path;
use wan_t2v::config;
use wan_t2v::pipeline::{self, Options};

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
        "/wan2.1_t2v_1.3b.json"
    )))?;
    assert_eq!(
        (big.dit.dim, big.dit.layers, big.t5.dim, big.vae.dim),
        (1536, 30, 4096, 96)
    );
    Ok(())
}

/// Wan 2.1's default negative prompt (`sample_neg_prompt` of the reference's shared config)
/// replaces a missing or empty `--negative-prompt`, as `text2video.py` does; the tiny
/// configuration has none; a given one is kept.
#[test]
fn negative_prompt_defaults_like_the_reference() -> Result<()> {
    let big = config::WanConfig::from_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/wan2.1_t2v_1.3b.json"
    )))?;
    let mut o = Options::new("x", tmp("unused.gif"));
    let mut notes = Vec::new();
    for given in [None, Some(String::new())] {
        o.negative_prompt = given;
        let s = pipeline::resolve(&o, &big, &mut notes)?;
        assert!(
            s.negative_prompt
                .starts_with("色调艳丽，过曝，静态，细节模糊不清，字幕")
                && s.negative_prompt.ends_with("三条腿，背景人很多，倒着走"),
            "{}",
            s.negative_prompt
        );
    }
    o.negative_prompt = Some("blurry".into());
    assert_eq!(
        pipeline::resolve(&o, &big, &mut notes)?.negative_prompt,
        "blurry"
    );
    o.negative_prompt = None;
    let tiny = config::WanConfig::tiny()?;
    assert_eq!(
        pipeline::resolve(&o, &tiny, &mut notes)?.negative_prompt,
        ""
    );
    Ok(())
}
