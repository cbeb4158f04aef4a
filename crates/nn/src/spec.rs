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
//!
//! Branches merged by `Add` or `Concat` are written with [`ModelSpec::add_branches`] and
//! [`ModelSpec::concat_branches`], each branch a `ModelSpec` of its own (empty: the identity).

use crate::branches::{Branches, Merge};
use crate::check::{CheckReport, SymShape, check_spec};
use crate::module::Module;
use crate::residual::Residual;
use crate::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNormConfig, Conv2d, Conv2dConfig, ELU, Embedding, Error, Flatten, GELU, GRU,
    LSTM, LastStep, LayerNormConfig, LeakyReLU, Linear, LogSoftmax, MaxPool2d, Nonlinearity, RNN, ReLU,
    RecurrentOptions, Result, Sequential, Sigmoid, Softmax, Tanh,
};
use std::fmt;
use strata_core::{ConvAlgorithm, DType, with_default_generator};

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
    /// `Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)`.
    Conv2d(ConvSpec),
    /// `MaxPool2d(kernel_size, stride, padding, dilation)`.
    MaxPool2d {
        /// `(kH, kW)`.
        kernel_size: (usize, usize),
        /// Step of the window.
        stride: (usize, usize),
        /// Padding on each side.
        padding: (usize, usize),
        /// Spacing between window taps.
        dilation: (usize, usize),
    },
    /// `AvgPool2d(kernel_size, stride, padding, count_include_pad)`.
    AvgPool2d {
        /// `(kH, kW)`.
        kernel_size: (usize, usize),
        /// Step of the window.
        stride: (usize, usize),
        /// Padding on each side.
        padding: (usize, usize),
        /// Whether padded zeros count in the divisor.
        count_include_pad: bool,
    },
    /// `AdaptiveAvgPool2d(output_size)`.
    AdaptiveAvgPool2d {
        /// `(OH, OW)`.
        output_size: (usize, usize),
    },
    /// `BatchNorm1d(num_features, …)`: `[N, C]` or `[N, C, L]`.
    BatchNorm1d(BatchNormSpec),
    /// `BatchNorm2d(num_features, …)`: `[N, C, H, W]`.
    BatchNorm2d(BatchNormSpec),
    /// `Sigmoid`.
    Sigmoid,
    /// `Tanh`.
    Tanh,
    /// `GELU` (exact).
    GELU,
    /// `LeakyReLU(negative_slope)`.
    LeakyReLU {
        /// Slope for negative inputs.
        negative_slope: f64,
    },
    /// `ELU(alpha)`.
    ELU {
        /// Scale of the negative part.
        alpha: f64,
    },
    /// `Softmax(dim)`.
    Softmax {
        /// The dimension normalised over.
        dim: isize,
    },
    /// `LogSoftmax(dim)`.
    LogSoftmax {
        /// The dimension normalised over.
        dim: isize,
    },
    /// `RNN`, `LSTM` or `GRU`.
    Recurrent(RecurrentSpec),
    /// `Dropout(p)`: zeroes a fraction `p` of the values in training, the identity in evaluation.
    Dropout {
        /// The probability of zeroing each value, in `[0, 1)`.
        p: f64,
    },
    /// `LastStep(batch_first)`: a sequence's last output.
    LastStep {
        /// `[N, T, F]` (true) or `[T, N, F]` (false) input.
        batch_first: bool,
    },
    /// `LayerNorm(normalized_shape, eps, elementwise_affine)`: each sample normalised over its
    /// trailing `normalized_shape` dimensions.
    LayerNorm {
        /// The trailing dimensions normalised over, e.g. `[64]`.
        normalized_shape: Vec<usize>,
        /// Added to the variance.
        eps: f64,
        /// Whether the layer has `weight` and `bias` (each of shape `normalized_shape`).
        elementwise_affine: bool,
    },
    /// `Embedding(num_embeddings, embedding_dim, padding_idx)`: integer token ids `[N, *]` to
    /// vectors `[N, *, embedding_dim]`.
    Embedding {
        /// Rows of the table: the vocabulary size (ids must be below it).
        num_embeddings: usize,
        /// Size of each vector.
        embedding_dim: usize,
        /// A row that starts at zero and gets no gradient (non-negative here).
        padding_idx: Option<usize>,
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
    /// N ≥ 2 chains applied to the same input, merged by `Add` or `Concat` (an empty chain is
    /// the identity); see [`Branches`].
    Branches {
        /// The chains, `branches.0`, `branches.1`, … in parameter names.
        branches: Vec<Vec<NamedLayer>>,
        /// How their outputs are merged.
        merge: Merge,
    },
}

