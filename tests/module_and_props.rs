//! The `RmsNorm` layer, the environment switch, and property tests over random shapes.

mod common;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_rmsnorm::{NormConfig, RmsNorm, Rounding, WeightMode};
use common::*;
use proptest::prelude::*;

#[test]
fn layer_new_load_forward_residual() -> Result<()> {
    let dev = Device::Cpu;
    let w = Tensor::new(&[1f32, 2., 3., 4.], &dev)?;
    let norm = RmsNorm::new(w.clone(), 1e-6);
    assert_eq!(norm.eps(), 1e-6);
    assert_eq!(
        norm.weight().unwrap().to_vec1::<f32>()?,
        w.to_vec1::<f32>()?
    );
    let x = Tensor::new(&[[1f32, 1., 1., 1.], [2., 0., 0., 0.]], &dev)?;
    let y = norm.forward(&x)?.to_vec2::<f32>()?;
    let want = [[1.0, 2.0, 3.0, 4.0], [2.0, 0.0, 0.0, 0.0]];
    for (a, b) in y.iter().flatten().zip(want.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{y:?}");
    }
    let (n, s) = norm.forward_residual(&x, &x)?;
    assert_eq!(s.to_vec2::<f32>()?, (&x * 2.0)?.to_vec2::<f32>()?);
    assert_eq!(n.dims(), &[2, 4]);

    // load: a created weight starts at ones (Scale) or zeros (OffsetOne): both the identity.
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
    let a = RmsNorm::load(4, 1e-6, vb.pp("a"))?;
    let b = RmsNorm::load_with(
        4,
        NormConfig::new(1e-6).with_weight_mode(WeightMode::OffsetOne),
        vb.pp("b"),
    )?;
    assert_eq!(a.weight().unwrap().to_vec1::<f32>()?, vec![1.0; 4]);
    assert_eq!(b.weight().unwrap().to_vec1::<f32>()?, vec![0.0; 4]);
    assert_eq!(
        a.forward(&x)?.to_vec2::<f32>()?,
        b.forward(&x)?.to_vec2::<f32>()?
    );
    assert!(map.data().lock().unwrap().contains_key("a.weight"));
    // A stored weight of the wrong size is an error, not a panic.
    let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
    assert!(RmsNorm::load(5, 1e-6, vb.pp("a")).is_err());

    let plain = RmsNorm::with_config(None, NormConfig::new(1e-6));
    assert!(plain.weight().is_none());
    assert_eq!(plain.forward(&x)?.dims(), &[2, 4]);
    assert!(format!("{plain:?}").contains("RmsNorm"));
    Ok(())
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop_oneof![
        Just(DType::F32),
        Just(DType::F16),
        Just(DType::BF16),
        Just(DType::F64)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random shapes, dtypes, weight dtypes, options, variance sizes and magnitudes: both ops
    /// match the reference.
    #[test]
    fn random_shapes_match_reference(
        lead in proptest::collection::vec(0usize..5, 0..3),
        h in 1usize..300,
        dt in dtype_strategy(),
        wdt in dtype_strategy(),
        offset_one in any::<bool>(),
        before in any::<bool>(),
        log_scale in -3i32..4,
        part in proptest::option::of(1usize..300),
        seed in any::<u64>(),
    ) {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut dims = lead.clone();
        dims.push(h);
        let n: usize = dims.iter().product();
        let scale = 10f64.powi(log_scale);
        let x = quantize(&randn(&mut rng, n, scale), dt);
        let r = quantize(&randn(&mut rng, n, scale), dt);
        let w = quantize(&randn(&mut rng, h, 1.0), wdt);
        let mode = if offset_one { WeightMode::OffsetOne } else { WeightMode::Scale };
        let rounding = if before { Rounding::BeforeWeight } else { Rounding::AtEnd };
        let var_size = part.map(|p| p.min(h));
        let mut cfg = NormConfig::new(1e-6).with_weight_mode(mode).with_rounding(rounding);
        if let Some(n) = var_size {
            cfg = cfg.with_variance_size(n);
        }
        let xt = tensor(&x, &dims, dt).unwrap();
        let rt = tensor(&r, &dims, dt).unwrap();
        let wt = tensor(&w, &[h], wdt).unwrap();
        let o = Opts { eps: 1e-6, mode, rounding, var_size, clamp: false };
        let what = format!("{dims:?} {dt:?} {wdt:?} {mode:?} {rounding:?} {var_size:?}");
        let y = candle_rmsnorm::rms_norm_with(&xt, Some(&wt), &cfg).unwrap();
        let want = reference(dt, &x, None, Some(&w), h, &o);
        check(&what, dt, Quantity::Normed, h, &values(&y).unwrap(), &want.normed);
        let (yn, ys) = candle_rmsnorm::fused_add_rms_norm_with(&xt, &rt, Some(&wt), &cfg).unwrap();
        let want = reference(dt, &x, Some(&r), Some(&w), h, &o);
        check(&format!("fused {what}"), dt, Quantity::Normed, h, &values(&yn).unwrap(), &want.normed);
        check(&format!("sum {what}"), dt, Quantity::Sum, h, &values(&ys).unwrap(), &want.sum);
    }
}
