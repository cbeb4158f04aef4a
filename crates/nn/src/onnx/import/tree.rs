//! From the layer-level graph to strata's chain of named layers: a fork and the merge where its
//! branches meet become a residual block (`Add`) or branches (`Sum`, `Concat`); the transposes
//! and squeezes torch writes around a recurrent node become its `batch_first`; a `MatMul` and
//! the `Add` of its bias become one Linear. Names come from PyTorch's module paths (dotted
//! paths become nested blocks), so state_dict keys are PyTorch's wherever the structures agree.

use super::graph::{Arr, Dag, LNode, MergeOp, Op};
use crate::check::shape::Dim;
use crate::error::UnsupportedNode;
use crate::init::LayerInit;
use crate::spec::{LayerSpec, Merge, NamedLayer};
use std::collections::HashSet;

/// One element of a chain.
#[derive(Clone, Debug)]
enum Item {
    /// A node (a layer, or a pseudo-op still to be matched).
    Node(LNode),
    /// `body(x) + shortcut(x)`; `node` is the `Add`.
    Residual { node: LNode, body: Vec<Item>, shortcut: Option<Vec<Item>> },
    /// Branches merged by `Sum` or `Concat` (`node`).
    Branches { node: LNode, branches: Vec<Vec<Item>>, merge: Merge },
}

impl Item {
    /// The node that names the item (a container's merge node).
    fn node(&self) -> &LNode {
        match self {
            Item::Node(n) | Item::Residual { node: n, .. } | Item::Branches { node: n, .. } => n,
        }
    }

    /// Whether it holds tensors (or is a container), so its name is worth keeping.
    fn has_params(&self) -> bool {
        match self {
            Item::Node(n) => n.op.has_params(),
            _ => true,
        }
    }

    /// Whether this item, or any inside it, comes from a module path under `prefix`.
    fn under(&self, prefix: &str) -> bool {
        match self {
            Item::Node(n) => n.path.starts_with(prefix),
            Item::Residual { body, shortcut, .. } => {
                body.iter().chain(shortcut.iter().flatten()).any(|i| i.under(prefix))
            }
            Item::Branches { branches, .. } => branches.iter().flatten().any(|i| i.under(prefix)),
        }
    }
}

/// The model's layers and its tensors by state_dict key.
pub struct Built {
    /// The top-level chain.
    pub layers: Vec<NamedLayer>,
    /// `(key, tensor)` in chain order.
    pub params: Vec<(String, Arr)>,
}

/// The chain of `dag` from its input to its output, or every node that does not fit.
pub fn build(dag: &Dag) -> std::result::Result<Built, Vec<UnsupportedNode>> {
    let w = Walker { dag, consumers: dag.consumers() };
    let mut errors = Vec::new();
    let (items, end, merge) = w.chain(0, &mut errors);
    if errors.is_empty() {
        if let Some(m) = merge {
            errors.extend(dag.nodes[m].unsupported(
                "it merges activations that do not branch from one point; strata reads forks that meet again in one Add, Sum or Concat",
            ));
        } else if end != dag.output {
            let blame = dag.nodes.iter().find(|n| n.output == dag.output);
            let reason = "the graph's output is not at the end of its chain of layers (it is inside a branch, or other values are computed after it)";
            match blame {
                Some(n) => errors.extend(n.unsupported(reason)),
                None => errors.push(UnsupportedNode {
                    name: "(graph output)".into(),
                    op_type: "-".into(),
                    reason: reason.into(),
                }),
            }
        }
    }
    let items = fuse(items, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut params = Vec::new();
    let layers = name_chain(items, "", "", &mut params);
    Ok(Built { layers, params })
}

/// Walks chains through the graph.
struct Walker<'a> {
    dag: &'a Dag,
    consumers: Vec<Vec<usize>>,
}

