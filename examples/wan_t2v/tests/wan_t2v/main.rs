//! Tests of the wan_t2v example: unit tests of its parts against independent references, a CI
//! smoke run of the whole pipeline (tiny model, 2 steps), and bad-input errors. One test binary
//! (the tests run in parallel in it), one module per concern.

mod bad_input;
mod common;
mod config_settings;
mod dit_attention;
mod dit_embeddings;
mod sampler_sigmas;
mod sampler_unipc;
mod smoke;
mod text_encoder;
mod vae_conv_norm;
mod weights_roundtrip;
