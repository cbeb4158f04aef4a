//! A tensor's in-place updates (not recorded by autograd): `update_`, `fill_`, `copy_`, and the
//! gradient sums backpropagation writes into buffers it owns. Copy-on-write throughout: a buffer
//! a view or a saved value still holds is copied (on a GPU, replaced) first.

use super::{Storage, Tensor};
use crate::device::{DType, Device};
use crate::error::{Error, Result};
use crate::ops::elementwise::cpu::add_in_place;
use crate::storage::Element;
use std::sync::Arc;

impl Tensor {
    /// Runs `f` on this tensor's elements in place. The tensor must be contiguous and own its
    /// whole buffer; the buffer is copied first if a view or a saved value shares it, so those
    /// keep the old values. Not recorded by autograd: meant for optimizer steps and initialisation.
    ///
    /// On a GPU the values are read back, changed on the host and written to a fresh buffer:
    /// correct, but a synchronisation; kernels that update on the device are ops of their own.
    pub fn update_<T: Element, R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        if !self.owns_whole_buffer() {
            return Err(Error::NotInPlaceable { op: "update_", shape: self.shape().clone() });
        }
        #[cfg(feature = "gpu")]
        if self.device() != Device::Cpu {
            let host = self.on_host("update_")?;
            let out = host.update_(f)?;
            let Storage::Cpu(s) = host.buffer() else { unreachable!("on_host gives a host buffer") };
            let buf = crate::gpu::GpuBuffer::upload(self.device(), "update_", &s)?;
            self.replace_buffer(Storage::Gpu(Arc::new(buf)));
            return Ok(out);
        }
        let mut guard = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        #[cfg_attr(not(feature = "gpu"), allow(clippy::infallible_destructuring_match))]
        let slot = match &mut *guard {
            Storage::Cpu(slot) => slot,
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => return Err(Error::NoKernel { op: "update_", device: self.device() }),
        };
        let dtype = slot.dtype();
        let data = T::slice_mut(Arc::make_mut(slot)).ok_or(Error::DTypeMismatch {
            op: "update_",
            lhs: dtype,
            rhs: T::DTYPE,
        })?;
        Ok(f(data))
    }

    /// Fills the tensor with `value` in place.
    pub fn fill_(&self, value: f64) -> Result<()> {
        // As PyTorch: an i64 tensor takes a value it can hold once truncated, not NaN (which `as`
        // would make 0) nor one past its range (saturated).
        if self.dtype() == DType::I64 && !(value > -(2f64.powi(63)) - 1.0 && value < 2f64.powi(63)) {
            crate::bail_arg!("fill_", "value {value} cannot be converted to an I64 without overflow");
        }
        #[cfg(feature = "gpu")]
        if self.device() != Device::Cpu {
            if !self.owns_whole_buffer() {
                return Err(Error::NotInPlaceable { op: "fill_", shape: self.shape().clone() });
            }
            self.replace_buffer(Tensor::full_on(self.dims(), value, self.dtype(), self.device())?.buffer());
            return Ok(());
        }
        match self.dtype() {
            DType::F32 => self.update_::<f32, _>(|d| d.fill(value as f32)),
            DType::F64 => self.update_::<f64, _>(|d| d.fill(value)),
            DType::I64 => self.update_::<i64, _>(|d| d.fill(value as i64)),
        }
    }

    /// Copies `src` (same shape and type) into this tensor in place.
    pub fn copy_(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "copy_",
                what: "source",
                got: src.shape().clone(),
                expected: self.shape().to_string(),
            });
        }
        #[cfg(feature = "gpu")]
        if self.device() != Device::Cpu {
            if src.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch { op: "copy_", lhs: self.dtype(), rhs: src.dtype() });
            }
            if !self.owns_whole_buffer() {
                return Err(Error::NotInPlaceable { op: "copy_", shape: self.shape().clone() });
            }
            let src = src.detach().to_device(self.device())?;
            self.replace_buffer(src.gpu_copy()?);
            return Ok(());
        }
        match (self.dtype(), src.dtype()) {
            (DType::F32, DType::F32) => {
                let v = src.to_vec::<f32>()?;
                self.update_::<f32, _>(|d| d.copy_from_slice(&v))
            }
            (DType::F64, DType::F64) => {
                let v = src.to_vec::<f64>()?;
                self.update_::<f64, _>(|d| d.copy_from_slice(&v))
            }
            (DType::I64, DType::I64) => {
                let v = src.to_vec::<i64>()?;
                self.update_::<i64, _>(|d| d.copy_from_slice(&v))
            }
            (a, b) => Err(Error::DTypeMismatch { op: "copy_", lhs: a, rhs: b }),
        }
    }

    /// `self = other` in place (same shape and type), without the temporary `copy_` makes.
    pub(crate) fn assign_(&self, other: &Tensor) -> Result<()> {
        if other.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "assign_",
                what: "gradient",
                got: other.shape().clone(),
                expected: self.shape().to_string(),
            });
        }
        #[cfg(feature = "gpu")]
        if self.device() != Device::Cpu {
            self.check_same("assign_", other)?;
            self.replace_buffer(other.owned_detached()?.buffer());
            return Ok(());
        }
        match (self.dtype(), other.dtype()) {
            (DType::F32, DType::F32) => {
                other.with_slice::<f32, _>(|o| self.update_::<f32, _>(|d| d.copy_from_slice(o)))??
            }
            (DType::F64, DType::F64) => {
                other.with_slice::<f64, _>(|o| self.update_::<f64, _>(|d| d.copy_from_slice(o)))??
            }
            (a, b) => return Err(Error::DTypeMismatch { op: "assign_", lhs: a, rhs: b }),
        }
        Ok(())
    }

    /// `self + other` for backpropagation's gradient sums: added in place when this handle is
    /// the tensor's only one and its buffer is its own, whole and contiguous (a gradient fresh
    /// from a backward function), else into a new tensor. In place saves a buffer and its
    /// write-allocate traffic per sum (a residual block's input gradient is one).
    pub(crate) fn accumulate(self, other: &Tensor) -> Result<Tensor> {
        let own = self.device() == Device::Cpu
            && Arc::strong_count(&self.0) == 1
            && self.shape() == other.shape()
            && self.dtype() == other.dtype()
            && self.owns_whole_buffer()
            && self.0.storage.read().unwrap_or_else(|e| e.into_inner()).handles() == 1;
        if !own {
            return self.add(other);
        }
        match self.dtype() {
            DType::F32 => other.with_slice::<f32, _>(|o| self.update_::<f32, _>(|d| add_in_place(d, o)))??,
            DType::F64 => other.with_slice::<f64, _>(|o| self.update_::<f64, _>(|d| add_in_place(d, o)))??,
            DType::I64 => return self.add(other),
        }
        Ok(self)
    }

    /// `self += other` in place (same shape and type); copies first if the buffer is shared.
    pub(crate) fn add_assign_(&self, other: &Tensor) -> Result<()> {
        if other.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "add_assign_",
                what: "gradient",
                got: other.shape().clone(),
                expected: self.shape().to_string(),
            });
        }
        #[cfg(feature = "gpu")]
        if self.device() != Device::Cpu {
            self.replace_buffer(self.detach().add(other)?.buffer());
            return Ok(());
        }
        match (self.dtype(), other.dtype()) {
            (DType::F32, DType::F32) => other.with_slice::<f32, _>(|o| {
                self.update_::<f32, _>(|d| d.iter_mut().zip(o).for_each(|(a, b)| *a += b))
            })??,
            (DType::F64, DType::F64) => other.with_slice::<f64, _>(|o| {
                self.update_::<f64, _>(|d| d.iter_mut().zip(o).for_each(|(a, b)| *a += b))
            })??,
            (a, b) => return Err(Error::DTypeMismatch { op: "add_assign_", lhs: a, rhs: b }),
        }
        Ok(())
    }
}
