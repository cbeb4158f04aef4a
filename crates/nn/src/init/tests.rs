//! The distributions of the schemes, on large tensors with fixed seeds: uniform bounds exactly,
//! means and standard deviations within six standard errors (2¹⁸ values: 1.2% of σ for the
//! mean, about 1% for the standard deviation, so a wrong gain, fan or mode is caught), the
//! truncated normal's moments in both of its samplers and its far tails, orthogonality in f64
//! for tall, wide, square and convolution shapes, and the in-place and whole-module entry points.

use super::*;
use strata_core::{DType, Generator, Tensor};

const N: usize = 1 << 18;

/// `(mean, std)` of `v` (the population standard deviation).
fn stats(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn sample(init: Init, shape: &[usize], seed: u64) -> Vec<f64> {
    init.tensor(shape, DType::F64, &mut Generator::new(seed)).unwrap().to_vec_f64()
}

#[track_caller]
fn assert_normalish(v: &[f64], mean: f64, std: f64, what: &str) {
    let (m, s) = stats(v);
    let se = std / (v.len() as f64).sqrt();
    assert!((m - mean).abs() < 6.0 * se, "{what}: mean {m}, expected {mean} (±{})", 6.0 * se);
    assert!((s / std - 1.0).abs() < 0.01, "{what}: std {s}, expected {std}");
}

#[track_caller]
fn assert_uniform(v: &[f64], low: f64, high: f64, what: &str) {
    assert!(v.iter().all(|x| (low..high).contains(x)), "{what}: a value outside [{low}, {high})");
    let (min, max) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    let width = high - low;
    // 2¹⁸ draws come within 1e-4 of both ends (the chance of missing is e^-26).
    assert!(min - low < 1e-4 * width && high - max < 1e-4 * width, "{what}: [{min}, {max}] in [{low}, {high})");
    assert_normalish(v, (low + high) / 2.0, width / 12f64.sqrt(), what);
}

#[test]
fn uniform_normal_and_constants() {
    assert_uniform(&sample(Init::Uniform { a: 0.0, b: 1.0 }, &[N], 1), 0.0, 1.0, "uniform");
    assert_uniform(&sample(Init::Uniform { a: -0.3, b: 0.7 }, &[512, 512], 2), -0.3, 0.7, "uniform(-0.3, 0.7)");
    assert_normalish(&sample(Init::Normal { mean: 0.0, std: 1.0 }, &[N], 3), 0.0, 1.0, "normal");
    assert_normalish(&sample(Init::Normal { mean: 0.5, std: 0.02 }, &[N], 4), 0.5, 0.02, "normal(0.5, 0.02)");
    assert!(sample(Init::Constant { val: 0.25 }, &[7, 3], 5).iter().all(|x| *x == 0.25));
    assert!(sample(Init::Zeros, &[7], 5).iter().all(|x| *x == 0.0));
    assert!(sample(Init::Ones, &[2, 2, 2], 5).iter().all(|x| *x == 1.0));
    // A zero-width uniform and a zero std are allowed, as in PyTorch.
    assert!(sample(Init::Uniform { a: 2.0, b: 2.0 }, &[5], 6).iter().all(|x| *x == 2.0));
    assert!(sample(Init::Normal { mean: 3.0, std: 0.0 }, &[5], 6).iter().all(|x| *x == 3.0));
}

#[test]
fn xavier_and_kaiming_scale_by_fans_and_gain() {
    // [out, in, kH, kW] = [256, 64, 4, 4] (2¹⁸ values): fan_in 1024, fan_out 4096, so a wrong
    // fan is visible.
    let shape = [256, 64, 4, 4];
    let (fan_in, fan_out) = (1024.0f64, 4096.0f64);
    let b = (6.0 / (fan_in + fan_out)).sqrt();
    assert_uniform(&sample(Init::XavierUniform { gain: 1.0 }, &shape, 7), -b, b, "xavier_uniform");
    let b = 5.0 / 3.0 * b;
    assert_uniform(&sample(Init::XavierUniform { gain: 5.0 / 3.0 }, &shape, 8), -b, b, "xavier_uniform tanh");
    let std = 2.0f64.sqrt() * (2.0 / (fan_in + fan_out)).sqrt();
    assert_normalish(&sample(Init::XavierNormal { gain: 2.0f64.sqrt() }, &shape, 9), 0.0, std, "xavier_normal");

    let relu = Nonlinearity::Relu;
    let b = (6.0 / fan_in).sqrt();
    let v = sample(Init::KaimingUniform { a: 0.0, mode: FanMode::FanIn, nonlinearity: relu }, &shape, 10);
    assert_uniform(&v, -b, b, "kaiming_uniform fan_in relu");
    // leaky_relu with a = √5: PyTorch's default for Linear and Conv2d, ±1/√fan_in.
    let b = 1.0 / fan_in.sqrt();
    let a5 = Init::KaimingUniform { a: 5f64.sqrt(), mode: FanMode::FanIn, nonlinearity: Nonlinearity::LeakyRelu };
    assert_uniform(&sample(a5, &shape, 11), -b, b, "kaiming_uniform a=√5");
    let v = sample(Init::KaimingNormal { a: 0.0, mode: FanMode::FanOut, nonlinearity: relu }, &shape, 12);
    assert_normalish(&v, 0.0, (2.0 / fan_out).sqrt(), "kaiming_normal fan_out relu");
    let v =
        sample(Init::KaimingNormal { a: 0.2, mode: FanMode::FanIn, nonlinearity: Nonlinearity::LeakyRelu }, &shape, 13);
    assert_normalish(&v, 0.0, (2.0 / 1.04 / fan_in).sqrt(), "kaiming_normal leaky 0.2");
    let v =
        sample(Init::KaimingNormal { a: 0.0, mode: FanMode::FanIn, nonlinearity: Nonlinearity::Selu }, &[512, 512], 14);
    assert_normalish(&v, 0.0, 0.75 / 512f64.sqrt(), "kaiming_normal selu");
}

/// The mean and standard deviation of N(mean, std²) restricted to `[a, b]`.
fn truncated_moments(mean: f64, std: f64, a: f64, b: f64) -> (f64, f64) {
    let pdf = |z: f64| (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let (al, be) = ((a - mean) / std, (b - mean) / std);
    let z = maths::norm_cdf(be) - maths::norm_cdf(al);
    let d = (pdf(al) - pdf(be)) / z;
    let tail = |x: f64| if x.is_finite() { x * pdf(x) } else { 0.0 };
    let var = 1.0 + (tail(al) - tail(be)) / z - d * d;
    (mean + std * d, std * var.sqrt())
}

#[test]
fn trunc_normal_keeps_its_bounds_and_moments_in_both_samplers() {
    // (mean, std, a, b): mass 0.95 and 0.38 (normal draws redrawn), 0.021, 0.197 and 0.0013
    // (uniform proposals), the last far in the tail with a huge interval.
    let cases = [
        (0.0, 1.0, -2.0, 2.0),
        (1.0, 2.0, -1.0, 2.0),
        (0.0, 1.0, 2.0, 3.0),
        (0.0, 1.0, -0.2, 0.3),
        (0.0, 1.0, -1e6, -3.0),
    ];
    for (i, (mean, std, a, b)) in cases.into_iter().enumerate() {
        let v = sample(Init::TruncNormal { mean, std, a, b }, &[N], 20 + i as u64);
        let what = format!("trunc_normal({mean}, {std}, {a}, {b})");
        assert!(v.iter().all(|x| (a..=b).contains(x)), "{what}: a value outside [a, b]");
        let (m, s) = truncated_moments(mean, std, a, b);
        assert_normalish(&v, m, s, &what);
    }
    // Far in a tail, over an interval 2³¹ wide: it ends (quickly) and keeps within the bounds.
    let start = std::time::Instant::now();
    let v = sample(Init::TruncNormal { mean: 0.0, std: 1.0, a: 1000.0, b: 2147483648.0 }, &[4096], 30);
    assert!(v.iter().all(|x| (1000.0..1000.1).contains(x)), "{:?}", &v[..4]);
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    // f32 values stay within the bounds too.
    let t =
        Init::TruncNormal { mean: 0.0, std: 0.02, a: -0.04, b: 0.04 }.tensor(&[N], DType::F32, &mut Generator::new(31));
    assert!(t.unwrap().to_vec_f64().iter().all(|x| (-0.04f32 as f64..=0.04f32 as f64).contains(x)));
}

/// `WᵀW` (tall) or `WWᵀ` (wide) of `w` (`[rows, cols]`), which must be `gain²·I`.
#[track_caller]
fn assert_orthogonal(w: &[f64], rows: usize, cols: usize, gain: f64) {
    let (k, tall) = if rows >= cols { (cols, true) } else { (rows, false) };
    let at = |i: usize, j: usize| w[i * cols + j];
    for p in 0..k {
        for q in 0..k {
            let dot: f64 = if tall {
                (0..rows).map(|r| at(r, p) * at(r, q)).sum()
            } else {
                (0..cols).map(|c| at(p, c) * at(q, c)).sum()
            };
            let want = if p == q { gain * gain } else { 0.0 };
            assert!((dot - want).abs() < 1e-10, "[{rows}, {cols}] ({p}, {q}): {dot}");
        }
    }
}

#[test]
fn orthogonal_is_orthogonal_for_tall_wide_square_and_kernels() {
    for (shape, gain) in [
        (vec![300, 40], 1.0),
        (vec![40, 300], 1.0),
        (vec![64, 64], 2.0f64.sqrt()),
        (vec![16, 8, 3, 3], 1.0),
        (vec![128, 32], 0.5),
        (vec![1, 7], 1.0),
        (vec![7, 1], 1.0),
    ] {
        let w = sample(Init::Orthogonal { gain }, &shape, 40);
        let rows = shape[0];
        assert_orthogonal(&w, rows, w.len() / rows, gain);
    }
    // In f32 the same to f32's precision; a 1-D tensor is refused.
    let t = Init::Orthogonal { gain: 1.0 }.tensor(&[32, 16], DType::F32, &mut Generator::new(41)).unwrap();
    let w = t.to_vec_f64();
    let col0: f64 = (0..32).map(|r| w[r * 16] * w[r * 16]).sum();
    assert!((col0 - 1.0).abs() < 1e-5, "{col0}");
    let e = Init::Orthogonal { gain: 1.0 }.tensor(&[8], DType::F64, &mut Generator::new(42)).unwrap_err();
    assert!(e.to_string().contains("orthogonal_: tensor must be a tensor of 2 or more dimensions"), "{e}");
}

#[test]
fn in_place_functions_refuse_what_pytorch_refuses() {
    let bias = Tensor::zeros(&[10], DType::F32);
    for e in [
        kaiming_normal_(&bias, 0.0, FanMode::FanIn, Nonlinearity::Relu).unwrap_err(),
        xavier_uniform_(&bias, 1.0).unwrap_err(),
    ] {
        assert!(e.to_string().contains("2 or more dimensions") && e.to_string().contains("[10]"), "{e}");
    }
    let e = normal_(&bias, 0.0, -1.0).unwrap_err().to_string();
    assert!(e.contains("normal_: std must be at least 0, got -1"), "{e}");
    let e = uniform_(&bias, 1.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("uniform_: b must be at least a (1), got 0"), "{e}");
    let e = trunc_normal_(&bias, 0.0, 1.0, 2.0, 2.0).unwrap_err().to_string();
    assert!(e.contains("trunc_normal_: b must be greater than a (2), got 2"), "{e}");
    let ids = Tensor::zeros(&[4, 4], DType::I64);
    assert!(ones_(&ids).unwrap_err().to_string().contains("a float tensor"));
    // An empty tensor is left as it is; a view that does not own its buffer is refused.
    zeros_(&Tensor::zeros(&[0, 5], DType::F32)).unwrap();
    let big = Tensor::zeros(&[4, 4], DType::F32);
    assert!(ones_(&big.narrow(0, 1, 2).unwrap()).is_err());
    // In place: a parameter stays a leaf that requires grad.
    let w = Tensor::zeros(&[6, 4], DType::F32).requires_grad_().unwrap();
    constant_(&w, 0.5).unwrap();
    assert!(w.requires_grad() && w.to_vec_f64().iter().all(|x| *x == 0.5));
}

#[test]
fn same_seed_same_values() {
    let s = Init::KaimingNormal { a: 0.0, mode: FanMode::FanIn, nonlinearity: Nonlinearity::Relu };
    assert_eq!(sample(s, &[33, 7], 9), sample(s, &[33, 7], 9));
    assert_ne!(sample(s, &[33, 7], 9), sample(s, &[33, 7], 10));
    let o = Init::Orthogonal { gain: 1.0 };
    assert_eq!(sample(o, &[20, 5], 9), sample(o, &[20, 5], 9));
}

#[test]
fn apply_reinitialises_weight_matrices_and_biases_only() {
    use crate::module::Module;
    let spec = crate::spec::ModelSpec::new("m")
        .input(&[3, 8, 8])
        .conv2d("conv", Some(3), 16, 3, 1, 1)
        .batch_norm2d("bn", None)
        .flatten()
        .lazy_linear("fc", 10);
    let model = spec.build().unwrap();
    let before = model.state_dict();
    apply(&model, &LayerInit::weight(Init::Constant { val: 0.5 }).with_bias(Init::Zeros)).unwrap();
    let after = model.state_dict();
    for (key, t) in after.iter() {
        let v = t.to_vec_f64();
        match key {
            "conv.weight" | "fc.weight" => assert!(v.iter().all(|x| *x == 0.5), "{key}"),
            "conv.bias" | "fc.bias" | "bn.bias" => assert!(v.iter().all(|x| *x == 0.0), "{key}"),
            // The BatchNorm scale (1-D) and the buffers are left as they were.
            _ => assert_eq!(v, before.get(key).unwrap().to_vec_f64(), "{key}"),
        }
    }
}

#[test]
fn schemes_round_trip_through_their_model_file_text() {
    let relu = Init::KaimingNormal { a: 0.0, mode: FanMode::FanOut, nonlinearity: Nonlinearity::Relu };
    assert_eq!(relu.to_toml(), r#"{ scheme = "kaiming_normal", mode = "fan_out", nonlinearity = "relu" }"#);
    assert_eq!(Init::from_name("kaiming_normal").unwrap().to_toml(), "\"kaiming_normal\"");
    assert_eq!(Init::Constant { val: 0.0 }.to_toml(), r#"{ scheme = "constant", val = 0.0 }"#);
    assert_eq!(
        Init::TruncNormal { mean: 0.0, std: 0.02, a: -2.0, b: 2.0 }.to_string(),
        r#"{ scheme = "trunc_normal", std = 0.02 }"#
    );
    for name in Init::SCHEMES {
        let s = Init::from_name(name).unwrap_or(Init::Constant { val: 1.5 });
        assert_eq!(s.name(), name);
        assert!(Init::params_of(name).len() <= 4);
    }
}
