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
    /// A Linear receives a different feature count than its `in_features`.
    FeatureMismatch {
        /// `in_features`.
        expected: usize,
        /// The incoming last dimension.
        got: usize,
        /// Who produced it.
        producer: Producer,
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
            ShapeErrorKind::BadFlattenRange { reason } => write!(f, "\n  {reason}")?,
            ShapeErrorKind::ClassCount { classes, logits, producer } => {
                write!(f, " the loss receives logits {logits}")?;
                if let Producer::Linear(l) | Producer::Flatten(l, _) = producer {
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
                                    Producer::Flatten(..) => {}
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
                        let (ys, rs) = self.chain(sc, &format!("{path}.shortcut."), &format!("{label}.s"), depth + 1, x.clone());
                        *sc = rs;
                        ys
                    }
                    None => x.clone(),
                };
                let after_shortcut = std::mem::replace(&mut self.producer, after_body.clone());
                if yb != ys {
                    let mut fixes = vec![];
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
                    error = Some((ShapeErrorKind::ResidualMismatch { body: yb.clone(), shortcut: ys, identity }, fixes));
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
        if let LayerSpec::Linear { .. } = spec {
            // Whatever it received, a Linear decides the feature count from here on.
            self.producer = Producer::Linear(lref);
        }
        (y, spec)
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

/// Checks a checkpoint (state_dict) against a resolved spec: for each layer, its tensors'
/// shapes; then tensors that no layer uses. `source` names the checkpoint in messages.
pub fn check_checkpoint(report: &CheckReport, sd: &StateDict, source: &str) -> Vec<ShapeError> {
    let mut errors = vec![];
    let mut used = std::collections::HashSet::new();
    for row in &report.trace {
        let Some(params) = row.spec.own_parameter_shapes() else { continue };
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
                    let proj = LayerSpec::Linear { in_features: Some(*in_features), out_features: *out_features, bias: true };
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
