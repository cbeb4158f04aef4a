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
