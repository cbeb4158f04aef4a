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
    fn set_lr(&mut self, lr: f64);

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
