//! ONNX export checked by an independent runtime: every example model, the 248 random models
//! of the differential test (`tests/fixtures/differential/`, drawn from every layer kind) and a
//! set of small models covering each exported layer option are exported, run with tract-onnx
//! (a pure-Rust ONNX runtime) at batch 3 and batch 1 (the batch dimension is symbolic), and
//! compared with strata's own forward pass. Layers the exporter cannot express must be errors
//! naming them.

use std::path::{Path, PathBuf};
use strata_core::{DType, Generator, PaddingMode, Tensor};
use strata_nn::check::input_batch_dim;
use strata_nn::group_norm::GroupNormSpec;
use strata_nn::model_file::{load_model, parse_model};
use strata_nn::spec::{
    BatchNormSpec, ConvSpec, GeluApproximate, LayerSpec, ModelSpec, NamedLayer, RecurrentKind, RecurrentSpec,
};
use strata_nn::{Layer, Module, StateDict, onnx};
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

/// The exported bytes as tract's runnable plan (for any batch size: the batch is symbolic).
fn tract_plan(bytes: &[u8]) -> TypedRunnableModel<TypedModel> {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model")
}

/// Runs a tract plan on `x` ([batch, *sample], f32, f64 or i64 token ids); the output as f64.
fn run_tract(plan: &TypedRunnableModel<TypedModel>, x: &Tensor) -> Vec<f64> {
    let shape = x.dims().to_vec();
    let input: tract_onnx::prelude::Tensor = match x.dtype() {
        DType::F64 => tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec::<f64>().unwrap()).unwrap().into(),
        DType::I64 => tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec::<i64>().unwrap()).unwrap().into(),
        _ => tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec::<f32>().unwrap()).unwrap().into(),
    };
    let out = plan.run(tvec!(input.into())).expect("tract runs the model");
    let out = out[0].cast_to::<f64>().expect("a float output");
    out.to_array_view::<f64>().unwrap().iter().copied().collect()
}

/// Exports `spec` with random weights and compares tract's outputs with strata's at batch 3
/// and batch 1: `|tract − strata| ≤ 1e-5 · max(|strata|, 1)` element-wise.
fn check_against_tract(spec: &ModelSpec, seed: u64) {
    if let Err(e) = compare_with_tract(spec, seed) {
        panic!("{e}");
    }
}

/// [`check_against_tract`], the first difference as an error.
fn compare_with_tract(spec: &ModelSpec, seed: u64) -> Result<(), String> {
    let runs = export_and_run(spec, seed);
    // One plan for both batch sizes: the batch dimension is symbolic.
    let plan = tract_plan(&runs[0].1);
    for (batch, _, x, want) in runs {
        let want = want.to_vec_f64();
        let got = run_tract(&plan, &x);
        if got.len() != want.len() {
            return Err(format!("{} batch {batch}: output sizes differ", spec.name));
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if (a - b).abs() > 1e-5 * b.abs().max(1.0) {
                return Err(format!("{} batch {batch}: element {i}: tract {a}, strata {b}", spec.name));
            }
        }
    }
    Ok(())
}

/// Every layer of a chain, those inside blocks, residuals and branches included.
fn all_layers(layers: &[NamedLayer]) -> Vec<&LayerSpec> {
    let mut out = vec![];
    for l in layers {
        out.push(&l.spec);
        match &l.spec {
            LayerSpec::Sequential(inner) => out.extend(all_layers(inner)),
            LayerSpec::Residual { body, shortcut } => {
                out.extend(all_layers(body));
                out.extend(shortcut.iter().flat_map(|s| all_layers(s)));
            }
            LayerSpec::Branches { branches, .. } => out.extend(branches.iter().flat_map(|b| all_layers(b))),
            _ => {}
        }
    }
    out
}

