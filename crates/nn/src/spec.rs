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
//!
//! This file is the data only. What a layer kind *does* — its description, shape rule,
//! parameters, model-file keys, build — is in the kind's own file behind [`crate::layer::Layer`]
//! (`LayerSpec::layer` in `registry.rs` gives it); checking is `check/`, building `build.rs`.
//! The variants of the kinds that predate the trait are kept as they were, since code builds
//! and matches them; a new kind needs no variant: it lives in [`LayerSpec::Other`].

use crate::init::LayerInit;
use strata_core::{ConvAlgorithm, DType, Device};

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
    /// `Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)`
    /// on `[N, C, L]`: a [`ConvSpec`] of height 1 ([`ConvSpec::new_1d`]: kernel `(1, k)`, stride
    /// `(1, s)`, padding `(0, p)`, dilation `(1, d)`), which is how it runs.
    Conv1d(ConvSpec),
    /// `MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode)`: core's options are the
    /// config (one definition of the fields, for the op, the module and the spec).
    MaxPool2d(strata_core::MaxPool2dOptions),
    /// `AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)`.
    AvgPool2d(strata_core::AvgPool2dOptions),
    /// `MaxPool1d(kernel_size, stride, padding, dilation, ceil_mode)` on `[N, C, L]`: the 2-d
    /// options at height 1 (kernel `(1, k)`, stride `(1, s)`, padding `(0, p)`, dilation `(1, d)`).
    MaxPool1d(strata_core::MaxPool2dOptions),
    /// `AvgPool1d(kernel_size, stride, padding, ceil_mode, count_include_pad)` on `[N, C, L]`:
    /// the 2-d options at height 1 (no `divisor_override`, as PyTorch's AvgPool1d).
    AvgPool1d(strata_core::AvgPool2dOptions),
    /// `AdaptiveAvgPool1d(output_size)` on `[N, C, L]`.
    AdaptiveAvgPool1d {
        /// The output length.
        output_size: usize,
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
    /// `GELU(approximate)`: the exact erf form (PyTorch's default) or the tanh approximation.
    GELU {
        /// `approximate='none'` (exact) or `'tanh'`.
        approximate: GeluApproximate,
    },
    /// `SiLU`: `x·σ(x)` (swish).
    SiLU,
    /// `Mish`: `x·tanh(softplus(x))`.
    Mish,
    /// `Hardswish`: `x·clamp(x + 3, 0, 6)/6`.
    Hardswish,
    /// `Hardsigmoid`: `clamp(x + 3, 0, 6)/6`.
    Hardsigmoid,
    /// `ReLU6`: `clamp(x, 0, 6)`.
    ReLU6,
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
    /// A layer kind without a variant of its own (one added through the registry).
    Other(DynLayer),
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
    /// the identity); see [`crate::branches::Branches`].
    Branches {
        /// The chains, `branches.0`, `branches.1`, … in parameter names.
        branches: Vec<Vec<NamedLayer>>,
        /// How their outputs are merged.
        merge: Merge,
    },
}

/// How the outputs of the branches become one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Element-wise sum: every branch must produce the same shape (no broadcasting).
    Add,
    /// `torch.cat` along `dim` (1: features or channels; negative counts from the end): the
    /// branches must agree in every other dimension.
    Concat {
        /// The dimension the outputs are joined along.
        dim: isize,
    },
}

impl Merge {
    /// The layer type's name: `Add` or `Concat`.
    pub fn type_name(self) -> &'static str {
        match self {
            Merge::Add => "Add",
            Merge::Concat { .. } => "Concat",
        }
    }
}

/// GELU's `approximate` argument: which formula `nn.GELU` computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeluApproximate {
    /// `approximate='none'`: `x·Φ(x) = ½·x·(1 + erf(x/√2))`, exact (the default).
    #[default]
    None,
    /// `approximate='tanh'`: `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Tanh,
}

impl GeluApproximate {
    /// PyTorch's spelling: `"none"` or `"tanh"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GeluApproximate::None => "none",
            GeluApproximate::Tanh => "tanh",
        }
    }
}