/// The hyper-parameters of a `Conv2d`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    /// Input channels, or `None` to infer them from the incoming tensor (PyTorch's `LazyConv2d`).
    pub in_channels: Option<usize>,
    /// Output channels.
    pub out_channels: usize,
    /// `(kH, kW)`.
    pub kernel_size: (usize, usize),
    /// Step of the window.
    pub stride: (usize, usize),
    /// Zero padding on each side.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Channel groups.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl ConvSpec {
    /// `Conv2d(in_channels, out_channels, kernel_size)` with PyTorch's defaults.
    pub fn new(in_channels: Option<usize>, out_channels: usize, kernel_size: (usize, usize)) -> Self {
        ConvSpec {
            in_channels,
            out_channels,
            kernel_size,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }
}

/// The hyper-parameters of a `BatchNorm1d` / `BatchNorm2d`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormSpec {
    /// Channels, or `None` to infer them (PyTorch's `LazyBatchNorm*d`).
    pub num_features: Option<usize>,
    /// Added to the variance.
    pub eps: f64,
    /// Running-statistics momentum; `None` is a cumulative average.
    pub momentum: Option<f64>,
    /// Whether the layer has `weight` and `bias`.
    pub affine: bool,
    /// Whether the layer keeps running statistics (buffers).
    pub track_running_stats: bool,
}

impl BatchNormSpec {
    /// `BatchNorm*d(num_features)` with PyTorch's defaults.
    pub fn new(num_features: Option<usize>) -> Self {
        BatchNormSpec { num_features, eps: 1e-5, momentum: Some(0.1), affine: true, track_running_stats: true }
    }
}

/// Which recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecurrentKind {
    /// `RNN` with tanh.
    RnnTanh,
    /// `RNN` with `nonlinearity='relu'`.
    RnnRelu,
    /// `LSTM`.
    Lstm,
    /// `GRU`.
    Gru,
}

impl RecurrentKind {
    /// Gates per cell: 1 (RNN), 4 (LSTM), 3 (GRU).
    pub fn gates(self) -> usize {
        match self {
            RecurrentKind::RnnTanh | RecurrentKind::RnnRelu => 1,
            RecurrentKind::Lstm => 4,
            RecurrentKind::Gru => 3,
        }
    }

    /// The PyTorch class name.
    pub fn type_name(self) -> &'static str {
        match self {
            RecurrentKind::RnnTanh | RecurrentKind::RnnRelu => "RNN",
            RecurrentKind::Lstm => "LSTM",
            RecurrentKind::Gru => "GRU",
        }
    }
}

/// The hyper-parameters of an `RNN`, `LSTM` or `GRU`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentSpec {
    /// Which layer.
    pub kind: RecurrentKind,
    /// Input features, or `None` to infer them.
    pub input_size: Option<usize>,
    /// Hidden state size H.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Whether the cells have biases.
    pub bias: bool,
    /// `[N, T, F]` (true) or `[T, N, F]` input.
    pub batch_first: bool,
    /// Two directions.
    pub bidirectional: bool,
}

impl RecurrentSpec {
    /// `kind(input_size, hidden_size)` with PyTorch's defaults.
    pub fn new(kind: RecurrentKind, input_size: Option<usize>, hidden_size: usize) -> Self {
        RecurrentSpec {
            kind,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            bidirectional: false,
        }
    }

    /// 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Output features: D·H.
    pub fn output_features(&self) -> usize {
        self.directions() * self.hidden_size
    }

