//! Helpers for tests of ops and modules, here and in the other crates: a finite-difference
//! gradient check in f64 and a closeness assertion that reports the worst element.

use crate::autograd::no_grad;
use crate::device::DType;
use crate::error::Result;
use crate::rng::Generator;
use crate::tensor::Tensor;

/// A standard-normal f64 tensor.
pub fn randn64(shape: &[usize], rng: &mut Generator) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, rng).expect("f64 randn")
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` elementwise, naming the worst element when it fails.
#[track_caller]
pub fn assert_close(actual: &[f64], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if (excess > 0.0 || a.is_nan() != b.is_nan()) && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!("element {i}: got {}, expected {} (rtol {rtol}, atol {atol})", actual[i], expected[i]);
    }
}

/// Checks the analytic gradients of `f` at `inputs` (f64 tensors) against central finite
/// differences of L = Σ f(x)·w, with fixed random weights w so that errors cannot cancel.
#[track_caller]
pub fn gradcheck(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    const EPS: f64 = 1e-6;
    let leaves: Vec<Tensor> =
        inputs.iter().map(|t| t.detach().contiguous().unwrap().detach().requires_grad_().unwrap()).collect();
    let out = f(&leaves).expect("forward");
    let w = randn64(out.dims(), &mut Generator::new(0xC0FFEE));
    out.mul(&w).unwrap().sum_all().unwrap().backward().expect("backward");
    let loss_at = |xs: &[Tensor]| no_grad(|| f(xs).unwrap().mul(&w).unwrap().sum_all().unwrap().item().unwrap());
    for (which, leaf) in leaves.iter().enumerate() {
        let base = leaf.to_vec::<f64>().unwrap();
        let analytic = leaf.grad().map(|g| g.to_vec_f64()).unwrap_or_else(|| vec![0.0; base.len()]);
        let mut numeric = vec![0.0; base.len()];
        for i in 0..base.len() {
            let probe = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut xs: Vec<Tensor> = leaves.iter().map(Tensor::detach).collect();
                xs[which] = Tensor::from_vec(v, leaf.dims()).unwrap();
                loss_at(&xs)
            };
            numeric[i] = (probe(EPS) - probe(-EPS)) / (2.0 * EPS);
        }
        let result = std::panic::catch_unwind(|| assert_close(&analytic, &numeric, 1e-5, 1e-6));
        if result.is_err() {
            panic!(
                "gradcheck failed for input {which} of shape {}:\nanalytic {analytic:?}\nnumeric  {numeric:?}",
                leaf.shape()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "gradcheck failed for input 0")]
    fn gradcheck_catches_a_wrong_gradient() {
        // x · detach(x): the analytic gradient misses the detached factor's contribution.
        let x = randn64(&[4], &mut Generator::new(1));
        gradcheck(&[x], |t| t[0].mul(&t[0].detach()));
    }
}
