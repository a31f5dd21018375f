//! Safetensors checkpoints in either of the two layouts Wan 2.1 weights come in, detected per
//! model from the tensor names:
//!
//! - original: the DiT at the root as in the Wan 2.1 checkpoint (`blocks.0.self_attn.q.weight`),
//!   the umT5 encoder under `text_encoder.` (`models_t5_umt5-xxl-enc-bf16.pth` keys), the VAE
//!   under `vae.` (`Wan2.1_VAE.pth` keys);
//! - diffusers (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, the files of `transformer/`,
//!   `text_encoder/` and `vae/` passed as they are): `WanTransformer3DModel`
//!   (`blocks.0.attn1.to_q.weight`), HF `UMT5EncoderModel`
//!   (`encoder.block.0.layer.0.SelfAttention.q.weight`), `AutoencoderKLWan`
//!   (`decoder.up_blocks.0.resnets.0.conv1.weight`).
//!
//! Every tensor maps one to one with the same shape and values (the diffusers conversion only
//! renames), so the models ask for original names and [`Checkpoint`] looks each up in the layout
//! its model was found in. After loading, [`Checkpoint::check_all_used`] names the first tensor
//! of the files that no model took (the VAE encoder's are expected and ignored).

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Error, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The three models of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Dit,
    TextEncoder,
    Vae,
}

/// Which naming a model's tensors follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layout {
    Original,
    Diffusers,
}

/// The model an original (requested) name belongs to, and the name without its prefix.
fn model_of(name: &str) -> (Model, &str) {
    if let Some(rest) = name.strip_prefix("text_encoder.") {
        (Model::TextEncoder, rest)
    } else if let Some(rest) = name.strip_prefix("vae.") {
        (Model::Vae, rest)
    } else {
        (Model::Dit, name)
    }
}

/// The model a name found in a file belongs to, and its layout when the name shows it (the
/// DiT's `patch_embedding` is named alike in both).
fn classify(key: &str) -> (Model, Option<Layout>) {
    let has = |pats: &[&str]| {
        pats.iter()
            .any(|p| key.starts_with(p) || key.contains(&format!(".{p}")))
    };
    let t5_diffusers = key == "shared.weight"
        || [
            "encoder.block.",
            "encoder.final_layer_norm.",
            "encoder.embed_tokens.",
        ]
        .iter()
        .any(|p| key.starts_with(p));
    if t5_diffusers {
        (Model::TextEncoder, Some(Layout::Diffusers))
    } else if ["encoder.", "decoder.", "post_quant_conv.", "quant_conv."]
        .iter()
        .any(|p| key.starts_with(p))
    {
        (Model::Vae, Some(Layout::Diffusers))
    } else if key.starts_with("text_encoder.") {
        (Model::TextEncoder, Some(Layout::Original))
    } else if key.starts_with("vae.") {
        (Model::Vae, Some(Layout::Original))
    } else if has(&[
        "condition_embedder.",
        "scale_shift_table",
        "proj_out.",
        "attn1.",
        "attn2.",
        "norm2.",
        "ffn.net.",
    ]) {
        (Model::Dit, Some(Layout::Diffusers))
    } else if has(&[
        "text_embedding.",
        "time_embedding.",
        "time_projection.",
        "head.",
        "self_attn.",
        "cross_attn.",
        "modulation",
        "norm3.",
        "ffn.0.",
        "ffn.2.",
    ]) {
        (Model::Dit, Some(Layout::Original))
    } else {
        (Model::Dit, None)
    }
}

/// Whether a file tensor is expected to stay unused: the VAE encoder side, which the pipeline
/// does not run, and the umT5 embedding's alias when the file holds both copies.
fn ignorable(key: &str) -> bool {
    let vae_original = key.starts_with("vae.encoder.") || key.starts_with("vae.conv1.");
    let vae_diffusers = (key.starts_with("encoder.") && classify(key).0 == Model::Vae)
        || key.starts_with("quant_conv.");
    vae_original || vae_diffusers || key == "encoder.embed_tokens.weight"
}

/// The diffusers names of the original name `name` (with its model prefix), first choice first;
/// `num_res_blocks` is the VAE's (the decoder's stages hold `num_res_blocks + 1` residual blocks
/// and, all but the last, a resample).
pub fn diffusers_names(name: &str, num_res_blocks: usize) -> Vec<String> {
    let (model, rest) = model_of(name);
    match model {
        Model::Dit => vec![dit(rest)],
        Model::TextEncoder => t5(rest),
        Model::Vae => vec![vae(rest, num_res_blocks)],
    }
}

/// `prefix.{index}.tail` split as (index, tail).
fn indexed<'a>(s: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = s.strip_prefix(prefix)?;
    let (i, tail) = rest.split_once('.')?;
    Some((i.parse().ok()?, tail))
}

