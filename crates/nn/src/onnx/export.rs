//! The walk from a model spec to an ONNX graph: each layer kind's nodes, the containers'
//! merges, the weights as initializers. Ranks are tracked along the chain (a Linear on a rank-3
//! input is a MatMul, not a Gemm; Flatten's axes are made absolute).

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type,
};
use crate::check::shape::{Dim, SymShape};
use crate::spec::{BatchNormSpec, ConvSpec, GeluApproximate, LayerSpec, Merge, ModelSpec, NamedLayer};
use crate::{Error, Result, StateDict};
use prost::Message;
use std::collections::HashSet;
use strata_core::{DType, PaddingMode};

/// The ONNX operator set the graphs use (17: `LayerNormalization`'s first).
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
pub const IR_VERSION: i64 = 8;

/// The model as ONNX: `spec` (checked with its own `input`, which it must have) with the
/// tensors of `weights` (a state_dict of the built model: `model.state_dict()`) as
/// initializers, and `metadata` as the model's `metadata_props` (strata's CLI writes
/// `strata.mean`, `strata.std` and `strata.classes` there).
pub fn export(spec: &ModelSpec, weights: &StateDict, metadata: &[(String, String)]) -> Result<ModelProto> {
    let Some(sample) = spec.input.clone() else {
        return Err(Error::OnnxModel(format!(
            "model `{}` has no input shape; add `input = [...]` (one sample's shape) to the model file",
            spec.name
        )));
    };
    let report = spec.check(None).map_err(|r| Error::ShapeCheck(r.errors))?;
    let elem = match spec.dtype {
        DType::F32 => super::proto::FLOAT,
        DType::F64 => super::proto::DOUBLE,
        other => return Err(Error::OnnxModel(format!("parameters of element type {other:?} cannot be exported"))),
    };
    if !spec.input_dtype.is_float() {
        return Err(Error::OnnxModel(
            "models taking token ids (input_dtype = \"i64\") cannot be exported yet: Embedding is not supported".into(),
        ));
    }
    let mut g = Graph {
        weights,
        elem,
        dtype: spec.dtype,
        nodes: vec![],
        inits: vec![],
        names: HashSet::from(["input".to_string(), "output".to_string()]),
    };
    let x = Value { name: "input".into(), rank: sample.len() + 1 };
    let y = g.chain(&report.resolved.layers, "", x)?;
    // The last value is the graph's `output` (an Identity when the chain is empty or ends in
    // layers that produce no node).
    let last_is_node_output = g.nodes.last().is_some_and(|n| n.output.first() == Some(&y.name));
    if last_is_node_output {
        g.nodes.last_mut().expect("checked").output[0] = "output".into();
    } else {
        g.node("Identity", "output", vec![y.name], vec![]);
        g.nodes.last_mut().expect("just pushed").output[0] = "output".into();
    }
    let out_shape = report.output.unwrap_or_else(|| SymShape(vec![Dim::Batch; y.rank]));
    let graph = GraphProto {
        node: g.nodes,
        name: spec.name.clone(),
        initializer: g.inits,
        input: vec![value_info("input", elem, &SymShape::batched(&sample))],
        output: vec![value_info("output", elem, &out_shape)],
        ..Default::default()
    };
    let metadata_props =
        metadata.iter().map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() }).collect();
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "strata".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    })
}

/// [`export`], encoded: the bytes of a `.onnx` file.
pub fn to_bytes(spec: &ModelSpec, weights: &StateDict, metadata: &[(String, String)]) -> Result<Vec<u8>> {
    Ok(export(spec, weights, metadata)?.encode_to_vec())
}

/// Reads an encoded ONNX model back (to inspect what [`to_bytes`] wrote: only the fields of
/// [`super::proto`] are kept).
pub fn decode(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| Error::OnnxModel(format!("not a valid ONNX model: {e}")))
}

