//! Layer normalisation, PyTorch's `nn.LayerNorm`: every sample normalised over its trailing
//! `normalized_shape` dimensions, with an elementwise learned scale and shift.

use crate::check::context::CheckContext;
use crate::check::error::ShapeErrorKind;
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, shape_arg};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::LayerSpec;
use crate::{Error, Result};
use strata_core::{DType, Tensor, layer_norm};

/// The hyper-parameters of a [`LayerNorm`], with PyTorch's defaults: `eps = 1e-5`,
/// `elementwise_affine = true`, f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormConfig {
    /// The trailing dimensions to normalise over (e.g. `[C]`, or `[H, W]`).
    pub normalized_shape: Vec<usize>,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Whether the layer has a learned `weight` (γ, ones) and `bias` (β, zeros).
    pub elementwise_affine: bool,
    /// Element type of the parameters.
    pub dtype: DType,
}

impl LayerNormConfig {
    /// `nn.LayerNorm(normalized_shape)` with PyTorch's defaults.
    pub fn new(normalized_shape: &[usize]) -> Self {
        LayerNormConfig {
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            elementwise_affine: true,
            dtype: DType::F32,
        }
    }
    /// Sets `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// With or without `weight` and `bias`.
    pub fn elementwise_affine(mut self, affine: bool) -> Self {
        self.elementwise_affine = affine;
        self
    }
    /// Sets the element type (f32 or f64).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Builds the layer: weight 1 and bias 0, as PyTorch initialises them.
    pub fn init(&self) -> Result<LayerNorm> {
        const OWNER: &str = "LayerNorm";
        if self.normalized_shape.is_empty() || self.normalized_shape.contains(&0) {
            let value = format!("{:?}", self.normalized_shape);
            return Err(Error::option(OWNER, "normalized_shape", value, "non-empty with sizes ≥ 1"));
        }
        if !self.dtype.is_float() {
            return Err(Error::option(OWNER, "dtype", format!("{:?}", self.dtype), "f32 or f64"));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return Err(Error::option(OWNER, "eps", self.eps, "≥ 0"));
        }
        let ns = &self.normalized_shape;
        let (weight, bias) = if self.elementwise_affine {
            (
                Some(Tensor::ones(ns, self.dtype).requires_grad_()?),
                Some(Tensor::zeros(ns, self.dtype).requires_grad_()?),
            )
        } else {
            (None, None)
        };
        Ok(LayerNorm { weight, bias, config: self.clone() })
    }
}

/// Layer normalisation, PyTorch's `nn.LayerNorm`: per sample, over the last
/// `normalized_shape.len()` dimensions, `y = (x − μ)/√(σ² + eps)·γ + β` with the biased
/// variance. The same in training and evaluation mode.
///
/// Parameters `weight` (γ, ones) and `bias` (β, zeros), each of shape `normalized_shape`, when
/// `elementwise_affine`: PyTorch's names, so state_dicts move both ways.
///
/// # Shapes
/// - input: `[*, normalized_shape…]`, e.g. `[N, C]` or `[N, L, C]` for `normalized_shape = [C]`
/// - output: the input's shape
/// - `weight`, `bias`: `normalized_shape`
///
/// ```
/// use strata_nn::{LayerNorm, Module};
/// use strata_core::{DType, Tensor};
/// let ln = LayerNorm::new(&[16])?;
/// let y = ln.forward(&Tensor::ones(&[4, 7, 16], DType::F32))?;
/// assert_eq!(y.dims(), &[4, 7, 16]);
/// assert_eq!(ln.num_parameters(), 32);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug)]
pub struct LayerNorm {
    /// γ, of shape `normalized_shape` (when affine).
    pub weight: Option<Tensor>,
    /// β, of shape `normalized_shape` (when affine).
    pub bias: Option<Tensor>,
    config: LayerNormConfig,
}

