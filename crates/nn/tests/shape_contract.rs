//! The shape contract through the Rust API: summaries, inferred sizes, TOML and Rust forms of
//! the same model, checkpoint mismatches, runtime errors with layer paths, and property tests
//! that the checked shapes are the shapes a real forward produces.

use proptest::prelude::*;
use std::path::Path;
use strata_core::{DType, Generator, Tensor};
use strata_nn::check::{SymShape, check_checkpoint, check_spec};
use strata_nn::model_file::load_model;
use strata_nn::spec::{LayerSpec, ModelSpec};
use strata_nn::{Linear, Module, Sequential, SimpleNN, StateDict, Summary};

fn example(name: &str) -> ModelSpec {
    load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)).unwrap()
}

fn simple_nn_rust() -> ModelSpec {
    ModelSpec::new("SimpleNN")
        .input(&[784])
        .linear("fc1", 784, 128)
        .relu()
        .linear("fc2", 128, 64)
        .relu()
        .linear("fc3", 64, 10)
}

#[test]
fn simple_nn_summary_matches_pytorch_parameter_count() {
    let report = simple_nn_rust().check(None).unwrap();
    let summary = Summary::from_report(&report, 64);
    // sum(p.numel() for p in SimpleNN().parameters()) in PyTorch:
    assert_eq!(summary.total_params, 109_386);
    assert_eq!(SimpleNN::new().unwrap().num_parameters(), 109_386);
    insta::assert_snapshot!("simple_nn_summary", summary.render());
}

#[test]
fn toml_rust_api_and_module_forms_are_interchangeable() {
    let from_file = example("simple_nn.toml");
    let from_rust = simple_nn_rust();
    let from_module = ModelSpec::from_module("SimpleNN", &SimpleNN::new().unwrap()).unwrap().input(&[784]);
    assert_eq!(
        from_file,
        ModelSpec { layers: from_file.layers.clone(), ..from_rust.clone() }.clone().tap_origins(&from_file)
    );
    let summaries: Vec<String> = [&from_file, &from_rust, &from_module]
        .iter()
        .map(|s| Summary::from_report(&s.check(None).unwrap(), 64).render())
        .collect();
    assert_eq!(summaries[0], summaries[1]);
    assert_eq!(summaries[1], summaries[2]);
    let names = |s: &ModelSpec| {
        s.build().unwrap().named_parameters().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect::<Vec<_>>()
    };
    let expected = SimpleNN::new()
        .unwrap()
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect::<Vec<_>>();
    assert_eq!(names(&from_file), expected);
    assert_eq!(names(&from_rust), expected);
    // A model built from the file loads a state_dict saved from the Rust struct, strictly.
    let sd = SimpleNN::new().unwrap().state_dict();
    from_file.build().unwrap().load_state_dict(&sd, true).unwrap();
}

/// Equality up to file origins (the file form records where each layer was declared).
trait TapOrigins {
    fn tap_origins(self, like: &ModelSpec) -> ModelSpec;
}
impl TapOrigins for ModelSpec {
    fn tap_origins(mut self, like: &ModelSpec) -> ModelSpec {
        self.name = like.name.clone();
        for (a, b) in self.layers.iter_mut().zip(&like.layers) {
            a.origin = b.origin.clone();
        }
        self
    }
}

#[test]
fn inferred_sizes_are_filled_in_and_given_ones_verified() {
    let spec = example("mlp_inferred.toml");
    let report = spec.check(None).unwrap();
    insta::assert_snapshot!("mlp_inferred_trace", report.render_trace());
    let model = spec.build().unwrap();
    let dims: Vec<Vec<usize>> = model.parameters().iter().map(|p| p.dims().to_vec()).collect();
    assert_eq!(dims, [vec![256, 784], vec![256], vec![128, 256], vec![128], vec![10, 128], vec![10]]);
    let x = Tensor::zeros(&[3, 1, 28, 28], DType::F32);
    assert_eq!(model.forward(&x).unwrap().dims(), &[3, 10]);
    // Without an input shape nothing can be inferred: a clear error, not a panic.
    let e = ModelSpec::new("m").lazy_linear("fc", 3).build().unwrap_err().to_string();
    insta::assert_snapshot!("no_input_shape", e);
}

