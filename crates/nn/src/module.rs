//! The `Module` trait: a forward function plus named children and parameters, from which the
//! dotted parameter names (`fc1.weight`), train/eval mode, `zero_grad` and state_dicts follow.

use crate::state_dict::StateDict;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use strata_core::{Device, Tensor};

/// A layer or a model: something with a forward pass and (possibly) parameters and children.
///
/// Implement `forward`, and `children` and/or `own_parameters`; everything else has a default
/// built on them. A user model reads like its PyTorch counterpart:
///
/// ```
/// use strata_nn::{Linear, Module, Result};
/// use strata_core::Tensor;
/// struct TwoLayer { fc1: Linear, fc2: Linear }
/// impl Module for TwoLayer {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         let x = self.fc1.forward(x)?.relu()?;
///         self.fc2.forward(&x)
///     }
///     fn children(&self) -> Vec<(String, &dyn Module)> {
///         vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
///     }
/// }
/// let m = TwoLayer { fc1: Linear::new(4, 3)?, fc2: Linear::new(3, 2)? };
/// let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
pub trait Module: Send + Sync {
    /// The forward pass.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// `relu(self.forward(x))` as one fused op, for modules that have one (`Linear`,
    /// `BatchNorm1d`/`BatchNorm2d`, `Residual`: the same values and gradients, fewer passes over
    /// the activations); `None` (the default) for the others, whose caller then applies the ReLU
    /// itself. [`crate::Sequential`] calls it for a layer followed by a `ReLU`.
    fn forward_fused_relu(&self, _x: &Tensor) -> Option<Result<Tensor>> {
        None
    }

    /// Whether this module is a plain `ReLU`, which the layer before it may fuse (see
    /// [`Module::forward_fused_relu`]).
    fn is_relu(&self) -> bool {
        false
    }

    /// This module as [`std::any::Any`], for code that needs its concrete type: `Sequential`
    /// gives itself (pipelined training downcasts to it to cut the chain into stages by its
    /// layers' placements); the others `None`, the default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Direct sub-modules with their attribute names, in registration order.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// This module's own parameters (not its children's), e.g. `weight` and `bias`.
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// This module's own non-trainable state saved in state_dicts (e.g. running statistics).
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Switches this module's own behaviour between training and evaluation (only modules
    /// that behave differently, like dropout, need to implement it).
    fn set_own_training(&self, _training: bool) {}

    /// This module's own state that is neither a parameter nor a buffer but that a resumed run
    /// needs to continue exactly (PyTorch's `get_extra_state`): for `Dropout`, its seed and the
    /// number of masks drawn so far. `None` (the default) for modules without any.
    fn own_extra_state(&self) -> Option<String> {
        None
    }

    /// Restores what [`Module::own_extra_state`] returned (PyTorch's `set_extra_state`).
    fn set_own_extra_state(&self, _state: &str) -> Result<()> {
        Ok(())
    }

    /// The extra state of this module and all its children, keyed by dotted module path (`""`
    /// for this module itself). Checkpoints store it beside the state_dict, not in it, so the
    /// state_dict stays loadable by PyTorch.
    fn extra_state(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(s) = self.own_extra_state() {
            out.insert(String::new(), s);
        }
        for (name, child) in self.children() {
            for (k, s) in child.extra_state() {
                out.insert(if k.is_empty() { name.clone() } else { format!("{name}.{k}") }, s);
            }
        }
        out
    }

    /// Restores the state [`Module::extra_state`] returned. A module path that does not exist
    /// in this model is an error naming it (the checkpoint belongs to another model).
    fn load_extra_state(&self, state: &BTreeMap<String, String>) -> Result<()> {
        // Check every path first, so that nothing changes when the state belongs to another model.
        fn paths(prefix: &str, m: &dyn Module, out: &mut Vec<String>) {
            for (name, child) in m.children() {
                let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
                paths(&path, child, out);
                out.push(path);
            }
        }
        let mut known = vec![String::new()];
        for (name, child) in self.children() {
            paths(&name, child, &mut known);
            known.push(name);
        }
        if let Some(unknown) = state.keys().find(|k| !known.contains(k)) {
            return Err(crate::Error::InvalidState {
                owner: "load_extra_state",
                key: unknown.clone(),
                reason: "names a module this model does not have".into(),
            });
        }
        if let Some(s) = state.get("") {
            self.set_own_extra_state(s)?;
        }
        for (name, child) in self.children() {
            let sub: BTreeMap<String, String> = state
                .iter()
                .filter_map(|(k, s)| {
                    let rest = if *k == name { Some("") } else { k.strip_prefix(&name)?.strip_prefix('.') };
                    rest.map(|r| (r.to_string(), s.clone()))
                })
                .collect();
            if !sub.is_empty() {
                child.load_extra_state(&sub)?;
            }
        }
        Ok(())
    }

