//! Dropout, as `torch.nn.functional.dropout` in training mode: each element is zeroed with
//! probability p and the survivors are scaled by 1/(1 − p), so the expectation is unchanged.
//! Backward: `dx = g·mask/(1 − p)`, the same mask.
//!
//! The mask comes from a counter-based [`Generator`]: element i is kept when the i-th uniform
//! draw of the generator's stream is ≥ p. The draws are addressed by position, so the mask is
//! the same for a seed whatever the number of threads.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernel, `gpu.rs` and its
//! `.wgsl` the GPU one (the `gpu` feature).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use crate::error::Result;
use crate::rng::Generator;
use crate::tensor::Tensor;

/// Zeroes each element of `x` with probability `p` (drawn from `generator`, which advances)
/// and scales the rest by `1/(1 − p)`. `p` must be in `[0, 1)`; `p = 0` returns `x` itself.
///
/// # Shapes
/// - `x`: any shape (float)
/// - output: the shape of `x`
pub fn dropout(x: &Tensor, p: f64, generator: &mut Generator) -> Result<Tensor> {
    const OP: &str = "dropout";
    if !(0.0..1.0).contains(&p) {
        crate::bail_arg!(
            OP,
            "p must be in [0, 1), got {p} (the probability of zeroing an element; input shape {})",
            x.shape()
        );
    }
    if !x.dtype().is_float() {
        return Err(crate::Error::UnsupportedDType { op: OP, dtype: x.dtype(), hint: " (dropout needs f32 or f64)" });
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        // The mask is a constant of the op: y = x·m, dx = g·m, through `mul`.
        let m = gpu::mask(x, p, generator)?;
        return x.mul(&m);
    }
    let (out, mask) = cpu::dropout(x, p, generator)?;
    let mask = Tensor::from_storage(mask, x.shape().clone());
    Ok(Tensor::from_op(out, x.shape().clone(), OP, &[x], move |g| Ok(vec![Some(g.mul(&mask)?)])))
}

#[cfg(test)]
mod tests {
    use super::dropout;
    use crate::testing::{gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn zeroes_about_p_and_scales_the_rest() {
        let x = Tensor::ones(&[100_000], DType::F32);
        let y = dropout(&x, 0.3, &mut Generator::new(5)).unwrap().to_vec::<f32>().unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        assert!((zeros - 0.3).abs() < 0.01, "{zeros}");
        assert!(y.iter().all(|&v| v == 0.0 || v == (1.0 / 0.7f64) as f32));
        // p = 0 is the identity; p ≥ 1 and p < 0 are errors.
        assert!(dropout(&x, 0.0, &mut Generator::new(5)).unwrap().same(&x));
        let e = dropout(&x, 1.0, &mut Generator::new(5)).unwrap_err().to_string();
        assert_eq!(
            e,
            "dropout: p must be in [0, 1), got 1 (the probability of zeroing an element; input shape [100000])"
        );
        assert!(dropout(&x, -0.1, &mut Generator::new(5)).is_err());
    }

    #[test]
    fn gradcheck_dropout() {
        // The same generator state in every evaluation gives the same mask, so the finite
        // differences see a fixed linear map.
        let x = randn64(&[6, 7], &mut Generator::new(3));
        gradcheck(&[x], |t| dropout(&t[0], 0.4, &mut Generator::new(9)));
    }
}
