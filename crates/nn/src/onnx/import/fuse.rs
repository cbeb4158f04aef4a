//! GELU, SiLU and Mish spelled out in elementary ops, found and read as one `Gelu`, `Swish` or
//! `Mish` node before the graph is evaluated. ONNX has a `Gelu` op only from opset 20; before it, `torch.onnx.export` (opset
//! 17, `dynamo=False`) and strata's own export write `nn.GELU()` as
//! `Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)` and `nn.GELU(approximate='tanh')` as
//! `Mul(Mul(x, Add(Tanh(Mul(Add(x, Mul(x³, 0.044715)), √(2/π))), 1)), 0.5)` (x³ as
//! `Mul(Mul(x, x), x)` or `Pow(x, 3)`), each operand pair in either order. Only a chain whose
//! intermediate values feed nothing else is taken; anything else is left for the evaluator,
//! which reports its ops as unsupported.
//!
//! ONNX has no SiLU before opset 24's `Swish`: `torch.onnx.export` and strata's export write
//! `nn.SiLU()` as `Mul(x, Sigmoid(x))`, read here as `Swish` with `alpha = 1`; before opset 18's
//! `Mish`, `nn.Mish()` is `Mul(x, Tanh(Softplus(x)))`.

use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto, attribute_type};
use std::collections::HashMap;

/// The graph's nodes with each GELU chain replaced by one `Gelu` node (attribute
/// `approximate`: `"none"` or `"tanh"`, as opset 20's), each SiLU pair by one `Swish` node
/// (opset 24's, `alpha = 1`) and each Mish chain by one `Mish` node (opset 18's), placed where the chain's last node was and named as it (its
/// module path is the layer's).
pub(super) fn fuse(graph: &GraphProto) -> Vec<NodeProto> {
    let nodes = &graph.node;
    let g = Graph::new(graph);
    let mut removed = vec![false; nodes.len()];
    let mut replaced: HashMap<usize, NodeProto> = HashMap::new();
    for (k, node) in nodes.iter().enumerate() {
        let (chain, op, attribute) = match node.op_type.as_str() {
            "Erf" | "Tanh" => {
                let approximate = if node.op_type == "Erf" { "none" } else { "tanh" };
                let Some(chain) = g.gelu_at(k, approximate) else { continue };
                let attribute = AttributeProto {
                    name: "approximate".into(),
                    r#type: attribute_type::STRING,
                    s: approximate.as_bytes().to_vec(),
                    ..Default::default()
                };
                (chain, "Gelu", attribute)
            }
            "Softplus" => {
                let Some(chain) = g.mish_at(k) else { continue };
                (chain, "Mish", AttributeProto::default())
            }
            "Sigmoid" => {
                let Some(chain) = g.silu_at(k) else { continue };
                let attribute = AttributeProto {
                    name: "alpha".into(),
                    r#type: attribute_type::FLOAT,
                    f: 1.0,
                    ..Default::default()
                };
                (chain, "Swish", attribute)
            }
            _ => continue,
        };
        if chain.nodes.iter().any(|&i| removed[i]) {
            continue;
        }
        for &i in &chain.nodes {
            removed[i] = true;
        }
        let last = &nodes[chain.last];
        replaced.insert(
            chain.last,
            NodeProto {
                input: vec![chain.x],
                output: last.output.clone(),
                name: last.name.clone(),
                op_type: op.into(),
                attribute: if attribute.name.is_empty() { vec![] } else { vec![attribute] },
                ..Default::default()
            },
        );
    }
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match replaced.remove(&i) {
            Some(gelu) => Some(gelu),
            None if removed[i] => None,
            None => Some(n.clone()),
        })
        .collect()
}

/// A matched chain: its input, its nodes and the last of them.
struct Chain {
    x: String,
    nodes: Vec<usize>,
    last: usize,
}

