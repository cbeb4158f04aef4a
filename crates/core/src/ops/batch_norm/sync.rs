//! Synchronised batch normalisation (PyTorch's `SyncBatchNorm`): in a data-parallel step the
//! statistics are those of the whole global batch, summed over the processes by the
//! [`crate::Collective`] installed on the thread ([`crate::install_collective`]), rather than each process's micro-batch's. Composed from ops, so it runs on
//! any device and autograd derives the backward; the two sums over the processes are
//! [`all_reduce_sum`]s, whose backward carries the gradient terms of the statistics to every
//! process (`Σg` and `Σg·x̂` of the whole batch, as PyTorch's backward all-reduces them).

use super::{per_channel, update_running_composed};
use crate::error::Result;
use crate::ops::collective::{all_reduce_sum, collective_sum, require};
use crate::tensor::Tensor;

/// Training-mode batch normalisation over dimension 1 with the statistics of the global batch:
/// per channel, `μ = Σx / M` and `σ² = Σ(x − μ)² / M` with the sums and `M` (values per
/// channel) taken over every member of the collective installed on this thread
/// ([`crate::install_collective`]); then as [`crate::batch_norm`] (running
/// statistics updated in place with the global unbiased variance, `γ`, `β`). Every member gets
/// the same statistics and running statistics.
///
/// The gradients follow the data-parallel weighting of [`crate::ops::collective`]: this member's
/// share of the step's loss is its share of the values, `M_k / M`, and the parameters'
/// gradients combined as `Σ_k (M_k/M)·g_k` are those of the global batch's mean loss. With one
/// member it is [`crate::batch_norm`] in training mode (up to rounding).
///
/// Every member must call it for the same layers in the same order (it is a collective); a
/// member with no values makes every member return the same error instead of waiting.
///
/// # Shapes
/// - `x`: `[N, C]` or `[N, C, *]`, `N` this member's micro-batch (may differ between members)
/// - `running_mean`, `running_var`, `weight`, `bias`: `[C]`
/// - output: the shape of `x`
///
/// # Errors
/// A shape or type mismatch, no collective installed, a member with no values, fewer than 2
/// values per channel in the global batch, or the transport failed.
pub fn sync_batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    const OP: &str = "sync_batch_norm";
    let collective = require(OP)?;
    if x.ndim() < 2 {
        crate::bail_arg!(OP, "input has shape {}, expected [N, C] or [N, C, *] (at least 2 dimensions)", x.shape());
    }
    let c = x.dims()[1];
    for (t, what) in [(running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")]
    {
        per_channel(x, t, what, c)?;
    }
    if eps.is_nan() || eps < 0.0 {
        crate::bail_arg!(OP, "eps must be a non-negative number, got {eps}");
    }
    // Values per channel here and in all: [M_k, 1 if this member has none].
    let local = x.numel() / c.max(1);
    let mut counts = [local as f64, f64::from(u8::from(local == 0))];
    collective_sum(collective.as_ref(), &mut counts)?;
    let (m, empty) = (counts[0], counts[1]);
    if empty > 0.0 {
        crate::bail_arg!(
            OP,
            "{empty} of the {} processes had no samples in this batch; synchronised batch norm needs at least one on each (a batch_size of at least the number of processes, and a last batch that is not smaller)",
            collective.size()
        );
    }
    if m <= 1.0 {
        crate::bail_arg!(OP, "expected more than 1 value per channel in the global batch, got {m}");
    }
    let weight_k = local as f64 / m;
    let axes: Vec<isize> = (0..x.ndim() as isize).filter(|&d| d != 1).collect();
    let mut bshape = vec![1; x.ndim()];
    bshape[1] = c;
    // μ = Σx / M over every member; σ² = Σ(x − μ)² / M the same way (two passes, as the
    // fused kernel, rather than E[x²] − μ², which cancels in f32).
    let mean = all_reduce_sum(&x.sum(&axes, false)?, weight_k)?.mul_scalar(1.0 / m)?.reshape(&bshape)?;
    let centred = x.sub(&mean)?;
    let var =
        all_reduce_sum(&centred.mul(&centred)?.sum(&axes, false)?, weight_k)?.mul_scalar(1.0 / m)?.reshape(&bshape)?;
    update_running_composed([running_mean, running_var], &mean, &var, m, momentum)?;
    let mut y = centred.div(&var.add_scalar(eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.mul(&w.reshape(&bshape)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.reshape(&bshape)?)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::sync_batch_norm;
    use crate::ops::collective::tests::Threads;
    use crate::testing::{assert_close, randn64};
    use crate::{DType, Generator, Tensor, batch_norm};

    /// Values, running statistics and gradients of `parts` members synchronising over threads,
    /// each on its slice of the batch, against one batch_norm over the whole batch.
    fn against_whole_batch(dims: &[usize], parts: &[usize], dtype: DType, tol: f64) {
        let mut rng = Generator::new(7);
        let c = dims[1];
        let x = randn64(dims, &mut rng).mul_scalar(3.0).unwrap().add_scalar(1.5).unwrap().to_dtype(dtype).unwrap();
        let w = randn64(&[c], &mut rng).to_dtype(dtype).unwrap();
        let b = randn64(&[c], &mut rng).to_dtype(dtype).unwrap();
        let gy = randn64(dims, &mut rng).to_dtype(dtype).unwrap();
        let n = dims[0] as f64;
        // The whole batch, loss = Σ(y ⊙ gy) / N (a mean loss over the batch).
        let (xw, ww, bw) = (x.clone().requires_grad_().unwrap(), w.clone().requires_grad_().unwrap(), b.clone());
        let bw = bw.requires_grad_().unwrap();
        let (rm, rv) = (Tensor::zeros(&[c], dtype), Tensor::ones(&[c], dtype));
        let y = batch_norm(&xw, Some(&rm), Some(&rv), Some(&ww), Some(&bw), true, 0.1, 1e-5).unwrap();
        y.mul(&gy).unwrap().sum_all().unwrap().mul_scalar(1.0 / n).unwrap().backward().unwrap();
        // The members: loss_k = Σ(y_k ⊙ gy_k) / n_k; gradients combined as Σ (n_k/N)·g_k.
        let starts: Vec<usize> = parts.iter().scan(0, |s, &p| Some(std::mem::replace(s, *s + p))).collect();
        let members = Threads::run(parts.len(), |k| {
            let (start, len) = (starts[k], parts[k]);
            let xk = x.narrow(0, start, len).unwrap().contiguous().unwrap().requires_grad_().unwrap();
            let (wk, bk) = (w.detach().requires_grad_().unwrap(), b.detach().requires_grad_().unwrap());
            let (rm, rv) = (Tensor::zeros(&[c], dtype), Tensor::ones(&[c], dtype));
            let y = sync_batch_norm(&xk, Some(&rm), Some(&rv), Some(&wk), Some(&bk), 0.1, 1e-5).unwrap();
            let gyk = gy.narrow(0, start, len).unwrap();
            y.mul(&gyk).unwrap().sum_all().unwrap().mul_scalar(1.0 / len as f64).unwrap().backward().unwrap();
            let grad = |t: &Tensor| t.grad().unwrap().to_vec_f64();
            (y.to_vec_f64(), grad(&xk), grad(&wk), grad(&bk), rm.to_vec_f64(), rv.to_vec_f64())
        });
        let (mut ys, mut dxs) = (vec![], vec![]);
        let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
        for (k, (y, dx, gw, gb, rmk, rvk)) in members.iter().enumerate() {
            let share = parts[k] as f64 / n;
            ys.extend(y);
            // Member k's x gradient, weighted by its share, is the whole batch's for its slice.
            dxs.extend(dx.iter().map(|v| v * share));
            dw.iter_mut().zip(gw).for_each(|(a, v)| *a += share * v);
            db.iter_mut().zip(gb).for_each(|(a, v)| *a += share * v);
            assert_close(rmk, &rm.to_vec_f64(), tol, tol);
            assert_close(rvk, &rv.to_vec_f64(), tol, tol);
        }
        assert_close(&ys, &y.to_vec_f64(), tol, tol);
        assert_close(&dxs, &xw.grad().unwrap().to_vec_f64(), tol, tol);
        assert_close(&dw, &ww.grad().unwrap().to_vec_f64(), tol, tol);
        assert_close(&db, &bw.grad().unwrap().to_vec_f64(), tol, tol);
    }

    #[test]
    fn members_together_are_the_whole_batch() {
        against_whole_batch(&[6, 3], &[6], DType::F64, 1e-12);
        against_whole_batch(&[6, 3], &[3, 3], DType::F64, 1e-12);
        against_whole_batch(&[7, 2, 5], &[3, 2, 2], DType::F64, 1e-12);
        against_whole_batch(&[5, 4, 2, 3], &[1, 4], DType::F64, 1e-12);
        against_whole_batch(&[8, 3, 4], &[4, 4], DType::F32, 1e-5);
    }

    #[test]
    fn an_empty_member_is_an_error_everywhere() {
        let errors = Threads::run(2, |k| {
            let x = Tensor::zeros(&[2 - 2 * k, 3], DType::F32);
            sync_batch_norm(&x, None, None, None, None, 0.1, 1e-5).unwrap_err().to_string()
        });
        assert_eq!(errors[0], errors[1]);
        assert!(errors[0].contains("1 of the 2 processes had no samples"), "{}", errors[0]);
    }
}
