//! `Sequential`: a chain of modules, each consuming the previous one's output.

use crate::Result;
use crate::module::Module;
use strata_core::Tensor;

/// Modules applied in order, PyTorch's `nn.Sequential`. Children are named `0`, `1`, … unless
/// added with a name, so parameters are `0.weight`, or `fc1.weight` for named layers.
///
/// # Shapes
/// - input: what the first layer takes
/// - output: what the last layer produces (the input itself when empty)
#[derive(Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.layers.iter().map(|(n, m)| (n, m.describe()))).finish()
    }
}

impl Sequential {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer named by its position (PyTorch's `append`).
    pub fn append(mut self, layer: impl Module + 'static) -> Self {
        let name = self.layers.len().to_string();
        self.layers.push((name, Box::new(layer)));
        self
    }

    /// Appends a layer under a name (`fc1`), used in parameter names (PyTorch's `add_module`).
    pub fn add_module(mut self, name: impl Into<String>, layer: impl Module + 'static) -> Self {
        self.layers.push((name.into(), Box::new(layer)));
        self
    }

    /// Appends an already boxed layer under a name.
    pub fn push_boxed(&mut self, name: impl Into<String>, layer: Box<dyn Module>) {
        self.layers.push((name.into(), layer));
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers with their names, in order.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &dyn Module)> {
        self.layers.iter().map(|(n, m)| (n.as_str(), m.as_ref() as &dyn Module))
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (name, layer) in &self.layers {
            h = layer.forward(&h).map_err(|e| e.in_layer(name, || layer.describe()))?;
        }
        Ok(h)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().map(|(n, m)| (n.clone(), m.as_ref() as &dyn Module)).collect()
    }
    fn describe(&self) -> String {
        "Sequential".into()
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        let layers = self
            .layers
            .iter()
            .map(|(name, m)| Some(crate::spec::NamedLayer { name: name.clone(), spec: m.spec()?, origin: None }))
            .collect::<Option<Vec<_>>>()?;
        Some(crate::spec::LayerSpec::Sequential(layers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flatten, Linear, ReLU};
    use strata_core::{DType, Generator};

    #[test]
    fn names_and_forward() {
        let mut rng = Generator::new(1);
        let m = Sequential::new()
            .append(Flatten::new())
            .append(Linear::with_options(4, 3, true, DType::F32, &mut rng).unwrap())
            .append(ReLU)
            .add_module("head", Linear::with_options(3, 2, false, DType::F32, &mut rng).unwrap());
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["1.weight", "1.bias", "head.weight"]);
        assert_eq!(m.forward(&Tensor::ones(&[5, 2, 2], DType::F32)).unwrap().dims(), &[5, 2]);
        assert_eq!(m.num_parameters(), 4 * 3 + 3 + 3 * 2);
    }
}
