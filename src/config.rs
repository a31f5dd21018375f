//! Options of the norm ops: how the weight is applied, where rounding happens, which backend runs.

use std::fmt;
use std::sync::OnceLock;

/// Name of the environment variable that picks the default [`Backend`] (read once per process).
pub const BACKEND_ENV: &str = "CANDLE_RMSNORM_BACKEND";

/// The values [`Backend::parse`] and `CANDLE_RMSNORM_BACKEND` take, for messages.
const BACKEND_NAMES: &str = "auto, cpu, cuda, rocm, candle";

/// Where the ops run.
///
/// `Auto` (the default) runs each op on the device its tensors live on: CPU tensors on the SIMD
/// CPU path, CUDA tensors on the CUDA kernels (feature `cuda`), and tensors on any other device
/// (Metal, or CUDA in a build without feature `cuda`) on `Candle`, saying so once through `log`.
/// `Cpu`, `Cuda`, `Rocm` and `Candle` insist on one backend and return an error when it cannot
/// be used; nothing falls back silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// Follow the tensors' device.
    #[default]
    Auto,
    /// The multi-threaded SIMD CPU path; tensors must be on the CPU.
    Cpu,
    /// The CUDA kernels (feature `cuda`); tensors must be on a CUDA device.
    Cuda,
    /// The ROCm kernels (feature `rocm`); host tensors are staged through device memory.
    Rocm,
    /// Portable: Candle's own tensor ops on any device Candle serves, with the same numerics
    /// contract (f32 sums, the rescue of huge and tiny rows, the rounding and weight options).
    /// Slower than a native kernel: several passes over memory instead of one or two.
    Candle,
}

impl Backend {
    /// Parses `auto`, `cpu`, `cuda`, `rocm` or `candle` (ASCII case-insensitive, surrounding
    /// blanks ignored; `hip` names `rocm`, `portable` names `candle`).
    ///
    /// # Errors
    /// Any other text, with the accepted values named.
    pub fn parse(text: &str) -> candle_core::Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "rocm" | "hip" => Ok(Self::Rocm),
            "candle" | "portable" => Ok(Self::Candle),
            _ => candle_core::bail!(
                "candle-rmsnorm: backend must be one of {BACKEND_NAMES}, got {text:?}"
            ),
        }
    }

    /// The backend named by `CANDLE_RMSNORM_BACKEND`, read once per process; `Auto` when unset.
    ///
    /// # Errors
    /// When the variable holds something other than one of the names [`Backend::parse`] takes.
    /// The error is returned by every op that relies on the environment, so a typo is never
    /// ignored.
    pub fn from_env() -> candle_core::Result<Self> {
        static ENV: OnceLock<Result<Backend, String>> = OnceLock::new();
        let parsed = ENV.get_or_init(|| match std::env::var(BACKEND_ENV) {
            Ok(v) => Backend::parse(&v)
                .map_err(|_| format!("{BACKEND_ENV} must be one of {BACKEND_NAMES}, got {v:?}")),
            Err(std::env::VarError::NotPresent) => Ok(Backend::Auto),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(format!("{BACKEND_ENV} is not valid unicode: {v:?}"))
            }
        });
        parsed.clone().map_err(candle_core::Error::Msg)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Rocm => "rocm",
            Self::Candle => "candle",
        })
    }
}

/// How the weight multiplies the normalised value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightMode {
    /// `y = n * w` (LLaMA, T5, Wan, `candle_nn`).
    #[default]
    Scale,
    /// `y = n * (1 + w)`, with `1 + w` formed in f32 (Gemma).
    OffsetOne,
}

/// Where the result is rounded to the input dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rounding {
    /// Everything in f32 (f64 for f64 input), one rounding at the end.
    #[default]
    AtEnd,
    /// Round `x * rsqrt(mean(x^2) + eps)` to the input dtype, then multiply by the weight and
    /// round again: what Wan 2.1's `WanRMSNorm` and T5's `T5LayerNorm` reference code compute.
    BeforeWeight,
}

/// How `eps` enters the scale of a row of `n` values with sum of squares `ss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EpsMode {
    /// `1 / sqrt(ss / n + eps)`: RMSNorm as LLaMA, T5, Wan and `candle_nn` write it.
    #[default]
    AddToMean,
    /// `sqrt(n) / max(sqrt(ss), eps)`: PyTorch's `F.normalize(x, dim) * sqrt(n)`, the norm
    /// clamped from below by `eps` (Wan's VAE `RMS_norm`, with `eps = 1e-12`). Equal to
    /// `AddToMean` with `eps = 0` wherever the L2 norm of the row exceeds `eps`.
    ClampNorm,
}

