//! Shape errors and their rendering: what went wrong (structured: the layer, the shape it
//! receives, who produced it, the expected and actual sizes) and the message a newcomer can act
//! on, with the suggested fixes.

use super::fix::Fix;
use super::shape::{SymShape, dtype_name};
use crate::spec::{Merge, article};
use std::fmt;
use strata_core::{DType, Device};

/// A layer as messages name it: dotted path, description and 1-based position in its chain.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRef {
    /// Dotted path from the model root, e.g. `encoder.block2.fc1`.
    pub path: String,
    /// `Linear 784 → 128`.
    pub desc: String,
    /// 1-based position within the chain that holds it.
    pub position: usize,
}

impl fmt::Display for LayerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}, position {})", self.path, self.desc, self.position)
    }
}

/// Who decided the current feature count (the last dimension).
#[derive(Clone, Debug, PartialEq)]
pub enum Producer {
    /// The model's input.
    Input,
    /// A Linear layer's `out_features`.
    Linear(LayerRef),
    /// A Flatten layer, from the dimensions it merged (e.g. `1×28×28`).
    Flatten(LayerRef, String),
    /// A Conv2d layer's `out_channels` (dimension 1 of an image batch).
    Conv2d(LayerRef),
    /// A recurrent layer's output features, `D·H`, with its number of directions `D`.
    Recurrent(LayerRef, usize),
    /// An Embedding's `embedding_dim`.
    Embedding(LayerRef),
    /// An `Add` or `Concat` of branches; for a Concat along the last dimension, the sizes it
    /// joined (`64 + 32`).
    Merge(LayerRef, Option<String>),
}

/// One branch of an `Add` or `Concat` as messages describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchOutput {
    /// The branch's path, e.g. `mix.branches.1`.
    pub path: String,
    /// What it produces.
    pub shape: SymShape,
    /// Whether it is the identity (an empty branch passing the input through).
    pub identity: bool,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeErrorKind {
    /// A Linear (or a recurrent layer) receives a different feature count than its
    /// `in_features` (`input_size`).
    FeatureMismatch {
        /// `in_features`.
        expected: usize,
        /// The incoming last dimension.
        got: usize,
        /// Who produced it.
        producer: Producer,
    },
    /// A Conv2d or BatchNorm receives a different channel count (dimension 1) than it expects.
    ChannelMismatch {
        /// `in_channels` / `num_features`.
        expected: usize,
        /// The incoming channel count.
        got: usize,
        /// Who produced it.
        producer: Producer,
    },
    /// A convolution or pooling window larger than its (padded) input: the output would be empty.
    WindowTooLarge {
        /// The window's span `(height, width)`, dilation included.
        window: (usize, usize),
        /// The input's spatial size `(H, W)`.
        input: (usize, usize),
        /// The padding on each side.
        padding: (usize, usize),
    },
    /// A hyper-parameter that cannot work (groups not dividing the channels, padding over half
    /// a pooling window, a softmax dimension out of range).
    BadLayer {
        /// Why.
        reason: String,
    },
    /// A layer (or the model) placed on a device this machine does not have.
    NoSuchDevice {
        /// The device asked for.
        device: Device,
        /// The devices there are.
        present: Vec<Device>,
    },
    /// The branches of an `Add`/`Concat`, or a residual block's body and shortcut, end on
    /// different devices, so their outputs cannot be merged.
    DevicesDiffer {
        /// Each branch's path and the device its output ends on (`None`: the model's device).
        ends: Vec<(String, Option<Device>)>,
    },
    /// A multi-dimensional (image-shaped) tensor reaches a Linear whose size fits only the
    /// flattened sample.
    ImageIntoLinear {
        /// `in_features`.
        expected: usize,
        /// The flattened size of one sample.
        flattened: usize,
    },
    /// A layer receives fewer dimensions than it needs.
    TooFewDims {
        /// What the layer needs, e.g. `[N, features]`.
        needs: String,
    },
    /// A Flatten whose range is invalid for its input (or would merge the batch dimension).
    BadFlattenRange {
        /// Why.
        reason: String,
    },
    /// The logits do not have one entry per class.
    ClassCount {
        /// Classes in the data.
        classes: usize,
        /// The model's output.
        logits: SymShape,
        /// Who produced the last dimension.
        producer: Producer,
    },
    /// A residual block whose branches have different shapes, so they cannot be added.
    ResidualMismatch {
        /// The body's output.
        body: SymShape,
        /// The shortcut's output (the input itself for the identity).
        shortcut: SymShape,
        /// Whether the shortcut is the identity.
        identity: bool,
    },
    /// The branches of an `Add` or `Concat` produce shapes that cannot be merged.
    BranchMismatch {
        /// Add or Concat (with its dimension).
        merge: Merge,
        /// Every branch with its output.
        branches: Vec<BranchOutput>,
    },
    /// A layer receives values of the wrong element type: token ids into a layer that computes
    /// with floats, or float values into an Embedding.
    WrongDType {
        /// What the layer needs (`I64` for an Embedding, else `F32`).
        expected: DType,
        /// What it receives.
        got: DType,
        /// The layer that made the float values, or `None` when they come from the input.
        float_from: Option<LayerRef>,
        /// The receiving layer's type, e.g. `Linear`.
        layer_type: String,
    },
    /// A LayerNorm whose `normalized_shape` is not the input's trailing dimensions.
    NormalizedShapeMismatch {
        /// `normalized_shape`.
        expected: Vec<usize>,
        /// The input's trailing dimensions (as many as there are, up to `expected.len()`).
        got: Vec<usize>,
        /// Who produced the last dimension.
        producer: Producer,
    },
    /// No input shape is known.
    NoInput,
    /// A checkpoint's tensors do not fit a layer.
    Checkpoint {
        /// The checkpoint's name or path.
        source: String,
        /// `(key, model shape, checkpoint shape)`.
        mismatched: Vec<(String, String, String)>,
        /// Keys of this layer missing from the checkpoint.
        missing: Vec<String>,
    },
    /// A checkpoint holds tensors no layer uses.
    CheckpointExtra {
        /// The checkpoint's name or path.
        source: String,
        /// The unused keys.
        keys: Vec<String>,
    },
}

