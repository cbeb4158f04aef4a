//! `Linear`: the fully connected layer y = x·Wᵀ + b, PyTorch's `nn.Linear`.

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
        if in_features == 0 || out_features == 0 {
            return Err(Error::InvalidConfig {
                what: "Linear",
                message: format!(
                    "in_features and out_features must be at least 1, got Linear({in_features}, {out_features})"
                ),
            });
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
            return Err(Error::InvalidConfig {
                what: "Linear",
                message: format!("weight must be [out_features, in_features], got {}", weight.shape()),
            });
        }
        let (out_features, in_features) = (weight.dims()[0], weight.dims()[1]);
        if let Some(b) = &bias
            && b.dims() != [out_features]
        {
            return Err(Error::InvalidConfig {
                what: "Linear",
                message: format!("bias must be [{out_features}], got {}", b.shape()),
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
