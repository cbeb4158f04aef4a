//! The shape contract: a model is checked end to end before it runs. Each layer maps an input
//! shape (with a symbolic batch dimension `N`) to an output shape or a structured error; the
//! chain propagates shapes, remembers which layer produced the current feature count, and on a
//! mismatch reports the layer, its position, the shape it receives, who produced it, and a
//! concrete fix. After an error the layer's intended output is assumed, so *every* mismatch in
//! the model is reported in one run, not only the first.

use crate::branches::Merge;
use crate::spec::{LayerSpec, ModelSpec, NamedLayer};
use crate::state_dict::StateDict;
use std::fmt;
use strata_core::DType;

/// One dimension of a symbolic shape: the batch `N`, or a concrete size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// The batch dimension, unknown until run time.
    Batch,
    /// A concrete size.
    Fixed(usize),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => write!(f, "N"),
            Dim::Fixed(d) => write!(f, "{d}"),
        }
    }
}

/// A shape whose first dimension is the symbolic batch: `[N, 784]`, `[N, 1, 28, 28]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymShape(pub Vec<Dim>);

impl SymShape {
    /// `[N, *sample]`.
    pub fn batched(sample: &[usize]) -> SymShape {
        SymShape(std::iter::once(Dim::Batch).chain(sample.iter().map(|&d| Dim::Fixed(d))).collect())
    }

    /// Parses a per-sample shape as the CLI takes it: `784`, `1x28x28` (also `1,28,28`).
    pub fn parse_sample(text: &str) -> Result<SymShape, String> {
        let parts: Vec<&str> = text.split(['x', 'X', ',', '×']).map(str::trim).collect();
        let mut dims = Vec::with_capacity(parts.len());
        for p in &parts {
            match p.parse::<usize>() {
                Ok(d) if d > 0 => dims.push(d),
                _ => {
                    return Err(format!(
                        "`{text}` is not a sample shape: give positive sizes separated by x, e.g. 784 or 1x28x28"
                    ));
                }
            }
        }
        Ok(SymShape::batched(&dims))
    }

    /// Number of dimensions, the batch included.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The sizes after the batch dimension (`None` if a later dimension is symbolic).
    pub fn sample(&self) -> Option<Vec<usize>> {
        self.0.iter().skip(1).map(|d| if let Dim::Fixed(v) = d { Some(*v) } else { None }).collect()
    }

    /// Elements per sample (`usize::MAX` when the count overflows).
    pub fn sample_numel(&self) -> usize {
        self.sample().map_or(0, |s| saturating_product(&s))
    }

    /// The concrete shape for batch size `n`.
    pub fn with_batch(&self, n: usize) -> Vec<usize> {
        self.0.iter().map(|d| if let Dim::Fixed(v) = d { *v } else { n }).collect()
    }

    fn last(&self) -> Option<usize> {
        match self.0.last() {
            Some(Dim::Fixed(d)) if self.rank() >= 2 => Some(*d),
            _ => None,
        }
    }

    fn with_last(&self, d: usize) -> SymShape {
        let mut v = self.0.clone();
        if let Some(l) = v.last_mut() {
            *l = Dim::Fixed(d);
        }
        SymShape(v)
    }
}

impl fmt::Display for SymShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

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

/// One change to a spec that a fix consists of; tests apply fixes to prove they work.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
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

/// A suggested fix: the sentence shown to the user and the edits it stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Fix {
    /// E.g. `make fc2 Linear(100, 64)`.
    pub text: String,
    /// The spec changes that implement it.
    pub edits: Vec<Edit>,
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

/// The product of `dims`, or `usize::MAX` when it overflows (sizes that large are then refused
/// by the memory check rather than wrapping around).
pub fn saturating_product(dims: &[usize]) -> usize {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX)
}

/// `f32`, `f64`, `i64`: element types as model files write them.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I64 => "i64",
    }
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
            ShapeErrorKind::WindowTooLarge { window, input, padding } => {
                write!(f, "\n  its window spans {}×{} but the input is {}×{}", window.0, window.1, input.0, input.1)?;
                if *padding != (0, 0) {
                    write!(f, " ({}×{} with padding)", input.0 + 2 * padding.0, input.1 + 2 * padding.1)?;
                }
                write!(f, "; the output would be empty")?;
            }
            ShapeErrorKind::BadLayer { reason } => write!(f, "\n  {reason}")?,
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
                        crate::spec::article(layer_type),
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

/// One row of the shape trace: a layer, what it receives and what it produces.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    /// The layer.
    pub layer: LayerRef,
    /// Nesting depth (0 at the top level).
    pub depth: usize,
    /// Position label like `2.1` for nested layers.
    pub position_label: String,
    /// Its input.
    pub input: SymShape,
    /// Its output (the intended one when it has an error).
    pub output: SymShape,
    /// The resolved spec (inferred sizes filled in).
    pub spec: LayerSpec,
    /// Index into the report's errors when this layer has one.
    pub error: Option<usize>,
}

/// The result of a check: the trace, every error, and the resolved spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// The model's name.
    pub name: String,
    /// The input checked.
    pub input: Option<SymShape>,
    /// The input's element type (`I64` for token ids).
    pub input_dtype: DType,
    /// One row per layer (blocks first, then their layers).
    pub trace: Vec<TraceRow>,
    /// Every mismatch found.
    pub errors: Vec<ShapeError>,
    /// The model's output shape.
    pub output: Option<SymShape>,
    /// The spec with inferred sizes filled in.
    pub resolved: ModelSpec,
}

impl CheckReport {
    /// All errors, separated by blank lines.
    pub fn render_errors(&self) -> String {
        self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n\n")
    }

    /// The shape trace as a table, errors marked by number.
    pub fn render_trace(&self) -> String {
        let mut rows: Vec<Vec<String>> = vec![vec!["#".into(), "layer".into(), "type".into(), "output".into()]];
        for r in &self.trace {
            let mut out = r.output.to_string();
            if let Some(e) = r.error {
                out.push_str(&format!("   ✗ error {}", e + 1));
            }
            rows.push(vec![
                r.position_label.clone(),
                format!("{}{}", "  ".repeat(r.depth), short_name(&r.layer.path)),
                r.spec.to_string(),
                out,
            ]);
        }
        let mut s = match &self.input {
            Some(i) => format!("{}: input {i}{}\n", self.name, dtype_note(self.input_dtype)),
            None => format!("{}: no input shape\n", self.name),
        };
        s.push_str(&table(&rows, &[false, false, false, false]));
        s
    }
}

/// ` of i64 token ids` after an input shape that holds them; nothing for float features.
pub(crate) fn dtype_note(d: DType) -> String {
    if d.is_float() { String::new() } else { format!(" of {} token ids", dtype_name(d)) }
}

/// The last part of a path, or `branches.1` for a branch.
fn short_name(path: &str) -> &str {
    match path.rsplit_once('.') {
        Some((head, index)) if head.ends_with("branches") && index.parse::<usize>().is_ok() => {
            &path[head.len() - "branches".len()..]
        }
        Some((_, last)) => last,
        None => path,
    }
}

