//! strata-core: the engine — n-dimensional tensors (`f32`, `f64`, `i64`) with shapes, strides
//! and views; seeded counter-based random numbers; reverse-mode autograd; and the ops, with the
//! `gemm` crate's kernels under matmul and the fused `linear` and `cross_entropy`. Every tensor
//! lives on a [`Device`]: the CPU, or (with the `gpu` feature) a GPU through wgpu, where each op
//! runs its WGSL kernels (the `gpu` module, `ops/README.md`); `to_device` moves tensors between them.
//!
//! ```
//! use strata_core::{Tensor, DType, Generator};
//! let mut rng = Generator::new(0);
//! let w = Tensor::randn(&[3, 2], 0.0, 1.0, DType::F32, &mut rng)?.requires_grad_()?;
//! let x = Tensor::ones(&[4, 2], DType::F32);
//! let loss = x.matmul(&w.t()?)?.relu()?.mean_all()?;
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().dims(), &[3, 2]);
//! # Ok::<(), strata_core::Error>(())
//! ```

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod autocast;
pub mod autograd;
pub mod device;
pub mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod ops;
pub mod rng;
pub mod shape;
mod shape_checks;
pub mod storage;
pub mod tensor;
pub mod testing;
pub mod threads;

pub use autocast::{AutocastGuard, Precision, autocast};
pub use autograd::{NoGradGuard, is_grad_enabled, no_grad};
pub use device::{DType, Device};
pub use error::{Error, Result};
pub use ops::activation::erf;
pub use ops::batch_norm::{batch_norm, batch_norm_relu, sync_batch_norm};
pub use ops::collective::{
    Collective, CollectiveGuard, all_reduce_sum, collective_sum, install_collective, installed_collective,
    suspend_collective,
};
pub use ops::concat::{cat, stack};
pub use ops::conv::{ConvAlgorithm, ConvOptions, conv2d, conv2d_with};
pub use ops::cross_entropy::{CrossEntropyOptions, binary_cross_entropy_with_logits, cross_entropy_with, nll_loss};
pub use ops::cross_entropy::{Reduction, cross_entropy};
pub use ops::dropout::dropout;
pub use ops::elementwise::add_relu;
pub use ops::embedding::{embedding, embedding_padded};
pub use ops::layer_norm::layer_norm;
pub use ops::linear::{linear, linear_relu};
pub use ops::lstm::{LstmOptions, lstm_layer};
pub use ops::matmul::{CpuKernels, cpu_kernels};
pub use ops::pad::{PaddingMode, pad2d};
pub use ops::pool::{AvgPool2dOptions, MaxPool2dOptions, avg_pool2d_with, max_pool2d_with, pool_output_size};
pub use ops::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
pub use ops::reduce::all_finite;
pub use rng::{Generator, manual_seed, with_default_generator, with_seed};
pub use shape::{Layout, Shape};
pub use storage::{CpuStorage, Element, Float, Storage};
pub use tensor::Tensor;
pub use threads::{get_num_threads, set_num_threads};

/// The devices this machine offers: the CPU, then every GPU adapter (`gpu:0`, `gpu:1`, …; only
/// with the `gpu` feature). What a model's placement is checked against.
pub fn devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut all = vec![Device::Cpu];
    #[cfg(feature = "gpu")]
    all.extend((0..crate::gpu::adapters().len()).map(Device::Gpu));
    all
}

/// The largest tensor, in bytes, `device` holds in one buffer (a GPU adapter's binding limit),
/// or `None` where only memory limits it (the CPU) or the device is not there.
pub fn max_tensor_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cpu => None,
        #[cfg(feature = "gpu")]
        Device::Gpu(i) => gpu::adapters().get(i).map(|a| a.max_binding_bytes.min(a.max_buffer_bytes)),
        #[cfg(not(feature = "gpu"))]
        Device::Gpu(_) => None,
    }
}

/// The error for a GPU device in a build without the `gpu` feature.
#[cfg(not(feature = "gpu"))]
pub(crate) fn gpu_unavailable(device: Device) -> Error {
    Error::DeviceUnavailable {
        device,
        reason: "this build of strata has no GPU backend; build it with `--features gpu`".into(),
    }
}
