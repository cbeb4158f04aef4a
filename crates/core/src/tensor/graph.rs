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

/// What a dropped node owned: its edges and its backward closure (which holds the tensors it
/// saved, and through them their nodes).
type Remains = (Vec<Option<Edge>>, Option<BackwardFn>);

thread_local! {
    /// Whether a node's drop is dismantling a graph on this thread, and the remains of the nodes
    /// dropped meanwhile, waiting their turn.
    static DISMANTLING: (std::cell::Cell<bool>, std::cell::RefCell<Vec<Remains>>) =
        const { (std::cell::Cell::new(false), std::cell::RefCell::new(Vec::new())) };
}

impl Drop for Node {
    /// Drops the graph behind this node iteratively. Left to the compiler, dropping a node drops
    /// its inputs' nodes from inside its own drop, and those theirs: a chain of 70,000 layers
    /// overflowed the main thread's stack when its graph was freed. Here the outermost drop on a
    /// thread takes each node's remains from a queue in turn; a node dropped meanwhile (by an
    /// edge, or by a tensor its backward closure saved) only queues its own.
    fn drop(&mut self) {
        let backward = match self.backward.get_mut() {
            Ok(b) => b.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let remains: Remains = (std::mem::take(&mut self.inputs), backward);
        let queued = DISMANTLING.try_with(|(active, queue)| {
            if active.get() {
                queue.borrow_mut().push(remains);
                return None;
            }
            active.set(true);
            Some(remains)
        });
        match queued {
            // This thread's storage is gone (the thread is ending): drop as the compiler would.
            Err(_) => {}
            Ok(None) => {}
            Ok(Some(remains)) => {
                drop(remains);
                // Each item is dropped outside the queue's borrow: dropping it queues more.
                while let Some(next) = DISMANTLING.with(|(_, queue)| queue.borrow_mut().pop()) {
                    drop(next);
                }
                DISMANTLING.with(|(active, _)| active.set(false));
            }
        }
    }
}
