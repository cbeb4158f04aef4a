//! Instantiating a spec: every layer kind builds its module ([`crate::layer::Layer::build`]),
//! the containers are built here from their chains. Sizes left to inference are resolved by a
//! check first, so building a checked spec never fails for shape reasons.

use crate::branches::Branches;
use crate::init::LayerInit;
use crate::layer::{BuildContext, Layer};
use crate::module::Module;
use crate::residual::Residual;
use crate::spec::{LayerSpec, ModelSpec, NamedLayer};
use crate::{Error, Result, Sequential};
use strata_core::{ConvAlgorithm, DType, Device, with_default_generator};

impl ModelSpec {
    /// The spec of an instantiated module (a container's layers become the chain), or `None`
    /// when it or one of its parts has no spec (a custom module). A module does not know its
    /// input: set it with [`ModelSpec::input`] (and [`ModelSpec::input_dtype`] for token ids).
    pub fn from_module(name: impl Into<String>, module: &dyn Module) -> Option<ModelSpec> {
        let layers = match module.spec()? {
            LayerSpec::Sequential(layers) => layers,
            other => {
                vec![NamedLayer { name: "0".into(), spec: other, origin: None, device: None, init: Default::default() }]
            }
        };
        let dtype = module.parameters().first().map_or(DType::F32, |p| p.dtype());
        let conv_algorithm = ConvAlgorithm::Default;
        let (input, input_dtype, device) = (None, DType::F32, None);
        let init = LayerInit::default();
        Some(ModelSpec { name: name.into(), input, input_dtype, dtype, conv_algorithm, layers, device, init })
    }

    /// Instantiates the model: a [`Sequential`] (nested for blocks) with fresh parameters drawn
    /// from the default generator. Inferred sizes are resolved first, so the spec must check.
    ///
    /// # Errors
    /// A layer name that is empty, contains `.` or is used twice in one chain (see
    /// [`Sequential::add_module`]), named with the chain and, for a model file's layer, where it
    /// was declared; a spec that does not check; a layer option a layer refuses.
    pub fn build(&self) -> Result<Sequential> {
        check_names(&self.layers, &self.name, "")?;
        let needs_inference = self.layers.iter().any(|l| l.spec.has_inferred());
        let resolved =
            if needs_inference { self.resolve(None).map_err(|r| Error::ShapeCheck(r.errors))? } else { self.clone() };
        if !self.dtype.is_float() {
            return Err(Error::InvalidOption {
                owner: "model",
                key: "dtype",
                value: crate::check::shape::dtype_name(self.dtype).to_string(),
                expected: "f32 or f64".into(),
            });
        }
        let cx = ChainContext { dtype: self.dtype, conv_algorithm: self.conv_algorithm, init: self.init };
        let model = build_chain(&resolved.layers, cx, self.device)?;
        Ok(match &self.input {
            Some(shape) => model.with_input_shape(shape),
            None => model,
        })
    }
}

/// Checks the layer names of `chain` and of the chains inside it, as [`Sequential`] would when
/// adding the layers, so the error can name the model, the block and the file's line; `path`
/// is the chain's dotted path in `model` (empty for the model's own chain).
fn check_names(chain: &[NamedLayer], model: &str, path: &str) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(chain.len());
    for (i, l) in chain.iter().enumerate() {
        if let Some(reason) = crate::sequential::name_problem(&l.name, seen.get(l.name.as_str()).copied()) {
            let mut container = format!("model `{model}`");
            if !path.is_empty() {
                container.push_str(&format!(", block `{path}`"));
            }
            if let Some(o) = &l.origin {
                container.push_str(&format!(" ({}:{}:{})", o.file, o.line, o.column));
            }
            return Err(Error::LayerName { container, name: l.name.clone(), reason });
        }
        seen.insert(&l.name, i);
        let inner = |suffix: &str| {
            let own = if path.is_empty() { l.name.clone() } else { format!("{path}.{}", l.name) };
            if suffix.is_empty() { own } else { format!("{own}.{suffix}") }
        };
        match &l.spec {
            LayerSpec::Sequential(layers) => check_names(layers, model, &inner(""))?,
            LayerSpec::Residual { body, shortcut } => {
                check_names(body, model, &inner("body"))?;
                if let Some(s) = shortcut {
                    check_names(s, model, &inner("shortcut"))?;
                }
            }
            LayerSpec::Branches { branches, .. } => {
                for (k, b) in branches.iter().enumerate() {
                    check_names(b, model, &inner(&format!("branches.{k}")))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What every layer of a chain is built with: the model's element type and convolution
/// algorithm, and the initialisation the enclosing blocks and the model chose.
#[derive(Clone, Copy)]
struct ChainContext {
    dtype: DType,
    conv_algorithm: ConvAlgorithm,
    init: LayerInit,
}

/// The chain of `layers`, each placed on its own device or else `inherited` (the enclosing
/// block's or the model's; `None`: left where it is built, on the CPU).
fn build_chain(layers: &[NamedLayer], cx: ChainContext, inherited: Option<Device>) -> Result<Sequential> {
    let ChainContext { dtype, conv_algorithm, init } = cx;
    let mut seq = Sequential::new();
    for l in layers {
        let device = l.device.or(inherited);
        let inner = ChainContext { init: l.init.over(init), ..cx };
        let chain = |layers: &[NamedLayer]| build_chain(layers, inner, device);
        let module: Box<dyn Module> = match &l.spec {
            LayerSpec::Sequential(inner) => Box::new(chain(inner)?),
            LayerSpec::Residual { body, shortcut } => Box::new(match shortcut {
                Some(s) => Residual::with_shortcut(chain(body)?, chain(s)?),
                None => Residual::new(chain(body)?),
            }),
            LayerSpec::Branches { branches, merge } => {
                let chains = branches.iter().map(|b| chain(b)).collect::<Result<Vec<_>>>()?;
                Box::new(Branches::new(chains, *merge)?)
            }
            // Every other spec has a layer kind.
            leaf => match leaf.layer() {
                Some(layer) => {
                    let module = layer.build(&BuildContext { name: &l.name, dtype, conv_algorithm })?;
                    reinit(&l.name, layer.as_ref(), module.as_ref(), l.init, init)?;
                    module
                }
                None => Box::new(Sequential::new()),
            },
        };
        if l.spec.is_block() {
            // Its layers were placed as they were built (each on its own device or this one).
            seq.push_at(l.name.clone(), module, device)?;
        } else {
            seq.push_placed(l.name.clone(), module, device)?;
        }
    }
    Ok(seq)
}

/// Re-initialises a built layer when it or an enclosing block or the model chose a scheme
/// (nothing is drawn otherwise, so a model without `init` keys draws exactly PyTorch's
/// defaults, in the same order). A choice of its own that does not fit the layer is an error
/// naming it.
fn reinit(name: &str, layer: &dyn Layer, module: &dyn Module, own: LayerInit, outer: LayerInit) -> Result<()> {
    let targets = layer.init_targets();
    if !own.is_empty() {
        crate::init::fit(&own, targets, true).map_err(|m| crate::init::misfit(name, &layer.describe(), &own, m))?;
    }
    let init = own.inherit(outer, targets);
    if init.is_empty() {
        return Ok(());
    }
    let in_layer =
        |error: Error| Error::InLayer { path: name.to_string(), desc: layer.describe(), error: Box::new(error) };
    with_default_generator(|g| layer.reinit(module, &init, g)).map_err(in_layer)
}
