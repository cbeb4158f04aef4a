//! Model specs: a model *described* — layer kinds, sizes and names, what a TOML model file
//! holds — apart from the model *instantiated* with parameters. Shape checking and summaries
//! work on the spec alone, before any memory is allocated; building a checked spec never fails
//! for shape reasons.
//!
//! ```
//! use strata_nn::spec::ModelSpec;
//! let spec = ModelSpec::new("SimpleNN")
//!     .input(&[784])
//!     .linear("fc1", 784, 128)
//!     .relu()
//!     .linear("fc2", 128, 64)
//!     .relu()
//!     .linear("fc3", 64, 10);
//! assert!(spec.check(None).is_ok());
//! let model = spec.build()?; // a Sequential with fc1.weight, fc1.bias, …
//! # Ok::<(), strata_nn::Error>(())
//! ```

use crate::check::{CheckReport, SymShape, check_spec};
use crate::module::Module;
use crate::residual::Residual;
use crate::{Error, Flatten, Linear, ReLU, Result, Sequential};
use std::fmt;
use strata_core::{DType, with_default_generator};

/// Where a layer was declared in a model file, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One layer kind with its hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// `Linear(in_features, out_features)`; `in_features` may be left to inference.
    Linear {
        /// Input size, or `None` to infer it from the previous layer (PyTorch's `LazyLinear`).
        in_features: Option<usize>,
        /// Output size.
        out_features: usize,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// `ReLU`.
    ReLU,
    /// `Flatten(start_dim, end_dim)`.
    Flatten {
        /// First dimension flattened (1 keeps the batch dimension).
        start_dim: isize,
        /// Last dimension flattened (−1 is the last).
        end_dim: isize,
    },
    /// A nested chain of named layers (a block).
    Sequential(Vec<NamedLayer>),
    /// A residual block: `body(x) + shortcut(x)`, the identity when `shortcut` is `None`.
    Residual {
        /// The main branch.
        body: Vec<NamedLayer>,
        /// A projection branch, when the body changes the shape.
        shortcut: Option<Vec<NamedLayer>>,
    },
}

/// A layer in a chain with its name (the attribute name in parameter keys, `fc1` in `fc1.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedLayer {
    /// The name: given, or the position in the chain (`"0"`, `"1"`, … as PyTorch's Sequential).
    pub name: String,
    /// What the layer is.
    pub spec: LayerSpec,
    /// Where it was declared, when it came from a file.
    pub origin: Option<Origin>,
}

impl LayerSpec {
    /// The PyTorch type name (`Linear`, `ReLU`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Linear { .. } => "Linear",
            LayerSpec::ReLU => "ReLU",
            LayerSpec::Flatten { .. } => "Flatten",
            LayerSpec::Sequential(_) => "Sequential",
            LayerSpec::Residual { .. } => "Residual",
        }
    }

    /// Trainable parameters of this layer alone (not its children) as `(name, shape)`; `None`
    /// when a size is still to be inferred.
    pub fn own_parameter_shapes(&self) -> Option<Vec<(&'static str, Vec<usize>)>> {
        match *self {
            LayerSpec::Linear { in_features, out_features, bias } => {
                let mut p = vec![("weight", vec![out_features, in_features?])];
                if bias {
                    p.push(("bias", vec![out_features]));
                }
                Some(p)
            }
            _ => Some(vec![]),
        }
    }
}

impl fmt::Display for LayerSpec {
    /// `Linear 784 → 128`, `ReLU`, `Flatten`, `Sequential (3 layers)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSpec::Linear { in_features, out_features, bias } => {
                match in_features {
                    Some(i) => write!(f, "Linear {i} → {out_features}")?,
                    None => write!(f, "Linear ? → {out_features}")?,
                }
                if !bias {
                    write!(f, ", no bias")?;
                }
                Ok(())
            }
            LayerSpec::ReLU => write!(f, "ReLU"),
            LayerSpec::Flatten { start_dim: 1, end_dim: -1 } => write!(f, "Flatten"),
            LayerSpec::Flatten { start_dim, end_dim } => write!(f, "Flatten {start_dim}..={end_dim}"),
            LayerSpec::Sequential(l) => write!(f, "Sequential ({} layers)", l.len()),
            LayerSpec::Residual { body, shortcut: None } => write!(f, "Residual ({} layers + identity)", body.len()),
            LayerSpec::Residual { body, shortcut: Some(_) } => write!(f, "Residual ({} layers + projection)", body.len()),
        }
    }
}

/// A whole model: a name, an optional per-sample input shape, and the chain of layers.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The model's name (for summaries).
    pub name: String,
    /// The shape of one sample (without the batch dimension), e.g. `[784]` or `[1, 28, 28]`.
    pub input: Option<Vec<usize>>,
    /// The layers, applied in order.
    pub layers: Vec<NamedLayer>,
}

