//! Fixes and the spec edits they consist of: the data a shape error suggests, which tests apply
//! (see `edit.rs`) to prove that every suggested fix makes the model check.

use crate::spec::{LayerSpec, NamedLayer};
use strata_core::DType;

/// One change to a spec that a fix consists of; tests apply fixes to prove they work.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Place a layer (or a whole block: the devices inside it are cleared) on a device.
    SetDevice {
        /// The layer's path.
        path: String,
        /// Where it runs.
        device: strata_core::Device,
    },
    /// Set a Linear's `in_features`.
    SetInFeatures {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a Linear's `out_features`.
    SetOutFeatures {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Insert `Flatten()` right before a layer.
    InsertFlattenBefore {
        /// The layer's path.
        path: String,
    },
    /// Change the model's input sample shape.
    SetInput {
        /// The new sample shape.
        sample: Vec<usize>,
    },
    /// Set a Flatten's range.
    SetFlattenRange {
        /// The layer's path.
        path: String,
        /// First dimension.
        start_dim: isize,
        /// Last dimension.
        end_dim: isize,
    },
    /// Give a residual block a projection shortcut `Linear(in, out)`.
    SetShortcut {
        /// The block's path.
        path: String,
        /// The projection's input size.
        in_features: usize,
        /// The projection's output size.
        out_features: usize,
    },
    /// Set a Conv2d's `in_channels`.
    SetInChannels {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a Conv2d's `out_channels`.
    SetOutChannels {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a BatchNorm's `num_features`.
    SetNumFeatures {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a recurrent layer's `input_size`.
    SetInputSize {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a recurrent layer's `hidden_size`.
    SetHiddenSize {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a Conv2d's or pool's `kernel_size` and `padding`.
    SetWindow {
        /// The layer's path.
        path: String,
        /// The new kernel size.
        kernel_size: (usize, usize),
        /// The new padding.
        padding: (usize, usize),
    },
    /// Set a Softmax's or LogSoftmax's `dim`.
    SetDim {
        /// The layer's path.
        path: String,
        /// The new dimension.
        dim: isize,
    },
    /// Insert a layer right before another.
    InsertBefore {
        /// The path of the layer it goes before.
        path: String,
        /// The new layer's name (made unique in its chain).
        name: String,
        /// The new layer.
        spec: LayerSpec,
    },
    /// Remove a layer.
    Remove {
        /// The layer's path.
        path: String,
    },
    /// Give a residual block a shortcut made of these layers.
    SetShortcutLayers {
        /// The block's path.
        path: String,
        /// The shortcut's layers.
        layers: Vec<NamedLayer>,
    },
    /// Append a Linear at the end of the model.
    AppendLinear {
        /// Its input size.
        in_features: usize,
        /// Its output size.
        out_features: usize,
    },
    /// Append a layer at the end of a chain: the model (`""`), a block, or a branch
    /// (`mix.branches.0`).
    Append {
        /// The chain's path.
        chain: String,
        /// The new layer's name (made unique in its chain).
        name: String,
        /// The new layer.
        spec: LayerSpec,
    },
    /// Replace a layer by another of a different kind (keeping its name).
    Replace {
        /// The layer's path.
        path: String,
        /// The new layer.
        spec: LayerSpec,
    },
    /// Set the dimension a `Concat` joins its branches along.
    SetConcatDim {
        /// The layer's path.
        path: String,
        /// The new dimension.
        dim: isize,
    },
    /// Set the model's input element type (`I64` token ids or `F32` features).
    SetInputDType {
        /// The new type.
        dtype: DType,
    },
    /// Set a LayerNorm's `normalized_shape`.
    SetNormalizedShape {
        /// The layer's path.
        path: String,
        /// The new shape.
        shape: Vec<usize>,
    },
    /// Set an Embedding's `embedding_dim`.
    SetEmbeddingDim {
        /// The layer's path.
        path: String,
        /// The new value.
        value: usize,
    },
    /// Set a Conv2d's `groups`.
    SetGroups {
        /// The layer's path.
        path: String,
        /// The new value.
        groups: usize,
    },
}

/// A suggested fix: the sentence shown to the user and the edits it stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Fix {
    /// E.g. `make fc2 Linear(100, 64)`.
    pub text: String,
    /// The spec changes that implement it.
    pub edits: Vec<Edit>,
}

/// Several fixes, one per branch, as one: `a and b`, all edits together.
pub fn joined(fixes: Vec<Fix>) -> Fix {
    let text = fixes.iter().map(|f| f.text.as_str()).collect::<Vec<_>>().join(" and ");
    Fix { text, edits: fixes.into_iter().flat_map(|f| f.edits).collect() }
}
