//! The model configuration: an embedded tiny default (`tiny.json`), overridden key by key by a
//! `--config` JSON file, so a file only needs the keys it changes (see `wan2.1_t2v_1.3b.json`).

use candle_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The embedded default: a tiny model with seeded random weights that runs on a CPU in seconds.
pub const TINY_JSON: &str = include_str!("../tiny.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    pub name: String,
    /// Seed of the random weights used when no `--weights` are given.
    pub weights_seed: u64,
    pub t5: T5Config,
    pub dit: DitConfig,
    pub vae: VaeConfig,
    pub defaults: Defaults,
}

/// umT5 encoder (`wan/modules/t5.py`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct T5Config {
    pub vocab: usize,
    pub dim: usize,
    pub heads: usize,
    pub ffn_dim: usize,
    pub layers: usize,
    pub num_buckets: usize,
    pub max_distance: usize,
    pub eps: f64,
}

/// Wan DiT (`wan/modules/model.py`); patch size is (1, 2, 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    pub dim: usize,
    pub ffn_dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub freq_dim: usize,
    pub text_dim: usize,
    pub text_len: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub eps: f64,
}

/// Wan VAE decoder (`wan/modules/vae.py`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    pub dim: usize,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Per up stage (all but the last): whether it doubles time (`upsample3d`).
    pub temporal_upsample: Vec<bool>,
    pub latents_mean: Vec<f32>,
    pub latents_std: Vec<f32>,
}

/// Values the command line falls back to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub guidance_scale: f64,
    pub shift: f64,
    pub fps: u32,
    pub negative_prompt: String,
}

/// The DiT's patch size (t, h, w).
pub const PATCH: (usize, usize, usize) = (1, 2, 2);

impl VaeConfig {
    /// Pixels per latent pixel (8 for Wan).
    pub fn spatial_factor(&self) -> usize {
        1 << self.dim_mult.len().saturating_sub(1)
    }
    /// Frames per latent frame after the first (4 for Wan).
    pub fn temporal_factor(&self) -> usize {
        1 << self.temporal_upsample.iter().filter(|t| **t).count()
    }
}

fn bad(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::Msg(format!("--config: {what} {msg}"))
}

impl WanConfig {
    /// The embedded tiny default.
    pub fn tiny() -> Result<Self> {
        Self::from_json_with_overrides(None)
    }

    /// The tiny default with the keys of the JSON file at `path` replacing its own.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Msg(format!("--config: cannot read {}: {e}", path.display())))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::Msg(format!(
                "--config: {} is not valid JSON: {e}",
                path.display()
            ))
        })?;
        Self::from_json_with_overrides(Some(value))
            .map_err(|e| Error::Msg(format!("{e} (in {})", path.display())))
    }

    /// The tiny default with `overrides` merged in (objects key by key, other values replaced).
    pub fn from_json_with_overrides(overrides: Option<serde_json::Value>) -> Result<Self> {
        let mut base: serde_json::Value =
            serde_json::from_str(TINY_JSON).map_err(|e| bad("embedded tiny.json", e))?;
        if let Some(o) = overrides {
            if !o.is_object() {
                return Err(bad("the file", "must hold a JSON object"));
            }
            merge(&mut base, o);
        }
        let cfg: WanConfig = serde_json::from_value(base).map_err(|e| bad("", e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the relations the model code relies on.
    pub fn validate(&self) -> Result<()> {
        let (t, d, v) = (&self.t5, &self.dit, &self.vae);
        let positive = [
            ("t5.vocab", t.vocab),
            ("t5.dim", t.dim),
            ("t5.heads", t.heads),
            ("t5.ffn_dim", t.ffn_dim),
            ("t5.num_buckets", t.num_buckets),
            ("t5.max_distance", t.max_distance),
            ("dit.dim", d.dim),
            ("dit.ffn_dim", d.ffn_dim),
            ("dit.heads", d.heads),
            ("dit.freq_dim", d.freq_dim),
            ("dit.text_len", d.text_len),
            ("dit.in_channels", d.in_channels),
            ("dit.out_channels", d.out_channels),
            ("vae.dim", v.dim),
            ("vae.z_dim", v.z_dim),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(bad(name, "must be positive, got 0"));
            }
        }
        if t.dim % t.heads != 0 {
            return Err(bad(
                "t5.dim",
                format!("({}) must be divisible by t5.heads ({})", t.dim, t.heads),
            ));
        }
        if t.num_buckets < 4 || t.num_buckets % 2 != 0 {
            return Err(bad(
                "t5.num_buckets",
                format!("must be even and >= 4, got {}", t.num_buckets),
            ));
        }
        if t.max_distance <= t.num_buckets / 4 {
            return Err(bad(
                "t5.max_distance",
                format!(
                    "must exceed t5.num_buckets / 4 = {}, got {}",
                    t.num_buckets / 4,
                    t.max_distance
                ),
            ));
        }
        if d.dim % d.heads != 0 || (d.dim / d.heads) % 2 != 0 {
            return Err(bad(
                "dit.dim",
                format!(
                    "({}) / dit.heads ({}) must be an even head dim",
                    d.dim, d.heads
                ),
            ));
        }
        if d.freq_dim % 2 != 0 {
            return Err(bad(
                "dit.freq_dim",
                format!("must be even, got {}", d.freq_dim),
            ));
        }
        if d.text_dim != t.dim {
            return Err(bad(
                "dit.text_dim",
                format!("({}) must equal t5.dim ({})", d.text_dim, t.dim),
            ));
        }
        if d.in_channels != v.z_dim || d.out_channels != v.z_dim {
            return Err(bad(
                "dit.in_channels/out_channels",
                format!(
                    "({}, {}) must equal vae.z_dim ({})",
                    d.in_channels, d.out_channels, v.z_dim
                ),
            ));
        }
        if v.dim_mult.len() < 2 || v.dim_mult.contains(&0) {
            return Err(bad(
                "vae.dim_mult",
                format!("needs >= 2 positive entries, got {:?}", v.dim_mult),
            ));
        }
        if v.temporal_upsample.len() != v.dim_mult.len() - 1 {
            return Err(bad(
                "vae.temporal_upsample",
                format!(
                    "needs {} entries (one per up stage but the last), got {}",
                    v.dim_mult.len() - 1,
                    v.temporal_upsample.len()
                ),
            ));
        }
        if (v.dim * v.dim_mult[v.dim_mult.len() - 1]) % 2 != 0 {
            return Err(bad(
                "vae.dim",
                "times the multipliers must give even channel counts",
            ));
        }
        if v.latents_mean.len() != v.z_dim || v.latents_std.len() != v.z_dim {
            return Err(bad(
                "vae.latents_mean/latents_std",
                format!(
                    "need vae.z_dim = {} entries, got {} and {}",
                    v.z_dim,
                    v.latents_mean.len(),
                    v.latents_std.len()
                ),
            ));
        }
        if self.defaults.fps == 0 {
            return Err(bad("defaults.fps", "must be positive, got 0"));
        }
        Ok(())
    }
}

/// Merges `over` into `base`: objects key by key, everything else replaced.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