/// A tensor's type and shape, the batch dimension symbolic.
fn value_info(name: &str, elem: i32, shape: &SymShape) -> ValueInfoProto {
    let dim = shape
        .0
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => DimensionValue::DimParam("batch".into()),
                Dim::Fixed(n) => DimensionValue::DimValue(*n as i64),
            }),
        })
        .collect();
    let tensor_type = TypeProtoTensor { elem_type: elem, shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto { name: name.into(), r#type: Some(TypeProto { tensor_type: Some(tensor_type) }) }
}

/// A value in the graph and its rank (batch dimension included).
#[derive(Clone, Debug)]
struct Value {
    name: String,
    rank: usize,
}

/// The graph under construction.
struct Graph<'a> {
    weights: &'a StateDict,
    elem: i32,
    dtype: DType,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    /// Node and value names taken.
    names: HashSet<String>,
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    let ints = values.iter().map(|&v| v as i64).collect();
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints, ..Default::default() }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i: value, ..Default::default() }
}

fn float(name: &str, value: f64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f: value as f32, ..Default::default() }
}

/// The error for a layer the exporter cannot express.
fn unsupported(path: &str, spec: &LayerSpec, reason: impl Into<String>) -> Error {
    Error::OnnxExport { path: path.to_string(), kind: spec.type_name().to_string(), reason: reason.into() }
}

