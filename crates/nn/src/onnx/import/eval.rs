//! Reading an ONNX graph node by node: constants and shape arithmetic are computed on the spot
//! (the `Shape`/`Gather`/`Concat` chains `torch.onnx.export` writes for `x.view(x.size(0), -1)`
//! or an LSTM's zero state), and each node on the activations becomes a layer-level node of a
//! [`Dag`]. A node that cannot be read is recorded with its reason and the walk goes on, so
//! every unsupported node is reported at once.
//!
//! Why one file over 700 lines: it is one `match` over ONNX op types sharing the walker's
//! state; splitting it by op would scatter that state. Splitting the conv, recurrent and
//! constant readers out is the next step if it grows.

use super::graph::{Act, Arr, Dag, LNode, MergeOp, Op, SymInt, Val};
use crate::check::shape::Dim;
use crate::error::UnsupportedNode;
use crate::onnx::proto::{AttributeProto, DimensionValue, GraphProto, NodeProto, TensorProto};
use crate::spec::{BatchNormSpec, ConvSpec, GeluApproximate, LayerSpec, ModelSpec, RecurrentKind, RecurrentSpec};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use strata_core::{AvgPool2dOptions, DType, MaxPool2dOptions};

/// What [`evaluate`] found: the graph of layers, the input's per-sample shape and element
/// types, and every node it could not read.
pub struct Evaluated {
    /// The layer-level graph.
    pub dag: Dag,
    /// One sample's shape (the graph input without its batch dimension).
    pub sample: Vec<usize>,
    /// The input's element type (`I64` for token ids).
    pub input_dtype: DType,
    /// The parameters' element type.
    pub dtype: DType,
    /// The nodes that could not be read.
    pub errors: Vec<UnsupportedNode>,
}

/// `Result` of one node: its output values, or why it cannot be imported.
type NodeResult = std::result::Result<Vec<Val>, String>;

/// Reads `graph`: its one input and output, its initializers, then each of `nodes` in order (the
/// graph's nodes, with GELU chains and SiLU pairs made one node by `fuse.rs`).
pub fn evaluate(graph: &GraphProto, nodes: &[NodeProto]) -> Result<Evaluated> {
    let model = |m: String| Error::OnnxImportModel(m);
    let mut vals: HashMap<String, Val> = HashMap::new();
    let mut float_type = None;
    // Values the file holds (initializers, Constant nodes) and values the nodes make from them
    // (copies into layers, transposes, computed size lists): the second may not outgrow the
    // first, or a few bytes of graph (a chain of Concats of a list with itself, many nodes
    // reading one large initializer) could make gigabytes.
    let mut held = 0usize;
    let mut made = 0usize;
    for t in &graph.initializer {
        let arr = tensor_arr(t).map_err(|e| model(format!("initializer `{}`: {e}", t.name)))?;
        held = held.saturating_add(arr.data.len());
        if !arr.int {
            float_type.get_or_insert(t.data_type);
        }
        vals.insert(t.name.clone(), Val::Const(arr));
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !vals.contains_key(&i.name)).collect();
    let [input] = inputs.as_slice() else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(model(format!(
            "strata models take one input; this graph has {} ({})",
            names.len(),
            names.join(", ")
        )));
    };
    let [output] = graph.output.as_slice() else {
        return Err(model(format!("strata models have one output; this graph has {}", graph.output.len())));
    };
    let tensor_type = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    let Some(tensor_type) = tensor_type else {
        return Err(model(format!("the input `{}` is not a tensor", input.name)));
    };
    let dtype_of = |t: i32| match t {
        super::super::proto::FLOAT => Some(DType::F32),
        super::super::proto::DOUBLE => Some(DType::F64),
        _ => None,
    };
    let (input_dtype, dtype) = match tensor_type.elem_type {
        super::super::proto::INT64 => (DType::I64, float_type.and_then(dtype_of).unwrap_or(DType::F32)),
        t => match dtype_of(t) {
            // `input_dtype` says features or token ids; the float type is the model's `dtype`.
            Some(d) => (DType::F32, d),
            None => {
                return Err(model(format!(
                    "the input `{}` has ONNX element type {t}; strata takes float (1), double (11) or int64 token ids (7)",
                    input.name
                )));
            }
        },
    };
    let dims = tensor_type.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    if dims.is_empty() {
        return Err(model(format!("the input `{}` has no shape; strata needs [batch, *sample]", input.name)));
    }
    let mut sample = Vec::new();
    for (k, d) in dims.iter().enumerate().skip(1) {
        match &d.value {
            Some(DimensionValue::DimValue(v)) if *v > 0 => sample.push(*v as usize),
            other => {
                let what = match other {
                    Some(DimensionValue::DimParam(p)) => format!("symbolic (`{p}`)"),
                    Some(DimensionValue::DimValue(v)) => format!("{v}"),
                    None => "unknown".into(),
                };
                return Err(model(format!(
                    "dimension {k} of the input `{}` is {what}; strata needs a fixed sample shape (only the batch dimension, the first, may be symbolic): export with fixed sizes there",
                    input.name
                )));
            }
        }
    }
    if let Err(e) = count(&sample) {
        return Err(model(format!("the input `{}`: {e}", input.name)));
    }
    let batched: Vec<Dim> = std::iter::once(Dim::Batch).chain(sample.iter().map(|&d| Dim::Fixed(d))).collect();
    let mut e = Eval {
        dag: Dag { acts: vec![Act { shape: batched }], ..Default::default() },
        dtype,
        used: nodes.iter().flat_map(|n| n.input.iter().cloned()).chain([output.name.clone()]).collect(),
    };
    vals.insert(input.name.clone(), Val::Act(0));
    let mut errors = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        let name = if node.name.is_empty() { format!("(unnamed node {k})") } else { node.name.clone() };
        let mut ins = Vec::with_capacity(node.input.len());
        for i in &node.input {
            if i.is_empty() {
                ins.push(None);
                continue;
            }
            let Some(v) = vals.get(i) else {
                return Err(model(format!(
                    "node `{name}` ({}) reads `{i}`, which no earlier node, initializer or input defines (are the nodes in topological order?)",
                    node.op_type
                )));
            };
            // Borrowed, not copied: a node may read one large initializer many times.
            ins.push(Some(v));
        }
        let dag_nodes = e.dag.nodes.len();
        let outs = if ins.iter().any(|v| matches!(v, Some(Val::Unknown))) {
            // Downstream of a node already reported: its reading is unknown, but an op strata
            // has no reading of at all is reported too, so one run lists them all.
            if !READ_OPS.contains(&node.op_type.as_str()) {
                let reason = unsupported_op(&node.op_type);
                errors.push(UnsupportedNode { name: name.clone(), op_type: node.op_type.clone(), reason });
            }
            vec![]
        } else {
            let result = if node.domain.is_empty() || node.domain == "ai.onnx" {
                e.node(node, &name, &ins)
            } else {
                Err(format!("operator domain `{}` is not ONNX's; strata reads the default domain only", node.domain))
            };
            match result {
                Ok(v) => v,
                Err(reason) => {
                    errors.push(UnsupportedNode { name: name.clone(), op_type: node.op_type.clone(), reason });
                    vec![]
                }
            }
        };
        let size = |v: &Val| match v {
            Val::Const(a) => a.data.len(),
            Val::Ints { values, .. } => values.len(),
            _ => 0,
        };
        let outs_size = outs.iter().map(size).fold(0usize, usize::saturating_add);
        if node.op_type == "Constant" {
            held = held.saturating_add(outs_size);
        } else {
            let params = e.dag.nodes[dag_nodes..].iter().map(|n| match &n.op {
                Op::Layer { params, .. } | Op::Recurrent { params, .. } => {
                    params.iter().map(|(_, a)| a.data.len()).fold(0usize, usize::saturating_add)
                }
                Op::AddBias(a) => a.data.len(),
                _ => 0,
            });
            made = params.fold(made.saturating_add(outs_size), usize::saturating_add);
            let allowed = held.saturating_mul(4).saturating_add(MAX_COMPUTED);
            if made > allowed {
                return Err(model(format!(
                    "node `{name}` ({}) brings the values the graph computes from its {held} stored values to more than {allowed}: strata refuses graphs that copy or compute far more than they store",
                    node.op_type
                )));
            }
        }
        let mut outs = outs.into_iter();
        for o in &node.output {
            let v = outs.next().unwrap_or(Val::Unknown);
            if !o.is_empty() {
                vals.insert(o.clone(), v);
            }
        }
    }
    match vals.get(&output.name) {
        Some(Val::Act(a)) => e.dag.output = *a,
        Some(Val::Unknown) => {}
        _ => {
            return Err(model(format!(
                "the output `{}` is not computed from the input (a constant, or not defined)",
                output.name
            )));
        }
    }
    Ok(Evaluated { dag: e.dag, sample, input_dtype, dtype, errors })
}