    /// The input size of stacked layer `k` (`None` for layer 0 while it is to be inferred).
    pub fn layer_input(&self, k: usize) -> Option<usize> {
        if k == 0 { self.input_size } else { Some(self.output_features()) }
    }
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
            LayerSpec::Conv2d(_) => "Conv2d",
            LayerSpec::MaxPool2d { .. } => "MaxPool2d",
            LayerSpec::AvgPool2d { .. } => "AvgPool2d",
            LayerSpec::AdaptiveAvgPool2d { .. } => "AdaptiveAvgPool2d",
            LayerSpec::BatchNorm1d(_) => "BatchNorm1d",
            LayerSpec::BatchNorm2d(_) => "BatchNorm2d",
            LayerSpec::Sigmoid => "Sigmoid",
            LayerSpec::Tanh => "Tanh",
            LayerSpec::GELU => "GELU",
            LayerSpec::LeakyReLU { .. } => "LeakyReLU",
            LayerSpec::ELU { .. } => "ELU",
            LayerSpec::Softmax { .. } => "Softmax",
            LayerSpec::LogSoftmax { .. } => "LogSoftmax",
            LayerSpec::Recurrent(r) => r.kind.type_name(),
            LayerSpec::LastStep { .. } => "LastStep",
            LayerSpec::Dropout { .. } => "Dropout",
            LayerSpec::LayerNorm { .. } => "LayerNorm",
            LayerSpec::Embedding { .. } => "Embedding",
            LayerSpec::Sequential(_) => "Sequential",
            LayerSpec::Residual { .. } => "Residual",
            LayerSpec::Branches { merge, .. } => merge.type_name(),
        }
    }

    /// Trainable parameters of this layer alone (not its children) as `(name, shape)`; `None`
    /// when a size is still to be inferred.
    pub fn own_parameter_shapes(&self) -> Option<Vec<(String, Vec<usize>)>> {
        match self {
            LayerSpec::Linear { in_features, out_features, bias } => {
                let mut p = vec![("weight".to_string(), vec![*out_features, (*in_features)?])];
                if *bias {
                    p.push(("bias".to_string(), vec![*out_features]));
                }
                Some(p)
            }
            LayerSpec::Conv2d(c) => {
                let (kh, kw) = c.kernel_size;
                let mut p =
                    vec![("weight".to_string(), vec![c.out_channels, c.in_channels? / c.groups.max(1), kh, kw])];
                if c.bias {
                    p.push(("bias".to_string(), vec![c.out_channels]));
                }
                Some(p)
            }
            LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => {
                let c = b.num_features?;
                Some(if b.affine { vec![("weight".into(), vec![c]), ("bias".into(), vec![c])] } else { vec![] })
            }
            LayerSpec::Recurrent(r) => {
                let gh = r.kind.gates() * r.hidden_size;
                let mut p = vec![];
                for k in 0..r.num_layers {
                    let input = r.layer_input(k)?;
                    for dir in 0..r.directions() {
                        let sfx = format!("l{k}{}", if dir == 1 { "_reverse" } else { "" });
                        p.push((format!("weight_ih_{sfx}"), vec![gh, input]));
                        p.push((format!("weight_hh_{sfx}"), vec![gh, r.hidden_size]));
                        if r.bias {
                            p.push((format!("bias_ih_{sfx}"), vec![gh]));
                            p.push((format!("bias_hh_{sfx}"), vec![gh]));
                        }
                    }
                }
                Some(p)
            }
            LayerSpec::LayerNorm { normalized_shape, elementwise_affine: true, .. } => {
                Some(vec![("weight".into(), normalized_shape.clone()), ("bias".into(), normalized_shape.clone())])
            }
            LayerSpec::Embedding { num_embeddings, embedding_dim, .. } => {
                Some(vec![("weight".into(), vec![*num_embeddings, *embedding_dim])])
            }
            _ => Some(vec![]),
        }
    }

    /// Whether the layer holds other layers (a block), whose rows follow it in a trace.
    pub fn is_block(&self) -> bool {
        matches!(self, LayerSpec::Sequential(_) | LayerSpec::Residual { .. } | LayerSpec::Branches { .. })
    }

    /// Buffers of this layer alone as `(name, shape)` — BatchNorm's `running_mean`,
    /// `running_var` and `num_batches_tracked` (`[]`) —; `None` when a size is still to be inferred.
    pub fn own_buffer_shapes(&self) -> Option<Vec<(String, Vec<usize>)>> {
        match self {
            LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) if b.track_running_stats => {
                let c = b.num_features?;
                Some(vec![
                    ("running_mean".into(), vec![c]),
                    ("running_var".into(), vec![c]),
                    ("num_batches_tracked".into(), vec![]),
                ])
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
            LayerSpec::Conv2d(c) => {
                let (kh, kw) = c.kernel_size;
                match c.in_channels {
                    Some(i) => write!(f, "Conv2d {i} → {}, {kh}×{kw}", c.out_channels)?,
                    None => write!(f, "Conv2d ? → {}, {kh}×{kw}", c.out_channels)?,
                }
                for (name, v, default) in
                    [("stride", c.stride, 1), ("padding", c.padding, 0), ("dilation", c.dilation, 1)]
                {
                    if v != (default, default) {
                        write!(f, ", {name} {}", pair_str(v))?;
                    }
                }
                if c.groups != 1 {
                    write!(f, ", groups {}", c.groups)?;
                }
                if !c.bias {
                    write!(f, ", no bias")?;
                }
                Ok(())
            }
            LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation } => {
                write!(f, "{}", window_desc("MaxPool2d", *kernel_size, *stride, *padding))?;
                if *dilation != (1, 1) {
                    write!(f, ", dilation {}", pair_str(*dilation))?;
                }
                Ok(())
            }
            LayerSpec::AvgPool2d { kernel_size, stride, padding, count_include_pad } => {
                write!(f, "{}", window_desc("AvgPool2d", *kernel_size, *stride, *padding))?;
                if !count_include_pad {
                    write!(f, ", count_include_pad false")?;
                }
                Ok(())
            }
            LayerSpec::AdaptiveAvgPool2d { output_size: (h, w) } => write!(f, "AdaptiveAvgPool2d {h}×{w}"),
            LayerSpec::BatchNorm1d(b) => write!(f, "{}", batch_norm_desc("BatchNorm1d", b)),
            LayerSpec::BatchNorm2d(b) => write!(f, "{}", batch_norm_desc("BatchNorm2d", b)),
            LayerSpec::Sigmoid => write!(f, "Sigmoid"),
            LayerSpec::Tanh => write!(f, "Tanh"),
            LayerSpec::GELU => write!(f, "GELU"),
            LayerSpec::LeakyReLU { negative_slope } => write!(f, "LeakyReLU(negative_slope={negative_slope})"),
            LayerSpec::ELU { alpha } => write!(f, "ELU(alpha={alpha})"),
            LayerSpec::Softmax { dim } => write!(f, "Softmax(dim={dim})"),
            LayerSpec::LogSoftmax { dim } => write!(f, "LogSoftmax(dim={dim})"),
            LayerSpec::Recurrent(r) => {
                match r.input_size {
                    Some(i) => write!(f, "{}({i}, {}", r.kind.type_name(), r.hidden_size)?,
                    None => write!(f, "{}(?, {}", r.kind.type_name(), r.hidden_size)?,
                }
                if r.num_layers != 1 {
                    write!(f, ", num_layers={}", r.num_layers)?;
                }
                if r.kind == RecurrentKind::RnnRelu {
                    write!(f, ", nonlinearity='relu'")?;
                }
                if !r.bias {
                    write!(f, ", bias=False")?;
                }
                if r.batch_first {
                    write!(f, ", batch_first=True")?;
                }
                if r.bidirectional {
                    write!(f, ", bidirectional=True")?;
                }
                write!(f, ")")
            }
            LayerSpec::LastStep { batch_first: true } => write!(f, "LastStep"),
            LayerSpec::Dropout { p } => write!(f, "Dropout p={p}"),
            LayerSpec::LastStep { batch_first: false } => write!(f, "LastStep(batch_first=False)"),
            LayerSpec::LayerNorm { normalized_shape, eps, elementwise_affine } => {
                let dims: Vec<String> = normalized_shape.iter().map(usize::to_string).collect();
                write!(f, "LayerNorm [{}]", dims.join(", "))?;
                if *eps != 1e-5 {
                    write!(f, ", eps {eps}")?;
                }
                if !elementwise_affine {
                    write!(f, ", not affine")?;
                }
                Ok(())
            }
            LayerSpec::Embedding { num_embeddings, embedding_dim, padding_idx } => {
                write!(f, "Embedding({num_embeddings}, {embedding_dim}")?;
                if let Some(p) = padding_idx {
                    write!(f, ", padding_idx={p}")?;
                }
                write!(f, ")")
            }
            LayerSpec::Sequential(l) if l.is_empty() => write!(f, "identity"),
            LayerSpec::Sequential(l) => write!(f, "Sequential ({})", layers_count(l.len())),
            LayerSpec::Branches { branches, merge: Merge::Add } => write!(f, "Add ({} branches)", branches.len()),
            LayerSpec::Branches { branches, merge: Merge::Concat { dim: 1 } } => {
                write!(f, "Concat ({} branches)", branches.len())
            }
            LayerSpec::Branches { branches, merge: Merge::Concat { dim } } => {
                write!(f, "Concat ({} branches, dim {dim})", branches.len())
            }
            LayerSpec::Residual { body, shortcut: None } => {
                write!(f, "Residual ({} + identity)", layers_count(body.len()))
            }
            LayerSpec::Residual { body, shortcut: Some(_) } => {
                write!(f, "Residual ({} + projection)", layers_count(body.len()))
            }
        }
    }
}