#[test]
fn checkpoint_that_does_not_fit() {
    // Saved from a SimpleNN whose fc1 had 100 outputs (and fc2 therefore 100 inputs), with an
    // extra layer fc4.
    let mut rng = Generator::new(1);
    let mut lin = |i, o| Linear::with_options(i, o, true, DType::F32, &mut rng).unwrap();
    let saved = Sequential::new()
        .add_module("fc1", lin(784, 100))
        .add_module("fc2", lin(100, 64))
        .add_module("fc3", lin(64, 10))
        .add_module("fc4", lin(10, 10));
    let sd: StateDict = saved.state_dict();
    let report = simple_nn_rust().check(None).unwrap();
    let errors = check_checkpoint(&report, &sd, "runs/old/model.safetensors");
    let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n\n");
    assert_eq!(errors[0].layer.as_ref().unwrap().path, "fc1");
    insta::assert_snapshot!("checkpoint_mismatch", text);
    // The first fix of each layer error, applied, makes the checkpoint fit.
    let mut fixed = simple_nn_rust();
    for e in errors.iter().filter(|e| e.layer.is_some()) {
        fixed.apply(&e.fixes[0].edits);
    }
    let fixed_report = fixed.check(None).unwrap();
    let left = check_checkpoint(&fixed_report, &sd, "x");
    assert!(left.iter().all(|e| e.layer.is_none()), "{left:?}");
}

#[test]
fn runtime_errors_name_the_layer_path() {
    let spec = example("mlp_inferred.toml");
    let model = spec.build().unwrap();
    let e = model.forward(&Tensor::zeros(&[2, 1, 20, 20], DType::F32)).unwrap_err().to_string();
    insta::assert_snapshot!("runtime_error_path", e);
}

#[test]
fn the_loss_class_count_is_checked() {
    let report = check_spec(&simple_nn_rust(), None, Some(12));
    insta::assert_snapshot!("class_count", report.render_errors());
}

#[test]
fn sample_shapes_parse() {
    assert_eq!(SymShape::parse_sample("1x28x28").unwrap().to_string(), "[N, 1, 28, 28]");
    assert_eq!(SymShape::parse_sample("784").unwrap().to_string(), "[N, 784]");
    assert!(SymShape::parse_sample("28x0").is_err());
    assert!(SymShape::parse_sample("abc").unwrap_err().contains("not a sample shape"));
}

// ------------------------------------------------------------------ property tests

#[derive(Clone, Debug)]
enum Step {
    Linear(usize),
    Relu,
    Flatten,
    Block(Vec<Step>),
}

fn step() -> impl Strategy<Value = Step> {
    let leaf = prop_oneof![(1usize..12).prop_map(Step::Linear), Just(Step::Relu), Just(Step::Flatten)];
    leaf.prop_recursive(2, 12, 4, |inner| prop::collection::vec(inner, 1..4).prop_map(Step::Block))
}

/// Builds a valid spec chain from steps, tracking the real shape: Linear's in_features is set
/// to the incoming last dimension (or left to inference every third Linear).
fn build(steps: &[Step], shape: &mut Vec<usize>, counter: &mut usize, prefix: &str) -> ModelSpec {
    let mut spec = ModelSpec::new("m");
    for s in steps {
        *counter += 1;
        let name = format!("l{counter}");
        spec = match s {
            Step::Linear(out) => {
                let last = *shape.last().unwrap();
                shape.pop();
                shape.push(*out);
                if counter.is_multiple_of(3) { spec.lazy_linear(&name, *out) } else { spec.linear(&name, last, *out) }
            }
            Step::Relu => spec.layer(&name, LayerSpec::ReLU),
            Step::Flatten => {
                let n = shape.iter().skip(1).product();
                shape.truncate(1);
                shape.push(n);
                spec.layer(&name, LayerSpec::Flatten { start_dim: 1, end_dim: -1 })
            }
            Step::Block(inner) => {
                let block = build(inner, shape, counter, &format!("{prefix}{name}."));
                spec.block(&name, block)
            }
        };
    }
    spec
}

