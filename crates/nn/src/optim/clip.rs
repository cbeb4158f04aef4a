//! Gradient clipping by total norm, as `torch.nn.utils.clip_grad_norm_`.

use crate::Result;
use strata_core::{Device, Tensor};

/// Scales the gradients of `params` together so that their total L2 norm is at most `max_norm`,
/// as `torch.nn.utils.clip_grad_norm_(params, max_norm)`: with `total` the norm of all gradients
/// as one vector, every gradient is multiplied by `max_norm / (total + 1e-6)` when that is less
/// than one. Returns `total` (before clipping). Parameters without a gradient are skipped. The norm is
/// accumulated in f64 (PyTorch accumulates in the gradients' type), so an f32 norm can differ
/// from PyTorch's in its last bits. A non-finite total leaves the gradients unchanged and is
/// returned for the caller to act on (PyTorch's `error_if_nonfinite=False` would scale them by
/// NaN).
///
/// # Errors
/// A `max_norm` that is negative or NaN (it would flip or poison the gradients); `0` zeroes
/// them and infinity leaves them as they are.
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(crate::Error::option("clip_grad_norm_", "max_norm", max_norm, "≥ 0 (infinity: no clipping)"));
    }
    let grads: Vec<Tensor> = params.iter().filter_map(Tensor::grad).filter(|g| g.dtype().is_float()).collect();
    // Each gradient's sum of squares, computed where it lives; then read back together (one
    // synchronisation per device, not one per parameter).
    let mut sum = 0.0f64;
    let mut pending: Option<Tensor> = None;
    for g in &grads {
        let sq = g.mul(g)?.sum_all()?;
        if g.device() == Device::Cpu {
            sum += sq.item()?;
        } else {
            pending = Some(match pending {
                Some(acc) if acc.device() == sq.device() => acc.add(&sq)?,
                Some(acc) => {
                    sum += acc.item()?;
                    sq
                }
                None => sq,
            });
        }
    }
    if let Some(acc) = pending {
        sum += acc.item()?;
    }
    let total = sum.sqrt();
    let coef = max_norm / (total + 1e-6);
    if total.is_finite() && coef < 1.0 {
        for g in &grads {
            g.copy_(&g.mul_scalar(coef)?)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_to_the_total_norm_as_pytorch() {
        // torch: a.grad = [3, 0], b.grad = [0, 4] (total 5); clip_grad_norm_([a, b], 1.0) → 5,
        // and the gradients become [3, 0]·(1/(5 + 1e-6)), [0, 4]·(1/(5 + 1e-6)).
        let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requires_grad_().unwrap();
        let b = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requires_grad_().unwrap();
        a.set_grad(Some(Tensor::from_vec(vec![3.0f64, 0.0], &[2]).unwrap())).unwrap();
        b.set_grad(Some(Tensor::from_vec(vec![0.0f64, 4.0], &[2]).unwrap())).unwrap();
        let c = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_().unwrap(); // no grad
        let total = clip_grad_norm_(&[a.clone(), b.clone(), c], 1.0).unwrap();
        assert_eq!(total, 5.0);
        let k = 1.0 / (5.0 + 1e-6);
        assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), [3.0 * k, 0.0]);
        assert_eq!(b.grad().unwrap().to_vec::<f64>().unwrap(), [0.0, 4.0 * k]);
        // Below the bound: unchanged.
        assert!(clip_grad_norm_(std::slice::from_ref(&a), 10.0).unwrap() < 1.0);
        assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), [3.0 * k, 0.0]);
        // Non-finite: reported, gradients left alone.
        a.set_grad(Some(Tensor::from_vec(vec![f64::NAN, 1.0], &[2]).unwrap())).unwrap();
        assert!(clip_grad_norm_(std::slice::from_ref(&a), 1.0).unwrap().is_nan());
        assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap()[1], 1.0);
    }

    #[test]
    fn a_negative_or_nan_max_norm_is_an_error_and_changes_nothing() {
        let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requires_grad_().unwrap();
        a.set_grad(Some(Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap())).unwrap();
        for bad in [-1.0, f64::NAN, f64::NEG_INFINITY] {
            let e = clip_grad_norm_(std::slice::from_ref(&a), bad).unwrap_err().to_string();
            assert_eq!(e, format!("clip_grad_norm_: max_norm must be ≥ 0 (infinity: no clipping), got {bad}"));
        }
        assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), [3.0, 4.0]);
        // Infinity: no clipping; 0: the gradients become zero (as PyTorch's).
        assert_eq!(clip_grad_norm_(std::slice::from_ref(&a), f64::INFINITY).unwrap(), 5.0);
        assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), [3.0, 4.0]);
        clip_grad_norm_(std::slice::from_ref(&a), 0.0).unwrap();
        assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), [0.0, 0.0]);
    }
}
