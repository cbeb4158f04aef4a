//! Fused layer normalisation, as `torch.nn.functional.layer_norm`: each row of the last
//! `k` dimensions (`D` values, `k = normalized_shape.len()`) is normalised by its own mean and
//! biased variance, then scaled and shifted elementwise.
//!
//! Per row of `D` values x: `μ = Σx/D`, `σ² = Σ(x − μ)²/D`, `r = 1/√(σ² + eps)`,
//! `x̂ = (x − μ)·r`, `y = x̂·γ + β` (γ, β of shape `normalized_shape`).
//!
//! Backward, with g = dL/dy and `ĝ = g·γ`: `dβ = Σ_rows g`, `dγ = Σ_rows g·x̂`,
//! `dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))` (means over the row). Statistics are computed in f64,
//! rows in parallel (each row by one task), and `dγ`, `dβ` summed over rows in a fixed order,
//! so results do not depend on the thread count.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` the GPU
//! path (the `gpu` feature).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// `torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)`. `weight` (γ) and
/// `bias` (β) are optional; gradients flow to `x`, `weight` and `bias`.
///
/// # Shapes
/// - `x`: `[*, normalized_shape…]` (its last `normalized_shape.len()` dimensions equal it)
/// - `weight`, `bias`: `normalized_shape`
/// - output: the shape of `x`
pub fn layer_norm(
    x: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let k = normalized_shape.len();
    let ns = Shape::from(normalized_shape);
    if k == 0 || x.ndim() < k || x.dims()[x.ndim() - k..] != *normalized_shape {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: if k == 0 {
                "a non-empty normalized_shape (the trailing dimensions to normalise over)".into()
            } else {
                format!("[*, {}] (the last {k} dimension(s) equal to normalized_shape {ns})", join(normalized_shape))
            },
        });
    }
    for (t, what) in [(weight, "weight"), (bias, "bias")] {
        if let Some(t) = t {
            x.check_same(OP, t)?;
            if t.shape() != &ns {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    what,
                    got: t.shape().clone(),
                    expected: format!("{ns} (normalized_shape)"),
                });
            }
        }
    }
    if eps.is_nan() || eps < 0.0 {
        crate::bail_arg!(OP, "eps must be a non-negative number, got {eps}");
    }
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::layer_norm(x, k, weight, bias, eps);
    }
    let d = ns.numel();
    let gamma = weight.map(Tensor::to_vec_f64);
    let beta = bias.map(Tensor::to_vec_f64);
    let (out, saved) = cpu::forward(x, d, gamma, beta, eps)?;

    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let needs = (x.requires_grad(), weight.is_some_and(Tensor::requires_grad), bias.is_some_and(Tensor::requires_grad));
    let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
    let shape = x.shape().clone();
    Ok(Tensor::from_op(out, shape.clone(), OP, &inputs, move |g| {
        let (dx, dgamma, dbeta) = cpu::backward(g, &saved, needs)?;
        let mut out = vec![dx.map(|s| Tensor::from_storage(s, shape.clone()))];
        if has_weight {
            out.push(dgamma.map(|s| Tensor::from_storage(s, ns.clone())));
        }
        if has_bias {
            out.push(dbeta.map(|s| Tensor::from_storage(s, ns.clone())));
        }
        Ok(out)
    }))
}

fn join(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::layer_norm;
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn normalises_by_hand() {
        // Row 1, 2, 3, 4: μ = 2.5, σ² = 1.25; γ = 2, β = −1 everywhere.
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[1, 4]).unwrap();
        let (w, b) = (Tensor::full(&[4], 2.0, DType::F64), Tensor::full(&[4], -1.0, DType::F64));
        let y = layer_norm(&x, &[4], Some(&w), Some(&b), 0.0).unwrap().to_vec_f64();
        let s = 1.25f64.sqrt();
        assert_close(&y, &[-3.0 / s - 1.0, -1.0 / s - 1.0, 1.0 / s - 1.0, 3.0 / s - 1.0], 1e-15, 1e-15);
    }

    #[test]
    fn gradcheck_layer_norm() {
        let mut rng = Generator::new(91);
        for (shape, ns) in [(&[5, 4][..], &[4][..]), (&[2, 3, 4], &[3, 4]), (&[3, 2, 5], &[5])] {
            let x = randn64(shape, &mut rng);
            let (w, b) = (randn64(ns, &mut rng), randn64(ns, &mut rng));
            gradcheck(&[x.clone(), w.clone(), b.clone()], |t| layer_norm(&t[0], ns, Some(&t[1]), Some(&t[2]), 1e-5));
            gradcheck(std::slice::from_ref(&x), |t| layer_norm(&t[0], ns, None, None, 1e-5));
            gradcheck(&[x, w], |t| layer_norm(&t[0], ns, Some(&t[1]), None, 1e-5));
        }
        // A non-contiguous input.
        let x = randn64(&[4, 3], &mut rng);
        gradcheck(&[x, randn64(&[4], &mut rng)], |t| layer_norm(&t[0].t()?, &[4], None, Some(&t[1]), 1e-5));
    }

    #[test]
    fn errors_name_shapes() {
        let x = Tensor::zeros(&[2, 3], DType::F32);
        assert_eq!(
            layer_norm(&x, &[4], None, None, 1e-5).unwrap_err().to_string(),
            "layer_norm: input has shape [2, 3], expected [*, 4] (the last 1 dimension(s) equal to normalized_shape [4])"
        );
        assert_eq!(
            layer_norm(&x, &[3], Some(&Tensor::ones(&[2], DType::F32)), None, 1e-5).unwrap_err().to_string(),
            "layer_norm: weight has shape [2], expected [3] (normalized_shape)"
        );
    }

    #[test]
    fn one_and_four_threads_give_identical_bits() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut rng = Generator::new(92);
                let x = Tensor::randn(&[300, 256], 1.0, 2.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let w = Tensor::randn(&[256], 1.0, 0.5, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let y = layer_norm(&x, &[256], Some(&w), None, 1e-5).unwrap();
                y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                [bits(&y), bits(&x.grad().unwrap()), bits(&w.grad().unwrap())]
            })
        };
        assert_eq!(run(1), run(4));
    }
}