/// Left- or right-aligned columns separated by two spaces.
pub(crate) fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = right.len();
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for c in 0..cols {
            let pad = widths[c] - r[c].chars().count();
            if right[c] {
                line.push_str(&" ".repeat(pad));
                line.push_str(&r[c]);
            } else {
                line.push_str(&r[c]);
                if c + 1 < cols {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if c + 1 < cols {
                line.push_str("  ");
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

struct Walker {
    trace: Vec<TraceRow>,
    errors: Vec<ShapeError>,
    /// Who decided the current last dimension (or channels).
    producer: Producer,
    /// The element type flowing at this point of the chain.
    dtype: DType,
    /// The last layer that computed float values (`None`: they are the input's, untouched).
    float_from: Option<LayerRef>,
}

/// A merge's output shape (as if fixed), its error, and the sizes a Concat joined (`64 + 32`).
type Merged = (SymShape, Option<(ShapeErrorKind, Vec<Fix>)>, Option<String>);

/// What a branch of an `Add` or `Concat` ends with.
struct BranchEnd {
    out: BranchOutput,
    producer: Producer,
    dtype: DType,
}

/// Checks `spec` for `input` (or the spec's own input) and, with `classes`, that the output is
/// one logit per class for a cross-entropy loss; then that the model can fit in this machine's
/// memory ([`check_memory`]).
pub fn check_spec(spec: &ModelSpec, input: Option<&SymShape>, classes: Option<usize>) -> CheckReport {
    let mut report = check_shapes(spec, input, classes);
    if let Some(memory) = strata_core::Device::Cpu.total_memory()
        && report.errors.is_empty()
    {
        check_memory(&mut report, spec.dtype, memory);
    }
    report
}

/// Copies of each parameter that training keeps: the weights, their gradients and up to two
/// optimizer buffers (Adam's moments).
pub const TRAINING_COPIES: u128 = 4;

/// Refuses, as shape errors, a model whose training could never fit in `memory` bytes: a layer
/// whose parameters (with their gradients and optimizer state, [`TRAINING_COPIES`] in all) or
/// whose output for a single sample exceed it, or a model whose parameters together do (the
/// error then names the largest layers). Sizes are computed without overflow; a size that
/// overflows is "more than" any memory.
pub fn check_memory(report: &mut CheckReport, dtype: DType, memory: u64) {
    let elem = dtype.size_in_bytes() as u128;
    let memory = u128::from(memory);
    let mut total: u128 = 0;
    let mut sizes: Vec<(u128, usize)> = vec![];
    let mut too_large: Vec<(usize, ShapeError)> = vec![];
    for (i, r) in report.trace.iter().enumerate() {
        if r.spec.is_block() {
            continue;
        }
        let params: u128 = r
            .spec
            .own_parameter_shapes()
            .unwrap_or_default()
            .iter()
            .chain(r.spec.own_buffer_shapes().unwrap_or_default().iter())
            .map(|(_, s)| s.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128)))
            .fold(0u128, u128::saturating_add);
        let train_bytes = params.saturating_mul(elem).saturating_mul(TRAINING_COPIES);
        let activation = r.output.sample().map_or(0u128, |s| s.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128)));
        let activation = activation.saturating_mul(elem);
        total = total.saturating_add(train_bytes);
        sizes.push((train_bytes, i));
        let what = if train_bytes > memory {
            format!(
                "its {} parameters take {} in {} ({} with gradients and optimizer state)",
                group_digits_u128(params),
                human_bytes_u128(params.saturating_mul(elem)),
                dtype_name(dtype),
                human_bytes_u128(train_bytes)
            )
        } else if activation > memory {
            format!("its output for a single sample takes {}", human_bytes_u128(activation))
        } else {
            continue;
        };
        too_large.push((i, ShapeError {
            layer: Some(r.layer.clone()),
            input: Some(r.input.clone()),
            kind: ShapeErrorKind::BadLayer {
                reason: format!("{what}: more than this machine's {} of memory", human_bytes_u128(memory)),
            },
            fixes: vec![Fix {
                text: "make the layer smaller (fewer features or channels), or shrink its input (pooling, a smaller image)"
                    .into(),
                edits: vec![],
            }],
        }));
    }
    for (i, e) in too_large {
        report.trace[i].error = Some(report.errors.len());
        report.errors.push(e);
    }
    if report.errors.is_empty() && total > memory {
        sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
        let largest: Vec<String> = sizes
            .iter()
            .take(3)
            .map(|&(b, i)| format!("`{}` {}", report.trace[i].layer.path, human_bytes_u128(b)))
            .collect();
        report.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::BadLayer {
                reason: format!(
                    "the model's parameters take {} with gradients and optimizer state, more than this machine's {} of memory; the largest layers: {}",
                    human_bytes_u128(total),
                    human_bytes_u128(memory),
                    largest.join(", ")
                ),
            },
            fixes: vec![Fix { text: "make the largest layers smaller".into(), edits: vec![] }],
        });
    }
}

/// `1234567` → `1,234,567`, for sizes past `usize`.
fn group_digits_u128(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as `512 B`, `3.0 GiB`, `14.6 TiB`.
pub(crate) fn human_bytes_u128(b: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// [`check_spec`] without the memory check: shapes, element types and classes only.
pub fn check_shapes(spec: &ModelSpec, input: Option<&SymShape>, classes: Option<usize>) -> CheckReport {
    let input = input.cloned().or_else(|| spec.input.as_deref().map(SymShape::batched));
    let mut report = CheckReport {
        name: spec.name.clone(),
        input: input.clone(),
        input_dtype: spec.input_dtype,
        trace: vec![],
        errors: vec![],
        output: None,
        resolved: spec.clone(),
    };
    let Some(input) = input else {
        report.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::NoInput,
            fixes: vec![Fix {
                text:
                    "set `input = [784]` (the shape of one sample) in the model file, or pass --input 784 (or 1x28x28)"
                        .into(),
                edits: vec![],
            }],
        });
        return report;
    };
    let mut w =
        Walker { trace: vec![], errors: vec![], producer: Producer::Input, dtype: spec.input_dtype, float_from: None };
    let (out, resolved) = w.chain(&spec.layers, "", "", 0, input);
    if let Some(classes) = classes {
        w.check_classes(&out, classes);
    }
    report.trace = w.trace;
    report.errors = w.errors;
    report.output = Some(out);
    report.resolved.layers = resolved;
    report
}

