//! ONNX export checked by an independent runtime: every example model made of supported layers
//! and a set of small models covering each exported layer option are exported, run with
//! tract-onnx (a pure-Rust ONNX runtime) at batch 3 and batch 1 (the batch dimension is
//! symbolic), and compared with strata's own forward pass. Layers the exporter cannot express
//! must be errors naming them.

use std::path::{Path, PathBuf};
use strata_core::{DType, Generator, PaddingMode, Tensor};
use strata_nn::model_file::{load_model, parse_model};
use strata_nn::spec::{BatchNormSpec, ConvSpec, GeluApproximate, LayerSpec, ModelSpec};
use strata_nn::{Error, Module, StateDict, onnx};
use tract_onnx::prelude::*;

/// The repository's `examples/` folder.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The spec's model with its default initialisation, except that every tensor initialised to a
/// constant (BatchNorm's and LayerNorm's scales and shifts, running statistics) is drawn at
/// random (running variances log-normal, so positive): exported statistics and affine
/// parameters must not be the trivial 0 and 1 that would hide a mix-up.
fn random_model(spec: &ModelSpec, seed: u64) -> (strata_nn::Sequential, StateDict) {
    let model = spec.build().expect("builds");
    let mut g = Generator::new(seed);
    let mut sd = StateDict::new();
    for (key, t) in model.state_dict().iter() {
        let v = t.to_vec_f64();
        if !t.dtype().is_float() || v.iter().any(|x| *x != v[0]) {
            sd.insert(key, t.clone());
            continue;
        }
        let r = Tensor::randn(t.dims(), 0.0, 0.5, t.dtype(), &mut g).expect("randn");
        let r = if key.ends_with("running_var") { r.exp().unwrap() } else { r };
        sd.insert(key, r);
    }
    model.load_state_dict(&sd, true).expect("loads");
    model.eval();
    (model, sd)
}

/// Runs the exported bytes with tract on `x` ([batch, *sample], f32 or f64); the output as f64.
fn run_tract(bytes: &[u8], x: &Tensor) -> Vec<f64> {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model");
    let shape = x.dims().to_vec();
    let input: tract_onnx::prelude::Tensor = match x.dtype() {
        DType::F64 => tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec::<f64>().unwrap()).unwrap().into(),
        _ => tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec::<f32>().unwrap()).unwrap().into(),
    };
    let out = plan.run(tvec!(input.into())).expect("tract runs the model");
    let out = out[0].cast_to::<f64>().expect("a float output");
    out.to_array_view::<f64>().unwrap().iter().copied().collect()
}

/// Exports `spec` with random weights and compares tract's outputs with strata's at batch 3
/// and batch 1: `|tract − strata| ≤ 1e-5 · max(|strata|, 1)` element-wise.
fn check_against_tract(spec: &ModelSpec, seed: u64) {
    for (batch, bytes, x, want) in export_and_run(spec, seed) {
        let want = want.to_vec_f64();
        let got = run_tract(&bytes, &x);
        assert_eq!(got.len(), want.len(), "{} batch {batch}: output sizes differ", spec.name);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{} batch {batch}: element {i}: tract {a}, strata {b}",
                spec.name
            );
        }
    }
}

/// Exports `spec` with random weights and runs strata on a random input at batch 3 and 1:
/// `(batch, onnx bytes, input, strata's output)`. With `STRATA_ONNX_DUMP=DIR` it also writes
/// DIR/NAME.onnx and DIR/NAME.io.safetensors (`input`, strata's `output`, batch 3) for
/// `tools/check_onnx.py` (the ONNX checker and ONNX Runtime).
fn export_and_run(spec: &ModelSpec, seed: u64) -> Vec<(usize, Vec<u8>, Tensor, Tensor)> {
    let (model, sd) = random_model(spec, seed);
    let bytes = onnx::to_bytes(spec, &sd, &[]).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    let sample = spec.input.clone().expect("input shape");
    let mut g = Generator::new(seed + 1000);
    let runs: Vec<_> = [3, 1]
        .into_iter()
        .map(|batch| {
            let shape: Vec<usize> = std::iter::once(batch).chain(sample.iter().copied()).collect();
            let x = Tensor::randn(&shape, 0.0, 1.0, spec.dtype, &mut g).unwrap();
            let want = model.forward(&x).unwrap();
            (batch, bytes.clone(), x, want)
        })
        .collect();
    if let Some(dir) = std::env::var_os("STRATA_ONNX_DUMP").map(PathBuf::from) {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}.onnx", spec.name)), &bytes).unwrap();
        let mut io = StateDict::new();
        io.insert("input", runs[0].2.clone());
        io.insert("output", runs[0].3.clone());
        io.save(dir.join(format!("{}.io.safetensors", spec.name))).unwrap();
    }
    runs
}