/// `a` or `an` before a layer type's name as it is read aloud: an LSTM, an ELU, a ReLU.
pub(crate) fn article(type_name: &str) -> &'static str {
    const AN: [&str; 6] = ["LSTM", "RNN", "ELU", "Embedding", "AdaptiveAvgPool2d", "Add"];
    if AN.contains(&type_name) { "an" } else { "a" }
}

/// `1 layer`, `3 layers`.
fn layers_count(n: usize) -> String {
    if n == 1 { "1 layer".into() } else { format!("{n} layers") }
}

/// `Conv2d`-style pair: `3` when both entries agree, `3×2` otherwise.
fn pair_str((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("{a}×{b}") }
}

/// `MaxPool2d 2×2, stride 1, padding 1`, as the pooling modules describe themselves.
fn window_desc(kind: &str, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> String {
    let mut s = format!("{kind} {}×{}", kernel.0, kernel.1);
    if stride != kernel {
        s.push_str(&format!(", stride {}", pair_str(stride)));
    }
    if padding != (0, 0) {
        s.push_str(&format!(", padding {}", pair_str(padding)));
    }
    s
}

/// `BatchNorm2d 32`, as the batch-norm modules describe themselves.
fn batch_norm_desc(kind: &str, b: &BatchNormSpec) -> String {
    let mut s = match b.num_features {
        Some(c) => format!("{kind} {c}"),
        None => format!("{kind} ?"),
    };
    if b.eps != 1e-5 {
        s.push_str(&format!(", eps {}", b.eps));
    }
    match b.momentum {
        None => s.push_str(", cumulative average"),
        Some(m) if m != 0.1 => s.push_str(&format!(", momentum {m}")),
        Some(_) => {}
    }
    if !b.affine {
        s.push_str(", not affine");
    }
    if !b.track_running_stats {
        s.push_str(", no running stats");
    }
    s
}

/// A whole model: a name, an optional per-sample input shape and element type, and the chain
/// of layers.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The model's name (for summaries).
    pub name: String,
    /// The shape of one sample (without the batch dimension), e.g. `[784]` or `[1, 28, 28]`.
    pub input: Option<Vec<usize>>,
    /// The input's element type: `F32` features (the default) or `I64` token ids, which only an
    /// `Embedding` (after any `Flatten`) can take.
    pub input_dtype: DType,
    /// The element type of the parameters, buffers and float activations: `F32` (the default)
    /// or `F64` (PyTorch's `model.double()`). Float inputs must have this type.
    pub dtype: DType,
    /// The algorithm choice of every `Conv2d` ([`ConvAlgorithm::Default`]: as accurate as
    /// PyTorch; `Fast`: Winograd F(4×4) where it pays, ~10× PyTorch's f32 error).
    pub conv_algorithm: ConvAlgorithm,
    /// The layers, applied in order.
    pub layers: Vec<NamedLayer>,
}

