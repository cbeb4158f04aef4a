//! The shape contract through the Rust API: summaries, inferred sizes, TOML and Rust forms of
//! the same model, checkpoint mismatches, runtime errors with layer paths, and property tests
//! that the checked shapes are the shapes a real forward produces.
//!
//! Over 700 lines on purpose: it is one test binary (each file under `tests/` links its own,
//! and CI links them all on two cores), and its parts share the random-chain generators that
//! the property tests draw from.

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
        .unwrap()
        .add_module("fc2", lin(100, 64))
        .unwrap()
        .add_module("fc3", lin(64, 10))
        .unwrap()
        .add_module("fc4", lin(10, 10))
        .unwrap();
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
    /// Branches (possibly empty: the identity) merged by Add (`true`) or Concat along -1.
    Merge(bool, Vec<Vec<Step>>),
}

fn step() -> impl Strategy<Value = Step> {
    let leaf = prop_oneof![(1usize..12).prop_map(Step::Linear), Just(Step::Relu), Just(Step::Flatten)];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Step::Block),
            (any::<bool>(), prop::collection::vec(prop::collection::vec(inner, 0..3), 2..4))
                .prop_map(|(add, branches)| Step::Merge(add, branches)),
        ]
    })
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
            Step::Merge(add, branches) => {
                let mut chains = vec![];
                let mut outs = vec![];
                for (i, b) in branches.iter().enumerate() {
                    let mut s = shape.clone();
                    chains.push(build(b, &mut s, counter, &format!("{prefix}{name}.branches.{i}.")));
                    outs.push(s);
                }
                // Make the branches mergeable: one rank (flattening when they differ), and for
                // an Add one width (a lazy Linear where it differs).
                if outs.iter().any(|o| o.len() != outs[0].len()) {
                    for (c, o) in chains.iter_mut().zip(&mut outs) {
                        if o.len() > 2 {
                            *c = c.clone().flatten();
                            *o = vec![o[0], o[1..].iter().product()];
                        }
                    }
                }
                let width = *outs[0].last().unwrap();
                if *add {
                    for (i, (c, o)) in chains.iter_mut().zip(&mut outs).enumerate() {
                        if *o.last().unwrap() != width {
                            *c = c.clone().lazy_linear(&format!("align{i}"), width);
                            *o.last_mut().unwrap() = width;
                        }
                    }
                }
                *shape = outs[0].clone();
                if *add {
                    spec.add_branches(&name, chains)
                } else {
                    *shape.last_mut().unwrap() = outs.iter().map(|o| *o.last().unwrap()).sum();
                    spec.concat_branches(&name, chains, -1)
                }
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
            LayerSpec::Branches { branches, .. } => {
                for (i, b) in branches.iter().enumerate() {
                    linear_paths(b, &format!("{prefix}{}.branches.{i}.", l.name), out);
                }
            }
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
        (LayerSpec::Branches { branches, .. }, Some(r)) => {
            let (i, r) = r.strip_prefix("branches.").unwrap().split_once('.').unwrap();
            set_in_features(&mut branches[i.parse::<usize>().unwrap()], r, delta)
        }
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
                LayerSpec::Branches { branches, .. } => branches.iter_mut().for_each(|b| clear(b)),
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
        .layer(
            "mp",
            LayerSpec::MaxPool2d(strata_core::MaxPool2dOptions {
                kernel_size: (2, 2),
                stride: (1, 1),
                padding: (1, 0),
                dilation: (1, 1),
                ceil_mode: false,
            }),
        )
        .layer(
            "ap",
            LayerSpec::AvgPool2d(strata_core::AvgPool2dOptions {
                kernel_size: (2, 1),
                stride: (2, 1),
                padding: (0, 0),
                ceil_mode: false,
                count_include_pad: false,
                divisor_override: None,
            }),
        )
        .layer("gap", LayerSpec::AdaptiveAvgPool2d { output_size: (3, 2) })
        .layer("", LayerSpec::GELU { approximate: Default::default() })
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
                                LayerSpec::MaxPool2d(strata_core::MaxPool2dOptions {
                                    kernel_size,
                                    stride,
                                    padding,
                                    dilation: (1, 1),
                                    ceil_mode: false,
                                })
                            } else {
                                LayerSpec::AvgPool2d(strata_core::AvgPool2dOptions {
                                    kernel_size,
                                    stride,
                                    padding,
                                    ceil_mode: false,
                                    count_include_pad: true,
                                    divisor_override: None,
                                })
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
                    1 => LayerSpec::GELU { approximate: Default::default() },
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
                LayerSpec::MaxPool2d(strata_core::MaxPool2dOptions {
                    kernel_size: (2, 2),
                    stride: (2, 2),
                    padding: (2, 2),
                    dilation: (1, 1),
                    ceil_mode: false,
                }),
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

// ------------------------------------------------------------------ branches, LayerNorm, Embedding

#[test]
fn branches_layer_norm_and_embedding_round_trip_through_toml_and_modules() {
    use strata_nn::Merge;
    // [N, 4, 6] → Concat(-1) of a Linear branch, the identity and a LayerNorm branch: [N, 4, 5 + 6 + 3].
    let spec = ModelSpec::new("branchy")
        .input(&[4, 6])
        .concat_branches(
            "mix",
            vec![
                ModelSpec::new("a").lazy_linear("fc", 5).relu(),
                ModelSpec::new("identity"),
                ModelSpec::new("c")
                    .layer(
                        "ln",
                        LayerSpec::LayerNorm { normalized_shape: vec![4, 6], eps: 1e-3, elementwise_affine: false },
                    )
                    .lazy_linear("fc", 3),
            ],
            -1,
        )
        .layer_norm("norm", &[14])
        .add_branches(
            "res",
            vec![
                ModelSpec::new("body")
                    .lazy_linear("fc1", 14)
                    .layer("", LayerSpec::GELU { approximate: Default::default() }),
                ModelSpec::new("id"),
            ],
        )
        .layer("last", LayerSpec::LastStep { batch_first: true })
        .lazy_linear("head", 10);
    let report = spec.check(None).unwrap_or_else(|r| panic!("{}", r.render_errors()));
    insta::assert_snapshot!("branches_trace", report.render_trace());
    assert_eq!(report.output.as_ref().unwrap().to_string(), "[N, 10]");
    let text = strata_nn::model_file::to_toml(&spec);
    let again = strata_nn::model_file::parse_model(&text, "b.toml", "x").unwrap();
    assert_eq!(strip_origins(again), spec, "{text}");
    let model = spec.build().unwrap();
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "mix.branches.0.fc.weight",
            "mix.branches.0.fc.bias",
            "mix.branches.2.fc.weight",
            "mix.branches.2.fc.bias",
            "norm.weight",
            "norm.bias",
            "res.branches.0.fc1.weight",
            "res.branches.0.fc1.bias",
            "head.weight",
            "head.bias"
        ]
    );
    assert_eq!(ModelSpec::from_module("branchy", &model).unwrap().input(&[4, 6]), report.resolved);
    let x = Tensor::randn(&[2, 4, 6], 0.0, 1.0, DType::F32, &mut Generator::new(1)).unwrap();
    assert_eq!(model.forward(&x).unwrap().dims(), &[2, 10]);
    assert_eq!(Summary::from_report(&report, 2).total_params, model.num_parameters());
    assert!(matches!(&report.resolved.layers[0].spec, LayerSpec::Branches { merge: Merge::Concat { dim: -1 }, .. }));

    // Token ids: an Embedding with a padding row, then a GRU over its vectors.
    let mut gru = strata_nn::spec::RecurrentSpec::new(strata_nn::spec::RecurrentKind::Gru, None, 5);
    gru.batch_first = true;
    let ids = ModelSpec::new("ids")
        .input(&[7])
        .input_dtype(DType::I64)
        .layer("emb", LayerSpec::Embedding { num_embeddings: 10, embedding_dim: 4, padding_idx: Some(0) })
        .layer("gru", LayerSpec::Recurrent(gru))
        .layer("last", LayerSpec::LastStep { batch_first: true })
        .lazy_linear("fc", 3);
    let report = ids.check(None).unwrap_or_else(|r| panic!("{}", r.render_errors()));
    assert_eq!(report.render_trace().lines().next().unwrap(), "ids: input [N, 7] of i64 token ids");
    let text = strata_nn::model_file::to_toml(&ids);
    assert!(text.contains("input_dtype = \"i64\""), "{text}");
    assert_eq!(strip_origins(strata_nn::model_file::parse_model(&text, "i.toml", "x").unwrap()), ids, "{text}");
    let model = ids.build().unwrap();
    assert_eq!(ModelSpec::from_module("ids", &model).unwrap().input(&[7]).input_dtype(DType::I64), report.resolved);
    let tokens = Tensor::from_vec((0..14i64).map(|i| i % 10).collect::<Vec<_>>(), &[2, 7]).unwrap();
    assert_eq!(model.forward(&tokens).unwrap().dims(), &[2, 3]);
    assert_eq!(Summary::from_report(&report, 2).total_params, model.num_parameters());
}

