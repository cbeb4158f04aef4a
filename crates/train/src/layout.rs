//! How a batch from a data set becomes the model's input: reshaped to the model's sample shape,
//! batch moved to the model's batch dimension, cast to its element type, sent to its device.

use crate::error::Result;
use strata_core::{DType, Device, Tensor};
use strata_nn::{ModelSpec, Module};

/// How a batch from the data sets (`[B, *data sample]`, f32) becomes the model's input.
#[derive(Clone, Debug)]
pub struct InputLayout {
    /// The model's sample shape (same element count as the data's).
    pub sample: Vec<usize>,
    /// Where the batch goes: 0, or 1 for a model that reads time-major sequences `[T, N, F]`
    /// (`strata_nn::check::input_batch_dim`).
    pub batch_dim: usize,
    /// The model's element type.
    pub dtype: DType,
    /// The model's device: batches go there.
    pub device: Device,
    /// Where the model's output is (its last layer's device when layers are placed): labels go
    /// there, to meet the logits in the loss.
    pub labels_device: Device,
}

impl InputLayout {
    /// The layout `spec` takes for samples of shape `sample`.
    pub fn of(spec: &ModelSpec, sample: &[usize]) -> InputLayout {
        let batch_dim = strata_nn::check::input_batch_dim(spec, sample.len());
        InputLayout {
            sample: sample.to_vec(),
            batch_dim,
            dtype: spec.dtype,
            device: Device::Cpu,
            labels_device: Device::Cpu,
        }
    }

    /// The layout of a module that takes samples of shape `sample` as they are: batch first,
    /// in its parameters' element type (f32 without parameters), on its first parameter's
    /// device.
    pub fn for_module(model: &dyn Module, sample: &[usize]) -> InputLayout {
        let first = model.parameters().into_iter().next();
        let (dtype, device) = first.map_or((DType::F32, Device::Cpu), |p| (p.dtype(), p.device()));
        let batch_dim = match ModelSpec::from_module("model", model) {
            Some(spec) => strata_nn::check::input_batch_dim(&spec, sample.len()),
            None => 0,
        };
        let last = model.parameters().into_iter().last().map_or(device, |p| p.device());
        InputLayout { sample: sample.to_vec(), batch_dim, dtype, device, labels_device: last }
    }

    /// This layout with batches sent to `device`.
    pub fn on(self, device: Device) -> InputLayout {
        InputLayout { device, labels_device: device, ..self }
    }

    /// This layout with labels sent to `device` (a placed model's output device).
    pub fn labels_on(self, labels_device: Device) -> InputLayout {
        InputLayout { labels_device, ..self }
    }

    /// A batch `[B, *data sample]` as the model's input: viewed as `[B, *model sample]`, the batch
    /// moved to `batch_dim` (`[T, B, F]` for a time-major model), in the model's element type,
    /// on the model's device.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = vec![x.dims()[0]];
        dims.extend_from_slice(&self.sample);
        let x = x.reshape(&dims)?;
        let x = if self.batch_dim == 1 { x.transpose(0, 1)? } else { x };
        Ok(x.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    /// A batch's labels on the model's device.
    pub fn labels(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.to_device(self.labels_device)?)
    }
}
