//! The Wan 2.1 text-to-video pipeline of the `wan_t2v` example, as a library so that the
//! binary (`src/main.rs`) and the integration tests (`tests/`) share one copy of the code.

pub mod checkpoint;
pub mod config;
pub mod dit;
pub mod norms;
pub mod pipeline;
pub mod rng;
pub mod sampler;
pub mod t5;
pub mod timing;
pub mod tokenizer;
pub mod vae;
pub mod video;
pub mod weights;