impl Walker {
    fn chain(
        &mut self,
        layers: &[NamedLayer],
        prefix: &str,
        pos_prefix: &str,
        depth: usize,
        mut x: SymShape,
    ) -> (SymShape, Vec<NamedLayer>) {
        let mut resolved = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let path = format!("{prefix}{}", l.name);
            let position_label = format!("{pos_prefix}{}", i + 1);
            let (y, spec) = self.layer(l, &path, i + 1, &position_label, depth, x);
            resolved.push(NamedLayer { name: l.name.clone(), spec, origin: l.origin.clone() });
            x = y;
        }
        (x, resolved)
    }

    fn layer(
        &mut self,
        l: &NamedLayer,
        path: &str,
        position: usize,
        label: &str,
        depth: usize,
        x: SymShape,
    ) -> (SymShape, LayerSpec) {
        let mut spec = l.spec.clone();
        let row = self.trace.len();
        let mut lref = LayerRef { path: path.to_string(), desc: spec.to_string(), position };
        self.trace.push(TraceRow {
            layer: lref.clone(),
            depth,
            position_label: label.to_string(),
            input: x.clone(),
            output: x.clone(),
            spec: spec.clone(),
            error: None,
        });
        let mut error: Option<(ShapeErrorKind, Vec<Fix>)> = None;
        let mut return_flat = false;
        // Only an Embedding takes token ids (Flatten and blocks pass them on); it takes nothing else.
        let dtype_error = self.dtype_error(&spec, path, &x);
        let mut merge_parts = None;
        let y = match &mut spec {
            LayerSpec::ReLU => x.clone(),
            LayerSpec::Linear { in_features, out_features, .. } => {
                let out = *out_features;
                match x.last() {
                    None => {
                        error = Some((
                            ShapeErrorKind::TooFewDims { needs: "[N, features]: a batch of feature vectors".into() },
                            vec![],
                        ));
                        SymShape(vec![Dim::Batch, Dim::Fixed(out)])
                    }
                    Some(got) => {
                        let flattened = x.sample_numel();
                        match *in_features {
                            None => *in_features = Some(got),
                            Some(expected) if expected == got => {}
                            // The Linear was written for the flattened sample: an image fed without Flatten.
                            Some(expected) if x.rank() > 2 && expected == flattened => {
                                let text = format!("insert Flatten before {path} (it turns {x} into [N, {flattened}])");
                                let edits = vec![Edit::InsertFlattenBefore { path: path.into() }];
                                error = Some((
                                    ShapeErrorKind::ImageIntoLinear { expected, flattened },
                                    vec![Fix { text, edits }],
                                ));
                                // Carry on as if flattened, so later layers are checked sensibly.
                                return_flat = true;
                            }
                            Some(expected) => {
                                let mut fixes = vec![Fix {
                                    text: format!("make {path} Linear({got}, {out})"),
                                    edits: vec![Edit::SetInFeatures { path: path.into(), value: got }],
                                }];
                                match &self.producer {
                                    Producer::Linear(p) => fixes.push(Fix {
                                        text: format!("make {} produce {expected} features", p.path),
                                        edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: expected }],
                                    }),
                                    Producer::Input => {
                                        let mut sample = x.sample().unwrap_or_default();
                                        if let Some(last) = sample.last_mut() {
                                            *last = expected;
                                        }
                                        let shape =
                                            sample.iter().map(ToString::to_string).collect::<Vec<_>>().join("x");
                                        fixes.push(Fix {
                                            text: format!(
                                                "feed samples of {expected} features (input [{}] / --input {shape})",
                                                sample.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                                            ),
                                            edits: vec![Edit::SetInput { sample }],
                                        });
                                    }
                                    Producer::Recurrent(p, d) => {
                                        if let Some(fix) = hidden_fix(p, *d, expected) {
                                            fixes.push(fix);
                                        }
                                    }
                                    Producer::Embedding(p) => fixes.push(embedding_dim_fix(p, expected)),
                                    Producer::Flatten(..) | Producer::Conv2d(_) | Producer::Merge(..) => {}
                                }
                                if x.rank() > 2 {
                                    fixes.push(Fix {
                                        text: format!("insert Flatten before {path} (it turns {x} into [N, {flattened}]) and make {path} Linear({flattened}, {out})"),
                                        edits: vec![Edit::InsertFlattenBefore { path: path.into() }, Edit::SetInFeatures { path: path.into(), value: flattened }],
                                    });
                                }
                                error = Some((
                                    ShapeErrorKind::FeatureMismatch { expected, got, producer: self.producer.clone() },
                                    fixes,
                                ));
                            }
                        }
                        if return_flat { SymShape(vec![Dim::Batch, Dim::Fixed(out)]) } else { x.with_last(out) }
                    }
                }
            }
            LayerSpec::Flatten { start_dim, end_dim } => {
                let r = x.rank() as isize;
                let s = if *start_dim < 0 { *start_dim + r } else { *start_dim };
                let e = if *end_dim < 0 { *end_dim + r } else { *end_dim };
                if x.rank() < 2 {
                    error = Some((
                        ShapeErrorKind::TooFewDims { needs: "at least [N, d]: a batch of samples".into() },
                        vec![],
                    ));
                    x.clone()
                } else if s == 0 {
                    let fix = Fix {
                        text: format!("make {path} Flatten() (start_dim = 1, end_dim = -1)"),
                        edits: vec![Edit::SetFlattenRange { path: path.into(), start_dim: 1, end_dim: -1 }],
                    };
                    error = Some((
                        ShapeErrorKind::BadFlattenRange { reason: "start_dim 0 would merge the batch dimension N into the features; PyTorch's nn.Flatten() starts at 1".into() },
                        vec![fix],
                    ));
                    // Carry on with what Flatten() would give, so later layers are checked sensibly.
                    SymShape(vec![Dim::Batch, Dim::Fixed(x.sample_numel())])
                } else if s < 0 || e >= r || s > e {
                    let fix = Fix {
                        text: format!("make {path} Flatten() (start_dim = 1, end_dim = -1)"),
                        edits: vec![Edit::SetFlattenRange { path: path.into(), start_dim: 1, end_dim: -1 }],
                    };
                    error = Some((
                        ShapeErrorKind::BadFlattenRange {
                            reason: format!(
                                "start_dim {start_dim} and end_dim {end_dim} do not name a range of {x}'s {r} dimensions"
                            ),
                        },
                        vec![fix],
                    ));
                    SymShape(vec![Dim::Batch, Dim::Fixed(x.sample_numel())])
                } else {
                    let (s, e) = (s as usize, e as usize);
                    let dims = x.sample().unwrap_or_default();
                    let merged: Vec<usize> = dims[s - 1..e].to_vec();
                    let mut out = x.0[..s].to_vec();
                    out.push(Dim::Fixed(merged.iter().product()));
                    out.extend_from_slice(&x.0[e + 1..]);
                    if e + 1 == x.rank() {
                        let from = merged.iter().map(ToString::to_string).collect::<Vec<_>>().join("×");
                        self.producer = Producer::Flatten(lref.clone(), from);
                    }
                    SymShape(out)
                }
            }
            LayerSpec::Conv2d(c) => {
                if x.rank() != 4 {
                    let mut fixes = vec![];
                    if x.rank() == 3 && self.producer == Producer::Input {
                        let mut sample = vec![1];
                        sample.extend(x.sample().unwrap_or_default());
                        fixes.push(Fix {
                            text: format!("give the images a channel dimension: input {sample:?}"),
                            edits: vec![Edit::SetInput { sample }],
                        });
                    }
                    error = Some((
                        ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images with channels".into() },
                        fixes,
                    ));
                    SymShape(vec![Dim::Batch, Dim::Fixed(c.out_channels), Dim::Fixed(1), Dim::Fixed(1)])
                } else {
                    let got = fixed(&x, 1);
                    let (h, w) = (fixed(&x, 2), fixed(&x, 3));
                    let (k, out) = (c.kernel_size, c.out_channels);
                    match c.in_channels {
                        None => c.in_channels = Some(got),
                        Some(expected) if expected == got => {}
                        Some(expected) => {
                            let mut fixes = vec![];
                            if got.is_multiple_of(c.groups.max(1)) {
                                fixes.push(Fix {
                                    text: format!("make {path} Conv2d({got}, {out}, {})", pair_arg(k)),
                                    edits: vec![Edit::SetInChannels { path: path.into(), value: got }],
                                });
                            }
                            fixes.extend(self.channel_producer_fix(&x, expected));
                            error = Some((
                                ShapeErrorKind::ChannelMismatch { expected, got, producer: self.producer.clone() },
                                fixes,
                            ));
                        }
                    }
                    let in_c = c.in_channels.unwrap_or(got);
                    let g = c.groups.max(1);
                    if error.is_none() && (!in_c.is_multiple_of(g) || !out.is_multiple_of(g)) {
                        let best = nearest_groups(in_c, out, g);
                        error = Some((
                            ShapeErrorKind::BadLayer {
                                reason: format!(
                                    "groups = {g} must divide both in_channels ({in_c}) and out_channels ({out})"
                                ),
                            },
                            vec![Fix {
                                text: format!(
                                    "make {path} Conv2d({in_c}, {out}, {}, groups={best}) (the nearest number of groups that divides both)",
                                    pair_arg(k)
                                ),
                                edits: vec![Edit::SetGroups { path: path.into(), groups: best }],
                            }],
                        ));
                    }
                    let (oh, ow, werr) =
                        self.window(path, "Conv2d", &x, (h, w), k, c.stride, c.padding, c.dilation, false);
                    if error.is_none() {
                        error = werr;
                    }
                    SymShape(vec![x.0[0], Dim::Fixed(out), Dim::Fixed(oh), Dim::Fixed(ow)])
                }
            }
            LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation } => {
                self.pool(path, "MaxPool2d", &x, *kernel_size, *stride, *padding, *dilation, &mut error)
            }
            LayerSpec::AvgPool2d { kernel_size, stride, padding, .. } => {
                self.pool(path, "AvgPool2d", &x, *kernel_size, *stride, *padding, (1, 1), &mut error)
            }
            LayerSpec::AdaptiveAvgPool2d { output_size } => {
                if x.rank() < 3 {
                    error =
                        Some((ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images".into() }, vec![]));
                    x.clone()
                } else {
                    let mut v = x.0.clone();
                    let r = v.len();
                    v[r - 2] = Dim::Fixed(output_size.0);
                    v[r - 1] = Dim::Fixed(output_size.1);
                    SymShape(v)
                }
            }
            LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => {
                let two_d = matches!(l.spec, LayerSpec::BatchNorm2d(_));
                let (ok, needs) = if two_d {
                    (x.rank() == 4, "[N, C, H, W]: a batch of images")
                } else {
                    (x.rank() == 2 || x.rank() == 3, "[N, C] or [N, C, L]")
                };
                if !ok {
                    // The other BatchNorm takes this rank: [N, C] / [N, C, L] or [N, C, H, W].
                    let other = match (two_d, x.rank()) {
                        (true, 2 | 3) => Some(("BatchNorm1d", LayerSpec::BatchNorm1d(b.clone()))),
                        (false, 4) => Some(("BatchNorm2d", LayerSpec::BatchNorm2d(b.clone()))),
                        _ => None,
                    };
                    let fixes = other
                        .map(|(kind, spec)| Fix {
                            text: format!(
                                "make {path} {kind}({}) (it takes {x})",
                                b.num_features.unwrap_or_else(|| fixed(&x, 1))
                            ),
                            edits: vec![Edit::Replace { path: path.into(), spec }],
                        })
                        .into_iter()
                        .collect();
                    error = Some((ShapeErrorKind::TooFewDims { needs: needs.into() }, fixes));
                } else {
                    let got = fixed(&x, 1);
                    match b.num_features {
                        None => b.num_features = Some(got),
                        Some(expected) if expected == got => {}
                        Some(expected) => {
                            let kind = if two_d { "BatchNorm2d" } else { "BatchNorm1d" };
                            let mut fixes = vec![Fix {
                                text: format!("make {path} {kind}({got})"),
                                edits: vec![Edit::SetNumFeatures { path: path.into(), value: got }],
                            }];
                            fixes.extend(self.channel_producer_fix(&x, expected));
                            error = Some((
                                ShapeErrorKind::ChannelMismatch { expected, got, producer: self.producer.clone() },
                                fixes,
                            ));
                        }
                    }
                }
                x.clone()
            }
            LayerSpec::Sigmoid
            | LayerSpec::Tanh
            | LayerSpec::GELU
            | LayerSpec::LeakyReLU { .. }
            | LayerSpec::ELU { .. }
            | LayerSpec::Dropout { .. } => x.clone(),
            LayerSpec::Softmax { dim } | LayerSpec::LogSoftmax { dim } => {
                let r = x.rank() as isize;
                if *dim < -r || *dim >= r {
                    let kind = l.spec.type_name();
                    error = Some((
                        ShapeErrorKind::BadLayer {
                            reason: format!(
                                "dim = {dim} is not a dimension of a {r}-dimensional input (valid: {} to {})",
                                -r,
                                r - 1
                            ),
                        },
                        vec![Fix {
                            text: format!("make {path} {kind}(dim=-1) (the last dimension)"),
                            edits: vec![Edit::SetDim { path: path.into(), dim: -1 }],
                        }],
                    ));
                }
                x.clone()
            }
            LayerSpec::Recurrent(r) => {
                let kind = r.kind.type_name();
                let out = r.output_features();
                if x.rank() != 3 {
                    let mut fixes = vec![];
                    let layout = if r.batch_first { "[N, T, features]" } else { "[T, N, features]" };
                    if x.rank() == 4 && x.0[1] == Dim::Fixed(1) {
                        fixes.push(Fix {
                            text: format!(
                                "insert Flatten(start_dim=1, end_dim=2) before {path} (it turns {x} into [N, {}, {}]: rows as time steps)",
                                fixed(&x, 2),
                                fixed(&x, 3)
                            ),
                            edits: vec![Edit::InsertBefore {
                                path: path.into(),
                                name: "flatten".into(),
                                spec: LayerSpec::Flatten { start_dim: 1, end_dim: 2 },
                            }],
                        });
                    } else if let (2, Producer::Input, Some(f), Some(i)) =
                        (x.rank(), &self.producer, x.last(), r.input_size)
                        && f.is_multiple_of(i)
                    {
                        let sample = vec![f / i, i];
                        fixes.push(Fix {
                            text: format!("feed sequences of {} steps of {i} features: input {sample:?}", f / i),
                            edits: vec![Edit::SetInput { sample }],
                        });
                    }
                    error = Some((
                        ShapeErrorKind::TooFewDims {
                            needs: format!(
                                "{layout}: a batch of sequences ({kind} reads dimension {} as time)",
                                if r.batch_first { 1 } else { 0 }
                            ),
                        },
                        fixes,
                    ));
                    SymShape(vec![x.0[0], Dim::Fixed(1), Dim::Fixed(out)])
                } else {
                    let got = fixed(&x, 2);
                    match r.input_size {
                        None => r.input_size = Some(got),
                        Some(expected) if expected == got => {}
                        Some(expected) => {
                            let mut fixes = vec![Fix {
                                text: format!("make {path} {kind}({got}, {})", r.hidden_size),
                                edits: vec![Edit::SetInputSize { path: path.into(), value: got }],
                            }];
                            fixes.extend(self.feature_producer_fix(&x, expected));
                            error = Some((
                                ShapeErrorKind::FeatureMismatch { expected, got, producer: self.producer.clone() },
                                fixes,
                            ));
                        }
                    }
                    x.with_last(out)
                }
            }
            LayerSpec::LastStep { batch_first } => {
                if x.rank() != 3 {
                    let layout = if *batch_first { "[N, T, F]" } else { "[T, N, F]" };
                    error =
                        Some((ShapeErrorKind::TooFewDims { needs: format!("{layout}: a batch of sequences") }, vec![]));
                    if x.rank() >= 2 { SymShape(vec![x.0[0], x.0[x.rank() - 1]]) } else { x.clone() }
                } else if *batch_first {
                    SymShape(vec![x.0[0], x.0[2]])
                } else {
                    SymShape(vec![x.0[1], x.0[2]])
                }
            }
            LayerSpec::Sequential(inner) => {
                let (y, resolved) = self.chain(inner, &format!("{path}."), &format!("{label}."), depth + 1, x.clone());
                *inner = resolved;
                y
            }
            LayerSpec::LayerNorm { normalized_shape: ns, .. } => {
                // The last ns.len() dimensions of each sample (never the batch).
                let sample = &x.0[1.min(x.rank())..];
                let tail = &sample[sample.len().saturating_sub(ns.len())..];
                let got: Vec<usize> = tail.iter().map(|d| if let Dim::Fixed(v) = d { *v } else { 0 }).collect();
                if got != *ns {
                    let mut fixes = vec![];
                    if !got.is_empty() && !got.contains(&0) {
                        fixes.push(Fix {
                            text: format!("make {path} LayerNorm({})", shape_arg(&got)),
                            edits: vec![Edit::SetNormalizedShape { path: path.into(), shape: got.clone() }],
                        });
                    }
                    if let ([expected], [_]) = (ns.as_slice(), got.as_slice()) {
                        fixes.extend(self.feature_producer_fix(&x, *expected));
                    }
                    error = Some((
                        ShapeErrorKind::NormalizedShapeMismatch {
                            expected: ns.clone(),
                            got,
                            producer: self.producer.clone(),
                        },
                        fixes,
                    ));
                }
                x.clone()
            }
            LayerSpec::Embedding { embedding_dim, .. } => {
                if self.dtype.is_float() && self.float_from.is_some() && x.last().is_some() {
                    // Carry on as the suggested Linear would: features projected, not looked up.
                    x.with_last(*embedding_dim)
                } else {
                    let mut v = x.0.clone();
                    v.push(Dim::Fixed(*embedding_dim));
                    SymShape(v)
                }
            }
            LayerSpec::Branches { branches, merge } => {
                let before = (self.producer.clone(), self.dtype, self.float_from.clone());
                let mut ends = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter_mut().enumerate() {
                    (self.producer, self.dtype, self.float_from) = before.clone();
                    let bpath = format!("{path}.branches.{i}");
                    let blabel = format!("{label}.{}", branch_label(i));
                    let (y, resolved) = self.branch(b, &bpath, i + 1, &blabel, depth + 1, x.clone());
                    let out = BranchOutput { path: bpath, shape: y, identity: resolved.is_empty() };
                    ends.push(BranchEnd { out, producer: self.producer.clone(), dtype: self.dtype });
                    *b = resolved;
                }
                let (y, merge_error, parts) = match *merge {
                    Merge::Add => merge_add(&ends),
                    Merge::Concat { dim } => merge_concat(path, dim, &ends),
                };
                error = merge_error;
                if error.is_none() && ends.iter().any(|e| e.dtype != ends[0].dtype) {
                    let (ids, floats): (Vec<&BranchEnd>, Vec<&BranchEnd>) =
                        ends.iter().partition(|e| e.dtype == DType::I64);
                    error = Some((
                        ShapeErrorKind::BadLayer {
                            reason: format!(
                                "`{}` passes on i64 token ids but `{}` produces float values; merged branches must hold one element type",
                                ids[0].out.path, floats[0].out.path
                            ),
                        },
                        vec![],
                    ));
                }
                self.dtype = if ends.iter().all(|e| e.dtype == DType::I64) { DType::I64 } else { DType::F32 };
                self.float_from = if ends.iter().all(|e| e.out.identity) { before.2 } else { Some(lref.clone()) };
                merge_parts = parts;
                y
            }
            LayerSpec::Residual { body, shortcut } => {
                let before = self.producer.clone();
                let (yb, rb) = self.chain(body, &format!("{path}.body."), &format!("{label}."), depth + 1, x.clone());
                *body = rb;
                let after_body = self.producer.clone();
                let identity = shortcut.is_none();
                let ys = match shortcut {
                    Some(sc) => {
                        self.producer = before;
                        let (ys, rs) =
                            self.chain(sc, &format!("{path}.shortcut."), &format!("{label}.s"), depth + 1, x.clone());
                        *sc = rs;
                        ys
                    }
                    None => x.clone(),
                };
                let after_shortcut = std::mem::replace(&mut self.producer, after_body.clone());
                if yb != ys {
                    let mut fixes = vec![];
                    if identity && ys.rank() == 4 && yb.rank() == 4 {
                        fixes.extend(conv_shortcut_fix(path, &ys, &yb));
                    }
                    if let (Some(i), Some(o), 2, 2) = (ys.last(), yb.last(), ys.rank(), yb.rank()) {
                        if identity {
                            fixes.push(Fix {
                                text: format!("add a projection shortcut Linear({i}, {o}) to {path}"),
                                edits: vec![Edit::SetShortcut { path: path.into(), in_features: i, out_features: o }],
                            });
                        } else if let Producer::Linear(p) = &after_shortcut {
                            fixes.push(Fix {
                                text: format!("make {} produce {o} features", p.path),
                                edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: o }],
                            });
                        }
                        if let Producer::Linear(p) = &after_body {
                            fixes.push(Fix {
                                text: format!("make {} produce {i} features", p.path),
                                edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: i }],
                            });
                        }
                    }
                    error =
                        Some((ShapeErrorKind::ResidualMismatch { body: yb.clone(), shortcut: ys, identity }, fixes));
                }
                yb
            }
        };
        lref.desc = spec.to_string();
        self.finish_row(row, &spec, y.clone());
        if dtype_error.is_some() {
            // The wrong element type comes first: the shapes may be what the fix would make right.
            error = dtype_error;
        }
        if let Some((kind, fixes)) = error {
            self.trace[row].error = Some(self.errors.len());
            self.errors.push(ShapeError { layer: Some(lref.clone()), input: Some(x), kind, fixes });
        }
        match &spec {
            // Whatever it received, a Linear decides the feature count from here on.
            LayerSpec::Linear { .. } => self.producer = Producer::Linear(lref.clone()),
            LayerSpec::Conv2d(_) => self.producer = Producer::Conv2d(lref.clone()),
            LayerSpec::Recurrent(r) => self.producer = Producer::Recurrent(lref.clone(), r.directions()),
            LayerSpec::Embedding { .. } => self.producer = Producer::Embedding(lref.clone()),
            LayerSpec::Branches { .. } => self.producer = Producer::Merge(lref.clone(), merge_parts),
            _ => {}
        }
        // Every layer but Flatten and the blocks computes floats from here on (also after an
        // element-type error: as if it had been fixed).
        if !matches!(spec, LayerSpec::Flatten { .. }) && !spec.is_block() {
            self.dtype = DType::F32;
            self.float_from = Some(lref);
        }
        (y, spec)
    }

    /// The element-type error of `spec` receiving the current values, if any.
    fn dtype_error(&self, spec: &LayerSpec, path: &str, x: &SymShape) -> Option<(ShapeErrorKind, Vec<Fix>)> {
        if matches!(spec, LayerSpec::Flatten { .. }) || spec.is_block() {
            return None;
        }
        match spec {
            LayerSpec::Embedding { embedding_dim, .. } if self.dtype.is_float() => {
                let fixes = match (&self.float_from, x.last()) {
                    (None, _) => vec![Fix {
                        text: "the model input holds token ids: set input_dtype = \"i64\"".into(),
                        edits: vec![Edit::SetInputDType { dtype: DType::I64 }],
                    }],
                    (Some(_), Some(f)) => vec![Fix {
                        text: format!(
                            "replace {path} with Linear({f}, {embedding_dim}) (a Linear projects float features; an Embedding looks up integer ids)"
                        ),
                        edits: vec![Edit::Replace {
                            path: path.into(),
                            spec: LayerSpec::Linear { in_features: Some(f), out_features: *embedding_dim, bias: true },
                        }],
                    }],
                    (Some(_), None) => vec![],
                };
                Some((
                    ShapeErrorKind::WrongDType {
                        expected: DType::I64,
                        got: self.dtype,
                        float_from: self.float_from.clone(),
                        layer_type: "Embedding".into(),
                    },
                    fixes,
                ))
            }
            LayerSpec::Embedding { .. } => None,
            other if !self.dtype.is_float() => {
                let dim = match other {
                    LayerSpec::Linear { in_features: Some(i), .. } => i.to_string(),
                    LayerSpec::Recurrent(r) if r.input_size.is_some() => r.input_size.unwrap_or(0).to_string(),
                    LayerSpec::LayerNorm { normalized_shape, .. } if normalized_shape.len() == 1 => {
                        normalized_shape[0].to_string()
                    }
                    _ => "embedding_dim".into(),
                };
                let fixes = vec![
                    Fix {
                        text: format!(
                            "insert Embedding(num_embeddings, {dim}) before {path} to turn the token ids into vectors (num_embeddings: the vocabulary size)"
                        ),
                        edits: vec![],
                    },
                    Fix {
                        text: "if the input holds features, not token ids, set input_dtype = \"f32\"".into(),
                        edits: vec![Edit::SetInputDType { dtype: DType::F32 }],
                    },
                ];
                Some((
                    ShapeErrorKind::WrongDType {
                        expected: DType::F32,
                        got: self.dtype,
                        float_from: None,
                        layer_type: other.type_name().into(),
                    },
                    fixes,
                ))
            }
            _ => None,
        }
    }

    /// One branch of an `Add` or `Concat`: a row of its own (so an identity branch shows too),
    /// then its layers.
    fn branch(
        &mut self,
        layers: &[NamedLayer],
        path: &str,
        position: usize,
        label: &str,
        depth: usize,
        x: SymShape,
    ) -> (SymShape, Vec<NamedLayer>) {
        let row = self.trace.len();
        let spec = LayerSpec::Sequential(layers.to_vec());
        self.trace.push(TraceRow {
            layer: LayerRef { path: path.to_string(), desc: spec.to_string(), position },
            depth,
            position_label: label.to_string(),
            input: x.clone(),
            output: x.clone(),
            spec,
            error: None,
        });
        let (y, resolved) = self.chain(layers, &format!("{path}."), label, depth + 1, x);
        self.finish_row(row, &LayerSpec::Sequential(resolved.clone()), y.clone());
        (y, resolved)
    }

    /// The "make the producer produce `expected` channels" fix for an image batch `x`.
    fn channel_producer_fix(&self, x: &SymShape, expected: usize) -> Option<Fix> {
        match &self.producer {
            Producer::Conv2d(p) => Some(Fix {
                text: format!("make {} produce {expected} channels", p.path),
                edits: vec![Edit::SetOutChannels { path: p.path.clone(), value: expected }],
            }),
            Producer::Linear(p) if x.rank() == 2 => Some(Fix {
                text: format!("make {} produce {expected} features", p.path),
                edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: expected }],
            }),
            Producer::Input => {
                let mut sample = x.sample()?;
                *sample.first_mut()? = expected;
                Some(Fix {
                    text: format!("feed samples with {expected} channels: input {sample:?}"),
                    edits: vec![Edit::SetInput { sample }],
                })
            }
            _ => None,
        }
    }

    /// The "make the producer produce `expected` features" fix (last dimension).
    fn feature_producer_fix(&self, x: &SymShape, expected: usize) -> Option<Fix> {
        match &self.producer {
            Producer::Linear(p) => Some(Fix {
                text: format!("make {} produce {expected} features", p.path),
                edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: expected }],
            }),
            Producer::Recurrent(p, d) => hidden_fix(p, *d, expected),
            Producer::Embedding(p) => Some(embedding_dim_fix(p, expected)),
            Producer::Input => {
                let mut sample = x.sample()?;
                *sample.last_mut()? = expected;
                Some(Fix {
                    text: format!("feed samples of {expected} features: input {sample:?}"),
                    edits: vec![Edit::SetInput { sample }],
                })
            }
            _ => None,
        }
    }

    /// Output size of a sliding window over `(h, w)`; an error (with a fix that shrinks the
    /// window to fit, or removes a pool) when the window is larger than the padded input.
    /// For a `pool`, the padding of a shrunk window is kept within half of it, and removing the
    /// layer is a second fix.
    #[allow(clippy::too_many_arguments)]
    fn window(
        &self,
        path: &str,
        kind: &str,
        x: &SymShape,
        (h, w): (usize, usize),
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        d: (usize, usize),
        pool: bool,
    ) -> (usize, usize, Option<(ShapeErrorKind, Vec<Fix>)>) {
        let span = (d.0 * (k.0.max(1) - 1) + 1, d.1 * (k.1.max(1) - 1) + 1);
        let (ph, pw) = (h + 2 * p.0, w + 2 * p.1);
        if span.0 <= ph && span.1 <= pw {
            return ((ph - span.0) / s.0.max(1) + 1, (pw - span.1) / s.1.max(1) + 1, None);
        }
        let fit = |size: usize, k: usize, p: usize, d: usize| -> (usize, usize) {
            if d * (k - 1) < size + 2 * p {
                return (k, p);
            }
            let k2 = (size + 2 * p - 1) / d + 1;
            if pool && p > k2 / 2 { ((size - 1) / d + 1, 0) } else { (k2, p) }
        };
        let (k0, p0) = fit(h, k.0.max(1), p.0, d.0.max(1));
        let (k1, p1) = fit(w, k.1.max(1), p.1, d.1.max(1));
        let mut fixes = vec![Fix {
            text: format!(
                "make {path} {kind} with kernel_size {}{} (the largest window that fits {x})",
                pair_arg((k0, k1)),
                if (p0, p1) != p { format!(", padding {}", pair_arg((p0, p1))) } else { String::new() }
            ),
            edits: vec![Edit::SetWindow { path: path.into(), kernel_size: (k0, k1), padding: (p0, p1) }],
        }];
        if pool {
            fixes.push(Fix { text: format!("remove {path}"), edits: vec![Edit::Remove { path: path.into() }] });
        }
        (1, 1, Some((ShapeErrorKind::WindowTooLarge { window: span, input: (h, w), padding: p }, fixes)))
    }

    /// The shape rule of MaxPool2d / AvgPool2d (AvgPool2d with dilation 1).
    #[allow(clippy::too_many_arguments)]
    fn pool(
        &self,
        path: &str,
        kind: &str,
        x: &SymShape,
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        d: (usize, usize),
        error: &mut Option<(ShapeErrorKind, Vec<Fix>)>,
    ) -> SymShape {
        if x.rank() < 3 {
            *error = Some((ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images".into() }, vec![]));
            return x.clone();
        }
        let r = x.rank();
        let (h, w) = (fixed(x, r - 2), fixed(x, r - 1));
        if p.0 > k.0 / 2 || p.1 > k.1 / 2 {
            let fixed_p = (p.0.min(k.0 / 2), p.1.min(k.1 / 2));
            *error = Some((
                ShapeErrorKind::BadLayer {
                    reason: format!(
                        "padding {} is more than half the {}×{} window (PyTorch refuses it)",
                        pair_arg(p),
                        k.0,
                        k.1
                    ),
                },
                vec![Fix {
                    text: format!("make {path} {kind} with padding {}", pair_arg(fixed_p)),
                    edits: vec![Edit::SetWindow { path: path.into(), kernel_size: k, padding: fixed_p }],
                }],
            ));
        }
        let (oh, ow, werr) = self.window(path, kind, x, (h, w), k, s, p, d, true);
        if error.is_none() {
            *error = werr;
        }
        let mut v = x.0.clone();
        v[r - 2] = Dim::Fixed(oh);
        v[r - 1] = Dim::Fixed(ow);
        SymShape(v)
    }

    fn finish_row(&mut self, row: usize, spec: &LayerSpec, y: SymShape) {
        let r = &mut self.trace[row];
        r.output = y;
        r.spec = spec.clone();
        r.layer.desc = spec.to_string();
    }

    fn check_classes(&mut self, out: &SymShape, classes: usize) {
        if out.rank() == 2 && out.last() == Some(classes) {
            return;
        }
        let fixes = match (&self.producer, out.last()) {
            (Producer::Linear(p), Some(_)) if out.rank() == 2 => {
                let in_f = self.trace.iter().find(|r| r.layer.path == p.path).and_then(|r| r.input.last()).unwrap_or(0);
                vec![Fix {
                    text: format!("make {} Linear({in_f}, {classes})", p.path),
                    edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: classes }],
                }]
            }
            (_, Some(last)) if out.rank() == 2 => {
                vec![Fix {
                    text: format!("end the model with Linear({last}, {classes})"),
                    edits: vec![Edit::AppendLinear { in_features: last, out_features: classes }],
                }]
            }
            _ => vec![Fix {
                text: format!("end the model with Flatten and Linear({}, {classes})", out.sample_numel()),
                edits: vec![],
            }],
        };
        self.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::ClassCount { classes, logits: out.clone(), producer: self.producer.clone() },
            fixes,
        });
    }
}