    /// A short name of the layer type for summaries and messages (`Linear(784 → 128)`).
    fn describe(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }

    /// The shape of one sample the module takes, when it knows it (a model built from a spec
    /// whose `input` is set): a training loop reshapes each sample of its data to it.
    fn input_shape(&self) -> Option<Vec<usize>> {
        None
    }

    /// The layer's spec, when it has one: what shape checking and summaries work on. Built-in
    /// layers and containers return theirs; a custom module returns `None` unless it describes
    /// itself (see `SimpleNN`).
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        None
    }

    /// All parameters with PyTorch's dotted names, depth first in registration order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = self.own_parameters();
        for (name, child) in self.children() {
            out.extend(child.named_parameters().into_iter().map(|(k, t)| (format!("{name}.{k}"), t)));
        }
        out
    }

    /// All parameters, in the order of [`Module::named_parameters`]: what an optimizer takes.
    /// A tensor shared by two layers (tied weights) is listed once, at its first name, as
    /// PyTorch's `parameters()` lists it (optimizers refuse a parameter given twice).
    fn parameters(&self) -> Vec<Tensor> {
        let mut seen = std::collections::HashSet::new();
        self.named_parameters().into_iter().map(|(_, t)| t).filter(|t| seen.insert(t.id())).collect()
    }

    /// All buffers with dotted names.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = self.own_buffers();
        for (name, child) in self.children() {
            out.extend(child.named_buffers().into_iter().map(|(k, t)| (format!("{name}.{k}"), t)));
        }
        out
    }

    /// Number of scalar parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(Tensor::numel).sum()
    }

    /// Puts this module and all its children in training (`true`) or evaluation mode.
    fn train(&self, training: bool) {
        self.set_own_training(training);
        for (_, child) in self.children() {
            child.train(training);
        }
    }

    /// Evaluation mode: `train(false)`.
    fn eval(&self) {
        self.train(false);
    }

    /// Moves every parameter and buffer to `device` in place (PyTorch's `model.to(device)`):
    /// optimizers made afterwards, and the layers themselves, see the moved tensors. Gradients
    /// are dropped. Run inputs through the model on the same device (`x.to_device(device)`).
    /// A container's placements (layers placed on other devices) become `device` too.
    fn to_device(&self, device: Device) -> Result<()> {
        for (_, t) in self.own_parameters().into_iter().chain(self.own_buffers()) {
            t.to_device_(device)?;
        }
        // Child by child, so a container can drop its placements (`Sequential` does).
        for (_, child) in self.children() {
            child.to_device(device)?;
        }
        Ok(())
    }

    /// PyTorch's name for [`Module::to_device`] (`model.to(device)`).
    fn to(&self, device: Device) -> Result<()> {
        self.to_device(device)
    }

    /// Zeroes every parameter's gradient (in place; the buffers are kept for the next step).
    fn zero_grad(&self) -> Result<()> {
        for p in self.parameters() {
            p.zero_grad()?;
        }
        Ok(())
    }

    /// Parameters and buffers by name, as PyTorch's `state_dict()`, in PyTorch's order: per
    /// module, depth first in registration order, its own parameters then its own buffers
    /// (`bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked`, then the
    /// next module's), so key lists compare equal with PyTorch's. The tensors share the
    /// module's data (no copy).
    ///
    /// Every key is distinct: the containers refuse a layer name already used in the chain
    /// ([`crate::Sequential::add_module`], [`crate::ModelSpec::build`]). A custom module whose
    /// `children()` repeat a name breaks that (caught by a debug assertion here, and by
    /// [`Module::load_state_dict`], which refuses such a model).
    fn state_dict(&self) -> StateDict {
        // Not named_parameters() then named_buffers(): that lists every buffer after every
        // parameter, which PyTorch's `_save_to_state_dict` recursion does not.
        fn add(sd: &mut StateDict, key: String, t: Tensor) {
            debug_assert!(sd.get(&key).is_none(), "two tensors of the model are named `{key}`");
            sd.insert(key, t.detach());
        }
        fn collect(m: &dyn Module, prefix: &str, sd: &mut StateDict) {
            for (k, t) in m.own_parameters().into_iter().chain(m.own_buffers()) {
                add(sd, format!("{prefix}{k}"), t);
            }
            for (name, child) in m.children() {
                collect(child, &format!("{prefix}{name}."), sd);
            }
        }
        let mut sd = StateDict::new();
        for (k, t) in self.own_parameters().into_iter().chain(self.own_buffers()) {
            add(&mut sd, k, t);
        }
        for (name, child) in self.children() {
            collect(child, &format!("{name}."), &mut sd);
        }
        sd
    }

    /// Copies values from `state_dict` into this module's parameters and buffers. With
    /// `strict`, missing and unexpected keys are errors; shape mismatches always are. All
    /// problems are reported together, and nothing is changed unless all checks pass.
    fn load_state_dict(&self, state_dict: &StateDict, strict: bool) -> Result<()> {
        load_into(self, state_dict, strict, "state_dict")
    }
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
    fn forward_fused_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
        (**self).forward_fused_relu(x)
    }
    fn is_relu(&self) -> bool {
        (**self).is_relu()
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        (**self).as_any()
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        (**self).children()
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        (**self).own_parameters()
    }
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        (**self).own_buffers()
    }
    fn set_own_training(&self, training: bool) {
        (**self).set_own_training(training)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn own_extra_state(&self) -> Option<String> {
        (**self).own_extra_state()
    }
    fn set_own_extra_state(&self, state: &str) -> Result<()> {
        (**self).set_own_extra_state(state)
    }
    fn input_shape(&self) -> Option<Vec<usize>> {
        (**self).input_shape()
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        (**self).spec()
    }
    fn to_device(&self, device: Device) -> Result<()> {
        (**self).to_device(device)
    }
}

