//! `Conv2d`: the 2-D convolution layer, PyTorch's `nn.Conv2d` (zero padding), with its config,
//! and [`IntoPair`], the int-or-tuple size argument shared with the pooling layers.

use crate::module::Module;
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
        let c = &self.config;
        let (kh, kw) = c.kernel_size;
        let mut s = format!("Conv2d {} → {}, {kh}×{kw}", c.in_channels, c.out_channels);
        for (name, v, default) in [("stride", c.stride, 1), ("padding", c.padding, 0), ("dilation", c.dilation, 1)] {
            if v != (default, default) {
                s.push_str(&format!(", {name} {}", pair_str(v)));
            }
        }
        if c.groups != 1 {
            s.push_str(&format!(", groups {}", c.groups));
        }
        if !c.bias {
            s.push_str(", no bias");
        }
        s
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
