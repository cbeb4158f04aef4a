//! Buffers, the size-keyed buffer pool they return to, and the element-type trait that lets one
//! kernel serve every float type. A tensor's [`Storage`] is host memory ([`CpuStorage`], the pool
//! and the traits, in `cpu.rs`) or a GPU's (`crate::gpu::GpuBuffer`, which reads and writes host
//! buffers: it sits between the two files).
//!
//! A host buffer is an `Arc<CpuStorage>`: views share it, and in-place updates (optimizer steps,
//! gradient accumulation) write straight into it when nobody else holds it, or copy it first
//! when a view or a saved-for-backward value still does (copy-on-write), so a saved value never
//! changes under the autograd graph that saved it.
//!
//! Why a pool: a training step makes the same buffers in the same sizes every time (activations,
//! gradients, softmax probabilities). Without reuse each one is a fresh `malloc`, and the large
//! ones (above glibc's mmap threshold) a fresh `mmap` whose pages fault in and are zeroed by the
//! kernel on first touch — measured at ~5% of a SimpleNN step and ~10% of a large MLP's. A
//! dropped [`CpuStorage`] gives its vector back to a process-wide pool keyed by element count, and
//! kernels take their outputs from it ([`Element::take_buffer`]), so step k reuses step k−1's
//! buffers and steady-state training allocates no data buffers at all.

mod cpu;

pub use cpu::{CpuStorage, Element, Float, pooled_bytes};

use crate::device::{DType, Device};
use std::sync::Arc;

/// A tensor's buffer on its device: what a `Tensor` holds. Views share it (the `Arc`).
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(Arc<CpuStorage>),
    /// A GPU's memory (the `gpu` feature).
    #[cfg(feature = "gpu")]
    Gpu(Arc<crate::gpu::GpuBuffer>),
}

impl Storage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.dtype(),
        }
    }
    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.len(),
        }
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device holding it.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.device(),
        }
    }
    /// How many handles (tensors, views, saved values) share the buffer.
    pub(crate) fn handles(&self) -> usize {
        match self {
            Storage::Cpu(s) => Arc::strong_count(s),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => Arc::strong_count(b),
        }
    }
}

impl From<Arc<CpuStorage>> for Storage {
    fn from(s: Arc<CpuStorage>) -> Storage {
        Storage::Cpu(s)
    }
}

impl From<CpuStorage> for Storage {
    fn from(s: CpuStorage) -> Storage {
        Storage::Cpu(Arc::new(s))
    }
}
