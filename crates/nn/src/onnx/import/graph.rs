//! The importer's intermediate form: the values an ONNX graph computes (constants, shape
//! arithmetic on the batch size, activations) and the graph of layer-level nodes over the
//! activations, before it becomes a chain of named layers (`tree.rs`).

use crate::check::shape::Dim;
use crate::error::UnsupportedNode;
use crate::spec::{LayerSpec, RecurrentSpec};

/// A constant tensor: its values row-major as `f64` (exact for f32, f64, and integers below
/// 2⁵³), and the initializer name it came from (`fc1.weight`; empty for computed constants).
#[derive(Clone, Debug, PartialEq)]
pub struct Arr {
    /// The shape (`[]` for a scalar).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f64>,
    /// Whether the elements are integers (INT64, INT32): an index or a shape, not a weight.
    pub int: bool,
    /// The initializer's name, kept through transposes and reshapes.
    pub name: String,
}

impl Arr {
    /// A float tensor without a name.
    pub fn new(dims: Vec<usize>, data: Vec<f64>) -> Arr {
        Arr { dims, data, int: false, name: String::new() }
    }

    /// An int64 tensor without a name.
    pub fn ints(dims: Vec<usize>, values: &[i64]) -> Arr {
        Arr { dims, data: values.iter().map(|&v| v as f64).collect(), int: true, name: String::new() }
    }

    /// The values as integers.
    pub fn to_i64(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }

    /// The same values under another shape (same element count).
    pub fn reshaped(&self, dims: Vec<usize>) -> Arr {
        Arr { dims, ..self.clone() }
    }

    /// The axes permuted: output axis `k` is input axis `perm[k]`.
    pub fn permuted(&self, perm: &[usize]) -> Arr {
        let rank = self.dims.len();
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        // Row-major strides of the input, then read each output position through them.
        let mut strides = vec![1; rank];
        for k in (0..rank.saturating_sub(1)).rev() {
            strides[k] = strides[k + 1] * self.dims[k + 1];
        }
        let n = self.data.len();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            let src: usize = (0..rank).map(|k| idx[k] * strides[perm[k]]).sum();
            data.push(self.data[src]);
            for k in (0..rank).rev() {
                idx[k] += 1;
                if idx[k] < dims[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        Arr { dims, data, ..self.clone() }
    }

    /// A 2-d tensor transposed.
    pub fn t(&self) -> Arr {
        self.permuted(&[1, 0])
    }

    /// Whether every value is `v`.
    pub fn all(&self, v: f64) -> bool {
        self.data.iter().all(|&x| x == v)
    }
}

/// An integer in shape arithmetic: the batch size (unknown until run time) or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymInt {
    /// The batch size.
    Batch,
    /// A known value.
    Known(i64),
}

/// What a value of the ONNX graph is.
#[derive(Clone, Debug)]
pub enum Val {
    /// A constant: an initializer, a `Constant`, or computed from them.
    Const(Arr),
    /// Integers that involve the batch size (`Shape(x)` and what is computed from it): a
    /// scalar or a 1-d list.
    Ints {
        /// The values.
        values: Vec<SymInt>,
        /// Whether it is a scalar (0-d) rather than a 1-d list.
        scalar: bool,
    },
    /// Zeros of a batch-dependent shape (a recurrent layer's initial state).
    Zeros,
    /// An activation: an index into [`Dag::acts`].
    Act(usize),
    /// The output of a node that could not be imported (its error is recorded once).
    Unknown,
}

/// An activation: its shape (the batch dimension may sit anywhere after a transpose).
#[derive(Clone, Debug)]
pub struct Act {
    /// The shape, `Dim::Batch` where the batch dimension is.
    pub shape: Vec<Dim>,
}

/// How a merge node combines its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOp {
    /// `Add` of two activations (a residual block).
    Add,
    /// `Sum` of several (branches merged by addition).
    Sum,
    /// `Concat` along an axis (branches merged by concatenation).
    Concat(i64),
}

/// What a layer-level node does.
#[derive(Clone, Debug)]
pub enum Op {
    /// A strata layer and its tensors by their state_dict suffixes (`weight`, `bias`, …).
    Layer {
        /// The layer.
        spec: LayerSpec,
        /// `(suffix, tensor)` in PyTorch's names and layouts.
        params: Vec<(String, Arr)>,
    },
    /// An ONNX recurrent node, its output `Y` still in ONNX's `[T, D, N, H]` layout: becomes a
    /// layer once the transposes and squeezes around it are matched.
    Recurrent {
        /// The layer (`batch_first` decided by the pattern around it).
        spec: RecurrentSpec,
        /// `(suffix, tensor)` with layer index 0 (`weight_ih_l0`), PyTorch's gate order.
        params: Vec<(String, Arr)>,
    },
    /// A `Transpose` of an activation.
    Permute(Vec<usize>),
    /// A `Squeeze` of an activation (the axes, non-negative).
    Squeeze(Vec<usize>),
    /// `x[..., -1:, ...]` along an axis (a `Slice` keeping the last element).
    SliceLast(usize),
    /// An `Add` of a constant: a Linear's bias after a `MatMul`.
    AddBias(Arr),
    /// A `Reshape` that is not a flatten (a bidirectional recurrent layer's output).
    Reshape,
    /// A merge of several activations.
    Merge(MergeOp),
}

impl Op {
    /// Whether the op is a strata layer with tensors.
    pub fn has_params(&self) -> bool {
        matches!(self, Op::Layer { params, .. } if !params.is_empty()) || matches!(self, Op::Recurrent { .. })
    }
}

/// A layer-level node: one or more ONNX nodes read as one op.
#[derive(Clone, Debug)]
pub struct LNode {
    /// What it does.
    pub op: Op,
    /// The PyTorch module path it came from (`block1.body.0`; empty for a functional op).
    pub path: String,
    /// The ONNX nodes behind it, `(name, op_type)`, for error messages.
    pub sources: Vec<(String, String)>,
    /// Its input activations.
    pub inputs: Vec<usize>,
    /// The shape of its first input.
    pub in_shape: Vec<Dim>,
    /// Its output activation.
    pub output: usize,
}

impl LNode {
    /// One [`UnsupportedNode`] per ONNX node behind this one.
    pub fn unsupported(&self, reason: &str) -> Vec<UnsupportedNode> {
        self.sources
            .iter()
            .map(|(name, op)| UnsupportedNode { name: name.clone(), op_type: op.clone(), reason: reason.into() })
            .collect()
    }
}

/// The evaluated graph: activations (0 is the graph's input) and the nodes between them.
#[derive(Debug, Default)]
pub struct Dag {
    /// Every activation.
    pub acts: Vec<Act>,
    /// The layer-level nodes, in the graph's order.
    pub nodes: Vec<LNode>,
    /// The activation that is the graph's output.
    pub output: usize,
}

impl Dag {
    /// The nodes reading each activation (each node once).
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.acts.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &a in &n.inputs {
                if !c[a].contains(&i) {
                    c[a].push(i);
                }
            }
        }
        c
    }
}
