//! `init` and `bias_init` in model files and specs: read, inherited (model → block → layer;
//! normalisation layers only take their own), written back, built, and refused with located
//! errors naming the layer, the key and the valid schemes. Without the keys nothing changes:
//! a model draws exactly PyTorch's defaults, in the same order.

use std::path::Path;
use strata_core::with_seed;
use strata_nn::init::{FanMode, Init, LayerInit, Nonlinearity};
use strata_nn::model_file::{load_model, parse_model, to_toml};
use strata_nn::spec::{LayerSpec, ModelSpec, NamedLayer};
use strata_nn::{Module, StateDict};

fn strip(spec: &ModelSpec) -> ModelSpec {
    fn clear(layers: &mut [NamedLayer]) {
        for l in layers {
            l.origin = None;
            match &mut l.spec {
                LayerSpec::Sequential(inner) | LayerSpec::Residual { body: inner, .. } => clear(inner),
                _ => {}
            }
        }
    }
    let mut s = spec.clone();
    clear(&mut s.layers);
    s
}

fn built(text: &str, seed: u64) -> StateDict {
    let spec = parse_model(text, "t.toml", "m").unwrap_or_else(|e| panic!("{e}"));
    // This thread's own seeded generator: tests drawing at the same time cannot move it.
    with_seed(seed, || spec.build()).unwrap().state_dict()
}

fn values(sd: &StateDict, key: &str) -> Vec<f64> {
    sd.get(key).unwrap_or_else(|| panic!("no {key}")).to_vec_f64()
}

const MIXED: &str = r#"
name = "mixed"
input = [6]
init = { scheme = "constant", val = 0.5 }
bias_init = { scheme = "constant", val = -1.0 }
layers = [
  { name = "fc1", type = "Linear", in_features = 6, out_features = 4 },
  { name = "ln", type = "LayerNorm", normalized_shape = 4 },
  { name = "blk", type = "Sequential", init = "ones", layers = [
      { name = "fc", type = "Linear", in_features = 4, out_features = 4 },
      { name = "own", type = "Linear", in_features = 4, out_features = 4, init = "zeros", bias_init = { scheme = "uniform", a = 2, b = 3 } },
      { name = "bn", type = "BatchNorm1d", num_features = 4, init = { scheme = "normal", mean = 1.0, std = 0.1 } },
  ] },
  { name = "fc2", type = "Linear", in_features = 4, out_features = 2, bias = false, init = { scheme = "kaiming_normal", mode = "fan_out", nonlinearity = "relu" } },
]
"#;

#[test]
fn inits_are_read_inherited_and_built() {
    let spec = parse_model(MIXED, "t.toml", "m").unwrap();
    assert_eq!(spec.init, LayerInit::weight(Init::Constant { val: 0.5 }).with_bias(Init::Constant { val: -1.0 }));
    let relu = Init::KaimingNormal { a: 0.0, mode: FanMode::FanOut, nonlinearity: Nonlinearity::Relu };
    assert_eq!(spec.layers[3].init, LayerInit::weight(relu));
    let sd = built(MIXED, 0);
    let all = |key: &str, v: f64| assert!(values(&sd, key).iter().all(|x| *x == v), "{key}: {:?}", values(&sd, key));
    all("fc1.weight", 0.5);
    all("fc1.bias", -1.0);
    // The LayerNorm does not take the model's choice: ones and zeros.
    all("ln.weight", 1.0);
    all("ln.bias", 0.0);
    // The block's init over the model's; the model's bias_init still applies inside.
    all("blk.fc.weight", 1.0);
    all("blk.fc.bias", -1.0);
    all("blk.own.weight", 0.0);
    assert!(values(&sd, "blk.own.bias").iter().all(|x| (2.0..3.0).contains(x)));
    let bn = values(&sd, "blk.bn.weight");
    assert!(bn.iter().all(|x| (0.5..1.5).contains(x)) && bn.iter().any(|x| *x != 1.0), "{bn:?}");
    all("blk.bn.bias", 0.0);
    assert!(values(&sd, "fc2.weight").iter().any(|x| *x != 0.5));
    // Reproducible: the same seed, the same parameters.
    assert_eq!(values(&built(MIXED, 0), "fc2.weight"), values(&sd, "fc2.weight"));
}

