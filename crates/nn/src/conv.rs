//! `Conv2d`: the 2-D convolution layer, PyTorch's `nn.Conv2d` (padding as an int, a pair,
//! `"same"` or `"valid"`; `padding_mode` zeros, reflect, replicate or circular), with its
//! config, and [`IntoPair`], the int-or-tuple size argument shared with the pooling layers.

use crate::check::context::{CheckContext, Window, window};
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed, pair_arg, saturating_product};
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::{LayerFields, pair_toml};
use crate::module::Module;
use crate::spec::{ConvSpec, LayerSpec};
use crate::{Error, Result, init};
use strata_core::ops::conv::window_output_size;
use strata_core::{
    ConvAlgorithm, ConvOptions, DType, Generator, PaddingMode, Tensor, conv2d_with, pad2d, with_default_generator,
};
use toml::de::DeValue;

/// A 2-D size given as one number for both dimensions or as a `(height, width)` pair, like
/// PyTorch's int-or-tuple arguments: `3` means `(3, 3)`.
pub trait IntoPair {
    /// The `(height, width)` pair.
    fn into_pair(self) -> (usize, usize);
}

impl IntoPair for usize {
    fn into_pair(self) -> (usize, usize) {
        (self, self)
    }
}

impl IntoPair for (usize, usize) {
    fn into_pair(self) -> (usize, usize) {
        self
    }
}

impl IntoPair for [usize; 2] {
    fn into_pair(self) -> (usize, usize) {
        (self[0], self[1])
    }
}

/// `Conv2d`'s `padding` argument: PyTorch's int or `(height, width)` pair, or one of the strings
/// `"same"` and `"valid"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// The same padding on both sides of each dimension, `(height, width)`.
    Explicit(usize, usize),
    /// `"same"`: the output has the input's size (stride 1 only). The dilated kernel span minus
    /// one, `dilation·(k − 1)`, is split `⌊total/2⌋` before (top, left) and the rest after
    /// (bottom, right), as PyTorch does for even kernels.
    Same,
    /// `"valid"`: no padding, the same as 0.
    Valid,
}

/// What [`Conv2dConfig::padding`] accepts: an int, an `(h, w)` pair or array, a [`Padding`], or
/// the strings `"same"` and `"valid"`.
pub trait IntoPadding {
    /// The padding.
    fn into_padding(self) -> Padding;
}

impl<P: IntoPair> IntoPadding for P {
    fn into_padding(self) -> Padding {
        let (h, w) = self.into_pair();
        Padding::Explicit(h, w)
    }
}

impl IntoPadding for Padding {
    fn into_padding(self) -> Padding {
        self
    }
}

impl IntoPadding for &str {
    /// # Panics
    /// On a string other than `"same"` or `"valid"` (PyTorch raises a `ValueError` there too);
    /// model files report it as an error instead.
    fn into_padding(self) -> Padding {
        match self {
            "same" => Padding::Same,
            "valid" => Padding::Valid,
            other => panic!("Conv2d padding must be an int, a pair, \"same\" or \"valid\", got {other:?}"),
        }
    }
}

/// `"same"` padding along one axis, `(before, after)`: `dilation·(kernel − 1)` split with the
/// odd element after, as `torch.nn.Conv2d(padding="same")` computes it.
pub fn same_padding(kernel: usize, dilation: usize) -> (usize, usize) {
    let total = dilation * kernel.saturating_sub(1);
    (total / 2, total - total / 2)
}

/// `[left, right, top, bottom]` (`F.pad`'s order) of a convolution's padding: the explicit pair
/// on both sides, or the `"same"` split.
fn pads_of(same: bool, padding: (usize, usize), kernel: (usize, usize), dilation: (usize, usize)) -> [usize; 4] {
    if same {
        let ((top, bottom), (left, right)) = (same_padding(kernel.0, dilation.0), same_padding(kernel.1, dilation.1));
        [left, right, top, bottom]
    } else {
        [padding.1, padding.1, padding.0, padding.0]
    }
}

/// Formats a pair as `3` when both entries agree, `3×2` otherwise.
pub(crate) fn pair_str((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("{a}×{b}") }
}

/// The hyper-parameters of a [`Conv2d`], with PyTorch's defaults: stride 1, padding 0 (zeros),
/// dilation 1, groups 1, with bias, f32.
///
/// ```
/// use strata_nn::{Conv2dConfig, Module};
/// let conv = Conv2dConfig::new(4, 6, 3).stride(2).padding(1).dilation(2).groups(2)
///     .init(&mut strata_core::Generator::new(0))?;
/// assert_eq!(conv.weight.dims(), &[6, 2, 3, 3]);
/// // nn.Conv2d(4, 6, 4, padding="same", padding_mode="reflect")
/// let same = Conv2dConfig::new(4, 6, 4).padding("same").padding_mode(strata_core::PaddingMode::Reflect);
/// assert_eq!(same.pads(), [1, 2, 1, 2]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dConfig {
    /// Channels of the input (dimension 1).
    pub in_channels: usize,
    /// Channels of the output.
    pub out_channels: usize,
    /// `(kH, kW)`.
    pub kernel_size: (usize, usize),
    /// Step of the window, `(height, width)`.
    pub stride: (usize, usize),
    /// Padding added on each side, `(height, width)`; ignored when `padding_same`.
    pub padding: (usize, usize),
    /// `padding = "same"`: the output has the input's size (see [`Padding::Same`]).
    pub padding_same: bool,
    /// How the padding is filled (PyTorch's `padding_mode`).
    pub padding_mode: PaddingMode,
    /// Spacing between kernel taps, `(height, width)`.
    pub dilation: (usize, usize),
    /// Independent channel groups; `in_channels` and `out_channels` must be divisible by it.
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
    /// Element type of the parameters.
    pub dtype: DType,
    /// Which algorithms the convolution may use: the default (as accurate as PyTorch) or the
    /// fast one (Winograd F(4×4) on large planes, ~10× PyTorch's f32 error); see
    /// [`ConvAlgorithm`].
    pub algorithm: ConvAlgorithm,
}