/// What the matcher needs of the graph: scalar constants, each value's producer and readers.
struct Graph<'a> {
    nodes: &'a [NodeProto],
    scalars: HashMap<&'a str, f64>,
    producer: HashMap<&'a str, usize>,
    readers: HashMap<&'a str, Vec<usize>>,
    outputs: Vec<&'a str>,
}

impl<'a> Graph<'a> {
    fn new(graph: &'a GraphProto) -> Graph<'a> {
        let mut scalars = HashMap::new();
        for t in &graph.initializer {
            if let Ok(a) = super::eval::tensor_arr(t)
                && a.data.len() == 1
            {
                scalars.insert(t.name.as_str(), a.data[0]);
            }
        }
        let (mut producer, mut readers) = (HashMap::new(), HashMap::<&str, Vec<usize>>::new());
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for input in &n.input {
                readers.entry(input.as_str()).or_default().push(i);
            }
            if n.op_type == "Constant"
                && let [out] = n.output.as_slice()
                && let Some(v) = constant_scalar(n)
            {
                scalars.insert(out.as_str(), v);
            }
        }
        let outputs = graph.output.iter().map(|o| o.name.as_str()).collect();
        Graph { nodes: &graph.node, scalars, producer, readers, outputs }
    }

    /// The node producing `value` when it is `op` and `value` feeds nothing but `reader`.
    fn only_into(&self, value: &str, op: &str, reader: usize) -> Option<usize> {
        let p = *self.producer.get(value)?;
        let single = self.readers.get(value).is_some_and(|r| r.iter().all(|&i| i == reader));
        (self.nodes[p].op_type == op && single && !self.outputs.contains(&value)).then_some(p)
    }

    /// The sole reader of node `i`'s output, when it is `op` and the output is not the graph's.
    fn next(&self, i: usize, op: &str) -> Option<usize> {
        let [out] = self.nodes[i].output.as_slice() else { return None };
        let readers = self.readers.get(out.as_str())?;
        let &[r] = readers.as_slice() else { return None };
        (self.nodes[r].op_type == op && !self.outputs.contains(&out.as_str())).then_some(r)
    }

    /// Whether input `value` is the scalar constant `want` (to f32's precision).
    fn is(&self, value: &str, want: f64) -> bool {
        self.scalars.get(value).is_some_and(|&v| (v - want).abs() <= 1e-6 * want.abs().max(1.0))
    }