/// The most elements a constant the importer itself computes may hold (a size list or a fill
/// from `ConstantOfShape`, never a weight read from the file): far above any real graph's and
/// far below an allocation that would abort the process.
const MAX_COMPUTED: usize = 1 << 24;

/// The element count of `dims`, or an error naming the shape when it overflows `usize`
/// (a damaged or hostile file can declare any dimension).
fn count(dims: &[usize]) -> std::result::Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("the shape {dims:?} has more elements than memory can address"))
}

/// An initializer or constant's values.
pub(super) fn tensor_arr(t: &TensorProto) -> std::result::Result<Arr, String> {
    use super::super::proto::{DOUBLE, FLOAT, INT32, INT64};
    if t.data_location == 1 {
        return Err("its values are in an external file, which strata does not read; save the model with its weights inside (onnx.save(model, path, save_as_external_data=False))".into());
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("negative dimension {d}"));
        }
        dims.push(d as usize);
    }
    let n = count(&dims)?;
    let raw = &t.raw_data;
    let (data, int): (Vec<f64>, bool) = match t.data_type {
        FLOAT if !raw.is_empty() => {
            (raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect(), false)
        }
        FLOAT => (t.float_data.iter().map(|&v| v as f64).collect(), false),
        DOUBLE if !raw.is_empty() => {
            (raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(), false)
        }
        DOUBLE => (t.double_data.clone(), false),
        INT64 if !raw.is_empty() => {
            (raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64).collect(), true)
        }
        INT64 => (t.int64_data.iter().map(|&v| v as f64).collect(), true),
        INT32 if !raw.is_empty() => {
            (raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect(), true)
        }
        INT32 => (t.int32_data.iter().map(|&v| v as f64).collect(), true),
        other => {
            return Err(format!(
                "ONNX element type {other} is not read (float, double, int32 and int64 are); convert the model to float32"
            ));
        }
    };
    if data.len() != n {
        return Err(format!("its shape {dims:?} needs {n} values, it holds {}", data.len()));
    }
    Ok(Arr { dims, data, int, name: t.name.clone() })
}

/// An `f32` attribute as the `f64` it was written from (`1e-5`, not `9.99999974e-6`).
fn short(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f as f64)
}

/// A node's attributes by name.
struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f64) -> f64 {
        self.get(name).map_or(default, |a| short(a.f))
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
    }
}

/// The PyTorch module path of a node: `/block1/body/body.0/Conv` (torch's scope names, each a
/// child of the one before, a Sequential's children named `body.0`) → `block1.body.0`;
/// `block1.body.conv1` or `fc1/Erf` (strata's export) → the part before any `/`.
pub fn module_path(name: &str) -> String {
    if let Some(rest) = name.strip_prefix('/') {
        let comps: Vec<&str> = rest.split('/').collect();
        let mut path: Vec<String> = Vec::new();
        for comp in &comps[..comps.len().saturating_sub(1)] {
            let segs: Vec<&str> = comp.split('.').collect();
            // The longest k with the path's last k segments equal to the component's first k.
            let k = (1..segs.len())
                .rev()
                .find(|&k| path.len() >= k && path[path.len() - k..].iter().zip(&segs[..k]).all(|(a, b)| a == b))
                .unwrap_or(0);
            path.extend(segs[k..].iter().map(|s| s.to_string()));
        }
        path.join(".")
    } else {
        name.split('/').next().unwrap_or_default().to_string()
    }
}

/// The path of a layer from its first named initializer (`fc1.weight` → `fc1`), else from the
/// node's name.
fn layer_path(node_name: &str, tensors: &[&Arr]) -> String {
    const SUFFIXES: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];
    for t in tensors {
        if let Some((path, last)) = t.name.rsplit_once('.')
            && !t.name.starts_with("onnx::")
            && !path.contains('/')
            && SUFFIXES.contains(&last)
        {
            return path.to_string();
        }
    }
    module_path(node_name)
}

/// The evaluator's state.
struct Eval {
    dag: Dag,
    dtype: DType,
    /// Every value name some node or the graph's output reads.
    used: HashSet<String>,
}

/// A scalar or 1-d list of integers, known or batch-dependent.
fn sym_ints(v: &Val) -> Option<(Vec<SymInt>, bool)> {
    match v {
        Val::Ints { values, scalar } => Some((values.clone(), *scalar)),
        Val::Const(a) if a.dims.len() <= 1 => {
            Some((a.data.iter().map(|&x| SymInt::Known(x as i64)).collect(), a.dims.is_empty()))
        }
        _ => None,
    }
}

/// Integers as a value: a constant when all are known.
fn ints_val(values: Vec<SymInt>, scalar: bool) -> Val {
    let known: Option<Vec<i64>> = values
        .iter()
        .map(|v| match v {
            SymInt::Known(k) => Some(*k),
            SymInt::Batch => None,
        })
        .collect();
    match known {
        Some(k) => Val::Const(Arr::ints(if scalar { vec![] } else { vec![k.len()] }, &k)),
        None => Val::Ints { values, scalar },
    }
}

/// An axis made non-negative for a rank.
fn axis(a: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let k = if a < 0 { a + r } else { a };
    if k < 0 || k >= r { Err(format!("axis {a} is out of range for a rank-{rank} tensor")) } else { Ok(k as usize) }
}

/// Squeeze's or Unsqueeze's axes made non-negative for a rank, sorted; each may appear once.
fn distinct_axes(axes: &[i64], rank: usize) -> std::result::Result<Vec<usize>, String> {
    let mut ks: Vec<usize> = axes.iter().map(|&k| axis(k, rank)).collect::<std::result::Result<_, _>>()?;
    ks.sort_unstable();
    if ks.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} name an axis twice"));
    }
    Ok(ks)
}

/// A fixed dimension of an activation.
fn fixed(shape: &[Dim], k: usize) -> std::result::Result<usize, String> {
    match shape.get(k) {
        Some(Dim::Fixed(n)) => Ok(*n),
        _ => Err(format!("dimension {k} of the input {} is the batch dimension", show(shape))),
    }
}

/// `[N, 1, 28, 28]`.
fn show(shape: &[Dim]) -> String {
    let d: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(", "))
}

/// ONNX's symmetric 2-d pads `[top, left, bottom, right]` as PyTorch's `(padH, padW)`.
fn symmetric_pads(pads: &[i64]) -> Option<(usize, usize)> {
    match pads {
        [] => Some((0, 0)),
        [t, l, b, r] if t == b && l == r && *t >= 0 && *l >= 0 => Some((*t as usize, *l as usize)),
        _ => None,
    }
}

/// A 1-d op's size list (`kernel_shape`, `strides`, `dilations`) seen at height 1: `[k]` →
/// `[1, k]`.
fn lift_sizes(v: Option<Vec<i64>>, one_d: bool) -> Option<Vec<i64>> {
    match v {
        Some(v) if one_d && v.len() == 1 => Some(vec![1, v[0]]),
        other => other,
    }
}

