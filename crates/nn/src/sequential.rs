//! `Sequential`: a chain of modules, each consuming the previous one's output.

use crate::Result;
use crate::module::Module;
use strata_core::{Device, Tensor};

/// Modules applied in order, PyTorch's `nn.Sequential`. Children are named `0`, `1`, … unless
/// added with a name, so parameters are `0.weight`, or `fc1.weight` for named layers.
///
/// # Shapes
/// - input: what the first layer takes
/// - output: what the last layer produces (the input itself when empty)
///
/// A layer may be *placed* on a device ([`Sequential::push_placed`], a spec's `device`): its
/// parameters live there and its input is moved there (a differentiable move: the gradient goes
/// back to where the input came from), so consecutive layers on different devices need no code.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
    /// Each layer's placement, when it has one (as long as `layers` once any is placed); a
    /// lock because moving the whole model (`to_device(&self)`) replaces them.
    devices: std::sync::RwLock<Vec<Option<Device>>>,
    /// Whether any layer is placed: an unplaced chain's forward takes no lock (W3's
    /// batch-1 inference is a few microseconds).
    placed: std::sync::atomic::AtomicBool,
    /// The shape of one sample it takes, when known (a model built from a spec with `input`).
    input: Option<Vec<usize>>,
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

    /// This chain, taking samples of `shape` (what a training loop reshapes its data to).
    pub fn with_input_shape(mut self, shape: &[usize]) -> Self {
        self.input = Some(shape.to_vec());
        self
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

    /// Appends a layer placed on `device` (when `Some`): its parameters and buffers are moved
    /// there now, and its input is moved there at every forward.
    pub fn push_placed(
        &mut self,
        name: impl Into<String>,
        layer: Box<dyn Module>,
        device: Option<Device>,
    ) -> Result<()> {
        if let Some(d) = device {
            layer.to_device(d)?;
        }
        self.push_at(name, layer, device);
        Ok(())
    }

    /// Appends a layer whose input goes to `device` (when `Some`), leaving its parameters where
    /// they are: a block built with its own layers already placed.
    pub(crate) fn push_at(&mut self, name: impl Into<String>, layer: Box<dyn Module>, device: Option<Device>) {
        if let Some(d) = device {
            let devices = self.devices.get_mut().unwrap_or_else(|e| e.into_inner());
            devices.resize(self.layers.len(), None);
            devices.push(Some(d));
            *self.placed.get_mut() = true;
        }
        self.layers.push((name.into(), layer));
    }

    /// Where the `i`-th layer is placed, if it is.
    pub fn device_of(&self, i: usize) -> Option<Device> {
        if !self.placed.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.devices.read().unwrap_or_else(|e| e.into_inner()).get(i).copied().flatten()
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

    /// The chain cut where its layers' placement changes: consecutive layers on one device form
    /// a stage (a layer without a placement joins the stage before it, since it runs where its
    /// input is). Each stage is its range of layer indices and its device (`None`: wherever the
    /// input is). An unplaced chain is one stage. A block placed as a whole is one layer here,
    /// whatever its own layers' placements. Pipelined training ([`Sequential::forward_layers`]
    /// per stage, each on its own thread) runs the stages concurrently on micro-batches.
    pub fn stages(&self) -> Vec<(std::ops::Range<usize>, Option<Device>)> {
        let mut stages: Vec<(std::ops::Range<usize>, Option<Device>)> = Vec::new();
        for i in 0..self.layers.len() {
            let device = self.device_of(i);
            match stages.last_mut() {
                Some((range, d)) if device.is_none() || device == *d => range.end = i + 1,
                _ => stages.push((i..i + 1, device)),
            }
        }
        stages
    }

    /// Runs layers `range` of the chain on `x` (the whole chain's forward is `0..len`): each
    /// placed layer gets its input on its device, and a layer followed by a ReLU within the
    /// range runs fused with it. A pipeline stage runs its stretch of the chain with this.
    pub fn forward_layers(&self, x: &Tensor, range: std::ops::Range<usize>) -> Result<Tensor> {
        let Some(stretch) = self.layers.get(range.clone()) else {
            return Err(crate::Error::InvalidOption {
                owner: "Sequential::forward_layers",
                key: "range",
                value: format!("{range:?}"),
                expected: format!("a range within the chain's {} layers", self.layers.len()),
            });
        };
        let mut h = x.clone();
        let mut layers = stretch.iter().enumerate().map(|(i, l)| (i + range.start, l)).peekable();
        while let Some((i, (name, layer))) = layers.next() {
            // A placed layer gets its input on its own device.
            if let Some(d) = self.device_of(i)
                && h.device() != d
            {
                h = h.to_device(d).map_err(|e| crate::Error::from(e).in_layer(name, || layer.describe()))?;
            }
            // A layer followed by a ReLU runs both as one fused op where it has one.
            let fused = match layers.peek() {
                Some((_, (_, next))) if next.is_relu() => layer.forward_fused_relu(&h),
                _ => None,
            };
            h = match fused {
                Some(y) => {
                    layers.next();
                    y
                }
                None => layer.forward(&h),
            }
            .map_err(|e| e.in_layer(name, || layer.describe()))?;
        }
        Ok(h)
    }
}

impl Module for Sequential {
    fn input_shape(&self) -> Option<Vec<usize>> {
        self.input.clone()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_layers(x, 0..self.layers.len())
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().map(|(n, m)| (n.clone(), m.as_ref() as &dyn Module)).collect()
    }
    fn describe(&self) -> String {
        "Sequential".into()
    }
    /// Moves the whole chain to `device`, its placements included (they become `device`).
    fn to_device(&self, device: Device) -> Result<()> {
        self.devices.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.placed.store(false, std::sync::atomic::Ordering::Relaxed);
        for (_, layer) in &self.layers {
            layer.to_device(device)?;
        }
        Ok(())
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, (name, m))| {
                let device = self.device_of(i);
                Some(crate::spec::NamedLayer {
                    name: name.clone(),
                    spec: m.spec()?,
                    origin: None,
                    device,
                    init: Default::default(),
                })
            })
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

    #[test]
    fn stages_cut_where_the_placement_changes_and_a_range_runs_alone() {
        let mut rng = Generator::new(3);
        let lin = |i, o, rng: &mut Generator| Box::new(Linear::with_options(i, o, true, DType::F32, rng).unwrap());
        let mut m = Sequential::new();
        assert!(m.stages().is_empty());
        // Placements recorded without moving anything (push_at), so no GPU is needed here.
        m.push_at("a", lin(4, 3, &mut rng), None);
        m.push_at("b", Box::new(ReLU), None);
        assert_eq!(m.stages(), [(0..2, None)], "an unplaced chain is one stage");
        m.push_at("c", lin(3, 3, &mut rng), Some(Device::Gpu(0)));
        m.push_at("d", Box::new(ReLU), None);
        m.push_at("e", lin(3, 3, &mut rng), Some(Device::Gpu(0)));
        m.push_at("f", lin(3, 2, &mut rng), Some(Device::Cpu));
        assert_eq!(m.stages(), [(0..2, None), (2..5, Some(Device::Gpu(0))), (5..6, Some(Device::Cpu))]);
        // Ranges run one after another give the whole chain's forward.
        let mut cpu = Sequential::new();
        for (name, layer) in [("a", lin(4, 3, &mut rng)), ("c", lin(3, 3, &mut rng))] {
            cpu.push_boxed(name, layer);
        }
        cpu.push_boxed("r", Box::new(ReLU));
        cpu.push_boxed("f", lin(3, 2, &mut rng));
        let x = Tensor::randn(&[5, 4], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let h = cpu.forward_layers(&x, 0..2).unwrap();
        let y = cpu.forward_layers(&h, 2..4).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), cpu.forward(&x).unwrap().to_vec::<f32>().unwrap());
        let err = cpu.forward_layers(&x, 3..9).unwrap_err().to_string();
        assert!(err.contains("3..9") && err.contains("4 layers"), "{err}");
    }

    #[test]
    fn layer_then_relu_runs_fused_with_the_same_bits() {
        use crate::{BatchNorm2d, Conv2dConfig, Residual};
        // Linear → ReLU, BatchNorm2d → ReLU and Residual → ReLU fuse; the values and gradients
        // must equal the layers run one at a time.
        let mut rng = Generator::new(2);
        let conv = |rng: &mut Generator| Conv2dConfig::new(3, 3, 3).padding(1).init(rng).unwrap();
        let body = Sequential::new().append(conv(&mut rng)).append(BatchNorm2d::new(3).unwrap());
        let m = Sequential::new()
            .append(conv(&mut rng))
            .append(BatchNorm2d::new(3).unwrap())
            .append(ReLU)
            .append(Residual::new(body))
            .append(ReLU)
            .append(Flatten::new())
            .append(Linear::with_options(48, 5, true, DType::F32, &mut rng).unwrap())
            .append(ReLU);
        let x = Tensor::randn(&[2, 3, 4, 4], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let run = |fused: bool| {
            m.zero_grad().unwrap();
            let mut h = x.clone();
            if fused {
                h = m.forward(&h).unwrap();
            } else {
                for (_, layer) in &m.layers {
                    h = layer.forward(&h).unwrap();
                }
            }
            h.sum_all().unwrap().backward().unwrap();
            let mut out = vec![h.to_vec::<f32>().unwrap()];
            out.extend(m.parameters().iter().map(|p| p.grad().unwrap().to_vec::<f32>().unwrap()));
            out
        };
        assert_eq!(m.forward(&x).unwrap().grad_fn_name(), Some("linear_relu"), "the forward pass fused");
        let fused = run(true);
        assert!(fused[0].contains(&0.0), "the last ReLU clips something");
        assert_eq!(fused, run(false));
    }
}
