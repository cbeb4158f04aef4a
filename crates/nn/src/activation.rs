//! Activation layers.

use crate::Result;
use crate::module::Module;
use strata_core::Tensor;

/// Rectified linear unit, `max(x, 0)`, PyTorch's `nn.ReLU` (gradient 0 at 0, as PyTorch).
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Debug, Clone, Copy, Default)]
pub struct ReLU;

impl ReLU {
    /// A ReLU layer.
    pub fn new() -> Self {
        ReLU
    }
}

impl Module for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.relu()?)
    }
    fn is_relu(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "ReLU".into()
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::ReLU)
    }
}

/// Defines a parameterless pointwise activation layer: the struct, `new`, and its `Module` impl.
macro_rules! pointwise_layer {
    ($(#[$doc:meta])* $name:ident, $label:literal, |$x:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Shapes
        /// - input: any shape
        /// - output: the same shape
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl $name {
            #[doc = concat!("A ", $label, " layer.")]
            pub fn new() -> Self {
                $name
            }
        }

        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                Ok($body?)
            }
            fn describe(&self) -> String {
                $label.into()
            }

            fn spec(&self) -> Option<crate::spec::LayerSpec> {
                Some(crate::spec::LayerSpec::$name)
            }
        }
    };
}

pointwise_layer!(
    /// The logistic function `1 / (1 + e^(−x))`, PyTorch's `nn.Sigmoid`.
    Sigmoid,
    "Sigmoid",
    |x| x.sigmoid()
);

pointwise_layer!(
    /// The hyperbolic tangent, PyTorch's `nn.Tanh`.
    Tanh,
    "Tanh",
    |x| x.tanh()
);

pointwise_layer!(
    /// GELU in its exact form `x·Φ(x) = ½·x·(1 + erf(x/√2))`, PyTorch's `nn.GELU()`
    /// (`approximate='none'`).
    GELU,
    "GELU",
    |x| x.gelu()
);

/// `x` where `x > 0`, else `negative_slope·x`, PyTorch's `nn.LeakyReLU` (default slope 0.01).
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Debug, Clone, Copy)]
pub struct LeakyReLU {
    /// The slope for negative inputs.
    pub negative_slope: f64,
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU { negative_slope: 0.01 }
    }
}

impl LeakyReLU {
    /// `nn.LeakyReLU()`: slope 0.01.
    pub fn new() -> Self {
        Self::default()
    }
    /// `nn.LeakyReLU(negative_slope)`.
    pub fn with_slope(negative_slope: f64) -> Self {
        LeakyReLU { negative_slope }
    }
}

impl Module for LeakyReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.leaky_relu(self.negative_slope)?)
    }
    fn describe(&self) -> String {
        format!("LeakyReLU(negative_slope={})", self.negative_slope)
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::LeakyReLU { negative_slope: self.negative_slope })
    }
}

/// `x` where `x > 0`, else `alpha·(eˣ − 1)`, PyTorch's `nn.ELU` (default alpha 1).
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Debug, Clone, Copy)]
pub struct ELU {
    /// The scale of the negative part.
    pub alpha: f64,
}

impl Default for ELU {
    fn default() -> Self {
        ELU { alpha: 1.0 }
    }
}

impl ELU {
    /// `nn.ELU()`: alpha 1.
    pub fn new() -> Self {
        Self::default()
    }
    /// `nn.ELU(alpha)`.
    pub fn with_alpha(alpha: f64) -> Self {
        ELU { alpha }
    }
}

impl Module for ELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.elu(self.alpha)?)
    }
    fn describe(&self) -> String {
        format!("ELU(alpha={})", self.alpha)
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::ELU { alpha: self.alpha })
    }
}

/// Softmax along `dim`, PyTorch's `nn.Softmax(dim)`: each line along `dim` becomes
/// probabilities summing to 1 (computed stably). For a loss, prefer [`LogSoftmax`] or logits
/// into `CrossEntropyLoss`.
///
/// # Shapes
/// - input: any shape with dimension `dim` (e.g. `[N, C]` with `dim = 1`)
/// - output: the same shape
#[derive(Debug, Clone, Copy)]
pub struct Softmax {
    /// The dimension normalised over (negative counts from the end).
    pub dim: isize,
}

impl Softmax {
    /// `nn.Softmax(dim)`.
    pub fn new(dim: isize) -> Self {
        Softmax { dim }
    }
}

impl Module for Softmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.softmax(self.dim)?)
    }
    fn describe(&self) -> String {
        format!("Softmax(dim={})", self.dim)
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::Softmax { dim: self.dim })
    }
}

/// Log-softmax along `dim`, PyTorch's `nn.LogSoftmax(dim)`: `x − log Σ eˣ`, stable for any
/// magnitude.
///
/// # Shapes
/// - input: any shape with dimension `dim` (e.g. `[N, C]` with `dim = 1`)
/// - output: the same shape
#[derive(Debug, Clone, Copy)]
pub struct LogSoftmax {
    /// The dimension normalised over (negative counts from the end).
    pub dim: isize,
}

impl LogSoftmax {
    /// `nn.LogSoftmax(dim)`.
    pub fn new(dim: isize) -> Self {
        LogSoftmax { dim }
    }
}

impl Module for LogSoftmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.log_softmax(self.dim)?)
    }
    fn describe(&self) -> String {
        format!("LogSoftmax(dim={})", self.dim)
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::LogSoftmax { dim: self.dim })
    }
}