/// Dimension `i` of `x` as a number (0 for the symbolic batch).
fn fixed(x: &SymShape, i: usize) -> usize {
    match x.0.get(i) {
        Some(Dim::Fixed(v)) => *v,
        _ => 0,
    }
}

/// `3` or `(3, 2)`, as PyTorch's int-or-tuple arguments are written.
fn pair_arg((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("({a}, {b})") }
}

/// The ResNet projection shortcut — `Conv2d(C, O, 1, stride s, bias=False)` + `BatchNorm2d(O)` —
/// that maps an image batch `x` to the body's output `y`, when a stride does.
fn conv_shortcut_fix(path: &str, x: &SymShape, y: &SymShape) -> Option<Fix> {
    let stride = |i: usize, o: usize| (1..=i.max(1)).find(|s| (i.max(1) - 1) / s + 1 == o);
    let (c, o) = (fixed(x, 1), fixed(y, 1));
    let s = (stride(fixed(x, 2), fixed(y, 2))?, stride(fixed(x, 3), fixed(y, 3))?);
    let mut conv = crate::spec::ConvSpec::new(Some(c), o, (1, 1));
    (conv.stride, conv.bias) = (s, false);
    let layers = vec![
        NamedLayer { name: "conv".into(), spec: LayerSpec::Conv2d(conv), origin: None },
        NamedLayer {
            name: "bn".into(),
            spec: LayerSpec::BatchNorm2d(crate::spec::BatchNormSpec::new(Some(o))),
            origin: None,
        },
    ];
    Some(Fix {
        text: format!(
            "add a projection shortcut Conv2d({c}, {o}, 1, stride={}, bias=False) + BatchNorm2d({o}) to {path}",
            pair_arg(s)
        ),
        edits: vec![Edit::SetShortcutLayers { path: path.into(), layers }],
    })
}