/// A random input for `spec` at `batch`: `[batch, *input]` (`[T, batch, F]` for a model that
/// reads time-major sequences), N(0, 1) floats, or token ids below every Embedding's
/// `num_embeddings`.
fn random_input(spec: &ModelSpec, batch: usize, g: &mut Generator) -> Tensor {
    let sample = spec.input.clone().expect("input shape");
    let mut shape = sample.clone();
    shape.insert(input_batch_dim(spec, sample.len()), batch);
    if spec.input_dtype != DType::I64 {
        return Tensor::randn(&shape, 0.0, 1.0, spec.dtype, g).unwrap();
    }
    let vocab = all_layers(&spec.layers)
        .into_iter()
        .filter_map(|l| if let LayerSpec::Embedding { num_embeddings, .. } = l { Some(*num_embeddings) } else { None })
        .min()
        .expect("a token-id model has an Embedding");
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| g.below(vocab as u64) as i64).collect::<Vec<_>>(), &shape).unwrap()
}

/// Exports `spec` with random weights and runs strata on a random input at batch 3 and 1 (2
/// when a BatchNorm normalises with the batch's statistics, which one value per channel does not
/// have, in PyTorch as in strata): `(batch, onnx bytes, input, strata's output)`. With
/// `STRATA_ONNX_DUMP=DIR` it also writes DIR/NAME.onnx and DIR/NAME.io.safetensors (`input`
/// and strata's `output` at batch 3, `input_small` and `output_small` at the smaller batch)
/// for `tools/check_onnx.py` (the ONNX checker and ONNX Runtime).
fn export_and_run(spec: &ModelSpec, seed: u64) -> Vec<(usize, Vec<u8>, Tensor, Tensor)> {
    let (model, sd) = random_model(spec, seed);
    let bytes = onnx::to_bytes(spec, &sd, &[]).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    let mut g = Generator::new(seed + 1000);
    let batch_statistics = all_layers(&spec.layers)
        .into_iter()
        .any(|l| matches!(l, LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) if !b.track_running_stats));
    let runs: Vec<_> = [3, if batch_statistics { 2 } else { 1 }]
        .into_iter()
        .map(|batch| {
            let x = random_input(spec, batch, &mut g);
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
        io.insert("input_small", runs[1].2.clone());
        io.insert("output_small", runs[1].3.clone());
        io.save(dir.join(format!("{}.io.safetensors", spec.name))).unwrap();
    }
    runs
}

/// The example model files: every one exports.
const EXAMPLES: &[&str] = &[
    "conv1d_mnist_model.toml",
    "embedding_lstm.toml",
    "inception_mlp.toml",
    "init_choices.toml",
    "lstm_mnist_model.toml",
    "mlp_inferred.toml",
    "residual_mlp.toml",
    "resnet_mnist_model.toml",
    "simple_nn.toml",
    "split_devices.toml",
];

#[test]
fn every_example_model_exports_and_matches_tract() {
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
        check_against_tract(&spec, 7);
    }
    seen.sort();
    assert_eq!(seen, EXAMPLES, "a new example model: add it to EXAMPLES");
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

/// The 1-d CNN of `conv1d_model`: ONNX's 1-d Conv, 1-d Pads (reflect, replicate) and the
/// circular padding's Slice + Concat on the sequence axis, the 1-d pools.
#[test]
fn conv1d_matches_tract() {
    check_against_tract(&conv1d_model(), 9);
}