/// Loads `path` into `module` (see [`Module::load_state_dict`]); errors name the file.
pub fn load_file(module: &(impl Module + ?Sized), path: impl AsRef<Path>, strict: bool) -> Result<()> {
    let path = path.as_ref();
    let sd = StateDict::load(path)?;
    load_into(module, &sd, strict, &path.display().to_string())
}

/// Checks `sd` against the module's parameters and buffers, reporting every problem at once,
/// and copies the values only when all checks pass.
pub(crate) fn load_into(module: &(impl Module + ?Sized), sd: &StateDict, strict: bool, source: &str) -> Result<()> {
    let targets: Vec<(String, Tensor)> = module.named_parameters().into_iter().chain(module.named_buffers()).collect();
    // Two tensors under one key (a custom module's children sharing a name) would both get the
    // one saved value: refuse the model rather than load it wrong.
    let mut keys = std::collections::HashSet::with_capacity(targets.len());
    if let Some((key, _)) = targets.iter().find(|(k, _)| !keys.insert(k.as_str())) {
        let (name, _) = key.rsplit_once('.').unwrap_or(("", key));
        return Err(Error::LayerName {
            container: source.to_string(),
            name: name.to_string(),
            reason: format!(
                "is given to two children of one module, so two of the model's tensors are named `{key}` and a \
                 state_dict cannot tell them apart; give the children distinct names in `children()`"
            ),
        });
    }
    let mut missing = vec![];
    let mut shape_mismatches = vec![];
    for (k, t) in &targets {
        match sd.get(k) {
            None => missing.push(k.clone()),
            Some(src) if src.shape() != t.shape() => {
                shape_mismatches.push((k.clone(), t.shape().to_string(), src.shape().to_string()))
            }
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> =
        sd.keys().filter(|k| !targets.iter().any(|(n, _)| n == k)).map(String::from).collect();
    if !shape_mismatches.is_empty() || (strict && (!missing.is_empty() || !unexpected.is_empty())) {
        return Err(Error::StateDictMismatch {
            source_name: source.to_string(),
            missing,
            unexpected,
            shape_mismatches,
        });
    }
    for (k, t) in &targets {
        if let Some(src) = sd.get(k) {
            t.copy_(&src.to_dtype(t.dtype())?)?;
        }
    }
    Ok(())
}
