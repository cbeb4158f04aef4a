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
//!
//! The graph's data ([`Node`]) is defined beside `Tensor` (`tensor/graph.rs`), since each holds
//! the other; this module records it (grad mode, `Tensor::from_op`) and runs it.

use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::storage::Storage;
use crate::tensor::Tensor;
use crate::tensor::graph::{BackwardFn, Edge};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::tensor::graph::Node;

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
        precision: crate::autocast::precision(),
    }))
}

/// Recording and running the graph, as `Tensor` methods: every op makes its result through
/// these, and `backward` runs them.
impl Tensor {
    /// The result of an op: a fresh contiguous buffer of `shape`, with a graph node when an
    /// input requires grad (the `backward` closure maps the output's gradient to the inputs').
    pub(crate) fn from_op(
        storage: impl Into<Storage>,
        shape: Shape,
        name: &'static str,
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Tensor {
        Tensor::from_op_shared(storage, shape, name, inputs, backward)
    }

    /// [`Tensor::from_op`] for a buffer the backward closure also holds (to read the output).
    pub(crate) fn from_op_shared(
        storage: impl Into<Storage>,
        shape: Shape,
        name: &'static str,
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Tensor {
        let storage = storage.into();
        debug_assert_eq!(storage.len(), shape.numel());
        let node = make_node(name, inputs, Box::new(backward));
        Tensor::from_parts(storage, Layout::contiguous(shape), node)
    }

    /// A view of this tensor's buffer with another layout, recorded like an op.
    pub(crate) fn view_op(
        &self,
        layout: Layout,
        name: &'static str,
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Tensor {
        let node = make_node(name, &[self], Box::new(backward));
        Tensor::from_parts(self.buffer(), layout, node)
    }

    /// Computes the gradient of this one-element tensor with respect to every leaf that requires
    /// grad, adding it into their `.grad()`. The graph's saved values are freed afterwards.
    pub fn backward(&self) -> Result<()> {
        self.backward_with_hook(|_| {})
    }

    /// [`Tensor::backward`] that calls `on_grad_ready(leaf)` for each leaf as soon as its
    /// gradient for this backward is final — after the last op that uses the leaf has added its
    /// share, while the ops nearer the inputs still run (PyTorch's
    /// `register_post_accumulate_grad_hook`, for every leaf at once). Data-parallel training
    /// starts sending a layer's gradient from here, overlapping the exchange with the rest of
    /// backward.
    ///
    /// Each leaf the graph reaches is reported exactly once, in the order backward finishes them
    /// (the output side's layers first); `leaf` is the parameter itself (the same
    /// [`Tensor::id`] as the handle the caller holds), its `.grad()` already complete. A leaf
    /// whose ops all received no gradient is reported too, with whatever gradient it held.
    pub fn backward_with_hook(&self, mut on_grad_ready: impl FnMut(&Tensor)) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::BackwardNonScalar { shape: self.shape().clone() });
        }
        match self.grad_fn() {
            Some(node) => run_backward(node, self.ones_like()?, &mut on_grad_ready),
            None if self.is_leaf_requiring_grad() => {
                self.accumulate_grad(&self.ones_like()?)?;
                on_grad_ready(self);
                Ok(())
            }
            None => Err(Error::NoGradRequired),
        }
    }
}

impl Tensor {
    /// Backpropagation from this tensor of any shape with `grad` as its gradient (PyTorch's
    /// `tensor.backward(gradient)`): what a pipeline stage runs when the next stage hands back
    /// the gradient of the activation it received. `grad` must have this tensor's shape, element
    /// type and device.
    pub fn backward_with_grad(&self, grad: &Tensor) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward_with_grad",
                what: "gradient",
                got: grad.shape().clone(),
                expected: format!("{}, the tensor's own", self.shape()),
            });
        }
        if grad.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch { op: "backward_with_grad", lhs: self.dtype(), rhs: grad.dtype() });
        }
        if grad.device() != self.device() {
            return Err(Error::DeviceMismatch { op: "backward_with_grad", lhs: self.device(), rhs: grad.device() });
        }
        match self.grad_fn() {
            Some(node) => run_backward(node, grad.detach(), &mut |_| {}),
            None if self.is_leaf_requiring_grad() => self.accumulate_grad(&grad.detach()),
            None => Err(Error::NoGradRequired),
        }
    }
}

/// Runs backpropagation from `root` (a one-element tensor) with upstream gradient `seed`, calling
/// `on_ready` for each leaf once no op left to run can add to its gradient.
pub(crate) fn run_backward(root: &Arc<Node>, seed: Tensor, on_ready: &mut dyn FnMut(&Tensor)) -> Result<()> {
    let _guard = NoGradGuard::new();
    let order = topological_order(root);
    // Per leaf (by id): the edges from nodes not yet run. A node adds to its leaves inside its
    // closure (kernels that write a weight gradient in place) or right after it, so a leaf is
    // final when its count reaches zero after a node.
    let mut uses: HashMap<u64, usize> = HashMap::new();
    for node in &order {
        for edge in node.inputs.iter().flatten() {
            if let Edge::Leaf(t) = edge {
                *uses.entry(t.id()).or_default() += 1;
            }
        }
    }
    let mut pending: HashMap<u64, Tensor> = HashMap::new();
    pending.insert(root.id, seed);
    for node in order.iter().rev() {
        if let Some(grad) = pending.remove(&node.id) {
            let backward = node.backward.lock().map_err(|_| Error::GraphFreed)?.take().ok_or(Error::GraphFreed)?;
            // Under the precision of its forward (see `autocast`), wherever backward is called.
            let input_grads = crate::autocast::with_precision(node.precision, || backward(&grad))?;
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
        for edge in node.inputs.iter().flatten() {
            if let Edge::Leaf(t) = edge
                && let Some(left) = uses.get_mut(&t.id())
            {
                *left -= 1;
                if *left == 0 {
                    on_ready(t);
                }
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
