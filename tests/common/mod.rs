//! Shared test support, one file per concern:
//! - `reference`: the one f64 reference of the numerics contract, rounding helpers, ulps;
//! - `compare`: tolerances, metrics, the one `check`, the per-test seed (`TEST_SEED`);
//! - `cases`: the one case matrix (`views`: its strided layouts; `random`: its inputs);
//! - `runner`: runs cases on a backend (`Target`) and checks them;
//! - `rope_reference`: the f64 reference of `rms_norm_rope` and its bound; `rope_cases`: its
//!   runner, `rope_matrix` its case matrix;
//! - `rocm_gpu` (feature `rocm`): the AMD GPU the ROCm tests run on, if any;
//! - `quant_reference`: the reference of the quantised ops' scales and 8-bit encodings;
//!   `quant_checks`: their results against it and against `reference`; `quant_cases`: their
//!   cases and runner; `quant_inputs`: special inputs (exact norms, views, given rows).
//!
//! Only `runner`, `rope_cases`, `quant_checks`, `quant_cases` and `quant_inputs` call the code
//! under test.
#![allow(dead_code, unused_imports)]

pub mod cases;
pub mod compare;
pub mod quant_cases;
pub mod quant_checks;
pub mod quant_inputs;
pub mod quant_reference;
pub mod random;
pub mod reference;
#[cfg(feature = "rocm")]
pub mod rocm_gpu;
pub mod rope_cases;
pub mod rope_matrix;
pub mod rope_reference;
pub mod runner;
pub mod views;

pub use cases::{matrix, Case, Group, DTYPES};
pub use compare::{check, test_seed, tolerance, Quantity};
pub use random::randn;
pub use reference::{quantize, reference, round_to, ulp, unit, Opts};
pub use runner::{run_bitwise, run_cases, run_matrix, tensor, values, Api, InPlace, Target};

use rand::rngs::StdRng;
use rand::SeedableRng;

/// An rng from this test's seed (see [`test_seed`]).
pub fn rng() -> (StdRng, u64) {
    let seed = test_seed();
    (StdRng::seed_from_u64(seed), seed)
}
