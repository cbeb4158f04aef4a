//! `Conv2d`: the 2-D convolution layer, PyTorch's `nn.Conv2d` (zero padding), with its config,
//! and [`IntoPair`], the int-or-tuple size argument shared with the pooling layers.

use crate::check::context::{CheckContext, Window, window};
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed, pair_arg, saturating_product};
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::{LayerFields, pair_toml};
use crate::module::Module;
use crate::spec::{ConvSpec, LayerSpec};
use crate::{Error, Result, init};
use strata_core::{ConvAlgorithm, ConvOptions, DType, Generator, Tensor, conv2d_with, with_default_generator};

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

/// Formats a pair as `3` when both entries agree, `3×2` otherwise.
pub(crate) fn pair_str((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("{a}×{b}") }
}

/// The hyper-parameters of a [`Conv2d`], with PyTorch's defaults: stride 1, padding 0,
/// dilation 1, groups 1, with bias, f32.
///
/// ```
/// use strata_nn::{Conv2dConfig, Module};
/// let conv = Conv2dConfig::new(4, 6, 3).stride(2).padding(1).dilation(2).groups(2)
///     .init(&mut strata_core::Generator::new(0))?;
/// assert_eq!(conv.weight.dims(), &[6, 2, 3, 3]);
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
    /// Zeros added on each side, `(height, width)`.
    pub padding: (usize, usize),
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
    /// Sets the zero padding on each side.
    pub fn padding(mut self, padding: impl IntoPair) -> Self {
        self.padding = padding.into_pair();
        self
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

/// A 2-D convolution layer, PyTorch's `nn.Conv2d` with zero padding: each output channel is a
/// cross-correlation of its group's input channels with a `kH×kW` kernel, plus a bias.
///
/// Parameters are `weight` (`[out_channels, in_channels/groups, kH, kW]`, PyTorch's layout) and
/// `bias` (`[out_channels]`), initialised uniform in ±1/√fan_in with
/// `fan_in = in_channels/groups·kH·kW` (PyTorch's `kaiming_uniform_(a=√5)` and bias rule).
///
/// # Shapes
/// - input: `[N, in_channels, H, W]` (or `[in_channels, H, W]` unbatched)
/// - output: `[N, out_channels, OH, OW]` with
///   `OH = ⌊(H + 2·padding.0 − dilation.0·(kH − 1) − 1) / stride.0⌋ + 1` and `OW` likewise
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
        let opts = ConvOptions {
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            groups: c.groups,
            algorithm: c.algorithm,
        };
        Ok(conv2d_with(x, &self.weight, self.bias.as_ref(), &opts)?)
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
            dilation: c.dilation,
            groups: c.groups,
            bias: c.bias,
        }))
    }
}

/// `type = "Conv2d"`: `in_channels` (inferred when left out), `out_channels`, `kernel_size`,
/// `stride`, `padding`, `dilation` (each an int or an `[h, w]` pair), `groups`, `bias`.
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
    c.padding = f.pair("padding", (0, 0), 0);
    c.dilation = f.pair("dilation", (1, 1), 1);
    c.groups = match f.get("groups") {
        Some(_) => f.positive("groups")?,
        None => 1,
    };
    c.bias = f.boolean("bias", true);
    Some(LayerSpec::Conv2d(c))
}

/// The divisor of both channel counts closest to `groups` (the smaller on a tie).
fn nearest_groups(in_channels: usize, out_channels: usize, groups: usize) -> usize {
    let (mut a, mut b) = (in_channels.max(1), out_channels.max(1));
    while b != 0 {
        (a, b) = (b, a % b);
    }
    (1..=a).filter(|d| a.is_multiple_of(*d)).min_by_key(|d| d.abs_diff(groups)).unwrap_or(1)
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
        for (name, v, default) in
            [("stride", self.stride, 1), ("padding", self.padding, 0), ("dilation", self.dilation, 1)]
        {
            if v != (default, default) {
                s.push_str(&format!(", {name} {}", pair_str(v)));
            }
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
        let win = Window { kernel: k, stride: self.stride, padding: self.padding, dilation: self.dilation };
        let (oh, ow, werr) = window(path, "Conv2d", x, (h, w), win, false);
        cx.fail_with(werr);
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
            .padding(self.padding)
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
        fields.push(format!("padding = {}", pair_toml(self.padding)));
        fields.push(format!("dilation = {}", pair_toml(self.dilation)));
        fields.push(format!("groups = {}", self.groups));
        fields.push(format!("bias = {}", self.bias));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetInChannels { value, .. } => self.in_channels = Some(*value),
            Edit::SetOutChannels { value, .. } => self.out_channels = *value,
            Edit::SetGroups { groups, .. } => self.groups = *groups,
            Edit::SetWindow { kernel_size, padding, .. } => (self.kernel_size, self.padding) = (*kernel_size, *padding),
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
}
