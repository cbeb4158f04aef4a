//! ONNX import against PyTorch: the graphs `torch.onnx.export(..., dynamo=False,
//! opset_version=17)` writes for a SimpleNN, a small ResNet and an LSTM classifier
//! (`tools/make_onnx_import_fixtures.py`, committed under `tests/fixtures/onnx_import/`)
//! import, pass the shape check, summarise, and reproduce PyTorch's outputs; strata's own
//! exports import back to the same model file and outputs; a graph with ops strata cannot read
//! is an error listing every such node.

use std::path::{Path, PathBuf};
use strata_core::{Generator, Tensor};
use strata_nn::model_file::{load_model, to_toml};
use strata_nn::onnx::import::{Imported, from_bytes, import, module_path};
use strata_nn::onnx::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type,
};
use strata_nn::spec::{LayerSpec, ModelSpec, NamedLayer};
use strata_nn::{Error, Module, StateDict, Summary, onnx};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx_import")
}

fn import_fixture(name: &str) -> Imported {
    let bytes = std::fs::read(fixtures().join(format!("{name}.onnx"))).expect("fixture");
    from_bytes(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `|got − want| ≤ 1e-5·|want| + 1e-6` element-wise.
fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sizes differ");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.abs() + 1e-6, "{what}: element {i}: strata {a}, PyTorch {b}");
    }
}

/// Imports fixture `name`, checks and summarises it, and compares its outputs with PyTorch's
/// on the committed input batch.
fn check_fixture(name: &str) -> Imported {
    let imported = import_fixture(name);
    let report = imported.spec.check(None).unwrap_or_else(|r| panic!("{name}: {}", r.render_errors()));
    let summary = Summary::from_report(&report, 3);
    let params: usize = imported.weights.iter().filter(|(_, t)| t.dtype().is_float()).map(|(_, t)| t.numel()).sum();
    assert!(summary.total_params > 0 && summary.total_params + summary.total_non_trainable <= params);
    assert!(summary.render().contains(&imported.spec.name));
    let model = imported.spec.build().unwrap();
    model.load_state_dict(&imported.weights, true).unwrap();
    model.eval();
    let io = StateDict::load(fixtures().join(format!("{name}.io.safetensors"))).unwrap();
    let y = model.forward(io.get("input").unwrap()).unwrap();
    assert_close(&y.to_vec_f64(), &io.get("output").unwrap().to_vec_f64(), name);
    // The model file written for it reads back to the same spec.
    let text = to_toml(&imported.spec);
    let back = strata_nn::model_file::parse_model(&text, "imported.toml", name).unwrap();
    assert_eq!(strip_origins(back), imported.spec, "{text}");
    imported
}

fn strip_origins(mut spec: ModelSpec) -> ModelSpec {
    fn chain(layers: &mut [NamedLayer]) {
        for l in layers {
            l.origin = None;
            match &mut l.spec {
                LayerSpec::Sequential(c) => chain(c),
                LayerSpec::Residual { body, shortcut } => {
                    chain(body);
                    shortcut.iter_mut().for_each(|s| chain(s));
                }
                LayerSpec::Branches { branches, .. } => branches.iter_mut().for_each(|b| chain(b)),
                _ => {}
            }
        }
    }
    chain(&mut spec.layers);
    spec
}

fn keys(sd: &StateDict) -> Vec<&str> {
    sd.keys().collect()
}

#[test]
fn torch_simple_nn_imports_with_pytorchs_keys_and_outputs() {
    // x.view(x.size(0), -1) is Shape, Gather, Unsqueeze, Concat, Reshape: a Flatten.
    let imported = check_fixture("simple_nn");
    let text = to_toml(&imported.spec);
    assert!(text.contains("input = [1, 28, 28]"), "{text}");
    let types: Vec<&str> = imported.spec.layers.iter().map(|l| l.spec.type_name()).collect();
    assert_eq!(types, ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]);
    assert_eq!(keys(&imported.weights), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]);
}