impl Conv2dConfig {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)` with PyTorch's defaults.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl IntoPair) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into_pair(),
            stride: (1, 1),
            padding: (0, 0),
            padding_same: false,
            padding_mode: PaddingMode::Zeros,
            dilation: (1, 1),
            groups: 1,
            bias: true,
            dtype: DType::F32,
            algorithm: ConvAlgorithm::Default,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.stride = stride.into_pair();
        self
    }
    /// Sets the padding: an int or `(h, w)` pair on each side, or `"same"` / `"valid"`
    /// ([`Padding`]).
    ///
    /// # Panics
    /// On a string other than `"same"` or `"valid"`.
    pub fn padding(mut self, padding: impl IntoPadding) -> Self {
        (self.padding, self.padding_same) = match padding.into_padding() {
            Padding::Explicit(h, w) => ((h, w), false),
            Padding::Same => ((0, 0), true),
            Padding::Valid => ((0, 0), false),
        };
        self
    }
    /// Sets how the padding is filled (`padding_mode`).
    pub fn padding_mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }
    /// The padding as `[left, right, top, bottom]` (`F.pad`'s order): the explicit padding on
    /// both sides, or `"same"`'s split (the extra element of an even span on the right/bottom).
    pub fn pads(&self) -> [usize; 4] {
        pads_of(self.padding_same, self.padding, self.kernel_size, self.dilation)
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.dilation = dilation.into_pair();
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
    /// Sets the algorithm choice ([`ConvAlgorithm::Fast`] trades f32 accuracy for speed).
    pub fn algorithm(mut self, algorithm: ConvAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// `fan_in = in_channels / groups · kH · kW`: what the default initialisation scales by.
    pub fn fan_in(&self) -> usize {
        self.in_channels / self.groups.max(1) * self.kernel_size.0 * self.kernel_size.1
    }

    /// Checks the hyper-parameters, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidConfig { what: "Conv2d", message });
        let c = self;
        if c.in_channels == 0 || c.out_channels == 0 {
            return bad(format!(
                "in_channels and out_channels must be at least 1, got Conv2d({}, {})",
                c.in_channels, c.out_channels
            ));
        }
        for (name, (a, b)) in [("kernel_size", c.kernel_size), ("stride", c.stride), ("dilation", c.dilation)] {
            if a == 0 || b == 0 {
                return bad(format!("{name} must be at least 1 in each dimension, got ({a}, {b})"));
            }
        }
        if c.groups == 0 {
            return bad("groups must be at least 1, got 0".into());
        }
        if c.padding_same && c.stride != (1, 1) {
            return bad(format!(
                "padding=\"same\" is not supported for strided convolutions (stride ({}, {})), as in PyTorch; \
                 use stride 1, or an explicit padding",
                c.stride.0, c.stride.1
            ));
        }
        for (name, v) in [("in_channels", c.in_channels), ("out_channels", c.out_channels)] {
            if !v.is_multiple_of(c.groups) {
                return bad(format!("{name} ({v}) must be divisible by groups ({})", c.groups));
            }
        }
        if !c.dtype.is_float() {
            return bad(format!("parameters must be f32 or f64, got {:?}", c.dtype));
        }
        Ok(())
    }

    /// Builds the layer, drawing the initial weights from `rng` as PyTorch does:
    /// `kaiming_uniform_(a = √5)`, which is uniform in ±1/√fan_in, and the bias uniform in
    /// ±1/√fan_in, with `fan_in = in_channels/groups·kH·kW`.
    pub fn init(&self, rng: &mut Generator) -> Result<Conv2d> {
        self.validate()?;
        let (kh, kw) = self.kernel_size;
        let shape = [self.out_channels, self.in_channels / self.groups, kh, kw];
        let bound = 1.0 / (self.fan_in() as f64).sqrt();
        let weight = init::uniform(&shape, bound, self.dtype, rng)?.requires_grad_()?;
        let bias = if self.bias {
            Some(init::uniform(&[self.out_channels], bound, self.dtype, rng)?.requires_grad_()?)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, config: self.clone() })
    }
}

/// A 2-D convolution layer, PyTorch's `nn.Conv2d`: each output channel is a cross-correlation
/// of its group's padded input channels with a `kH×kW` kernel, plus a bias. Zero padding that
/// is the same on both sides is the convolution's own; any other (reflect, replicate,
/// circular, or the uneven `"same"` split of an even kernel) is [`pad2d`] first, then a
/// convolution with padding 0, as PyTorch's module does.
///
/// Parameters are `weight` (`[out_channels, in_channels/groups, kH, kW]`, PyTorch's layout) and
/// `bias` (`[out_channels]`), initialised uniform in ±1/√fan_in with
/// `fan_in = in_channels/groups·kH·kW` (PyTorch's `kaiming_uniform_(a=√5)` and bias rule).
///
/// # Shapes
/// - input: `[N, in_channels, H, W]` (or `[in_channels, H, W]` unbatched)
/// - output: `[N, out_channels, OH, OW]` with
///   `OH = ⌊(H + 2·padding.0 − dilation.0·(kH − 1) − 1) / stride.0⌋ + 1` and `OW` likewise;
///   `OH = H`, `OW = W` with `padding = "same"`
/// - reflect padding must be smaller than `H` and `W`, circular at most `H` and `W`
///
/// ```
/// use strata_nn::{Conv2d, Module};
/// use strata_core::{DType, Tensor};
/// let conv = Conv2d::new(1, 32, 3)?;
/// let y = conv.forward(&Tensor::zeros(&[64, 1, 28, 28], DType::F32))?;
/// assert_eq!(y.dims(), &[64, 32, 26, 26]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, kH, kW]`.
    pub weight: Tensor,
    /// `[out_channels]`, or none when built without bias.
    pub bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)`: stride 1, no padding, f32, with bias,
    /// drawing from the default generator (seed it with [`strata_core::manual_seed`]).
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl IntoPair) -> Result<Conv2d> {
        Conv2d::from_config(&Conv2dConfig::new(in_channels, out_channels, kernel_size))
    }

    /// A layer from a config, drawing from the default generator.
    pub fn from_config(config: &Conv2dConfig) -> Result<Conv2d> {
        with_default_generator(|rng| config.init(rng))
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let pads @ [left, right, top, bottom] = c.pads();
        let mut opts = ConvOptions {
            stride: c.stride,
            padding: (top, left),
            dilation: c.dilation,
            groups: c.groups,
            algorithm: c.algorithm,
        };
        // Symmetric zeros stay inside the convolution (its fast paths skip the zeros); anything
        // else is padded first, exactly as F.pad then F.conv2d(padding=0) in PyTorch's module.
        if c.padding_mode == PaddingMode::Zeros && left == right && top == bottom {
            return Ok(conv2d_with(x, &self.weight, self.bias.as_ref(), &opts)?);
        }
        opts.padding = (0, 0);
        let padded = pad2d(x, pads, c.padding_mode)?;
        Ok(conv2d_with(&padded, &self.weight, self.bias.as_ref(), &opts)?)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            p.push(("bias".to_string(), b.clone()));
        }
        p
    }
    fn describe(&self) -> String {
        // One description per kind: the layer kind's (what traces and summaries show).
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        let c = &self.config;
        Some(crate::spec::LayerSpec::Conv2d(crate::spec::ConvSpec {
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

/// `type = "Conv2d"`: `in_channels` (inferred when left out), `out_channels`, `kernel_size`,
/// `stride`, `padding`, `dilation` (each an int or an `[h, w]` pair; `padding` also `"same"` or
/// `"valid"`), `padding_mode` (`"zeros"`, `"reflect"`, `"replicate"`, `"circular"`), `groups`,
/// `bias`.
pub static CONV2D_KIND: LayerKind = LayerKind {
    type_name: "Conv2d",
    keys: &[
        "name",
        "type",
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "padding_mode",
        "dilation",
        "groups",
        "bias",
    ],
    layer_of: None,
    parse: Some(parse_conv2d),
};

fn parse_conv2d(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let in_channels = f.optional_size("in_channels")?;
    let out_channels = f.required("out_channels");
    let kernel_size = match f.get("kernel_size") {
        Some(_) => Some(f.pair("kernel_size", (1, 1), 1)),
        None if f.meant("kernel_size") => None,
        None => {
            f.missing("kernel_size", "add kernel_size = 3 (or [3, 3])");
            None
        }
    };
    let mut c = ConvSpec::new(in_channels, out_channels?, kernel_size?);
    c.stride = f.pair("stride", (1, 1), 1);
    (c.padding, c.padding_same) = parse_padding(f);
    c.padding_mode = parse_padding_mode(f);
    c.dilation = f.pair("dilation", (1, 1), 1);
    c.groups = match f.get("groups") {
        Some(_) => f.positive("groups")?,
        None => 1,
    };
    c.bias = f.boolean("bias", true);
    Some(LayerSpec::Conv2d(c))
}

/// `padding`: an int, an `[h, w]` pair, `"same"` or `"valid"`; `(padding, same)`.
fn parse_padding(f: &mut LayerFields<'_, '_>) -> ((usize, usize), bool) {
    const HELP: &str = "PyTorch's Conv2d takes padding = 1, [1, 2], \"same\" (output as large as the input, \
                        stride 1) or \"valid\" (no padding)";
    match f.get("padding").map(|v| (v.get_ref(), v.span())) {
        Some((DeValue::String(s), _)) if s.as_ref() == "same" => ((0, 0), true),
        Some((DeValue::String(s), _)) if s.as_ref() == "valid" => ((0, 0), false),
        Some((DeValue::String(s), span)) => {
            let message = format!("unknown padding \"{s}\" for Conv2d");
            f.error(span, message, Some(HELP.into()));
            ((0, 0), false)
        }
        Some((DeValue::Integer(_) | DeValue::Array(_), _)) | None => (f.pair("padding", (0, 0), 0), false),
        Some((other, span)) => {
            let message = format!(
                "`padding` must be an integer, an [height, width] pair or a string, found {}",
                other.type_str()
            );
            f.error(span, message, Some(HELP.into()));
            ((0, 0), false)
        }
    }
}

/// `padding_mode`: one of PyTorch's four names, `"zeros"` when absent.
fn parse_padding_mode(f: &mut LayerFields<'_, '_>) -> PaddingMode {
    let names = PaddingMode::ALL.map(|m| format!("\"{m}\"")).join(", ");
    match f.get("padding_mode").map(|v| (v.get_ref(), v.span())) {
        None => PaddingMode::Zeros,
        Some((DeValue::String(s), span)) => PaddingMode::from_name(s).unwrap_or_else(|| {
            let help = match s.as_ref() {
                // F.pad's name for zeros, which nn.Conv2d does not take.
                "constant" => "Conv2d calls constant zero padding \"zeros\"".to_string(),
                _ => format!("padding_mode is one of {names}"),
            };
            f.error(span, format!("unknown padding_mode \"{s}\" for Conv2d"), Some(help));
            PaddingMode::Zeros
        }),
        Some((other, span)) => {
            let message = format!("`padding_mode` must be a string, found {}", other.type_str());
            f.error(span, message, Some(format!("padding_mode is one of {names}")));
            PaddingMode::Zeros
        }
    }
}

/// The divisor of both channel counts closest to `groups` (the smaller on a tie).
fn nearest_groups(in_channels: usize, out_channels: usize, groups: usize) -> usize {
    let (mut a, mut b) = (in_channels.max(1), out_channels.max(1));
    while b != 0 {
        (a, b) = (b, a % b);
    }
    (1..=a).filter(|d| a.is_multiple_of(*d)).min_by_key(|d| d.abs_diff(groups)).unwrap_or(1)
}

impl ConvSpec {
    /// The padding as `[left, right, top, bottom]` (see [`Conv2dConfig::pads`]).
    pub fn pads(&self) -> [usize; 4] {
        pads_of(self.padding_same, self.padding, self.kernel_size, self.dilation)
    }

    /// This layer with other keys, as a `Replace` fix's edit.
    fn replaced(&self, path: &str, change: impl FnOnce(&mut ConvSpec)) -> Edit {
        let mut spec = self.clone();
        change(&mut spec);
        Edit::Replace { path: path.into(), spec: LayerSpec::Conv2d(spec) }
    }

    /// Why `padding = "same"` with a stride is refused.
    fn strided_same_reason(&self) -> String {
        format!(
            "padding = \"same\" needs stride 1 (PyTorch refuses strided \"same\" convolutions), but stride is {}",
            pair_arg(self.stride)
        )
    }

    /// Fixes for `"same"` with a stride: stride 1, or the explicit padding `"same"` would have
    /// put before, keeping the stride.
    fn strided_same_fixes(&self, path: &str, (h, w): (usize, usize)) -> Vec<Fix> {
        let (k, d, s) = (self.kernel_size, self.dilation, self.stride);
        let p = (same_padding(k.0, d.0).0, same_padding(k.1, d.1).0);
        let size = |n, k, s, p, d| window_output_size(n, k, s, p, d).unwrap_or(1);
        let (oh, ow) = (size(h, k.0, s.0, p.0, d.0), size(w, k.1, s.1, p.1, d.1));
        vec![
            Fix {
                text: format!("make {path} stride 1, as padding \"same\" needs (output {h}×{w})"),
                edits: vec![self.replaced(path, |c| c.stride = (1, 1))],
            },
            Fix {
                text: format!(
                    "keep stride {} with an explicit padding = {} on {path} (output {oh}×{ow})",
                    pair_arg(s),
                    pair_arg(p)
                ),
                edits: vec![self.replaced(path, |c| (c.padding, c.padding_same) = (p, false))],
            },
        ]
    }

    /// The error when the padding is too large for its mode on an `h×w` input (reflect needs
    /// padding < size, circular padding ≤ size), with fixes: the most padding the mode allows
    /// (explicit padding only), or zero padding.
    fn padding_limit_error(&self, path: &str, (h, w): (usize, usize)) -> Option<(String, Vec<Fix>)> {
        let mode = self.padding_mode;
        let [left, right, top, bottom] = self.pads();
        let sides = [
            ("top", top, "height", h),
            ("bottom", bottom, "height", h),
            ("left", left, "width", w),
            ("right", right, "width", w),
        ];
        let (side, p, axis, size) = sides.into_iter().find(|&(_, p, _, size)| p > 0 && p > mode.max_padding(size))?;
        let reason = format!(
            "the {side} padding of {p} is too large for an input {axis} of {size} ({h}×{w}): {}, at most {}",
            mode.limit_reason(),
            mode.max_padding(size)
        );
        let mut fixes = vec![];
        if !self.padding_same {
            let fit = (self.padding.0.min(mode.max_padding(h)), self.padding.1.min(mode.max_padding(w)));
            fixes.push(Fix {
                text: format!("make {path} padding {} (the most {mode} padding fits {h}×{w})", pair_arg(fit)),
                edits: vec![self.replaced(path, |c| c.padding = fit)],
            });
        }
        fixes.push(Fix {
            text: format!("make {path} padding_mode \"zeros\" (no limit on zero padding)"),
            edits: vec![self.replaced(path, |c| c.padding_mode = PaddingMode::Zeros)],
        });
        Some((reason, fixes))
    }
}

/// `Conv2d` in a model spec: [`ConvSpec`] (PyTorch's arguments and defaults) is its config.
///
/// # Shapes
/// - input: `[N, in_channels, H, W]`
/// - output: `[N, out_channels, OH, OW]` (see [`Conv2d`])
/// - parameters: `weight` `[out_channels, in_channels / groups, kH, kW]`, `bias` `[out_channels]`
impl Layer for ConvSpec {
    fn type_name(&self) -> &'static str {
        "Conv2d"
    }

    fn describe(&self) -> String {
        let (kh, kw) = self.kernel_size;
        let mut s = match self.in_channels {
            Some(i) => format!("Conv2d {i} → {}, {kh}×{kw}", self.out_channels),
            None => format!("Conv2d ? → {}, {kh}×{kw}", self.out_channels),
        };
        if self.stride != (1, 1) {
            s.push_str(&format!(", stride {}", pair_str(self.stride)));
        }
        // `padding same`, `padding 1`, and the mode after it when not zeros: `padding 2 reflect`.
        let mode = self.padding_mode;
        match (self.padding_same, self.padding != (0, 0)) {
            (true, _) => s.push_str(", padding same"),
            (false, true) => s.push_str(&format!(", padding {}", pair_str(self.padding))),
            (false, false) if mode != PaddingMode::Zeros => s.push_str(", padding 0"),
            (false, false) => {}
        }
        if mode != PaddingMode::Zeros {
            s.push_str(&format!(" {mode}"));
        }
        if self.dilation != (1, 1) {
            s.push_str(&format!(", dilation {}", pair_str(self.dilation)));
        }
        if self.groups != 1 {
            s.push_str(&format!(", groups {}", self.groups));
        }
        if !self.bias {
            s.push_str(", no bias");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let path = cx.path;
        if x.rank() != 4 {
            let mut fixes = vec![];
            if x.rank() == 3 && *cx.producer == Producer::Input {
                let mut sample = vec![1];
                sample.extend(x.sample().unwrap_or_default());
                fixes.push(Fix {
                    text: format!("give the images a channel dimension: input {sample:?}"),
                    edits: vec![Edit::SetInput { sample }],
                });
            }
            cx.fail(
                ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images with channels".into() },
                fixes,
            );
            return SymShape(vec![Dim::Batch, Dim::Fixed(self.out_channels), Dim::Fixed(1), Dim::Fixed(1)]);
        }
        let got = fixed(x, 1);
        let (h, w) = (fixed(x, 2), fixed(x, 3));
        let (k, out) = (self.kernel_size, self.out_channels);
        match self.in_channels {
            None => self.in_channels = Some(got),
            Some(expected) if expected == got => {}
            Some(expected) => {
                let mut fixes = vec![];
                if got.is_multiple_of(self.groups.max(1)) {
                    fixes.push(Fix {
                        text: format!("make {path} Conv2d({got}, {out}, {})", pair_arg(k)),
                        edits: vec![Edit::SetInChannels { path: path.into(), value: got }],
                    });
                }
                fixes.extend(cx.channel_producer_fix(x, expected));
                let producer = cx.producer.clone();
                cx.fail(ShapeErrorKind::ChannelMismatch { expected, got, producer }, fixes);
            }
        }
        let in_c = self.in_channels.unwrap_or(got);
        let g = self.groups.max(1);
        if !cx.has_error() && (!in_c.is_multiple_of(g) || !out.is_multiple_of(g)) {
            let best = nearest_groups(in_c, out, g);
            let reason = format!("groups = {g} must divide both in_channels ({in_c}) and out_channels ({out})");
            let fix = Fix {
                text: format!(
                    "make {path} Conv2d({in_c}, {out}, {}, groups={best}) (the nearest number of groups that divides both)",
                    pair_arg(k)
                ),
                edits: vec![Edit::SetGroups { path: path.into(), groups: best }],
            };
            cx.fail(ShapeErrorKind::BadLayer { reason }, vec![fix]);
        }
        if self.padding_same && self.stride != (1, 1) && !cx.has_error() {
            cx.fail(
                ShapeErrorKind::BadLayer { reason: self.strided_same_reason() },
                self.strided_same_fixes(path, (h, w)),
            );
        }
        if !cx.has_error()
            && let Some((reason, fixes)) = self.padding_limit_error(path, (h, w))
        {
            cx.fail(ShapeErrorKind::BadLayer { reason }, fixes);
        }
        let (oh, ow) = if self.padding_same {
            // Output = input, the point of "same" (also the intended shape after a stride error).
            (h, w)
        } else {
            let win = Window { kernel: k, stride: self.stride, padding: self.padding, dilation: self.dilation };
            let (oh, ow, werr) = window(path, "Conv2d", x, (h, w), win, false);
            cx.fail_with(werr);
            (oh, ow)
        };
        SymShape(vec![x.0[0], Dim::Fixed(out), Dim::Fixed(oh), Dim::Fixed(ow)])
    }

    fn produces(&self, layer: &LayerRef) -> Option<Producer> {
        Some(Producer::Conv2d(layer.clone()))
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let (kh, kw) = self.kernel_size;
        let mut p =
            vec![("weight".to_string(), vec![self.out_channels, self.in_channels? / self.groups.max(1), kh, kw])];
        if self.bias {
            p.push(("bias".to_string(), vec![self.out_channels]));
        }
        Some(p)
    }

    /// One multiply-add per weight at every output position.
    fn macs(&self, output: &SymShape) -> usize {
        let (kh, kw) = self.kernel_size;
        let positions: usize = output.sample().map_or(0, |s| saturating_product(&s[1.min(s.len())..]));
        self.in_channels
            .map_or(0, |i| saturating_product(&[self.out_channels, i / self.groups.max(1), kh, kw, positions]))
    }

    fn has_inferred(&self) -> bool {
        self.in_channels.is_none()
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let i = self.in_channels.ok_or_else(|| cx.unknown("in_channels"))?;
        let config = Conv2dConfig::new(i, self.out_channels, self.kernel_size)
            .stride(self.stride)
            .padding(if self.padding_same { Padding::Same } else { Padding::Explicit(self.padding.0, self.padding.1) })
            .padding_mode(self.padding_mode)
            .dilation(self.dilation)
            .groups(self.groups)
            .bias(self.bias)
            .dtype(cx.dtype)
            .algorithm(cx.conv_algorithm);
        Ok(Box::new(Conv2d::from_config(&config)?))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        if let Some(i) = self.in_channels {
            fields.push(format!("in_channels = {i}"));
        }
        fields.push(format!("out_channels = {}", self.out_channels));
        fields.push(format!("kernel_size = {}", pair_toml(self.kernel_size)));
        fields.push(format!("stride = {}", pair_toml(self.stride)));
        if self.padding_same {
            fields.push("padding = \"same\"".into());
        } else {
            fields.push(format!("padding = {}", pair_toml(self.padding)));
        }
        // Only when set, so files (and snapshots) of zero-padded models keep their keys.
        if self.padding_mode != PaddingMode::Zeros {
            fields.push(format!("padding_mode = \"{}\"", self.padding_mode));
        }
        fields.push(format!("dilation = {}", pair_toml(self.dilation)));
        fields.push(format!("groups = {}", self.groups));
        fields.push(format!("bias = {}", self.bias));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetInChannels { value, .. } => self.in_channels = Some(*value),
            Edit::SetOutChannels { value, .. } => self.out_channels = *value,
            Edit::SetGroups { groups, .. } => self.groups = *groups,
            Edit::SetWindow { kernel_size, padding, .. } => {
                (self.kernel_size, self.padding, self.padding_same) = (*kernel_size, *padding, false)
            }
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Conv2d(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_default_init_names_and_description() {
        let mut rng = Generator::new(5);
        let conv = Conv2dConfig::new(4, 64, 3).groups(2).init(&mut rng).unwrap();
        // fan_in = 4/2·3·3 = 18.
        let bound = 1.0 / 18f64.sqrt();
        let w = conv.weight.to_vec_f64();
        assert!(w.iter().all(|v| v.abs() <= bound));
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!((var - bound * bound / 3.0).abs() < 0.1 * bound * bound, "{var}");
        assert!(conv.bias.as_ref().unwrap().to_vec_f64().iter().all(|v| v.abs() <= bound));
        let names: Vec<_> = conv.named_parameters().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
        assert_eq!(names, [("weight".to_string(), vec![64, 2, 3, 3]), ("bias".to_string(), vec![64])]);
        assert_eq!(conv.num_parameters(), 64 * 18 + 64);
        assert_eq!(conv.describe(), "Conv2d 4 → 64, 3×3, groups 2");
        let c = Conv2dConfig::new(1, 8, (3, 2)).stride(2).padding((1, 0)).bias(false).init(&mut rng).unwrap();
        assert_eq!(c.describe(), "Conv2d 1 → 8, 3×2, stride 2, padding 1×0, no bias");
        assert!(c.own_parameters().len() == 1);
    }

    #[test]
    fn invalid_configs_are_errors() {
        let msg = |c: Conv2dConfig| c.init(&mut Generator::new(0)).unwrap_err().to_string();
        assert_eq!(
            msg(Conv2dConfig::new(3, 4, 3).groups(2)),
            "Conv2d: in_channels (3) must be divisible by groups (2)"
        );
        assert_eq!(
            msg(Conv2dConfig::new(4, 6, 3).groups(4)),
            "Conv2d: out_channels (6) must be divisible by groups (4)"
        );
        assert_eq!(
            msg(Conv2dConfig::new(0, 6, 3)),
            "Conv2d: in_channels and out_channels must be at least 1, got Conv2d(0, 6)"
        );
        assert_eq!(
            msg(Conv2dConfig::new(1, 6, (3, 0))),
            "Conv2d: kernel_size must be at least 1 in each dimension, got (3, 0)"
        );
        assert_eq!(
            msg(Conv2dConfig::new(1, 6, 3).stride(0)),
            "Conv2d: stride must be at least 1 in each dimension, got (0, 0)"
        );
        assert!(msg(Conv2dConfig::new(1, 6, 3).dtype(DType::I64)).contains("f32 or f64"));
        // A forward on the wrong input is an error naming the op, not a panic.
        let conv = Conv2d::new(3, 4, 3).unwrap();
        let e = conv.forward(&Tensor::zeros(&[2, 1, 8, 8], DType::F32)).unwrap_err().to_string();
        assert!(e.starts_with("conv2d: input has shape [2, 1, 8, 8], expected [N, 3, H, W]"), "{e}");
    }

    /// `"same"` pads to the input's size, splitting an even span with the extra element after;
    /// each non-zero mode equals `pad2d` then an unpadded convolution.
    #[test]
    fn same_and_padding_modes_forward() {
        assert_eq!(
            (same_padding(3, 1), same_padding(4, 1), same_padding(4, 3), same_padding(1, 5)),
            ((1, 1), (1, 2), (4, 5), (0, 0))
        );
        let mut rng = Generator::new(1);
        let x = Tensor::randn(&[2, 4, 7, 6], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        for (k, d) in [((3, 3), (1, 1)), ((4, 2), (1, 1)), ((2, 3), (3, 2))] {
            for mode in PaddingMode::ALL {
                let cfg = Conv2dConfig::new(4, 6, k)
                    .dilation(d)
                    .groups(2)
                    .padding("same")
                    .padding_mode(mode)
                    .dtype(DType::F64);
                let conv = cfg.init(&mut rng).unwrap();
                let y = conv.forward(&x).unwrap();
                assert_eq!(y.dims(), &[2, 6, 7, 6], "{k:?} {d:?} {mode}");
                // The definition: pad as F.pad, then convolve with padding 0.
                let unpadded = Conv2d { config: cfg.clone().padding(0), ..conv.clone() };
                let want = unpadded.forward(&pad2d(&x, cfg.pads(), mode).unwrap()).unwrap();
                strata_core::testing::assert_close(&y.to_vec_f64(), &want.to_vec_f64(), 0.0, 0.0);
            }
        }
        // "valid" is 0; an explicit padding with a mode; the unbatched input goes through pad2d too.
        assert_eq!(Conv2dConfig::new(1, 1, 3).padding("valid"), Conv2dConfig::new(1, 1, 3));
        let conv =
            Conv2dConfig::new(4, 2, 3).padding((2, 1)).padding_mode(PaddingMode::Circular).init(&mut rng).unwrap();
        assert_eq!(conv.forward(&Tensor::zeros(&[4, 5, 5], DType::F32)).unwrap().dims(), &[2, 7, 5]);
        assert_eq!(conv.describe(), "Conv2d 4 → 2, 3×3, padding 2×1 circular");
        let e = Conv2dConfig::new(1, 1, 3).padding("same").stride(2).init(&mut rng).unwrap_err().to_string();
        assert!(e.contains("padding=\"same\" is not supported for strided convolutions (stride (2, 2))"), "{e}");
        let e = conv.forward(&Tensor::zeros(&[1, 4, 1, 5], DType::F32)).unwrap_err().to_string();
        assert!(e.contains("circular padding may wrap around at most once"), "{e}");
    }

    #[test]
    #[should_panic(expected = "Conv2d padding must be an int, a pair, \"same\" or \"valid\", got \"full\"")]
    fn unknown_padding_string_panics_like_pytorch_raises() {
        let _ = Conv2dConfig::new(1, 1, 3).padding("full");
    }

    /// The model-file keys read and write back; bad values are located errors; the shape check
    /// refuses strided "same" and too much reflect/circular padding, and every fix it suggests
    /// makes the model check.
    #[test]
    fn padding_keys_round_trip_and_check() {
        use crate::model_file::{parse_model, to_toml};
        use crate::spec::ModelSpec;
        let text = "input = [3, 9, 8]\nlayers = [\n\
            { name = \"a\", type = \"Conv2d\", out_channels = 4, kernel_size = [4, 3], padding = \"same\", padding_mode = \"reflect\" },\n\
            { name = \"b\", type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding = \"valid\" },\n\
            { name = \"c\", type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding = [1, 2], padding_mode = \"circular\" },\n\
            { name = \"d\", type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding_mode = \"replicate\" },\n]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        let conv = |i: usize| match &spec.layers[i].spec {
            LayerSpec::Conv2d(c) => c.clone(),
            other => panic!("{other:?}"),
        };
        assert!(conv(0).padding_same && conv(0).padding_mode == PaddingMode::Reflect);
        assert_eq!((conv(1).padding, conv(1).padding_same, conv(1).padding_mode), ((0, 0), false, PaddingMode::Zeros));
        assert_eq!((conv(2).padding, conv(2).padding_mode), ((1, 2), PaddingMode::Circular));
        assert_eq!(conv(0).describe(), "Conv2d ? → 4, 4×3, padding same reflect");
        assert_eq!(conv(1).describe(), "Conv2d ? → 4, 3×3");
        assert_eq!(conv(3).describe(), "Conv2d ? → 4, 3×3, padding 0 replicate");
        let written = to_toml(&spec);
        assert!(written.contains("padding = \"same\"") && written.contains("padding_mode = \"reflect\""), "{written}");
        assert_eq!(written.matches("padding_mode").count(), 3, "{written}");
        let again = parse_model(&written, "u.toml", "m").unwrap();
        let specs = |m: &ModelSpec| m.layers.iter().map(|l| l.spec.clone()).collect::<Vec<_>>();
        assert_eq!(specs(&again), specs(&spec));
        // 9×8 → same → 9×8 → valid 3×3 → 7×6 → padding [1, 2] → 7×8 → 3×3 → 5×6.
        let report = spec.check(None).unwrap();
        assert_eq!(report.output.unwrap().to_string(), "[N, 4, 5, 6]");
        let model = spec.build().unwrap();
        assert_eq!(model.forward(&Tensor::zeros(&[2, 3, 9, 8], DType::F32)).unwrap().dims(), &[2, 4, 5, 6]);
        let resolved = spec.resolve(None).unwrap();
        assert_eq!(ModelSpec::from_module("m", &model).map(|m| specs(&m)), Some(specs(&resolved)));

        // Bad values: located, named by key, with the accepted values.
        let bad = "layers = [\n\
            { type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding = \"full\" },\n\
            { type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding_mode = \"constant\" },\n\
            { type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding_mode = \"mirror\", padding = 1.5 },\n]\n";
        let e = parse_model(bad, "bad.toml", "m").unwrap_err().to_string();
        assert!(e.contains("bad.toml:2:") && e.contains("unknown padding \"full\" for Conv2d"), "{e}");
        assert!(e.contains("\"same\" (output as large as the input, stride 1)"), "{e}");
        assert!(e.contains("bad.toml:3:") && e.contains("Conv2d calls constant zero padding \"zeros\""), "{e}");
        assert!(e.contains("padding_mode is one of \"zeros\", \"reflect\", \"replicate\", \"circular\""), "{e}");
        assert!(e.contains("`padding` must be an integer, an [height, width] pair or a string, found float"), "{e}");

        // Every fix of an error makes the model check.
        let fixes_work = |m: &ModelSpec, want: &str| {
            let report = m.check(None).unwrap_err();
            let text = report.render_errors();
            assert!(text.contains(want), "{text}");
            let fixes = &report.errors[0].fixes;
            assert!(!fixes.is_empty(), "{text}");
            for fix in fixes {
                let mut fixed = m.clone();
                assert!(fixed.apply(&fix.edits), "{}", fix.text);
                assert!(
                    fixed.check(None).is_ok(),
                    "{} leaves {}",
                    fix.text,
                    fixed.check(None).unwrap_err().render_errors()
                );
            }
            text
        };
        let one = |input: &[usize], c: ConvSpec| ModelSpec::new("m").input(input).layer("conv", LayerSpec::Conv2d(c));
        let mut strided = ConvSpec::new(Some(3), 4, (3, 3));
        (strided.padding_same, strided.stride) = (true, (2, 2));
        let text = fixes_work(&one(&[3, 9, 8], strided), "padding = \"same\" needs stride 1");
        assert!(text.contains("make conv stride 1, as padding \"same\" needs (output 9×8)"), "{text}");
        assert!(text.contains("keep stride 2 with an explicit padding = 1 on conv (output 5×4)"), "{text}");
        let mut reflect = ConvSpec::new(Some(3), 4, (3, 3));
        (reflect.padding, reflect.padding_mode) = ((1, 3), PaddingMode::Reflect);
        let text = fixes_work(
            &one(&[3, 9, 3], reflect.clone()),
            "the left padding of 3 is too large for an input width of 3 (9×3): reflect padding must be smaller",
        );
        assert!(text.contains("make conv padding (1, 2) (the most reflect padding fits 9×3)"), "{text}");
        assert!(text.contains("make conv padding_mode \"zeros\""), "{text}");
        let mut circular = ConvSpec::new(Some(3), 4, (7, 1));
        (circular.padding_same, circular.padding_mode) = (true, PaddingMode::Circular);
        fixes_work(
            &one(&[3, 2, 5], circular),
            "the top padding of 3 is too large for an input height of 2 (2×5): circular padding may wrap",
        );
        (reflect.padding) = (1, 2);
        assert!(one(&[3, 9, 3], reflect).check(None).is_ok());
    }
}
