//! Activation layers — the modules, and the layer kinds (config, shape rule, model-file keys)
//! behind [`Layer`]: `ReLU`, `Sigmoid`, `Tanh`, `GELU` (exact or tanh), `SiLU`, `Mish`, `Hardswish`, `Hardsigmoid`, `ReLU6`, `LeakyReLU`, `ELU` (element-wise, any
//! shape) and `Softmax`, `LogSoftmax` (normalised along `dim`).

use crate::Result;
use crate::check::context::CheckContext;
use crate::check::error::ShapeErrorKind;
use crate::check::fix::{Edit, Fix};
use crate::check::shape::SymShape;
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::{GeluApproximate, LayerSpec};
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
    /// SiLU (swish), `x·σ(x) = x / (1 + e^(−x))`, PyTorch's `nn.SiLU`.
    SiLU,
    "SiLU",
    |x| x.silu()
);

pointwise_layer!(
    /// Mish, `x·tanh(softplus(x)) = x·tanh(ln(1 + eˣ))`, PyTorch's `nn.Mish`.
    Mish,
    "Mish",
    |x| x.mish()
);

pointwise_layer!(
    /// Hardswish, `x·clamp(x + 3, 0, 6)/6`, PyTorch's `nn.Hardswish` (MobileNetV3's).
    Hardswish,
    "Hardswish",
    |x| x.hardswish()
);

pointwise_layer!(
    /// Hardsigmoid, `clamp(x + 3, 0, 6)/6`, PyTorch's `nn.Hardsigmoid` (MobileNetV3's gates).
    Hardsigmoid,
    "Hardsigmoid",
    |x| x.hardsigmoid()
);

pointwise_layer!(
    /// ReLU6, `clamp(x, 0, 6)`, PyTorch's `nn.ReLU6` (MobileNetV2's).
    ReLU6,
    "ReLU6",
    |x| x.relu6()
);

/// GELU, PyTorch's `nn.GELU(approximate)`: the exact form `x·Φ(x) = ½·x·(1 + erf(x/√2))`
/// (`approximate='none'`, the default), or the tanh approximation
/// `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (`approximate='tanh'`).
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Debug, Clone, Copy, Default)]
pub struct GELU {
    /// Which formula.
    pub approximate: GeluApproximate,
}

impl GELU {
    /// `nn.GELU()`: the exact form.
    pub fn new() -> Self {
        Self::default()
    }
    /// `nn.GELU(approximate='tanh')`.
    pub fn tanh() -> Self {
        GELU { approximate: GeluApproximate::Tanh }
    }
}

impl Module for GELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.approximate {
            GeluApproximate::None => x.gelu()?,
            GeluApproximate::Tanh => x.gelu_tanh()?,
        })
    }
    fn describe(&self) -> String {
        gelu_describe(self.approximate)
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::GELU { approximate: self.approximate })
    }
}

/// `GELU` for the exact form (as before the option existed), PyTorch's repr for the other.
fn gelu_describe(approximate: GeluApproximate) -> String {
    match approximate {
        GeluApproximate::None => "GELU".into(),
        GeluApproximate::Tanh => "GELU(approximate='tanh')".into(),
    }
}

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

/// The config of an element-wise activation in a model spec, with PyTorch's arguments.
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Clone, Debug, PartialEq)]
pub enum ActivationSpec {
    /// `nn.ReLU()`.
    ReLU,
    /// `nn.Sigmoid()`.
    Sigmoid,
    /// `nn.Tanh()`.
    Tanh,
    /// `nn.GELU(approximate='none' or 'tanh')`.
    GELU {
        /// The exact form or the tanh approximation.
        approximate: GeluApproximate,
    },
    /// `nn.SiLU()`.
    SiLU,
    /// `nn.Mish()`.
    Mish,
    /// `nn.Hardswish()`.
    Hardswish,
    /// `nn.Hardsigmoid()`.
    Hardsigmoid,
    /// `nn.ReLU6()`.
    ReLU6,
    /// `nn.LeakyReLU(negative_slope=0.01)`.
    LeakyReLU {
        /// Slope for negative inputs.
        negative_slope: f64,
    },
    /// `nn.ELU(alpha=1.0)`.
    ELU {
        /// Scale of the negative part.
        alpha: f64,
    },
}

/// `type = "ReLU"`.
pub static RELU_KIND: LayerKind =
    LayerKind { type_name: "ReLU", keys: &["name", "type"], layer_of: None, parse: Some(|_| Some(LayerSpec::ReLU)) };
