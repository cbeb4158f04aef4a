//! Batch normalisation on a GPU, composed from ops (reductions, `copy_` for the running
//! statistics), with autograd through them.

use crate::error::Result;
use crate::tensor::Tensor;

/// Batch norm on a GPU, composed from ops: the statistics by reductions over every dimension but
/// the channels, the running statistics updated in place (`copy_`) with the unbiased variance,
/// and the normalisation with its backward from autograd. f32 throughout (the CPU kernel keeps
/// its statistics in f64), so the two agree to f32 rounding.
pub(super) fn batch_norm(
    x: &Tensor,
    [running_mean, running_var, weight, bias]: [Option<&Tensor>; 4],
    training: bool,
    momentum: f64,
    eps: f64,
    relu: bool,
    m: usize,
) -> Result<Tensor> {
    let c = x.dims()[1];
    let axes: Vec<isize> = (0..x.ndim() as isize).filter(|&d| d != 1).collect();
    let mut bshape = vec![1; x.ndim()];
    bshape[1] = c;
    let (mean, var) = match (training, running_mean, running_var) {
        (false, Some(rm), Some(rv)) => (rm.detach().reshape(&bshape)?, rv.detach().reshape(&bshape)?),
        _ => {
            let mean = x.mean(&axes, true)?;
            let centred = x.sub(&mean)?;
            let var = centred.mul(&centred)?.mean(&axes, true)?;
            if training {
                super::update_running_composed([running_mean, running_var], &mean, &var, m as f64, momentum)?;
            }
            (mean, var)
        }
    };
    let mut y = x.sub(&mean)?.div(&var.add_scalar(eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.mul(&w.reshape(&bshape)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.reshape(&bshape)?)?;
    }
    if relu { y.relu() } else { Ok(y) }
}