impl Graph<'_> {
    /// A name not yet taken, `base` or `base_1`, `base_2`, ….
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while !self.names.insert(name.clone()) {
            k += 1;
            name = format!("{base}_{k}");
        }
        name
    }

    /// Appends node `op` named `name` (made unique) and returns its output's name.
    fn node(&mut self, op: &str, name: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let name = self.fresh(name);
        let output = self.fresh(&format!("{name}:0"));
        let node = NodeProto {
            input,
            output: vec![output.clone()],
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        };
        self.nodes.push(node);
        output
    }

    /// The state_dict tensor `key` as an initializer (added once); its name is the key.
    fn weight(&mut self, path: &str, spec: &LayerSpec, key: &str) -> Result<String> {
        if self.inits.iter().any(|t| t.name == key) {
            return Ok(key.to_string());
        }
        let Some(t) = self.weights.get(key) else {
            return Err(unsupported(path, spec, format!("the weights have no tensor `{key}`")));
        };
        let values = t.to_vec_f64();
        self.names.insert(key.to_string());
        self.push_init(key, t.dims(), &values);
        Ok(key.to_string())
    }

    /// A constant initializer named `name` (made unique) of the model's element type.
    fn constant(&mut self, name: &str, dims: &[usize], values: &[f64]) -> String {
        let name = self.fresh(name);
        self.push_init(&name, dims, values);
        name
    }

    /// A 1-d int64 initializer named `name` (made unique): Pad's `pads`.
    fn int64_constant(&mut self, name: &str, values: &[i64]) -> String {
        let name = self.fresh(name);
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = vec![values.len() as i64];
        self.inits.push(TensorProto { dims, data_type: super::proto::INT64, name: name.clone(), raw_data });
        name
    }

    fn push_init(&mut self, name: &str, dims: &[usize], values: &[f64]) {
        let raw_data: Vec<u8> = match self.dtype {
            DType::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        };
        let dims = dims.iter().map(|&d| d as i64).collect();
        self.inits.push(TensorProto { dims, data_type: self.elem, name: name.into(), raw_data });
    }

    /// The nodes of a chain applied to `x`; layer paths are `prefix` + name.
    fn chain(&mut self, layers: &[NamedLayer], prefix: &str, mut x: Value) -> Result<Value> {
        for l in layers {
            let path = format!("{prefix}{}", l.name);
            x = self.layer(&path, &l.spec, x)?;
        }
        Ok(x)
    }

    /// One layer's nodes.
    fn layer(&mut self, path: &str, spec: &LayerSpec, x: Value) -> Result<Value> {
        let rank = x.rank;
        let same = |name: String| Value { name, rank };
        let unary =
            |g: &mut Self, op: &str, attrs: Vec<AttributeProto>| same(g.node(op, path, vec![x.name.clone()], attrs));
        Ok(match spec {
            LayerSpec::Sequential(layers) => self.chain(layers, &format!("{path}."), x)?,
            LayerSpec::Residual { body, shortcut } => {
                let b = self.chain(body, &format!("{path}.body."), x.clone())?;
                let s = match shortcut {
                    Some(s) => self.chain(s, &format!("{path}.shortcut."), x)?,
                    None => x,
                };
                Value { name: self.node("Add", path, vec![b.name, s.name], vec![]), rank: b.rank }
            }
            LayerSpec::Branches { branches, merge } => {
                let mut outs = Vec::new();
                for (i, b) in branches.iter().enumerate() {
                    outs.push(self.chain(b, &format!("{path}.branches.{i}."), x.clone())?);
                }
                let rank = outs[0].rank;
                let names = outs.into_iter().map(|v| v.name).collect();
                match merge {
                    Merge::Add => Value { name: self.node("Sum", path, names, vec![]), rank },
                    Merge::Concat { dim } => {
                        Value { name: self.node("Concat", path, names, vec![int("axis", *dim as i64)]), rank }
                    }
                }
            }
            LayerSpec::Linear { bias, .. } => {
                let w = self.weight(path, spec, &format!("{path}.weight"))?;
                let b = if *bias { Some(self.weight(path, spec, &format!("{path}.bias"))?) } else { None };
                if rank == 2 {
                    // y = x·Wᵀ + b; x: [N, in], W: [out, in].
                    let inputs = std::iter::once(x.name).chain([w]).chain(b).collect();
                    same(self.node("Gemm", path, inputs, vec![int("transB", 1)]))
                } else {
                    // x: [N, *, in]: MatMul broadcasts over the leading dimensions.
                    let wt = self.node("Transpose", &format!("{path}/Transpose"), vec![w], vec![ints("perm", &[1, 0])]);
                    let y = self.node("MatMul", path, vec![x.name, wt], vec![]);
                    match b {
                        Some(b) => same(self.node("Add", &format!("{path}/Add"), vec![y, b], vec![])),
                        None => same(y),
                    }
                }
            }
            LayerSpec::ReLU => unary(self, "Relu", vec![]),
            LayerSpec::Sigmoid => unary(self, "Sigmoid", vec![]),
            LayerSpec::Tanh => unary(self, "Tanh", vec![]),
            LayerSpec::LeakyReLU { negative_slope } => unary(self, "LeakyRelu", vec![float("alpha", *negative_slope)]),
            LayerSpec::ELU { alpha } => unary(self, "Elu", vec![float("alpha", *alpha)]),
            LayerSpec::Softmax { dim } => unary(self, "Softmax", vec![int("axis", *dim as i64)]),
            LayerSpec::LogSoftmax { dim } => unary(self, "LogSoftmax", vec![int("axis", *dim as i64)]),
            LayerSpec::GELU { approximate } => same(self.gelu(path, *approximate, x.name)),
            // The identity in evaluation: no node.
            LayerSpec::Dropout { .. } => x,
            LayerSpec::Flatten { start_dim, end_dim } => {
                let abs = |d: isize| if d < 0 { d + rank as isize } else { d };
                let (s, e) = (abs(*start_dim), abs(*end_dim));
                if s == e {
                    x
                } else if s == 1 && e == rank as isize - 1 {
                    Value { name: self.node("Flatten", path, vec![x.name], vec![int("axis", 1)]), rank: 2 }
                } else {
                    return Err(unsupported(
                        path,
                        spec,
                        format!(
                            "only Flatten(start_dim=1, end_dim=-1) exports yet (this one flattens dimensions {s} to {e} of a rank-{rank} input)"
                        ),
                    ));
                }
            }
            LayerSpec::Conv2d(c) => same(self.conv(path, spec, c, x.name)?),
            LayerSpec::MaxPool2d(o) => unary(
                self,
                "MaxPool",
                vec![
                    ints("kernel_shape", &[o.kernel_size.0, o.kernel_size.1]),
                    ints("strides", &[o.stride.0, o.stride.1]),
                    ints("pads", &[o.padding.0, o.padding.1, o.padding.0, o.padding.1]),
                    ints("dilations", &[o.dilation.0, o.dilation.1]),
                    int("ceil_mode", o.ceil_mode as i64),
                ],
            ),
            LayerSpec::AvgPool2d(o) => {
                if o.divisor_override.is_some() {
                    return Err(unsupported(path, spec, "divisor_override has no ONNX AveragePool equivalent"));
                }
                // ceil_mode as PyTorch exports it: ONNX Runtime agrees with PyTorch on windows
                // hanging over the input (tract 0.22 does not with count_include_pad; see
                // tests/onnx_export.rs).
                unary(
                    self,
                    "AveragePool",
                    vec![
                        ints("kernel_shape", &[o.kernel_size.0, o.kernel_size.1]),
                        ints("strides", &[o.stride.0, o.stride.1]),
                        ints("pads", &[o.padding.0, o.padding.1, o.padding.0, o.padding.1]),
                        int("count_include_pad", o.count_include_pad as i64),
                        int("ceil_mode", o.ceil_mode as i64),
                    ],
                )
            }
            LayerSpec::AdaptiveAvgPool2d { output_size: (1, 1) } => unary(self, "GlobalAveragePool", vec![]),
            LayerSpec::AdaptiveAvgPool2d { .. } => {
                return Err(unsupported(path, spec, "only output_size = 1 (global average pooling) exports yet"));
            }
            LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => same(self.batch_norm(path, spec, b, x.name)?),
            LayerSpec::LayerNorm { normalized_shape, eps, elementwise_affine } => {
                let n: usize = normalized_shape.iter().product();
                let (scale, bias) = if *elementwise_affine {
                    (
                        self.weight(path, spec, &format!("{path}.weight"))?,
                        self.weight(path, spec, &format!("{path}.bias"))?,
                    )
                } else {
                    (
                        self.constant(&format!("{path}/ones"), normalized_shape, &vec![1.0; n]),
                        self.constant(&format!("{path}/zeros"), normalized_shape, &vec![0.0; n]),
                    )
                };
                let attrs = vec![int("axis", -(normalized_shape.len() as i64)), float("epsilon", *eps)];
                same(self.node("LayerNormalization", path, vec![x.name, scale, bias], attrs))
            }
            LayerSpec::Embedding { .. }
            | LayerSpec::Recurrent(_)
            | LayerSpec::LastStep { .. }
            | LayerSpec::Other(_) => {
                let reason = "the ONNX exporter does not support this layer kind yet; see README.md, \"Export to ONNX\", for the layers it does";
                return Err(unsupported(path, spec, reason));
            }
        })
    }

    /// GELU from elementary ops (opset 17 has no Gelu): `0.5·x·(1 + erf(x/√2))`, or with the
    /// tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    fn gelu(&mut self, path: &str, approximate: GeluApproximate, x: String) -> String {
        let c = |g: &mut Self, name: &str, v: f64| g.constant(&format!("{path}/{name}"), &[], &[v]);
        let inner = match approximate {
            GeluApproximate::None => {
                let sqrt2 = c(self, "sqrt2", std::f64::consts::SQRT_2);
                let d = self.node("Div", &format!("{path}/Div"), vec![x.clone(), sqrt2], vec![]);
                self.node("Erf", &format!("{path}/Erf"), vec![d], vec![])
            }
            GeluApproximate::Tanh => {
                let k = c(self, "k", 0.044715);
                let s = c(self, "sqrt_2_over_pi", (2.0 / std::f64::consts::PI).sqrt());
                let x2 = self.node("Mul", &format!("{path}/Mul"), vec![x.clone(), x.clone()], vec![]);
                let x3 = self.node("Mul", &format!("{path}/Mul"), vec![x2, x.clone()], vec![]);
                let kx3 = self.node("Mul", &format!("{path}/Mul"), vec![x3, k], vec![]);
                let sum = self.node("Add", &format!("{path}/Add"), vec![x.clone(), kx3], vec![]);
                let scaled = self.node("Mul", &format!("{path}/Mul"), vec![sum, s], vec![]);
                self.node("Tanh", &format!("{path}/Tanh"), vec![scaled], vec![])
            }
        };
        let one = c(self, "one", 1.0);
        let half = c(self, "half", 0.5);
        let p = self.node("Add", &format!("{path}/Add"), vec![inner, one], vec![]);
        let xp = self.node("Mul", &format!("{path}/Mul"), vec![x, p], vec![]);
        self.node("Mul", path, vec![xp, half], vec![])
    }

    /// `Conv` with PyTorch's padding (`"same"`: the odd element on the right and bottom).
    fn conv(&mut self, path: &str, spec: &LayerSpec, c: &ConvSpec, x: String) -> Result<String> {
        let mode = match c.padding_mode {
            PaddingMode::Zeros => None,
            PaddingMode::Reflect => Some("reflect"),
            PaddingMode::Replicate => Some("edge"),
            // ONNX's Pad wraps around ("wrap") only from opset 19.
            PaddingMode::Circular => {
                return Err(unsupported(
                    path,
                    spec,
                    "padding_mode = \"circular\" needs ONNX opset 19 (Pad mode \"wrap\"); strata exports opset 17",
                ));
            }
        };
        let (top, left, bottom, right) = if c.padding_same {
            let total_h = c.dilation.0 * (c.kernel_size.0 - 1);
            let total_w = c.dilation.1 * (c.kernel_size.1 - 1);
            (total_h / 2, total_w / 2, total_h - total_h / 2, total_w - total_w / 2)
        } else {
            (c.padding.0, c.padding.1, c.padding.0, c.padding.1)
        };
        // Other padding modes: a Pad node first (x: [N, C, H, W]; pads are all begins, then all
        // ends), then an unpadded Conv.
        let (x, (top, left, bottom, right)) = match mode {
            None => (x, (top, left, bottom, right)),
            Some(mode) => {
                let pads = [0, 0, top, left, 0, 0, bottom, right].map(|p| p as i64);
                let pads = self.int64_constant(&format!("{path}/pads"), &pads);
                let attr = AttributeProto {
                    name: "mode".into(),
                    r#type: attribute_type::STRING,
                    s: mode.as_bytes().to_vec(),
                    ..Default::default()
                };
                (self.node("Pad", &format!("{path}/Pad"), vec![x, pads], vec![attr]), (0, 0, 0, 0))
            }
        };
        let w = self.weight(path, spec, &format!("{path}.weight"))?;
        let mut inputs = vec![x, w];
        if c.bias {
            inputs.push(self.weight(path, spec, &format!("{path}.bias"))?);
        }
        let attrs = vec![
            ints("kernel_shape", &[c.kernel_size.0, c.kernel_size.1]),
            ints("strides", &[c.stride.0, c.stride.1]),
            ints("pads", &[top, left, bottom, right]),
            ints("dilations", &[c.dilation.0, c.dilation.1]),
            int("group", c.groups as i64),
        ];
        Ok(self.node("Conv", path, inputs, attrs))
    }

    /// `BatchNormalization` in inference mode, from the running statistics.
    fn batch_norm(&mut self, path: &str, spec: &LayerSpec, b: &BatchNormSpec, x: String) -> Result<String> {
        if !b.track_running_stats {
            return Err(unsupported(
                path,
                spec,
                "track_running_stats = false normalises with each batch's statistics even in evaluation, which ONNX's inference BatchNormalization cannot express",
            ));
        }
        let mean = self.weight(path, spec, &format!("{path}.running_mean"))?;
        let var = self.weight(path, spec, &format!("{path}.running_var"))?;
        let (scale, bias) = if b.affine {
            (self.weight(path, spec, &format!("{path}.weight"))?, self.weight(path, spec, &format!("{path}.bias"))?)
        } else {
            let c = self.weights.get(&mean).map_or(0, |t| t.numel());
            (
                self.constant(&format!("{path}/ones"), &[c], &vec![1.0; c]),
                self.constant(&format!("{path}/zeros"), &[c], &vec![0.0; c]),
            )
        };
        Ok(self.node("BatchNormalization", path, vec![x, scale, bias, mean, var], vec![float("epsilon", b.eps)]))
    }
}