impl Walker<'_> {
    /// The chain from activation `start` to the end of the graph or to the first merge node
    /// it reaches (returned, with the activation that enters it).
    fn chain(&self, start: usize, errors: &mut Vec<UnsupportedNode>) -> (Vec<Item>, usize, Option<usize>) {
        let nodes = &self.dag.nodes;
        let mut items = Vec::new();
        let mut cur = start;
        loop {
            let cons = &self.consumers[cur];
            if cons.is_empty() {
                return (items, cur, None);
            }
            if let [n] = cons[..] {
                if nodes[n].inputs.len() > 1 {
                    return (items, cur, Some(n));
                }
                items.push(Item::Node(nodes[n].clone()));
                cur = nodes[n].output;
                continue;
            }
            // A fork: walk each branch to the merge where they meet.
            let mut branches: Vec<(Vec<Item>, usize)> = Vec::new();
            let mut merges = Vec::new();
            for &c in cons {
                let (b, end, m) = if nodes[c].inputs.len() > 1 {
                    (vec![], cur, Some(c))
                } else {
                    let (mut b, end, m) = self.chain(nodes[c].output, errors);
                    b.insert(0, Item::Node(nodes[c].clone()));
                    (b, end, m)
                };
                merges.push(m);
                branches.push((b, end));
            }
            let fork_error = |errors: &mut Vec<UnsupportedNode>, reason: &str| {
                for &c in cons {
                    errors.extend(nodes[c].unsupported(reason));
                }
            };
            let m = match merges[0] {
                Some(m) if merges.iter().all(|x| *x == Some(m)) => m,
                _ => {
                    fork_error(
                        errors,
                        "the branches that read the same value here do not meet again in one Add, Sum or Concat; strata reads residual blocks and branches that merge once",
                    );
                    return (items, usize::MAX, None);
                }
            };
            let merge = &nodes[m];
            // The branches in the merge's input order.
            let mut ordered = Vec::new();
            for &inp in &merge.inputs {
                match branches.iter().position(|(_, end)| *end == inp) {
                    Some(k) => ordered.push(branches.remove(k).0),
                    None => {
                        errors.extend(
                            merge.unsupported(
                                "one of its inputs does not come from the fork its other inputs branch from",
                            ),
                        );
                        return (items, usize::MAX, None);
                    }
                }
            }
            if !branches.is_empty() {
                errors.extend(merge.unsupported("a branch reaches it twice"));
                return (items, usize::MAX, None);
            }
            let item = match merge.op {
                Op::Merge(MergeOp::Add) if ordered.len() == 2 => {
                    let second = ordered.pop().expect("two");
                    let first = ordered.pop().expect("two");
                    let shortcut_prefix = format!("{}.shortcut.", merge.path);
                    let looks_shortcut = |b: &[Item]| b.iter().all(|i| i.under(&shortcut_prefix));
                    match (first.is_empty(), second.is_empty()) {
                        (true, true) => {
                            errors
                                .extend(merge.unsupported("it adds a value to itself; strata has no layer for x + x"));
                            return (items, usize::MAX, None);
                        }
                        (false, true) => Item::Residual { node: merge.clone(), body: first, shortcut: None },
                        (true, false) => Item::Residual { node: merge.clone(), body: second, shortcut: None },
                        (false, false) if looks_shortcut(&first) && !looks_shortcut(&second) => {
                            Item::Residual { node: merge.clone(), body: second, shortcut: Some(first) }
                        }
                        (false, false) => Item::Residual { node: merge.clone(), body: first, shortcut: Some(second) },
                    }
                }
                Op::Merge(MergeOp::Concat(dim)) => Item::Branches {
                    node: merge.clone(),
                    branches: ordered,
                    merge: Merge::Concat { dim: dim as isize },
                },
                _ => Item::Branches { node: merge.clone(), branches: ordered, merge: Merge::Add },
            };
            items.push(item);
            cur = merge.output;
        }
    }
}

/// The op of a node item, if it is one.
fn op_at(items: &[Item], k: usize) -> Option<&Op> {
    match items.get(k) {
        Some(Item::Node(n)) => Some(&n.op),
        _ => None,
    }
}

/// A node item's node.
fn node_at(items: &[Item], k: usize) -> &LNode {
    items[k].node()
}

