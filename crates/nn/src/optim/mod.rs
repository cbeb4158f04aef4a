//! Optimizers with exactly `torch.optim`'s update rules (the single-tensor, `foreach=False`
//! reference implementation), so a run can be reproduced in either framework.
//! Updates write straight into the parameters' buffers; they are not recorded by autograd.

mod adam;
mod clip;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamW};
pub use clip::clip_grad_norm_;
pub use sgd::{SGD, SgdConfig};

use crate::{Error, Result, StateDict};
use strata_core::{CpuStorage, DType, Float, Tensor};

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

/// Checks that a hyper-parameter is finite and within `range`, as torch.optim's constructors do.
pub(crate) fn check_range(what: &'static str, name: &str, value: f64, ok: bool) -> Result<()> {
    if !value.is_finite() || !ok {
        return Err(Error::InvalidConfig { what, message: format!("invalid {name}: {value}") });
    }
    Ok(())
}

/// A zero state buffer with `p`'s element count and type. Optimizer state lives in plain
/// buffers, not tensors: it is never part of a graph, and the update loops borrow it mutably
/// beside the parameter.
pub(crate) fn zeros_like(p: &Tensor) -> CpuStorage {
    match p.dtype() {
        DType::F64 => CpuStorage::F64(vec![0.0; p.numel()]),
        DType::I64 => CpuStorage::I64(vec![0; p.numel()]),
        DType::F32 => CpuStorage::F32(vec![0.0; p.numel()]),
    }
}

/// The typed mutable view of a state buffer (same type as its parameter by construction).
pub(crate) fn state_mut<T: Float>(s: &mut CpuStorage) -> &mut [T] {
    T::slice_mut(s).expect("optimizer state has its parameter's type")
}

/// The error for an integer parameter (parameters must be float to have gradients).
pub(crate) fn non_float(p: &Tensor) -> Error {
    strata_core::Error::UnsupportedDType { op: "optimizer step", dtype: p.dtype(), hint: " (parameters must be float)" }
        .into()
}

/// `T::from_f64` shorthand for hyper-parameters.
#[inline]
pub(crate) fn c<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

/// A state buffer as a tensor shaped like its parameter.
pub(crate) fn buffer_tensor(buf: &CpuStorage, like: &Tensor) -> Tensor {
    let t = match buf {
        CpuStorage::F32(v) => Tensor::from_vec(v.clone(), like.dims()),
        CpuStorage::F64(v) => Tensor::from_vec(v.clone(), like.dims()),
        CpuStorage::I64(v) => Tensor::from_vec(v.clone(), like.dims()),
    };
    t.expect("optimizer state has its parameter's element count")
}

/// A state buffer from a saved tensor, checked against its parameter's shape and type.
pub(crate) fn buffer_from(t: &Tensor, like: &Tensor, key: &str) -> Result<CpuStorage> {
    if t.dims() != like.dims() {
        return Err(Error::InvalidConfig {
            what: "optimizer state",
            message: format!("`{key}` has shape {}, but its parameter has {}", t.shape(), like.shape()),
        });
    }
    let t = t.to_dtype(like.dtype())?;
    Ok(match like.dtype() {
        DType::F32 => CpuStorage::F32(t.to_vec()?),
        DType::F64 => CpuStorage::F64(t.to_vec()?),
        DType::I64 => CpuStorage::I64(t.to_vec()?),
    })
}
