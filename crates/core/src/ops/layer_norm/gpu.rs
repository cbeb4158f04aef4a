//! Layer normalisation on a GPU, composed from ops (reductions over the normalised dimensions),
//! with autograd through them.

use crate::error::Result;
use crate::tensor::Tensor;

/// Layer norm over the last `k` dimensions of `x`, composed from ops.
pub(super) fn layer_norm(
    x: &Tensor,
    k: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
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
    Ok(y)
}
