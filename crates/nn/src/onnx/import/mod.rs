//! ONNX import: a `ModelProto` as a strata [`ModelSpec`] (written as a model file with
//! [`crate::model_file::to_toml`]) and its weights as a state_dict in PyTorch's names and
//! layouts, for the graphs `torch.onnx.export` writes (opset 17, `dynamo=False`) and those
//! strata's own export writes.
//!
//! Read: `Gemm`, `MatMul` (+ `Add` of its bias) → `Linear`; `Conv` (2-d) → `Conv2d`;
//! `BatchNormalization` (inference) → `BatchNorm1d`/`BatchNorm2d`; `MaxPool`, `AveragePool`,
//! `GlobalAveragePool`; `LayerNormalization`; `Relu`, `Sigmoid`, `Tanh`, `LeakyRelu`, `Elu`,
//! `Softmax`, `LogSoftmax`; `Gelu`, also as opset 17 spells it out (`fuse.rs`); `Swish` with `alpha = 1` (SiLU), also as `Mul(x, Sigmoid(x))`; `Mish`, also as `Mul(x, Tanh(Softplus(x)))`; `HardSwish`; `Flatten` and a `Reshape` to `[N, features]`; `Gather` of a table
//! (Embedding) or of a sequence's last step (`LastStep`, also `Slice` + `Squeeze`); `LSTM`,
//! `GRU`, `RNN` with the transposes and squeezes torch writes around them (PyTorch's gate order
//! restored: ONNX's i, o, f, c → PyTorch's i, f, g, o); `Dropout` and `Identity` dropped; a
//! fork whose branches meet in an `Add` → `Residual`, in a `Sum` or `Concat` → branches.
//! Constants and shape arithmetic (`Shape`, `Gather`, `Concat`, `ConstantOfShape`, …) are
//! computed. Anything else is an error listing every node that does not fit
//! ([`crate::Error::OnnxImport`]).
//!
//! Names: a layer is named by its PyTorch module path, from its weights' initializer names
//! (`fc1.weight` → `fc1`) or from torch's node names (`/block1/body/body.0/Conv` →
//! `block1.body.0`); dotted paths become nested blocks. The state_dict keys are then
//! PyTorch's wherever the structures agree. What ONNX export folds cannot come back: torch
//! folds a BatchNorm that follows a Conv into the Conv's weights and bias.
//!
//! ```
//! use strata_nn::{Module, spec::ModelSpec, onnx};
//! let spec = ModelSpec::new("mlp").input(&[4]).linear("fc1", 4, 8).relu().linear("fc2", 8, 2);
//! let model = spec.build()?;
//! let bytes = onnx::to_bytes(&spec, &model.state_dict(), &[])?;
//! let imported = onnx::import::from_bytes(&bytes, "mlp")?;
//! assert_eq!(imported.spec, spec);
//! assert_eq!(imported.weights.keys().collect::<Vec<_>>(), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
//! # Ok::<(), strata_nn::Error>(())
//! ```

mod eval;
mod fuse;
mod graph;
mod tree;

use crate::onnx::proto::ModelProto;
use crate::spec::ModelSpec;
use crate::{Error, Module, Result, StateDict};
use prost::Message;
use strata_core::{DType, Tensor};

pub use eval::module_path;

/// An imported model: its spec, its weights and the ONNX model's metadata.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The model, with `input` set from the graph's input (its batch dimension dropped).
    pub spec: ModelSpec,
    /// Its parameters and buffers, keyed as `spec.build()?.state_dict()` is.
    pub weights: StateDict,
    /// The ONNX model's `metadata_props` (strata's export writes `strata.mean`, `strata.std`,
    /// `strata.classes` there).
    pub metadata: Vec<(String, String)>,
}

/// Graph names exporters give every model, which say nothing about it.
const GENERIC_NAMES: [&str; 3] = ["main_graph", "torch_jit", "torch-jit-export"];

/// Imports a decoded model; `default_name` names it when the graph's name is empty or
/// generic (torch's `main_graph`).
pub fn import(model: &ModelProto, default_name: &str) -> Result<Imported> {
    let Some(graph) = &model.graph else {
        return Err(Error::OnnxImportModel("the model has no graph".into()));
    };
    // GELU, SiLU and Mish written out in elementary ops (before opsets 20, 24, 18) read as one node.
    let nodes = fuse::fuse(graph);
    let ev = eval::evaluate(graph, &nodes)?;
    if !ev.errors.is_empty() {
        return Err(Error::OnnxImport(ev.errors));
    }
    let built = tree::build(&ev.dag).map_err(Error::OnnxImport)?;
    let name = if graph.name.is_empty() || GENERIC_NAMES.contains(&graph.name.as_str()) {
        default_name.to_string()
    } else {
        graph.name.clone()
    };
    let mut spec = ModelSpec::new(name).input(&ev.sample).input_dtype(ev.input_dtype).dtype(ev.dtype);
    spec.layers = built.layers;
    let report = spec.check(None).map_err(|r| Error::ShapeCheck(r.errors))?;
    // The model is built (its parameters allocated) only when the file holds the values for
    // them: a damaged graph can describe layers far larger than its initializers.
    let summary = crate::Summary::from_report(&report, 1);
    let needed = summary.total_params.saturating_add(summary.total_non_trainable);
    let held = built.params.iter().fold(0usize, |n, (_, a)| n.saturating_add(a.data.len()));
    if needed > held {
        return Err(Error::OnnxImportModel(format!(
            "the layers read from the graph need {needed} parameter and buffer values, its initializers hold {held}: the graph and its weights do not agree"
        )));
    }
    let mut weights = StateDict::new();
    for (key, a) in built.params {
        let t = if a.int {
            Tensor::from_vec(a.data.iter().map(|&v| v as i64).collect::<Vec<_>>(), &a.dims)?
        } else if ev.dtype == DType::F64 {
            Tensor::from_vec(a.data, &a.dims)?
        } else {
            Tensor::from_vec(a.data.iter().map(|&v| v as f32).collect::<Vec<_>>(), &a.dims)?
        };
        weights.insert(key, t);
    }
    // The weights must fit the model strata builds from the spec: a mismatch here is an
    // importer bug, reported as the state_dict error that names the keys.
    let built = spec.build()?;
    built.load_state_dict(&weights, true)?;
    let weights = built.state_dict();
    let metadata = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
    Ok(Imported { spec, weights, metadata })
}

/// Decodes the bytes of an `.onnx` file and imports the model (see [`import`]).
pub fn from_bytes(bytes: &[u8], default_name: &str) -> Result<Imported> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::OnnxImportModel(format!("not a valid ONNX model (protobuf): {e}")))?;
    import(&model, default_name)
}