impl ModelSpec {
    /// An empty chain named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ModelSpec { name: name.into(), input: None, layers: Vec::new() }
    }

    /// The spec of an instantiated module (a container's layers become the chain), or `None`
    /// when it or one of its parts has no spec (a custom module).
    pub fn from_module(name: impl Into<String>, module: &dyn Module) -> Option<ModelSpec> {
        let layers = match module.spec()? {
            LayerSpec::Sequential(layers) => layers,
            other => vec![NamedLayer { name: "0".into(), spec: other, origin: None }],
        };
        Some(ModelSpec { name: name.into(), input: None, layers })
    }

    /// Sets the shape of one input sample (no batch dimension).
    pub fn input(mut self, sample_shape: &[usize]) -> Self {
        self.input = Some(sample_shape.to_vec());
        self
    }

    /// Appends a layer under `name` (empty: named by its position).
    pub fn layer(mut self, name: &str, spec: LayerSpec) -> Self {
        let name = if name.is_empty() { self.layers.len().to_string() } else { name.to_string() };
        self.layers.push(NamedLayer { name, spec, origin: None });
        self
    }

    /// Appends `Linear(in_features, out_features)` with bias under `name`.
    pub fn linear(self, name: &str, in_features: usize, out_features: usize) -> Self {
        self.layer(name, LayerSpec::Linear { in_features: Some(in_features), out_features, bias: true })
    }

    /// Appends a Linear whose input size is inferred from the chain.
    pub fn lazy_linear(self, name: &str, out_features: usize) -> Self {
        self.layer(name, LayerSpec::Linear { in_features: None, out_features, bias: true })
    }

    /// Appends an unnamed ReLU (named by its position).
    pub fn relu(self) -> Self {
        self.layer("", LayerSpec::ReLU)
    }

    /// Appends an unnamed `Flatten()` (keeps the batch dimension).
    pub fn flatten(self) -> Self {
        self.layer("", LayerSpec::Flatten { start_dim: 1, end_dim: -1 })
    }

    /// Appends a residual block `body(x) + x` under `name`.
    pub fn residual(self, name: &str, body: ModelSpec) -> Self {
        self.layer(name, LayerSpec::Residual { body: body.layers, shortcut: None })
    }

    /// Appends a residual block with a projection shortcut, `body(x) + shortcut(x)`.
    pub fn residual_projection(self, name: &str, body: ModelSpec, shortcut: ModelSpec) -> Self {
        self.layer(name, LayerSpec::Residual { body: body.layers, shortcut: Some(shortcut.layers) })
    }

    /// Appends a nested block under `name`.
    pub fn block(self, name: &str, block: ModelSpec) -> Self {
        self.layer(name, LayerSpec::Sequential(block.layers))
    }

    /// Checks the whole chain for `input` (or the spec's own input shape when `None`), reporting
    /// every mismatch; see [`crate::check`].
    pub fn check(&self, input: Option<&SymShape>) -> std::result::Result<CheckReport, Box<CheckReport>> {
        let report = check_spec(self, input, None);
        if report.errors.is_empty() { Ok(report) } else { Err(Box::new(report)) }
    }

    /// The spec with every inferred size filled in (checked first).
    pub fn resolve(&self, input: Option<&SymShape>) -> std::result::Result<ModelSpec, Box<CheckReport>> {
        self.check(input).map(|r| r.resolved)
    }

    /// Instantiates the model: a [`Sequential`] (nested for blocks) with fresh parameters drawn
    /// from the default generator. Inferred sizes are resolved first, so the spec must check.
    pub fn build(&self) -> Result<Sequential> {
        let needs_inference = has_inferred(&self.layers);
        let resolved = if needs_inference {
            self.resolve(None).map_err(|r| Error::ShapeCheck(r.render_errors()))?
        } else {
            self.clone()
        };
        build_chain(&resolved.layers)
    }
}

fn has_inferred(layers: &[NamedLayer]) -> bool {
    layers.iter().any(|l| match &l.spec {
        LayerSpec::Linear { in_features, .. } => in_features.is_none(),
        LayerSpec::Sequential(inner) => has_inferred(inner),
        LayerSpec::Residual { body, shortcut } => has_inferred(body) || shortcut.as_deref().is_some_and(has_inferred),
        _ => false,
    })
}

fn build_chain(layers: &[NamedLayer]) -> Result<Sequential> {
    let mut seq = Sequential::new();
    for l in layers {
        let module: Box<dyn Module> = match &l.spec {
            LayerSpec::Linear { in_features, out_features, bias } => {
                let i = in_features.ok_or_else(|| Error::InvalidConfig {
                    what: "model",
                    message: format!(
                        "layer `{}`: in_features is not known; check the model with an input shape first",
                        l.name
                    ),
                })?;
                Box::new(with_default_generator(|g| Linear::with_options(i, *out_features, *bias, DType::F32, g))?)
            }
            LayerSpec::ReLU => Box::new(ReLU),
            LayerSpec::Flatten { start_dim, end_dim } => Box::new(Flatten::with_dims(*start_dim, *end_dim)),
            LayerSpec::Sequential(inner) => Box::new(build_chain(inner)?),
            LayerSpec::Residual { body, shortcut } => Box::new(match shortcut {
                Some(s) => Residual::with_shortcut(build_chain(body)?, build_chain(s)?),
                None => Residual::new(build_chain(body)?),
            }),
        };
        seq.push_boxed(l.name.clone(), module);
    }
    Ok(seq)
}