impl ModelSpec {
    /// An empty chain named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ModelSpec {
            name: name.into(),
            input: None,
            input_dtype: DType::F32,
            dtype: DType::F32,
            conv_algorithm: ConvAlgorithm::Default,
            layers: Vec::new(),
        }
    }

    /// The spec of an instantiated module (a container's layers become the chain), or `None`
    /// when it or one of its parts has no spec (a custom module). A module does not know its
    /// input: set it with [`ModelSpec::input`] (and [`ModelSpec::input_dtype`] for token ids).
    pub fn from_module(name: impl Into<String>, module: &dyn Module) -> Option<ModelSpec> {
        let layers = match module.spec()? {
            LayerSpec::Sequential(layers) => layers,
            other => vec![NamedLayer { name: "0".into(), spec: other, origin: None }],
        };
        let dtype = module.parameters().first().map_or(DType::F32, |p| p.dtype());
        let conv_algorithm = ConvAlgorithm::Default;
        Some(ModelSpec { name: name.into(), input: None, input_dtype: DType::F32, dtype, conv_algorithm, layers })
    }

    /// Sets the shape of one input sample (no batch dimension).
    pub fn input(mut self, sample_shape: &[usize]) -> Self {
        self.input = Some(sample_shape.to_vec());
        self
    }

    /// Sets the input's element type: `DType::I64` for token ids (into an `Embedding`).
    pub fn input_dtype(mut self, dtype: DType) -> Self {
        self.input_dtype = dtype;
        self
    }

    /// Sets the parameters' (and float activations') element type: `DType::F64` builds the
    /// model in double precision, as `model.double()` in PyTorch.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Sets the algorithm choice of every `Conv2d` (see [`ConvAlgorithm`]).
    pub fn conv_algorithm(mut self, algorithm: ConvAlgorithm) -> Self {
        self.conv_algorithm = algorithm;
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

    /// Appends `Conv2d(in_channels, out_channels, kernel_size, stride, padding)` with bias under
    /// `name` (`in_channels` `None`: inferred).
    pub fn conv2d(
        self,
        name: &str,
        in_channels: Option<usize>,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        let mut c = ConvSpec::new(in_channels, out_channels, (kernel_size, kernel_size));
        c.stride = (stride, stride);
        c.padding = (padding, padding);
        self.layer(name, LayerSpec::Conv2d(c))
    }

    /// Appends `BatchNorm2d(num_features)` under `name` (`None`: inferred).
    pub fn batch_norm2d(self, name: &str, num_features: Option<usize>) -> Self {
        self.layer(name, LayerSpec::BatchNorm2d(BatchNormSpec::new(num_features)))
    }

    /// Appends a residual block `body(x) + x` under `name`.
    pub fn residual(self, name: &str, body: ModelSpec) -> Self {
        self.layer(name, LayerSpec::Residual { body: body.layers, shortcut: None })
    }

    /// Appends a residual block with a projection shortcut, `body(x) + shortcut(x)`.
    pub fn residual_projection(self, name: &str, body: ModelSpec, shortcut: ModelSpec) -> Self {
        self.layer(name, LayerSpec::Residual { body: body.layers, shortcut: Some(shortcut.layers) })
    }

    /// Appends `Embedding(num_embeddings, embedding_dim)` under `name`.
    pub fn embedding(self, name: &str, num_embeddings: usize, embedding_dim: usize) -> Self {
        self.layer(name, LayerSpec::Embedding { num_embeddings, embedding_dim, padding_idx: None })
    }

    /// Appends `LayerNorm(normalized_shape)` with PyTorch's defaults under `name`.
    pub fn layer_norm(self, name: &str, normalized_shape: &[usize]) -> Self {
        let normalized_shape = normalized_shape.to_vec();
        self.layer(name, LayerSpec::LayerNorm { normalized_shape, eps: 1e-5, elementwise_affine: true })
    }

    /// Appends branches whose outputs are summed (`Add`) under `name`; an empty `ModelSpec` is an
    /// identity branch.
    pub fn add_branches(self, name: &str, branches: Vec<ModelSpec>) -> Self {
        let branches = branches.into_iter().map(|b| b.layers).collect();
        self.layer(name, LayerSpec::Branches { branches, merge: Merge::Add })
    }

    /// Appends branches whose outputs are concatenated along `dim` (`Concat`; 1 for features or
    /// channels) under `name`.
    pub fn concat_branches(self, name: &str, branches: Vec<ModelSpec>, dim: isize) -> Self {
        let branches = branches.into_iter().map(|b| b.layers).collect();
        self.layer(name, LayerSpec::Branches { branches, merge: Merge::Concat { dim } })
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
        if !self.dtype.is_float() {
            return Err(Error::InvalidConfig {
                what: "model",
                message: format!("dtype must be f32 or f64, got {}", crate::check::dtype_name(self.dtype)),
            });
        }
        build_chain(&resolved.layers, &BuildOptions { dtype: self.dtype, conv_algorithm: self.conv_algorithm })
    }
}

