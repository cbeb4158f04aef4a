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