/// Matches the patterns that span several nodes (recurrent layers, `x[:, -1:]` + squeeze, a
/// MatMul and its bias) and reports every pseudo-op left over.
fn fuse(items: Vec<Item>, errors: &mut Vec<UnsupportedNode>) -> Vec<Item> {
    let items: Vec<Item> = items
        .into_iter()
        .map(|i| match i {
            Item::Residual { node, body, shortcut } => {
                Item::Residual { node, body: fuse(body, errors), shortcut: shortcut.map(|s| fuse(s, errors)) }
            }
            Item::Branches { node, branches, merge } => {
                Item::Branches { node, branches: branches.into_iter().map(|b| fuse(b, errors)).collect(), merge }
            }
            n => n,
        })
        .collect();
    let mut out = Vec::with_capacity(items.len());
    let mut i = 0;
    while i < items.len() {
        let rest = &items[i..];
        if let Some(m) = recurrent(rest) {
            match m {
                Ok((item, used)) => {
                    out.push(item);
                    i += used;
                }
                Err(e) => {
                    errors.extend(e);
                    i += 1;
                }
            }
            continue;
        }
        match (op_at(rest, 0), op_at(rest, 1)) {
            (Some(Op::SliceLast(ax)), Some(Op::Squeeze(axes))) if axes == &[*ax] => {
                let n = node_at(rest, 0);
                let batch_first = match (n.in_shape.len(), ax) {
                    (3, 1) if n.in_shape[0] == Dim::Batch => Some(true),
                    (3, 0) if n.in_shape[1] == Dim::Batch => Some(false),
                    _ => None,
                };
                if let Some(batch_first) = batch_first {
                    let mut node = n.clone();
                    node.sources.extend(node_at(rest, 1).sources.clone());
                    node.output = node_at(rest, 1).output;
                    node.op = Op::Layer { spec: LayerSpec::LastStep { batch_first }, params: vec![] };
                    out.push(Item::Node(node));
                    i += 2;
                    continue;
                }
            }
            (
                Some(Op::Layer { spec: LayerSpec::Linear { in_features, out_features, bias: false }, params }),
                Some(Op::AddBias(b)),
            ) if b.data.len() == *out_features && b.dims.iter().rev().skip(1).all(|&d| d == 1) => {
                let mut node = node_at(rest, 0).clone();
                let mut params = params.clone();
                params.push(("bias".into(), b.reshaped(vec![*out_features])));
                node.op = Op::Layer {
                    spec: LayerSpec::Linear { in_features: *in_features, out_features: *out_features, bias: true },
                    params,
                };
                node.sources.extend(node_at(rest, 1).sources.clone());
                node.output = node_at(rest, 1).output;
                out.push(Item::Node(node));
                i += 2;
                continue;
            }
            _ => {}
        }
        let reason = match op_at(rest, 0) {
            Some(Op::Permute(_)) => Some(
                "a Transpose of the activations outside the pattern torch writes around a recurrent layer (Transpose, LSTM, Squeeze, Transpose); strata's layers keep PyTorch's layouts",
            ),
            Some(Op::Squeeze(_)) => Some(
                "a Squeeze outside the patterns strata reads (after a recurrent layer's output, or after x[:, -1:])",
            ),
            Some(Op::SliceLast(_)) => {
                Some("x[:, -1:] not followed by a Squeeze of the same axis (strata reads x[:, -1])")
            }
            Some(Op::AddBias(_)) => Some(
                "an Add of a constant that is not a Linear's bias (after a MatMul or a Gemm without bias, with one value per output feature)",
            ),
            Some(Op::Reshape) => Some(
                "a Reshape that neither flattens to [N, features] nor joins a bidirectional recurrent layer's directions",
            ),
            Some(Op::Merge(_)) => Some("a merge strata could not place"),
            _ => None,
        };
        match reason {
            Some(r) => errors.extend(node_at(rest, 0).unsupported(r)),
            None => out.push(items[i].clone()),
        }
        i += 1;
    }
    out
}

