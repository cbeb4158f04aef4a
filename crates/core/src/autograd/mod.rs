//! Reverse-mode automatic differentiation.
//!
//! Each op that sees an input requiring grad attaches a [`Node`] to its output: the op's backward
//! closure (written right below its forward, in the op's own file) and an edge per input — to the
//! input's own node, or to a leaf (a parameter) whose gradient buffer it accumulates into.
//! [`Tensor::backward`] orders the nodes reachable from the loss topologically and runs the
//! closures in reverse, summing gradients where a value was used more than once.
//!
//! Why nodes in `Arc`s and not a global tape: the graph lives exactly as long as the tensors that
//! can reach it. A forward pass outside `no_grad` whose result is dropped (a validation loop, say)
//! frees its graph at once, where a tape would keep growing until someone clears it. Recording
//! costs one small allocation per op, negligible beside the op's own output buffer. `backward`
//! consumes the closures (and the values they saved), as PyTorch frees its graph.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An op's backward: given d(loss)/d(output), returns d(loss)/d(input) for each input
/// (`None` where the input needs no gradient).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send>;

/// Where an input's gradient goes.
pub(crate) enum Edge {
    /// A leaf tensor (parameter): accumulate into its `.grad`.
    Leaf(Tensor),
    /// An intermediate result: pass on to its node.
    Node(Arc<Node>),
}

/// One recorded op in the graph.
pub struct Node {
    id: u64,
    name: &'static str,
    backward: Mutex<Option<BackwardFn>>,
    inputs: Vec<Option<Edge>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} #{})", self.name, self.id)
    }
}

impl Node {
    /// The op that made this node (for debugging and error messages).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

static NEXT_NODE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread currently record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops on this thread do not record the graph (PyTorch's `torch.no_grad()`).
/// Dropping it restores the previous mode.
#[must_use = "the guard disables recording only while it is alive"]
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Disables recording until the guard is dropped.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` without recording the graph: for evaluation and for updates of parameters.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Builds the node for an op's output, or `None` when no input needs a gradient or recording
/// is off — in which case the backward closure is dropped unused.
pub(crate) fn make_node(name: &'static str, inputs: &[&Tensor], backward: BackwardFn) -> Option<Arc<Node>> {
    if !is_grad_enabled() {
        return None;
    }
    let edges: Vec<Option<Edge>> = inputs
        .iter()
        .map(|t| match t.grad_fn() {
            Some(node) => Some(Edge::Node(node.clone())),
            None if t.is_leaf_requiring_grad() => Some(Edge::Leaf((*t).clone())),
            None => None,
        })
        .collect();
    if edges.iter().all(Option::is_none) {
        return None;
    }
    Some(Arc::new(Node {
        id: NEXT_NODE.fetch_add(1, Ordering::Relaxed),
        name,
        backward: Mutex::new(Some(backward)),
        inputs: edges,
    }))
}

/// Runs backpropagation from `root` (a one-element tensor) with upstream gradient `seed`.
pub(crate) fn run_backward(root: &Arc<Node>, seed: Tensor) -> Result<()> {
    let _guard = NoGradGuard::new();
    let order = topological_order(root);
    let mut pending: HashMap<u64, Tensor> = HashMap::new();
    pending.insert(root.id, seed);
    for node in order.iter().rev() {
        let Some(grad) = pending.remove(&node.id) else { continue };
        let backward = node.backward.lock().map_err(|_| Error::GraphFreed)?.take().ok_or(Error::GraphFreed)?;
        let input_grads = backward(&grad)?;
        drop(grad);
        for (edge, g) in node.inputs.iter().zip(input_grads) {
            let (Some(edge), Some(g)) = (edge, g) else { continue };
            match edge {
                Edge::Leaf(t) => t.accumulate_grad(&g)?,
                Edge::Node(n) => match pending.remove(&n.id) {
                    Some(acc) => {
                        pending.insert(n.id, acc.accumulate(&g)?);
                    }
                    None => {
                        pending.insert(n.id, g);
                    }
                },
            }
        }
    }
    Ok(())
}

/// Nodes reachable from `root`, each after all nodes it depends on (iterative post-order DFS, so
/// deep graphs such as long recurrences cannot overflow the stack).
fn topological_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut stack: Vec<(Arc<Node>, usize)> = vec![(root.clone(), 0)];
    visited.insert(root.id);
    while let Some((node, next)) = stack.pop() {
        let child = node.inputs[next..].iter().enumerate().find_map(|(i, e)| match e {
            Some(Edge::Node(n)) if !visited.contains(&n.id) => Some((next + i, n.clone())),
            _ => None,
        });
        match child {
            Some((i, n)) => {
                visited.insert(n.id);
                stack.push((node, i + 1));
                stack.push((n, 0));
            }
            None => order.push(node),
        }
    }
    order
}

#[cfg(test)]
mod tests;