/// A 1-d op's `pads` seen at height 1: `[begin, end]` → `[0, begin, 0, end]`.
fn lift_pads(v: Option<Vec<i64>>, one_d: bool) -> Option<Vec<i64>> {
    match v {
        Some(v) if one_d && v.len() == 2 => Some(vec![0, v[0], 0, v[1]]),
        other => other,
    }
}

/// A pair from a 2-element list attribute, or `default`.
fn pair(v: Option<Vec<i64>>, default: (usize, usize), what: &str) -> std::result::Result<(usize, usize), String> {
    match v.as_deref() {
        None => Ok(default),
        Some([a, b]) if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
        Some(other) => Err(format!("{what} {other:?}: strata reads 2-d windows (two positive values)")),
    }
}

impl Eval {
    /// A new activation produced by a new layer-level node.
    fn push(&mut self, op: Op, path: String, src: (&str, &str), inputs: Vec<usize>, shape: Vec<Dim>) -> Val {
        let output = self.dag.acts.len();
        self.dag.acts.push(Act { shape });
        let in_shape = self.dag.acts[inputs[0]].shape.clone();
        let sources = vec![(src.0.to_string(), src.1.to_string())];
        self.dag.nodes.push(LNode { op, path, sources, inputs, in_shape, output });
        Val::Act(output)
    }

    /// The output shape of `spec` on `shape` (batch first), from strata's own shape check.
    fn out_shape(&self, spec: &LayerSpec, shape: &[Dim]) -> std::result::Result<Vec<Dim>, String> {
        let mut sample = Vec::new();
        for (k, d) in shape.iter().enumerate() {
            match (k, d) {
                (0, Dim::Batch) => {}
                (_, Dim::Fixed(n)) if k > 0 => sample.push(*n),
                _ => {
                    return Err(format!(
                        "its input {} does not have the batch dimension first, as strata's {} needs",
                        show(shape),
                        spec.type_name()
                    ));
                }
            }
        }
        let probe = ModelSpec::new("probe").dtype(self.dtype).input(&sample).layer("layer", spec.clone());
        match probe.check(None) {
            Ok(r) => Ok(r.output.map(|s| s.0).unwrap_or_default()),
            Err(r) => Err(format!("strata's {} does not accept it: {}", spec.type_name(), r.render_errors())),
        }
    }

    /// A layer node: `spec` with `params`, its output shape from the shape check.
    fn layer(
        &mut self,
        spec: LayerSpec,
        params: Vec<(&str, Arr)>,
        node: &NodeProto,
        name: &str,
        x: usize,
    ) -> NodeResult {
        let shape = self.dag.acts[x].shape.clone();
        let out = self.out_shape(&spec, &shape)?;
        let tensors: Vec<&Arr> = params.iter().map(|(_, a)| a).collect();
        let path = layer_path(name, &tensors);
        let params = params.into_iter().map(|(k, a)| (k.to_string(), a)).collect();
        Ok(vec![self.push(Op::Layer { spec, params }, path, (name, &node.op_type), vec![x], out)])
    }

    /// An element-wise layer: the output has the input's shape, wherever the batch is.
    fn elementwise(&mut self, spec: LayerSpec, node: &NodeProto, name: &str, x: usize) -> NodeResult {
        let shape = self.dag.acts[x].shape.clone();
        let op = Op::Layer { spec, params: vec![] };
        Ok(vec![self.push(op, module_path(name), (name, &node.op_type), vec![x], shape)])
    }

    /// A pseudo-op node (resolved by `tree.rs`).
    fn pseudo(&mut self, op: Op, node: &NodeProto, name: &str, inputs: Vec<usize>, shape: Vec<Dim>) -> NodeResult {
        Ok(vec![self.push(op, module_path(name), (name, &node.op_type), inputs, shape)])
    }

    /// Whether output `k` of `node` is read by anything.
    fn output_used(&self, node: &NodeProto, k: usize) -> bool {
        node.output.get(k).is_some_and(|o| !o.is_empty() && self.used.contains(o))
    }