#[test]
fn torch_resnet_imports_as_residual_blocks_and_matches() {
    let imported = check_fixture("resnet");
    let text = to_toml(&imported.spec);
    // torch folds each BatchNorm after a Conv into the Conv (so the Conv gets a bias); the
    // block paths keep PyTorch's names, so `block2.shortcut.0.weight` is PyTorch's key.
    for key in [
        "conv1.weight",
        "conv1.bias",
        "block1.body.0.weight",
        "block1.body.3.weight",
        "block2.body.0.weight",
        "block2.shortcut.0.weight",
        "bn_head.running_var",
        "bn_head.num_batches_tracked",
        "fc.weight",
    ] {
        assert!(imported.weights.get(key).is_some(), "{key} missing: {:?}\n{text}", keys(&imported.weights));
    }
    let block2 = imported.spec.layers.iter().find(|l| l.name == "block2").expect("block2");
    let LayerSpec::Residual { body, shortcut: Some(shortcut) } = &block2.spec else { panic!("{text}") };
    assert_eq!(body.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["0", "2", "3"]);
    assert_eq!(shortcut.len(), 1);
    assert!(text.contains("type = \"MaxPool2d\"") && text.contains("type = \"AvgPool2d\""), "{text}");
    assert!(text.contains("name = \"bn_head\", type = \"BatchNorm1d\""), "{text}");
    assert!(text.contains("type = \"AdaptiveAvgPool2d\""), "{text}");
}

#[test]
fn torch_lstm_imports_with_pytorchs_gate_order_and_matches() {
    let imported = check_fixture("lstm");
    let types: Vec<&str> = imported.spec.layers.iter().map(|l| l.spec.type_name()).collect();
    assert_eq!(types, ["LSTM", "LastStep", "Linear"]);
    let LayerSpec::Recurrent(r) = &imported.spec.layers[0].spec else { unreachable!() };
    assert!(r.batch_first && r.hidden_size == 32 && r.input_size == Some(28));
    assert_eq!(imported.spec.layers[0].name, "lstm");
    assert_eq!(
        keys(&imported.weights),
        ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "fc.weight", "fc.bias"]
    );
}

#[test]
fn torch_stacked_bidirectional_gru_imports_as_one_layer_and_matches() {
    // Two GRU nodes, each with Transpose + Reshape joining the directions, the zero state
    // sliced per layer: one GRU(num_layers = 2, bidirectional), PyTorch's r, z, n order.
    let imported = check_fixture("gru");
    let LayerSpec::Recurrent(r) = &imported.spec.layers[0].spec else { panic!("{:?}", imported.spec) };
    assert!(r.batch_first && r.bidirectional && r.num_layers == 2 && r.hidden_size == 16);
    assert!(imported.weights.get("gru.weight_hh_l1_reverse").is_some(), "{:?}", keys(&imported.weights));
}

/// Both GELUs from torch: spelled out at opset 17 (`Erf`; `Tanh` of a cube), and opset 20's
/// `Gelu` op; each read as one GELU layer named by its module, matching PyTorch's outputs.
#[test]
fn torch_gelu_imports_as_gelu_layers_and_matches() {
    use strata_nn::spec::GeluApproximate;
    for name in ["gelu", "gelu_opset20"] {
        let imported = check_fixture(name);
        let layers: Vec<(&str, &LayerSpec)> = imported.spec.layers.iter().map(|l| (l.name.as_str(), &l.spec)).collect();
        assert!(
            matches!(
                layers.as_slice(),
                [
                    ("fc1", LayerSpec::Linear { .. }),
                    ("act1", LayerSpec::GELU { approximate: GeluApproximate::None }),
                    ("fc2", LayerSpec::Linear { .. }),
                    ("act2", LayerSpec::GELU { approximate: GeluApproximate::Tanh }),
                    ("fc3", LayerSpec::Linear { .. }),
                ]
            ),
            "{name}: {layers:?}"
        );
    }
}

