//! Where the parameters come from: local safetensors files (`--weights`, several read as one set)
//! or seeded random values for the embedded tiny default.
//!
//! The models ask for the Wan 2.1 checkpoint names: the DiT's at the root
//! (`patch_embedding.weight`, `blocks.0.self_attn.norm_q.weight`, `head.head.weight`, ...), the
//! umT5 encoder's under `text_encoder.` (the keys of `models_t5_umt5-xxl-enc-bf16.pth`:
//! `text_encoder.blocks.0.attn.q.weight`, ...), the VAE's under `vae.` (the keys of
//! `Wan2.1_VAE.pth`: `vae.conv2.weight`, `vae.decoder.middle.0.residual.0.gamma`, ...). Files
//! in the diffusers layout are read too: `checkpoint` translates per model.

use crate::checkpoint::{self, Checkpoint};
use crate::rng::Rng;
use candle_core::{DType, Device, Error, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::path::PathBuf;
use std::sync::Arc;

/// Seeded random parameters chosen from each tensor's name and shape, so activations stay of
/// order one: norm gains near 1, biases and modulations small, matrices with std
/// `1/sqrt(fan_in)`. Unlike the reference it does not zero-initialise the DiT head or the VAE
/// attention projection, so even an untrained model makes moving pictures.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn values(&self, shape: &Shape, name: &str) -> Vec<f32> {
        let n = shape.elem_count();
        let dims = shape.dims();
        let mut rng = Rng::for_name(self.seed, name);
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let is_norm =
            leaf == "gamma" || (leaf == "weight" && dims.len() == 1 && name.contains("norm"));
        if is_norm {
            rng.normal_vec(n, 1.0, 0.1)
        } else if leaf == "bias" {
            rng.normal_vec(n, 0.0, 0.02)
        } else if leaf == "modulation" {
            let dim = dims.last().copied().unwrap_or(1).max(1);
            rng.normal_vec(n, 0.0, 1.0 / (dim as f64).sqrt())
        } else if name.ends_with("token_embedding.weight") {
            rng.normal_vec(n, 0.0, 1.0)
        } else if name.ends_with("pos_embedding.embedding.weight") {
            rng.normal_vec(n, 0.0, 0.5)
        } else {
            let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
            rng.normal_vec(n, 0.0, 1.0 / (fan_in as f64).sqrt())
        }
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        Tensor::from_vec(self.values(&s, name), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        Err(Error::Msg(format!(
            "random weights need a shape for {name}"
        )))
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The root VarBuilder: safetensors files when given (either layout, see `checkpoint`), with
/// the checkpoint to check for unused tensors after loading; else seeded random weights.
/// `num_res_blocks` is the VAE configuration's (it places the decoder's diffusers names).
pub fn var_builder(
    files: &[PathBuf],
    seed: u64,
    num_res_blocks: usize,
    dtype: DType,
    dev: &Device,
) -> Result<(VarBuilder<'static>, Option<Arc<Checkpoint>>)> {
    if files.is_empty() {
        let vb = VarBuilder::from_backend(Box::new(RandomWeights::new(seed)), dtype, dev.clone());
        return Ok((vb, None));
    }
    for f in files {
        if !f.is_file() {
            return Err(Error::Msg(format!(
                "--weights: {} does not exist or is not a file",
                f.display()
            )));
        }
    }
    let ck = Arc::new(Checkpoint::open(files, num_res_blocks)?);
    let vb = VarBuilder::from_backend(
        Box::new(checkpoint::Backend(ck.clone())),
        dtype,
        dev.clone(),
    );
    Ok((vb, Some(ck)))
}

/// Adds which flag the tensors came from to a loading error (missing tensor, wrong shape).
pub fn loading_context(e: Error, files: &[PathBuf]) -> Error {
    if files.is_empty() {
        e
    } else {
        Error::Msg(format!("--weights {:?}: {e}", files))
    }
}