    /// One node.
    fn node(&mut self, node: &NodeProto, name: &str, ins: &[Option<&Val>]) -> NodeResult {
        let a = Attrs(&node.attribute);
        let op = node.op_type.as_str();
        let act = |k: usize| match ins.get(k) {
            Some(Some(Val::Act(i))) => Some(*i),
            _ => None,
        };
        let cnst = |k: usize| match ins.get(k) {
            Some(Some(Val::Const(c))) => Some(c.clone()),
            _ => None,
        };
        let any_act = ins.iter().any(|v| matches!(v, Some(Val::Act(_))));
        if !any_act {
            return self.constant_node(node, &a, ins);
        }
        let need_const = |k: usize, what: &str| {
            cnst(k).ok_or_else(|| {
                format!("its {what} (input {k}) must be a constant (an initializer) for strata to read it as a layer's")
            })
        };
        // Element-wise and shape-preserving ops take the first input.
        let Some(x) = act(0) else {
            return match op {
                "Add" if cnst(0).is_some() && act(1).is_some() => {
                    let (c, x) = (cnst(0).expect("checked"), act(1).expect("checked"));
                    let shape = self.dag.acts[x].shape.clone();
                    self.pseudo(Op::AddBias(c), node, name, vec![x], shape)
                }
                "Add" | "Sum" | "Concat" => self.merge(node, name, ins),
                "Gather" => self.embedding(node, name, ins),
                _ => Err("only its first input may be computed from the model's input".into()),
            };
        };
        let shape = self.dag.acts[x].shape.clone();
        let rank = shape.len();
        match op {
            "Identity" => Ok(vec![Val::Act(x)]),
            "Shape" => {
                let dims: Vec<SymInt> = shape
                    .iter()
                    .map(|d| match d {
                        Dim::Batch => SymInt::Batch,
                        Dim::Fixed(n) => SymInt::Known(*n as i64),
                    })
                    .collect();
                Ok(vec![ints_val(slice_range(&dims, a.get("start").map(|v| v.i), a.get("end").map(|v| v.i)), false)])
            }
            "Dropout" => {
                if let Some(Some(Val::Const(t))) = ins.get(2)
                    && !t.all(0.0)
                {
                    return Err("training_mode = true: export the model in evaluation mode (model.eval())".into());
                }
                if self.output_used(node, 1) {
                    return Err("its mask output is used; strata's Dropout has none".into());
                }
                Ok(vec![Val::Act(x)])
            }
            "Relu" => self.elementwise(LayerSpec::ReLU, node, name, x),
            "Sigmoid" => self.elementwise(LayerSpec::Sigmoid, node, name, x),
            "Tanh" => self.elementwise(LayerSpec::Tanh, node, name, x),
            "LeakyRelu" => {
                self.elementwise(LayerSpec::LeakyReLU { negative_slope: a.float("alpha", 0.01) }, node, name, x)
            }
            "Elu" => self.elementwise(LayerSpec::ELU { alpha: a.float("alpha", 1.0) }, node, name, x),
            // Opset 20's, or one that `fuse.rs` made of the elementary ops before it.
            "Gelu" => {
                let approximate = match a.string("approximate").as_deref() {
                    None | Some("none") => GeluApproximate::None,
                    Some("tanh") => GeluApproximate::Tanh,
                    Some(other) => {
                        return Err(format!("approximate = \"{other}\": strata's GELU is \"none\" or \"tanh\""));
                    }
                };
                self.elementwise(LayerSpec::GELU { approximate }, node, name, x)
            }
            "HardSwish" => self.elementwise(LayerSpec::Hardswish, node, name, x),
            "HardSigmoid" => {
                let (alpha, beta) = (a.float("alpha", 0.2), a.float("beta", 0.5));
                if (alpha - 1.0 / 6.0).abs() > 1e-6 || (beta - 0.5).abs() > 1e-6 {
                    return Err(format!(
                        "alpha = {alpha}, beta = {beta}: strata's Hardsigmoid is PyTorch's (alpha = 1/6, beta = 0.5)"
                    ));
                }
                self.elementwise(LayerSpec::Hardsigmoid, node, name, x)
            }
            // Clip(x, 0, 6) is ReLU6 (torch's export of nn.ReLU6), Clip(x, 0) a ReLU.
            "Clip" => {
                let bound = |k: usize, attr: &str| match cnst(k) {
                    Some(c) if c.data.len() == 1 => Some(c.data[0]),
                    Some(_) => None,
                    None if ins.get(k).is_none_or(|v| v.is_none()) => a.get(attr).map(|v| f64::from(v.f)),
                    None => None,
                };
                match (bound(1, "min"), bound(2, "max")) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => self.elementwise(LayerSpec::ReLU6, node, name, x),
                    (Some(lo), None) if lo == 0.0 && ins.get(2).is_none_or(|v| v.is_none()) => {
                        self.elementwise(LayerSpec::ReLU, node, name, x)
                    }
                    (lo, hi) => {
                        Err(format!("bounds {lo:?} and {hi:?}: strata reads Clip(0, 6) as ReLU6 and Clip(0) as ReLU"))
                    }
                }
            }
            // Opset 18's, or `Mul(x, Tanh(Softplus(x)))` that `fuse.rs` made one node.
            "Mish" => self.elementwise(LayerSpec::Mish, node, name, x),
            // Opset 24's, or `Mul(x, Sigmoid(x))` that `fuse.rs` made one node.
            "Swish" => {
                let alpha = a.float("alpha", 1.0);
                if alpha != 1.0 {
                    return Err(format!("alpha = {alpha}: strata's SiLU is Swish with alpha = 1"));
                }
                self.elementwise(LayerSpec::SiLU, node, name, x)
            }
            "Softmax" | "LogSoftmax" => {
                let d = a.int("axis", -1);
                axis(d, rank)?;
                let spec = if op == "Softmax" {
                    LayerSpec::Softmax { dim: d as isize }
                } else {
                    LayerSpec::LogSoftmax { dim: d as isize }
                };
                self.elementwise(spec, node, name, x)
            }
            "Flatten" => {
                if axis(a.int("axis", 1), rank)? != 1 {
                    return Err(format!(
                        "axis {}: strata reads Flatten(axis = 1) (PyTorch's nn.Flatten()) only",
                        a.int("axis", 1)
                    ));
                }
                self.layer(LayerSpec::Flatten { start_dim: 1, end_dim: -1 }, vec![], node, name, x)
            }
            "Reshape" => self.reshape(node, name, x, ins),
            "Gemm" => {
                if a.int("transA", 0) != 0 || a.float("alpha", 1.0) != 1.0 || a.float("beta", 1.0) != 1.0 {
                    return Err(
                        "transA = 1, alpha ≠ 1 or beta ≠ 1: strata reads Gemm as PyTorch's Linear (y = x·Wᵀ + b)"
                            .into(),
                    );
                }
                if rank != 2 {
                    return Err(format!("its input {} is not [N, features]", show(&shape)));
                }
                let b = need_const(1, "weight")?;
                if b.dims.len() != 2 {
                    return Err(format!("its weight has shape {:?}, not 2-d", b.dims));
                }
                let w = if a.int("transB", 0) != 0 { b } else { b.t() };
                let (out, inp) = (w.dims[0], w.dims[1]);
                let mut params = vec![("weight", w)];
                match ins.get(2) {
                    None | Some(None) => {}
                    Some(Some(Val::Const(c)))
                        if c.data.len() == out && c.dims.iter().rev().skip(1).all(|&d| d == 1) =>
                    {
                        params.push(("bias", c.reshaped(vec![out])));
                    }
                    Some(_) => return Err(format!("its bias (C) must be a constant of {out} values")),
                }
                let bias = params.len() == 2;
                let spec = LayerSpec::Linear { in_features: Some(inp), out_features: out, bias };
                self.layer(spec, params, node, name, x)
            }
            "MatMul" => {
                let w = need_const(1, "second operand")?;
                if w.dims.len() != 2 || rank < 2 {
                    return Err(format!(
                        "{} × {:?}: strata reads MatMul as a Linear layer (an activation times a 2-d constant)",
                        show(&shape),
                        w.dims
                    ));
                }
                let spec = LayerSpec::Linear { in_features: Some(w.dims[0]), out_features: w.dims[1], bias: false };
                self.layer(spec, vec![("weight", w.t())], node, name, x)
            }
            "Add" | "Sum" | "Concat" => {
                if op == "Add"
                    && let Some(c) = cnst(1).or_else(|| cnst(0))
                {
                    // x + constant: a Linear's bias after a MatMul (checked by `tree.rs`).
                    return self.pseudo(Op::AddBias(c), node, name, vec![x], shape);
                }
                self.merge(node, name, ins)
            }
            "Conv" => self.conv(node, name, &a, x, &shape, ins),
            "BatchNormalization" => {
                if a.int("training_mode", 0) != 0 || (1..node.output.len()).any(|k| self.output_used(node, k)) {
                    return Err("training mode: export the model in evaluation mode (model.eval())".into());
                }
                let (scale, b, mean, var) = (
                    need_const(1, "scale")?,
                    need_const(2, "bias")?,
                    need_const(3, "running mean")?,
                    need_const(4, "running variance")?,
                );
                let c = fixed(&shape, 1).map_err(|_| "its input has no channel dimension".to_string())?;
                let affine = scale.name.ends_with(".weight") || !(scale.all(1.0) && b.all(0.0));
                let mut spec = BatchNormSpec::new(Some(c));
                spec.eps = a.float("epsilon", 1e-5);
                spec.affine = affine;
                let spec = match rank {
                    2 | 3 => LayerSpec::BatchNorm1d(spec),
                    4 => LayerSpec::BatchNorm2d(spec),
                    _ => return Err(format!("its input {} is not [N, C], [N, C, L] or [N, C, H, W]", show(&shape))),
                };
                let mut params = vec![];
                if affine {
                    params.push(("weight", scale));
                    params.push(("bias", b));
                }
                params.extend([("running_mean", mean), ("running_var", var)]);
                params.push(("num_batches_tracked", Arr::ints(vec![], &[0])));
                self.layer(spec, params, node, name, x)
            }
            // On [N, C, L] the 1-d pools, read as the 2-d ones at height 1.
            "MaxPool" => {
                if a.string("auto_pad").is_some_and(|p| p != "NOTSET")
                    || a.int("storage_order", 0) != 0
                    || self.output_used(node, 1)
                {
                    return Err("auto_pad, storage_order or the Indices output: strata reads MaxPool as PyTorch's MaxPool2d exports it".into());
                }
                let one_d = rank == 3;
                let kernel_size = pair(lift_sizes(a.ints("kernel_shape"), one_d), (0, 0), "kernel_shape")?;
                let padding = symmetric_pads(&lift_pads(a.ints("pads"), one_d).unwrap_or_default())
                    .ok_or("asymmetric pads: PyTorch's max pools pad both sides equally")?;
                let o = MaxPool2dOptions {
                    kernel_size,
                    stride: pair(lift_sizes(a.ints("strides"), one_d), (1, 1), "strides")?,
                    padding,
                    dilation: pair(lift_sizes(a.ints("dilations"), one_d), (1, 1), "dilations")?,
                    ceil_mode: a.int("ceil_mode", 0) != 0,
                };
                let spec = if one_d { LayerSpec::MaxPool1d(o) } else { LayerSpec::MaxPool2d(o) };
                self.layer(spec, vec![], node, name, x)
            }
            "AveragePool" => {
                if a.string("auto_pad").is_some_and(|p| p != "NOTSET") {
                    return Err("auto_pad: strata reads AveragePool with explicit pads".into());
                }
                let one_d = rank == 3;
                let kernel_size = pair(lift_sizes(a.ints("kernel_shape"), one_d), (0, 0), "kernel_shape")?;
                let padding = symmetric_pads(&lift_pads(a.ints("pads"), one_d).unwrap_or_default())
                    .ok_or("asymmetric pads: PyTorch's average pools pad both sides equally")?;
                let mut o = AvgPool2dOptions::new(kernel_size);
                o.stride = pair(lift_sizes(a.ints("strides"), one_d), (1, 1), "strides")?;
                o.padding = padding;
                o.ceil_mode = a.int("ceil_mode", 0) != 0;
                // Without padding the choice changes nothing; keep PyTorch's default then.
                o.count_include_pad = a.int("count_include_pad", 0) != 0 || padding == (0, 0);
                let spec = if one_d { LayerSpec::AvgPool1d(o) } else { LayerSpec::AvgPool2d(o) };
                self.layer(spec, vec![], node, name, x)
            }
            "GlobalAveragePool" => {
                let spec = if rank == 3 {
                    LayerSpec::AdaptiveAvgPool1d { output_size: 1 }
                } else {
                    LayerSpec::AdaptiveAvgPool2d { output_size: (1, 1) }
                };
                self.layer(spec, vec![], node, name, x)
            }
            "LayerNormalization" => {
                if (1..node.output.len()).any(|k| self.output_used(node, k)) {
                    return Err("its Mean or InvStdDev output is used; strata's LayerNorm has neither".into());
                }
                let first = axis(a.int("axis", -1), rank)?;
                let normalized_shape =
                    (first..rank).map(|k| fixed(&shape, k)).collect::<std::result::Result<Vec<_>, _>>()?;
                let scale = need_const(1, "scale")?;
                let n = count(&normalized_shape)?;
                let bias = match cnst(2) {
                    Some(b) => b,
                    None => Arr::new(normalized_shape.clone(), vec![0.0; n]),
                };
                if scale.data.len() != n || bias.data.len() != n {
                    return Err(format!("its scale or bias does not have the normalised shape {normalized_shape:?}"));
                }
                let affine = scale.name.ends_with(".weight") || !(scale.all(1.0) && bias.all(0.0));
                let spec = LayerSpec::LayerNorm {
                    normalized_shape: normalized_shape.clone(),
                    eps: a.float("epsilon", 1e-5),
                    elementwise_affine: affine,
                };
                let params = if affine {
                    vec![
                        ("weight", scale.reshaped(normalized_shape.clone())),
                        ("bias", bias.reshaped(normalized_shape)),
                    ]
                } else {
                    vec![]
                };
                self.layer(spec, params, node, name, x)
            }
            "LSTM" | "GRU" | "RNN" => self.recurrent(node, name, &a, x, &shape, ins),
            "Transpose" => {
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&k| axis(k, rank)).collect::<std::result::Result<_, _>>()?,
                    None => (0..rank).rev().collect(),
                };
                let out = perm.iter().map(|&k| shape[k]).collect();
                self.pseudo(Op::Permute(perm), node, name, vec![x], out)
            }
            "Squeeze" => {
                let axes = match (cnst(1), a.ints("axes")) {
                    (Some(c), _) => c.to_i64(),
                    (None, Some(v)) => v,
                    (None, None) => (0..rank).filter(|&k| shape[k] == Dim::Fixed(1)).map(|k| k as i64).collect(),
                };
                let mut axes: Vec<usize> =
                    axes.iter().map(|&k| axis(k, rank)).collect::<std::result::Result<_, _>>()?;
                axes.sort_unstable();
                if axes.iter().any(|&k| shape[k] != Dim::Fixed(1)) {
                    return Err(format!("it squeezes a dimension of {} that is not 1", show(&shape)));
                }
                let out = (0..rank).filter(|k| !axes.contains(k)).map(|k| shape[k]).collect();
                self.pseudo(Op::Squeeze(axes), node, name, vec![x], out)
            }
            "Gather" => {
                let idx = need_const(1, "index")?;
                let ax = axis(a.int("axis", 0), rank)?;
                let len = fixed(&shape, ax)?;
                let [i] = idx.data.as_slice() else {
                    return Err("it gathers several indices; strata reads a single index (x[:, -1])".into());
                };
                if !idx.dims.is_empty() {
                    return Err("its index is not a scalar; strata reads x[:, -1]".into());
                }
                let i = *i as i64;
                let last = i == -1 || i == len as i64 - 1;
                let batch_first = match (rank, ax, shape.first(), shape.get(1)) {
                    (3, 1, Some(Dim::Batch), _) => Some(true),
                    (3, 0, _, Some(Dim::Batch)) => Some(false),
                    _ => None,
                };
                match (last, batch_first) {
                    (true, Some(batch_first)) => {
                        let out: Vec<Dim> = (0..rank).filter(|&k| k != ax).map(|k| shape[k]).collect();
                        let op = Op::Layer { spec: LayerSpec::LastStep { batch_first }, params: vec![] };
                        Ok(vec![self.push(op, module_path(name), (name, &node.op_type), vec![x], out)])
                    }
                    _ => Err(format!(
                        "it takes element {i} of dimension {ax} of {}; strata reads only a sequence's last step (LastStep: x[:, -1] of [N, T, F], x[-1] of [T, N, F])",
                        show(&shape)
                    )),
                }
            }
            "Slice" => {
                let starts = need_const(1, "starts")?.to_i64();
                let ends = need_const(2, "ends")?.to_i64();
                let axes = match cnst(3) {
                    Some(c) => c.to_i64(),
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = cnst(4).map(|c| c.to_i64()).unwrap_or_else(|| vec![1; starts.len()]);
                let (&[s], &[e], &[ax], &[st]) = (&starts[..], &ends[..], &axes[..], &steps[..]) else {
                    return Err("it slices several axes; strata reads x[:, -1:] only".into());
                };
                let ax = axis(ax, rank)?;
                let len = fixed(&shape, ax)? as i64;
                let s = if s < 0 { s + len } else { s };
                if st != 1 || s != len - 1 || e < len {
                    return Err(format!(
                        "it slices dimension {ax} of {} other than as x[:, -1:]; strata reads only a sequence's last step",
                        show(&shape)
                    ));
                }
                let mut out = shape.clone();
                out[ax] = Dim::Fixed(1);
                self.pseudo(Op::SliceLast(ax), node, name, vec![x], out)
            }
            _ => Err(unsupported_op(op)),
        }
    }

    /// `Add`, `Sum`, `Concat` of activations: a merge of branches.
    fn merge(&mut self, node: &NodeProto, name: &str, ins: &[Option<&Val>]) -> NodeResult {
        let mut xs = Vec::new();
        for v in ins {
            match v {
                Some(Val::Act(i)) => xs.push(*i),
                _ => return Err("it mixes activations and constants; strata merges branches of activations".into()),
            }
        }
        let shapes: Vec<Vec<Dim>> = xs.iter().map(|&i| self.dag.acts[i].shape.clone()).collect();
        let (op, out) = match node.op_type.as_str() {
            "Concat" => {
                let a = Attrs(&node.attribute).int("axis", 0);
                let ax = axis(a, shapes[0].len())?;
                let mut out = shapes[0].clone();
                let mut total = 0;
                for s in &shapes {
                    let ok = s.len() == out.len() && (0..s.len()).all(|k| k == ax || s[k] == out[k]);
                    if !ok {
                        return Err(format!(
                            "its inputs {} cannot be concatenated along axis {ax}",
                            shapes_list(&shapes)
                        ));
                    }
                    total += fixed(s, ax)?;
                }
                out[ax] = Dim::Fixed(total);
                (MergeOp::Concat(a), out)
            }
            op => {
                if shapes.iter().any(|s| s != &shapes[0]) {
                    return Err(format!(
                        "its inputs {} differ in shape; strata adds branches of equal shapes (no broadcasting)",
                        shapes_list(&shapes)
                    ));
                }
                (if op == "Add" { MergeOp::Add } else { MergeOp::Sum }, shapes[0].clone())
            }
        };
        self.pseudo(Op::Merge(op), node, name, xs, out)
    }

    /// `Gather(table, ids)`: an Embedding of token ids.
    fn embedding(&mut self, node: &NodeProto, name: &str, ins: &[Option<&Val>]) -> NodeResult {
        let (Some(Some(Val::Const(w))), Some(Some(Val::Act(ids)))) = (ins.first(), ins.get(1)) else {
            return Err(
                "strata reads Gather as an Embedding (a constant table indexed by token ids) or x[:, -1]".into()
            );
        };
        if w.dims.len() != 2 || Attrs(&node.attribute).int("axis", 0) != 0 {
            return Err("strata reads Gather on a constant as an Embedding: a 2-d table, axis 0".into());
        }
        let spec = LayerSpec::Embedding { num_embeddings: w.dims[0], embedding_dim: w.dims[1], padding_idx: None };
        let mut shape = self.dag.acts[*ids].shape.clone();
        shape.push(Dim::Fixed(w.dims[1]));
        let path = layer_path(name, &[w]);
        let op = Op::Layer { spec, params: vec![("weight".into(), w.clone())] };
        Ok(vec![self.push(op, path, (name, &node.op_type), vec![*ids], shape)])
    }

    /// `Reshape` of an activation: the identity, a flatten to `[N, features]`, or (as a
    /// pseudo-op) a bidirectional recurrent layer's `[T, N, 2, H]` → `[T, N, 2H]`.
    fn reshape(&mut self, node: &NodeProto, name: &str, x: usize, ins: &[Option<&Val>]) -> NodeResult {
        let shape = self.dag.acts[x].shape.clone();
        let Some((target, false)) = ins.get(1).copied().flatten().and_then(sym_ints) else {
            return Err("its target shape is not a constant or computed from the input's shape".into());
        };
        if Attrs(&node.attribute).int("allowzero", 0) != 0 {
            return Err("allowzero = 1 is not read".into());
        }
        let fixed: Vec<usize> =
            shape.iter().filter_map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect();
        let fixed_total = count(&fixed)?;
        let mut out: Vec<Option<Dim>> = Vec::new();
        for (k, t) in target.iter().enumerate() {
            out.push(match t {
                SymInt::Batch => Some(Dim::Batch),
                SymInt::Known(0) => Some(*shape.get(k).ok_or("a 0 in its target copies a dimension the input lacks")?),
                SymInt::Known(-1) => None,
                SymInt::Known(n) if *n > 0 => Some(Dim::Fixed(*n as usize)),
                SymInt::Known(n) => return Err(format!("target dimension {n} is not read")),
            });
        }
        let has_batch = out.contains(&Some(Dim::Batch));
        let known: Vec<usize> =
            out.iter().filter_map(|d| if let Some(Dim::Fixed(n)) = d { Some(*n) } else { None }).collect();
        let known = count(&known)?;
        let holes = out.iter().filter(|d| d.is_none()).count();
        let fill = match (holes, has_batch) {
            (0, _) => None,
            (1, true) if known > 0 && fixed_total.is_multiple_of(known) => Some(Dim::Fixed(fixed_total / known)),
            // `[-1, 784]`: the -1 takes the batch when the rest is one sample's size.
            (1, false) if known == fixed_total => Some(Dim::Batch),
            _ => return Err(format!("its target {target:?} does not fit the input {}", show(&shape))),
        };
        let out: Vec<Dim> = out.into_iter().map(|d| d.or(fill).expect("filled")).collect();
        if out == shape {
            return Ok(vec![Val::Act(x)]);
        }
        if shape.first() == Some(&Dim::Batch) && out == [Dim::Batch, Dim::Fixed(fixed_total)] {
            return self.layer(LayerSpec::Flatten { start_dim: 1, end_dim: -1 }, vec![], node, name, x);
        }
        self.pseudo(Op::Reshape, node, name, vec![x], out)
    }

    /// `Conv` as `Conv2d`, or on `[N, C, L]` as `Conv1d` (read as the 2-d one at height 1).
    fn conv(
        &mut self,
        node: &NodeProto,
        name: &str,
        a: &Attrs<'_>,
        x: usize,
        shape: &[Dim],
        ins: &[Option<&Val>],
    ) -> NodeResult {
        let Some(Some(Val::Const(w))) = ins.get(1) else {
            return Err("its weight must be a constant".into());
        };
        let one_d = shape.len() == 3 && w.dims.len() == 3;
        if !one_d && (shape.len() != 4 || w.dims.len() != 4) {
            return Err(format!(
                "input {} and weight {:?}: strata reads 1-d and 2-d convolutions (Conv1d, Conv2d)",
                show(shape),
                w.dims
            ));
        }
        let groups = a.int("group", 1).max(1) as usize;
        let kernel_size = if one_d { (1, w.dims[2]) } else { (w.dims[2], w.dims[3]) };
        let channels = fixed(shape, 1)?;
        if w.dims[1].checked_mul(groups) != Some(channels) {
            return Err(format!(
                "its weight {:?} takes {} input channels in {groups} group(s), its input {} has {channels}",
                w.dims,
                w.dims[1],
                show(shape)
            ));
        }
        let mut c = ConvSpec::new(Some(channels), w.dims[0], kernel_size);
        c.stride = pair(lift_sizes(a.ints("strides"), one_d), (1, 1), "strides")?;
        c.dilation = pair(lift_sizes(a.ints("dilations"), one_d), (1, 1), "dilations")?;
        c.groups = groups;
        // Saturating: a damaged file can give any dilation, and a kernel of size 0 (refused by
        // the shape check).
        let span = |d: usize, k: usize| d.saturating_mul(k.saturating_sub(1));
        let span = (span(c.dilation.0, kernel_size.0), span(c.dilation.1, kernel_size.1));
        let same = [span.0 / 2, span.1 / 2, span.0 - span.0 / 2, span.1 - span.1 / 2].map(|p| p as i64);
        match a.string("auto_pad").as_deref() {
            None | Some("NOTSET") => {
                let pads = lift_pads(a.ints("pads"), one_d).unwrap_or_default();
                match symmetric_pads(&pads) {
                    Some(p) => c.padding = p,
                    None if pads == same && c.stride == (1, 1) => c.padding_same = true,
                    None => {
                        return Err(format!(
                            "pads {:?}: PyTorch's convolutions pad both sides equally (or as padding = \"same\")",
                            a.ints("pads").unwrap_or_default()
                        ));
                    }
                }
            }
            Some("VALID") => {}
            Some("SAME_UPPER") if c.stride == (1, 1) => c.padding_same = true,
            Some(other) => {
                return Err(format!("auto_pad = {other} is not read (NOTSET, VALID, SAME_UPPER with stride 1 are)"));
            }
        }
        // A Conv1d's weight is [O, C/g, k], as ONNX's.
        let mut params = vec![("weight", w.clone())];
        match ins.get(2) {
            None | Some(None) => c.bias = false,
            Some(Some(Val::Const(b))) if b.data.len() == w.dims[0] => {
                params.push(("bias", b.reshaped(vec![w.dims[0]])))
            }
            Some(_) => return Err("its bias must be a constant with one value per output channel".into()),
        }
        let spec = if one_d { LayerSpec::Conv1d(c) } else { LayerSpec::Conv2d(c) };
        self.layer(spec, params, node, name, x)
    }

    /// `LSTM`, `GRU`, `RNN` as the PyTorch layer with its gate order (its output `Y` in ONNX's
    /// `[T, D, N, H]` layout until `tree.rs` matches the transposes around it).
    fn recurrent(
        &mut self,
        node: &NodeProto,
        name: &str,
        a: &Attrs<'_>,
        x: usize,
        shape: &[Dim],
        ins: &[Option<&Val>],
    ) -> NodeResult {
        let op = node.op_type.as_str();
        if shape.len() != 3 || shape[1] != Dim::Batch {
            return Err(format!(
                "its input {} is not [T, N, F] with the batch second (ONNX's layout 0, as torch.onnx.export writes it)",
                show(shape)
            ));
        }
        if a.int("layout", 0) != 0 || a.get("clip").is_some() || a.int("input_forget", 0) != 0 {
            return Err("layout = 1, clip or input_forget: PyTorch's recurrent layers have none of these".into());
        }
        let direction = a.string("direction").unwrap_or_else(|| "forward".into());
        let d = match direction.as_str() {
            "forward" => 1,
            "bidirectional" => 2,
            other => return Err(format!("direction = {other}: PyTorch's layers run forward or in both directions")),
        };
        let (kind, order): (RecurrentKind, &[usize]) = match op {
            // ONNX i, o, f, c → PyTorch i, f, g, o.
            "LSTM" => (RecurrentKind::Lstm, &[0, 2, 3, 1][..]),
            // ONNX z, r, h → PyTorch r, z, n; PyTorch applies r after the hidden matmul.
            "GRU" => {
                if a.int("linear_before_reset", 0) != 1 {
                    return Err("linear_before_reset = 0: PyTorch's GRU is linear_before_reset = 1".into());
                }
                (RecurrentKind::Gru, &[1, 0, 2][..])
            }
            _ => {
                let acts = a.strings("activations").unwrap_or_else(|| vec!["Tanh".into()]);
                match acts.first().map(String::as_str) {
                    Some("Tanh") | Some("") | None => (RecurrentKind::RnnTanh, &[0][..]),
                    Some("Relu") => (RecurrentKind::RnnRelu, &[0][..]),
                    Some(other) => return Err(format!("activation {other}: PyTorch's RNN uses Tanh or Relu")),
                }
            }
        };
        if op == "LSTM" && a.get("activations").is_some() {
            return Err("custom activations: PyTorch's LSTM uses Sigmoid, Tanh, Tanh".into());
        }
        for (k, what) in [(4, "sequence_lens"), (7, "peepholes (P)")] {
            if matches!(ins.get(k), Some(Some(_))) {
                return Err(format!("its {what} input is set; PyTorch's layers have none"));
            }
        }
        for k in [5, 6] {
            match ins.get(k) {
                None | Some(None) | Some(Some(Val::Zeros)) => {}
                Some(Some(Val::Const(c))) if c.all(0.0) => {}
                Some(_) => return Err("it starts from a given state; strata's layers start from zeros".into()),
            }
        }
        if self.output_used(node, 1) || self.output_used(node, 2) {
            return Err("its final state output (Y_h or Y_c) is used; strata reads the sequence output Y (then x[:, -1] for the last step)".into());
        }
        let (Some(Some(Val::Const(w))), Some(Some(Val::Const(r)))) = (ins.get(1), ins.get(2)) else {
            return Err("its weights W and R must be constants".into());
        };
        let h = a.int("hidden_size", 0).max(0) as usize;
        let g = kind.gates();
        let input_size = fixed(shape, 2)?;
        // h is bounded by W's size before any product with it (a damaged file can say anything).
        if h == 0 || h > w.data.len() || w.dims != [d, g * h, input_size] || r.dims != [d, g * h, h] {
            return Err(format!(
                "W {:?} and R {:?} do not fit hidden_size {h}, {d} direction(s) and {input_size} input features",
                w.dims, r.dims
            ));
        }
        let b = match ins.get(3) {
            None | Some(None) => None,
            Some(Some(Val::Const(b))) if b.dims == [d, 2 * g * h] => Some(b.clone()),
            Some(_) => return Err(format!("its bias B must be a constant of shape [{d}, {}]", 2 * g * h)),
        };
        // Rows of a [G·H, K] block matrix, the gate blocks in PyTorch's order.
        let reorder = |m: &[f64], cols: usize| -> Vec<f64> {
            order.iter().flat_map(|&blk| m[blk * h * cols..(blk + 1) * h * cols].iter().copied()).collect()
        };
        let mut params = Vec::new();
        for dir in 0..d {
            let suffix = if dir == 1 { "_reverse" } else { "" };
            let wd = &w.data[dir * g * h * input_size..(dir + 1) * g * h * input_size];
            let rd = &r.data[dir * g * h * h..(dir + 1) * g * h * h];
            params.push((format!("weight_ih_l0{suffix}"), Arr::new(vec![g * h, input_size], reorder(wd, input_size))));
            params.push((format!("weight_hh_l0{suffix}"), Arr::new(vec![g * h, h], reorder(rd, h))));
            if let Some(b) = &b {
                let bd = &b.data[dir * 2 * g * h..(dir + 1) * 2 * g * h];
                params.push((format!("bias_ih_l0{suffix}"), Arr::new(vec![g * h], reorder(&bd[..g * h], 1))));
                params.push((format!("bias_hh_l0{suffix}"), Arr::new(vec![g * h], reorder(&bd[g * h..], 1))));
            }
        }
        let mut spec = RecurrentSpec::new(kind, Some(input_size), h);
        spec.bias = b.is_some();
        spec.bidirectional = d == 2;
        let out = vec![shape[0], Dim::Fixed(d), Dim::Batch, Dim::Fixed(h)];
        let y = self.push(Op::Recurrent { spec, params }, module_path(name), (name, op), vec![x], out);
        Ok(vec![y, Val::Unknown, Val::Unknown])
    }

    /// A node on constants and shape values only: computed here.
    fn constant_node(&mut self, node: &NodeProto, a: &Attrs<'_>, ins: &[Option<&Val>]) -> NodeResult {
        let op = node.op_type.as_str();
        let get = |k: usize| ins.get(k).copied().flatten();
        let cnst = |k: usize| match get(k) {
            Some(Val::Const(c)) => Some(c.clone()),
            _ => None,
        };
        let ints = |k: usize| get(k).and_then(sym_ints);
        let one = |v: Val| Ok(vec![v]);
        match op {
            "Constant" => {
                if let Some(t) = a.get("value").and_then(|v| v.t.as_ref()) {
                    return one(Val::Const(tensor_arr(t)?));
                }
                if let Some(v) = a.get("value_float") {
                    return one(Val::Const(Arr::new(vec![], vec![short(v.f)])));
                }
                if let Some(v) = a.get("value_floats") {
                    return one(Val::Const(Arr::new(
                        vec![v.floats.len()],
                        v.floats.iter().map(|&f| short(f)).collect(),
                    )));
                }
                if let Some(v) = a.get("value_int") {
                    return one(Val::Const(Arr::ints(vec![], &[v.i])));
                }
                if let Some(v) = a.get("value_ints") {
                    return one(Val::Const(Arr::ints(vec![v.ints.len()], &v.ints)));
                }
                Err("a Constant without a tensor, float or int value is not read".into())
            }
            "Identity" => one(get(0).cloned().unwrap_or(Val::Unknown)),
            "Cast" => match get(0) {
                Some(Val::Const(c)) => {
                    let int =
                        !matches!(a.int("to", 1) as i32, super::super::proto::FLOAT | super::super::proto::DOUBLE);
                    let data = if int { c.data.iter().map(|v| v.trunc()).collect() } else { c.data.clone() };
                    one(Val::Const(Arr { data, int, ..c.clone() }))
                }
                Some(v) => one(v.clone()),
                None => Err("Cast of nothing".into()),
            },
            "Shape" => {
                let dims: Vec<SymInt> = match get(0) {
                    Some(Val::Const(c)) => c.dims.iter().map(|&d| SymInt::Known(d as i64)).collect(),
                    _ => return Err("Shape of a value that is neither an activation nor a constant".into()),
                };
                one(ints_val(slice_range(&dims, a.get("start").map(|v| v.i), a.get("end").map(|v| v.i)), false))
            }
            "Gather" => {
                let (Some((data, false)), Some(idx)) = (ints(0), cnst(1)) else {
                    return Err("strata computes Gather on a 1-d list of sizes only".into());
                };
                let mut out = Vec::new();
                for i in idx.to_i64() {
                    let k = axis(i, data.len())?;
                    out.push(data[k]);
                }
                one(ints_val(out, idx.dims.is_empty()))
            }
            "Unsqueeze" | "Squeeze" => {
                let axes = cnst(1).map(|c| c.to_i64()).or_else(|| a.ints("axes")).unwrap_or_default();
                match get(0) {
                    Some(Val::Const(c)) => {
                        let mut dims = c.dims.clone();
                        if op == "Unsqueeze" {
                            let rank = dims.len() + axes.len();
                            let ks = distinct_axes(&axes, rank)?;
                            for k in ks {
                                dims.insert(k, 1);
                            }
                        } else if axes.is_empty() {
                            dims.retain(|&d| d != 1);
                        } else {
                            let ks = distinct_axes(&axes, dims.len())?;
                            for k in ks.into_iter().rev() {
                                dims.remove(k);
                            }
                        }
                        one(Val::Const(c.reshaped(dims)))
                    }
                    Some(Val::Ints { values, scalar: true }) if op == "Unsqueeze" && axes == [0] => {
                        one(Val::Ints { values: values.clone(), scalar: false })
                    }
                    Some(Val::Ints { values, scalar: false }) if op == "Squeeze" && values.len() == 1 => {
                        one(Val::Ints { values: values.clone(), scalar: true })
                    }
                    _ => Err(format!("{op} of a batch-dependent size list is not read")),
                }
            }
            "Concat" => {
                let mut out = Vec::new();
                for k in 0..ins.len() {
                    match ints(k) {
                        Some((v, false)) => out.extend(v),
                        _ => return Err("strata computes Concat of 1-d constant lists only".into()),
                    }
                    if out.len() > MAX_COMPUTED {
                        return Err(format!(
                            "Concat makes more than the {MAX_COMPUTED} values strata computes for a size list"
                        ));
                    }
                }
                one(ints_val(out, false))
            }
            // A stacked recurrent layer's zero state, sliced per layer.
            "Slice" if matches!(get(0), Some(Val::Zeros)) => one(Val::Zeros),
            "Slice" => {
                let (Some((data, false)), Some(s), Some(e)) = (ints(0), cnst(1), cnst(2)) else {
                    return Err("strata computes Slice of a 1-d list only".into());
                };
                if cnst(4).is_some_and(|st| !st.all(1.0)) {
                    return Err("Slice with steps is not computed".into());
                }
                let (s, e) = (s.to_i64(), e.to_i64());
                one(ints_val(slice_range(&data, s.first().copied(), e.first().copied()), false))
            }
            "ConstantOfShape" => {
                let value = match a.get("value").and_then(|v| v.t.as_ref()) {
                    Some(t) => tensor_arr(t)?,
                    None => Arr::new(vec![1], vec![0.0]),
                };
                let fill = value.data.first().copied().unwrap_or(0.0);
                match get(0).and_then(sym_ints) {
                    Some((dims, _)) if dims.iter().all(|d| matches!(d, SymInt::Known(n) if *n >= 0)) => {
                        let dims: Vec<usize> =
                            dims.iter().map(|d| if let SymInt::Known(n) = d { *n as usize } else { 0 }).collect();
                        let n = count(&dims)?;
                        if n > MAX_COMPUTED {
                            return Err(format!(
                                "ConstantOfShape of {dims:?} makes {n} values, more than the {MAX_COMPUTED} strata computes for a size list"
                            ));
                        }
                        one(Val::Const(Arr { dims, data: vec![fill; n], int: value.int, name: String::new() }))
                    }
                    Some(_) if fill == 0.0 => one(Val::Zeros),
                    _ => Err("ConstantOfShape of a batch-dependent shape with a value other than 0".into()),
                }
            }
            "Expand" => match get(0) {
                Some(Val::Zeros) => one(Val::Zeros),
                Some(Val::Const(c)) if c.all(0.0) => one(Val::Zeros),
                _ => Err("Expand of a constant other than zeros is not computed".into()),
            },
            "Transpose" => {
                let c = cnst(0).ok_or("Transpose of a size list")?;
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&k| axis(k, c.dims.len())).collect::<std::result::Result<_, _>>()?,
                    None => (0..c.dims.len()).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if !sorted.iter().copied().eq(0..c.dims.len()) {
                    return Err(format!("perm {perm:?} is not a permutation of the {} axes", c.dims.len()));
                }
                one(Val::Const(c.permuted(&perm)))
            }
            "Reshape" => {
                let (Some(c), Some(t)) = (cnst(0), cnst(1)) else {
                    return Err("Reshape of a constant to a batch-dependent shape is not computed".into());
                };
                let t = t.to_i64();
                let mut dims = Vec::with_capacity(t.len());
                let mut hole = None;
                for (k, &v) in t.iter().enumerate() {
                    match v {
                        -1 if hole.is_none() => {
                            hole = Some(k);
                            dims.push(1);
                        }
                        0 => dims.push(*c.dims.get(k).ok_or("a 0 in a Reshape target copies a missing dimension")?),
                        v if v > 0 => dims.push(v as usize),
                        _ => return Err(format!("Reshape target {t:?} is not read")),
                    }
                }
                if let Some(h) = hole {
                    let rest = count(&dims)?;
                    if rest == 0 || c.data.len() % rest != 0 {
                        return Err(format!("Reshape of a {:?} constant to {t:?}", c.dims));
                    }
                    dims[h] = c.data.len() / rest;
                }
                if count(&dims)? != c.data.len() {
                    return Err(format!("Reshape of a {:?} constant to {t:?}", c.dims));
                }
                one(Val::Const(c.reshaped(dims)))
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (Some(x), Some(y)) = (cnst(0), cnst(1)) else {
                    return Err(format!("{op} on batch-dependent sizes is not computed"));
                };
                let both_int = x.int && y.int;
                let f = |p: f64, q: f64| match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ if both_int => (p / q).trunc(),
                    _ => p / q,
                };
                let data: Vec<f64> = if x.data.len() == y.data.len() {
                    x.data.iter().zip(&y.data).map(|(&p, &q)| f(p, q)).collect()
                } else if y.data.len() == 1 {
                    x.data.iter().map(|&p| f(p, y.data[0])).collect()
                } else if x.data.len() == 1 {
                    return one(Val::Const(Arr { data: y.data.iter().map(|&q| f(x.data[0], q)).collect(), ..y }));
                } else {
                    return Err(format!("{op} of constants of shapes {:?} and {:?} is not computed", x.dims, y.dims));
                };
                one(Val::Const(Arr { data, ..x }))
            }
            _ => Err(unsupported_op(op)),
        }
    }
}