fn linear_paths(layers: &[strata_nn::spec::NamedLayer], prefix: &str, out: &mut Vec<String>) {
    for l in layers {
        match &l.spec {
            LayerSpec::Linear { in_features: Some(_), .. } => out.push(format!("{prefix}{}", l.name)),
            LayerSpec::Sequential(inner) => linear_paths(inner, &format!("{prefix}{}.", l.name), out),
            _ => {}
        }
    }
}

fn set_in_features(layers: &mut [strata_nn::spec::NamedLayer], path: &str, delta: usize) {
    let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
    let l = layers.iter_mut().find(|l| l.name == head).unwrap();
    match (&mut l.spec, rest) {
        (LayerSpec::Linear { in_features: Some(i), .. }, None) => *i += delta,
        (LayerSpec::Sequential(inner), Some(r)) => set_in_features(inner, r, delta),
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn checked_shapes_equal_forward_shapes(
        sample in prop::collection::vec(1usize..5, 1..4),
        steps in prop::collection::vec(step(), 1..6),
    ) {
        let mut shape = vec![2];
        shape.extend(&sample);
        let mut counter = 0;
        let spec = build(&steps, &mut shape, &mut counter, "").input(&sample);
        let report = spec.check(None).map_err(|r| TestCaseError::fail(r.render_errors()))?;
        let model = spec.build().unwrap();
        let mut full = vec![2];
        full.extend(&sample);
        let x = Tensor::randn(&full, 0.0, 1.0, DType::F32, &mut Generator::new(3)).unwrap();
        let y = model.forward(&x).unwrap();
        prop_assert_eq!(report.output.unwrap().with_batch(2), y.dims().to_vec());
        prop_assert_eq!(y.dims().to_vec(), shape);
    }

    #[test]
    fn a_corrupted_layer_is_the_one_reported(
        sample in prop::collection::vec(1usize..5, 1..3),
        steps in prop::collection::vec(step(), 1..6),
        pick in any::<prop::sample::Index>(),
        delta in 1usize..5,
    ) {
        let mut shape = vec![2];
        shape.extend(&sample);
        let mut counter = 0;
        let mut spec = build(&steps, &mut shape, &mut counter, "").input(&sample);
        let mut paths = vec![];
        linear_paths(&spec.layers, "", &mut paths);
        prop_assume!(!paths.is_empty());
        let target = pick.get(&paths).clone();
        set_in_features(&mut spec.layers, &target, delta);
        let report = check_spec(&spec, None, None);
        // Everything before the corrupted layer is valid, so it is the first error reported.
        prop_assert!(!report.errors.is_empty());
        prop_assert_eq!(report.errors[0].layer.as_ref().unwrap().path.clone(), target);
    }
}

// ------------------------------------------------------------------ convolutional and recurrent models

/// The spec without file origins, so a parsed spec compares with a built or re-parsed one.
fn strip_origins(mut spec: ModelSpec) -> ModelSpec {
    fn clear(layers: &mut [strata_nn::spec::NamedLayer]) {
        for l in layers {
            l.origin = None;
            match &mut l.spec {
                LayerSpec::Sequential(inner) => clear(inner),
                LayerSpec::Residual { body, shortcut } => {
                    clear(body);
                    if let Some(s) = shortcut {
                        clear(s);
                    }
                }
                _ => {}
            }
        }
    }
    clear(&mut spec.layers);
    spec
}

#[test]
fn example_models_parameter_counts_match_pytorch() {
    // Computed with PyTorch 2.15 (`sum(p.numel() for p in model.parameters())`) for
    //   resnet = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
    //       Residual(block(32, 32, 1)), nn.ReLU(),
    //       Residual(block(32, 64, 2), nn.Sequential(nn.Conv2d(32, 64, 1, stride=2, bias=False), nn.BatchNorm2d(64))),
    //       nn.ReLU(), Residual(block(64, 64, 1)), nn.ReLU(),
    //       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    // with block(i, o, s) = nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False),
    //   nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o))
    // and Residual(body, shortcut=None) an nn.Module holding them; running_mean + running_var:
    // sum(b.numel() for n, b in resnet.named_buffers() if 'running' in n). And for
    //   nn.ModuleDict(dict(lstm=nn.LSTM(28, 128, batch_first=True), fc=nn.Linear(128, 10))).
    const RESNET_PARAMS: usize = 151_274;
    const RESNET_RUNNING_STATS: usize = 832;
    const LSTM_PARAMS: usize = 82_186;
    for (file, params, non_trainable, input, out) in [
        ("resnet_mnist_model.toml", RESNET_PARAMS, RESNET_RUNNING_STATS, vec![2, 1, 28, 28], vec![2, 10]),
        ("lstm_mnist_model.toml", LSTM_PARAMS, 0, vec![2, 28, 28], vec![2, 10]),
    ] {
        let spec = example(file);
        let report = spec.check(None).unwrap_or_else(|r| panic!("{file}: {}", r.render_errors()));
        let summary = Summary::from_report(&report, 64);
        let model = spec.build().unwrap();
        assert_eq!(summary.total_params, params, "{file}");
        assert_eq!(model.num_parameters(), params, "{file}");
        assert_eq!(summary.total_non_trainable, non_trainable, "{file}");
        let x = Tensor::randn(&input, 0.0, 1.0, DType::F32, &mut Generator::new(0)).unwrap();
        let y = model.forward(&x).unwrap();
        assert_eq!(y.dims(), out.as_slice(), "{file}");
        assert_eq!(report.output.clone().unwrap().with_batch(2), out, "{file}");
        // The built model gives its spec back, and the spec survives the TOML round trip.
        let from_module = ModelSpec::from_module(&spec.name, &model).unwrap().input(spec.input.as_deref().unwrap());
        assert_eq!(from_module, strip_origins(spec.clone()), "{file}");
        let again = strata_nn::model_file::parse_model(&strata_nn::model_file::to_toml(&spec), "x.toml", "x").unwrap();
        assert_eq!(strip_origins(again), strip_origins(spec.clone()), "{file}");
        // The checkpoint check knows BatchNorm's buffers.
        assert!(check_checkpoint(&report, &model.state_dict(), "x").is_empty(), "{file}");
    }
    let lstm = Summary::from_report(&example("lstm_mnist_model.toml").check(None).unwrap(), 64);
    // T·4·H·(F + H) for the LSTM: 28·4·128·(28 + 128), and 128·10 for the Linear.
    assert_eq!(lstm.total_macs, 28 * 4 * 128 * (28 + 128) + 1280);
    insta::assert_snapshot!(
        "resnet_mnist_summary",
        Summary::from_report(&example("resnet_mnist_model.toml").check(None).unwrap(), 64).render()
    );
    insta::assert_snapshot!("lstm_mnist_summary", lstm.render());
}

#[test]
fn every_new_layer_round_trips_through_toml_and_modules() {
    use strata_nn::spec::{BatchNormSpec, ConvSpec, RecurrentKind, RecurrentSpec};
    let mut conv = ConvSpec::new(Some(4), 6, (3, 2));
    (conv.stride, conv.padding, conv.dilation, conv.groups, conv.bias) = ((2, 1), (1, 0), (1, 2), 2, false);
    let mut bn = BatchNormSpec::new(Some(6));
    (bn.eps, bn.momentum, bn.affine) = (1e-3, None, false);
    let mut gru = RecurrentSpec::new(RecurrentKind::Gru, None, 5);
    (gru.num_layers, gru.bidirectional, gru.batch_first) = (2, true, true);
    let mut rnn = RecurrentSpec::new(RecurrentKind::RnnRelu, Some(10), 3);
    rnn.bias = false;
    let spec = ModelSpec::new("all")
        .input(&[4, 9, 8])
        .layer("conv", LayerSpec::Conv2d(conv))
        .layer("bn", LayerSpec::BatchNorm2d(bn))
        .layer("mp", LayerSpec::MaxPool2d { kernel_size: (2, 2), stride: (1, 1), padding: (1, 0), dilation: (1, 1) })
        .layer(
            "ap",
            LayerSpec::AvgPool2d { kernel_size: (2, 1), stride: (2, 1), padding: (0, 0), count_include_pad: false },
        )
        .layer("gap", LayerSpec::AdaptiveAvgPool2d { output_size: (3, 2) })
        .layer("", LayerSpec::GELU)
        .layer("", LayerSpec::LeakyReLU { negative_slope: 0.2 })
        .layer("", LayerSpec::ELU { alpha: 0.5 })
        .layer("", LayerSpec::Sigmoid)
        .layer("", LayerSpec::Tanh)
        .layer("flat", LayerSpec::Flatten { start_dim: 2, end_dim: -1 })
        .layer("gru", LayerSpec::Recurrent(gru))
        .layer("rnn", LayerSpec::Recurrent(rnn))
        .layer("bn1", LayerSpec::BatchNorm1d(BatchNormSpec::new(None)))
        .layer("last", LayerSpec::LastStep { batch_first: true })
        .layer("sm", LayerSpec::Softmax { dim: 1 })
        .layer("lsm", LayerSpec::LogSoftmax { dim: -1 });
    let report = spec.check(None).unwrap_or_else(|r| panic!("{}", r.render_errors()));
    insta::assert_snapshot!("all_layers_trace", report.render_trace());
    let text = strata_nn::model_file::to_toml(&spec);
    let again = strata_nn::model_file::parse_model(&text, "all.toml", "x").unwrap();
    assert_eq!(strip_origins(again), spec, "{text}");
    let model = spec.build().unwrap();
    let resolved = report.resolved.clone();
    assert_eq!(ModelSpec::from_module("all", &model).unwrap().input(&[4, 9, 8]), resolved);
    let x = Tensor::randn(&[2, 4, 9, 8], 0.0, 1.0, DType::F32, &mut Generator::new(1)).unwrap();
    let y = model.forward(&x).unwrap();
    assert_eq!(report.output.clone().unwrap().with_batch(2), y.dims().to_vec());
    let summary = Summary::from_report(&report, 2);
    assert_eq!(summary.total_params, model.num_parameters());
}

#[derive(Clone, Debug)]
enum ImageStep {
    Conv { out: usize, k: usize, s: usize, p: usize, d: usize, infer: bool },
    MaxPool { k: usize, s: usize, p: usize },
    AvgPool { k: usize, s: usize, p: usize },
    Adaptive(usize),
    BatchNorm(bool),
    Act(u8),
}

fn image_step() -> impl Strategy<Value = ImageStep> {
    prop_oneof![
        (1usize..6, 1usize..4, 1usize..3, 0usize..2, 1usize..3, any::<bool>())
            .prop_map(|(out, k, s, p, d, infer)| ImageStep::Conv { out, k, s, p, d, infer }),
        (1usize..4, 1usize..3, 0usize..2).prop_map(|(k, s, p)| ImageStep::MaxPool { k, s, p }),
        (1usize..4, 1usize..3, 0usize..2).prop_map(|(k, s, p)| ImageStep::AvgPool { k, s, p }),
        (1usize..4).prop_map(ImageStep::Adaptive),
        any::<bool>().prop_map(ImageStep::BatchNorm),
        (0u8..4).prop_map(ImageStep::Act),
    ]
}

/// A valid image chain from steps: windows that would not fit are left out.
fn build_image(steps: &[ImageStep], sample: &[usize]) -> ModelSpec {
    let (mut c, mut h, mut w) = (sample[0], sample[1], sample[2]);
    let out_size =
        |n: usize, k: usize, s: usize, p: usize, d: usize| (n + 2 * p).checked_sub(d * (k - 1) + 1).map(|r| r / s + 1);
    let mut spec = ModelSpec::new("img").input(sample);
    for (i, st) in steps.iter().enumerate() {
        let name = format!("l{i}");
        spec = match *st {
            ImageStep::Conv { out, k, s, p, d, infer } => match (out_size(h, k, s, p, d), out_size(w, k, s, p, d)) {
                (Some(oh), Some(ow)) => {
                    let mut cs = strata_nn::spec::ConvSpec::new((!infer).then_some(c), out, (k, k));
                    (cs.stride, cs.padding, cs.dilation) = ((s, s), (p, p), (d, d));
                    (c, h, w) = (out, oh, ow);
                    spec.layer(&name, LayerSpec::Conv2d(cs))
                }
                _ => spec,
            },
            ImageStep::MaxPool { k, s, p } | ImageStep::AvgPool { k, s, p } if p <= k / 2 => {
                match (out_size(h, k, s, p, 1), out_size(w, k, s, p, 1)) {
                    (Some(oh), Some(ow)) => {
                        (h, w) = (oh, ow);
                        let (kernel_size, stride, padding) = ((k, k), (s, s), (p, p));
                        spec.layer(
                            &name,
                            if matches!(st, ImageStep::MaxPool { .. }) {
                                LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation: (1, 1) }
                            } else {
                                LayerSpec::AvgPool2d { kernel_size, stride, padding, count_include_pad: true }
                            },
                        )
                    }
                    _ => spec,
                }
            }
            ImageStep::MaxPool { .. } | ImageStep::AvgPool { .. } => spec,
            ImageStep::Adaptive(o) => {
                (h, w) = (o, o);
                spec.layer(&name, LayerSpec::AdaptiveAvgPool2d { output_size: (o, o) })
            }
            ImageStep::BatchNorm(infer) => {
                spec.layer(&name, LayerSpec::BatchNorm2d(strata_nn::spec::BatchNormSpec::new((!infer).then_some(c))))
            }
            ImageStep::Act(a) => spec.layer(
                &name,
                match a {
                    0 => LayerSpec::ReLU,
                    1 => LayerSpec::GELU,
                    2 => LayerSpec::LeakyReLU { negative_slope: 0.1 },
                    _ => LayerSpec::Tanh,
                },
            ),
        };
    }
    spec
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn checked_image_shapes_equal_forward_shapes(
        sample in (1usize..4, 1usize..12, 1usize..12).prop_map(|(c, h, w)| vec![c, h, w]),
        steps in prop::collection::vec(image_step(), 1..7),
        head in any::<bool>(),
    ) {
        let mut spec = build_image(&steps, &sample);
        if head {
            spec = spec.flatten().lazy_linear("fc", 3);
        }
        let report = spec.check(None).map_err(|r| TestCaseError::fail(r.render_errors()))?;
        let model = spec.build().unwrap();
        let mut full = vec![2];
        full.extend(&sample);
        let x = Tensor::randn(&full, 0.0, 1.0, DType::F32, &mut Generator::new(3)).unwrap();
        let y = model.forward(&x).unwrap();
        prop_assert_eq!(report.output.clone().unwrap().with_batch(2), y.dims().to_vec());
        let summary = Summary::from_report(&report, 2);
        prop_assert_eq!(summary.total_params, model.num_parameters());
    }
}