#[test]
fn inits_round_trip_through_to_toml() {
    let spec = parse_model(MIXED, "t.toml", "m").unwrap();
    let text = to_toml(&spec);
    assert!(
        text.contains(
            "init = { scheme = \"constant\", val = 0.5 }\nbias_init = { scheme = \"constant\", val = -1.0 }\n"
        ),
        "{text}"
    );
    assert!(text.contains("name = \"blk\", type = \"Sequential\", init = \"ones\""), "{text}");
    assert!(
        text.contains("init = { scheme = \"kaiming_normal\", mode = \"fan_out\", nonlinearity = \"relu\" }"),
        "{text}"
    );
    let again = parse_model(&text, "u.toml", "m").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(strip(&spec), strip(&again));
    // A model without the keys writes none.
    let plain =
        parse_model("layers = [{ type = \"Linear\", in_features = 2, out_features = 2 }]\n", "p.toml", "m").unwrap();
    assert!(!to_toml(&plain).contains("init"), "{}", to_toml(&plain));
}

#[test]
fn a_layer_without_init_draws_exactly_the_default() {
    let plain = "layers = [{ name = \"a\", type = \"Linear\", in_features = 5, out_features = 4 }, { name = \"b\", type = \"Linear\", in_features = 4, out_features = 3 }, { name = \"c\", type = \"Linear\", in_features = 3, out_features = 2 }]\n";
    let with_b = plain
        .replace("name = \"b\", type = \"Linear\",", "name = \"b\", type = \"Linear\", init = \"xavier_uniform\",");
    let (p, w) = (built(plain, 7), built(&with_b, 7));
    // Layers before the chosen one are the same numbers; the chosen one is drawn again after
    // its default (so the draws of later layers move on).
    assert_eq!(values(&p, "a.weight"), values(&w, "a.weight"));
    assert_eq!(values(&p, "a.bias"), values(&w, "a.bias"));
    assert_eq!(values(&p, "b.bias"), values(&w, "b.bias"));
    assert_ne!(values(&p, "b.weight"), values(&w, "b.weight"));
    let bound = (6.0f64 / 7.0).sqrt();
    assert!(values(&w, "b.weight").iter().all(|x| x.abs() <= bound));
}

#[test]
fn embedding_keeps_its_padding_row_and_recurrent_weights_each_get_the_scheme() {
    let text = r#"
input = [5]
input_dtype = "i64"
init = "orthogonal"
bias_init = "ones"
layers = [
  { name = "emb", type = "Embedding", num_embeddings = 12, embedding_dim = 6, padding_idx = 3 },
  { name = "lstm", type = "LSTM", input_size = 6, hidden_size = 4, batch_first = true, bidirectional = true },
]
"#;
    let sd = built(text, 1);
    let emb = values(&sd, "emb.weight");
    assert!(emb[18..24].iter().all(|x| *x == 0.0), "the padding row: {:?}", &emb[18..24]);
    // Orthogonal columns (12 × 6, tall) apart from the zeroed padding row.
    let col0: f64 = (0..12).map(|r| emb[r * 6] * emb[r * 6]).sum();
    assert!(col0 <= 1.0 + 1e-5 && col0 > 0.2, "{col0}");
    for key in ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse", "lstm.weight_hh_l0_reverse"] {
        let w = values(&sd, key); // [16, in]: orthonormal columns
        let cols = w.len() / 16;
        for c in 0..cols {
            let norm: f64 = (0..16).map(|r| w[r * cols + c] * w[r * cols + c]).sum();
            assert!((norm - 1.0).abs() < 1e-5, "{key} column {c}: {norm}");
        }
    }
    for key in ["lstm.bias_ih_l0", "lstm.bias_hh_l0_reverse"] {
        assert!(values(&sd, key).iter().all(|x| *x == 1.0), "{key}");
    }
}