#[test]
fn example_models_with_branches_and_embeddings_match_pytorch() {
    // PyTorch 2.15, sum(p.numel() for p in model.parameters()) for
    //   inception: nn.ModuleDict(dict(
    //       mix=nn.ModuleList([nn.Linear(784, 128), nn.Linear(784, 32)]), norm=nn.LayerNorm(160),
    //       block=nn.ModuleList([nn.Linear(160, 160), nn.Linear(160, 160)]), head=nn.Linear(160, 10)))
    //   embedding_lstm: nn.ModuleDict(dict(emb=nn.Embedding(1000, 64, padding_idx=0),
    //       lstm=nn.LSTM(64, 128, batch_first=True), fc=nn.Linear(128, 10)))
    // i.e. 100,480 + 25,120 + 320 + 2·25,760 + 1,610 and 64,000 + 99,328 + 1,290.
    const INCEPTION_PARAMS: usize = 179_050;
    const EMBEDDING_LSTM_PARAMS: usize = 164_618;
    for (file, params, input, out) in [
        ("inception_mlp.toml", INCEPTION_PARAMS, vec![2, 1, 28, 28], vec![2, 10]),
        ("embedding_lstm.toml", EMBEDDING_LSTM_PARAMS, vec![2, 28], vec![2, 10]),
    ] {
        let spec = example(file);
        let report = spec.check(None).unwrap_or_else(|r| panic!("{file}: {}", r.render_errors()));
        assert!(check_spec(&spec, None, Some(10)).errors.is_empty(), "{file}");
        let summary = Summary::from_report(&report, 64);
        let model = spec.build().unwrap();
        assert_eq!(summary.total_params, params, "{file}");
        assert_eq!(model.num_parameters(), params, "{file}");
        let x = match spec.input_dtype {
            DType::I64 => Tensor::from_vec((0..56i64).map(|i| i * 17 % 1000).collect::<Vec<_>>(), &input).unwrap(),
            _ => Tensor::randn(&input, 0.0, 1.0, DType::F32, &mut Generator::new(0)).unwrap(),
        };
        assert_eq!(model.forward(&x).unwrap().dims(), out.as_slice(), "{file}");
        assert_eq!(report.output.clone().unwrap().with_batch(2), out, "{file}");
        let from_module = ModelSpec::from_module(&spec.name, &model)
            .unwrap()
            .input(spec.input.as_deref().unwrap())
            .input_dtype(spec.input_dtype);
        assert_eq!(from_module, strip_origins(report.resolved.clone()), "{file}");
        let again = strata_nn::model_file::parse_model(&strata_nn::model_file::to_toml(&spec), "x.toml", "x").unwrap();
        assert_eq!(strip_origins(again), strip_origins(spec.clone()), "{file}");
        assert!(check_checkpoint(&report, &model.state_dict(), "x").is_empty(), "{file}");
    }
    let summary = |f: &str| Summary::from_report(&example(f).check(None).unwrap(), 64).render();
    insta::assert_snapshot!("inception_mlp_summary", summary("inception_mlp.toml"));
    // embedding_lstm.toml's summary is snapshotted through the CLI (crates/cli/tests/check.rs).
}

