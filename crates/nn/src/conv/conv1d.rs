//! `Conv1d`: PyTorch's `nn.Conv1d` on `[N, C, L]` — the module, its config, and the layer kind
//! of model specs (model-file keys, shape rule, parameters, description, build). It runs as the
//! 2-D convolution at height 1 (the input seen as `[N, C, 1, L]`, the weight `[O, C/g, k]` as
//! `[O, C/g, 1, k]`): the same kernels, padding modes, devices and gradients as `Conv2d`, and
//! the same shape rule (`layer.rs`, with its messages in 1-d terms).

use super::layer::{CONV_KEYS, Dims};
use super::{Conv2dConfig, conv_forward};
use crate::check::context::CheckContext;
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, saturating_product};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::{LayerFields, MAX_SIZE};
use crate::module::Module;
use crate::spec::{ConvSpec, LayerSpec};
use crate::{Error, Result};
use strata_core::{ConvAlgorithm, DType, Generator, PaddingMode, Tensor, with_default_generator};
use toml::de::DeValue;

/// The hyper-parameters of a [`Conv1d`], with PyTorch's defaults: stride 1, padding 0
/// (zeros), dilation 1, groups 1, with bias, f32.
///
/// ```
/// use strata_nn::{Conv1dConfig, Module};
/// let conv = Conv1dConfig::new(4, 6, 3).stride(2).padding(1).groups(2)
///     .init(&mut strata_core::Generator::new(0))?;
/// assert_eq!(conv.weight.dims(), &[6, 2, 3]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conv1dConfig {
    /// Channels of the input (dimension 1).
    pub in_channels: usize,
    /// Channels of the output.
    pub out_channels: usize,
    /// Width of the kernel.
    pub kernel_size: usize,
    /// Step of the window.
    pub stride: usize,
    /// Padding added on each side; ignored when `padding_same`.
    pub padding: usize,
    /// `padding = "same"`: the output has the input's length (stride 1 only); for an even
    /// dilated span the extra element goes on the right, as in PyTorch.
    pub padding_same: bool,
    /// How the padding is filled (PyTorch's `padding_mode`).
    pub padding_mode: PaddingMode,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Independent channel groups; `in_channels` and `out_channels` must be divisible by it.
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
    /// Element type of the parameters.
    pub dtype: DType,
    /// Which algorithms the convolution may use (see [`ConvAlgorithm`]).
    pub algorithm: ConvAlgorithm,
}

impl Conv1dConfig {
    /// `nn.Conv1d(in_channels, out_channels, kernel_size)` with PyTorch's defaults.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv1dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            padding_same: false,
            padding_mode: PaddingMode::Zeros,
            dilation: 1,
            groups: 1,
            bias: true,
            dtype: DType::F32,
            algorithm: ConvAlgorithm::Default,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding on each side (explicit; `0` is `"valid"`).
    pub fn padding(mut self, padding: usize) -> Self {
        (self.padding, self.padding_same) = (padding, false);
        self
    }
    /// `padding = "same"`: the output as long as the input (stride 1 only).
    pub fn padding_same(mut self) -> Self {
        (self.padding, self.padding_same) = (0, true);
        self
    }
    /// Sets how the padding is filled (`padding_mode`).
    pub fn padding_mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// With (`true`, the default) or without a bias.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Sets the parameters' element type (f32 or f64).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Sets the algorithm choice.
    pub fn algorithm(mut self, algorithm: ConvAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The same convolution at height 1, as it runs.
    fn as_2d(&self) -> Conv2dConfig {
        Conv2dConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel_size: (1, self.kernel_size),
            stride: (1, self.stride),
            padding: (0, self.padding),
            padding_same: self.padding_same,
            padding_mode: self.padding_mode,
            dilation: (1, self.dilation),
            groups: self.groups,
            bias: self.bias,
            dtype: self.dtype,
            algorithm: self.algorithm,
            padding_invalid: None,
        }
    }