/// The divisor of both channel counts closest to `groups` (the smaller on a tie).
fn nearest_groups(in_channels: usize, out_channels: usize, groups: usize) -> usize {
    let (mut a, mut b) = (in_channels.max(1), out_channels.max(1));
    while b != 0 {
        (a, b) = (b, a % b);
    }
    (1..=a).filter(|d| a.is_multiple_of(*d)).min_by_key(|d| d.abs_diff(groups)).unwrap_or(1)
}

/// "make the Embedding `p` produce `expected` features".
fn embedding_dim_fix(p: &LayerRef, expected: usize) -> Fix {
    Fix {
        text: format!("make {} produce {expected} features (embedding_dim = {expected})", p.path),
        edits: vec![Edit::SetEmbeddingDim { path: p.path.clone(), value: expected }],
    }
}

/// `128` or `[28, 64]`, as PyTorch's int-or-list shape arguments are written.
fn shape_arg(dims: &[usize]) -> String {
    match dims {
        [one] => one.to_string(),
        _ => format!("{dims:?}"),
    }
}

/// Trace labels of branches: `a`, `b`, … (`2.a1` is the first layer of the first branch of the
/// second layer).
fn branch_label(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'a' + i).to_string(),
        _ => format!("[{i}]"),
    }
}

/// A layer that maps a branch's output `from` to `to`: a Linear on the last dimension when only
/// it differs, or for image batches a 1×1 Conv2d with the stride that shrinks `from`'s height
/// and width to `to`'s. With its text, e.g. `Linear(64, 128)`.
fn projection(from: &SymShape, to: &SymShape) -> Option<(String, LayerSpec)> {
    let r = from.rank();
    if r != to.rank() || from.0[0] != to.0[0] {
        return None;
    }
    if r == 4 {
        let stride = |i: usize, o: usize| (1..=i.max(1)).find(|s| (i.max(1) - 1) / s + 1 == o);
        let (c, o) = (fixed(from, 1), fixed(to, 1));
        let s = (stride(fixed(from, 2), fixed(to, 2))?, stride(fixed(from, 3), fixed(to, 3))?);
        let mut conv = crate::spec::ConvSpec::new(Some(c), o, (1, 1));
        conv.stride = s;
        let text = if s == (1, 1) {
            format!("Conv2d({c}, {o}, 1)")
        } else {
            format!("Conv2d({c}, {o}, 1, stride={})", pair_arg(s))
        };
        return Some((text, LayerSpec::Conv2d(conv)));
    }
    if r >= 2 && from.0[..r - 1] == to.0[..r - 1] {
        let (i, o) = (from.last()?, to.last()?);
        let linear = LayerSpec::Linear { in_features: Some(i), out_features: o, bias: true };
        return Some((format!("Linear({i}, {o})"), linear));
    }
    None
}