/// A layer kind's config as data, for kinds without a [`LayerSpec`] variant of their own:
/// cloned, compared and named through this trait. What the kind *does* is its
/// [`crate::layer::Layer`] impl, which the registry finds by [`SpecData::type_name`] (the spec
/// does not depend on the behaviour, so this file imports no layer code).
pub trait SpecData: std::any::Any + std::fmt::Debug + Send + Sync {
    /// PyTorch's class name, the key into the registry.
    fn type_name(&self) -> &'static str;
    /// A boxed copy.
    fn clone_data(&self) -> Box<dyn SpecData>;
    /// Whether `other` is the same kind with the same config.
    fn data_eq(&self, other: &dyn SpecData) -> bool;
    /// The config as `Any`, for the registry to recover its kind.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A boxed [`SpecData`]: the payload of [`LayerSpec::Other`].
#[derive(Debug)]
pub struct DynLayer(pub Box<dyn SpecData>);

impl Clone for DynLayer {
    fn clone(&self) -> Self {
        DynLayer(self.0.clone_data())
    }
}

impl PartialEq for DynLayer {
    fn eq(&self, other: &Self) -> bool {
        self.0.data_eq(other.0.as_ref())
    }
}

/// The hyper-parameters of a `Conv2d` (PyTorch's `nn.Conv2d` arguments and defaults); its
/// behaviour as a layer kind is in `conv.rs`.
///
/// # Shapes
/// - input: `[N, in_channels, H, W]`
/// - output: `[N, out_channels, OH, OW]`, `OH = ⌊(H + 2·padding − dilation·(kH − 1) − 1) / stride⌋ + 1`
///   (`OH = H`, `OW = W` with `padding_same`)
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
    /// Padding on each side (an int or pair in model files; `"valid"` is 0); ignored when
    /// `padding_same`.
    pub padding: (usize, usize),
    /// `padding = "same"`: pad so the output has the input's size (stride 1 only); for an even
    /// dilated kernel span the extra element goes on the right and bottom, as in PyTorch.
    pub padding_same: bool,
    /// How the padding is filled: `padding_mode` (`"zeros"`, `"reflect"`, `"replicate"`,
    /// `"circular"`).
    pub padding_mode: strata_core::PaddingMode,
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Channel groups.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl ConvSpec {
    /// `Conv1d(in_channels, out_channels, kernel_size)` with PyTorch's defaults, as a 2-D
    /// config of height 1 (set `stride.1`, `padding.1`, `dilation.1`; the first entries stay
    /// 1, 0, 1).
    pub fn new_1d(in_channels: Option<usize>, out_channels: usize, kernel_size: usize) -> Self {
        Self::new(in_channels, out_channels, (1, kernel_size))
    }

    /// `Conv2d(in_channels, out_channels, kernel_size)` with PyTorch's defaults.
    pub fn new(in_channels: Option<usize>, out_channels: usize, kernel_size: (usize, usize)) -> Self {
        ConvSpec {
            in_channels,
            out_channels,
            kernel_size,
            stride: (1, 1),
            padding: (0, 0),
            padding_same: false,
            padding_mode: strata_core::PaddingMode::Zeros,
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }
}

/// The hyper-parameters of a `BatchNorm1d` / `BatchNorm2d` (PyTorch's arguments and defaults);
/// its behaviour as a layer kind is in `batch_norm.rs`.
///
/// # Shapes
/// - input: `[N, C]` or `[N, C, L]` (1d), `[N, C, H, W]` (2d)
/// - output: the same shape
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

/// The hyper-parameters of an `RNN`, `LSTM` or `GRU` (PyTorch's arguments and defaults); its
/// behaviour as a layer kind is in `recurrent/layer.rs`.
///
/// # Shapes
/// - input: `[N, T, input_size]` (batch first) or `[T, N, input_size]`
/// - output: the same with `D·hidden_size` features (`D` = 2 when bidirectional)
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
    /// The probability, in `[0, 1)`, of zeroing each value of every layer's output but the last
    /// in training mode (no effect with one layer).
    pub dropout: f64,
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
            dropout: 0.0,
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
    /// Where it runs (`device = "gpu:0"` in a model file): its parameters live there and its
    /// input is moved there. `None` inherits the enclosing block's device, then the model's
    /// ([`ModelSpec::device`]), then wherever the built model is moved.
    pub device: Option<Device>,
    /// What its parameters start from (`init = "kaiming_normal"`, `bias_init = "zeros"` in a
    /// model file); a block's is its layers' default. Empty: the enclosing block's, then the
    /// model's (`ModelSpec::init`), then PyTorch's default for the layer.
    pub init: LayerInit,
}

/// `a` or `an` before a layer type's name as it is read aloud: an LSTM, an ELU, a ReLU.
pub fn article(type_name: &str) -> &'static str {
    const AN: [&str; 9] =
        ["LSTM", "RNN", "ELU", "Embedding", "AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "AvgPool2d", "AvgPool1d", "Add"];
    if AN.contains(&type_name) { "an" } else { "a" }
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
    /// Where the layers without a device of their own run (`device = "gpu:0"` at the top of a
    /// model file); `None`: wherever the built model is moved (`--device`).
    pub device: Option<Device>,
    /// What the parameters of the layers that do not say start from (`init` and `bias_init`
    /// at the top of a model file); empty: PyTorch's default for each layer. It applies to
    /// weight matrices and kernels, not to normalisation layers (see [`LayerInit::inherit`]).
    pub init: LayerInit,
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
            device: None,
            init: LayerInit::default(),
        }
    }

    /// Sets where the layers without a device of their own run (see [`ModelSpec::place`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
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
        self.layers.push(NamedLayer { name, spec, origin: None, device: None, init: LayerInit::default() });
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

    /// Appends `Conv1d(in_channels, out_channels, kernel_size, stride, padding)` under `name`
    /// (`in_channels` `None`: inferred).
    pub fn conv1d(
        self,
        name: &str,
        in_channels: Option<usize>,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        let mut c = ConvSpec::new_1d(in_channels, out_channels, kernel_size);
        c.stride = (1, stride);
        c.padding = (0, padding);
        self.layer(name, LayerSpec::Conv1d(c))
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
}
