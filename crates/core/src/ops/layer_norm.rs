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

use super::with_float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::{Element, Float};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Rows per parallel task: fixed, so the split never depends on the thread count.
const ROWS_PER_TASK: usize = 64;

/// `f(row index, output row)` over the rows of `out` (rows of `d` values), in parallel chunks.
fn for_each_row<T: Send>(out: &mut [T], d: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let d = d.max(1);
    if super::parallel_pays(out.len()) {
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, chunk)| chunk.chunks_mut(d).enumerate().for_each(|(j, row)| f(c * ROWS_PER_TASK + j, row)));
    } else {
        out.chunks_mut(d).enumerate().for_each(|(i, row)| f(i, row));
    }
}

/// `(μ, 1/√(σ² + eps))` of one row, in f64 (two passes).
fn row_stats<T: Float>(x: &[T], eps: f64) -> (f64, f64) {
    let d = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / d;
    let var = x.iter().map(|v| (v.to_f64() - mean) * (v.to_f64() - mean)).sum::<f64>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Layer normalisation over the trailing dimensions `normalized_shape`, as
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
        // Composed from ops (reductions over the last k dimensions), autograd through them.
        let axes: Vec<isize> = (x.ndim() - k..x.ndim()).map(|a| a as isize).collect();
        let centred = x.sub(&x.mean(&axes, true)?)?;
        let var = centred.mul(&centred)?.mean(&axes, true)?;
        let mut y = centred.div(&var.add_scalar(eps)?.sqrt()?)?;
        if let Some(w) = weight {
            y = y.mul(w)?;
        }
        if let Some(b) = bias {
            y = y.add(b)?;
        }
        return Ok(y);
    }
    let d = ns.numel();
    let numel = x.numel();
    let gamma = weight.map(Tensor::to_vec_f64);
    let beta = bias.map(Tensor::to_vec_f64);
    let xc = x.contiguous()?.detach();
    let sx = xc.cpu_storage("layer_norm")?;
    let xo = xc.layout().offset;
    let rows = numel.checked_div(d).unwrap_or(0);
    let (out, stats) = with_float!(sx, OP, |v: T| {
        let xv = &v[xo..xo + numel];
        let stats: Vec<(f64, f64)> = xv.chunks(d.max(1)).map(|row| row_stats(row, eps)).collect();
        let mut out = vec![T::ZERO; numel];
        for_each_row(&mut out, d, |i, o| {
            let (mean, r) = stats[i];
            for (j, (o, &xv)) in o.iter_mut().zip(&xv[i * d..(i + 1) * d]).enumerate() {
                let xhat = (xv.to_f64() - mean) * r;
                let y = xhat * gamma.as_ref().map_or(1.0, |g| g[j]) + beta.as_ref().map_or(0.0, |b| b[j]);
                *o = T::from_f64(y);
            }
        });
        Ok((T::wrap(out), stats))
    })?;
    debug_assert_eq!(stats.len(), rows);

    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let needs = (x.requires_grad(), weight.is_some_and(Tensor::requires_grad), bias.is_some_and(Tensor::requires_grad));
    let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
    let shape = x.shape().clone();
    Ok(Tensor::from_op(out, shape.clone(), OP, &inputs, move |g| {
        let gc = g.contiguous()?;
        let sg = gc.cpu_storage("layer_norm")?;
        let go = gc.layout().offset;
        let (dx, dgamma, dbeta) = with_float!(sg, "layer_norm backward", |gv: T| {
            let xv = &T::slice(&sx).expect("saved input has the gradient's dtype")[xo..xo + numel];
            let gv = &gv[go..go + numel];
            let xhat = |i: usize, j: usize| (xv[i * d + j].to_f64() - stats[i].0) * stats[i].1;
            let dx = needs.0.then(|| {
                let mut dx = vec![T::ZERO; numel];
                for_each_row(&mut dx, d, |i, out| {
                    let g = &gv[i * d..(i + 1) * d];
                    // ĝ = g·γ; dx = r·(ĝ − mean ĝ − x̂·mean(ĝ·x̂))
                    let gh = |j: usize| g[j].to_f64() * gamma.as_ref().map_or(1.0, |w| w[j]);
                    let (mut s, mut sgx) = (0.0, 0.0);
                    for j in 0..d {
                        s += gh(j);
                        sgx += gh(j) * xhat(i, j);
                    }
                    let (m, mx, r) = (s / d as f64, sgx / d as f64, stats[i].1);
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = T::from_f64(r * (gh(j) - m - xhat(i, j) * mx));
                    }
                });
                T::wrap(dx)
            });
            // dγ = Σ_rows g·x̂, dβ = Σ_rows g, in row order.
            let (mut dg, mut db) = (vec![0.0; d], vec![0.0; d]);
            if needs.1 || needs.2 {
                for i in 0..rows {
                    for j in 0..d {
                        let g = gv[i * d + j].to_f64();
                        dg[j] += g * xhat(i, j);
                        db[j] += g;
                    }
                }
            }
            let wrap = |v: Vec<f64>| T::wrap(v.into_iter().map(T::from_f64).collect());
            Ok((dx, needs.1.then(|| wrap(dg)), needs.2.then(|| wrap(db))))
        })?;
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