/// "make the layer that ends branch `end` produce `to`'s size", when that layer is inside the
/// branch (changing a layer before the branches would change every branch).
fn branch_producer_fix(end: &BranchEnd, to: &SymShape) -> Option<Fix> {
    let (from, r) = (&end.out.shape, end.out.shape.rank());
    let inside = |l: &LayerRef| l.path.starts_with(&format!("{}.", end.out.path));
    let all_but = |k: usize| r == to.rank() && (0..r).all(|j| j == k || from.0[j] == to.0[j]);
    let o = to.last()?;
    match &end.producer {
        Producer::Linear(p) if inside(p) && all_but(r - 1) => Some(Fix {
            text: format!("make {} produce {o} features", p.path),
            edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: o }],
        }),
        Producer::Embedding(p) if inside(p) && all_but(r - 1) => Some(embedding_dim_fix(p, o)),
        Producer::Recurrent(p, d) if inside(p) && all_but(r - 1) => hidden_fix(p, *d, o),
        Producer::Conv2d(p) if inside(p) && r == 4 && all_but(1) => Some(Fix {
            text: format!("make {} produce {} channels", p.path, fixed(to, 1)),
            edits: vec![Edit::SetOutChannels { path: p.path.clone(), value: fixed(to, 1) }],
        }),
        _ => None,
    }
}

/// Several fixes, one per branch, as one: `a and b`, all edits together.
fn joined(fixes: Vec<Fix>) -> Fix {
    let text = fixes.iter().map(|f| f.text.as_str()).collect::<Vec<_>>().join(" and ");
    Fix { text, edits: fixes.into_iter().flat_map(|f| f.edits).collect() }
}

fn outputs(ends: &[BranchEnd]) -> Vec<BranchOutput> {
    ends.iter().map(|e| e.out.clone()).collect()
}

