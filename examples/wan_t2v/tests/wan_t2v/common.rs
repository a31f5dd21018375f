//! Shared helpers: a per-process temporary folder and the small "smoke" configuration.

use std::path::PathBuf;
use wan_t2v::norms::NormImpl;
use wan_t2v::pipeline::Options;

pub fn tmp(name: &str) -> PathBuf {
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
pub fn smoke_config() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = tmp(&format!("smoke-{n}.json"));
    std::fs::write(&p, SMOKE_JSON).unwrap();
    p
}

pub fn smoke_options(output: PathBuf, imp: NormImpl) -> Options {
    let mut o = Options::new("a red fox running through snow", output);
    o.config = Some(smoke_config());
    o.norm_impl = imp;
    o
}