/// A recurrent layer starting at `items[0]` (a `Transpose` before it, or the node itself): the
/// layer and how many items it spans, an error naming its nodes, or `None` when no recurrent
/// node starts here.
#[allow(clippy::type_complexity)]
fn recurrent(items: &[Item]) -> Option<std::result::Result<(Item, usize), Vec<UnsupportedNode>>> {
    let is_rec = |k: usize| matches!(op_at(items, k), Some(Op::Recurrent { .. }));
    let is_perm = |k: usize, p: &[usize]| matches!(op_at(items, k), Some(Op::Permute(q)) if q == p);
    let lead = is_perm(0, &[1, 0, 2]) && is_rec(1);
    let mut j = usize::from(lead);
    if !is_rec(j) {
        return None;
    }
    let first = node_at(items, j).clone();
    let mut sources: Vec<(String, String)> = items[..j].iter().flat_map(|i| i.node().sources.clone()).collect();
    let mut layers: Vec<(crate::spec::RecurrentSpec, Vec<(String, Arr)>)> = Vec::new();
    let mut last_output;
    loop {
        let n = node_at(items, j);
        let Op::Recurrent { spec, params } = &n.op else { unreachable!("checked by is_rec") };
        let h = spec.hidden_size;
        let next = if spec.directions() == 1 && matches!(op_at(items, j + 1), Some(Op::Squeeze(a)) if a == &[1]) {
            j + 2
        } else if spec.directions() == 2
            && is_perm(j + 1, &[0, 2, 1, 3])
            && matches!(op_at(items, j + 2), Some(Op::Reshape))
            && items.get(j + 2).is_some_and(|i| i.node().in_shape.len() == 4)
            && node_at(items, j + 2).in_shape.get(2) == Some(&Dim::Fixed(2))
            && node_at(items, j + 2).in_shape.get(3) == Some(&Dim::Fixed(h))
        {
            j + 3
        } else {
            return Some(Err(n.unsupported(
                "its output Y is not followed by the Squeeze (one direction) or the Transpose and Reshape (two) torch.onnx.export writes; strata reads Y as [T, N, D·H]",
            )));
        };
        for k in j..next {
            sources.extend(node_at(items, k).sources.clone());
        }
        last_output = node_at(items, next - 1).output;
        layers.push((spec.clone(), params.clone()));
        j = next;
        let same = match op_at(items, j) {
            Some(Op::Recurrent { spec: s, .. }) => {
                s.kind == spec.kind
                    && s.hidden_size == h
                    && s.bidirectional == spec.bidirectional
                    && s.bias == spec.bias
                    && node_at(items, j).path == first.path
            }
            _ => false,
        };
        if !same {
            break;
        }
    }
    let trail = is_perm(j, &[1, 0, 2]);
    if lead != trail {
        let blame = if lead { node_at(items, 0) } else { node_at(items, j) };
        return Some(Err(blame.unsupported(
            "a recurrent layer with a Transpose on one side only: strata's layers take and give [N, T, F] (batch_first = true, a Transpose on both sides) or [T, N, F] (none)",
        )));
    }
    if trail {
        sources.extend(node_at(items, j).sources.clone());
        last_output = node_at(items, j).output;
    }
    let mut spec = layers[0].0.clone();
    spec.num_layers = layers.len();
    spec.batch_first = lead;
    let mut params = Vec::new();
    for (k, (_, ps)) in layers.iter().enumerate() {
        for (suffix, a) in ps {
            params.push((suffix.replace("_l0", &format!("_l{k}")), a.clone()));
        }
    }
    let start = node_at(items, 0);
    let node = LNode {
        op: Op::Layer { spec: LayerSpec::Recurrent(spec), params },
        path: first.path.clone(),
        sources,
        inputs: start.inputs.clone(),
        in_shape: start.in_shape.clone(),
        output: last_output,
    };
    Some(Ok((Item::Node(node), j + usize::from(trail))))
}

/// A path segment as a layer name (letters, digits, underscores).
fn sanitize(seg: &str) -> String {
    seg.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// The segments of `path` below `prefix` (`None` when it is not below it).
fn relative(path: &str, prefix: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.split('.').map(sanitize).collect())
}

/// A chain entry: one item, or consecutive items under one module (a nested block).
enum Entry {
    One(Box<Item>, Option<String>),
    Group(String, Vec<Item>),
}

/// The prefix a container's inner chain's paths start with: `Q.word.` when some item is under
/// it (PyTorch's `block1.body.0`), else `Q.`.
fn inner_prefix(q: &str, word: &str, items: &[Item]) -> String {
    let full = if q.is_empty() { format!("{word}.") } else { format!("{q}.{word}.") };
    if items.iter().any(|i| i.under(&full)) {
        full
    } else if q.is_empty() {
        String::new()
    } else {
        format!("{q}.")
    }
}

