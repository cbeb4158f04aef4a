//! `Linear`: the fully connected layer y = x·Wᵀ + b, PyTorch's `nn.Linear` — the module, and
//! the layer kind (config, shape rule, parameters, MACs, model-file keys) behind [`Layer`].

use crate::check::context::{CheckContext, embedding_dim_fix, hidden_fix};
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, saturating_product};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::LayerSpec;
use crate::{Error, Result, init};
use strata_core::{DType, Generator, Tensor, with_default_generator};

/// A fully connected layer: `y = x·Wᵀ + b`.
///
/// Weight and bias start uniform in ±1/√in_features, as PyTorch initialises them. Parameters
/// are named `weight` (`[out_features, in_features]`, PyTorch's layout) and `bias`.
///
/// # Shapes
/// - input: `[*, in_features]` (any number of leading dimensions, usually `[N, in_features]`)
/// - output: `[*, out_features]`
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, or none when built without bias.
    pub bias: Option<Tensor>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// `nn.Linear(in_features, out_features)`: f32, with bias, drawing from the default
    /// generator (seed it with [`strata_core::manual_seed`]).
    pub fn new(in_features: usize, out_features: usize) -> Result<Linear> {
        with_default_generator(|rng| Linear::with_options(in_features, out_features, true, DType::F32, rng))
    }

    /// A layer with or without bias, of the given float type, drawing from `rng`.
    pub fn with_options(
        in_features: usize,
        out_features: usize,
        bias: bool,
        dtype: DType,
        rng: &mut Generator,
    ) -> Result<Linear> {
        for (key, v) in [("in_features", in_features), ("out_features", out_features)] {
            if v == 0 {
                return Err(Error::option("Linear", key, 0, "at least 1"));
            }
        }
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = init::uniform(&[out_features, in_features], bound, dtype, rng)?.requires_grad_()?;
        let bias = if bias { Some(init::uniform(&[out_features], bound, dtype, rng)?.requires_grad_()?) } else { None };
        Ok(Linear { weight, bias, in_features, out_features })
    }

    /// A layer from existing tensors: `weight` `[out, in]` and optional `bias` `[out]`. They
    /// become parameters (leaves that require grad).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.ndim() != 2 {
            return Err(Error::InvalidTensor {
                owner: "Linear",
                name: "weight",
                got: weight.shape().to_string(),
                expected: "[out_features, in_features]".into(),
            });
        }
        let (out_features, in_features) = (weight.dims()[0], weight.dims()[1]);
        if let Some(b) = &bias
            && b.dims() != [out_features]
        {
            return Err(Error::InvalidTensor {
                owner: "Linear",
                name: "bias",
                got: b.shape().to_string(),
                expected: format!("[{out_features}] (out_features)"),
            });
        }
        let weight = weight.detach().contiguous()?.detach().requires_grad_()?;
        let bias = bias.map(|b| b.detach().contiguous()?.detach().requires_grad_()).transpose()?;
        Ok(Linear { weight, bias, in_features, out_features })
    }

    /// Input size.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output size.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
}

impl Linear {
    /// `relu(self.forward(x))` as one fused op (`strata_core::linear_relu`): the same values and
    /// gradients, one autograd node and no separate pass over the activations.
    ///
    /// # Shapes
    /// - input: `[*, in_features]`
    /// - output: `[*, out_features]`
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(strata_core::linear_relu(x, &self.weight, self.bias.as_ref())?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(strata_core::linear(x, &self.weight, self.bias.as_ref())?)
    }
    fn forward_fused_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
        Some(self.forward_relu(x))
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
        Some(LayerSpec::Linear {
            in_features: Some(self.in_features),
            out_features: self.out_features,
            bias: self.bias.is_some(),
        })
    }
}

/// The config of a `Linear` layer in a model spec: PyTorch's `nn.Linear(in_features,
/// out_features, bias=True)`; `in_features` `None` is PyTorch's `LazyLinear` (inferred).
///
/// # Shapes
/// - input: `[N, *, in_features]`
/// - output: `[N, *, out_features]`
/// - parameters: `weight` `[out_features, in_features]`, `bias` `[out_features]`
#[derive(Clone, Debug, PartialEq)]
pub struct LinearSpec {
    /// Input size, or `None` to infer it from the previous layer.
    pub in_features: Option<usize>,
    /// Output size.
    pub out_features: usize,
    /// Whether the layer has a bias (default true).
    pub bias: bool,
}

/// `type = "Linear"` in model files.
pub static LINEAR_KIND: LayerKind = LayerKind {
    type_name: "Linear",
    keys: &["name", "type", "in_features", "out_features", "bias", "init", "bias_init"],
    layer_of: None,
    parse: Some(parse_linear),
};

fn parse_linear(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let in_features = f.positive("in_features");
    let out_features = match f.get("out_features") {
        Some(_) => f.positive("out_features"),
        // Already reported as a misspelt key.
        None if f.meant("out_features") => None,
        None => {
            f.missing("out_features", "add out_features = <size of its output>");
            None
        }
    };
    let bias = f.boolean("bias", true);
    if f.get("in_features").is_some() && in_features.is_none() {
        return None;
    }
    Some(LayerSpec::Linear { in_features, out_features: out_features?, bias })
}