/// The options of one norm: `eps`, [`EpsMode`], [`WeightMode`], [`Rounding`], the dimension
/// normalised over, the variance size and [`Backend`].
///
/// ```
/// use candle_rmsnorm::{Backend, NormConfig, Rounding, WeightMode};
/// let cfg = NormConfig::new(1e-6)
///     .with_rounding(Rounding::BeforeWeight)
///     .with_weight_mode(WeightMode::Scale)
///     .with_backend(Backend::Cpu);
/// assert_eq!(cfg.eps(), 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormConfig {
    eps: f64,
    weight_mode: WeightMode,
    rounding: Rounding,
    eps_mode: EpsMode,
    dim: Option<usize>,
    variance_size: Option<usize>,
    backend: Option<Backend>,
}

impl NormConfig {
    /// `eps` with the default options: [`WeightMode::Scale`], [`Rounding::AtEnd`], and the backend
    /// from `CANDLE_RMSNORM_BACKEND` (`Auto` when unset).
    pub fn new(eps: impl Into<f64>) -> Self {
        Self {
            eps: eps.into(),
            weight_mode: WeightMode::Scale,
            rounding: Rounding::AtEnd,
            eps_mode: EpsMode::AddToMean,
            dim: None,
            variance_size: None,
            backend: None,
        }
    }

    /// Sets how the weight is applied.
    pub fn with_weight_mode(mut self, mode: WeightMode) -> Self {
        self.weight_mode = mode;
        self
    }

    /// Sets where rounding to the input dtype happens.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// Sets how `eps` enters the scale ([`EpsMode`]).
    pub fn with_eps_mode(mut self, mode: EpsMode) -> Self {
        self.eps_mode = mode;
        self
    }

    /// Normalises over dimension `dim` (counted from the front, as `Tensor::dim` takes a
    /// `usize`) instead of the last one: each "row" is the `dims[dim]` values found by moving
    /// along `dim` with every other index fixed, e.g. the channels of a `[B, C, T, H, W]` video
    /// tensor with `dim = 1`. The weight then has `dims[dim]` elements, the variance size counts
    /// along `dim`, and the output has the shape of `xs` (contiguous). Strided layouts are read
    /// in place; no permuted copy is made. `dim` must be below the rank (checked per call).
    pub fn with_dim(mut self, dim: usize) -> Self {
        self.dim = Some(dim);
        self
    }

    /// Takes the mean of squares over the first `n` elements of each row only (sglang's
    /// `variance_size_override`: tensor-parallel heads padded past the model's real width); every
    /// element of the row is still scaled and written. `n` must lie in `1..=hidden` of the tensors
    /// the config is used with (checked per call). Without it the mean is over the whole row.
    pub fn with_variance_size(mut self, n: usize) -> Self {
        self.variance_size = Some(n);
        self
    }

    /// Pins the backend, overriding `CANDLE_RMSNORM_BACKEND`.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Sets `eps`.
    pub fn with_eps(mut self, eps: impl Into<f64>) -> Self {
        self.eps = eps.into();
        self
    }

    /// The epsilon added to the mean of squares.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// How the weight is applied.
    pub fn weight_mode(&self) -> WeightMode {
        self.weight_mode
    }

    /// Where rounding happens.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// How `eps` enters the scale.
    pub fn eps_mode(&self) -> EpsMode {
        self.eps_mode
    }

    /// The dimension normalised over, when set with [`NormConfig::with_dim`]; `None`: the
    /// last.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// The elements of a row the mean of squares is taken over, when set with
    /// [`NormConfig::with_variance_size`]; `None`: the whole row.
    pub fn variance_size(&self) -> Option<usize> {
        self.variance_size
    }

    /// The backend pinned with [`NormConfig::with_backend`], if any.
    pub fn pinned_backend(&self) -> Option<Backend> {
        self.backend
    }

    /// The backend the ops will use: the pinned one, else `CANDLE_RMSNORM_BACKEND`.
    ///
    /// # Errors
    /// When no backend is pinned and the environment variable is malformed.
    pub fn backend(&self) -> candle_core::Result<Backend> {
        match self.backend {
            Some(b) => Ok(b),
            None => Backend::from_env(),
        }
    }
}

impl Default for NormConfig {
    /// `eps = 1e-6`, the value Wan 2.1 and T5 use.
    fn default() -> Self {
        Self::new(1e-6)
    }
}