/// A 1-d CNN with every kind of padding: strided, "same" with an even kernel and reflect,
/// grouped replicate, circular, dilated without bias; then the three 1-d pools.
pub fn conv1d_model() -> ModelSpec {
    let conv = |i: usize, o: usize, k: usize, f: &dyn Fn(&mut ConvSpec)| {
        let mut c = ConvSpec::new_1d(Some(i), o, k);
        f(&mut c);
        LayerSpec::Conv1d(c)
    };
    ModelSpec::new("cnn1d")
        .input(&[3, 30])
        .layer("c1", conv(3, 8, 5, &|c| (c.stride, c.padding) = ((1, 2), (0, 2))))
        .relu()
        .layer("c2", conv(8, 8, 4, &|c| (c.padding_same, c.padding_mode) = (true, PaddingMode::Reflect)))
        .layer("c3", conv(8, 4, 3, &|c| (c.padding, c.padding_mode, c.groups) = ((0, 1), PaddingMode::Replicate, 4)))
        .layer("c4", conv(4, 4, 3, &|c| (c.padding, c.padding_mode) = ((0, 2), PaddingMode::Circular)))
        .layer("c5", conv(4, 2, 3, &|c| (c.dilation, c.bias) = ((1, 2), false)))
        .layer(
            "ap",
            LayerSpec::AvgPool1d(strata_nn::AvgPool1d::new(3).stride(1).padding(1).count_include_pad(false).options),
        )
        .layer("mp", LayerSpec::MaxPool1d(strata_nn::MaxPool1d::new(2).ceil_mode(true).options))
        // 7 → 3: windows of PyTorch's adaptive rule (Slice + ReduceMean).
        .layer("gap", LayerSpec::AdaptiveAvgPool1d { output_size: 3 })
        .flatten()
        .linear("fc", 6, 3)
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
        .layer("", LayerSpec::SiLU)
        .layer("", LayerSpec::Mish)
        .layer("", LayerSpec::Hardswish)
        .layer("", LayerSpec::Hardsigmoid)
        .layer("", LayerSpec::ReLU6)
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
fn what_cannot_be_exported_is_an_error_naming_it() {
    // Every layer kind exports; a model without an input shape has no graph input, and a weight
    // missing from the state_dict is named with its layer.
    let spec = ModelSpec::new("m").input(&[4]).linear("fc1", 4, 3).relu().linear("fc2", 3, 2);
    let mut partial = spec.build().unwrap().state_dict();
    drop(partial.split_prefix("fc2.bias"));
    let with = |s: &ModelSpec, sd: &StateDict| onnx::export(s, sd, &[]).unwrap_err().to_string();
    let messages = [with(&ModelSpec::new("m"), &StateDict::new()), with(&spec, &partial)];
    insta::assert_snapshot!(messages.join("\n"));
}

/// Why tract 0.22 cannot check `spec`'s export, if it cannot (ONNX Runtime checks those, through
/// `tools/check_onnx.py`).
fn tract_cannot(spec: &ModelSpec) -> Option<&'static str> {
    if spec.dtype == DType::F64 {
        return Some("f64 (run as f32 too): tract 0.22 runs Gemm and the recurrent ops in f32");
    }
    all_layers(&spec.layers).into_iter().find_map(|l| match l {
        LayerSpec::Recurrent(r) if r.kind == RecurrentKind::RnnRelu => {
            Some("RNN with relu: tract 0.22 ignores the RNN's activations and runs tanh")
        }
        LayerSpec::MaxPool2d(o) if o.dilation != (1, 1) => Some("dilated MaxPool2d: tract 0.22 ignores the dilations"),
        LayerSpec::AvgPool2d(o) if o.ceil_mode && o.count_include_pad => {
            Some("AvgPool2d ceil_mode with count_include_pad: tract 0.22 divides an overhanging window by the kernel")
        }
        _ => None,
    })
}