    /// Checks the hyper-parameters, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        const OWNER: &str = "Conv1d";
        let c = self;
        for (key, v) in [
            ("in_channels", c.in_channels),
            ("out_channels", c.out_channels),
            ("kernel_size", c.kernel_size),
            ("stride", c.stride),
            ("dilation", c.dilation),
            ("groups", c.groups),
        ] {
            if v == 0 {
                return Err(Error::option(OWNER, key, 0, "at least 1"));
            }
        }
        if c.padding_same && c.stride != 1 {
            return Err(Error::option(
                OWNER,
                "padding",
                format!("\"same\" with stride {}", c.stride),
                "explicit for a strided convolution (\"same\" needs stride 1, as in PyTorch)",
            ));
        }
        for (key, v) in [("in_channels", c.in_channels), ("out_channels", c.out_channels)] {
            if !v.is_multiple_of(c.groups) {
                return Err(Error::option(OWNER, key, v, format!("divisible by groups ({})", c.groups)));
            }
        }
        if !c.dtype.is_float() {
            return Err(Error::option(OWNER, "dtype", format!("{:?}", c.dtype), "f32 or f64"));
        }
        Ok(())
    }

    /// Builds the layer, drawing the initial weights from `rng` as PyTorch does: uniform in
    /// ±1/√fan_in for the weight and the bias, `fan_in = in_channels/groups·kernel_size` —
    /// the height-1 `Conv2d`'s draws, its weight `[O, C/g, 1, k]` kept as `[O, C/g, k]`.
    pub fn init(&self, rng: &mut Generator) -> Result<Conv1d> {
        self.validate()?;
        let conv = self.as_2d().init(rng)?;
        let shape = [self.out_channels, self.in_channels / self.groups, self.kernel_size];
        let weight = conv.weight.detach().reshape(&shape)?.requires_grad_()?;
        Ok(Conv1d { weight, bias: conv.bias, config: self.clone() })
    }
}

/// A 1-D convolution layer, PyTorch's `nn.Conv1d`: each output channel is a cross-correlation
/// of its group's padded input channels with a kernel of `kernel_size` taps, plus a bias.
/// Parameters are `weight` (`[out_channels, in_channels/groups, kernel_size]`, PyTorch's
/// layout) and `bias` (`[out_channels]`), initialised as PyTorch's. It runs as the 2-D
/// convolution at height 1: the same kernels, padding modes and devices as [`super::Conv2d`].
///
/// # Shapes
/// - input: `[N, in_channels, L]` (or `[in_channels, L]` unbatched)
/// - output: `[N, out_channels, OL]` with
///   `OL = ⌊(L + 2·padding − dilation·(kernel_size − 1) − 1) / stride⌋ + 1`; `OL = L` with
///   `padding = "same"`
///
/// ```
/// use strata_nn::{Conv1d, Module};
/// use strata_core::{DType, Tensor};
/// let conv = Conv1d::new(3, 8, 5)?;
/// let y = conv.forward(&Tensor::zeros(&[4, 3, 100], DType::F32))?;
/// assert_eq!(y.dims(), &[4, 8, 96]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// `[out_channels, in_channels / groups, kernel_size]`.
    pub weight: Tensor,
    /// `[out_channels]`, or none when built without bias.
    pub bias: Option<Tensor>,
    config: Conv1dConfig,
}

impl Conv1d {
    /// `nn.Conv1d(in_channels, out_channels, kernel_size)`: stride 1, no padding, f32, with
    /// bias, drawing from the default generator.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Result<Conv1d> {
        Conv1d::from_config(&Conv1dConfig::new(in_channels, out_channels, kernel_size))
    }

    /// A layer from a config, drawing from the default generator.
    pub fn from_config(config: &Conv1dConfig) -> Result<Conv1d> {
        with_default_generator(|rng| config.init(rng))
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Conv1dConfig {
        &self.config
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !matches!(x.ndim(), 2 | 3) {
            return Err(strata_core::Error::ShapeMismatch {
                op: "Conv1d",
                what: "input",
                got: x.shape().clone(),
                expected: format!("[N, {c}, L] or [{c}, L]", c = self.config.in_channels),
            }
            .into());
        }
        // x: [N, C, L] → [N, C, 1, L]; weight: [O, C/g, k] → [O, C/g, 1, k] (views: the
        // gradients flow back through them).
        let w = self.weight.unsqueeze(2)?;
        let y = conv_forward(&self.config.as_2d(), &x.unsqueeze(-2)?, &w, self.bias.as_ref())?;
        Ok(y.squeeze(-2)?)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            p.push(("bias".to_string(), b.clone()));
        }
        p
    }
    fn describe(&self) -> String {
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }
    fn spec(&self) -> Option<LayerSpec> {
        let c = self.config.as_2d();
        Some(LayerSpec::Conv1d(ConvSpec {
            in_channels: Some(c.in_channels),
            out_channels: c.out_channels,
            kernel_size: c.kernel_size,
            stride: c.stride,
            padding: c.padding,
            padding_same: c.padding_same,
            padding_mode: c.padding_mode,
            dilation: c.dilation,
            groups: c.groups,
            bias: c.bias,
        }))
    }
}

