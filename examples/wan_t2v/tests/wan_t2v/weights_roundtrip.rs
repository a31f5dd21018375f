//! Weights: the random model's tensors saved under the checkpoint names load back to the same
//! video.

use crate::common::{smoke_config, smoke_options, tmp};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wan_t2v::norms::NormImpl;
use wan_t2v::pipeline::{self, Silent};
use wan_t2v::{config, weights};

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