/// SiLU from torch, as a module (`/act1/Sigmoid`, `/act1/Mul`) and as `F.silu` (`/Sigmoid`,
/// `/Mul`, a layer named by its place): `Mul(x, Sigmoid(x))` at opset 17, each read as one
/// SiLU layer, matching PyTorch.
#[test]
fn torch_silu_imports_as_silu_layers_and_matches() {
    let imported = check_fixture("silu");
    let layers: Vec<(&str, &LayerSpec)> = imported.spec.layers.iter().map(|l| (l.name.as_str(), &l.spec)).collect();
    assert!(
        matches!(
            layers.as_slice(),
            [
                ("fc1", LayerSpec::Linear { .. }),
                ("act1", LayerSpec::SiLU),
                ("fc2", LayerSpec::Linear { .. }),
                ("3", LayerSpec::SiLU),
                ("fc3", LayerSpec::Linear { .. }),
            ]
        ),
        "{layers:?}"
    );
}

/// Mish, Hardswish, Hardsigmoid and ReLU6 from torch: `Mul(x, Tanh(Softplus(x)))` read as one
/// Mish layer named by its module, `HardSwish`, `HardSigmoid`, `Clip(x, 0, 6)` as the others,
/// matching PyTorch's outputs; opset 18's `Mish` op too.
#[test]
fn torch_mish_and_hardswish_import_and_match() {
    let imported = check_fixture("mish");
    let kinds: Vec<(&str, &str)> = imported.spec.layers.iter().map(|l| (l.name.as_str(), l.spec.type_name())).collect();
    let want = [
        ("fc1", "Linear"),
        ("act1", "Mish"),
        ("fc2", "Linear"),
        ("act2", "Hardswish"),
        ("fc3", "Linear"),
        ("act3", "Hardsigmoid"),
        ("fc4", "Linear"),
        ("act4", "ReLU6"),
    ];
    assert_eq!(kinds, want);
    let op = model_of(vec![node("/act/Mish", "Mish", &["input"], "output", vec![])], vec![], (4, 4));
    let layers = import(&op, "x").unwrap().spec.layers;
    assert_eq!((layers[0].name.as_str(), &layers[0].spec), ("act", &LayerSpec::Mish));
    // A Clip other than (0, 6) or (0, ∞) is no strata layer; the error says which are.
    let scalar =
        |name: &str, v: f32| TensorProto { name: name.into(), data_type: 1, float_data: vec![v], ..Default::default() };
    let clip = model_of(
        vec![node("/act/Clip", "Clip", &["input", "lo", "hi"], "output", vec![])],
        vec![scalar("lo", 0.0), scalar("hi", 1.0)],
        (4, 4),
    );
    let err = import(&clip, "x").unwrap_err().to_string();
    assert!(err.contains("strata reads Clip(0, 6) as ReLU6 and Clip(0) as ReLU"), "{err}");
}

