//! A tensor's part in differentiation: leaves that require grad, the gradient a leaf
//! accumulates (its `GradSlot`, with `zero_grad`'s deferred zeros), and the owned, detached
//! copies every stored gradient is made of. Recording ops and running backward is `autograd`'s.

use super::{GradSlot, NEXT_TENSOR, Tensor, TensorImpl, encode};
use crate::device::DType;
#[cfg(feature = "gpu")]
use crate::device::Device;
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Element};
use crate::tensor::graph::Node;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

impl Tensor {
    /// A leaf tensor sharing this one's data that records gradients (PyTorch's
    /// `requires_grad_()`): parameters are made this way. Float types only.
    pub fn requires_grad_(self) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "requires_grad_",
                dtype: self.dtype(),
                hint: " (only float tensors have gradients)",
            });
        }
        // A view of part of a buffer is copied into one of its own: a parameter is updated in
        // place by optimizers, and `update_` needs the whole buffer.
        let owned = self.owned_detached()?;
        Ok(Tensor(Arc::new(TensorImpl {
            id: NEXT_TENSOR.fetch_add(1, Ordering::Relaxed),
            storage: RwLock::new(owned.buffer()),
            layout: owned.0.layout.clone(),
            device: AtomicUsize::new(encode(self.device())),
            dtype: self.0.dtype,
            requires_grad: true,
            grad_fn: None,
            grad: Mutex::new(GradSlot::default()),
        })))
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad || self.0.grad_fn.is_some()
    }

    /// Whether this is a leaf (not the result of a recorded op).
    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }

    pub(crate) fn is_leaf_requiring_grad(&self) -> bool {
        self.0.requires_grad && self.0.grad_fn.is_none()
    }

    pub(crate) fn grad_fn(&self) -> Option<&Arc<Node>> {
        self.0.grad_fn.as_ref()
    }

    /// The name of the op that produced this tensor, if it was recorded.
    pub fn grad_fn_name(&self) -> Option<&'static str> {
        self.0.grad_fn.as_ref().map(|n| n.name())
    }

    /// The same data, cut from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(self.buffer(), self.0.layout.clone(), None)
    }

    /// The accumulated gradient of a leaf, after `backward()`.
    pub fn grad(&self) -> Option<Tensor> {
        let mut slot = self.grad_slot();
        if slot.zeroed
            && let Some(g) = &slot.grad
        {
            // Materialise the zeros `zero_grad` deferred. An error here means someone replaced
            // the gradient with a view; `set_grad` clears `zeroed`, so it cannot happen.
            let _ = g.fill_(0.0);
        }
        slot.zeroed = false;
        slot.grad.clone()
    }

    pub(super) fn grad_slot(&self) -> std::sync::MutexGuard<'_, GradSlot> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces (or clears) the accumulated gradient. A view is copied into a buffer of its own
    /// (later backwards add into the gradient in place; the viewed tensor is never touched).
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        if let Some(g) = &grad {
            if g.shape() != self.shape() {
                return Err(Error::ShapeMismatch {
                    op: "set_grad",
                    what: "gradient",
                    got: g.shape().clone(),
                    expected: self.shape().to_string(),
                });
            }
            // Later backwards add into it: it must be of the tensor's type and on its device.
            if g.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch { op: "set_grad", lhs: self.dtype(), rhs: g.dtype() });
            }
            if g.device() != self.device() {
                return Err(Error::DeviceMismatch { op: "set_grad", lhs: self.device(), rhs: g.device() });
            }
        }
        let grad = grad.map(|g| g.owned_detached()).transpose()?;
        *self.grad_slot() = GradSlot { grad, zeroed: false };
        Ok(())
    }

    /// Sets the gradient to zero, keeping its buffer for the next backward (so a training loop
    /// does not reallocate gradients every step). The zeros are written lazily: the next
    /// backward overwrites the buffer rather than adding to it, and [`Tensor::grad`] fills it
    /// with zeros if it is read first. A gradient tensor obtained before `zero_grad` and kept
    /// keeps its old values until then (as with PyTorch's default `set_to_none`).
    pub fn zero_grad(&self) -> Result<()> {
        let mut slot = self.grad_slot();
        if slot.grad.is_some() {
            slot.zeroed = true;
        }
        Ok(())
    }

    /// Adds `g` into this leaf's gradient, in place when the buffer is not shared.
    pub(crate) fn accumulate_grad(&self, g: &Tensor) -> Result<()> {
        let mut slot = self.grad_slot();
        match slot.grad.as_ref() {
            Some(existing) if slot.zeroed => existing.assign_(g)?,
            Some(existing) => existing.add_assign_(g)?,
            None => slot.grad = Some(g.owned_detached()?),
        }
        slot.zeroed = false;
        Ok(())
    }

    /// The same values, detached, in a tensor that owns its whole buffer: shared (copy-on-write)
    /// when this one already does, else copied. Every stored gradient is made this way, because
    /// backward functions hand out views — `cat`'s backward gives each input a `narrow` of the
    /// output's gradient, contiguous on a batch of one yet a slice of a larger buffer — and a
    /// stored gradient is later summed into in place.
    pub(crate) fn owned_detached(&self) -> Result<Tensor> {
        if self.owns_whole_buffer() {
            return Ok(self.detach());
        }
        #[cfg(feature = "gpu")]
        if self.device() != Device::Cpu {
            return Ok(Tensor::from_storage(self.gpu_copy()?, self.shape().clone()));
        }
        let storage = match self.dtype() {
            DType::F32 => CpuStorage::F32(self.to_vec::<f32>()?),
            DType::F64 => CpuStorage::F64(self.to_vec::<f64>()?),
            DType::I64 => CpuStorage::I64(self.to_vec::<i64>()?),
        };
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// The same values, detached, in a tensor that owns its whole contiguous buffer: shared
    /// (copy-on-write) when this one already does, else copied. What in-place updates need
    /// (optimizer states restored from a checkpoint, say).
    pub fn detach_owned(&self) -> Result<Tensor> {
        self.owned_detached()
    }

    /// Lets a backward kernel write this leaf's gradient contribution straight into its
    /// gradient buffer: `write(buffer, overwrite)` must store the contribution when `overwrite`
    /// (the buffer is fresh or zeroed, its contents meaningless) and add it otherwise. Saves
    /// allocating the contribution and a second pass adding it (e.g. the GEMM behind a Linear
    /// weight gradient accumulates into the buffer itself).
    pub(crate) fn accumulate_grad_with<T: Element>(&self, write: impl FnOnce(&mut [T], bool)) -> Result<()> {
        let mut slot = self.grad_slot();
        match slot.grad.as_ref() {
            Some(existing) => {
                let overwrite = slot.zeroed;
                existing.update_::<T, _>(|d| write(d, overwrite))?;
            }
            None => {
                let mut buf = T::take_buffer(self.numel());
                write(&mut buf, true);
                slot.grad = Some(Tensor::from_storage(T::wrap(buf), self.shape().clone()));
            }
        }
        slot.zeroed = false;
        Ok(())
    }
}
