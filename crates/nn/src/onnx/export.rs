//! The walk from a model spec to an ONNX graph: each layer kind's nodes, the containers'
//! merges, the weights as initializers. Ranks and element types are tracked along the chain (a
//! Linear on a rank-3 input is a MatMul, not a Gemm; Flatten's axes are made absolute; token ids
//! are int64 until an Embedding), and the shape check's trace gives each layer's input and output
//! shapes where the nodes need sizes (GroupNorm, partial Flatten, adaptive pooling, LastStep).
//! The recurrent layers' nodes are in `export/recurrent.rs`, the pooling nodes that are more
//! than one op in `export/pool.rs`.

mod pool;
mod recurrent;

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type,
};
use crate::check::shape::{Dim, SymShape};
use crate::group_norm::GroupNormSpec;
use crate::spec::{BatchNormSpec, ConvSpec, GeluApproximate, LayerSpec, Merge, ModelSpec, NamedLayer};
use crate::{Error, Result, StateDict};
use prost::Message;
use std::collections::{HashMap, HashSet};
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
    // Token ids (`input_dtype = "i64"`) are an int64 input, which an Embedding's Gather takes.
    let input_elem = match spec.input_dtype {
        DType::I64 => super::proto::INT64,
        _ => elem,
    };
    // Each layer's input and output shapes, by path, from the check's trace.
    let shapes = report.trace.iter().map(|r| (r.layer.path.clone(), (r.input.clone(), r.output.clone()))).collect();
    let mut g = Graph {
        weights,
        elem,
        dtype: spec.dtype,
        nodes: vec![],
        inits: vec![],
        names: HashSet::from(["input".to_string(), "output".to_string()]),
        shapes,
    };
    let x = Value { name: "input".into(), rank: sample.len() + 1, elem: input_elem };
    let y = g.chain(&report.resolved.layers, "", x)?;
    let y_name = y.name.clone();
    // The last value is the graph's `output` (an Identity when the chain is empty or ends in
    // layers that produce no node).
    let last_is_node_output = g.nodes.last().is_some_and(|n| n.output.first() == Some(&y_name));
    if last_is_node_output {
        g.nodes.last_mut().expect("checked").output[0] = "output".into();
    } else {
        g.node("Identity", "output", vec![y_name], vec![]);
        g.nodes.last_mut().expect("just pushed").output[0] = "output".into();
    }
    // `[batch, *input]`, or `[T, batch, F]` for a model that reads time-major sequences.
    let in_shape = report.input.clone().unwrap_or_else(|| SymShape::batched(&sample));
    let out_shape = report.output.unwrap_or_else(|| SymShape(vec![Dim::Batch; y.rank]));
    let graph = GraphProto {
        node: g.nodes,
        name: spec.name.clone(),
        initializer: g.inits,
        input: vec![value_info("input", input_elem, &in_shape)],
        output: vec![value_info("output", y.elem, &out_shape)],
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

/// A value in the graph, its rank (batch dimension included) and ONNX element type (the
/// model's float type, or `INT64` for token ids).
#[derive(Clone, Debug)]
struct Value {
    name: String,
    rank: usize,
    elem: i32,
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
    /// Each layer's `(input, output)` shapes by dotted path, from the shape check's trace.
    shapes: HashMap<String, (SymShape, SymShape)>,
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    let ints = values.iter().map(|&v| v as i64).collect();
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints, ..Default::default() }
}

/// A window's per-axis sizes (`kernel_shape`, `strides`, `dilations`) from strata's
/// `(height, width)` pair; a 1-d layer's (height 1) has the width only.
fn axes((h, w): (usize, usize), one_d: bool) -> Vec<usize> {
    if one_d { vec![w] } else { vec![h, w] }
}

