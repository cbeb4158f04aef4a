//! Fused batch normalisation, as `torch.nn.functional.batch_norm`, for `[N, C]` and `[N, C, *]`
//! inputs (`BatchNorm1d` and `BatchNorm2d`): statistics, normalisation, affine transform and
//! the running-statistics update in one op, with a one-pass backward.
//!
//! Per channel c, over the `M = N·(spatial size)` values x of that channel:
//! - training: `μ = Σx/M`, `σ² = Σ(x − μ)²/M` (biased, used to normalise); the running stats
//!   become `(1 − momentum)·running + momentum·batch`, with the *unbiased* `σ²·M/(M − 1)` for
//!   the variance, as PyTorch;
//! - evaluation: μ and σ² are the running statistics;
//! - `y = (x − μ)/√(σ² + eps)·γ + β` (`x̂ = (x − μ)/√(σ² + eps)`).
//!
//! Backward (training), with g = dL/dy: `dβ = Σg`, `dγ = Σg·x̂`,
//! `dx = γ/√(σ² + eps) · (g − Σg/M − x̂·Σg·x̂/M)`; in evaluation μ and σ² are constants, so
//! `dx = γ/√(σ² + eps) · g`. Statistics are accumulated in f64 in a fixed order per channel
//! (one task per channel), so results do not depend on the thread count.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` the GPU
//! path (the `gpu` feature), `sync.rs` the data-parallel variant whose statistics are the
//! global batch's ([`sync_batch_norm`]).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;
mod sync;

pub use sync::sync_batch_norm;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use cpu::Dims;

/// A per-channel tensor (`running_mean`, `weight`, …) checked against `C` and `x`'s type.
fn per_channel(x: &Tensor, t: Option<&Tensor>, what: &'static str, c: usize) -> Result<Option<Vec<f64>>> {
    let Some(t) = t else { return Ok(None) };
    x.check_same("batch_norm", t)?;
    if t.dims() != [c] {
        return Err(Error::ShapeMismatch {
            op: "batch_norm",
            what,
            got: t.shape().clone(),
            expected: format!("[{c}] (one value per channel; the input {} has {c} channels in dimension 1)", x.shape()),
        });
    }
    Ok(Some(t.to_vec_f64()))
}

/// The running statistics' in-place update on a composed path (the GPU's, the synchronised
/// one): `running = (1 − momentum)·running + momentum·batch`, the variance unbiased with `m`
/// values per channel; `mean` and `var` (biased) hold one value per channel in any shape.
fn update_running_composed(
    [running_mean, running_var]: [Option<&Tensor>; 2],
    mean: &Tensor,
    var: &Tensor,
    m: f64,
    momentum: f64,
) -> Result<()> {
    let _guard = crate::autograd::NoGradGuard::new();
    let c = [mean.numel()];
    if let Some(rm) = running_mean {
        rm.copy_(&rm.mul_scalar(1.0 - momentum)?.add(&mean.detach().reshape(&c)?.mul_scalar(momentum)?)?)?;
    }
    if let Some(rv) = running_var {
        let unbiased = var.detach().reshape(&c)?.mul_scalar(m / (m - 1.0))?;
        rv.copy_(&rv.mul_scalar(1.0 - momentum)?.add(&unbiased.mul_scalar(momentum)?)?)?;
    }
    Ok(())
}

/// Batch normalisation over dimension 1, as `torch.nn.functional.batch_norm`.
///
/// In training mode the batch's own statistics normalise `x`, and `running_mean` /
/// `running_var`, when given, are updated in place with `momentum` (PyTorch's default is 0.1;
/// the variance update uses the unbiased estimate). In evaluation mode the running statistics
/// normalise `x` and must be given. `weight` (γ) and `bias` (β) are optional (no affine
/// transform without them). Gradients flow to `x`, `weight` and `bias`, never to the running
/// statistics.
///
/// # Shapes
/// - `x`: `[N, C]` or `[N, C, *]` (e.g. `[N, C, L]`, `[N, C, H, W]`)
/// - `running_mean`, `running_var`, `weight`, `bias`: `[C]`
/// - output: the shape of `x`
#[allow(clippy::too_many_arguments)] // mirrors torch.nn.functional.batch_norm's signature
pub fn batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    batch_norm_impl(x, [running_mean, running_var, weight, bias], training, momentum, eps, false)
}