/// The shape rule of `Add`: every branch the same shape. On a mismatch the target is the
/// largest branch that every other can be projected to (a Linear or a 1×1 convolution appended
/// to it), and the output is that target, as if fixed.
fn merge_add(ends: &[BranchEnd]) -> Merged {
    let first = &ends[0].out.shape;
    if ends.iter().all(|e| e.out.shape == *first) {
        return (first.clone(), None, None);
    }
    let mut order: Vec<usize> = (0..ends.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ends[i].out.shape.sample_numel()));
    let projections = |t: usize| -> Option<Vec<Fix>> {
        let to = &ends[t].out.shape;
        ends.iter()
            .filter(|e| e.out.shape != *to)
            .map(|e| {
                let (text, spec) = projection(&e.out.shape, to)?;
                Some(Fix {
                    text: format!("append a projection {text} to {}", e.out.path),
                    edits: vec![Edit::Append { chain: e.out.path.clone(), name: "proj".into(), spec }],
                })
            })
            .collect()
    };
    let target = order.iter().copied().find(|&t| projections(t).is_some()).unwrap_or(order[0]);
    let to = ends[target].out.shape.clone();
    let mut fixes = vec![];
    fixes.extend(projections(target).map(joined));
    let resize: Option<Vec<Fix>> =
        ends.iter().filter(|e| e.out.shape != to).map(|e| branch_producer_fix(e, &to)).collect();
    fixes.extend(resize.map(joined));
    let kind = ShapeErrorKind::BranchMismatch { merge: Merge::Add, branches: outputs(ends) };
    (to, Some((kind, fixes)), None)
}

/// The shape rule of `Concat`: the same rank, equal sizes but along `dim` (never the batch),
/// which are added. Also returns the sizes joined (`64 + 32`) when `dim` is the last dimension.
fn merge_concat(path: &str, dim: isize, ends: &[BranchEnd]) -> Merged {
    let shapes: Vec<&SymShape> = ends.iter().map(|e| &e.out.shape).collect();
    let mismatch = |fixes: Vec<Fix>| {
        Some((ShapeErrorKind::BranchMismatch { merge: Merge::Concat { dim }, branches: outputs(ends) }, fixes))
    };
    let resolve = |rank: usize| {
        let d = if dim < 0 { dim + rank as isize } else { dim };
        (0..rank as isize).contains(&d).then_some(d as usize)
    };
    let (min_rank, max_rank) =
        (shapes.iter().map(|s| s.rank()).min().unwrap_or(0), shapes.iter().map(|s| s.rank()).max().unwrap_or(0));
    if min_rank != max_rank {
        // Feature vectors beside image-shaped branches: flatten those (along the features only).
        if min_rank == 2 && resolve(2) == Some(1) && shapes.iter().all(|s| s.sample().is_some()) {
            let mut fixes = vec![];
            for e in ends.iter().filter(|e| e.out.shape.rank() > 2) {
                fixes.push(Fix {
                    text: format!(
                        "append Flatten to {} (it turns {} into [N, {}])",
                        e.out.path,
                        e.out.shape,
                        e.out.shape.sample_numel()
                    ),
                    edits: vec![Edit::Append {
                        chain: e.out.path.clone(),
                        name: "flatten".into(),
                        spec: LayerSpec::Flatten { start_dim: 1, end_dim: -1 },
                    }],
                });
            }
            let total = shapes.iter().map(|s| s.sample_numel()).sum();
            return (SymShape(vec![shapes[0].0[0], Dim::Fixed(total)]), mismatch(vec![joined(fixes)]), None);
        }
        return (shapes[0].clone(), mismatch(vec![]), None);
    }
    let r = min_rank;
    let batch_at = |k: usize| shapes.iter().any(|s| s.0[k] == Dim::Batch);
    let mut dim_error = None;
    let d = match resolve(r) {
        Some(d) if !batch_at(d) => d,
        bad => {
            let Some(good) = (1..r).find(|&k| !batch_at(k)) else {
                let reason = format!("the branches produce {}: there is no dimension besides N to join", shapes[0]);
                return (shapes[0].clone(), Some((ShapeErrorKind::BadLayer { reason }, vec![])), None);
            };
            let reason = match bad {
                None => format!(
                    "dim = {dim} is not a dimension of the branches' {r}-dimensional outputs (valid: {} to {})",
                    -(r as isize),
                    r - 1
                ),
                Some(_) => format!(
                    "dim = {dim} is the batch dimension N: joining along it would stack the branches' batches into one of {}·N samples",
                    ends.len()
                ),
            };
            let what = if r == 4 && good == 1 { "the channels" } else { "the features" };
            let fix = Fix {
                text: format!("make {path} Concat(dim={good}) (join {what})"),
                edits: vec![Edit::SetConcatDim { path: path.into(), dim: good as isize }],
            };
            dim_error = Some((ShapeErrorKind::BadLayer { reason }, vec![fix]));
            good
        }
    };
    let agree = shapes.iter().all(|s| (0..r).all(|k| k == d || s.0[k] == shapes[0].0[k]));
    let total: usize = shapes.iter().map(|s| fixed(s, d)).sum();
    if !agree && dim_error.is_none() {
        // Images joined along their channels: pool the larger ones down to the smallest size.
        if r == 4 && d == 1 && shapes.iter().all(|s| s.0[0] == shapes[0].0[0]) {
            let th = shapes.iter().map(|s| fixed(s, 2)).min().unwrap_or(1);
            let tw = shapes.iter().map(|s| fixed(s, 3)).min().unwrap_or(1);
            let mut fixes = vec![];
            for e in ends {
                let (h, w) = (fixed(&e.out.shape, 2), fixed(&e.out.shape, 3));
                if (h, w) == (th, tw) || th == 0 || tw == 0 {
                    continue;
                }
                let (text, spec) = if h.is_multiple_of(th) && w.is_multiple_of(tw) && h / th == w / tw {
                    let k = h / th;
                    let pool =
                        LayerSpec::MaxPool2d { kernel_size: (k, k), stride: (k, k), padding: (0, 0), dilation: (1, 1) };
                    (format!("MaxPool2d({k})"), pool)
                } else {
                    let pool = LayerSpec::AdaptiveAvgPool2d { output_size: (th, tw) };
                    (format!("AdaptiveAvgPool2d({})", pair_arg((th, tw))), pool)
                };
                let mut to = e.out.shape.clone();
                (to.0[2], to.0[3]) = (Dim::Fixed(th), Dim::Fixed(tw));
                fixes.push(Fix {
                    text: format!("append {text} to {} (it turns {} into {to})", e.out.path, e.out.shape),
                    edits: vec![Edit::Append { chain: e.out.path.clone(), name: "pool".into(), spec }],
                });
            }
            let out = SymShape(vec![shapes[0].0[0], Dim::Fixed(total), Dim::Fixed(th), Dim::Fixed(tw)]);
            return (out, mismatch(vec![joined(fixes)]), None);
        }
        let mut out = shapes[0].clone();
        out.0[d] = Dim::Fixed(total);
        return (out, mismatch(vec![]), None);
    }
    let mut out = shapes[0].clone();
    out.0[d] = Dim::Fixed(total);
    let parts = (d + 1 == r && dim_error.is_none())
        .then(|| shapes.iter().map(|s| fixed(s, d).to_string()).collect::<Vec<_>>().join(" + "));
    (out, dim_error, parts)
}

/// "make the recurrent layer `p` produce `expected` features" when `D` divides it.
fn hidden_fix(p: &LayerRef, d: usize, expected: usize) -> Option<Fix> {
    expected.is_multiple_of(d).then(|| Fix {
        text: format!("make {} produce {expected} features (hidden_size = {})", p.path, expected / d),
        edits: vec![Edit::SetHiddenSize { path: p.path.clone(), value: expected / d }],
    })
}

/// Checks a checkpoint (state_dict) against a resolved spec: for each layer, its tensors'
/// shapes; then tensors that no layer uses. `source` names the checkpoint in messages.
pub fn check_checkpoint(report: &CheckReport, sd: &StateDict, source: &str) -> Vec<ShapeError> {
    let mut errors = vec![];
    let mut used = std::collections::HashSet::new();
    for row in &report.trace {
        let Some(mut params) = row.spec.own_parameter_shapes() else { continue };
        params.extend(row.spec.own_buffer_shapes().unwrap_or_default());
        if row.spec.is_block() {
            continue;
        }
        let (mut mismatched, mut missing) = (vec![], vec![]);
        let mut saved_linear = None;
        for (name, shape) in params {
            let key = format!("{}.{name}", row.layer.path);
            used.insert(key.clone());
            match sd.get(&key) {
                None => missing.push(key),
                Some(t) if t.dims() != shape.as_slice() => {
                    if name == "weight" && t.ndim() == 2 {
                        saved_linear = Some((t.dims()[1], t.dims()[0]));
                    }
                    mismatched.push((key, format!("{shape:?}"), format!("{:?}", t.dims())));
                }
                Some(_) => {}
            }
        }
        if mismatched.is_empty() && missing.is_empty() {
            continue;
        }
        let name = &row.layer.path;
        let fixes = match saved_linear {
            Some((i, o)) => vec![
                Fix {
                    text: format!(
                        "the checkpoint was saved with {name} as Linear({i}, {o}): make {name} Linear({i}, {o})"
                    ),
                    edits: vec![
                        Edit::SetInFeatures { path: row.layer.path.clone(), value: i },
                        Edit::SetOutFeatures { path: row.layer.path.clone(), value: o },
                    ],
                },
                Fix { text: "load a checkpoint saved from this architecture".into(), edits: vec![] },
            ],
            None => vec![Fix { text: "load a checkpoint saved from this architecture".into(), edits: vec![] }],
        };
        errors.push(ShapeError {
            layer: Some(row.layer.clone()),
            input: None,
            kind: ShapeErrorKind::Checkpoint { source: source.into(), mismatched, missing },
            fixes,
        });
    }
    let extra: Vec<String> = sd.keys().filter(|k| !used.contains(*k)).map(String::from).collect();
    if !extra.is_empty() {
        errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::CheckpointExtra { source: source.into(), keys: extra },
            fixes: vec![Fix {
                text: "load a checkpoint saved from this architecture, or add the layers it was saved with".into(),
                edits: vec![],
            }],
        });
    }
    errors
}