/// `data[start..end]` with ONNX's clamping of negative and large bounds.
fn slice_range(data: &[SymInt], start: Option<i64>, end: Option<i64>) -> Vec<SymInt> {
    let n = data.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
    let (s, e) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(n)));
    if s >= e { vec![] } else { data[s..e].to_vec() }
}

/// `[N, 3], [N, 4]`.
fn shapes_list(shapes: &[Vec<Dim>]) -> String {
    shapes.iter().map(|s| show(s)).collect::<Vec<_>>().join(", ")
}

/// The ops strata reads (in some configurations).
const READ_OPS: &[&str] = &[
    "Identity",
    "Dropout",
    "Relu",
    "Gelu",
    "Swish",
    "Mish",
    "HardSwish",
    "HardSigmoid",
    "Clip",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Add",
    "Sum",
    "Concat",
    "Conv",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "LayerNormalization",
    "LSTM",
    "GRU",
    "RNN",
    "Transpose",
    "Squeeze",
    "Gather",
    "Slice",
    "Shape",
    "Constant",
    "Cast",
    "Unsqueeze",
    "ConstantOfShape",
    "Expand",
    "Sub",
    "Mul",
    "Div",
];

/// The reason for an op strata has no reading of.
fn unsupported_op(op: &str) -> String {
    format!("strata has no layer for the ONNX op {op}")
}