#[test]
fn merge_and_element_type_errors_name_branches_and_fixes() {
    use strata_nn::check::Edit;
    let lstm = |input| {
        let mut r = strata_nn::spec::RecurrentSpec::new(strata_nn::spec::RecurrentKind::Lstm, Some(input), 32);
        r.batch_first = true;
        LayerSpec::Recurrent(r)
    };
    let cases = [
        // Token ids straight into a Linear: an Embedding is missing.
        ModelSpec::new("ids_into_linear")
            .input(&[28])
            .input_dtype(DType::I64)
            .linear("fc", 28, 64)
            .relu()
            .linear("head", 64, 10),
        // Token ids into an LSTM: the Embedding was forgotten.
        ModelSpec::new("ids_into_lstm")
            .input(&[28])
            .input_dtype(DType::I64)
            .layer("lstm", lstm(64))
            .layer("last", LayerSpec::LastStep { batch_first: true })
            .linear("fc", 32, 10),
        // Three branches summed, one of them the identity: the narrow one is projected.
        ModelSpec::new("three_branches")
            .input(&[64])
            .add_branches(
                "block",
                vec![
                    ModelSpec::new("a").linear("fc", 64, 32).relu(),
                    ModelSpec::new("identity"),
                    ModelSpec::new("c").linear("fc", 64, 64),
                ],
            )
            .linear("head", 64, 10),
        // A strided convolution added to the identity: the identity gets the 1×1 projection
        // (the larger input cannot be reached from the smaller output).
        ModelSpec::new("conv_add")
            .input(&[16, 8, 8])
            .add_branches(
                "block",
                vec![ModelSpec::new("a").conv2d("conv", Some(16), 32, 3, 2, 1), ModelSpec::new("id")],
            )
            .flatten()
            .lazy_linear("head", 10),
        // Feature vectors joined with the raw image: the image branch is flattened.
        ModelSpec::new("concat_ranks")
            .input(&[1, 8, 8])
            .concat_branches("skip", vec![ModelSpec::new("a").flatten().linear("fc", 64, 10), ModelSpec::new("id")], 1)
            .lazy_linear("head", 10),
        // A Concat along a dimension that does not exist.
        ModelSpec::new("concat_dim")
            .input(&[8])
            .concat_branches(
                "cat",
                vec![ModelSpec::new("a").linear("fc", 8, 4), ModelSpec::new("b").linear("fc", 8, 4)],
                3,
            )
            .linear("head", 8, 10),
        // Token ids beside looked-up vectors: one element type per merge.
        ModelSpec::new("mixed_types")
            .input(&[5])
            .input_dtype(DType::I64)
            .concat_branches(
                "cat",
                vec![ModelSpec::new("a").embedding("emb", 10, 4).flatten(), ModelSpec::new("b").flatten()],
                1,
            )
            .lazy_linear("head", 10),
    ];
    let mut text = String::new();
    for spec in cases {
        let report = check_spec(&spec, None, Some(10));
        assert!(!report.errors.is_empty(), "{}", spec.name);
        text.push_str(&format!("{}\n{}\n{}\n\n", spec.name, report.render_trace(), report.render_errors()));
        // The first fix that comes with edits, applied, makes the model check and run. The
        // Embedding that token ids need has no known vocabulary size: its suggestion has no
        // edits, so for the LSTM it is applied here with one.
        let mut fixed = spec.clone();
        for e in &report.errors {
            let embedding = LayerSpec::Embedding { num_embeddings: 1000, embedding_dim: 64, padding_idx: None };
            let edits = match e.fixes.iter().find(|f| !f.edits.is_empty()) {
                _ if spec.name == "ids_into_lstm" => {
                    vec![Edit::InsertBefore { path: "lstm".into(), name: "emb".into(), spec: embedding }]
                }
                Some(fix) => fix.edits.clone(),
                None => {
                    assert_eq!(spec.name, "mixed_types", "{}: no fix for\n{e}", spec.name);
                    continue;
                }
            };
            assert!(fixed.apply(&edits), "{}: {edits:?} does not apply", spec.name);
        }
        if spec.name == "mixed_types" {
            continue;
        }
        let after = check_spec(&fixed, None, Some(10));
        assert!(after.errors.is_empty(), "{}: {}", spec.name, after.render_errors());
        let mut shape = vec![2];
        shape.extend(fixed.input.as_deref().unwrap());
        let x = match fixed.input_dtype {
            DType::I64 => Tensor::zeros(&shape, DType::I64),
            _ => Tensor::randn(&shape, 0.0, 1.0, DType::F32, &mut Generator::new(2)).unwrap(),
        };
        assert_eq!(fixed.build().unwrap().forward(&x).unwrap().dims(), &[2, 10], "{}", spec.name);
    }
    insta::assert_snapshot!("merge_and_dtype_errors", text);
    // The token-id errors suggest the Embedding first, with the size its consumer expects.
    let report =
        check_spec(&ModelSpec::new("m").input(&[28]).input_dtype(DType::I64).layer("lstm", lstm(64)), None, None);
    assert!(report.errors[0].fixes[0].text.starts_with("insert Embedding(num_embeddings, 64) before lstm"));
    assert_eq!(report.errors[0].fixes[1].edits, [Edit::SetInputDType { dtype: DType::F32 }]);
}

#[test]
fn model_file_errors_in_branches_are_located() {
    let text = r#"input = [8]
input_dtype = "int64"
layers = [
  { name = "mix", type = "Concat", branches = [
      [{ name = "fc", type = "Linear", out_feature = 4 }],
      [{ type = "LayerNorm" }],
  ] },
  { name = "sum", type = "Add", branches = [[]] },
  { name = "emb", type = "Embedding", num_embeddings = 10, embedding_dim = 4, padding_idx = 10 },
]
"#;
    let e = strata_nn::model_file::parse_model(text, "m.toml", "m").unwrap_err().to_string();
    insta::assert_snapshot!("branch_file_errors", e);
}
