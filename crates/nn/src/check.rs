//! The shape contract: a model is checked end to end before it runs. Each layer maps an input
//! shape (with a symbolic batch dimension `N`) to an output shape or a structured error; the
//! chain propagates shapes, remembers which layer produced the current feature count, and on a
//! mismatch reports the layer, its position, the shape it receives, who produced it, and a
//! concrete fix. After an error the layer's intended output is assumed, so *every* mismatch in
//! the model is reported in one run, not only the first.

use crate::spec::{LayerSpec, ModelSpec, NamedLayer};
use crate::state_dict::StateDict;
use std::fmt;

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

    /// Elements per sample.
    pub fn sample_numel(&self) -> usize {
        self.sample().map_or(0, |s| s.iter().product())
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
        Producer::Recurrent(l, _) => format!("{l} produces {got} features"),
    }
}

fn channel_phrase(p: &Producer, got: usize) -> String {
    match p {
        Producer::Input => format!("the model input has {got} channels"),
        Producer::Linear(l) | Producer::Flatten(l, _) | Producer::Conv2d(l) | Producer::Recurrent(l, _) => {
            format!("{l} produces {got} channels")
        }
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
                if let Producer::Linear(l) | Producer::Flatten(l, _) | Producer::Conv2d(l) | Producer::Recurrent(l, _) =
                    producer
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
            Some(i) => format!("{}: input {i}\n", self.name),
            None => format!("{}: no input shape\n", self.name),
        };
        s.push_str(&table(&rows, &[false, false, false, false]));
        s
    }
}

fn short_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
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
    producer: Producer,
}

/// Checks `spec` for `input` (or the spec's own input) and, with `classes`, that the output is
/// one logit per class for a cross-entropy loss.
pub fn check_spec(spec: &ModelSpec, input: Option<&SymShape>, classes: Option<usize>) -> CheckReport {
    let input = input.cloned().or_else(|| spec.input.as_deref().map(SymShape::batched));
    let mut report = CheckReport {
        name: spec.name.clone(),
        input: input.clone(),
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
    let mut w = Walker { trace: vec![], errors: vec![], producer: Producer::Input };
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
                                    Producer::Flatten(..) | Producer::Conv2d(_) => {}
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
                        error = Some((
                            ShapeErrorKind::BadLayer {
                                reason: format!(
                                    "groups = {g} must divide both in_channels ({in_c}) and out_channels ({out})"
                                ),
                            },
                            vec![],
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
                    error = Some((ShapeErrorKind::TooFewDims { needs: needs.into() }, vec![]));
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
        if let Some((kind, fixes)) = error {
            self.trace[row].error = Some(self.errors.len());
            self.errors.push(ShapeError { layer: Some(lref.clone()), input: Some(x), kind, fixes });
        }
        match &spec {
            // Whatever it received, a Linear decides the feature count from here on.
            LayerSpec::Linear { .. } => self.producer = Producer::Linear(lref),
            LayerSpec::Conv2d(_) => self.producer = Producer::Conv2d(lref),
            LayerSpec::Recurrent(r) => self.producer = Producer::Recurrent(lref, r.directions()),
            _ => {}
        }
        (y, spec)
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
        if matches!(row.spec, LayerSpec::Sequential(_) | LayerSpec::Residual { .. }) {
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

fn find<'a>(layers: &'a mut Vec<NamedLayer>, path: &str) -> Option<(&'a mut Vec<NamedLayer>, usize)> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let i = layers.iter().position(|l| l.name == head)?;
    match rest {
        None => Some((layers, i)),
        Some(r) => match &mut layers[i].spec {
            LayerSpec::Sequential(inner) => find(inner, r),
            LayerSpec::Residual { body, shortcut } => match r.split_once('.') {
                Some(("body", rr)) => find(body, rr),
                Some(("shortcut", rr)) => find(shortcut.as_mut()?, rr),
                _ => None,
            },
            _ => None,
        },
    }
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
                let mut name = "flatten".to_string();
                while chain.iter().any(|l| l.name == name) {
                    name.push('_');
                }
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
                let mut name = name.clone();
                while chain.iter().any(|l| l.name == name) {
                    name.push('_');
                }
                chain.insert(i, NamedLayer { name, spec: layer.clone(), origin: None });
                true
            }
            None => false,
        },
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
        | Edit::SetHiddenSize { path, value } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match (e, &mut chain[i].spec) {
                (Edit::SetInChannels { .. }, LayerSpec::Conv2d(c)) => c.in_channels = Some(*value),
                (Edit::SetOutChannels { .. }, LayerSpec::Conv2d(c)) => c.out_channels = *value,
                (Edit::SetNumFeatures { .. }, LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b)) => {
                    b.num_features = Some(*value)
                }
                (Edit::SetInputSize { .. }, LayerSpec::Recurrent(r)) => r.input_size = Some(*value),
                (Edit::SetHiddenSize { .. }, LayerSpec::Recurrent(r)) => r.hidden_size = *value,
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
