//! Property-based fuzzing of ONNX import: `.onnx` files come from anywhere, so a damaged or
//! hostile file must give an error, never a panic or a hang. Two mutators: raw byte edits of
//! the committed fixtures (the protobuf decoder's side), and structural edits of the decoded
//! graph (attributes, dims, op types, inputs and initializers changed: the importer's side).

use proptest::prelude::*;
use prost::Message;
use std::path::Path;
use std::time::{Duration, Instant};
use strata_nn::onnx::import::{from_bytes, import};
use strata_nn::onnx::proto::{DimensionValue, ModelProto};

const FIXTURES: [&str; 4] = ["simple_nn", "resnet", "lstm", "gru"];

fn fixture(k: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/onnx_import/{}.onnx", FIXTURES[k]));
    std::fs::read(path).expect("fixture")
}

/// One structural edit of a decoded model, chosen by `op` and placed by `at`; `v` is the new
/// value (small, negative, zero or huge).
fn mutate(model: &mut ModelProto, op: u8, at: usize, v: i64) {
    let Some(g) = model.graph.as_mut() else { return };
    match op % 9 {
        0 if !g.node.is_empty() => {
            let n = at % g.node.len();
            g.node.remove(n);
        }
        1 if !g.node.is_empty() => {
            let n = at % g.node.len();
            if let Some(a) = g.node[n].attribute.first_mut() {
                a.i = v;
                for x in a.ints.iter_mut() {
                    *x = v;
                }
            }
        }
        2 if !g.node.is_empty() => {
            let n = at % g.node.len();
            const OPS: [&str; 8] = ["Relu", "Gemm", "Conv", "Reshape", "LSTM", "Add", "Gather", "Concat"];
            g.node[n].op_type = OPS[v.unsigned_abs() as usize % OPS.len()].into();
        }
        3 if !g.initializer.is_empty() => {
            let n = at % g.initializer.len();
            if let Some(d) = g.initializer[n].dims.first_mut() {
                *d = v;
            }
        }
        4 if !g.initializer.is_empty() => {
            let n = at % g.initializer.len();
            let t = &mut g.initializer[n];
            let keep = (v.unsigned_abs() as usize) % (t.raw_data.len() + 1);
            t.raw_data.truncate(keep);
        }
        5 if !g.node.is_empty() => {
            let n = at % g.node.len();
            if let Some(i) = g.node[n].input.first_mut() {
                *i = format!("missing_{v}");
            }
        }
        6 => {
            for input in &mut g.input {
                let dims = input.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()).and_then(|t| t.shape.as_mut());
                if let Some(shape) = dims
                    && !shape.dim.is_empty()
                {
                    let n = at % shape.dim.len();
                    let d = &mut shape.dim[n];
                    d.value = Some(DimensionValue::DimValue(v));
                }
            }
        }
        7 if !g.initializer.is_empty() => {
            let n = at % g.initializer.len();
            g.initializer[n].data_type = (v % 20) as i32;
        }
        8 if g.node.len() > 1 => {
            // A cycle or a dangling read: a node takes a later node's output.
            let n = at % g.node.len();
            let later = g.node[(n + 1 + (v.unsigned_abs() as usize)) % g.node.len()].output.first().cloned();
            if let (Some(o), Some(i)) = (later, g.node[n].input.first_mut()) {
                *i = o;
            }
        }
        _ => {}
    }
}

fn value() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..40, Just(0), Just(-1), Just(i64::MAX), Just(i64::MIN), Just(1 << 40), Just(1 << 31)]
}

