//! `Conv2d`: the 2-D convolution layer, PyTorch's `nn.Conv2d` (padding as an int, a pair,
//! `"same"` or `"valid"`; `padding_mode` zeros, reflect, replicate or circular), with its
//! config, and [`IntoPair`], the int-or-tuple size argument shared with the pooling layers.
//!
//! The parts: this file (the module, its config and padding), `layer.rs` (the kind in model
//! specs: model-file keys, shape rule, parameters, description, build), `conv1d.rs` (`Conv1d`,
//! the same convolution at height 1, and its kind), `tests.rs`.

mod conv1d;
mod layer;
#[cfg(test)]
mod tests;

pub use conv1d::{CONV1D_KIND, Conv1d, Conv1dConfig};
pub(crate) use conv1d::{Conv1dLayer, size_1d};
pub use layer::CONV2D_KIND;

use crate::module::Module;
use crate::{Error, Result, init};
use strata_core::{
    ConvAlgorithm, ConvOptions, DType, Generator, PaddingMode, Tensor, conv2d_with, pad2d, with_default_generator,
};

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
    /// The padding, or the value as given (`"SAME"`) when it is not one: the config keeps it
    /// and [`Conv2dConfig::validate`] reports it.
    fn into_padding(self) -> std::result::Result<Padding, String>;
}

impl<P: IntoPair> IntoPadding for P {
    fn into_padding(self) -> std::result::Result<Padding, String> {
        let (h, w) = self.into_pair();
        Ok(Padding::Explicit(h, w))
    }
}

impl IntoPadding for Padding {
    fn into_padding(self) -> std::result::Result<Padding, String> {
        Ok(self)
    }
}

impl IntoPadding for &str {
    /// `"same"` or `"valid"`, spelt as PyTorch spells them; any other string is given back as an
    /// error value (PyTorch raises a `ValueError` there).
    fn into_padding(self) -> std::result::Result<Padding, String> {
        match self {
            "same" => Ok(Padding::Same),
            "valid" => Ok(Padding::Valid),
            other => Err(format!("{other:?}")),
        }
    }
}

/// What a `Conv2d` padding must be, for the error about one that is not.
const PADDING_EXPECTED: &str = "an int, an (h, w) pair, \"same\" or \"valid\" (lowercase, as in PyTorch)";

/// `"same"` padding along one axis, `(before, after)`: `dilation·(kernel − 1)` split with the
/// odd element after, as `torch.nn.Conv2d(padding="same")` computes it.
pub fn same_padding(kernel: usize, dilation: usize) -> (usize, usize) {
    let total = dilation * kernel.saturating_sub(1);
    (total / 2, total - total / 2)
}

/// `[left, right, top, bottom]` (`F.pad`'s order) of a convolution's padding: the explicit pair
/// on both sides, or the `"same"` split.
pub(super) fn pads_of(
    same: bool,
    padding: (usize, usize),
    kernel: (usize, usize),
    dilation: (usize, usize),
) -> [usize; 4] {
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
    /// A padding string [`Conv2dConfig::padding`] did not recognise (`"SAME"`), as given: kept
    /// so that [`Conv2dConfig::validate`] (and so building the layer) reports it.
    padding_invalid: Option<String>,
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
            padding_invalid: None,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.stride = stride.into_pair();
        self
    }
    /// Sets the padding: an int or `(h, w)` pair on each side, or `"same"` / `"valid"`
    /// ([`Padding`]). Any other string (`"SAME"`) is an error from [`Conv2dConfig::validate`]
    /// and [`Conv2dConfig::init`], not here, so the builder chain stays as it is; a later valid
    /// padding replaces it.
    pub fn padding(mut self, padding: impl IntoPadding) -> Self {
        self.padding_invalid = None;
        (self.padding, self.padding_same) = match padding.into_padding() {
            Ok(Padding::Explicit(h, w)) => ((h, w), false),
            Ok(Padding::Same) => ((0, 0), true),
            Ok(Padding::Valid) => ((0, 0), false),
            Err(given) => {
                self.padding_invalid = Some(given);
                ((0, 0), false)
            }
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
        const OWNER: &str = "Conv2d";
        let c = self;
        if let Some(given) = &c.padding_invalid {
            return Err(Error::option(OWNER, "padding", given, PADDING_EXPECTED));
        }
        for (key, v) in [("in_channels", c.in_channels), ("out_channels", c.out_channels)] {
            if v == 0 {
                return Err(Error::option(OWNER, key, 0, "at least 1"));
            }
        }
        for (key, (a, b)) in [("kernel_size", c.kernel_size), ("stride", c.stride), ("dilation", c.dilation)] {
            if a == 0 || b == 0 {
                return Err(Error::option(OWNER, key, format!("({a}, {b})"), "at least 1 in each dimension"));
            }
        }
        if c.groups == 0 {
            return Err(Error::option(OWNER, "groups", 0, "at least 1"));
        }
        if c.padding_same && c.stride != (1, 1) {
            return Err(Error::option(
                OWNER,
                "padding",
                format!("\"same\" with stride ({}, {})", c.stride.0, c.stride.1),
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

/// The convolution of `x` (`[N, C, H, W]` or unbatched) with `weight` (4-D) under `c`: Zero
/// padding that is the same on both sides stays inside the convolution (its fast paths skip
/// the zeros); anything else is padded first, exactly as `F.pad` then `F.conv2d(padding=0)` in
/// PyTorch's module.
fn conv_forward(c: &Conv2dConfig, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let pads @ [left, right, top, bottom] = c.pads();
    let mut opts = ConvOptions {
        stride: c.stride,
        padding: (top, left),
        dilation: c.dilation,
        groups: c.groups,
        algorithm: c.algorithm,
    };
    if c.padding_mode == PaddingMode::Zeros && left == right && top == bottom {
        return Ok(conv2d_with(x, weight, bias, &opts)?);
    }
    opts.padding = (0, 0);
    let padded = pad2d(x, pads, c.padding_mode)?;
    Ok(conv2d_with(&padded, weight, bias, &opts)?)
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_forward(&self.config, x, &self.weight, self.bias.as_ref())
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