#[test]
fn new_layer_errors_name_the_producer_and_their_fixes_work() {
    use strata_nn::spec::{ConvSpec, RecurrentKind, RecurrentSpec};
    let mut lstm = RecurrentSpec::new(RecurrentKind::Lstm, Some(28), 64);
    (lstm.batch_first, lstm.bidirectional) = (true, true);
    let cases = [
        // A Linear after a bidirectional LSTM: the LSTM (D·H = 128 features) is named.
        ModelSpec::new("after_lstm")
            .input(&[28, 28])
            .layer("lstm", LayerSpec::Recurrent(lstm.clone()))
            .layer("last", LayerSpec::LastStep { batch_first: true })
            .linear("fc", 64, 10),
        // Flat samples into an LSTM: a rank-2 input, fixed by feeding rows as time steps.
        ModelSpec::new("flat_into_lstm")
            .input(&[784])
            .layer("lstm", LayerSpec::Recurrent(lstm))
            .layer("last", LayerSpec::LastStep { batch_first: true })
            .lazy_linear("fc", 10),
        // Images without a channel dimension into a Conv2d.
        ModelSpec::new("no_channels")
            .input(&[28, 28])
            .layer("conv", LayerSpec::Conv2d(ConvSpec::new(None, 4, (3, 3))))
            .flatten()
            .lazy_linear("fc", 10),
        // Pool padding over half the window, and a Softmax dimension that does not exist.
        ModelSpec::new("bad_pool_and_softmax")
            .input(&[2, 8, 8])
            .layer(
                "pool",
                LayerSpec::MaxPool2d { kernel_size: (2, 2), stride: (2, 2), padding: (2, 2), dilation: (1, 1) },
            )
            .flatten()
            .lazy_linear("fc", 10)
            .layer("sm", LayerSpec::LogSoftmax { dim: 2 }),
        // A convolution kernel larger than the image.
        ModelSpec::new("big_kernel").input(&[1, 4, 4]).conv2d("conv", None, 2, 5, 1, 0).flatten().lazy_linear("fc", 10),
    ];
    let mut text = String::new();
    for spec in cases {
        let report = check_spec(&spec, None, Some(10));
        assert!(!report.errors.is_empty(), "{}", spec.name);
        text.push_str(&format!("{}\n{}\n\n", spec.name, report.render_errors()));
        let mut fixed = spec.clone();
        for e in &report.errors {
            let fix = e.fixes.first().unwrap_or_else(|| panic!("{}: no fix for\n{e}", spec.name));
            assert!(fixed.apply(&fix.edits), "{}: `{}` does not apply", spec.name, fix.text);
        }
        let after = check_spec(&fixed, None, Some(10));
        assert!(after.errors.is_empty(), "{}: {}", spec.name, after.render_errors());
        fixed.build().unwrap();
    }
    insta::assert_snapshot!("new_layer_errors", text);
}