/// `from` replaced by `to` at the start of `s`.
fn swap(s: &str, from: &str, to: &str) -> Option<String> {
    s.strip_prefix(from).map(|t| format!("{to}{t}"))
}

fn attention(rest: &str) -> String {
    for (from, to) in [
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("o.", "to_out.0."),
    ] {
        if let Some(s) = swap(rest, from, to) {
            return s;
        }
    }
    rest.to_string() // norm_q, norm_k
}

fn dit(rest: &str) -> String {
    if let Some((i, tail)) = indexed(rest, "blocks.") {
        let t = if tail == "modulation" {
            "scale_shift_table".to_string()
        } else if let Some(a) = tail.strip_prefix("self_attn.") {
            format!("attn1.{}", attention(a))
        } else if let Some(a) = tail.strip_prefix("cross_attn.") {
            format!("attn2.{}", attention(a))
        } else {
            swap(tail, "norm3.", "norm2.")
                .or_else(|| swap(tail, "ffn.0.", "ffn.net.0.proj."))
                .or_else(|| swap(tail, "ffn.2.", "ffn.net.2."))
                .unwrap_or_else(|| tail.to_string())
        };
        return format!("blocks.{i}.{t}");
    }
    if rest == "head.modulation" {
        return "scale_shift_table".into();
    }
    const TOP: [(&str, &str); 6] = [
        (
            "text_embedding.0.",
            "condition_embedder.text_embedder.linear_1.",
        ),
        (
            "text_embedding.2.",
            "condition_embedder.text_embedder.linear_2.",
        ),
        (
            "time_embedding.0.",
            "condition_embedder.time_embedder.linear_1.",
        ),
        (
            "time_embedding.2.",
            "condition_embedder.time_embedder.linear_2.",
        ),
        ("time_projection.1.", "condition_embedder.time_proj."),
        ("head.head.", "proj_out."),
    ];
    TOP.iter()
        .find_map(|(f, t)| swap(rest, f, t))
        .unwrap_or_else(|| rest.to_string())
}

fn t5(rest: &str) -> Vec<String> {
    if rest == "token_embedding.weight" {
        return vec!["shared.weight".into(), "encoder.embed_tokens.weight".into()];
    }
    if rest == "norm.weight" {
        return vec!["encoder.final_layer_norm.weight".into()];
    }
    let Some((i, tail)) = indexed(rest, "blocks.") else {
        return vec![rest.to_string()];
    };
    const BLOCK: [(&str, &str); 9] = [
        ("norm1.", "layer.0.layer_norm."),
        ("attn.q.", "layer.0.SelfAttention.q."),
        ("attn.k.", "layer.0.SelfAttention.k."),
        ("attn.v.", "layer.0.SelfAttention.v."),
        ("attn.o.", "layer.0.SelfAttention.o."),
        (
            "pos_embedding.embedding.",
            "layer.0.SelfAttention.relative_attention_bias.",
        ),
        ("norm2.", "layer.1.layer_norm."),
        // Gated GELU: the activated branch is wi_0, the linear one wi_1.
        ("ffn.gate.0.", "layer.1.DenseReluDense.wi_0."),
        ("ffn.fc1.", "layer.1.DenseReluDense.wi_1."),
    ];
    let t = BLOCK
        .iter()
        .find_map(|(f, t)| swap(tail, f, t))
        .or_else(|| swap(tail, "ffn.fc2.", "layer.1.DenseReluDense.wo."))
        .unwrap_or_else(|| tail.to_string());
    vec![format!("encoder.block.{i}.{t}")]
}

/// A residual block's tensor name.
fn resnet(tail: &str) -> String {
    const RES: [(&str, &str); 5] = [
        ("residual.0.", "norm1."),
        ("residual.2.", "conv1."),
        ("residual.3.", "norm2."),
        ("residual.6.", "conv2."),
        ("shortcut.", "conv_shortcut."),
    ];
    RES.iter()
        .find_map(|(f, t)| swap(tail, f, t))
        .unwrap_or_else(|| tail.to_string())
}