/// Opset 24's `Swish` is SiLU when `alpha = 1`, and an error naming alpha otherwise; a
/// `Mul(x, Sigmoid(y))` of two different values is not SiLU and stays two ops.
#[test]
fn swish_and_only_true_silu_pairs_are_read_as_silu() {
    let alpha = |a: f32| AttributeProto { name: "alpha".into(), r#type: 1, f: a, ..Default::default() };
    let swish = |a: Option<f32>| {
        let attrs = a.map(alpha).into_iter().collect();
        model_of(vec![node("/act/Swish", "Swish", &["input"], "output", attrs)], vec![], (4, 4))
    };
    for ok in [swish(None), swish(Some(1.0))] {
        let imported = import(&ok, "x").unwrap();
        assert_eq!(imported.spec.layers.len(), 1);
        assert_eq!((imported.spec.layers[0].name.as_str(), &imported.spec.layers[0].spec), ("act", &LayerSpec::SiLU));
    }
    let err = import(&swish(Some(2.0)), "x").unwrap_err().to_string();
    assert!(err.contains("alpha = 2: strata's SiLU is Swish with alpha = 1"), "{err}");

    let pair = |sig_of: &str| {
        let nodes = vec![
            node("/act/Relu", "Relu", &["input"], "r", vec![]),
            node("/act/Sigmoid", "Sigmoid", &[sig_of], "s", vec![]),
            node("/act/Mul", "Mul", &["r", "s"], "output", vec![]),
        ];
        model_of(nodes, vec![], (4, 4))
    };
    let fused = import(&pair("r"), "x").unwrap();
    let kinds: Vec<&str> = fused.spec.layers.iter().map(|l| l.spec.type_name()).collect();
    assert_eq!(kinds, ["ReLU", "SiLU"]);
    let err = import(&pair("input"), "x").unwrap_err();
    let Error::OnnxImport(nodes) = &err else { panic!("{err:?}") };
    assert!(nodes.iter().any(|n| n.op_type == "Mul"), "{err}");
}

/// A 1-d CNN from torch: its 1-d `Conv`, `MaxPool` and `AveragePool` nodes read as Conv1d,
/// MaxPool1d and AvgPool1d layers with their options and PyTorch's weight keys, matching
/// PyTorch's outputs.
#[test]
fn torch_conv1d_imports_as_conv1d_layers_and_matches() {
    let imported = check_fixture("conv1d");
    let convs: Vec<String> = imported
        .spec
        .layers
        .iter()
        .filter(|l| matches!(l.spec, LayerSpec::Conv1d(_) | LayerSpec::MaxPool1d(_) | LayerSpec::AvgPool1d(_)))
        .map(|l| format!("{}: {}", l.name, l.spec))
        .collect();
    assert_eq!(
        convs,
        [
            "conv1: Conv1d 3 → 8, kernel 5, stride 2, padding 2",
            "pool1: MaxPool1d 3, stride 2, padding 1",
            "conv2: Conv1d 8 → 8, kernel 3, padding 2, dilation 2, groups 2",
            "pool2: AvgPool1d 2",
        ]
    );
    assert_eq!(imported.weights.get("conv2.weight").unwrap().dims(), &[8, 4, 3]);
}

/// The spec's model with random weights (BatchNorm statistics and scales drawn too, so a
/// mix-up shows) and its state_dict.
fn random_model(spec: &ModelSpec, seed: u64) -> (strata_nn::Sequential, StateDict) {
    let model = spec.build().expect("builds");
    let mut g = Generator::new(seed);
    let mut sd = StateDict::new();
    for (key, t) in model.state_dict().iter() {
        if !t.dtype().is_float() {
            sd.insert(key, t.clone());
            continue;
        }
        let r = Tensor::randn(t.dims(), 0.0, 0.5, t.dtype(), &mut g).unwrap();
        sd.insert(key, if key.ends_with("running_var") { r.exp().unwrap() } else { r });
    }
    model.load_state_dict(&sd, true).unwrap();
    model.eval();
    (model, sd)
}

/// Exports `spec` (resolved: inferred sizes filled in), imports it back and demands the same
/// model file and the same outputs on a random batch.
fn round_trip(spec: &ModelSpec, seed: u64) {
    let spec = spec.check(None).unwrap_or_else(|r| panic!("{}", r.render_errors())).resolved;
    let (model, sd) = random_model(&spec, seed);
    let bytes = onnx::to_bytes(&spec, &sd, &[]).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    let imported = from_bytes(&bytes, "x").unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    // ONNX has no padding_idx (it only shapes training): an Embedding comes back without it.
    let want_toml = to_toml(&spec).replace(", padding_idx = 0", "");
    assert_eq!(to_toml(&imported.spec), want_toml, "{}: the model file differs", spec.name);
    assert_eq!(keys(&imported.weights), keys(&model.state_dict()), "{}", spec.name);
    let back = imported.spec.build().unwrap();
    back.load_state_dict(&imported.weights, true).unwrap();
    back.eval();
    let shape: Vec<usize> = std::iter::once(3).chain(spec.input.clone().unwrap()).collect();
    let x = if spec.input_dtype == strata_core::DType::I64 {
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| (i * 37 % 100) as i64).collect::<Vec<_>>(), &shape).unwrap()
    } else {
        Tensor::randn(&shape, 0.0, 1.0, spec.dtype, &mut Generator::new(seed + 1)).unwrap()
    };
    let (want, got) = (model.forward(&x).unwrap().to_vec_f64(), back.forward(&x).unwrap().to_vec_f64());
    assert_eq!(got, want, "{}: outputs differ", spec.name);
}

