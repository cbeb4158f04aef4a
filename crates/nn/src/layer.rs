//! The one trait every layer kind implements: how the spec, shape check, summary, model-file
//! and build machinery see a layer without knowing its kind. A kind's file (`linear.rs`,
//! `conv.rs`, …) holds its config, its [`Layer`] impl and its [`LayerKind`] entry for the
//! model-file parser; `registry.rs` lists the kinds. See `crates/nn/README.md` for adding one.
//!
//! Containers (`Sequential`, `Residual`, `Add`/`Concat`) are not layer kinds: they hold chains,
//! and their rules are the walk itself (path prefixes, trace rows, merging), so the walker,
//! the builder and the model-file code treat them directly.

use crate::Result;
use crate::check::context::{CheckContext, Failure};
use crate::check::error::{LayerRef, Producer};
use crate::check::fix::Edit;
use crate::check::shape::SymShape;
use crate::init::{InitTargets, LayerInit};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::{LayerSpec, SpecData};
use std::any::Any;
use std::fmt;
use strata_core::{ConvAlgorithm, DType, Generator};

/// `(name, shape)` of a parameter or buffer, e.g. `("weight", [128, 784])`.
pub type TensorShapes = Vec<(String, Vec<usize>)>;

/// What the whole model's layers share when they are built, and the layer's name for errors.
#[derive(Clone, Copy, Debug)]
pub struct BuildContext<'a> {
    /// The layer's name in its chain.
    pub name: &'a str,
    /// The parameters' element type.
    pub dtype: DType,
    /// Every `Conv2d`'s algorithm choice.
    pub conv_algorithm: ConvAlgorithm,
}

impl BuildContext<'_> {
    /// The error for a size left to inference that was never inferred (the spec was built
    /// without being checked with an input shape).
    pub fn unknown(&self, what: &str) -> crate::Error {
        crate::Error::Unresolved { layer: self.name.to_string(), what: what.to_string() }
    }
}

/// One layer kind's behaviour, on its config. Every method but the shape rule, the build and
/// the description has a default that fits a parameterless element-wise layer.
pub trait Layer: fmt::Debug + Send + Sync {
    /// PyTorch's class name, e.g. `Linear`.
    fn type_name(&self) -> &'static str;

    /// The description in traces and summaries, e.g. `Linear 784 → 128` (`?` for a size still
    /// to be inferred).
    fn describe(&self) -> String;

    /// The shape rule: the output for input `x`, filling in sizes left to inference. Errors go
    /// to `cx` ([`CheckContext::fail`]); the output is then the intended one, as if fixed, so
    /// later layers are still checked.
    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape;

    /// Who decides the feature count after this layer (`None`: whoever did before).
    fn produces(&self, _layer: &LayerRef) -> Option<Producer> {
        None
    }

    /// Whether the layer passes its input's element type on (Flatten); every other layer
    /// computes floats.
    fn keeps_element_type(&self) -> bool {
        false
    }

    /// The feature count the layer expects, when it has one (named in suggested fixes).
    fn expected_features(&self) -> Option<usize> {
        None
    }

    /// The error when the incoming element type does not fit, checked before the shape rule;
    /// by default a float layer refuses token ids.
    fn dtype_error(&self, cx: &CheckContext<'_>, _x: &SymShape) -> Option<Failure> {
        cx.float_input_error(self.type_name(), self.expected_features())
    }

    /// Trainable parameters as `(name, shape)` in PyTorch's names and layouts; `None` while a
    /// size is still to be inferred.
    fn parameter_shapes(&self) -> Option<TensorShapes> {
        Some(vec![])
    }

    /// Buffers (running statistics) as `(name, shape)`; `None` while a size is to be inferred.
    fn buffer_shapes(&self) -> Option<TensorShapes> {
        Some(vec![])
    }

    /// Multiply-accumulates per sample, given the layer's output.
    fn macs(&self, _output: &SymShape) -> usize {
        0
    }

    /// Whether a size is left to inference (then the spec is checked before it is built).
    fn has_inferred(&self) -> bool {
        false
    }

    /// The module, with fresh parameters from the default generator.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>>;

    /// What `init` and `bias_init` set in this layer: the rank of its weights, whether it has
    /// biases, whether it takes the enclosing block's and the model's choice; `None` (the
    /// default) for a layer without parameters.
    fn init_targets(&self) -> Option<InitTargets> {
        None
    }

    /// Re-initialises the built `module`'s parameters as `init` says (after [`Layer::build`]
    /// drew PyTorch's defaults), from `rng`. A kind with more to keep overrides it (an
    /// `Embedding`'s padding row stays zero).
    fn reinit(&self, module: &dyn Module, init: &LayerInit, rng: &mut Generator) -> Result<()> {
        crate::init::apply_own(module, init, rng)
    }

    /// The layer's model-file keys after `name` and `type`, as `key = value` strings.
    fn write_toml(&self, _fields: &mut Vec<String>) {}

    /// Applies an edit of one of this kind's keys; `false` when the edit is not for this kind.
    fn apply_edit(&mut self, _edit: &Edit) -> bool {
        false
    }

    /// The config back as a [`LayerSpec`].
    fn to_spec(&self) -> LayerSpec;
}

impl<T: Layer + Clone + PartialEq + 'static> SpecData for T {
    fn type_name(&self) -> &'static str {
        Layer::type_name(self)
    }
    fn clone_data(&self) -> Box<dyn SpecData> {
        Box::new(self.clone())
    }
    fn data_eq(&self, other: &dyn SpecData) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The [`LayerKind::layer_of`] of a kind whose config is `T`: the config back as its [`Layer`].
pub fn layer_of<T: Layer + Clone + 'static>(data: &dyn Any) -> Option<Box<dyn Layer>> {
    data.downcast_ref::<T>().map(|l| Box::new(l.clone()) as Box<dyn Layer>)
}

/// Recovers a kind's [`Layer`] from its config held as data ([`crate::spec::SpecData`]).
pub type LayerOf = fn(&dyn Any) -> Option<Box<dyn Layer>>;

/// A layer kind as the model-file parser knows it: its type name, its keys and how to read
/// them. `parse: None` marks a container, which the parser reads itself.
pub struct LayerKind {
    /// PyTorch's class name, the `type` in model files.
    pub type_name: &'static str,
    /// Every key a layer table of this type may hold (`name` and `type` included).
    pub keys: &'static [&'static str],
    /// Reads the layer's keys (errors go to the parser); `None` when a required key is bad.
    pub parse: Option<fn(&mut LayerFields<'_, '_>) -> Option<LayerSpec>>,
    /// For a kind held in [`LayerSpec::Other`]: its config back as a [`Layer`] (set it to
    /// `Some(layer_of::<MyConfig>)`); `None` for the kinds with a variant of their own.
    pub layer_of: Option<LayerOf>,
}