    /// The other operand of a two-input node, given one of its operands' test.
    fn other<'n>(&self, node: &'n NodeProto, test: impl Fn(&str) -> bool) -> Option<&'n str> {
        match node.input.as_slice() {
            [a, b] if test(a) => Some(b),
            [a, b] if test(b) => Some(a),
            _ => None,
        }
    }

    /// The GELU chain around the `Erf` or `Tanh` node `core`.
    fn gelu_at(&self, core: usize, approximate: &str) -> Option<Chain> {
        let c = &self.nodes[core];
        let [inner] = c.input.as_slice() else { return None };
        let mut nodes = vec![core];
        // x, from the core's argument.
        let x = if approximate == "none" {
            // x / √2, or x · (1/√2).
            let d = self.only_into(inner, "Div", core).or_else(|| self.only_into(inner, "Mul", core))?;
            let dn = &self.nodes[d];
            nodes.push(d);
            match dn.op_type.as_str() {
                "Div" if dn.input.len() == 2 && self.is(&dn.input[1], std::f64::consts::SQRT_2) => dn.input[0].clone(),
                "Mul" => self.other(dn, |v| self.is(v, std::f64::consts::FRAC_1_SQRT_2))?.to_string(),
                _ => return None,
            }
        } else {
            // (x + x³ · 0.044715) · √(2/π).
            let s = self.only_into(inner, "Mul", core)?;
            let sum_name = self.other(&self.nodes[s], |v| self.is(v, (2.0 / std::f64::consts::PI).sqrt()))?;
            let sum = self.only_into(sum_name, "Add", s)?;
            nodes.extend([s, sum]);
            let sn = &self.nodes[sum];
            let [a, b] = sn.input.as_slice() else { return None };
            let (x, cube) = [(a, b), (b, a)].into_iter().find_map(|(x, k)| {
                let kx3 = self.only_into(k, "Mul", sum)?;
                let x3_name = self.other(&self.nodes[kx3], |v| self.is(v, 0.044715))?;
                let x3 = self.cube_of(x3_name, x, kx3)?;
                Some((x.clone(), [vec![kx3], x3].concat()))
            })?;
            nodes.extend(cube);
            x
        };
        // 0.5 · (x · (1 + core)).
        let add = self.next(core, "Add")?;
        self.other(&self.nodes[add], |v| self.is(v, 1.0))?;
        let mul = self.next(add, "Mul")?;
        self.other(&self.nodes[mul], |v| v == x)?;
        let half = self.next(mul, "Mul")?;
        self.other(&self.nodes[half], |v| self.is(v, 0.5))?;
        nodes.extend([add, mul, half]);
        Some(Chain { x, nodes, last: half })
    }

    /// The SiLU pair `Mul(x, Sigmoid(x))` (operands in either order) around the `Sigmoid` node
    /// `sig`, whose output feeds nothing else.
    fn silu_at(&self, sig: usize) -> Option<Chain> {
        let [x] = self.nodes[sig].input.as_slice() else { return None };
        let mul = self.next(sig, "Mul")?;
        let [out] = self.nodes[sig].output.as_slice() else { return None };
        let mn = &self.nodes[mul];
        let pair = matches!(mn.input.as_slice(), [a, b] if (a == x && b == out) || (a == out && b == x));
        pair.then(|| Chain { x: x.clone(), nodes: vec![sig, mul], last: mul })
    }

    /// The Mish chain `Mul(x, Tanh(Softplus(x)))` (operands in either order) around the
    /// `Softplus` node `sp`, its intermediate values feeding nothing else.
    fn mish_at(&self, sp: usize) -> Option<Chain> {
        let [x] = self.nodes[sp].input.as_slice() else { return None };
        let tanh = self.next(sp, "Tanh")?;
        let mul = self.next(tanh, "Mul")?;
        let [t] = self.nodes[tanh].output.as_slice() else { return None };
        let pair = matches!(self.nodes[mul].input.as_slice(), [a, b] if (a == x && b == t) || (a == t && b == x));
        pair.then(|| Chain { x: x.clone(), nodes: vec![sp, tanh, mul], last: mul })
    }

    /// The nodes making `value` = x³ for `reader` (`Mul(Mul(x, x), x)` in either order, or
    /// `Pow(x, 3)`).
    fn cube_of(&self, value: &str, x: &str, reader: usize) -> Option<Vec<usize>> {
        if let Some(p) = self.only_into(value, "Pow", reader) {
            let pn = &self.nodes[p];
            return (pn.input.len() == 2 && pn.input[0] == x && self.is(&pn.input[1], 3.0)).then(|| vec![p]);
        }
        let m = self.only_into(value, "Mul", reader)?;
        let sq_name = self.other(&self.nodes[m], |v| v == x)?;
        let sq = self.only_into(sq_name, "Mul", m)?;
        (self.nodes[sq].input.iter().all(|v| v == x) && self.nodes[sq].input.len() == 2).then(|| vec![m, sq])
    }
}

/// A `Constant` node's value when it is one number.
fn constant_scalar(n: &NodeProto) -> Option<f64> {
    let a = n.attribute.first()?;
    match a.name.as_str() {
        "value" => super::eval::tensor_arr(a.t.as_ref()?).ok().filter(|t| t.data.len() == 1).map(|t| t.data[0]),
        "value_float" => Some(f64::from(a.f)),
        _ => None,
    }
}
