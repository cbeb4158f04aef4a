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
    /// Each layer's name and its position, so a name is never given twice (the two layers'
    /// parameters would share state_dict keys) without a search of the chain per layer.
    names: std::collections::HashMap<String, usize>,
}

/// What is wrong with `name` as the name of a layer in a chain, when something is: empty,
/// containing `.`, or the name of the chain's layer `taken_by` (PyTorch's `add_module` refuses
/// the first two; a second layer of the same name would overwrite the first's state_dict keys).
pub(crate) fn name_problem(name: &str, taken_by: Option<usize>) -> Option<String> {
    if name.is_empty() {
        return Some(
            "is empty; give the layer a name (like `fc1`), or append it without one to name it by its position".into(),
        );
    }
    if name.contains('.') {
        return Some(format!(
            "contains \".\", which separates the levels of parameter names (`{name}.weight` would be ambiguous); use `{}` instead",
            name.replace('.', "_")
        ));
    }
    taken_by.map(|i| {
        format!(
            "is already the name of layer {i} of the chain; names must be unique within a chain (the two \
             layers' parameters would share the state_dict keys `{name}.…` and one of them be lost): choose another name"
        )
    })
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

    /// Appends a layer named by its position (PyTorch's `append`): `0`, `1`, ….
    ///
    /// # Errors
    /// When a layer added with [`Sequential::add_module`] already has that name (`"2"` given to
    /// the first layer, say): both would be saved under the same state_dict keys.
    pub fn append(mut self, layer: impl Module + 'static) -> Result<Self> {
        let name = self.layers.len().to_string();
        self.push_boxed(name, Box::new(layer))?;
        Ok(self)
    }

    /// Appends a layer under a name (`fc1`), used in parameter names (PyTorch's `add_module`).
    ///
    /// # Errors
    /// When `name` is empty, contains `.` (as PyTorch's `add_module` refuses), or is the name
    /// of a layer already in the chain: the two layers would be saved under the same
    /// state_dict keys and one of them lost.
    pub fn add_module(mut self, name: impl Into<String>, layer: impl Module + 'static) -> Result<Self> {
        self.push_boxed(name, Box::new(layer))?;
        Ok(self)
    }

    /// Appends an already boxed layer under a name.
    ///
    /// # Errors
    /// As [`Sequential::add_module`]: an empty name, one containing `.`, or one already taken.
    pub fn push_boxed(&mut self, name: impl Into<String>, layer: Box<dyn Module>) -> Result<()> {
        self.push_at(name, layer, None)
    }

    /// Appends a layer placed on `device` (when `Some`): its parameters and buffers are moved
    /// there now, and its input is moved there at every forward.
    ///
    /// # Errors
    /// As [`Sequential::add_module`] for the name (checked before anything is moved), and when
    /// moving the layer fails.
    pub fn push_placed(
        &mut self,
        name: impl Into<String>,
        layer: Box<dyn Module>,
        device: Option<Device>,
    ) -> Result<()> {
        let name = name.into();
        self.check_name(&name)?;
        if let Some(d) = device {
            layer.to_device(d)?;
        }
        self.push_at(name, layer, device)
    }

    /// An error when `name` cannot name the next layer (see [`name_problem`]).
    fn check_name(&self, name: &str) -> Result<()> {
        match name_problem(name, self.names.get(name).copied()) {
            Some(reason) => {
                Err(crate::Error::LayerName { container: "Sequential".into(), name: name.to_string(), reason })
            }
            None => Ok(()),
        }
    }

    /// Appends a layer whose input goes to `device` (when `Some`), leaving its parameters where
    /// they are: a block built with its own layers already placed. The name is checked as
    /// [`Sequential::add_module`] checks it.
    pub(crate) fn push_at(
        &mut self,
        name: impl Into<String>,
        layer: Box<dyn Module>,
        device: Option<Device>,
    ) -> Result<()> {
        let name = name.into();
        self.check_name(&name)?;
        self.push_checked(name, layer, device);
        Ok(())
    }

    /// [`Sequential::push_at`] for a name already checked.
    fn push_checked(&mut self, name: String, layer: Box<dyn Module>, device: Option<Device>) {
        if let Some(d) = device {
            let devices = self.devices.get_mut().unwrap_or_else(|e| e.into_inner());
            devices.resize(self.layers.len(), None);
            devices.push(Some(d));
            *self.placed.get_mut() = true;
        }
        self.names.insert(name.clone(), self.layers.len());
        self.layers.push((name, layer));
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
            .unwrap()
            .append(Linear::with_options(4, 3, true, DType::F32, &mut rng).unwrap())
            .unwrap()
            .append(ReLU)
            .unwrap()
            .add_module("head", Linear::with_options(3, 2, false, DType::F32, &mut rng).unwrap())
            .unwrap();
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
        m.push_at("a", lin(4, 3, &mut rng), None).unwrap();
        m.push_at("b", Box::new(ReLU), None).unwrap();
        assert_eq!(m.stages(), [(0..2, None)], "an unplaced chain is one stage");
        m.push_at("c", lin(3, 3, &mut rng), Some(Device::Gpu(0))).unwrap();
        m.push_at("d", Box::new(ReLU), None).unwrap();
        m.push_at("e", lin(3, 3, &mut rng), Some(Device::Gpu(0))).unwrap();
        m.push_at("f", lin(3, 2, &mut rng), Some(Device::Cpu)).unwrap();
        assert_eq!(m.stages(), [(0..2, None), (2..5, Some(Device::Gpu(0))), (5..6, Some(Device::Cpu))]);
        // Ranges run one after another give the whole chain's forward.
        let mut cpu = Sequential::new();
        for (name, layer) in [("a", lin(4, 3, &mut rng)), ("c", lin(3, 3, &mut rng))] {
            cpu.push_boxed(name, layer).unwrap();
        }
        cpu.push_boxed("r", Box::new(ReLU)).unwrap();
        cpu.push_boxed("f", lin(3, 2, &mut rng)).unwrap();
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
        let body = Sequential::new().append(conv(&mut rng)).unwrap().append(BatchNorm2d::new(3).unwrap()).unwrap();
        let m = Sequential::new()
            .append(conv(&mut rng))
            .and_then(|m| m.append(BatchNorm2d::new(3).unwrap()))
            .and_then(|m| m.append(ReLU))
            .and_then(|m| m.append(Residual::new(body)))
            .and_then(|m| m.append(ReLU))
            .and_then(|m| m.append(Flatten::new()))
            .and_then(|m| m.append(Linear::with_options(48, 5, true, DType::F32, &mut rng).unwrap()))
            .and_then(|m| m.append(ReLU))
            .unwrap();
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

    #[test]
    fn a_name_taken_empty_or_dotted_is_an_error_and_no_parameter_is_lost() {
        // Two layers named `fc` used to give 4 parameters but a 2-entry state_dict, and a
        // strict load put the same weights in both.
        let m = Sequential::new().add_module("fc", Linear::new(3, 3).unwrap()).unwrap();
        let err = m.add_module("fc", Linear::new(3, 3).unwrap()).unwrap_err().to_string();
        assert!(
            err.starts_with("Sequential: layer name `fc` is already the name of layer 0 of the chain;")
                && err.contains("`fc.…`")
                && err.contains("choose another name"),
            "{err}"
        );
        let err = Sequential::new().add_module("a.b", ReLU).unwrap_err().to_string();
        assert!(err.contains("layer name `a.b` contains \".\"") && err.contains("use `a_b` instead"), "{err}");
        let err = Sequential::new().add_module("", ReLU).unwrap_err().to_string();
        assert!(err.contains("layer name `` is empty"), "{err}");
        // A positional name given by hand collides with append's.
        let m = Sequential::new().add_module("1", ReLU).unwrap();
        let err = m.append(ReLU).unwrap_err().to_string();
        assert!(err.contains("layer name `1` is already the name of layer 0"), "{err}");
        let mut m = Sequential::new();
        m.push_boxed("x", Box::new(ReLU)).unwrap();
        assert!(m.push_boxed("x", Box::new(ReLU)).is_err());
        assert!(m.push_placed("x", Box::new(ReLU), None).is_err());
        assert_eq!(m.len(), 1, "a refused layer is not added");
        // Distinct names: every parameter has its own key.
        let m = Sequential::new()
            .add_module("fc", Linear::new(3, 3).unwrap())
            .unwrap()
            .add_module("fc2", Linear::new(3, 3).unwrap())
            .unwrap();
        assert_eq!(m.state_dict().len(), m.parameters().len());
    }
}