/// Every mistake in one file, each located and named: an unknown scheme (with "did you mean"
/// and the schemes), an unknown parameter, a mode and a nonlinearity that do not exist, a
/// negative `std`, a number of the wrong type, `constant` without `val`, a table without
/// `scheme`, a fan-based scheme on a BatchNorm's scale and on the model's biases, `bias_init`
/// on a layer without bias, `init` on a ReLU and on a LayerNorm without parameters, `b < a`.
#[test]
fn bad_inits_are_located_errors() {
    let text = r#"input = [4]
bias_init = "xavier_uniform"
layers = [
  { name = "fc1", type = "Linear", in_features = 4, out_features = 4, init = "kaiming_norml" },
  { name = "fc2", type = "Linear", in_features = 4, out_features = 4, init = { scheme = "kaiming_normal", gain = 2.0 } },
  { name = "fc3", type = "Linear", in_features = 4, out_features = 4, init = { scheme = "kaiming_uniform", mode = "fan_avg", nonlinearity = "relu6" } },
  { name = "fc4", type = "Linear", in_features = 4, out_features = 4, init = { scheme = "normal", std = -0.5 }, bias_init = { scheme = "uniform", a = "zero" } },
  { name = "fc5", type = "Linear", in_features = 4, out_features = 4, init = "constant", bias_init = { val = 0.1 } },
  { name = "bn", type = "BatchNorm1d", num_features = 4, init = "kaiming_uniform" },
  { name = "fc6", type = "Linear", in_features = 4, out_features = 4, bias = false, bias_init = "zeros" },
  { type = "ReLU", init = "zeros" },
  { name = "ln", type = "LayerNorm", normalized_shape = 4, elementwise_affine = false, init = "ones" },
  { name = "fc7", type = "Linear", in_features = 4, out_features = 4, init = { scheme = "uniform", a = 1, b = 0 } },
  { name = "fc8", type = "Linear", in_features = 4, out_features = 4, init = 0.5 },
]
"#;
    let errors = parse_model(text, "bad_init.toml", "m").unwrap_err().to_string();
    insta::assert_snapshot!("bad_inits", errors);
}

#[test]
fn the_spec_api_sets_checks_and_builds_inits() {
    let relu = Init::KaimingNormal { a: 0.0, mode: FanMode::FanIn, nonlinearity: Nonlinearity::Relu };
    let spec = ModelSpec::new("m")
        .input(&[3, 8, 8])
        .conv2d("conv", Some(3), 8, 3, 1, 1)
        .batch_norm2d("bn", Some(8))
        .flatten()
        .linear("fc", 512, 10)
        .init("", LayerInit::weight(relu).with_bias(Init::Zeros))
        .unwrap()
        .init("fc", LayerInit::weight(Init::Normal { mean: 0.0, std: 0.01 }))
        .unwrap()
        .init("bn", LayerInit::weight(Init::Constant { val: 0.0 }))
        .unwrap();
    let sd = spec.build().unwrap().state_dict();
    assert!(values(&sd, "conv.bias").iter().all(|x| *x == 0.0) && values(&sd, "bn.weight").iter().all(|x| *x == 0.0));
    let fc = values(&sd, "fc.weight");
    assert!(fc.iter().all(|x| x.abs() < 0.06), "normal(0, 0.01) stays within 6σ");
    // The same spec through a model file.
    let again = parse_model(&to_toml(&spec), "u.toml", "m").unwrap();
    assert_eq!(strip(&again), spec);
    // A path that does not exist, a scheme that does not fit.
    let e = spec.clone().init("head", LayerInit::weight(Init::Zeros)).unwrap_err().to_string();
    assert!(e.contains("init: path must be the dotted path of a layer of `m`"), "{e}");
    // A near miss is named, beside the layers at that level.
    let e = spec.clone().init("cnv", LayerInit::weight(Init::Zeros)).unwrap_err().to_string();
    assert!(e.contains("(did you mean `conv`? its layers: conv, bn, 2, fc), or \"\" for the model"), "{e}");
    let e = spec.clone().place("fc2", strata_core::Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("(did you mean `fc`? its layers: conv, bn, 2, fc), got fc2"), "{e}");
    let e = spec.clone().init("bn", LayerInit::weight(relu)).unwrap_err().to_string();
    assert!(
        e.contains("in layer `bn` (BatchNorm2d 8)")
            && e.contains("kaiming_normal needs a weight of 2 or more dimensions"),
        "{e}"
    );
    let e = spec.clone().init("2", LayerInit::weight(Init::Ones)).unwrap_err().to_string();
    assert!(e.contains("the layer has no parameters to initialise"), "{e}");
    let e = spec.init("", LayerInit::default().with_bias(Init::Orthogonal { gain: 1.0 })).unwrap_err().to_string();
    assert!(
        e.contains("orthogonal needs a tensor of 2 or more dimensions (it computes fans), and a bias has one"),
        "{e}"
    );
}

