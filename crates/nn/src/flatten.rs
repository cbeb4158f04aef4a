//! `Flatten`: turns images (or any multi-dimensional samples) into feature vectors.

use crate::Result;
use crate::module::Module;
use strata_core::Tensor;

/// Flattens dimensions `start_dim..=end_dim` into one, PyTorch's `nn.Flatten` (default
/// `start_dim = 1, end_dim = -1`: everything but the batch dimension).
///
/// # Shapes
/// - input: `[N, d1, d2, …]`, e.g. `[N, 1, 28, 28]`
/// - output: `[N, d1·d2·…]`, e.g. `[N, 784]`
#[derive(Debug, Clone, Copy)]
pub struct Flatten {
    start_dim: isize,
    end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    /// `nn.Flatten()`: keeps the batch dimension, flattens the rest.
    pub fn new() -> Self {
        Self::default()
    }
    /// Flattens `start_dim..=end_dim` (negative indices count from the end).
    pub fn with_dims(start_dim: isize, end_dim: isize) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.flatten(self.start_dim, self.end_dim)?)
    }
    fn describe(&self) -> String {
        "Flatten".into()
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::Flatten { start_dim: self.start_dim, end_dim: self.end_dim })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::DType;

    #[test]
    fn flattens_images_to_vectors() {
        let x = Tensor::zeros(&[5, 1, 28, 28], DType::F32);
        assert_eq!(Flatten::new().forward(&x).unwrap().dims(), &[5, 784]);
        assert_eq!(Flatten::with_dims(0, 1).forward(&x).unwrap().dims(), &[5, 28, 28]);
    }
}