impl LayerNorm {
    /// `nn.LayerNorm(normalized_shape)` with PyTorch's defaults (f32).
    pub fn new(normalized_shape: &[usize]) -> Result<LayerNorm> {
        LayerNormConfig::new(normalized_shape).init()
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LayerNormConfig {
        &self.config
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        Ok(layer_norm(x, &c.normalized_shape, self.weight.as_ref(), self.bias.as_ref(), c.eps)?)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![];
        p.extend(self.weight.clone().map(|t| ("weight".to_string(), t)));
        p.extend(self.bias.clone().map(|t| ("bias".to_string(), t)));
        p
    }
    fn describe(&self) -> String {
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }
    fn spec(&self) -> Option<LayerSpec> {
        let c = &self.config;
        Some(LayerSpec::LayerNorm {
            normalized_shape: c.normalized_shape.clone(),
            eps: c.eps,
            elementwise_affine: c.elementwise_affine,
        })
    }
}

/// The config of `nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True)` in a
/// model spec.
///
/// # Shapes
/// - input: `[N, *, *normalized_shape]`
/// - output: the same shape
/// - parameters (when affine): `weight` and `bias`, each `normalized_shape`
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormSpec {
    /// The trailing dimensions normalised over, e.g. `[64]`.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
    /// Whether the layer has `weight` and `bias`.
    pub elementwise_affine: bool,
}

/// `type = "LayerNorm"`, `normalized_shape` (an int or a list), `eps`, `elementwise_affine`.
pub static LAYER_NORM_KIND: LayerKind = LayerKind {
    type_name: "LayerNorm",
    keys: &["name", "type", "normalized_shape", "eps", "elementwise_affine", "init", "bias_init"],
    layer_of: None,
    parse: Some(parse_layer_norm),
};

fn parse_layer_norm(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let normalized_shape = match f.get("normalized_shape") {
        Some(v) if matches!(v.get_ref(), toml::de::DeValue::Integer(_)) => vec![f.positive("normalized_shape")?],
        Some(_) => f.sizes("normalized_shape")?,
        None if f.meant("normalized_shape") => return None,
        None => {
            f.missing(
                "normalized_shape",
                "add normalized_shape = 64 (the size of the last dimension), or [28, 64] for the last two",
            );
            return None;
        }
    };
    let eps = f.float("eps", 1e-5);
    if eps < 0.0 {
        let span = f.span_of("eps");
        f.error(span, format!("`eps` must be at least 0, got {eps}"), None);
    }
    Some(LayerSpec::LayerNorm { normalized_shape, eps, elementwise_affine: f.boolean("elementwise_affine", true) })
}

impl Layer for LayerNormSpec {
    fn type_name(&self) -> &'static str {
        "LayerNorm"
    }

    fn describe(&self) -> String {
        let dims: Vec<String> = self.normalized_shape.iter().map(usize::to_string).collect();
        let mut s = format!("LayerNorm [{}]", dims.join(", "));
        if self.eps != 1e-5 {
            s.push_str(&format!(", eps {}", self.eps));
        }
        if !self.elementwise_affine {
            s.push_str(", not affine");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let ns = &self.normalized_shape;
        // The last ns.len() dimensions of each sample (never the batch).
        let sample = &x.0[1.min(x.rank())..];
        let tail = &sample[sample.len().saturating_sub(ns.len())..];
        let got: Vec<usize> = tail.iter().map(|d| if let Dim::Fixed(v) = d { *v } else { 0 }).collect();
        if got != *ns {
            let mut fixes = vec![];
            if !got.is_empty() && !got.contains(&0) {
                fixes.push(Fix {
                    text: format!("make {} LayerNorm({})", cx.path, shape_arg(&got)),
                    edits: vec![Edit::SetNormalizedShape { path: cx.path.into(), shape: got.clone() }],
                });
            }
            if let ([expected], [_]) = (ns.as_slice(), got.as_slice()) {
                fixes.extend(cx.feature_producer_fix(x, *expected));
            }
            let producer = cx.producer.clone();
            cx.fail(ShapeErrorKind::NormalizedShapeMismatch { expected: ns.clone(), got, producer }, fixes);
        }
        x.clone()
    }

    fn expected_features(&self) -> Option<usize> {
        match self.normalized_shape.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    fn init_targets(&self) -> Option<InitTargets> {
        // Scale and shift of `normalized_shape`: only their own `init` and `bias_init`.
        let weight_dims = self.normalized_shape.len();
        self.elementwise_affine.then_some(InitTargets { weight_dims, bias: true, inherits: false })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        if !self.elementwise_affine {
            return Some(vec![]);
        }
        Some(vec![("weight".into(), self.normalized_shape.clone()), ("bias".into(), self.normalized_shape.clone())])
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(
            LayerNormConfig::new(&self.normalized_shape)
                .eps(self.eps)
                .elementwise_affine(self.elementwise_affine)
                .dtype(cx.dtype)
                .init()?,
        ))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("normalized_shape = {:?}", self.normalized_shape));
        fields.push(format!("eps = {:?}", self.eps));
        fields.push(format!("elementwise_affine = {}", self.elementwise_affine));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetNormalizedShape { shape, .. } => self.normalized_shape = shape.clone(),
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::LayerNorm {
            normalized_shape: self.normalized_shape.clone(),
            eps: self.eps,
            elementwise_affine: self.elementwise_affine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_names_init_and_errors() {
        let ln = LayerNorm::new(&[2, 3]).unwrap();
        let keys: Vec<String> = ln.state_dict().keys().map(str::to_string).collect();
        assert_eq!(keys, ["weight", "bias"]);
        assert_eq!(ln.weight.as_ref().unwrap().dims(), &[2, 3]);
        assert_eq!(ln.describe(), "LayerNorm [2, 3]");
        let e = ln.forward(&Tensor::zeros(&[4, 3, 2], DType::F32)).unwrap_err().to_string();
        assert_eq!(
            e,
            "layer_norm: input has shape [4, 3, 2], expected [*, 2, 3] (the last 2 dimension(s) equal to normalized_shape [2, 3])"
        );
        let plain = LayerNormConfig::new(&[3]).elementwise_affine(false).eps(1e-3).init().unwrap();
        assert_eq!(plain.num_parameters(), 0);
        assert_eq!(plain.describe(), "LayerNorm [3], eps 0.001, not affine");
        assert!(LayerNorm::new(&[]).unwrap_err().to_string().contains("non-empty"));
    }
}
