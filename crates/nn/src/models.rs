//! Reference models. `SimpleNN` is the flagship: PyTorch's classic MNIST network, with the same
//! attribute names, so its state_dict keys (`fc1.weight`, …) match the PyTorch class.

use crate::module::Module;
use crate::{Linear, Result};
use strata_core::Tensor;

/// PyTorch's `SimpleNN`: Linear(784, 128) → ReLU → Linear(128, 64) → ReLU → Linear(64, 10),
/// returning logits (no activation on the output). 109,386 parameters.
///
/// # Shapes
/// - input: `[N, 784]` (flattened 28×28 images)
/// - output: `[N, 10]` logits
#[derive(Debug, Clone)]
pub struct SimpleNN {
    /// 784 → 128.
    pub fc1: Linear,
    /// 128 → 64.
    pub fc2: Linear,
    /// 64 → 10.
    pub fc3: Linear,
}

impl SimpleNN {
    /// A freshly initialised network, drawing from the default generator.
    pub fn new() -> Result<SimpleNN> {
        Ok(SimpleNN { fc1: Linear::new(784, 128)?, fc2: Linear::new(128, 64)?, fc3: Linear::new(64, 10)? })
    }
}

impl Module for SimpleNN {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // relu(fc(x)) fused: one op instead of two (the values are those of `.relu()` after it).
        let x = self.fc1.forward_relu(x)?;
        let x = self.fc2.forward_relu(&x)?;
        self.fc3.forward(&x)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2), ("fc3".into(), &self.fc3)]
    }
    fn describe(&self) -> String {
        "SimpleNN".into()
    }
    /// The functional ReLUs appear as the unnamed layers `1` and `3`, as in the equivalent
    /// `nn.Sequential`, so the summary equals that of `examples/simple_nn.toml`.
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        use crate::spec::{LayerSpec, NamedLayer};
        let named = |name: &str, spec: LayerSpec| NamedLayer {
            name: name.into(),
            spec,
            origin: None,
            device: None,
            init: Default::default(),
        };
        Some(LayerSpec::Sequential(vec![
            named("fc1", self.fc1.spec()?),
            named("1", LayerSpec::ReLU),
            named("fc2", self.fc2.spec()?),
            named("3", LayerSpec::ReLU),
            named("fc3", self.fc3.spec()?),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_pytorch() {
        // sum(p.numel() for p in SimpleNN().parameters()) == 109386
        assert_eq!(SimpleNN::new().unwrap().num_parameters(), 109_386);
    }
}