#[test]
fn dropout_in_model_files() {
    let text = "input = [8]\nlayers = [\n  { name = \"fc\", type = \"Linear\", in_features = 8, out_features = 4 },\n  { name = \"drop\", type = \"Dropout\", p = 0.25 },\n]\n";
    let spec = strata_nn::model_file::parse_model(text, "d.toml", "d").unwrap();
    let report = spec.check(None).unwrap();
    assert_eq!(report.output.as_ref().unwrap().to_string(), "[N, 4]");
    assert_eq!(report.trace[1].spec.to_string(), "Dropout p=0.25");
    let again = strata_nn::model_file::parse_model(&strata_nn::model_file::to_toml(&spec), "e.toml", "d").unwrap();
    assert_eq!(again.layers[1].spec, spec.layers[1].spec);
    let model = spec.build().unwrap();
    let x = Tensor::ones(&[64, 8], DType::F32);
    model.eval();
    let a = model.forward(&x).unwrap().to_vec_f64();
    assert_eq!(a, model.forward(&x).unwrap().to_vec_f64(), "evaluation is deterministic: dropout is the identity");
    model.train(true);
    let t = model.forward(&x).unwrap().to_vec_f64();
    assert!(t.iter().filter(|v| **v == 0.0).count() > 0, "training drops values");
    assert_eq!(ModelSpec::from_module("d", &model).unwrap().layers[1].spec, spec.layers[1].spec);
    let bad = "input = [8]\nlayers = [{ type = \"Dropout\", p = 1.5 }]\n";
    let e = strata_nn::model_file::parse_model(bad, "b.toml", "b").unwrap_err().to_string();
    assert!(e.contains("`p` must be in [0, 1), got 1.5") && e.contains("b.toml:2:"), "{e}");
}
