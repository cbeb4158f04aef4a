//! What a layer's shape rule sees of the chain around it: its path, who produced the current
//! feature count, the element type flowing in, and the fixes that change an earlier layer. The
//! walker makes one per layer; [`crate::layer::Layer::check`] reports through it.

use super::error::{LayerRef, Producer, ShapeErrorKind};
use super::fix::{Edit, Fix};
use super::shape::{SymShape, pair_arg};
use strata_core::DType;

/// A shape error with its fixes, before the walker names the layer and its input.
pub type Failure = (ShapeErrorKind, Vec<Fix>);

/// The chain around one layer while it is checked.
pub struct CheckContext<'a> {
    /// The layer's dotted path, e.g. `encoder.fc1`.
    pub path: &'a str,
    /// The layer as messages name it (path, description, position).
    pub layer: &'a LayerRef,
    /// Who decided the incoming feature count (last dimension) or channels.
    pub producer: &'a mut Producer,
    /// The element type of the incoming values.
    pub dtype: DType,
    /// The last layer that computed float values (`None`: they are the model input's).
    pub float_from: Option<&'a LayerRef>,
    pub(crate) error: Option<Failure>,
}

impl CheckContext<'_> {
    /// Reports an error; the first one reported stands (later ones follow from it).
    pub fn fail(&mut self, kind: ShapeErrorKind, fixes: Vec<Fix>) {
        if self.error.is_none() {
            self.error = Some((kind, fixes));
        }
    }

    /// Reports an error computed elsewhere (e.g. by [`window`]), if any.
    pub fn fail_with(&mut self, failure: Option<Failure>) {
        if let Some((kind, fixes)) = failure {
            self.fail(kind, fixes);
        }
    }

    /// Whether an error was reported for this layer.
    pub fn has_error(&self) -> bool {
        self.error.is_some()
    }

    /// The error of a layer that computes with floats receiving token ids (`hint`: the feature
    /// count it expects, for the suggested Embedding); `None` when the values are floats.
    pub fn float_input_error(&self, type_name: &str, hint: Option<usize>) -> Option<Failure> {
        if self.dtype.is_float() {
            return None;
        }
        let dim = hint.map_or_else(|| "embedding_dim".to_string(), |d| d.to_string());
        let path = self.path;
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
                layer_type: type_name.into(),
            },
            fixes,
        ))
    }

    /// The "make the producer produce `expected` channels" fix for an image batch `x`.
    pub fn channel_producer_fix(&self, x: &SymShape, expected: usize) -> Option<Fix> {
        match &*self.producer {
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
    pub fn feature_producer_fix(&self, x: &SymShape, expected: usize) -> Option<Fix> {
        match &*self.producer {
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
}

/// The geometry of a sliding window (a convolution's or a pool's), per spatial dimension.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// `(kH, kW)`.
    pub kernel: (usize, usize),
    /// Step of the window.
    pub stride: (usize, usize),
    /// Padding on each side.
    pub padding: (usize, usize),
    /// Spacing between taps.
    pub dilation: (usize, usize),
}

/// Output size of a sliding window over `(h, w)`; an error (with a fix that shrinks the window
/// to fit, or removes a pool) when the window is larger than the padded input. For a `pool`,
/// the padding of a shrunk window is kept within half of it, and removing the layer is a second
/// fix. `kind` names the layer in the fix (`Conv2d`, `MaxPool2d`).
pub fn window(
    path: &str,
    kind: &str,
    x: &SymShape,
    (h, w): (usize, usize),
    win: Window,
    pool: bool,
) -> (usize, usize, Option<Failure>) {
    let Window { kernel: k, stride: s, padding: p, dilation: d } = win;
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

/// [`window`]'s fixes reworded for a 1-d layer (`Conv1d`, `MaxPool1d`, `AvgPool1d`, checked at
/// height 1): one kernel size and padding, about its input `shown`; `padding` is the layer's.
pub fn window_fixes_1d(
    path: &str,
    kind: &str,
    shown: &SymShape,
    padding: (usize, usize),
    failure: &mut Option<Failure>,
) {
    let Some((_, fixes)) = failure else { return };
    for fix in fixes.iter_mut() {
        if let [Edit::SetWindow { kernel_size, padding: p, .. }] = fix.edits.as_slice() {
            let pad = if *p != padding { format!(", padding {}", p.1) } else { String::new() };
            fix.text = format!(
                "make {path} {kind} with kernel_size {}{pad} (the largest window that fits {shown})",
                kernel_size.1
            );
        }
    }
}

/// "make the recurrent layer `p` produce `expected` features" when `D` divides it.
pub fn hidden_fix(p: &LayerRef, d: usize, expected: usize) -> Option<Fix> {
    expected.is_multiple_of(d).then(|| Fix {
        text: format!("make {} produce {expected} features (hidden_size = {})", p.path, expected / d),
        edits: vec![Edit::SetHiddenSize { path: p.path.clone(), value: expected / d }],
    })
}

/// "make the Embedding `p` produce `expected` features".
pub fn embedding_dim_fix(p: &LayerRef, expected: usize) -> Fix {
    Fix {
        text: format!("make {} produce {expected} features (embedding_dim = {expected})", p.path),
        edits: vec![Edit::SetEmbeddingDim { path: p.path.clone(), value: expected }],
    }
}