/// `type = "Conv1d"`: `in_channels` (inferred when left out), `out_channels`, `kernel_size`,
/// `stride`, `padding` (an int, `"same"` or `"valid"`), `padding_mode`, `dilation`, `groups`,
/// `bias` — PyTorch's `nn.Conv1d` arguments, sizes as integers.
pub static CONV1D_KIND: LayerKind =
    LayerKind { type_name: "Conv1d", keys: CONV_KEYS, layer_of: None, parse: Some(parse_conv1d) };

/// A size key of a 1-d layer (`Conv1d`, the 1-d pools): an integer of at least `min`
/// (`default` when absent); a list (a 2-d layer's `[h, w]`) is an error saying so.
pub(crate) fn size_1d(f: &mut LayerFields<'_, '_>, key: &str, default: usize, min: i64) -> usize {
    let Some(v) = f.get(key) else { return default };
    if let DeValue::Array(_) = v.get_ref() {
        let (span, ty) = (v.span(), f.ty);
        let help = format!("PyTorch's {ty} takes one size, such as {key} = 3");
        f.error(span, format!("`{key}` of a {ty} is one integer, not a list"), Some(help));
        return default;
    }
    let span = v.span();
    match f.int(key) {
        Some(n) if (min..=MAX_SIZE).contains(&n) => n as usize,
        Some(n) => {
            f.error(span, format!("`{key}` must be at least {min} (and at most {MAX_SIZE}), got {n}"), None);
            default
        }
        None => default,
    }
}

fn parse_conv1d(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let in_channels = f.optional_size("in_channels")?;
    let out_channels = f.required("out_channels");
    let kernel_size = match f.get("kernel_size") {
        Some(_) => Some(size_1d(f, "kernel_size", 1, 1)),
        None if f.meant("kernel_size") => None,
        None => {
            f.missing("kernel_size", "add kernel_size = 3");
            None
        }
    };
    let mut c = ConvSpec::new_1d(in_channels, out_channels?, kernel_size?);
    c.stride = (1, size_1d(f, "stride", 1, 1));
    c.dilation = (1, size_1d(f, "dilation", 1, 1));
    match f.get("padding").map(|v| (v.get_ref(), v.span())) {
        Some((DeValue::String(s), _)) if s.as_ref() == "same" => c.padding_same = true,
        Some((DeValue::String(s), _)) if s.as_ref() == "valid" => {}
        Some((DeValue::String(s), span)) => {
            let help = "PyTorch's Conv1d takes padding = 1, \"same\" (output as long as the input, stride 1) \
                        or \"valid\" (no padding)";
            f.error(span, format!("unknown padding \"{s}\" for Conv1d"), Some(help.into()));
        }
        _ => c.padding = (0, size_1d(f, "padding", 0, 0)),
    }
    c.padding_mode = super::layer::parse_padding_mode(f);
    c.groups = match f.get("groups") {
        Some(_) => f.positive("groups")?,
        None => 1,
    };
    c.bias = f.boolean("bias", true);
    Some(LayerSpec::Conv1d(c))
}

/// `Conv1d` in a model spec: a [`ConvSpec`] of height 1.
///
/// # Shapes
/// - input: `[N, in_channels, L]`
/// - output: `[N, out_channels, OL]` (see [`Conv1d`])
/// - parameters: `weight` `[out_channels, in_channels / groups, kernel_size]`, `bias`
///   `[out_channels]`
#[derive(Debug)]
pub(crate) struct Conv1dLayer(pub(crate) ConvSpec);

