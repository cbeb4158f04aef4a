//! Activation layers.

use crate::Result;
use crate::module::Module;
use strata_core::Tensor;

/// Rectified linear unit, `max(x, 0)`, PyTorch's `nn.ReLU` (gradient 0 at 0, as PyTorch).
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Debug, Clone, Copy, Default)]
pub struct ReLU;

impl ReLU {
    /// A ReLU layer.
    pub fn new() -> Self {
        ReLU
    }
}

impl Module for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.relu()?)
    }
    fn describe(&self) -> String {
        "ReLU".into()
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::ReLU)
    }
}
