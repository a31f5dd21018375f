//! [`RmsNorm`]: the layer, implementing `candle_nn::Module`.

use crate::api::{fused_add_rms_norm_with, rms_norm_with};
use crate::config::{NormConfig, WeightMode};
use candle_core::{Result, Tensor};

/// An RMSNorm layer: a weight (or none) and a [`NormConfig`].
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Module, Tensor};
/// let norm = candle_rmsnorm::RmsNorm::new(Tensor::ones(8, candle_core::DType::F32, &Device::Cpu)?, 1e-6);
/// let ys = norm.forward(&Tensor::ones((2, 8), candle_core::DType::F32, &Device::Cpu)?)?;
/// assert_eq!(ys.dims(), &[2, 8]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Option<Tensor>,
    config: NormConfig,
}

impl RmsNorm {
    /// A layer scaling by `weight` (shape `[hidden]`), like `candle_nn::RmsNorm`.
    pub fn new(weight: Tensor, eps: impl Into<f64>) -> Self {
        Self {
            weight: Some(weight),
            config: NormConfig::new(eps),
        }
    }

    /// A layer with an optional weight and every option.
    pub fn with_config(weight: Option<Tensor>, config: NormConfig) -> Self {
        Self { weight, config }
    }

    /// Reads `weight` of shape `[size]` from `vb` (initialised to ones when the builder creates
    /// variables), like `candle_nn::rms_norm`.
    ///
    /// # Errors
    /// When the builder has no such tensor or it has another shape.
    pub fn load(size: usize, eps: impl Into<f64>, vb: candle_nn::VarBuilder) -> Result<Self> {
        Self::load_with(size, NormConfig::new(eps), vb)
    }

    /// [`RmsNorm::load`] with a [`NormConfig`]; for [`WeightMode::OffsetOne`] a created weight
    /// starts at zeros, so a fresh layer is the identity scale either way.
    ///
    /// # Errors
    /// As [`RmsNorm::load`].
    pub fn load_with(size: usize, config: NormConfig, vb: candle_nn::VarBuilder) -> Result<Self> {
        let init = match config.weight_mode() {
            WeightMode::Scale => candle_nn::Init::Const(1.0),
            WeightMode::OffsetOne => candle_nn::Init::Const(0.0),
        };
        let weight = vb.get_with_hints(size, "weight", init)?;
        Ok(Self::with_config(Some(weight), config))
    }

    /// `(normed, xs + residual)`: see [`crate::fused_add_rms_norm`].
    ///
    /// # Errors
    /// As [`crate::fused_add_rms_norm`].
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        fused_add_rms_norm_with(xs, residual, self.weight.as_ref(), &self.config)
    }

    /// The weight, if the layer has one.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The epsilon.
    pub fn eps(&self) -> f64 {
        self.config.eps()
    }

    /// All options.
    pub fn config(&self) -> &NormConfig {
        &self.config
    }
}

impl candle_nn::Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        rms_norm_with(xs, self.weight.as_ref(), &self.config)
    }
}