/// `type = "Sigmoid"`.
pub static SIGMOID_KIND: LayerKind = LayerKind {
    type_name: "Sigmoid",
    keys: &["name", "type"],
    layer_of: None,
    parse: Some(|_| Some(LayerSpec::Sigmoid)),
};
/// `type = "Tanh"`.
pub static TANH_KIND: LayerKind =
    LayerKind { type_name: "Tanh", keys: &["name", "type"], layer_of: None, parse: Some(|_| Some(LayerSpec::Tanh)) };
/// `type = "GELU"`, `approximate` (`"none"`, the default, or `"tanh"`).
pub static GELU_KIND: LayerKind = LayerKind {
    type_name: "GELU",
    keys: &["name", "type", "approximate"],
    layer_of: None,
    parse: Some(|f| {
        use toml::de::DeValue;
        let approximate = match f.get("approximate").map(|v| (v.get_ref(), v.span())) {
            None => GeluApproximate::None,
            Some((DeValue::String(a), _)) if a.as_ref() == "none" => GeluApproximate::None,
            Some((DeValue::String(a), _)) if a.as_ref() == "tanh" => GeluApproximate::Tanh,
            Some((_, span)) => {
                f.error(
                    span,
                    "`approximate` must be \"none\" or \"tanh\"".into(),
                    Some("\"none\" is the exact erf form, \"tanh\" PyTorch's tanh approximation".into()),
                );
                return None;
            }
        };
        Some(LayerSpec::GELU { approximate })
    }),
};
/// `type = "SiLU"`.
pub static SILU_KIND: LayerKind =
    LayerKind { type_name: "SiLU", keys: &["name", "type"], layer_of: None, parse: Some(|_| Some(LayerSpec::SiLU)) };
/// `type = "Mish"`.
pub static MISH_KIND: LayerKind =
    LayerKind { type_name: "Mish", keys: &["name", "type"], layer_of: None, parse: Some(|_| Some(LayerSpec::Mish)) };
/// `type = "Hardswish"`.
pub static HARDSWISH_KIND: LayerKind = LayerKind {
    type_name: "Hardswish",
    keys: &["name", "type"],
    layer_of: None,
    parse: Some(|_| Some(LayerSpec::Hardswish)),
};
/// `type = "Hardsigmoid"`.
pub static HARDSIGMOID_KIND: LayerKind = LayerKind {
    type_name: "Hardsigmoid",
    keys: &["name", "type"],
    layer_of: None,
    parse: Some(|_| Some(LayerSpec::Hardsigmoid)),
};
/// `type = "ReLU6"`.
pub static RELU6_KIND: LayerKind =
    LayerKind { type_name: "ReLU6", keys: &["name", "type"], layer_of: None, parse: Some(|_| Some(LayerSpec::ReLU6)) };
/// `type = "LeakyReLU"`, `negative_slope` (default 0.01).
pub static LEAKY_RELU_KIND: LayerKind = LayerKind {
    type_name: "LeakyReLU",
    keys: &["name", "type", "negative_slope"],
    layer_of: None,
    parse: Some(|f| Some(LayerSpec::LeakyReLU { negative_slope: f.float("negative_slope", 0.01) })),
};
/// `type = "ELU"`, `alpha` (default 1.0).
pub static ELU_KIND: LayerKind = LayerKind {
    type_name: "ELU",
    keys: &["name", "type", "alpha"],
    layer_of: None,
    parse: Some(|f| Some(LayerSpec::ELU { alpha: f.float("alpha", 1.0) })),
};

