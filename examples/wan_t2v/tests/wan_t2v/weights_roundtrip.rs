//! Weights: the random model's tensors saved under the checkpoint names load back to the same
//! video.

use crate::common::{smoke_config, smoke_options, tmp};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wan_t2v::norms::NormImpl;
use wan_t2v::pipeline::{self, Silent};
use wan_t2v::{checkpoint, config, weights};

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
    let (_, seen) = random_model_tensors()?;
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

/// The tensors the random model hands out for the smoke configuration, by original name.
fn random_model_tensors() -> Result<(config::WanConfig, HashMap<String, Tensor>)> {
    let cfg = config::WanConfig::from_file(&smoke_config())?;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let rec = Recording {
        inner: weights::RandomWeights::new(cfg.weights_seed),
        seen: seen.clone(),
    };
    let vb = candle_nn::VarBuilder::from_backend(Box::new(rec), DType::F32, Device::Cpu);
    pipeline::load_models(&cfg, &vb, NormImpl::Ours)?;
    let seen = seen.lock().unwrap().clone();
    Ok((cfg, seen))
}

/// Diffusers names of `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` (`WanTransformer3DModel`, HF
/// `UMT5EncoderModel`, `AutoencoderKLWan`), written out from diffusers' model code and its
/// `convert_wan_to_diffusers.py`: one pair for every renaming rule.
const DIFFUSERS_NAMES: [(&str, &str); 34] = [
    ("patch_embedding.weight", "patch_embedding.weight"),
    (
        "text_embedding.0.weight",
        "condition_embedder.text_embedder.linear_1.weight",
    ),
    (
        "text_embedding.2.bias",
        "condition_embedder.text_embedder.linear_2.bias",
    ),
    (
        "time_embedding.0.weight",
        "condition_embedder.time_embedder.linear_1.weight",
    ),
    (
        "time_embedding.2.bias",
        "condition_embedder.time_embedder.linear_2.bias",
    ),
    (
        "time_projection.1.weight",
        "condition_embedder.time_proj.weight",
    ),
    ("blocks.1.modulation", "blocks.1.scale_shift_table"),
    ("blocks.0.self_attn.q.weight", "blocks.0.attn1.to_q.weight"),
    ("blocks.1.self_attn.o.bias", "blocks.1.attn1.to_out.0.bias"),
    (
        "blocks.0.self_attn.norm_k.weight",
        "blocks.0.attn1.norm_k.weight",
    ),
    ("blocks.1.cross_attn.v.weight", "blocks.1.attn2.to_v.weight"),
    (
        "blocks.0.cross_attn.norm_q.weight",
        "blocks.0.attn2.norm_q.weight",
    ),
    ("blocks.0.norm3.bias", "blocks.0.norm2.bias"),
    ("blocks.1.ffn.0.weight", "blocks.1.ffn.net.0.proj.weight"),
    ("blocks.1.ffn.2.bias", "blocks.1.ffn.net.2.bias"),
    ("head.modulation", "scale_shift_table"),
    ("head.head.weight", "proj_out.weight"),
    ("text_encoder.token_embedding.weight", "shared.weight"),
    (
        "text_encoder.blocks.1.norm1.weight",
        "encoder.block.1.layer.0.layer_norm.weight",
    ),
    (
        "text_encoder.blocks.0.attn.o.weight",
        "encoder.block.0.layer.0.SelfAttention.o.weight",
    ),
    (
        "text_encoder.blocks.1.pos_embedding.embedding.weight",
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    (
        "text_encoder.blocks.0.norm2.weight",
        "encoder.block.0.layer.1.layer_norm.weight",
    ),
    (
        "text_encoder.blocks.0.ffn.gate.0.weight",
        "encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
    ),
    (
        "text_encoder.blocks.1.ffn.fc1.weight",
        "encoder.block.1.layer.1.DenseReluDense.wi_1.weight",
    ),
    (
        "text_encoder.blocks.1.ffn.fc2.weight",
        "encoder.block.1.layer.1.DenseReluDense.wo.weight",
    ),
    (
        "text_encoder.norm.weight",
        "encoder.final_layer_norm.weight",
    ),
    ("vae.conv2.weight", "post_quant_conv.weight"),
    ("vae.decoder.conv1.bias", "decoder.conv_in.bias"),
    (
        "vae.decoder.middle.2.residual.3.gamma",
        "decoder.mid_block.resnets.1.norm2.gamma",
    ),
    (
        "vae.decoder.middle.1.to_qkv.weight",
        "decoder.mid_block.attentions.0.to_qkv.weight",
    ),
    (
        "vae.decoder.upsamples.4.shortcut.weight",
        "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
    ),
    (
        "vae.decoder.upsamples.7.time_conv.bias",
        "decoder.up_blocks.1.upsamplers.0.time_conv.bias",
    ),
    (
        "vae.decoder.upsamples.14.residual.6.weight",
        "decoder.up_blocks.3.resnets.2.conv2.weight",
    ),
    ("vae.decoder.head.0.gamma", "decoder.norm_out.gamma"),
];

/// The random model saved in the diffusers layout: one file per model, keys without prefixes,
/// as in the `transformer/`, `text_encoder/` and `vae/` folders.
fn diffusers_files(
    cfg: &config::WanConfig,
    seen: &HashMap<String, Tensor>,
    tag: &str,
    edit: impl Fn(&mut [HashMap<String, Tensor>; 3]),
) -> Result<Vec<std::path::PathBuf>> {
    let mut parts: [HashMap<String, Tensor>; 3] = Default::default();
    for (name, t) in seen {
        let key = checkpoint::diffusers_names(name, cfg.vae.num_res_blocks)[0].clone();
        let part = if name.starts_with("text_encoder.") {
            1
        } else if name.starts_with("vae.") {
            2
        } else {
            0
        };
        assert!(
            parts[part].insert(key.clone(), t.clone()).is_none(),
            "{key} twice"
        );
    }
    edit(&mut parts);
    let mut files = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let f = tmp(&format!("diffusers_{tag}_{i}.safetensors"));
        candle_core::safetensors::save(p, &f)?;
        files.push(f);
    }
    Ok(files)
}