/// The example model files the exporter supports, and those it refuses (with the layer kind).
const EXPORTABLE: &[&str] = &[
    "inception_mlp.toml",
    "init_choices.toml",
    "mlp_inferred.toml",
    "residual_mlp.toml",
    "resnet_mnist_model.toml",
    "simple_nn.toml",
    "split_devices.toml",
];
const REFUSED: &[(&str, &str)] = &[("embedding_lstm.toml", "Embedding"), ("lstm_mnist_model.toml", "LSTM")];

#[test]
fn every_example_model_exports_or_is_refused_by_name() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Model files have layers; run files point at them; broken_* are the checker's exercises.
        if !name.ends_with(".toml") || name.starts_with("broken") || !text.contains("layers") {
            continue;
        }
        seen.push(name.clone());
        let spec = load_model(&path).unwrap().without_placement();
        if EXPORTABLE.contains(&name.as_str()) {
            check_against_tract(&spec, 7);
        } else {
            let (_, kind) = REFUSED
                .iter()
                .find(|(f, _)| *f == name)
                .unwrap_or_else(|| panic!("{name}: a new example model; add it to EXPORTABLE or REFUSED in this test"));
            let sd = spec.build().unwrap().state_dict();
            match onnx::export(&spec, &sd, &[]) {
                Err(Error::OnnxExport { kind: k, .. }) if k == *kind => {}
                Err(Error::OnnxModel(m)) if m.contains(kind) => {}
                other => panic!("{name}: expected a refusal naming {kind}, got {other:?}"),
            }
        }
    }
    seen.sort();
    let mut expected: Vec<String> =
        EXPORTABLE.iter().map(|s| s.to_string()).chain(REFUSED.iter().map(|(s, _)| s.to_string())).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn conv_pool_and_norm_options_match_tract() {
    // Stride, padding, dilation, groups, no bias; "same" padding with an even kernel (the odd
    // element on the right and bottom); BatchNorm2d with random running statistics; pools
    // (MaxPool2d's dilation is exported but not here: tract 0.22 ignores MaxPool's dilations).
    let mut strided = ConvSpec::new(Some(4), 6, (3, 3));
    (strided.stride, strided.padding, strided.dilation, strided.groups, strided.bias) =
        ((2, 1), (1, 2), (1, 2), 2, false);
    let mut same = ConvSpec::new(Some(6), 4, (2, 4));
    same.padding_same = true;
    let mut mp = strata_core::MaxPool2dOptions::new((3, 3));
    (mp.stride, mp.padding, mp.ceil_mode) = ((2, 2), (1, 1), true);
    let mut ap = strata_core::AvgPool2dOptions::new((3, 3));
    // ceil_mode with count_include_pad = false: the overhanging window averages what it covers.
    (ap.stride, ap.padding, ap.count_include_pad, ap.ceil_mode) = ((2, 2), (1, 1), false, true);
    let mut ap_incl = strata_core::AvgPool2dOptions::new((2, 2));
    ap_incl.padding = (1, 1);
    let spec = ModelSpec::new("convs")
        .input(&[4, 11, 13])
        .layer("c1", LayerSpec::Conv2d(strided))
        .batch_norm2d("bn", None)
        .layer("", LayerSpec::LeakyReLU { negative_slope: 0.1 })
        .layer("c2", LayerSpec::Conv2d(same))
        .layer("mp", LayerSpec::MaxPool2d(mp))
        .layer("ap", LayerSpec::AvgPool2d(ap))
        .layer("ap2", LayerSpec::AvgPool2d(ap_incl))
        .layer("", LayerSpec::ELU { alpha: 0.7 })
        .layer("pool", LayerSpec::AdaptiveAvgPool2d { output_size: (1, 1) })
        .flatten()
        .lazy_linear("fc", 5)
        .layer("", LayerSpec::LogSoftmax { dim: 1 });
    check_against_tract(&spec, 1);
}

