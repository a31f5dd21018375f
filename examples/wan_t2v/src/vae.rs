//! Wan VAE decoder (`wan/modules/vae.py`), with causal 3D convolutions built from conv2d (Candle
//! has no conv3d) and the channel-first `RMS_norm` through this crate.
//!
//! Tensors inside are `[T, C, H, W]`: frames are the conv2d batch. The reference decodes one
//! latent frame at a time with a cache of the last two frames per causal convolution; that is
//! the same as one causal convolution over the whole sequence, which is what is done here.

use crate::config::VaeConfig;
use crate::norms::{ChannelNorm, NormImpl};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Conv3d` with the front of time padded by `kt - 1` zero frames (none at the back) and
/// `kh / 2` spatial padding, as a single conv2d over the `kt` shifted copies of the input
/// stacked along channels.
#[derive(Debug)]
pub struct CausalConv3d {
    /// [Cout, kt * Cin, kh, kw], block `dt` of the input channels = kernel time index `dt`.
    weight: Tensor,
    bias: Tensor,
    kt: usize,
    pad_hw: usize,
}

impl CausalConv3d {
    /// Loads `weight` [Cout, Cin, kt, k, k] and `bias` [Cout].
    pub fn new(cin: usize, cout: usize, kt: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((cout, cin, kt, k, k), "weight")?;
        let bias = vb.get(cout, "bias")?;
        Self::from_weights(&w, bias)
    }

    pub fn from_weights(w: &Tensor, bias: Tensor) -> Result<Self> {
        let (cout, cin, kt, kh, kw) = w.dims5()?;
        let weight = w
            .permute((0, 2, 1, 3, 4))?
            .reshape((cout, kt * cin, kh, kw))?
            .contiguous()?;
        Ok(Self {
            weight,
            bias: bias.reshape((1, cout, 1, 1))?,
            kt,
            pad_hw: kh / 2,
        })
    }

    /// `x`: [T, Cin, H, W] -> [T, Cout, H, W]; output frame t sees input frames t-kt+1 ..= t.
    /// Frames go through conv2d in groups small enough to bound its im2col buffer (~512 MB).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_grouped(x, 1 << 27)
    }

    /// [`CausalConv3d::forward`] with groups of frames whose im2col buffer holds at most
    /// `budget` values (at least one frame per group).
    pub fn forward_grouped(&self, x: &Tensor, budget: usize) -> Result<Tensor> {
        let (t, c, h, w) = x.dims4()?;
        let padded = if self.kt == 1 {
            x.clone()
        } else {
            let zeros = Tensor::zeros((self.kt - 1, c, h, w), x.dtype(), x.device())?;
            Tensor::cat(&[&zeros, x], 0)?
        };
        let (kh, kw) = (self.weight.dim(2)?, self.weight.dim(3)?);
        let per_frame = self.kt * c * h * w * kh * kw;
        let group = (budget / per_frame.max(1)).clamp(1, t.max(1));
        let mut outs = Vec::with_capacity(t.div_ceil(group));
        let mut start = 0;
        while start < t {
            let n = group.min(t - start);
            // Output frames start..start+n read padded frames start..start+n+kt-1.
            let shifted = (0..self.kt)
                .map(|dt| padded.narrow(0, start + dt, n))
                .collect::<Result<Vec<_>>>()?;
            let stacked = if self.kt == 1 {
                shifted[0].clone()
            } else {
                Tensor::cat(&shifted, 1)?
            };
            outs.push(
                stacked
                    .conv2d(&self.weight, self.pad_hw, 1, 1, 1)?
                    .broadcast_add(&self.bias)?,
            );
            start += n;
        }
        if outs.len() == 1 {
            Ok(outs.remove(0))
        } else {
            Tensor::cat(&outs, 0)
        }
    }
}

/// `nn.Conv2d(k x k, padding k/2)` applied per frame.
#[derive(Debug)]
struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    pad: usize,
}

impl Conv2d {
    fn new(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((cout, cin, k, k), "weight")?,
            bias: vb.get(cout, "bias")?.reshape((1, cout, 1, 1))?,
            pad: k / 2,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.pad, 1, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

fn channel_norm(c: usize, vb: VarBuilder, images: bool, imp: NormImpl) -> Result<ChannelNorm> {
    let gamma = if images {
        vb.get((c, 1, 1), "gamma")?
    } else {
        vb.get((c, 1, 1, 1), "gamma")?
    };
    ChannelNorm::new(&gamma, imp)
}

/// `residual = [RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d]`, plus a
/// 1x1x1 shortcut when the channel count changes.
#[derive(Debug)]
struct ResidualBlock {
    norm1: ChannelNorm,
    conv1: CausalConv3d,
    norm2: ChannelNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    fn new(cin: usize, cout: usize, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        let r = vb.pp("residual");
        Ok(Self {
            norm1: channel_norm(cin, r.pp("0"), false, imp)?,
            conv1: CausalConv3d::new(cin, cout, 3, 3, r.pp("2"))?,
            norm2: channel_norm(cout, r.pp("3"), false, imp)?,
            conv2: CausalConv3d::new(cout, cout, 3, 3, r.pp("6"))?,
            shortcut: if cin != cout {
                Some(CausalConv3d::new(cin, cout, 1, 1, vb.pp("shortcut"))?)
            } else {
                None
            },
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let r = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let r = self.conv2.forward(&self.norm2.forward(&r)?.silu()?)?;
        r + h
    }
}

/// Single-head self-attention over the pixels of each frame.
#[derive(Debug)]
struct AttentionBlock {
    norm: ChannelNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
}

impl AttentionBlock {
    fn new(c: usize, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        Ok(Self {
            norm: channel_norm(c, vb.pp("norm"), true, imp)?,
            to_qkv: Conv2d::new(c, 3 * c, 1, vb.pp("to_qkv"))?,
            proj: Conv2d::new(c, c, 1, vb.pp("proj"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (t, c, h, w) = x.dims4()?;
        let qkv = self
            .to_qkv
            .forward(&self.norm.forward(x)?)?
            .reshape((t, 3 * c, h * w))?
            .transpose(1, 2)?; // [T, HW, 3C]
        let q = qkv.narrow(2, 0, c)?.contiguous()?;
        let k = qkv.narrow(2, c, c)?.contiguous()?;
        let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let s = (q.matmul(&k.t()?)? * (1.0 / (c as f64).sqrt()))?;
        let o = candle_nn::ops::softmax_last_dim(&s)?.matmul(&v)?; // [T, HW, C]
        let o = o.transpose(1, 2)?.reshape((t, c, h, w))?;
        self.proj.forward(&o)? + x
    }
}

/// Nearest 2x spatial upsampling + conv2d halving the channels; `upsample3d` also doubles every
/// frame but the first with a (3, 1, 1) causal time convolution to 2C channels.
#[derive(Debug)]
struct Resample {
    time_conv: Option<CausalConv3d>,
    conv: Conv2d,
}

impl Resample {
    fn new(c: usize, temporal: bool, vb: VarBuilder) -> Result<Self> {
        let time_conv = if temporal {
            let tv = vb.pp("time_conv");
            let w = tv.get((2 * c, c, 3, 1, 1), "weight")?;
            Some(CausalConv3d::from_weights(&w, tv.get(2 * c, "bias")?)?)
        } else {
            None
        };
        Ok(Self {
            time_conv,
            conv: Conv2d::new(c, c / 2, 3, vb.pp("resample.1"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (t, c, h, w) = x.dims4()?;
        let x = match &self.time_conv {
            Some(tc) if t > 1 => {
                // Frame 0 passes through; frames 1.. form their own causal sequence.
                let rest = tc.forward(&x.narrow(0, 1, t - 1)?)?; // [T-1, 2C, H, W]
                let rest = rest.reshape((2 * (t - 1), c, h, w))?; // frame 2i + j <- channels j*C..
                Tensor::cat(&[&x.narrow(0, 0, 1)?, &rest], 0)?
            }
            _ => x.clone(),
        };
        self.conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }
}

#[derive(Debug)]
enum UpLayer {
    Res(ResidualBlock),
    Resample(Resample),
}

#[derive(Debug)]
pub struct WanVaeDecoder {
    conv2: CausalConv3d,
    conv1: CausalConv3d,
    middle: (ResidualBlock, AttentionBlock, ResidualBlock),
    upsamples: Vec<UpLayer>,
    head_norm: ChannelNorm,
    head_conv: CausalConv3d,
    mean: Tensor,
    std: Tensor,
}

impl WanVaeDecoder {
    /// `vb` at the VAE's root (its `conv2.*` and `decoder.*`).
    pub fn new(cfg: &VaeConfig, vb: VarBuilder, imp: NormImpl) -> Result<Self> {
        let z = cfg.z_dim;
        let m = &cfg.dim_mult;
        // dims = dim * [mult[-1]] + reversed(mult)
        let dims: Vec<usize> = std::iter::once(m[m.len() - 1])
            .chain(m.iter().rev().copied())
            .map(|u| cfg.dim * u)
            .collect();
        let dvb = vb.pp("decoder");
        let d0 = dims[0];
        let mvb = dvb.pp("middle");
        let middle = (
            ResidualBlock::new(d0, d0, mvb.pp("0"), imp)?,
            AttentionBlock::new(d0, mvb.pp("1"), imp)?,
            ResidualBlock::new(d0, d0, mvb.pp("2"), imp)?,
        );
        let mut upsamples = Vec::new();
        let uvb = dvb.pp("upsamples");
        let mut out_dim = d0;
        for i in 0..dims.len() - 1 {
            let mut in_dim = dims[i];
            out_dim = dims[i + 1];
            if i > 0 {
                in_dim /= 2; // the previous Resample halved the channels
            }
            for _ in 0..cfg.num_res_blocks + 1 {
                let idx = upsamples.len();
                upsamples.push(UpLayer::Res(ResidualBlock::new(
                    in_dim,
                    out_dim,
                    uvb.pp(idx.to_string()),
                    imp,
                )?));
                in_dim = out_dim;
            }
            if i != m.len() - 1 {
                let idx = upsamples.len();
                upsamples.push(UpLayer::Resample(Resample::new(
                    out_dim,
                    cfg.temporal_upsample[i],
                    uvb.pp(idx.to_string()),
                )?));
            }
        }
        let dev = vb.device();
        Ok(Self {
            conv2: CausalConv3d::new(z, z, 1, 1, vb.pp("conv2"))?,
            conv1: CausalConv3d::new(z, d0, 3, 3, dvb.pp("conv1"))?,
            middle,
            upsamples,
            head_norm: channel_norm(out_dim, dvb.pp("head.0"), false, imp)?,
            head_conv: CausalConv3d::new(out_dim, 3, 3, 3, dvb.pp("head.2"))?,
            mean: Tensor::new(cfg.latents_mean.as_slice(), dev)?.reshape((z, 1, 1, 1))?,
            std: Tensor::new(cfg.latents_std.as_slice(), dev)?.reshape((z, 1, 1, 1))?,
        })
    }

    /// `z`: normalised latents [C, T, h, w] -> video [1 + tf*(T-1), 3, H, W] in [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = z.broadcast_mul(&self.std)?.broadcast_add(&self.mean)?;
        let x = z.transpose(0, 1)?.contiguous()?; // [T, C, h, w]
        let x = self.conv2.forward(&x)?;
        let mut x = self.conv1.forward(&x)?;
        x = self.middle.0.forward(&x)?;
        x = self.middle.1.forward(&x)?;
        x = self.middle.2.forward(&x)?;
        for l in &self.upsamples {
            x = match l {
                UpLayer::Res(r) => r.forward(&x)?,
                UpLayer::Resample(r) => r.forward(&x)?,
            };
        }
        let x = self
            .head_conv
            .forward(&self.head_norm.forward(&x)?.silu()?)?;
        x.clamp(-1f32, 1f32)
    }
}