/// `relu(batch_norm(…))` as one op: the same values and gradients as [`batch_norm`] followed
/// by [`Tensor::relu`], without the ReLU's two passes over the activations (forward and
/// backward) and without keeping the pre-activation alive. Backward recomputes the ReLU's
/// mask from the saved input.
///
/// # Shapes
/// - `x`: `[N, C]` or `[N, C, *]`
/// - `running_mean`, `running_var`, `weight`, `bias`: `[C]`
/// - output: the shape of `x`
#[allow(clippy::too_many_arguments)] // mirrors batch_norm
pub fn batch_norm_relu(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    batch_norm_impl(x, [running_mean, running_var, weight, bias], training, momentum, eps, true)
}

/// [`batch_norm`], followed by a ReLU when `relu`. `params`: running mean, running variance,
/// weight, bias.
fn batch_norm_impl(
    x: &Tensor,
    params: [Option<&Tensor>; 4],
    training: bool,
    momentum: f64,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let [running_mean, running_var, weight, bias] = params;
    const OP: &str = "batch_norm";
    if x.ndim() < 2 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: "[N, C] or [N, C, *] (at least 2 dimensions; the channels are dimension 1)".into(),
        });
    }
    let d = x.dims();
    let dims = Dims { n: d[0], c: d[1], s: d[2..].iter().product() };
    let c = dims.c;
    let rm = per_channel(x, running_mean, "running_mean", c)?;
    let rv = per_channel(x, running_var, "running_var", c)?;
    let gamma = per_channel(x, weight, "weight", c)?;
    let beta = per_channel(x, bias, "bias", c)?;
    if eps.is_nan() || eps < 0.0 {
        crate::bail_arg!(OP, "eps must be a non-negative number, got {eps}");
    }
    if !momentum.is_finite() {
        crate::bail_arg!(OP, "momentum must be a finite number (PyTorch's default is 0.1), got {momentum}");
    }
    if let (Some(m), Some(v)) = (running_mean, running_var)
        && m.same(v)
    {
        crate::bail_arg!(OP, "running_mean and running_var are the same tensor; give each its own buffer");
    }
    if training && dims.m() <= 1 {
        crate::bail_arg!(
            OP,
            "expected more than 1 value per channel when training, got input of shape {} \
             (the statistics of one value are undefined; use a batch of at least 2, or eval mode)",
            x.shape()
        );
    }
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::batch_norm(x, params, training, momentum, eps, relu, dims.m());
    }
    let xc = x.contiguous()?.detach();

    // y = x·α + β' with α = γ/√(σ² + eps), β' = β − μ·α: one multiply-add per element.
    let affine = |ci: usize, mean: f64, var: f64| {
        let a = 1.0 / (var + eps).sqrt() * gamma.as_ref().map_or(1.0, |g| g[ci]);
        (a, beta.as_ref().map_or(0.0, |b| b[ci]) - mean * a)
    };
    // Training: each channel's task computes its statistics and then normalises it while its
    // values (N·S, at most a few hundred KB in a ResNet) are still in L2, rather than a second
    // sweep over the whole batch from memory. Evaluation: the running statistics, and the
    // normalisation below, sample by sample.
    let mut normalised = None;
    let (mean, var) = if training {
        let (out, stats) = cpu::train_forward(&xc, dims, relu, affine)?;
        normalised = Some(out);
        stats.into_iter().unzip()
    } else {
        match (rm, rv) {
            (Some(m), Some(v)) => (m, v),
            _ => crate::bail_arg!(
                OP,
                "evaluation mode (training = false) normalises with the running statistics, so running_mean \
                 and running_var must be given; pass training = true to use the batch's statistics"
            ),
        }
    };
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();

    if training {
        // running = (1 − momentum)·running + momentum·batch, the variance unbiased; computed in f64.
        let unbiased = dims.m() as f64 / (dims.m() - 1) as f64;
        if let Some(t) = running_mean {
            cpu::update_running(t, momentum, &|i| mean[i])?;
        }
        if let Some(t) = running_var {
            cpu::update_running(t, momentum, &|i| var[i] * unbiased)?;
        }
    }

    let (alpha, shift): (Vec<f64>, Vec<f64>) = (0..c).map(|i| affine(i, mean[i], var[i])).unzip();
    let out = match normalised {
        Some(out) => out,
        None => cpu::eval_forward(&xc, dims, relu, &alpha, &shift)?,
    };

    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let needs = (x.requires_grad(), weight.is_some_and(Tensor::requires_grad), bias.is_some_and(Tensor::requires_grad));
    let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
    let shape = x.shape().clone();
    let name = if relu { "batch_norm_relu" } else { OP };
    let stats = cpu::Stats { mean, invstd, alpha, shift };
    Ok(Tensor::from_op(out, shape.clone(), name, &inputs, move |g| {
        let (dx, dgamma, dbeta) = cpu::backward(g, &xc, dims, &stats, needs, training, relu)?;
        let per_c = || crate::shape::Shape(vec![c]);
        let mut out = vec![dx.map(|s| Tensor::from_storage(s, shape.clone()))];
        if has_weight {
            out.push(dgamma.map(|s| Tensor::from_storage(s, per_c())));
        }
        if has_bias {
            out.push(dbeta.map(|s| Tensor::from_storage(s, per_c())));
        }
        Ok(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::{batch_norm, batch_norm_relu};
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn normalises_by_hand() {
        // One channel holding 1, 2, 3, 4: μ = 2.5, σ² = 1.25 (biased), unbiased 5/3.
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4, 1]).unwrap();
        let rm = Tensor::zeros(&[1], DType::F64);
        let rv = Tensor::ones(&[1], DType::F64);
        let y = batch_norm(&x, Some(&rm), Some(&rv), None, None, true, 0.1, 0.0).unwrap().to_vec::<f64>().unwrap();
        let s = 1.25f64.sqrt();
        assert_close(&y, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s], 1e-15, 1e-15);
        assert_close(&rm.to_vec_f64(), &[0.25], 1e-15, 0.0);
        assert_close(&rv.to_vec_f64(), &[0.9 + 0.1 * 5.0 / 3.0], 1e-15, 0.0);
        // Evaluation uses the running statistics: (x − 0.25)/√(rv + eps)·γ + β.
        let (w, b) = (Tensor::scalar(2.0f64).reshape(&[1]).unwrap(), Tensor::scalar(-1.0f64).reshape(&[1]).unwrap());
        let y = batch_norm(&x, Some(&rm), Some(&rv), Some(&w), Some(&b), false, 0.1, 1e-5).unwrap();
        let rvv = rv.to_vec_f64()[0];
        let expected: Vec<f64> =
            [1.0, 2.0, 3.0, 4.0].iter().map(|v| (v - 0.25) / (rvv + 1e-5).sqrt() * 2.0 - 1.0).collect();
        assert_close(&y.to_vec_f64(), &expected, 1e-15, 1e-15);
        // Evaluation leaves the running statistics alone.
        assert_close(&rm.to_vec_f64(), &[0.25], 1e-15, 0.0);
    }

    #[test]
    fn gradcheck_batch_norm() {
        let mut rng = Generator::new(81);
        let c = 3;
        let (w, b) = (randn64(&[c], &mut rng), randn64(&[c], &mut rng));
        for shape in [&[5, 3][..], &[4, 3, 5], &[2, 3, 3, 4]] {
            let x = randn64(shape, &mut rng);
            // Training, affine; and without weight and bias.
            gradcheck(&[x.clone(), w.clone(), b.clone()], |t| {
                batch_norm(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5)
            });
            gradcheck(std::slice::from_ref(&x), |t| batch_norm(&t[0], None, None, None, None, true, 0.1, 1e-5));
            // Evaluation with running statistics.
            let rm = randn64(&[c], &mut rng);
            let rv = randn64(&[c], &mut rng).to_vec_f64().iter().map(|v| v.abs() + 0.1).collect();
            let rv = Tensor::from_vec::<f64>(rv, &[c]).unwrap();
            gradcheck(&[x.clone(), w.clone(), b.clone()], |t| {
                batch_norm(&t[0], Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), false, 0.1, 1e-5)
            });
        }
        // Weight only, on a non-contiguous input.
        let x = randn64(&[4, 2, 3], &mut rng);
        gradcheck(&[x, w], |t| batch_norm(&t[0].transpose(1, 2)?, None, None, Some(&t[1]), None, true, 0.1, 1e-5));
        let xt = randn64(&[3, 4], &mut rng);
        gradcheck(&[xt, b], |t| batch_norm(&t[0].t()?, None, None, None, Some(&t[1]), true, 0.1, 1e-5));
    }

    #[test]
    fn batch_norm_relu_is_batch_norm_then_relu() {
        let mut rng = Generator::new(82);
        let c = 3;
        let (w, b) = (randn64(&[c], &mut rng), randn64(&[c], &mut rng));
        let rm = randn64(&[c], &mut rng);
        let rv: Vec<f64> = randn64(&[c], &mut rng).to_vec_f64().iter().map(|v| v.abs() + 0.1).collect();
        let rv = Tensor::from_vec::<f64>(rv, &[c]).unwrap();
        for training in [true, false] {
            for dtype in [DType::F64, DType::F32] {
                let x = randn64(&[4, c, 5], &mut rng).to_dtype(dtype).unwrap().requires_grad_().unwrap();
                let x2 = x.detach().requires_grad_().unwrap();
                let (wt, bt) = (w.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
                let (rmt, rvt) = (rm.to_dtype(dtype).unwrap(), rv.to_dtype(dtype).unwrap());
                let args = |x: &Tensor| (x.clone(), Some(rmt.clone()), Some(rvt.clone()));
                let (xa, rma, rva) = args(&x);
                let fused = batch_norm_relu(&xa, rma.as_ref(), rva.as_ref(), Some(&wt), Some(&bt), training, 0.1, 1e-5)
                    .unwrap();
                let (xb, rmb, rvb) = args(&x2);
                let plain = batch_norm(&xb, rmb.as_ref(), rvb.as_ref(), Some(&wt), Some(&bt), training, 0.1, 1e-5)
                    .unwrap()
                    .relu()
                    .unwrap();
                // Bit-identical values and gradients.
                assert_eq!(fused.to_vec_f64(), plain.to_vec_f64());
                assert!(fused.to_vec_f64().contains(&0.0), "some values are clipped");
                let gy = randn64(fused.dims(), &mut rng).to_dtype(dtype).unwrap();
                fused.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap();
                plain.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap();
                assert_eq!(x.grad().unwrap().to_vec_f64(), x2.grad().unwrap().to_vec_f64());
            }
        }
        let x = randn64(&[5, c, 2], &mut rng);
        gradcheck(&[x, w, b], |t| batch_norm_relu(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5));
    }

    #[test]
    fn f32_running_stats_and_errors() {
        let x = Tensor::from_vec(vec![1.0f32, 10.0, 3.0, 20.0], &[2, 2]).unwrap();
        let (rm, rv) = (Tensor::zeros(&[2], DType::F32), Tensor::ones(&[2], DType::F32));
        batch_norm(&x, Some(&rm), Some(&rv), None, None, true, 0.5, 1e-5).unwrap();
        // Channel 0: μ = 2, unbiased σ² = 2; channel 1: μ = 15, unbiased σ² = 50.
        assert_eq!(rm.to_vec::<f32>().unwrap(), [1.0, 7.5]);
        assert_eq!(rv.to_vec::<f32>().unwrap(), [1.5, 25.5]);
        let msg = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        assert_eq!(
            msg(batch_norm(&Tensor::zeros(&[4], DType::F32), None, None, None, None, true, 0.1, 1e-5)),
            "batch_norm: input has shape [4], expected [N, C] or [N, C, *] (at least 2 dimensions; the channels are dimension 1)"
        );
        assert_eq!(
            msg(batch_norm(&x, Some(&Tensor::zeros(&[3], DType::F32)), Some(&rv), None, None, true, 0.1, 1e-5)),
            "batch_norm: running_mean has shape [3], expected [2] (one value per channel; the input [2, 2] has 2 channels in dimension 1)"
        );
        assert_eq!(
            msg(batch_norm(&Tensor::zeros(&[1, 2], DType::F32), None, None, None, None, true, 0.1, 1e-5)),
            "batch_norm: expected more than 1 value per channel when training, got input of shape [1, 2] \
             (the statistics of one value are undefined; use a batch of at least 2, or eval mode)"
        );
        assert!(
            msg(batch_norm(&x, None, None, None, None, false, 0.1, 1e-5))
                .contains("running_mean and running_var must be given")
        );
        assert!(
            msg(batch_norm(&x, Some(&rm.to_dtype(DType::F64).unwrap()), None, None, None, true, 0.1, 1e-5))
                .contains("differ")
        );
    }

    #[test]
    fn one_and_four_threads_give_identical_bits() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut rng = Generator::new(82);
                // 4·37·16·32·32 = 2.4M: above the threading threshold.
                const { assert!(4 * 37 * 16 * 32 * 32 >= crate::ops::tasks::PAR_WORK) };
                let x =
                    Tensor::randn(&[37, 16, 32, 32], 1.0, 2.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let w = Tensor::randn(&[16], 1.0, 0.5, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let b = Tensor::randn(&[16], 0.0, 0.5, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let (rm, rv) = (Tensor::zeros(&[16], DType::F32), Tensor::ones(&[16], DType::F32));
                let y = batch_norm(&x, Some(&rm), Some(&rv), Some(&w), Some(&b), true, 0.1, 1e-5).unwrap();
                y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                [
                    bits(&y),
                    bits(&x.grad().unwrap()),
                    bits(&w.grad().unwrap()),
                    bits(&b.grad().unwrap()),
                    bits(&rm),
                    bits(&rv),
                ]
            })
        };
        assert_eq!(run(1), run(4));
    }
}