/// 96 cases per property in CI; `PROPTEST_CASES=20000` runs a deeper search by hand.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Byte edits and truncations of a fixture: an error or a model, never a panic.
    #[test]
    fn damaged_bytes_are_errors_not_panics(
        k in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<Option<usize>>(),
    ) {
        let mut bytes = fixture(k);
        for (at, b) in edits {
            let n = at % bytes.len();
            bytes[n] = b;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        let start = Instant::now();
        let _ = from_bytes(&bytes, "fuzz");
        prop_assert!(start.elapsed() < Duration::from_secs(20), "import took {:?}", start.elapsed());
    }

    /// Structural edits of a decoded fixture: an error or a model, never a panic or a hang.
    #[test]
    fn damaged_graphs_are_errors_not_panics(
        k in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), value()), 1..4),
    ) {
        let mut model = ModelProto::decode(fixture(k).as_slice()).unwrap();
        for (op, at, v) in edits {
            mutate(&mut model, op, at, v);
        }
        let start = Instant::now();
        let _ = import(&model, "fuzz");
        prop_assert!(start.elapsed() < Duration::from_secs(20), "import took {:?}", start.elapsed());
    }
}

/// `simple_nn.onnx` with `pre` put before its nodes (they compute constants that nothing reads,
/// which the importer still evaluates).
fn simple_nn_with(pre: Vec<strata_nn::onnx::proto::NodeProto>) -> Vec<u8> {
    let mut model = ModelProto::decode(fixture(0).as_slice()).unwrap();
    let g = model.graph.as_mut().unwrap();
    let mut nodes = pre;
    nodes.append(&mut g.node);
    g.node = nodes;
    model.encode_to_vec()
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<strata_nn::onnx::proto::AttributeProto>,
) -> strata_nn::onnx::proto::NodeProto {
    strata_nn::onnx::proto::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> strata_nn::onnx::proto::AttributeProto {
    strata_nn::onnx::proto::AttributeProto {
        name: name.into(),
        r#type: strata_nn::onnx::proto::attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// The error of importing `bytes`, which must fail.
fn import_error(bytes: &[u8]) -> String {
    match from_bytes(bytes, "fuzz") {
        Ok(_) => panic!("the damaged model imported"),
        Err(e) => e.to_string(),
    }
}

/// A Squeeze (or Unsqueeze) of a constant naming one axis twice: an error. The Squeeze panicked
/// removing the same dimension twice ("removal index (is 0) should be < len (is 0)"), and an
/// Unsqueeze of a scalar with axes [1, 1] inserted past the end.
#[test]
fn squeeze_of_a_constant_with_a_repeated_axis_is_an_error() {
    for (op, shape, axes) in [("Squeeze", vec![1, 1], vec![0, 0]), ("Unsqueeze", vec![], vec![1, 1])] {
        let pre = vec![
            node("Constant", &[], "c", vec![ints_attr("value_ints", &[0; 1])]),
            node("Reshape", &["c", "shape"], "r", vec![]),
            node(op, &["r"], "s", vec![ints_attr("axes", &axes)]),
        ];
        let mut pre = pre;
        // `shape`: the target of the Reshape ([1, 1] or a scalar's []).
        pre.insert(0, node("Constant", &[], "shape", vec![ints_attr("value_ints", &shape)]));
        let e = import_error(&simple_nn_with(pre));
        assert!(e.contains(&format!("axes {axes:?} name an axis twice")), "{op}: {e}");
    }
}

/// A Transpose of a constant whose `perm` is not a permutation of its axes: an error (it
/// indexed past the constant's values).
#[test]
fn transpose_of_a_constant_with_a_repeated_axis_is_an_error() {
    let pre = vec![
        node("Constant", &[], "c", vec![ints_attr("value_ints", &[1, 2, 3, 4, 5, 6])]),
        node("Constant", &[], "shape", vec![ints_attr("value_ints", &[2, 3])]),
        node("Reshape", &["c", "shape"], "r", vec![]),
        node("Transpose", &["r"], "t", vec![ints_attr("perm", &[0, 0])]),
    ];
    let e = import_error(&simple_nn_with(pre));
    assert!(e.contains("perm [0, 0] is not a permutation of the 2 axes"), "{e}");
}

/// Nodes that copy a stored weight over and over (here 200 Identity nodes of fc1's 100,352
/// values, 160 MB as the importer holds them) or a Concat of a list with itself, doubled again
/// and again, are refused once they make far more values than the file stores; each would
/// otherwise take memory without bound (40 doublings: 2^42 values) from a few bytes of graph.
#[test]
fn graphs_computing_far_more_than_they_store_are_refused() {
    let pre = (0..200).map(|i| node("Identity", &["fc1.weight"], &format!("copy{i}"), vec![])).collect();
    let e = import_error(&simple_nn_with(pre));
    assert!(e.contains("strata refuses graphs that copy or compute far more than they store"), "{e}");
    let mut pre = vec![node("Constant", &[], "c0", vec![ints_attr("value_ints", &[1; 1 << 16])])];
    pre.extend((0..40).map(|i| node("Concat", &[&format!("c{i}"), &format!("c{i}")], &format!("c{}", i + 1), vec![])));
    let start = Instant::now();
    let e = import_error(&simple_nn_with(pre));
    assert!(e.contains("far more than they store") || e.contains("values strata computes"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
}

/// A Conv whose weight does not take the input's channels (the input's dimension 1 damaged to
/// 2^20): an error naming both, before the model is built. The model was built first, with a
/// weight of 2^20 input channels, taking seconds and 300 MB before the weights were found not
/// to fit (and more with a larger dimension).
#[test]
fn a_conv_weight_that_does_not_take_the_inputs_channels_is_an_error() {
    let mut model = ModelProto::decode(fixture(1).as_slice()).unwrap();
    let input = &mut model.graph.as_mut().unwrap().input[0];
    let shape = input.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap().shape.as_mut().unwrap();
    shape.dim[1].value = Some(DimensionValue::DimValue(1 << 20));
    let e = import_error(&model.encode_to_vec());
    assert!(e.contains("takes 1 input channels in 1 group(s), its input [N, 1048576, 28, 28] has 1048576"), "{e}");
}

/// A BatchNormalization straight after an input of 2^20 channels with statistics for 4: refused
/// before the model (4 × 2^20 values) is built, not after.
#[test]
fn layers_needing_more_values_than_the_file_holds_are_refused_before_building() {
    let mut model = ModelProto::decode(fixture(0).as_slice()).unwrap();
    let g = model.graph.as_mut().unwrap();
    let input = g.input[0].name.clone();
    let shape = g.input[0].r#type.as_mut().unwrap().tensor_type.as_mut().unwrap().shape.as_mut().unwrap();
    shape.dim[1].value = Some(DimensionValue::DimValue(1 << 20));
    let stat = |name: &str, v: f32| strata_nn::onnx::proto::TensorProto {
        name: name.into(),
        dims: vec![4],
        data_type: strata_nn::onnx::proto::FLOAT,
        raw_data: v.to_le_bytes().repeat(4),
        ..Default::default()
    };
    g.initializer =
        vec![stat("bn.weight", 1.0), stat("bn.bias", 0.0), stat("bn.running_mean", 0.0), stat("bn.running_var", 1.0)];
    let out = g.output[0].name.clone();
    g.node = vec![node(
        "BatchNormalization",
        &[&input, "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
        &out,
        vec![],
    )];
    let e = import_error(&model.encode_to_vec());
    assert!(e.contains("need 4194304 parameter and buffer values, its initializers hold 17"), "{e}");
}

/// A Conv with a dilation of 2^62 (or a kernel of size 0): an error, not the overflow panic of
/// working out its "same" padding (`attempt to multiply with overflow` in debug builds).
#[test]
fn a_conv_with_a_huge_dilation_is_an_error_not_an_overflow() {
    let mut model = ModelProto::decode(fixture(1).as_slice()).unwrap();
    let g = model.graph.as_mut().unwrap();
    let conv = g.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
    conv.attribute.retain(|a| a.name != "dilations");
    conv.attribute.push(ints_attr("dilations", &[1 << 62, 1]));
    let _ = import_error(&model.encode_to_vec());
}