fn vae(rest: &str, num_res_blocks: usize) -> String {
    if let Some(s) = swap(rest, "conv2.", "post_quant_conv.") {
        return s;
    }
    let Some(d) = rest.strip_prefix("decoder.") else {
        return rest.to_string();
    };
    let t = if let Some(s) = swap(d, "conv1.", "conv_in.") {
        s
    } else if let Some((i, tail)) = indexed(d, "middle.") {
        match i {
            1 => format!("mid_block.attentions.0.{tail}"),
            _ => format!("mid_block.resnets.{}.{}", i / 2, resnet(tail)),
        }
    } else if let Some((j, tail)) = indexed(d, "upsamples.") {
        let per_stage = num_res_blocks + 2; // residual blocks, then the resample
        let (stage, pos) = (j / per_stage, j % per_stage);
        if pos < num_res_blocks + 1 {
            format!("up_blocks.{stage}.resnets.{pos}.{}", resnet(tail))
        } else {
            format!("up_blocks.{stage}.upsamplers.0.{tail}")
        }
    } else {
        swap(d, "head.0.", "norm_out.")
            .or_else(|| swap(d, "head.2.", "conv_out."))
            .unwrap_or_else(|| d.to_string())
    };
    format!("decoder.{t}")
}

/// Safetensors files read as one set, each model in the layout its names show.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    st: MmapedSafetensors,
    layouts: [(Model, Layout); 3],
    num_res_blocks: usize,
    used: Mutex<BTreeSet<String>>,
}

impl Checkpoint {
    /// Opens `files` (memory-mapped) and finds each model's layout; `num_res_blocks` is the
    /// VAE configuration's.
    pub fn open(files: &[PathBuf], num_res_blocks: usize) -> Result<Self> {
        // SAFETY: the files are memory-mapped read-only; like every safetensors loader we rely
        // on them not being modified while the pipeline runs.
        let st = unsafe { MmapedSafetensors::multi(files) }
            .map_err(|e| Error::Msg(format!("--weights: cannot read {files:?}: {e}")))?;
        let mut layouts = [
            (Model::Dit, Layout::Original),
            (Model::TextEncoder, Layout::Original),
            (Model::Vae, Layout::Original),
        ];
        let classes: Vec<(Model, Option<Layout>)> =
            st.tensors().iter().map(|(k, _)| classify(k)).collect();
        for (model, layout) in layouts.iter_mut() {
            let found: BTreeSet<Layout> = classes
                .iter()
                .filter(|(m, _)| m == model)
                .filter_map(|&(_, l)| l)
                .collect();
            if found.len() > 1 {
                return Err(Error::Msg(format!(
                    "--weights {files:?}: the {model:?} tensors mix the original and the diffusers names"
                )));
            }
            *layout = found.into_iter().next().unwrap_or(Layout::Original);
        }
        Ok(Self {
            files: files.to_vec(),
            st,
            layouts,
            num_res_blocks,
            used: Mutex::new(BTreeSet::new()),
        })
    }

    /// The layout found for `model` (original when the files hold none of its tensors).
    pub fn layout(&self, model: Model) -> Layout {
        self.layouts
            .iter()
            .find(|(m, _)| *m == model)
            .map_or(Layout::Original, |(_, l)| *l)
    }

    /// The file key holding the original name `name`, or the error naming what is missing.
    fn key(&self, name: &str) -> Result<String> {
        let (model, _) = model_of(name);
        let candidates = match self.layout(model) {
            Layout::Original => vec![name.to_string()],
            Layout::Diffusers => diffusers_names(name, self.num_res_blocks),
        };
        for c in &candidates {
            if self.st.get(c).is_ok() {
                return Ok(c.clone());
            }
        }
        let how = match self.layout(model) {
            Layout::Original => String::new(),
            Layout::Diffusers => format!(" (the {model:?}'s `{name}` in the diffusers layout)"),
        };
        Err(Error::Msg(format!(
            "--weights {:?}: missing tensor `{}`{how}",
            self.files,
            candidates.join("` or `")
        )))
    }

    /// Fails naming the first tensor of the files (in name order) that no model took and that
    /// is not expected to stay unused (the VAE encoder).
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock().expect("poisoned");
        let mut keys: Vec<String> = self.st.tensors().into_iter().map(|(k, _)| k).collect();
        keys.sort();
        match keys.iter().find(|k| !used.contains(*k) && !ignorable(k)) {
            None => Ok(()),
            Some(k) => {
                let (model, _) = classify(k);
                Err(Error::Msg(format!(
                    "--weights {:?}: unknown tensor `{k}` (taken for the {model:?}'s, in the {:?} layout; no model uses it)",
                    self.files,
                    self.layout(model)
                )))
            }
        }
    }
}

/// The VarBuilder backend over a shared [`Checkpoint`].
pub struct Backend(pub Arc<Checkpoint>);

impl SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let key = self.0.key(name)?;
        let t = SimpleBackend::get(&self.0.st, s, &key, h, dtype, dev)?;
        self.0.used.lock().expect("poisoned").insert(key);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let key = self.0.key(name)?;
        let t = SimpleBackend::get_unchecked(&self.0.st, &key, dtype, dev)?;
        self.0.used.lock().expect("poisoned").insert(key);
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.key(name).is_ok()
    }
}