#[test]
fn the_example_builds_torchvisions_resnet_recipe() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/init_choices.toml");
    let spec = load_model(&path).unwrap();
    assert!(spec.check(None).is_ok());
    let sd = spec.build().unwrap().state_dict();
    // conv: N(0, 2/fan_out), fan_out = 16·3·3.
    let w = values(&sd, "block.body.conv1.weight");
    let std = (w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std / (2.0f64 / 144.0).sqrt() - 1.0).abs() < 0.1, "{std}");
    assert!(values(&sd, "bn1.weight").iter().all(|x| *x == 1.0));
    assert!(values(&sd, "block.body.bn2.weight").iter().all(|x| *x == 0.0));
    assert!(values(&sd, "fc.bias").iter().all(|x| *x == 0.0) && values(&sd, "proj.bias").iter().all(|x| *x == 0.0));
    // proj: [32, 16] with orthonormal columns times √2.
    let p = values(&sd, "proj.weight");
    let col: f64 = (0..32).map(|r| p[r * 16] * p[r * 16]).sum();
    assert!((col - 2.0).abs() < 1e-5, "{col}");
}

/// On a GPU: a placed model is re-initialised before its parameters move there, and `apply`
/// and the in-place functions re-initialise parameters that live there. Skipped without an
/// adapter.
#[cfg(feature = "gpu")]
#[test]
fn inits_reach_parameters_on_a_gpu() {
    use strata_core::Device;
    if strata_core::gpu::adapters().is_empty() {
        eprintln!("SKIPPED: no GPU adapter: {}", strata_core::gpu::no_adapter_reason());
        return;
    }
    let gpu = Device::Gpu(0);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/init_choices.toml");
    let model = load_model(&path).unwrap().device(gpu).build().unwrap();
    let bn2 = model.state_dict().get("block.body.bn2.weight").unwrap().clone();
    assert_eq!(bn2.device(), gpu);
    assert!(bn2.to_vec_f64().iter().all(|x| *x == 0.0));
    strata_nn::init::apply(&model, &LayerInit::weight(Init::Constant { val: 0.25 }).with_bias(Init::Ones)).unwrap();
    let sd = model.state_dict();
    assert_eq!(sd.get("fc.weight").unwrap().device(), gpu);
    assert!(values(&sd, "fc.weight").iter().all(|x| *x == 0.25) && values(&sd, "fc.bias").iter().all(|x| *x == 1.0));
    let w = sd.get("proj.weight").unwrap();
    strata_nn::init::orthogonal_(w, 1.0).unwrap();
    let p = w.to_vec_f64();
    let col: f64 = (0..32).map(|r| p[r * 16] * p[r * 16]).sum();
    assert!((col - 1.0).abs() < 1e-5, "{col}");
}