/// Names a chain: module paths below `onnx_prefix` give names (a dotted rest a nested block);
/// tensors are keyed under `key_prefix`, strata's path of the chain.
fn name_chain(
    items: Vec<Item>,
    onnx_prefix: &str,
    key_prefix: &str,
    params: &mut Vec<(String, Arr)>,
) -> Vec<NamedLayer> {
    let rels: Vec<Option<Vec<String>>> = items.iter().map(|i| relative(&i.node().path, onnx_prefix)).collect();
    let mut entries = Vec::new();
    let mut items = items.into_iter().enumerate().peekable();
    while let Some((k, item)) = items.next() {
        match &rels[k] {
            Some(segs) if segs.len() >= 2 => {
                let s = segs[0].clone();
                let mut group = vec![item];
                while let Some((k2, _)) = items.peek() {
                    if rels[*k2].as_ref().is_some_and(|r| r.len() >= 2 && r[0] == s) {
                        group.push(items.next().expect("peeked").1);
                    } else {
                        break;
                    }
                }
                if group.iter().any(Item::has_params) {
                    entries.push(Entry::Group(s, group));
                } else {
                    entries.extend(group.into_iter().map(|i| Entry::One(Box::new(i), None)));
                }
            }
            Some(segs) => entries.push(Entry::One(Box::new(item), Some(segs[0].clone()))),
            None => entries.push(Entry::One(Box::new(item), None)),
        }
    }
    // Names: layers with tensors and blocks first, so a position never takes their name.
    let mut taken = HashSet::new();
    let mut names = vec![String::new(); entries.len()];
    let fresh = |taken: &mut HashSet<String>, base: String| {
        let mut name = base.clone();
        let mut k = 0;
        while !taken.insert(name.clone()) {
            k += 1;
            name = format!("{base}_{k}");
        }
        name
    };
    for pass in 0..2 {
        for (k, e) in entries.iter().enumerate() {
            let (keep, candidate) = match e {
                Entry::Group(s, _) => (true, Some(s.clone())),
                Entry::One(item, c) => (item.has_params(), c.clone()),
            };
            if keep != (pass == 0) {
                continue;
            }
            names[k] = match candidate {
                Some(c) if !taken.contains(&c) => fresh(&mut taken, c),
                Some(c) if keep => fresh(&mut taken, c),
                _ => fresh(&mut taken, k.to_string()),
            };
        }
    }
    let mut layers = Vec::with_capacity(entries.len());
    for (e, name) in entries.into_iter().zip(names) {
        let keys = format!("{key_prefix}{name}.");
        let spec = match e {
            Entry::Group(s, group) => {
                LayerSpec::Sequential(name_chain(group, &format!("{onnx_prefix}{s}."), &keys, params))
            }
            Entry::One(item, _) => match *item {
                Item::Node(n) => match n.op {
                    Op::Layer { spec, params: ps } => {
                        params.extend(ps.into_iter().map(|(suffix, a)| (format!("{keys}{suffix}"), a)));
                        spec
                    }
                    _ => unreachable!("pseudo-ops are matched or reported by fuse"),
                },
                Item::Residual { node, body, shortcut } => {
                    let bp = inner_prefix(&node.path, "body", &body);
                    let body = name_chain(body, &bp, &format!("{keys}body."), params);
                    let shortcut = shortcut.map(|s| {
                        let sp = inner_prefix(&node.path, "shortcut", &s);
                        name_chain(s, &sp, &format!("{keys}shortcut."), params)
                    });
                    LayerSpec::Residual { body, shortcut }
                }
                Item::Branches { node, branches, merge } => {
                    let branches = branches
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let bp = inner_prefix(&node.path, &format!("branches.{i}"), &b);
                            name_chain(b, &bp, &format!("{keys}branches.{i}."), params)
                        })
                        .collect();
                    LayerSpec::Branches { branches, merge }
                }
            },
        };
        layers.push(NamedLayer { name, spec, origin: None, device: None, init: LayerInit::default() });
    }
    layers
}