impl Layer for LinearSpec {
    fn type_name(&self) -> &'static str {
        "Linear"
    }

    fn describe(&self) -> String {
        let mut s = match self.in_features {
            Some(i) => format!("Linear {} → {}", Dim::Fixed(i), self.out_features),
            None => format!("Linear ? → {}", self.out_features),
        };
        if !self.bias {
            s.push_str(", no bias");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let (out, path) = (self.out_features, cx.path);
        let Some(got) = x.last() else {
            cx.fail(ShapeErrorKind::TooFewDims { needs: "[N, features]: a batch of feature vectors".into() }, vec![]);
            return SymShape(vec![Dim::Batch, Dim::Fixed(out)]);
        };
        let flattened = x.sample_numel();
        match self.in_features {
            None => self.in_features = Some(got),
            Some(expected) if expected == got => {}
            // The Linear was written for the flattened sample: an image fed without Flatten.
            Some(expected) if x.rank() > 2 && expected == flattened => {
                let text = format!("insert Flatten before {path} (it turns {x} into [N, {flattened}])");
                let edits = vec![Edit::InsertFlattenBefore { path: path.into() }];
                cx.fail(ShapeErrorKind::ImageIntoLinear { expected, flattened }, vec![Fix { text, edits }]);
                // Carry on as if flattened, so later layers are checked sensibly.
                return SymShape(vec![Dim::Batch, Dim::Fixed(out)]);
            }
            Some(expected) => {
                let mut fixes = vec![Fix {
                    text: format!("make {path} Linear({got}, {out})"),
                    edits: vec![Edit::SetInFeatures { path: path.into(), value: got }],
                }];
                match &*cx.producer {
                    Producer::Linear(p) => fixes.push(Fix {
                        text: format!("make {} produce {expected} features", p.path),
                        edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: expected }],
                    }),
                    Producer::Input => {
                        let mut sample = x.sample().unwrap_or_default();
                        if let Some(last) = sample.last_mut() {
                            *last = expected;
                        }
                        let shape = sample.iter().map(ToString::to_string).collect::<Vec<_>>().join("x");
                        fixes.push(Fix {
                            text: format!(
                                "feed samples of {expected} features (input [{}] / --input {shape})",
                                sample.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                            ),
                            edits: vec![Edit::SetInput { sample }],
                        });
                    }
                    Producer::Recurrent(p, d) => fixes.extend(hidden_fix(p, *d, expected)),
                    Producer::Embedding(p) => fixes.push(embedding_dim_fix(p, expected)),
                    Producer::Flatten(..) | Producer::Conv2d(_) | Producer::Merge(..) => {}
                }
                if x.rank() > 2 {
                    fixes.push(Fix {
                        text: format!("insert Flatten before {path} (it turns {x} into [N, {flattened}]) and make {path} Linear({flattened}, {out})"),
                        edits: vec![Edit::InsertFlattenBefore { path: path.into() }, Edit::SetInFeatures { path: path.into(), value: flattened }],
                    });
                }
                let producer = cx.producer.clone();
                cx.fail(ShapeErrorKind::FeatureMismatch { expected, got, producer }, fixes);
            }
        }
        x.with_last(out)
    }

    /// Whatever it received, a Linear decides the feature count from here on.
    fn produces(&self, layer: &LayerRef) -> Option<Producer> {
        Some(Producer::Linear(layer.clone()))
    }

    fn expected_features(&self) -> Option<usize> {
        self.in_features
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let mut p = vec![("weight".to_string(), vec![self.out_features, self.in_features?])];
        if self.bias {
            p.push(("bias".to_string(), vec![self.out_features]));
        }
        Some(p)
    }

    /// One multiply-add per weight for every position the layer is applied at.
    fn macs(&self, output: &SymShape) -> usize {
        let Some(i) = self.in_features else { return 0 };
        saturating_product(&[
            i,
            self.out_features,
            output.sample().map_or(1, |s| saturating_product(&s[..s.len().saturating_sub(1)])),
        ])
    }

    fn has_inferred(&self) -> bool {
        self.in_features.is_none()
    }

    fn init_targets(&self) -> Option<InitTargets> {
        Some(InitTargets { weight_dims: 2, bias: self.bias, inherits: true })
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let i = self.in_features.ok_or_else(|| cx.unknown("in_features"))?;
        let (o, bias, dtype) = (self.out_features, self.bias, cx.dtype);
        Ok(Box::new(with_default_generator(|g| Linear::with_options(i, o, bias, dtype, g))?))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        if let Some(i) = self.in_features {
            fields.push(format!("in_features = {i}"));
        }
        fields.push(format!("out_features = {}", self.out_features));
        if !self.bias {
            fields.push("bias = false".into());
        }
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetInFeatures { value, .. } => self.in_features = Some(*value),
            Edit::SetOutFeatures { value, .. } => self.out_features = *value,
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Linear { in_features: self.in_features, out_features: self.out_features, bias: self.bias }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_default_init_bounds_and_names() {
        let mut rng = Generator::new(3);
        let l = Linear::with_options(784, 128, true, DType::F32, &mut rng).unwrap();
        let bound = 1.0 / 28.0;
        let w = l.weight.to_vec_f64();
        assert!(w.iter().all(|v| v.abs() <= bound));
        // Uniform on ±b has variance b²/3.
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!((var - bound * bound / 3.0).abs() < 0.02 * bound * bound, "{var}");
        assert!(l.bias.as_ref().unwrap().to_vec_f64().iter().all(|v| v.abs() <= bound));
        let names: Vec<_> = l.named_parameters().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
        assert_eq!(names, [("weight".to_string(), vec![128, 784]), ("bias".to_string(), vec![128])]);
        assert!(Linear::new(0, 3).unwrap_err().to_string().contains("at least 1"));
    }
}