fn video_with(files: Vec<std::path::PathBuf>, tag: &str) -> Result<Tensor> {
    let mut o = smoke_options(tmp(&format!("{tag}.gif")), NormImpl::Ours);
    o.weights = files;
    Ok(pipeline::run(&o, &Device::Cpu, &mut Silent)?.video)
}

#[test]
fn diffusers_layout_loads_the_same_model() -> Result<()> {
    let (cfg, seen) = random_model_tensors()?;
    for (original, diffusers) in DIFFUSERS_NAMES {
        assert!(seen.contains_key(original), "{original} not requested");
        let got = checkpoint::diffusers_names(original, cfg.vae.num_res_blocks);
        assert_eq!(got[0], diffusers, "{original}");
    }
    let random = pipeline::run(
        &smoke_options(tmp("df_random.gif"), NormImpl::Ours),
        &Device::Cpu,
        &mut Silent,
    )?
    .video;
    let same = |v: &Tensor| -> Result<bool> {
        Ok((&random - v)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?
            == 0.0)
    };
    // All three in the diffusers layout, with the VAE encoder's tensors and the embedding's
    // alias present (unused, as in the real files).
    let files = diffusers_files(&cfg, &seen, "all", |p| {
        let e = p[1]["shared.weight"].clone();
        p[1].insert("encoder.embed_tokens.weight".into(), e);
        let w = p[2]["post_quant_conv.weight"].clone();
        p[2].insert("quant_conv.weight".into(), w.clone());
        p[2].insert("encoder.conv_in.weight".into(), w);
    })?;
    assert!(same(&video_with(files, "df_all")?)?);
    // Only the alias of the embedding.
    let files = diffusers_files(&cfg, &seen, "alias", |p| {
        let e = p[1].remove("shared.weight").unwrap();
        p[1].insert("encoder.embed_tokens.weight".into(), e);
    })?;
    assert!(same(&video_with(files, "df_alias")?)?);
    // A diffusers DiT with the original text encoder and VAE.
    let mut files = diffusers_files(&cfg, &seen, "mixed", |_| {})?;
    let originals: HashMap<String, Tensor> = seen
        .iter()
        .filter(|(k, _)| k.starts_with("text_encoder.") || k.starts_with("vae."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let f = tmp("df_mixed_originals.safetensors");
    candle_core::safetensors::save(&originals, &f)?;
    files.truncate(1);
    files.push(f);
    assert!(same(&video_with(files, "df_mixed")?)?);
    Ok(())
}

#[test]
fn diffusers_layout_errors_name_the_tensor() -> Result<()> {
    let (cfg, seen) = random_model_tensors()?;
    let err = |files, tag| match video_with(files, tag) {
        Ok(_) => panic!("{tag}: loaded"),
        Err(e) => e.to_string(),
    };
    // (edit of the diffusers files, what the error must say)
    type Edit = fn(&mut [HashMap<String, Tensor>; 3]);
    let cases: [(&str, Edit, &[&str]); 3] = [
        (
            "missing",
            |p| {
                p[0].remove("blocks.1.attn2.to_k.weight");
            },
            &[
                "missing tensor `blocks.1.attn2.to_k.weight`",
                "blocks.1.cross_attn.k.weight",
            ],
        ),
        (
            "unknown",
            |p| {
                let t = p[0]["proj_out.bias"].clone();
                p[0].insert("blocks.0.attn1.to_extra.bias".into(), t);
            },
            &["unknown tensor `blocks.0.attn1.to_extra.bias`"],
        ),
        (
            "mixed",
            |p| {
                let t = p[0]["proj_out.bias"].clone();
                p[0].insert("head.head.bias".into(), t);
            },
            &["mix the original and the diffusers names"],
        ),
    ];
    for (tag, edit, want) in cases {
        let files = diffusers_files(&cfg, &seen, tag, edit)?;
        let e = err(files, tag);
        assert!(want.iter().all(|w| e.contains(w)), "{tag}: {e}");
    }
    Ok(())
}