#[test]
fn the_random_models_of_the_differential_test_match_tract() {
    // Every layer kind, in random architectures (tools/make_random_models.py): each exported
    // with random weights and run by tract, except where tract_cannot says why (those are
    // exported here and checked by ONNX Runtime through STRATA_ONNX_DUMP; the f64 models also
    // as f32, below).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/differential");
    let cases: toml::Table = std::fs::read_to_string(dir.join("cases.toml")).unwrap().parse().unwrap();
    let (mut failures, mut skipped, mut checked) = (vec![], std::collections::BTreeMap::new(), 0);
    for (i, case) in cases["case"].as_array().unwrap().iter().enumerate() {
        let mut spec = load_model(&dir.join(case["model"].as_str().unwrap())).unwrap();
        if spec.input.is_none() {
            // Time-major models name no input: `input_shape` is [T, N, F].
            let mut shape: Vec<usize> =
                case["input_shape"].as_array().unwrap().iter().map(|d| d.as_integer().unwrap() as usize).collect();
            shape.remove(1);
            spec.input = Some(shape);
        }
        if let Err(e) = onnx::export(&spec, &spec.build().unwrap().state_dict(), &[]) {
            failures.push(format!("{}: {e}", spec.name));
            continue;
        }
        let mut specs = vec![spec.clone()];
        if spec.dtype == DType::F64 {
            // Neither runtime runs most f64 ops (tract computes in f32, ONNX Runtime has no
            // double Conv, Elu, Erf, AveragePool or recurrent kernels): the f64 graph must be
            // the f32 graph node for node, and the f32 model is run.
            let mut single = spec.clone().dtype(DType::F32);
            single.name.push_str("_as_f32");
            if single.input_dtype.is_float() {
                single.input_dtype = DType::F32;
            }
            let graph =
                |s: &ModelSpec| onnx::decode(&export_and_run(s, 100 + i as u64)[0].1).unwrap().graph.unwrap().node;
            if graph(&spec) != graph(&single) {
                failures.push(format!("{}: the f64 graph's nodes differ from the f32 graph's", spec.name));
            }
            specs.push(single);
        }
        for spec in specs {
            match tract_cannot(&spec) {
                Some(why) => {
                    export_and_run(&spec, 100 + i as u64);
                    *skipped.entry(why).or_insert(0) += 1;
                }
                None => {
                    checked += 1;
                    if let Err(e) = compare_with_tract(&spec, 100 + i as u64) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    println!("{checked} random models match tract; exported for ONNX Runtime only: {skipped:?}");
    assert!(failures.is_empty(), "{} models differ from tract:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 200, "only {checked} random models were checked against tract");
}

#[test]
fn recurrent_layers_and_last_step_match_tract() {
    // Batch-first: a bidirectional two-layer LSTM, a GRU without biases, a bidirectional RNN;
    // PyTorch's gate order and GRU's reset-after-projection must survive the conversion.
    let mut lstm = RecurrentSpec::new(RecurrentKind::Lstm, Some(5), 4);
    (lstm.num_layers, lstm.bidirectional, lstm.batch_first, lstm.dropout) = (2, true, true, 0.3);
    let mut gru = RecurrentSpec::new(RecurrentKind::Gru, None, 3);
    (gru.num_layers, gru.batch_first, gru.bias) = (2, true, false);
    let mut rnn = RecurrentSpec::new(RecurrentKind::RnnTanh, None, 6);
    (rnn.batch_first, rnn.bidirectional) = (true, true);
    let spec = ModelSpec::new("recurrent_batch_first")
        .input(&[7, 5])
        .layer("lstm", LayerSpec::Recurrent(lstm))
        .layer("gru", LayerSpec::Recurrent(gru))
        .layer("rnn", LayerSpec::Recurrent(rnn))
        .layer("last", LayerSpec::LastStep { batch_first: true })
        .lazy_linear("fc", 2);
    check_against_tract(&spec, 11);

    // Time-major ([T, N, F] input): a bidirectional GRU, an LSTM without biases, the last step.
    let mut gru = RecurrentSpec::new(RecurrentKind::Gru, Some(3), 4);
    gru.bidirectional = true;
    let mut lstm = RecurrentSpec::new(RecurrentKind::Lstm, None, 5);
    (lstm.bias, lstm.num_layers) = (false, 2);
    let spec = ModelSpec::new("recurrent_time_major")
        .input(&[6, 3])
        .layer("gru", LayerSpec::Recurrent(gru))
        .layer("lstm", LayerSpec::Recurrent(lstm))
        .layer("last", LayerSpec::LastStep { batch_first: false });
    check_against_tract(&spec, 12);

    // The whole sequence as the output: [N, T, D·H].
    let mut lstm = RecurrentSpec::new(RecurrentKind::Lstm, Some(2), 3);
    (lstm.batch_first, lstm.bidirectional) = (true, true);
    let spec = ModelSpec::new("recurrent_sequence").input(&[4, 2]).layer("lstm", LayerSpec::Recurrent(lstm));
    check_against_tract(&spec, 13);
    let graph = onnx::decode(&export_and_run(&spec, 13)[0].1).unwrap().graph.unwrap();
    let nodes: Vec<(&str, &str)> = graph.node.iter().map(|n| (n.name.as_str(), n.op_type.as_str())).collect();
    assert_eq!(
        nodes,
        [
            ("lstm/Transpose", "Transpose"),
            ("lstm/Shape", "Shape"),
            ("lstm/Slice", "Slice"),
            ("lstm/Concat", "Concat"),
            ("lstm/Expand", "Expand"),
            ("lstm", "LSTM"),
            ("lstm/Transpose_1", "Transpose"),
            ("lstm/Reshape", "Reshape"),
            ("lstm/Transpose_2", "Transpose")
        ]
    );
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let want = [
        "lstm/W_l0",
        "lstm/R_l0",
        "lstm/Slice/starts",
        "lstm/Slice/ends",
        "lstm/Slice/axes",
        "lstm/directions",
        "lstm/hidden_size",
        "lstm/zero",
        "lstm/B_l0",
        "lstm/shape",
    ];
    assert_eq!(inits, want);
}

#[test]
fn an_rnn_with_relu_says_so_for_onnx_runtime() {
    // tract 0.22 runs every ONNX RNN with tanh, whatever `activations` says: the attribute is
    // checked here, the numbers by tools/check_onnx.py (ONNX Runtime).
    let mut rnn = RecurrentSpec::new(RecurrentKind::RnnRelu, Some(3), 4);
    (rnn.batch_first, rnn.bidirectional, rnn.num_layers) = (true, true, 2);
    let spec = ModelSpec::new("rnn_relu").input(&[5, 3]).layer("rnn", LayerSpec::Recurrent(rnn));
    assert!(tract_cannot(&spec).is_some());
    let graph = onnx::decode(&export_and_run(&spec, 14)[0].1).unwrap().graph.unwrap();
    let rnns: Vec<_> = graph.node.iter().filter(|n| n.op_type == "RNN").collect();
    assert_eq!(rnns.len(), 2);
    for n in rnns {
        let a = n.attribute.iter().find(|a| a.name == "activations").unwrap();
        assert_eq!(a.strings, [b"Relu".to_vec(), b"Relu".to_vec()]);
    }
}

#[test]
fn embeddings_take_int64_token_ids() {
    // Token ids [N, 2, 3] flattened to [N, 6], looked up (padding_idx changes only training),
    // read by a GRU; the graph's input is int64, its output float.
    let spec = ModelSpec::new("embedding_gru")
        .input(&[2, 3])
        .input_dtype(DType::I64)
        .flatten()
        .layer("emb", LayerSpec::Embedding { num_embeddings: 11, embedding_dim: 4, padding_idx: Some(0) })
        .layer(
            "gru",
            LayerSpec::Recurrent(RecurrentSpec {
                batch_first: true,
                ..RecurrentSpec::new(RecurrentKind::Gru, None, 5)
            }),
        )
        .layer("last", LayerSpec::LastStep { batch_first: true })
        .lazy_linear("fc", 3);
    check_against_tract(&spec, 15);
    let graph = onnx::decode(&export_and_run(&spec, 15)[0].1).unwrap().graph.unwrap();
    let elem = |v: &onnx::proto::ValueInfoProto| v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap().elem_type;
    assert_eq!((elem(&graph.input[0]), elem(&graph.output[0])), (onnx::proto::INT64, onnx::proto::FLOAT));
    let gather = graph.node.iter().find(|n| n.name == "emb").unwrap();
    assert_eq!((gather.op_type.as_str(), gather.input[0].as_str()), ("Gather", "emb.weight"));
    // The embedding on [N, T] ids straight into a Linear over its vectors ([N, T, 4] → MatMul).
    let spec = ModelSpec::new("embedding_linear")
        .input(&[5])
        .input_dtype(DType::I64)
        .embedding("emb", 7, 4)
        .lazy_linear("fc", 2)
        .flatten();
    check_against_tract(&spec, 16);
}

#[test]
fn avg_pool_with_a_divisor_override_matches_tract() {
    // Window sums (a depthwise Conv of ones) over the divisor: with padding, and with ceil_mode
    // windows hanging over the bottom and right edges.
    let mut plain = strata_core::AvgPool2dOptions::new((3, 2));
    (plain.divisor_override, plain.padding) = (Some(5), (1, 1));
    let mut ceil = strata_core::AvgPool2dOptions::new((3, 3));
    (ceil.divisor_override, ceil.stride, ceil.ceil_mode) = (Some(4), (2, 2), true);
    let spec = ModelSpec::new("divisor_override")
        .input(&[2, 8, 7])
        .layer("pool", LayerSpec::AvgPool2d(plain))
        .layer("ceil", LayerSpec::AvgPool2d(ceil));
    check_against_tract(&spec, 22);
}

#[test]
fn batch_norm_without_running_statistics_uses_the_batchs() {
    // track_running_stats = false: each batch's mean and variance, in evaluation too (PyTorch's
    // rule), from ReduceMean over all but the channels; affine and not, on [N, C] and images.
    let mut bn2 = BatchNormSpec::new(Some(3));
    bn2.track_running_stats = false;
    let mut bn1 = BatchNormSpec::new(Some(4));
    (bn1.track_running_stats, bn1.affine, bn1.eps) = (false, false, 1e-3);
    let spec = ModelSpec::new("batch_statistics")
        .input(&[3, 4, 5])
        .layer("bn", LayerSpec::BatchNorm2d(bn2))
        .flatten()
        .lazy_linear("fc", 4)
        .layer("bn1", LayerSpec::BatchNorm1d(bn1));
    check_against_tract(&spec, 21);
}

#[test]
fn group_norm_matches_tract() {
    // On [N, C, H, W], on [N, C] and on [N, C, L], with and without the affine parameters.
    let spec = ModelSpec::new("group_norm")
        .input(&[6, 5, 4])
        .layer("gn1", GroupNormSpec::new(3, 6).to_spec())
        .layer("conv", LayerSpec::Conv2d(ConvSpec::new(Some(6), 4, (3, 3))))
        .layer("gn2", GroupNormSpec::new(2, 4).eps(1e-3).affine(false).to_spec())
        .layer("", LayerSpec::Flatten { start_dim: 2, end_dim: 3 })
        .layer("gn3", GroupNormSpec::new(4, 4).to_spec())
        .flatten()
        .lazy_linear("fc", 6)
        .layer("gn4", GroupNormSpec::new(2, 6).to_spec());
    check_against_tract(&spec, 17);
    let graph = onnx::decode(&export_and_run(&spec, 17)[0].1).unwrap().graph.unwrap();
    let gn1: Vec<&str> = graph.node.iter().filter(|n| n.name.starts_with("gn1")).map(|n| n.op_type.as_str()).collect();
    assert_eq!(gn1, ["Shape", "Reshape", "LayerNormalization", "Reshape", "Unsqueeze", "Unsqueeze", "Mul", "Add"]);
}

#[test]
fn circular_padding_matches_tract() {
    // Opset 17 has no Pad "wrap": Slice + Concat per spatial axis, then an unpadded Conv.
    let mut circular = ConvSpec::new(Some(2), 3, (3, 3));
    (circular.padding_mode, circular.padding, circular.stride) = (PaddingMode::Circular, (1, 2), (1, 2));
    let mut same = ConvSpec::new(Some(3), 2, (2, 4));
    (same.padding_mode, same.padding_same) = (PaddingMode::Circular, true);
    let spec = ModelSpec::new("circular_padding")
        .input(&[2, 5, 6])
        .block("features", ModelSpec::new("f").layer("conv", LayerSpec::Conv2d(circular)))
        .layer("same", LayerSpec::Conv2d(same));
    check_against_tract(&spec, 18);
}

#[test]
fn adaptive_pools_and_partial_flattens_match_tract() {
    // Windows that overlap (5 → 2, 7 → 3: Slice + ReduceMean), an output size that divides the
    // input (6 → 3: AveragePool), the input's own size (no node); Flattens of inner ranges.
    for (name, input, out) in [("adaptive_uneven", [2, 5, 7], (2, 3)), ("adaptive_mixed", [2, 6, 7], (3, 7))] {
        let spec = ModelSpec::new(name)
            .input(&input)
            .layer("pool", LayerSpec::AdaptiveAvgPool2d { output_size: out })
            .layer("fl", LayerSpec::Flatten { start_dim: 2, end_dim: 3 })
            .lazy_linear("fc", 2);
        check_against_tract(&spec, 19);
    }
    let spec = ModelSpec::new("partial_flatten")
        .input(&[2, 3, 4])
        .layer("fl", LayerSpec::Flatten { start_dim: 1, end_dim: 2 })
        .lazy_linear("fc", 3)
        .layer("fl2", LayerSpec::Flatten { start_dim: -2, end_dim: -1 });
    check_against_tract(&spec, 20);
}
