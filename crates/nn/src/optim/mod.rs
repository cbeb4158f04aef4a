//! Optimizers with exactly `torch.optim`'s update rules (the single-tensor, `foreach=False`
//! reference implementation), so a run can be reproduced in either framework.
//! Updates write straight into the parameters' buffers; they are not recorded by autograd.
//! SGD and Adam/AdamW run as fused engine ops (`sgd_step_`, `adam_step_`); RMSprop and Adagrad
//! are composed from elementwise tensor ops, in PyTorch's order, on the parameters' device.

mod adagrad;
mod adam;
mod clip;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW};
pub use clip::clip_grad_norm_;
pub use rmsprop::{RMSprop, RMSpropConfig};
pub use sgd::{SGD, SgdConfig};

use crate::{Error, Result, StateDict};
use strata_core::{DType, Tensor};

/// What every optimizer offers a training loop.
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;

    /// The parameters being optimised.
    fn params(&self) -> &[Tensor];

    /// The current learning rate.
    fn lr(&self) -> f64;

    /// Changes the learning rate (schedules call this between steps).
    ///
    /// # Errors
    /// A learning rate the constructor would refuse (NaN, infinite or negative), with the same
    /// message; the learning rate is then left as it was.
    fn set_lr(&mut self, lr: f64) -> Result<()>;

    /// The optimizer's state (momentum buffers, moment estimates, step counts) as named tensors
    /// `{kind}.{parameter index}`, for checkpoints. Hyper-parameters are not included.
    fn state_dict(&self) -> StateDict;

    /// Restores state saved by [`Optimizer::state_dict`] for the same parameter list; shapes
    /// are checked, and nothing changes unless everything fits.
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>;

    /// Zeroes every parameter's gradient in place.
    fn zero_grad(&self) -> Result<()> {
        for p in self.params() {
            p.zero_grad()?;
        }
        Ok(())
    }
}

/// Checks that a hyper-parameter is finite and `ok`, as torch.optim's constructors do;
/// `expected` says what it must be.
pub(crate) fn check_range(owner: &'static str, key: &'static str, value: f64, ok: bool, expected: &str) -> Result<()> {
    if !value.is_finite() || !ok {
        return Err(Error::InvalidOption { owner, key, value: value.to_string(), expected: expected.into() });
    }
    Ok(())
}

/// Checks that no parameter is given twice (the same tensor, by identity: a clone of a handle
/// is the same tensor): an optimizer would update a repeated one twice per step, and PyTorch
/// refuses a parameter that appears in two groups.
pub(crate) fn check_distinct(owner: &'static str, params: &[Tensor]) -> Result<()> {
    let mut seen = std::collections::HashMap::with_capacity(params.len());
    for (j, p) in params.iter().enumerate() {
        if let Some(i) = seen.insert(p.id(), j) {
            return Err(Error::InvalidOption {
                owner,
                key: "params",
                value: format!("parameter {j}, the same tensor as parameter {i}"),
                expected: "distinct tensors, each given once (a repeated one would be updated twice per step); \
                           pass model.parameters() once, or remove the repeat"
                    .into(),
            });
        }
    }
    Ok(())
}

/// A zero state tensor shaped like `p`, on its device and of its type. Optimizer state is
/// never part of a graph; the update ops write it in place.
pub(crate) fn zeros_like(p: &Tensor) -> Result<Tensor> {
    Ok(p.zeros_like()?)
}

/// A state tensor as a state_dict entry: a snapshot (the next step writes a copy, not it).
pub(crate) fn snapshot(state: &Tensor) -> Tensor {
    state.detach()
}

/// A state tensor from a saved one, checked against its parameter's shape, and converted to its
/// type and device.
pub(crate) fn state_from(t: &Tensor, like: &Tensor, key: &str) -> Result<Tensor> {
    if t.dims() != like.dims() {
        return Err(Error::InvalidState {
            owner: "optimizer",
            key: key.into(),
            reason: format!("has shape {}, but its parameter has {}", t.shape(), like.shape()),
        });
    }
    Ok(t.detach().to_dtype(like.dtype())?.to_device(like.device())?.detach_owned()?)
}

/// A saved step count (`step.{i}`): a whole number ≥ 0, else an error naming `key` (a cast
/// would turn -3 or NaN into step 0 and restart the bias correction silently).
pub(crate) fn state_step(owner: &'static str, key: &str, t: &Tensor) -> Result<u64> {
    let v = t.item()?;
    // 2^53: the last whole number an f64 holds exactly.
    if !(v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0) {
        return Err(Error::InvalidState {
            owner,
            key: key.into(),
            reason: format!(
                "is {v}, but a step count is a whole number ≥ 0; the file is damaged or was not saved by this optimizer"
            ),
        });
    }
    Ok(v as u64)
}

/// Checks a saved running average of squared gradients (`exp_avg_sq.{i}`, `sum.{i}`, …): no
/// value negative or NaN (its square root would poison every later update), else an error
/// naming `key` and the first bad value.
pub(crate) fn check_squares(owner: &'static str, key: &str, t: &Tensor) -> Result<()> {
    if let Some((at, v)) = t.to_vec_f64().into_iter().enumerate().find(|(_, v)| v.is_nan() || *v < 0.0) {
        return Err(Error::InvalidState {
            owner,
            key: key.into(),
            reason: format!(
                "holds {v} (element {at}), but it accumulates squared gradients, which are never negative or NaN; \
                 the file is damaged or was not saved by this optimizer"
            ),
        });
    }
    Ok(())
}

/// `value` as the tensor type `dtype` holds it: a hyper-parameter PyTorch casts to the tensor's
/// type before computing with it (rounded to f32 for f32 tensors).
pub(crate) fn in_dtype(value: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f64::from(value as f32),
        _ => value,
    }
}

/// A state entry's key `{kind}.{parameter index}` split, with the index below `params`.
pub(crate) fn parse_key(key: &str, params: usize) -> Option<(&str, usize)> {
    let (kind, i) = key.rsplit_once('.')?;
    let i = i.parse::<usize>().ok().filter(|&i| i < params)?;
    Some((kind, i))
}

/// The error for a state entry `owner` does not have.
pub(crate) fn unknown_entry(owner: &'static str, key: &str) -> Error {
    Error::InvalidState { owner, key: key.to_string(), reason: format!("not an {owner} state entry") }
}
