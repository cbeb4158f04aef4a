//! Parameter initialisation, matching PyTorch's defaults so that models start from the same
//! distributions (not the same numbers: the generators differ).

use strata_core::{DType, Generator, Result, Tensor};

/// Uniform in `[-bound, bound)`: what `nn.Linear` uses for both weight and bias, with
/// `bound = 1/√fan_in` (kaiming_uniform with a = √5 reduces to exactly this for the weight).
pub fn uniform(shape: &[usize], bound: f64, dtype: DType, rng: &mut Generator) -> Result<Tensor> {
    Tensor::rand_uniform(shape, -bound, bound, dtype, rng)
}

/// Kaiming (He) normal initialisation for ReLU networks: std = √(2 / fan_in).
pub fn kaiming_normal(shape: &[usize], fan_in: usize, dtype: DType, rng: &mut Generator) -> Result<Tensor> {
    Tensor::randn(shape, 0.0, (2.0 / fan_in.max(1) as f64).sqrt(), dtype, rng)
}

/// Xavier (Glorot) uniform initialisation: bound = √(6 / (fan_in + fan_out)).
pub fn xavier_uniform(
    shape: &[usize],
    fan_in: usize,
    fan_out: usize,
    dtype: DType,
    rng: &mut Generator,
) -> Result<Tensor> {
    let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    uniform(shape, bound, dtype, rng)
}