impl Layer for ActivationSpec {
    fn type_name(&self) -> &'static str {
        match self {
            ActivationSpec::ReLU => "ReLU",
            ActivationSpec::Sigmoid => "Sigmoid",
            ActivationSpec::Tanh => "Tanh",
            ActivationSpec::GELU { .. } => "GELU",
            ActivationSpec::SiLU => "SiLU",
            ActivationSpec::Mish => "Mish",
            ActivationSpec::Hardswish => "Hardswish",
            ActivationSpec::Hardsigmoid => "Hardsigmoid",
            ActivationSpec::ReLU6 => "ReLU6",
            ActivationSpec::LeakyReLU { .. } => "LeakyReLU",
            ActivationSpec::ELU { .. } => "ELU",
        }
    }

    fn describe(&self) -> String {
        match self {
            ActivationSpec::LeakyReLU { negative_slope } => format!("LeakyReLU(negative_slope={negative_slope})"),
            ActivationSpec::ELU { alpha } => format!("ELU(alpha={alpha})"),
            ActivationSpec::GELU { approximate } => gelu_describe(*approximate),
            other => other.type_name().into(),
        }
    }

    fn check(&mut self, _cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        x.clone()
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(match self {
            ActivationSpec::ReLU => Box::new(ReLU),
            ActivationSpec::Sigmoid => Box::new(Sigmoid),
            ActivationSpec::Tanh => Box::new(Tanh),
            ActivationSpec::GELU { approximate } => Box::new(GELU { approximate: *approximate }),
            ActivationSpec::SiLU => Box::new(SiLU),
            ActivationSpec::Mish => Box::new(Mish),
            ActivationSpec::Hardswish => Box::new(Hardswish),
            ActivationSpec::Hardsigmoid => Box::new(Hardsigmoid),
            ActivationSpec::ReLU6 => Box::new(ReLU6),
            ActivationSpec::LeakyReLU { negative_slope } => Box::new(LeakyReLU::with_slope(*negative_slope)),
            ActivationSpec::ELU { alpha } => Box::new(ELU::with_alpha(*alpha)),
        })
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        match self {
            ActivationSpec::LeakyReLU { negative_slope } => fields.push(format!("negative_slope = {negative_slope:?}")),
            ActivationSpec::ELU { alpha } => fields.push(format!("alpha = {alpha:?}")),
            // Only the non-default form is written, so files without the key read back the same.
            ActivationSpec::GELU { approximate: GeluApproximate::Tanh } => fields.push("approximate = \"tanh\"".into()),
            _ => {}
        }
    }

    fn to_spec(&self) -> LayerSpec {
        match self {
            ActivationSpec::ReLU => LayerSpec::ReLU,
            ActivationSpec::Sigmoid => LayerSpec::Sigmoid,
            ActivationSpec::Tanh => LayerSpec::Tanh,
            ActivationSpec::GELU { approximate } => LayerSpec::GELU { approximate: *approximate },
            ActivationSpec::SiLU => LayerSpec::SiLU,
            ActivationSpec::Mish => LayerSpec::Mish,
            ActivationSpec::Hardswish => LayerSpec::Hardswish,
            ActivationSpec::Hardsigmoid => LayerSpec::Hardsigmoid,
            ActivationSpec::ReLU6 => LayerSpec::ReLU6,
            ActivationSpec::LeakyReLU { negative_slope } => LayerSpec::LeakyReLU { negative_slope: *negative_slope },
            ActivationSpec::ELU { alpha } => LayerSpec::ELU { alpha: *alpha },
        }
    }
}

/// The config of `nn.Softmax(dim)` / `nn.LogSoftmax(dim)` in a model spec.
///
/// # Shapes
/// - input: any shape with a dimension `dim`
/// - output: the same shape
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxSpec {
    /// The dimension normalised over (negative counts from the end).
    pub dim: isize,
    /// `LogSoftmax` rather than `Softmax`.
    pub log: bool,
}

/// `type = "Softmax"`, `dim` (required).
pub static SOFTMAX_KIND: LayerKind =
    LayerKind { type_name: "Softmax", keys: &["name", "type", "dim"], layer_of: None, parse: Some(parse_softmax) };
/// `type = "LogSoftmax"`, `dim` (required).
pub static LOG_SOFTMAX_KIND: LayerKind =
    LayerKind { type_name: "LogSoftmax", keys: &["name", "type", "dim"], layer_of: None, parse: Some(parse_softmax) };

fn parse_softmax(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let dim = match f.get("dim") {
        Some(_) => f.int("dim")? as isize,
        None => {
            f.missing("dim", "add dim = 1 (the class dimension of [N, C] logits)");
            return None;
        }
    };
    Some(SoftmaxSpec { dim, log: f.ty == "LogSoftmax" }.to_spec())
}

impl Layer for SoftmaxSpec {
    fn type_name(&self) -> &'static str {
        if self.log { "LogSoftmax" } else { "Softmax" }
    }

    fn describe(&self) -> String {
        format!("{}(dim={})", self.type_name(), self.dim)
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let (r, dim) = (x.rank() as isize, self.dim);
        if dim < -r || dim >= r {
            let reason =
                format!("dim = {dim} is not a dimension of a {r}-dimensional input (valid: {} to {})", -r, r - 1);
            let fix = Fix {
                text: format!("make {} {}(dim=-1) (the last dimension)", cx.path, self.type_name()),
                edits: vec![Edit::SetDim { path: cx.path.into(), dim: -1 }],
            };
            cx.fail(ShapeErrorKind::BadLayer { reason }, vec![fix]);
        }
        x.clone()
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(if self.log { Box::new(LogSoftmax::new(self.dim)) } else { Box::new(Softmax::new(self.dim)) })
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("dim = {}", self.dim));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetDim { dim, .. } => self.dim = *dim,
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        if self.log { LayerSpec::LogSoftmax { dim: self.dim } } else { LayerSpec::Softmax { dim: self.dim } }
    }
}
