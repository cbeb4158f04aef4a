//! The autograd graph's data: a [`Node`] per recorded op, its backward closure and an [`Edge`]
//! per input. Here, beside `Tensor`, because the two hold each other (a tensor its node, a node
//! its leaves and its closure over tensors); recording and running the graph is `autograd`'s,
//! above both.

use super::Tensor;
use crate::error::Result;
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
    pub(crate) id: u64,
    pub(crate) name: &'static str,
    pub(crate) backward: Mutex<Option<BackwardFn>>,
    pub(crate) inputs: Vec<Option<Edge>>,
    /// The product precision the forward ran under; the backward runs under it too.
    pub(crate) precision: crate::autocast::Precision,
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