#[test]
fn reflect_and_replicate_padding_match_tract() {
    // A Pad node before the Conv: asymmetric padding, and "same" with an even kernel.
    let mut reflect = ConvSpec::new(Some(2), 3, (3, 3));
    (reflect.padding_mode, reflect.padding, reflect.stride) = (PaddingMode::Reflect, (1, 2), (2, 1));
    let mut replicate = ConvSpec::new(Some(3), 2, (2, 4));
    (replicate.padding_mode, replicate.padding_same) = (PaddingMode::Replicate, true);
    let spec = ModelSpec::new("padding_modes")
        .input(&[2, 7, 6])
        .layer("reflect", LayerSpec::Conv2d(reflect))
        .layer("replicate", LayerSpec::Conv2d(replicate));
    check_against_tract(&spec, 8);
}

/// The pool node of a one-layer export and its attribute `name`'s value(s).
fn attribute(spec: &ModelSpec, name: &str) -> (String, Vec<i64>) {
    let bytes = export_and_run(spec, 6).swap_remove(0).1;
    let node = onnx::decode(&bytes).unwrap().graph.unwrap().node.swap_remove(0);
    let a = node.attribute.iter().find(|a| a.name == name).unwrap();
    (node.op_type, if a.ints.is_empty() { vec![a.i] } else { a.ints.clone() })
}

#[test]
fn options_tract_runs_differently_are_written() {
    // tract 0.22 ignores MaxPool's `dilations`, and divides an AveragePool window that
    // ceil_mode lets hang over the input by the whole kernel with count_include_pad; ONNX
    // Runtime agrees with strata (and PyTorch) on both, so these exports are checked for their
    // attributes here and numerically by tools/check_onnx.py, not against tract.
    let mut mp = strata_core::MaxPool2dOptions::new((2, 2));
    (mp.dilation, mp.stride) = ((1, 2), (1, 1));
    let spec = ModelSpec::new("dilated_max_pool").input(&[2, 5, 6]).layer("mp", LayerSpec::MaxPool2d(mp));
    assert_eq!(attribute(&spec, "dilations"), ("MaxPool".into(), vec![1, 2]));
    for (pad, name) in [(1, "avg_ceil_padded"), (0, "avg_ceil_unpadded")] {
        let mut ap = strata_core::AvgPool2dOptions::new((3, 3));
        (ap.stride, ap.padding, ap.ceil_mode) = ((2, 2), (pad, pad), true);
        let spec = ModelSpec::new(name).input(&[2, 8, 7]).layer("ap", LayerSpec::AvgPool2d(ap));
        assert_eq!(attribute(&spec, "ceil_mode"), ("AveragePool".into(), vec![1]));
    }
}

#[test]
fn activations_norms_and_branches_match_tract() {
    let mut bn = BatchNormSpec::new(Some(6));
    bn.affine = false;
    let branch = |out: usize| ModelSpec::new("b").lazy_linear("fc", out).layer("", LayerSpec::Sigmoid);
    let spec = ModelSpec::new("mix")
        .input(&[5])
        .linear("fc1", 5, 6)
        .layer("bn", LayerSpec::BatchNorm1d(bn))
        .layer("", LayerSpec::GELU { approximate: GeluApproximate::None })
        .layer("drop", LayerSpec::Dropout { p: 0.5 })
        .layer_norm("ln", &[6])
        .layer("", LayerSpec::GELU { approximate: GeluApproximate::Tanh })
        .concat_branches("cat", vec![branch(3), branch(4), ModelSpec::new("id")], 1)
        .add_branches("sum", vec![branch(13), ModelSpec::new("id")])
        .residual_projection(
            "res",
            ModelSpec::new("body").lazy_linear("fc", 4).layer("", LayerSpec::Tanh),
            ModelSpec::new("s").lazy_linear("proj", 4),
        )
        .layer("ln2", LayerSpec::LayerNorm { normalized_shape: vec![4], eps: 1e-3, elementwise_affine: false })
        .layer("", LayerSpec::Softmax { dim: -1 });
    check_against_tract(&spec, 2);
}

#[test]
fn a_linear_on_a_sequence_and_a_partial_flatten() {
    // Linear on [N, 3, 4] (MatMul, not Gemm); Flatten over all but the batch after it.
    let spec = ModelSpec::new("seq")
        .input(&[3, 4])
        .layer("fc", LayerSpec::Linear { in_features: Some(4), out_features: 2, bias: true })
        .layer("fc_nb", LayerSpec::Linear { in_features: Some(2), out_features: 5, bias: false })
        .relu()
        .flatten()
        .linear("out", 15, 2);
    check_against_tract(&spec, 3);
}