fn has_inferred(layers: &[NamedLayer]) -> bool {
    layers.iter().any(|l| match &l.spec {
        LayerSpec::Linear { in_features, .. } => in_features.is_none(),
        LayerSpec::Conv2d(c) => c.in_channels.is_none(),
        LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => b.num_features.is_none(),
        LayerSpec::Recurrent(r) => r.input_size.is_none(),
        LayerSpec::Sequential(inner) => has_inferred(inner),
        LayerSpec::Residual { body, shortcut } => has_inferred(body) || shortcut.as_deref().is_some_and(has_inferred),
        LayerSpec::Branches { branches, .. } => branches.iter().any(|b| has_inferred(b)),
        _ => false,
    })
}

/// What a whole model's layers share when they are built.
struct BuildOptions {
    dtype: DType,
    conv_algorithm: ConvAlgorithm,
}

fn build_chain(layers: &[NamedLayer], opts: &BuildOptions) -> Result<Sequential> {
    let dtype = opts.dtype;
    let mut seq = Sequential::new();
    for l in layers {
        let unknown = |what: &str| Error::InvalidConfig {
            what: "model",
            message: format!("layer `{}`: {what} is not known; check the model with an input shape first", l.name),
        };
        let module: Box<dyn Module> = match &l.spec {
            LayerSpec::Linear { in_features, out_features, bias } => {
                let i = in_features.ok_or_else(|| unknown("in_features"))?;
                Box::new(with_default_generator(|g| Linear::with_options(i, *out_features, *bias, dtype, g))?)
            }
            LayerSpec::ReLU => Box::new(ReLU),
            LayerSpec::Flatten { start_dim, end_dim } => Box::new(Flatten::with_dims(*start_dim, *end_dim)),
            LayerSpec::Conv2d(c) => {
                let i = c.in_channels.ok_or_else(|| unknown("in_channels"))?;
                let config = Conv2dConfig::new(i, c.out_channels, c.kernel_size)
                    .stride(c.stride)
                    .padding(c.padding)
                    .dilation(c.dilation)
                    .groups(c.groups)
                    .bias(c.bias)
                    .dtype(dtype)
                    .algorithm(opts.conv_algorithm);
                Box::new(Conv2d::from_config(&config)?)
            }
            LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation } => {
                Box::new(MaxPool2d::new(*kernel_size).stride(*stride).padding(*padding).dilation(*dilation))
            }
            LayerSpec::AvgPool2d { kernel_size, stride, padding, count_include_pad } => Box::new(
                AvgPool2d::new(*kernel_size).stride(*stride).padding(*padding).count_include_pad(*count_include_pad),
            ),
            LayerSpec::AdaptiveAvgPool2d { output_size } => Box::new(AdaptiveAvgPool2d::new(*output_size)),
            LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => {
                let c = b.num_features.ok_or_else(|| unknown("num_features"))?;
                let config = BatchNormConfig::new(c)
                    .eps(b.eps)
                    .momentum(b.momentum)
                    .affine(b.affine)
                    .track_running_stats(b.track_running_stats)
                    .dtype(dtype);
                if matches!(l.spec, LayerSpec::BatchNorm1d(_)) {
                    Box::new(config.init_1d()?)
                } else {
                    Box::new(config.init_2d()?)
                }
            }
            LayerSpec::Sigmoid => Box::new(Sigmoid),
            LayerSpec::Tanh => Box::new(Tanh),
            LayerSpec::GELU => Box::new(GELU),
            LayerSpec::LeakyReLU { negative_slope } => Box::new(LeakyReLU::with_slope(*negative_slope)),
            LayerSpec::ELU { alpha } => Box::new(ELU::with_alpha(*alpha)),
            LayerSpec::Softmax { dim } => Box::new(Softmax::new(*dim)),
            LayerSpec::LogSoftmax { dim } => Box::new(LogSoftmax::new(*dim)),
            LayerSpec::Recurrent(r) => {
                let i = r.input_size.ok_or_else(|| unknown("input_size"))?;
                let opts = RecurrentOptions::new()
                    .num_layers(r.num_layers)
                    .bias(r.bias)
                    .batch_first(r.batch_first)
                    .bidirectional(r.bidirectional)
                    .dtype(dtype);
                let h = r.hidden_size;
                with_default_generator(|g| -> Result<Box<dyn Module>> {
                    Ok(match r.kind {
                        RecurrentKind::RnnTanh => Box::new(RNN::with_options(i, h, Nonlinearity::Tanh, opts, g)?),
                        RecurrentKind::RnnRelu => Box::new(RNN::with_options(i, h, Nonlinearity::Relu, opts, g)?),
                        RecurrentKind::Lstm => Box::new(LSTM::with_options(i, h, opts, g)?),
                        RecurrentKind::Gru => Box::new(GRU::with_options(i, h, opts, g)?),
                    })
                })?
            }
            LayerSpec::LastStep { batch_first } => Box::new(LastStep::with_batch_first(*batch_first)),
            LayerSpec::Dropout { p } => Box::new(crate::Dropout::new(*p)?),
            LayerSpec::Sequential(inner) => Box::new(build_chain(inner, opts)?),
            LayerSpec::Residual { body, shortcut } => Box::new(match shortcut {
                Some(s) => Residual::with_shortcut(build_chain(body, opts)?, build_chain(s, opts)?),
                None => Residual::new(build_chain(body, opts)?),
            }),
            LayerSpec::Branches { branches, merge } => {
                let chains = branches.iter().map(|b| build_chain(b, opts)).collect::<Result<Vec<_>>>()?;
                Box::new(Branches::new(chains, *merge)?)
            }
            LayerSpec::LayerNorm { normalized_shape, eps, elementwise_affine } => Box::new(
                LayerNormConfig::new(normalized_shape)
                    .eps(*eps)
                    .elementwise_affine(*elementwise_affine)
                    .dtype(dtype)
                    .init()?,
            ),
            LayerSpec::Embedding { num_embeddings, embedding_dim, padding_idx } => {
                let e = with_default_generator(|g| Embedding::with_options(*num_embeddings, *embedding_dim, dtype, g))?;
                Box::new(match padding_idx {
                    Some(p) => e.padding_idx(*p as i64)?,
                    None => e,
                })
            }
        };
        seq.push_boxed(l.name.clone(), module);
    }
    Ok(seq)
}
