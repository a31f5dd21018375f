//! Bad flags, weights, configs and tokenizers: errors that name the flag or tensor, no output.

use crate::common::{smoke_options, tmp};
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;
use wan_t2v::norms::NormImpl;
use wan_t2v::pipeline::{self, Options, Silent};

fn run_err(o: &Options) -> String {
    match pipeline::run(o, &Device::Cpu, &mut Silent) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_name_the_flag_or_tensor() -> Result<()> {
    let out = tmp("bad.gif");
    let base = smoke_options(out.clone(), NormImpl::Ours);

    let mut o = base.clone();
    o.frames = Some(0);
    assert!(
        run_err(&o).contains("--frames must be positive"),
        "{}",
        run_err(&o)
    );
    let mut o = base.clone();
    o.height = Some(0);
    assert!(run_err(&o).contains("--height must be positive"));
    let mut o = base.clone();
    o.width = Some(0);
    assert!(run_err(&o).contains("--width must be positive"));
    let mut o = base.clone();
    o.steps = Some(0);
    assert!(run_err(&o).contains("--steps must be positive"));

    let mut o = base.clone();
    o.frames = Some(1 << 40);
    let e = run_err(&o);
    assert!(e.contains("--frames/--height/--width"), "{e}");

    let mut o = base.clone();
    o.weights = vec![tmp("does_not_exist.safetensors")];
    let e = run_err(&o);
    assert!(
        e.contains("--weights") && e.contains("does_not_exist"),
        "{e}"
    );

    // A weights file whose tensor has the wrong shape, and one missing a tensor.
    let dev = Device::Cpu;
    let bad = tmp("bad_shape.safetensors");
    let t = Tensor::zeros((7, 3), DType::F32, &dev)?;
    candle_core::safetensors::save(
        &HashMap::from([("text_encoder.token_embedding.weight".to_string(), t)]),
        &bad,
    )?;
    let mut o = base.clone();
    o.weights = vec![bad];
    let e = run_err(&o);
    assert!(
        e.contains("--weights") && e.contains("text_encoder.token_embedding.weight"),
        "{e}"
    );
    assert!(e.contains("shape"), "{e}");
    let partial = tmp("partial.safetensors");
    let t = Tensor::zeros((259, 32), DType::F32, &dev)?;
    candle_core::safetensors::save(
        &HashMap::from([("text_encoder.token_embedding.weight".to_string(), t)]),
        &partial,
    )?;
    let mut o = base.clone();
    o.weights = vec![partial];
    let e = run_err(&o);
    assert!(
        e.contains("--weights") && e.contains("text_encoder.blocks.0.norm1.weight"),
        "{e}"
    );

    // Unreadable, invalid or mistyped configs.
    let mut o = base.clone();
    o.config = Some(tmp("no_such_config.json"));
    let e = run_err(&o);
    assert!(
        e.contains("--config") && e.contains("no_such_config"),
        "{e}"
    );
    let broken = tmp("broken.json");
    std::fs::write(&broken, "{ \"dit\": ").unwrap();
    o.config = Some(broken);
    assert!(run_err(&o).contains("--config"));
    let typo = tmp("typo.json");
    std::fs::write(&typo, r#"{ "dit": { "dimm": 3 } }"#).unwrap();
    o.config = Some(typo);
    let e = run_err(&o);
    assert!(e.contains("--config") && e.contains("dimm"), "{e}");
    let inconsistent = tmp("inconsistent.json");
    std::fs::write(&inconsistent, r#"{ "dit": { "heads": 3 } }"#).unwrap();
    o.config = Some(inconsistent);
    let e = run_err(&o);
    assert!(e.contains("--config") && e.contains("dit.dim"), "{e}");

    // A missing tokenizer file.
    let mut o = base.clone();
    o.tokenizer = Some(tmp("no_tokenizer.json"));
    assert!(run_err(&o).contains("--tokenizer"));
    assert!(!out.exists(), "no output should be written on errors");
    Ok(())
}