impl ModelSpec {
    /// Applies the edits of a fix (used to prove that suggested fixes work).
    pub fn apply(&mut self, edits: &[Edit]) -> bool {
        edits.iter().all(|e| apply_edit(self, e))
    }
}

/// The chain at `path`: the model's (`""`), a block's, a residual block's `body` or `shortcut`
/// (`block1.body`), or a branch (`mix.branches.1`).
fn find_chain<'a>(layers: &'a mut Vec<NamedLayer>, path: &str) -> Option<&'a mut Vec<NamedLayer>> {
    if path.is_empty() {
        return Some(layers);
    }
    let split = |p: &'_ str| -> (String, String) {
        let (h, r) = p.split_once('.').unwrap_or((p, ""));
        (h.to_string(), r.to_string())
    };
    let (head, rest) = split(path);
    let i = layers.iter().position(|l| l.name == head)?;
    let (part, after) = split(&rest);
    match &mut layers[i].spec {
        LayerSpec::Sequential(inner) => find_chain(inner, &rest),
        LayerSpec::Residual { body, .. } if part == "body" => find_chain(body, &after),
        LayerSpec::Residual { shortcut, .. } if part == "shortcut" => find_chain(shortcut.as_mut()?, &after),
        LayerSpec::Branches { branches, .. } if part == "branches" => {
            let (index, after) = split(&after);
            find_chain(branches.get_mut(index.parse::<usize>().ok()?)?, &after)
        }
        _ => None,
    }
}

/// The chain holding the layer at `path`, and its index there.
fn find<'a>(layers: &'a mut Vec<NamedLayer>, path: &str) -> Option<(&'a mut Vec<NamedLayer>, usize)> {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    let chain = find_chain(layers, parent)?;
    let i = chain.iter().position(|l| l.name == name)?;
    Some((chain, i))
}

/// `name`, or `name_`, `name__`, … until no layer of `chain` has it.
fn unique_name(chain: &[NamedLayer], name: &str) -> String {
    let mut name = name.to_string();
    while chain.iter().any(|l| l.name == name) {
        name.push('_');
    }
    name
}

fn apply_edit(spec: &mut ModelSpec, e: &Edit) -> bool {
    match e {
        Edit::SetInput { sample } => {
            spec.input = Some(sample.clone());
            true
        }
        Edit::AppendLinear { in_features, out_features } => {
            let name = spec.layers.len().to_string();
            spec.layers.push(NamedLayer {
                name,
                spec: LayerSpec::Linear { in_features: Some(*in_features), out_features: *out_features, bias: true },
                origin: None,
            });
            true
        }
        Edit::SetShortcut { path, in_features, out_features } => match find(&mut spec.layers, path) {
            Some((chain, i)) => match &mut chain[i].spec {
                LayerSpec::Residual { shortcut, .. } => {
                    let proj =
                        LayerSpec::Linear { in_features: Some(*in_features), out_features: *out_features, bias: true };
                    *shortcut = Some(vec![NamedLayer { name: "proj".into(), spec: proj, origin: None }]);
                    true
                }
                _ => false,
            },
            None => false,
        },
        Edit::InsertFlattenBefore { path } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                let name = unique_name(chain, "flatten");
                chain.insert(
                    i,
                    NamedLayer { name, spec: LayerSpec::Flatten { start_dim: 1, end_dim: -1 }, origin: None },
                );
                true
            }
            None => false,
        },
        Edit::SetFlattenRange { path, start_dim: s, end_dim: e } => match find(&mut spec.layers, path) {
            Some((chain, i)) => match &mut chain[i].spec {
                LayerSpec::Flatten { start_dim, end_dim } => {
                    (*start_dim, *end_dim) = (*s, *e);
                    true
                }
                _ => false,
            },
            None => false,
        },
        Edit::SetShortcutLayers { path, layers } => match find(&mut spec.layers, path) {
            Some((chain, i)) => match &mut chain[i].spec {
                LayerSpec::Residual { shortcut, .. } => {
                    *shortcut = Some(layers.clone());
                    true
                }
                _ => false,
            },
            None => false,
        },
        Edit::InsertBefore { path, name, spec: layer } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                let name = unique_name(chain, name);
                chain.insert(i, NamedLayer { name, spec: layer.clone(), origin: None });
                true
            }
            None => false,
        },
        Edit::Append { chain, name, spec: layer } => match find_chain(&mut spec.layers, chain) {
            Some(chain) => {
                let name = unique_name(chain, name);
                chain.push(NamedLayer { name, spec: layer.clone(), origin: None });
                true
            }
            None => false,
        },
        Edit::Replace { path, spec: layer } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                chain[i].spec = layer.clone();
                true
            }
            None => false,
        },
        Edit::SetInputDType { dtype } => {
            spec.input_dtype = *dtype;
            true
        }
        Edit::SetConcatDim { path, dim: d } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match &mut chain[i].spec {
                LayerSpec::Branches { merge: Merge::Concat { dim }, .. } => *dim = *d,
                _ => return false,
            }
            true
        }
        Edit::SetNormalizedShape { path, shape } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match &mut chain[i].spec {
                LayerSpec::LayerNorm { normalized_shape, .. } => *normalized_shape = shape.clone(),
                _ => return false,
            }
            true
        }
        Edit::Remove { path } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                chain.remove(i);
                true
            }
            None => false,
        },
        Edit::SetInChannels { path, value }
        | Edit::SetOutChannels { path, value }
        | Edit::SetNumFeatures { path, value }
        | Edit::SetInputSize { path, value }
        | Edit::SetHiddenSize { path, value }
        | Edit::SetEmbeddingDim { path, value }
        | Edit::SetGroups { path, groups: value } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match (e, &mut chain[i].spec) {
                (Edit::SetInChannels { .. }, LayerSpec::Conv2d(c)) => c.in_channels = Some(*value),
                (Edit::SetOutChannels { .. }, LayerSpec::Conv2d(c)) => c.out_channels = *value,
                (Edit::SetNumFeatures { .. }, LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b)) => {
                    b.num_features = Some(*value)
                }
                (Edit::SetInputSize { .. }, LayerSpec::Recurrent(r)) => r.input_size = Some(*value),
                (Edit::SetHiddenSize { .. }, LayerSpec::Recurrent(r)) => r.hidden_size = *value,
                (Edit::SetEmbeddingDim { .. }, LayerSpec::Embedding { embedding_dim, .. }) => *embedding_dim = *value,
                (Edit::SetGroups { .. }, LayerSpec::Conv2d(c)) => c.groups = *value,
                _ => return false,
            }
            true
        }
        Edit::SetWindow { path, kernel_size: k, padding: p } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match &mut chain[i].spec {
                LayerSpec::Conv2d(c) => (c.kernel_size, c.padding) = (*k, *p),
                LayerSpec::MaxPool2d { kernel_size, padding, .. }
                | LayerSpec::AvgPool2d { kernel_size, padding, .. } => (*kernel_size, *padding) = (*k, *p),
                _ => return false,
            }
            true
        }
        Edit::SetDim { path, dim: d } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match &mut chain[i].spec {
                LayerSpec::Softmax { dim } | LayerSpec::LogSoftmax { dim } => *dim = *d,
                _ => return false,
            }
            true
        }
        Edit::SetInFeatures { path, value } | Edit::SetOutFeatures { path, value } => {
            match find(&mut spec.layers, path) {
                Some((chain, i)) => match &mut chain[i].spec {
                    LayerSpec::Linear { in_features, out_features, .. } => {
                        if matches!(e, Edit::SetInFeatures { .. }) {
                            *in_features = Some(*value);
                        } else {
                            *out_features = *value;
                        }
                        true
                    }
                    _ => false,
                },
                None => false,
            }
        }
    }
}