#[test]
fn strata_exports_of_the_example_models_import_back_unchanged() {
    // The example models ONNX export supports (tests/onnx_export.rs); models whose layers
    // have nodes strata reads back. Placement is not part of an ONNX graph.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in [
        "conv1d_mnist_model",
        "embedding_lstm",
        "inception_mlp",
        "lstm_mnist_model",
        "mlp_inferred",
        "residual_mlp",
        "resnet_mnist_model",
        "simple_nn",
    ] {
        let spec = load_model(&examples.join(format!("{name}.toml"))).unwrap().without_placement();
        let mut spec = strip_origins(spec);
        spec.name = "x".into();
        round_trip(&spec, 3);
    }
}

#[test]
fn strata_exports_of_more_layer_options_import_back_unchanged() {
    let mut conv = strata_nn::spec::ConvSpec::new(Some(4), 6, (3, 3));
    (conv.stride, conv.padding, conv.dilation, conv.groups, conv.bias) = ((2, 1), (1, 2), (1, 2), 2, false);
    let mut same = strata_nn::spec::ConvSpec::new(Some(6), 4, (2, 4));
    same.padding_same = true;
    let mut mp = strata_core::MaxPool2dOptions::new((3, 3));
    (mp.stride, mp.padding, mp.ceil_mode) = ((2, 2), (1, 1), true);
    let mut ap = strata_core::AvgPool2dOptions::new((3, 3));
    (ap.stride, ap.padding, ap.count_include_pad, ap.ceil_mode) = ((2, 2), (1, 1), false, true);
    let spec = ModelSpec::new("x")
        .input(&[4, 11, 13])
        .layer("c1", LayerSpec::Conv2d(conv))
        .batch_norm2d("bn", None)
        .layer("", LayerSpec::LeakyReLU { negative_slope: 0.25 })
        .layer("c2", LayerSpec::Conv2d(same))
        .layer("mp", LayerSpec::MaxPool2d(mp))
        .layer("ap", LayerSpec::AvgPool2d(ap))
        .layer("", LayerSpec::ELU { alpha: 0.5 })
        .layer("pool", LayerSpec::AdaptiveAvgPool2d { output_size: (1, 1) })
        .flatten()
        .layer_norm("ln", &[4])
        .layer("", LayerSpec::Sigmoid)
        .layer("", LayerSpec::GELU { approximate: strata_nn::spec::GeluApproximate::None })
        .linear("fc", 4, 5)
        .layer("", LayerSpec::GELU { approximate: strata_nn::spec::GeluApproximate::Tanh })
        .layer("", LayerSpec::SiLU)
        .layer("", LayerSpec::Mish)
        .layer("", LayerSpec::Hardswish)
        .layer("", LayerSpec::Hardsigmoid)
        .layer("", LayerSpec::ReLU6)
        .layer("", LayerSpec::Tanh)
        .concat_branches("cat", vec![ModelSpec::new("a").linear("p", 5, 2), ModelSpec::new("b")], 1)
        .layer("", LayerSpec::LogSoftmax { dim: 1 });
    round_trip(&spec, 5);
    // Conv1d: ONNX's 1-d Conv, strided, dilated and grouped, and "same" with an even kernel
    // (uneven pads), then a BatchNorm1d on [N, C, L] and the 1-d pools.
    let mut c1 = strata_nn::spec::ConvSpec::new_1d(Some(3), 6, 4);
    (c1.stride, c1.padding, c1.dilation, c1.groups) = ((1, 2), (0, 1), (1, 2), 3);
    let mut c2 = strata_nn::spec::ConvSpec::new_1d(Some(6), 4, 4);
    (c2.padding_same, c2.bias) = (true, false);
    let conv1d = ModelSpec::new("x")
        .input(&[3, 25])
        .layer("c1", LayerSpec::Conv1d(c1))
        .relu()
        .layer("c2", LayerSpec::Conv1d(c2))
        .layer("bn", LayerSpec::BatchNorm1d(strata_nn::spec::BatchNormSpec::new(Some(4))))
        .layer("mp", LayerSpec::MaxPool1d(strata_nn::MaxPool1d::new(3).stride(2).padding(1).options))
        .layer("ap", LayerSpec::AvgPool1d(strata_nn::AvgPool1d::new(2).options))
        .layer("gap", LayerSpec::AdaptiveAvgPool1d { output_size: 1 })
        .flatten()
        .linear("fc", 4, 3);
    round_trip(&conv1d, 7);
    let f64_spec = ModelSpec::new("x").input(&[3]).dtype(strata_core::DType::F64).linear("fc", 3, 2);
    round_trip(&f64_spec, 6);
}