impl Layer for Conv1dLayer {
    fn type_name(&self) -> &'static str {
        "Conv1d"
    }

    fn describe(&self) -> String {
        self.0.describe_as(Dims::One)
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let out = self.0.out_channels;
        if x.rank() != 3 {
            let mut fixes = vec![];
            if x.rank() == 2 && *cx.producer == Producer::Input {
                let mut sample = vec![1];
                sample.extend(x.sample().unwrap_or_default());
                fixes.push(Fix {
                    text: format!("give the sequences a channel dimension: input {sample:?}"),
                    edits: vec![Edit::SetInput { sample }],
                });
            }
            let needs = "[N, C, L]: a batch of sequences with channels".into();
            cx.fail(ShapeErrorKind::TooFewDims { needs }, fixes);
            return SymShape(vec![Dim::Batch, Dim::Fixed(out), Dim::Fixed(1)]);
        }
        // [N, C, L] seen as [N, C, 1, L], and the output's height taken out again.
        let mut x4 = x.clone();
        x4.0.insert(2, Dim::Fixed(1));
        let mut y = self.0.check_as(Dims::One, cx, &x4, x);
        y.0.remove(2);
        y
    }

    fn produces(&self, layer: &LayerRef) -> Option<Producer> {
        // A convolution's channels: the fixes that name it are the same as a Conv2d's.
        Some(Producer::Conv2d(layer.clone()))
    }

    fn init_targets(&self) -> Option<InitTargets> {
        Some(InitTargets { weight_dims: 3, bias: self.0.bias, inherits: true })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let c = &self.0;
        let mut p =
            vec![("weight".to_string(), vec![c.out_channels, c.in_channels? / c.groups.max(1), c.kernel_size.1])];
        if c.bias {
            p.push(("bias".to_string(), vec![c.out_channels]));
        }
        Some(p)
    }

    /// One multiply-add per weight at every output position.
    fn macs(&self, output: &SymShape) -> usize {
        let c = &self.0;
        let positions: usize = output.sample().map_or(0, |s| saturating_product(&s[1.min(s.len())..]));
        c.in_channels
            .map_or(0, |i| saturating_product(&[c.out_channels, i / c.groups.max(1), c.kernel_size.1, positions]))
    }

    fn has_inferred(&self) -> bool {
        self.0.in_channels.is_none()
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let c = &self.0;
        let i = c.in_channels.ok_or_else(|| cx.unknown("in_channels"))?;
        let mut config = Conv1dConfig::new(i, c.out_channels, c.kernel_size.1)
            .stride(c.stride.1)
            .padding_mode(c.padding_mode)
            .dilation(c.dilation.1)
            .groups(c.groups)
            .bias(c.bias)
            .dtype(cx.dtype)
            .algorithm(cx.conv_algorithm);
        config = if c.padding_same { config.padding_same() } else { config.padding(c.padding.1) };
        Ok(Box::new(Conv1d::from_config(&config)?))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        let c = &self.0;
        if let Some(i) = c.in_channels {
            fields.push(format!("in_channels = {i}"));
        }
        fields.push(format!("out_channels = {}", c.out_channels));
        fields.push(format!("kernel_size = {}", c.kernel_size.1));
        fields.push(format!("stride = {}", c.stride.1));
        if c.padding_same {
            fields.push("padding = \"same\"".into());
        } else {
            fields.push(format!("padding = {}", c.padding.1));
        }
        if c.padding_mode != PaddingMode::Zeros {
            fields.push(format!("padding_mode = \"{}\"", c.padding_mode));
        }
        fields.push(format!("dilation = {}", c.dilation.1));
        fields.push(format!("groups = {}", c.groups));
        fields.push(format!("bias = {}", c.bias));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        let c = &mut self.0;
        match edit {
            Edit::SetInChannels { value, .. } => c.in_channels = Some(*value),
            Edit::SetOutChannels { value, .. } => c.out_channels = *value,
            Edit::SetGroups { groups, .. } => c.groups = *groups,
            Edit::SetWindow { kernel_size, padding, .. } => {
                (c.kernel_size, c.padding, c.padding_same) = ((1, kernel_size.1), (0, padding.1), false)
            }
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Conv1d(self.0.clone())
    }
}
