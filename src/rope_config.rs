//! Options of the q/k norm + rotary embedding ops (`rms_norm_rope`, `qk_rms_norm_rope`): the
//! heads, what a norm covers, which rotation, and the layout written.

use crate::config::NormConfig;

/// Which elements the rotation pairs, as Candle's `rotary_emb` functions pair them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RopeStyle {
    /// Elements `2i` and `2i + 1` of a head, rotated by angle `i`
    /// (`candle_nn::rotary_emb::rope_i`; Wan, GPT-J, the complex-number form).
    #[default]
    Interleaved,
    /// Elements `i` and `i + head_dim / 2` of a head (`candle_nn::rotary_emb::rope`; LLaMA,
    /// Flux, the "rotate half" form).
    HalfSplit,
}

/// The layout the ops write: each head's `head_dim` values stay contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeadLayout {
    /// `[B, heads, L, head_dim]`: what Candle's attention (matmul, `candle_nn::ops::sdpa`) and
    /// `rope_i` take. The transpose the unfused path makes with `contiguous` is fused in.
    #[default]
    Bhld,
    /// `[B, L, heads, head_dim]`: the input's own order (flash-attn's layout).
    Blhd,
}

/// What one RMSNorm covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormScope {
    /// The whole row of `heads * head_dim` values, with a weight of that length (Wan 2.1's
    /// `norm_q` / `norm_k`, before the heads are split).
    #[default]
    Full,
    /// Each head's `head_dim` values on their own, with one weight of `head_dim` shared by the
    /// heads (Flux, SD3, Qwen3, most DiTs).
    PerHead,
}

/// The options of [`crate::rms_norm_rope`] and [`crate::qk_rms_norm_rope`]: the number of heads,
/// the [`NormScope`], the [`RopeStyle`], the [`HeadLayout`] written, and the norm's own options
/// (eps, [`crate::EpsMode`], [`crate::WeightMode`], [`crate::Rounding`], [`crate::Backend`]) as a
/// [`NormConfig`]. A `NormConfig` with a dimension or a variance size set is refused (the norm is
/// over rows or heads here).
///
/// ```
/// use candle_rmsnorm::{HeadLayout, NormConfig, NormScope, RopeConfig, RopeStyle, Rounding};
/// let cfg = RopeConfig::new(40, NormConfig::new(1e-6).with_rounding(Rounding::BeforeWeight))
///     .with_scope(NormScope::Full)
///     .with_style(RopeStyle::Interleaved)
///     .with_layout(HeadLayout::Bhld);
/// assert_eq!(cfg.heads(), 40);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    heads: usize,
    norm: NormConfig,
    scope: NormScope,
    style: RopeStyle,
    layout: HeadLayout,
}

impl RopeConfig {
    /// `heads` heads, the norm's options `norm`, and the defaults: [`NormScope::Full`],
    /// [`RopeStyle::Interleaved`], [`HeadLayout::Bhld`].
    pub fn new(heads: usize, norm: NormConfig) -> Self {
        Self {
            heads,
            norm,
            scope: NormScope::Full,
            style: RopeStyle::Interleaved,
            layout: HeadLayout::Bhld,
        }
    }

    /// Sets what one norm covers.
    pub fn with_scope(mut self, scope: NormScope) -> Self {
        self.scope = scope;
        self
    }

    /// Sets which elements the rotation pairs.
    pub fn with_style(mut self, style: RopeStyle) -> Self {
        self.style = style;
        self
    }

    /// Sets the layout written.
    pub fn with_layout(mut self, layout: HeadLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Replaces the norm's options.
    pub fn with_norm(mut self, norm: NormConfig) -> Self {
        self.norm = norm;
        self
    }

    /// The number of heads a row splits into.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The norm's options.
    pub fn norm(&self) -> &NormConfig {
        &self.norm
    }

    /// What one norm covers.
    pub fn scope(&self) -> NormScope {
        self.scope
    }

    /// Which elements the rotation pairs.
    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// The layout written.
    pub fn layout(&self) -> HeadLayout {
        self.layout
    }
}