#[test]
fn torch_node_names_give_module_paths() {
    assert_eq!(module_path("/block1/body/body.0/Conv"), "block1.body.0");
    assert_eq!(module_path("/layer1/layer1.0/conv1/Conv"), "layer1.0.conv1");
    assert_eq!(module_path("/fc1/Gemm"), "fc1");
    assert_eq!(module_path("/Relu_1"), "");
    assert_eq!(module_path("block1.body.conv1"), "block1.body.conv1");
    assert_eq!(module_path("fc/Add"), "fc");
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => DimensionValue::DimValue(*v),
                None => DimensionValue::DimParam("batch".into()),
            }),
        })
        .collect();
    let tensor_type = TypeProtoTensor { elem_type: 1, shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto { name: name.into(), r#type: Some(TypeProto { tensor_type: Some(tensor_type) }) }
}

fn node(name: &str, op: &str, input: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

/// A hand-made graph with ops strata has no layer for (one of them downstream of another)
/// and a pattern it cannot read (a lone Transpose), written with `float_data` as ONNX's
/// helpers do.
fn unsupported_graph() -> ModelProto {
    let w = TensorProto {
        // Gemm without transB: [in, out].
        dims: vec![4, 3],
        data_type: 1,
        name: "fc.weight".into(),
        float_data: (0..12).map(|v| v as f32 / 10.0).collect(),
        ..Default::default()
    };
    let perm =
        AttributeProto { name: "perm".into(), r#type: attribute_type::INTS, ints: vec![1, 0], ..Default::default() };
    let nodes = vec![
        node("/fc/Gemm", "Gemm", &["input", "fc.weight"], "a", vec![]),
        node("/act/Celu", "Celu", &["a"], "b", vec![]),
        node("/Cos", "Cos", &["b"], "c", vec![]),
        node("/Transpose", "Transpose", &["c"], "d", vec![perm]),
        node("/Relu", "Relu", &["d"], "output", vec![]),
    ];
    model_of(nodes, vec![w], (4, 3))
}

/// An opset-17 model of `nodes` from `input` ([N, features.0]) to `output` ([N, features.1]).
fn model_of(node: Vec<NodeProto>, initializer: Vec<TensorProto>, features: (i64, i64)) -> ModelProto {
    let graph = GraphProto {
        node,
        name: "main_graph".into(),
        initializer,
        input: vec![value_info("input", &[None, Some(features.0)])],
        output: vec![value_info("output", &[None, Some(features.1)])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// A GELU chain is read as one only when it is the whole of GELU: the same ops with another
/// constant (a scaled erf), or with an intermediate value read elsewhere too, stay elementary
/// ops and are reported as such.
#[test]
fn only_whole_gelu_chains_are_read_as_gelu() {
    let scalar = |name: &str, v: f32| TensorProto {
        dims: vec![],
        data_type: 1,
        name: name.into(),
        float_data: vec![v],
        ..Default::default()
    };
    let graph = |sqrt2: f32, extra_reader: bool| {
        let mut node = vec![
            node("/act/Div", "Div", &["input", "s2"], "d", vec![]),
            node("/act/Erf", "Erf", &["d"], "e", vec![]),
            node("/act/Add", "Add", &["e", "one"], "p", vec![]),
            node("/act/Mul", "Mul", &["input", "p"], "xp", vec![]),
            node("/act/Mul_1", "Mul", &["xp", "half"], "output", vec![]),
        ];
        if extra_reader {
            node.push(node_relu("/Relu", "d", "unused"));
        }
        model_of(node, vec![scalar("s2", sqrt2), scalar("one", 1.0), scalar("half", 0.5)], (4, 4))
    };
    fn node_relu(name: &str, input: &str, output: &str) -> NodeProto {
        node(name, "Relu", &[input], output, vec![])
    }
    let ok = import(&graph(std::f32::consts::SQRT_2, false), "x").unwrap();
    assert_eq!(ok.spec.layers.len(), 1);
    assert_eq!((ok.spec.layers[0].name.as_str(), ok.spec.layers[0].spec.type_name()), ("act", "GELU"));
    for bad in [graph(2.0, false), graph(std::f32::consts::SQRT_2, true)] {
        let err = import(&bad, "x").unwrap_err();
        let Error::OnnxImport(nodes) = &err else { panic!("{err:?}") };
        assert!(nodes.iter().any(|n| n.op_type == "Erf"), "{err}");
    }
}

#[test]
fn unsupported_ops_are_listed_node_by_node() {
    let err = import(&unsupported_graph(), "x").unwrap_err();
    let Error::OnnxImport(nodes) = &err else { panic!("{err:?}") };
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["/act/Celu", "/Cos"]);
    insta::assert_snapshot!("unsupported_ops", err.to_string());
}

#[test]
fn unsupported_patterns_are_listed_node_by_node() {
    // Without the unknown ops, the lone Transpose is the one node that does not fit.
    let mut model = unsupported_graph();
    let graph = model.graph.as_mut().unwrap();
    graph.node.remove(1);
    graph.node[1].op_type = "Sigmoid".into();
    graph.node[1].input = vec!["a".into()];
    graph.node[2].input = vec!["c".into()];
    let err = import(&model, "x").unwrap_err();
    insta::assert_snapshot!("unsupported_pattern", err.to_string());
}

#[test]
fn models_strata_cannot_take_are_errors_saying_why() {
    let mut two_inputs = unsupported_graph();
    two_inputs.graph.as_mut().unwrap().input.push(value_info("mask", &[None, Some(4)]));
    let mut symbolic = unsupported_graph();
    symbolic.graph.as_mut().unwrap().input[0] = value_info("input", &[None, None]);
    let errors: Vec<String> =
        [two_inputs, symbolic, ModelProto::default()].iter().map(|m| import(m, "x").unwrap_err().to_string()).collect();
    insta::assert_snapshot!("model_errors", errors.join("\n"));
    let garbage = from_bytes(b"\xff\xff\xff not protobuf", "x").unwrap_err();
    assert!(matches!(garbage, Error::OnnxImportModel(_)), "{garbage}");
}