/// One mismatch, with everything needed to explain and fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeError {
    /// The layer at fault (none for model-level problems such as a missing input shape).
    pub layer: Option<LayerRef>,
    /// The shape the layer receives.
    pub input: Option<SymShape>,
    /// What went wrong.
    pub kind: ShapeErrorKind,
    /// Suggested fixes, best first.
    pub fixes: Vec<Fix>,
}

fn producer_phrase(p: &Producer, got: usize) -> String {
    match p {
        Producer::Input => format!("the model input has {got} features"),
        Producer::Linear(l) => format!("{l} produces {got} features"),
        Producer::Flatten(l, from) => format!("{l} produces {got} features ({from})"),
        Producer::Conv2d(l) => format!("the last dimension is {got} (after {l})"),
        Producer::Recurrent(l, _) | Producer::Embedding(l) => format!("{l} produces {got} features"),
        Producer::Merge(l, None) => format!("{l} produces {got} features"),
        Producer::Merge(l, Some(parts)) => format!("{l} produces {got} features ({parts})"),
    }
}

fn channel_phrase(p: &Producer, got: usize) -> String {
    match p {
        Producer::Input => format!("the model input has {got} channels"),
        Producer::Linear(l)
        | Producer::Flatten(l, _)
        | Producer::Conv2d(l)
        | Producer::Recurrent(l, _)
        | Producer::Embedding(l)
        | Producer::Merge(l, _) => format!("{l} produces {got} channels"),
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |l: &LayerRef| format!("`{}`", l.path);
        match (&self.layer, &self.input) {
            (Some(l), Some(i)) => write!(f, "error: layer {l} receives {i}")?,
            (Some(l), None) => write!(f, "error: layer {l}")?,
            (None, _) => write!(f, "error:")?,
        }
        match &self.kind {
            ShapeErrorKind::FeatureMismatch { expected, got, producer } => {
                let l = self.layer.as_ref().map(name).unwrap_or_default();
                write!(f, "\n  {}, {l} expects {expected}", producer_phrase(producer, *got))?;
            }
            ShapeErrorKind::ImageIntoLinear { expected, flattened } => {
                let l = self.layer.as_ref().map(name).unwrap_or_default();
                let last = self.input.as_ref().and_then(SymShape::last).unwrap_or(0);
                write!(
                    f,
                    "\n  a multi-dimensional sample ({flattened} values) reaches a Linear layer, which sees only the last dimension ({last}); {l} expects {expected} features"
                )?;
            }
            ShapeErrorKind::TooFewDims { needs } => write!(f, "\n  it needs {needs}")?,
            ShapeErrorKind::ChannelMismatch { expected, got, producer } => {
                let l = self.layer.as_ref().map(name).unwrap_or_default();
                write!(f, "\n  {}, {l} expects {expected}", channel_phrase(producer, *got))?;
            }
            // A 1-d window (a Conv1d's, seen at height 1) in 1-d terms.
            ShapeErrorKind::WindowTooLarge { window: (1, span), input: (1, len), padding: (0, p) } => {
                write!(f, "\n  its window spans {span} but the input's length is {len}")?;
                if *p != 0 {
                    write!(f, " ({} with padding)", len + 2 * p)?;
                }
                write!(f, "; the output would be empty")?;
            }
            ShapeErrorKind::WindowTooLarge { window, input, padding } => {
                write!(f, "\n  its window spans {}×{} but the input is {}×{}", window.0, window.1, input.0, input.1)?;
                if *padding != (0, 0) {
                    write!(f, " ({}×{} with padding)", input.0 + 2 * padding.0, input.1 + 2 * padding.1)?;
                }
                write!(f, "; the output would be empty")?;
            }
            ShapeErrorKind::BadLayer { reason } => write!(f, "\n  {reason}")?,
            ShapeErrorKind::NoSuchDevice { device, present } => {
                let list: Vec<String> = present.iter().map(ToString::to_string).collect();
                write!(f, "\n  placed on {device}, which this machine does not have (it has {})", list.join(", "))?
            }
            ShapeErrorKind::DevicesDiffer { ends } => {
                let name = |d: &Option<Device>| d.map_or("the model's device".to_string(), |d| d.to_string());
                let list: Vec<String> = ends.iter().map(|(p, d)| format!("`{p}` ends on {}", name(d))).collect();
                write!(f, "\n  {}; merged outputs must be on one device", list.join(", "))?
            }
            ShapeErrorKind::BadFlattenRange { reason } => write!(f, "\n  {reason}")?,
            ShapeErrorKind::ClassCount { classes, logits, producer } => {
                write!(f, " the loss receives logits {logits}")?;
                if let Producer::Linear(l)
                | Producer::Flatten(l, _)
                | Producer::Conv2d(l)
                | Producer::Recurrent(l, _)
                | Producer::Embedding(l)
                | Producer::Merge(l, _) = producer
                {
                    write!(f, " from {l}")?;
                }
                write!(
                    f,
                    ", but the data has {classes} classes\n  CrossEntropyLoss needs one logit per class: [N, {classes}]"
                )?;
            }
            ShapeErrorKind::ResidualMismatch { body, shortcut, identity } => write!(
                f,
                "\n  its body produces {body} but {} {shortcut}; the two branches must have the same shape to be added",
                if *identity { "the identity shortcut passes the input" } else { "its shortcut produces" }
            )?,
            ShapeErrorKind::BranchMismatch { merge, branches } => {
                let parts: Vec<String> = branches
                    .iter()
                    .map(|b| {
                        if b.identity {
                            format!("`{}` (identity) passes the input {}", b.path, b.shape)
                        } else {
                            format!("`{}` produces {}", b.path, b.shape)
                        }
                    })
                    .collect();
                let list = match parts.split_last() {
                    Some((last, [one])) => format!("{one} but {last}"),
                    Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                    None => String::new(),
                };
                match merge {
                    Merge::Add => write!(f, "\n  {list}; the branches of an Add must have the same shape to be added")?,
                    Merge::Concat { dim } => write!(
                        f,
                        "\n  {list}; to be concatenated along dim {dim}, the branches must have the same rank and agree in every other dimension"
                    )?,
                }
            }
            ShapeErrorKind::WrongDType { expected, got, float_from, layer_type } => {
                if *expected == DType::I64 {
                    let source = match float_from {
                        Some(l) => format!("{l} produces {} values", dtype_name(*got)),
                        None => format!(
                            "the model input is {} features (the model has no input_dtype = \"i64\")",
                            dtype_name(*got)
                        ),
                    };
                    write!(f, "\n  an Embedding looks up rows by integer token id, but {source}")?;
                } else {
                    write!(
                        f,
                        "\n  {} {layer_type} computes with float values, but it receives {} token ids (the model's input_dtype)",
                        article(layer_type),
                        dtype_name(*got)
                    )?;
                }
            }
            ShapeErrorKind::NormalizedShapeMismatch { expected, got, producer } => {
                let l = self.layer.as_ref().map(name).unwrap_or_default();
                match (expected.as_slice(), got.as_slice()) {
                    ([e], [g]) => write!(
                        f,
                        "\n  {}, {l} normalises over [{e}] (its normalized_shape)",
                        producer_phrase(producer, *g)
                    )?,
                    _ => write!(
                        f,
                        "\n  {l} normalises each sample over its last {} dimensions, {expected:?} (its normalized_shape), but they are {got:?}",
                        expected.len()
                    )?,
                }
            }
            ShapeErrorKind::NoInput => write!(
                f,
                " no input shape: the model file has no `input = [...]` and none was given\n  the first layer needs to know what one sample looks like"
            )?,
            ShapeErrorKind::Checkpoint { source, mismatched, missing } => {
                write!(f, "\n  the checkpoint `{source}` does not fit it:")?;
                for (k, m, c) in mismatched {
                    write!(f, "\n    `{k}`: the model has {m}, the checkpoint has {c}")?;
                }
                for k in missing {
                    write!(f, "\n    `{k}` is missing from the checkpoint")?;
                }
            }
            ShapeErrorKind::CheckpointExtra { source, keys } => {
                write!(f, " the checkpoint `{source}` holds tensors no layer of the model uses: {}", keys.join(", "))?
            }
        }
        if !self.fixes.is_empty() {
            let texts: Vec<&str> = self.fixes.iter().map(|x| x.text.as_str()).collect();
            write!(f, "\n  fix: {}", texts.join(", or "))?;
        }
        Ok(())
    }
}