/// Symmetric `pads` (all begins, then all ends) from a `(height, width)` padding; a 1-d
/// layer's has the width only.
fn both_sides((h, w): (usize, usize), one_d: bool) -> Vec<usize> {
    if one_d { vec![w, w] } else { vec![h, w, h, w] }
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

    /// A 1-d int64 initializer named `name` (made unique): Pad's `pads`, Reshape's `shape`,
    /// Slice's `starts`, ….
    fn int64_constant(&mut self, name: &str, values: &[i64]) -> String {
        self.int64_tensor(name, &[values.len() as i64], values)
    }

    /// An int64 initializer of shape `dims` (`[]`: a scalar) named `name` (made unique).
    fn int64_tensor(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh(name);
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = dims.to_vec();
        self.inits.push(TensorProto {
            dims,
            data_type: super::proto::INT64,
            name: name.clone(),
            raw_data,
            ..Default::default()
        });
        name
    }

    /// The input and output shapes the check found for the layer at `path`.
    fn shapes_of(&self, path: &str, spec: &LayerSpec) -> Result<(SymShape, SymShape)> {
        self.shapes
            .get(path)
            .cloned()
            .ok_or_else(|| unsupported(path, spec, "the shape check did not trace this layer (a bug in the exporter)"))
    }

    /// `x[start:end]` along `axis` (`Slice`; negative `start` counts from the end, `i64::MAX`
    /// for `end` runs to it).
    fn slice(&mut self, name: &str, x: String, axis: usize, start: i64, end: i64) -> String {
        let starts = self.int64_constant(&format!("{name}/starts"), &[start]);
        let ends = self.int64_constant(&format!("{name}/ends"), &[end]);
        let axes = self.int64_constant(&format!("{name}/axes"), &[axis as i64]);
        self.node("Slice", name, vec![x, starts, ends, axes], vec![])
    }

    /// Circular padding of `x` along `axis` (PyTorch's `padding_mode = "circular"`, ONNX
    /// opset 19's Pad `"wrap"`): `[x[-before:], x, x[:after]]` joined along `axis` (the check
    /// keeps each padding within the size, as PyTorch does).
    fn wrap_pad(&mut self, name: &str, x: String, axis: usize, before: usize, after: usize) -> String {
        if before == 0 && after == 0 {
            return x;
        }
        let mut parts = vec![];
        if before > 0 {
            parts.push(self.slice(&format!("{name}/Slice"), x.clone(), axis, -(before as i64), i64::MAX));
        }
        parts.push(x.clone());
        if after > 0 {
            parts.push(self.slice(&format!("{name}/Slice"), x, axis, 0, after as i64));
        }
        self.node("Concat", &format!("{name}/Concat"), parts, vec![int("axis", axis as i64)])
    }

    /// `GroupNorm` (opset 17 has no GroupNormalization), as strata computes it: `x: [N, C, *]`
    /// reshaped to `[N, G, S]` (`S = C/G·∏*`), `LayerNormalization` over the last dimension
    /// (scale 1, bias 0, `eps`), reshaped back to `x`'s shape, then `· weight + bias` per
    /// channel. (torch.onnx uses InstanceNormalization on `[N, G, S]`, which tract 0.22
    /// computes over the batch as well, so it would give other numbers there.)
    fn group_norm(&mut self, path: &str, spec: &LayerSpec, gn: &GroupNormSpec, x: Value) -> Result<String> {
        let g = gn.num_groups;
        let (input, _) = self.shapes_of(path, spec)?;
        let per_sample: usize = input.0[1..].iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 0 }).product();
        let s = per_sample / g.max(1);
        let grouped = self.int64_constant(&format!("{path}/grouped_shape"), &[0, g as i64, s as i64]);
        let shape = self.node("Shape", &format!("{path}/Shape"), vec![x.name.clone()], vec![]);
        let r = self.node("Reshape", &format!("{path}/Reshape"), vec![x.name, grouped], vec![]);
        let ones = self.constant(&format!("{path}/ones"), &[s], &vec![1.0; s]);
        let zeros = self.constant(&format!("{path}/zeros"), &[s], &vec![0.0; s]);
        let attrs = vec![int("axis", -1), float("epsilon", gn.eps)];
        let n = self.node("LayerNormalization", path, vec![r, ones, zeros], attrs);
        let y = self.node("Reshape", &format!("{path}/Reshape"), vec![n, shape], vec![]);
        if gn.affine { self.channel_affine(path, spec, y, x.rank) } else { Ok(y) }
    }

    /// `y · weight + bias` with the layer's per-channel `weight` and `bias` (`[C]` in the
    /// state_dict, unsqueezed to `[C, 1, …]` for `y: [N, C, *]` of rank > 2).
    fn channel_affine(&mut self, path: &str, spec: &LayerSpec, y: String, rank: usize) -> Result<String> {
        let mut per_channel = |key: &str| -> Result<String> {
            let t = self.weight(path, spec, &format!("{path}.{key}"))?;
            Ok(if rank > 2 {
                let spatial: Vec<i64> = (1..rank as i64 - 1).collect();
                let axes = self.int64_constant(&format!("{path}/axes"), &spatial);
                self.node("Unsqueeze", &format!("{path}/Unsqueeze"), vec![t, axes], vec![])
            } else {
                t
            })
        };
        let w = per_channel("weight")?;
        let b = per_channel("bias")?;
        let y = self.node("Mul", &format!("{path}/Mul"), vec![y, w], vec![]);
        Ok(self.node("Add", &format!("{path}/Add"), vec![y, b], vec![]))
    }

    fn push_init(&mut self, name: &str, dims: &[usize], values: &[f64]) {
        let raw_data: Vec<u8> = match self.dtype {
            DType::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        };
        let dims = dims.iter().map(|&d| d as i64).collect();
        self.inits.push(TensorProto { dims, data_type: self.elem, name: name.into(), raw_data, ..Default::default() });
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
        let (rank, elem) = (x.rank, x.elem);
        let same = |name: String| Value { name, rank, elem };
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
                Value { name: self.node("Add", path, vec![b.name, s.name], vec![]), rank: b.rank, elem: b.elem }
            }
            LayerSpec::Branches { branches, merge } => {
                let mut outs = Vec::new();
                for (i, b) in branches.iter().enumerate() {
                    outs.push(self.chain(b, &format!("{path}.branches.{i}."), x.clone())?);
                }
                let (rank, elem) = (outs[0].rank, outs[0].elem);
                let names = outs.into_iter().map(|v| v.name).collect();
                match merge {
                    Merge::Add => Value { name: self.node("Sum", path, names, vec![]), rank, elem },
                    Merge::Concat { dim } => {
                        Value { name: self.node("Concat", path, names, vec![int("axis", *dim as i64)]), rank, elem }
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
            LayerSpec::Hardswish => unary(self, "HardSwish", vec![]),
            // max(0, min(1, x/6 + ½)), as torch.onnx writes nn.Hardsigmoid.
            LayerSpec::Hardsigmoid => unary(self, "HardSigmoid", vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)]),
            // Clip's bounds are inputs from opset 11.
            LayerSpec::ReLU6 => {
                let lo = self.constant(&format!("{path}/min"), &[], &[0.0]);
                let hi = self.constant(&format!("{path}/max"), &[], &[6.0]);
                same(self.node("Clip", path, vec![x.name, lo, hi], vec![]))
            }
            // x·tanh(softplus(x)) (Mish is opset 18's), as torch.onnx.export writes it at 17.
            LayerSpec::Mish => {
                let sp = self.node("Softplus", &format!("{path}/Softplus"), vec![x.name.clone()], vec![]);
                let t = self.node("Tanh", &format!("{path}/Tanh"), vec![sp], vec![]);
                same(self.node("Mul", path, vec![x.name, t], vec![]))
            }
            // x·σ(x) (ONNX has no SiLU before opset 24's Swish), as torch.onnx.export writes it.
            LayerSpec::SiLU => {
                let s = self.node("Sigmoid", &format!("{path}/Sigmoid"), vec![x.name.clone()], vec![]);
                same(self.node("Mul", path, vec![x.name, s], vec![]))
            }
            // The identity in evaluation: no node.
            LayerSpec::Dropout { .. } => x,
            LayerSpec::Flatten { start_dim, end_dim } => {
                let abs = |d: isize| if d < 0 { d + rank as isize } else { d };
                let (s, e) = (abs(*start_dim), abs(*end_dim));
                if s == e {
                    x
                } else if s == 1 && e == rank as isize - 1 {
                    Value { name: self.node("Flatten", path, vec![x.name], vec![int("axis", 1)]), rank: 2, elem }
                } else {
                    // Any other range: a Reshape to the checked output shape, the batch
                    // dimension (alone, or merged with others) as −1.
                    let (_, out) = self.shapes_of(path, spec)?;
                    let dims: Vec<i64> =
                        out.0.iter().map(|d| if let Dim::Fixed(n) = d { *n as i64 } else { -1 }).collect();
                    let shape = self.int64_constant(&format!("{path}/shape"), &dims);
                    Value { name: self.node("Reshape", path, vec![x.name, shape], vec![]), rank: dims.len(), elem }
                }
            }
            LayerSpec::Conv2d(c) => same(self.conv(path, spec, c, x.name, false)?),
            LayerSpec::Conv1d(c) => same(self.conv(path, spec, c, x.name, true)?),
            // The 1-d pools (height-1 options) are the same nodes with one spatial axis.
            LayerSpec::MaxPool2d(o) | LayerSpec::MaxPool1d(o) => {
                let d = matches!(spec, LayerSpec::MaxPool1d(_));
                let attrs = vec![
                    ints("kernel_shape", &axes(o.kernel_size, d)),
                    ints("strides", &axes(o.stride, d)),
                    ints("pads", &both_sides(o.padding, d)),
                    ints("dilations", &axes(o.dilation, d)),
                    int("ceil_mode", o.ceil_mode as i64),
                ];
                unary(self, "MaxPool", attrs)
            }
            LayerSpec::AvgPool2d(o) | LayerSpec::AvgPool1d(o) => {
                let d = matches!(spec, LayerSpec::AvgPool1d(_));
                if let Some(divisor) = o.divisor_override
                    && !d
                {
                    return Ok(same(self.sum_pool(path, spec, o, divisor, x.name)?));
                }
                // ceil_mode as PyTorch exports it: ONNX Runtime agrees with PyTorch on windows
                // hanging over the input (tract 0.22 does not with count_include_pad; see
                // tests/onnx_export.rs).
                let attrs = vec![
                    ints("kernel_shape", &axes(o.kernel_size, d)),
                    ints("strides", &axes(o.stride, d)),
                    ints("pads", &both_sides(o.padding, d)),
                    int("count_include_pad", o.count_include_pad as i64),
                    int("ceil_mode", o.ceil_mode as i64),
                ];
                unary(self, "AveragePool", attrs)
            }
            LayerSpec::AdaptiveAvgPool2d { output_size: (1, 1) } => unary(self, "GlobalAveragePool", vec![]),
            LayerSpec::AdaptiveAvgPool2d { output_size } => {
                same(self.adaptive_avg_pool(path, spec, &[output_size.0, output_size.1], x.name)?)
            }
            LayerSpec::AdaptiveAvgPool1d { output_size: 1 } => unary(self, "GlobalAveragePool", vec![]),
            LayerSpec::AdaptiveAvgPool1d { output_size } => {
                same(self.adaptive_avg_pool(path, spec, &[*output_size], x.name)?)
            }
            LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => same(self.batch_norm(path, spec, b, x)?),
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
            // x: [N, *] int64 ids → [N, *, embedding_dim], rows of the table. padding_idx only
            // shapes training (its row starts at zero, gets no gradient): the lookup is the same.
            LayerSpec::Embedding { .. } => {
                let w = self.weight(path, spec, &format!("{path}.weight"))?;
                let y = self.node("Gather", path, vec![w, x.name], vec![int("axis", 0)]);
                Value { name: y, rank: rank + 1, elem: self.elem }
            }
            LayerSpec::Recurrent(r) => self.recurrent(path, spec, r, x)?,
            LayerSpec::LastStep { batch_first } => self.last_step(path, spec, *batch_first, x)?,
            LayerSpec::Other(d) if d.0.as_any().downcast_ref::<GroupNormSpec>().is_some() => {
                let gn = d.0.as_any().downcast_ref::<GroupNormSpec>().expect("matched");
                same(self.group_norm(path, spec, gn, x)?)
            }
            LayerSpec::Other(_) => {
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

    /// `Conv` with PyTorch's padding (`"same"`: the odd element on the right and bottom); a
    /// `Conv1d` (`one_d`, a height-1 [`ConvSpec`]) as ONNX's 1-d Conv on `[N, C, L]`.
    fn conv(&mut self, path: &str, spec: &LayerSpec, c: &ConvSpec, x: String, one_d: bool) -> Result<String> {
        let mode = match c.padding_mode {
            PaddingMode::Zeros => None,
            PaddingMode::Reflect => Some("reflect"),
            PaddingMode::Replicate => Some("edge"),
            // ONNX's Pad wraps around ("wrap") only from opset 19: Slice + Concat below.
            PaddingMode::Circular => Some("wrap"),
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
            Some("wrap") if one_d => (self.wrap_pad(&format!("{path}/Pad"), x, 2, left, right), (0, 0, 0, 0)),
            Some("wrap") => {
                let x = self.wrap_pad(&format!("{path}/Pad"), x, 2, top, bottom);
                (self.wrap_pad(&format!("{path}/Pad"), x, 3, left, right), (0, 0, 0, 0))
            }
            Some(mode) => {
                let pads: Vec<i64> = if one_d {
                    [0, 0, left, 0, 0, right].map(|p| p as i64).to_vec()
                } else {
                    [0, 0, top, left, 0, 0, bottom, right].map(|p| p as i64).to_vec()
                };
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
        let pads = if one_d { vec![left, right] } else { vec![top, left, bottom, right] };
        let attrs = vec![
            ints("kernel_shape", &axes(c.kernel_size, one_d)),
            ints("strides", &axes(c.stride, one_d)),
            ints("pads", &pads),
            ints("dilations", &axes(c.dilation, one_d)),
            int("group", c.groups as i64),
        ];
        Ok(self.node("Conv", path, inputs, attrs))
    }

    /// `BatchNormalization` in inference mode, from the running statistics.
    fn batch_norm(&mut self, path: &str, spec: &LayerSpec, b: &BatchNormSpec, x: Value) -> Result<String> {
        if !b.track_running_stats {
            // Without running statistics PyTorch normalises with the batch's own, in evaluation
            // too, which ONNX's BatchNormalization cannot: the mean and biased variance over
            // every dimension but the channels (1) from elementary ops, `x: [N, C, *]`.
            let axes: Vec<usize> = (0..x.rank).filter(|&a| a != 1).collect();
            let c = |g: &mut Self, name: &str, v: f64| g.constant(&format!("{path}/{name}"), &[], &[v]);
            let reduce = |g: &mut Self, v: String| {
                let attrs = vec![ints("axes", &axes), int("keepdims", 1)];
                g.node("ReduceMean", &format!("{path}/ReduceMean"), vec![v], attrs)
            };
            let mean = reduce(self, x.name.clone());
            let d = self.node("Sub", &format!("{path}/Sub"), vec![x.name, mean], vec![]);
            let sq = self.node("Mul", &format!("{path}/Mul"), vec![d.clone(), d.clone()], vec![]);
            let var = reduce(self, sq);
            let eps = c(self, "eps", b.eps);
            let var = self.node("Add", &format!("{path}/Add"), vec![var, eps], vec![]);
            let sd = self.node("Sqrt", &format!("{path}/Sqrt"), vec![var], vec![]);
            let y = self.node("Div", path, vec![d, sd], vec![]);
            return if b.affine { self.channel_affine(path, spec, y, x.rank) } else { Ok(y) };
        }
        let x = x.name;
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