#[test]
fn a_double_precision_model_exports_as_double() {
    // tract 0.22 cannot run an f64 Gemm (its expansion multiplies by an f32 `beta`), so the
    // values are checked by tools/check_onnx.py (ONNX Runtime) and the types here.
    let spec = ModelSpec::new("f64")
        .input(&[6])
        .dtype(DType::F64)
        .linear("fc1", 6, 5)
        .relu()
        .layer_norm("ln", &[5])
        .linear("fc2", 5, 3);
    let bytes = export_and_run(&spec, 10).swap_remove(0).1;
    let graph = onnx::decode(&bytes).unwrap().graph.unwrap();
    let elem = |v: &onnx::proto::ValueInfoProto| v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap().elem_type;
    assert_eq!((elem(&graph.input[0]), elem(&graph.output[0])), (onnx::proto::DOUBLE, onnx::proto::DOUBLE));
    assert!(graph.initializer.iter().all(|t| t.data_type == onnx::proto::DOUBLE && t.raw_data.len() % 8 == 0));
}

#[test]
fn a_model_ending_in_dropout_still_has_an_output() {
    let spec = ModelSpec::new("d").input(&[3]).linear("fc", 3, 2).layer("drop", LayerSpec::Dropout { p: 0.1 });
    check_against_tract(&spec, 4);
    let spec = ModelSpec::new("empty").input(&[3]).layer("drop", LayerSpec::Dropout { p: 0.1 });
    check_against_tract(&spec, 5);
}

#[test]
fn the_graph_keeps_names_metadata_and_a_symbolic_batch() {
    let spec = parse_model(
        "name = \"m\"\ninput = [4]\nlayers = [{ name = \"fc1\", type = \"Linear\", out_features = 3 }, { type = \"ReLU\" }]\n",
        "m.toml",
        "m",
    )
    .unwrap();
    let sd = spec.build().unwrap().state_dict();
    let meta = vec![("strata.mean".to_string(), "[0.1307]".to_string())];
    let m = onnx::export(&spec, &sd, &meta).unwrap();
    assert_eq!((m.ir_version, m.opset_import[0].version), (onnx::IR_VERSION, onnx::OPSET));
    assert_eq!(m.metadata_props[0].key, "strata.mean");
    let graph = m.graph.unwrap();
    let nodes: Vec<(&str, &str)> = graph.node.iter().map(|n| (n.name.as_str(), n.op_type.as_str())).collect();
    assert_eq!(nodes, [("fc1", "Gemm"), ("1", "Relu")]);
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(inits, ["fc1.weight", "fc1.bias"]);
    let dim0 = &graph.input[0].r#type.as_ref().unwrap().tensor_type.as_ref().unwrap().shape.as_ref().unwrap().dim[0];
    assert_eq!(dim0.value, Some(onnx::proto::DimensionValue::DimParam("batch".into())));
}

#[test]
fn layers_that_cannot_be_exported_are_errors_naming_them() {
    let mut circular = ConvSpec::new(Some(1), 2, (3, 3));
    (circular.padding_mode, circular.padding) = (PaddingMode::Circular, (1, 1));
    let cases = [
        ModelSpec::new("m")
            .input(&[1, 6, 6])
            .block("features", ModelSpec::new("f").layer("conv", LayerSpec::Conv2d(circular))),
        ModelSpec::new("m").input(&[2, 5, 5]).layer("pool", LayerSpec::AdaptiveAvgPool2d { output_size: (2, 2) }),
        ModelSpec::new("m").input(&[2, 3, 4]).layer("fl", LayerSpec::Flatten { start_dim: 2, end_dim: 3 }),
        ModelSpec::new("m").input(&[2]).layer(
            "bn",
            LayerSpec::BatchNorm1d(BatchNormSpec { track_running_stats: false, ..BatchNormSpec::new(Some(2)) }),
        ),
        load_model(&examples().join("lstm_mnist_model.toml")).unwrap(),
        ModelSpec::new("m"),
    ];
    let messages: Vec<String> = cases
        .iter()
        .map(|spec| {
            let sd = spec.build().unwrap().state_dict();
            onnx::export(spec, &sd, &[]).unwrap_err().to_string()
        })
        .collect();
    insta::assert_snapshot!(messages.join("\n"));
}
