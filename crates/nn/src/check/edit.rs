//! Applying fixes: each [`Edit`] changes a spec in place (tests apply every suggested fix and
//! check again). Edits of one layer kind's keys go to that kind ([`crate::layer::Layer::apply_edit`]);
//! the structural ones (insert, remove, replace, shortcuts, branches) are done here.

use super::fix::Edit;
use crate::init::{LayerInit, misfit};
use crate::spec::{LayerSpec, Merge, ModelSpec, NamedLayer};
use strata_core::Device;

impl ModelSpec {
    /// Applies the edits of a fix (used to prove that suggested fixes work).
    pub fn apply(&mut self, edits: &[Edit]) -> bool {
        edits.iter().all(|e| apply_edit(self, e))
    }
}

/// The chain at `path`: the model's (`""`), a block's, a residual block's `body` or `shortcut`
/// (`block1.body`), or a branch (`mix.branches.1`).
fn find_chain<'a>(layers: &'a mut Vec<NamedLayer>, path: &str) -> Option<&'a mut Vec<NamedLayer>> {
    if path.is_empty() {
        return Some(layers);
    }
    let split = |p: &'_ str| -> (String, String) {
        let (h, r) = p.split_once('.').unwrap_or((p, ""));
        (h.to_string(), r.to_string())
    };
    let (head, rest) = split(path);
    let i = layers.iter().position(|l| l.name == head)?;
    let (part, after) = split(&rest);
    match &mut layers[i].spec {
        LayerSpec::Sequential(inner) => find_chain(inner, &rest),
        LayerSpec::Residual { body, .. } if part == "body" => find_chain(body, &after),
        LayerSpec::Residual { shortcut, .. } if part == "shortcut" => find_chain(shortcut.as_mut()?, &after),
        LayerSpec::Branches { branches, .. } if part == "branches" => {
            let (index, after) = split(&after);
            find_chain(branches.get_mut(index.parse::<usize>().ok()?)?, &after)
        }
        _ => None,
    }
}

/// Every named layer's dotted path as `place` and `init` take it (`block1`,
/// `block1.body.conv1`, `branches_layer.branches.0.fc`), depth first.
fn layer_paths(layers: &[NamedLayer], prefix: &str, out: &mut Vec<String>) {
    for l in layers.iter().filter(|l| !l.name.is_empty()) {
        let here = if prefix.is_empty() { l.name.clone() } else { format!("{prefix}.{}", l.name) };
        out.push(here.clone());
        match &l.spec {
            LayerSpec::Sequential(inner) => layer_paths(inner, &here, out),
            LayerSpec::Residual { body, shortcut } => {
                layer_paths(body, &format!("{here}.body"), out);
                if let Some(s) = shortcut {
                    layer_paths(s, &format!("{here}.shortcut"), out);
                }
            }
            LayerSpec::Branches { branches, .. } => {
                for (i, b) in branches.iter().enumerate() {
                    layer_paths(b, &format!("{here}.branches.{i}"), out);
                }
            }
            _ => {}
        }
    }
}

/// The chain holding the layer at `path`, and its index there.
fn find<'a>(layers: &'a mut Vec<NamedLayer>, path: &str) -> Option<(&'a mut Vec<NamedLayer>, usize)> {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    let chain = find_chain(layers, parent)?;
    let i = chain.iter().position(|l| l.name == name)?;
    Some((chain, i))
}

impl ModelSpec {
    /// Places the layer or block at `path` (`encoder.block2`, `head.fc`) on `device`, PyTorch's
    /// `module.to(device)` declared in the spec: its parameters live there and its input is moved
    /// there when the model runs; layers inside a placed block inherit it. An error when no layer
    /// has that path.
    pub fn place(mut self, path: &str, device: Device) -> crate::Result<Self> {
        match find(&mut self.layers, path) {
            Some((chain, i)) => {
                chain[i].device = Some(device);
                Ok(self)
            }
            None => Err(crate::Error::option("place", "path", path, self.no_layer_at(path, ""))),
        }
    }

    /// Sets what the parameters of the layer or block at `path` start from (`""`: the model's
    /// default), PyTorch's `torch.nn.init` declared in the spec: a layer's own choice, a block's
    /// and the model's the default of the layers inside that take it (weight matrices and
    /// kernels; normalisation layers keep ones and zeros unless they have their own). An error
    /// when no layer has that path or the scheme does not fit the layer (a fan-based scheme on
    /// a 1-D weight or a bias, a bias scheme on a layer without bias).
    ///
    /// ```
    /// use strata_nn::init::{FanMode, Init, LayerInit, Nonlinearity};
    /// use strata_nn::spec::ModelSpec;
    /// let relu = Init::KaimingNormal { a: 0.0, mode: FanMode::FanOut, nonlinearity: Nonlinearity::Relu };
    /// let spec = ModelSpec::new("m").input(&[4]).linear("fc1", 4, 8).relu().linear("fc2", 8, 2)
    ///     .init("", LayerInit::weight(Init::XavierUniform { gain: 1.0 }).with_bias(Init::Zeros))?
    ///     .init("fc1", LayerInit::weight(relu))?;
    /// let model = spec.build()?;
    /// # Ok::<(), strata_nn::Error>(())
    /// ```
    pub fn init(mut self, path: &str, init: LayerInit) -> crate::Result<Self> {
        if path.is_empty() {
            crate::init::fit(&init, None, false).map_err(|m| misfit("the model", "model", &init, m))?;
            self.init = init;
            return Ok(self);
        }
        let Some((chain, i)) = find(&mut self.layers, path) else {
            return Err(crate::Error::option("init", "path", path, self.no_layer_at(path, ", or \"\" for the model")));
        };
        let l = &mut chain[i];
        let targets = l.spec.layer().and_then(|k| k.init_targets());
        crate::init::fit(&init, targets, !l.spec.is_block())
            .map_err(|m| misfit(path, &l.spec.to_string(), &init, m))?;
        l.init = init;
        Ok(self)
    }

    /// What a `path` that names no layer should have been: the dotted path of one, with the
    /// nearest that exists ("did you mean") and the names at the path's level, then `or`.
    fn no_layer_at(&self, path: &str, or: &str) -> String {
        let mut all = Vec::new();
        layer_paths(&self.layers, "", &mut all);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let near =
            crate::model_file::suggest::closest(path, &refs).map_or(String::new(), |c| format!("did you mean `{c}`? "));
        // The layers beside the one asked for, where its parent exists; else the top level.
        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
        let level = if parent.is_empty() { None } else { Some(parent) };
        let beside: Vec<&str> = match level.filter(|p| refs.iter().any(|r| r.starts_with(&format!("{p}.")))) {
            Some(p) => refs.iter().copied().filter(|r| r.rsplit_once('.').is_some_and(|(q, _)| q == p)).collect(),
            None => refs.iter().copied().filter(|r| !r.contains('.')).collect(),
        };
        let more = if beside.len() > 12 { ", …" } else { "" };
        format!(
            "the dotted path of a layer of `{}` ({near}{}: {}{more}){or}",
            self.name,
            match level.filter(|_| beside.first().is_some_and(|b| b.contains('.'))) {
                Some(p) => format!("the layers in `{p}`"),
                None => "its layers".into(),
            },
            beside.iter().take(12).copied().collect::<Vec<_>>().join(", ")
        )
    }

    /// Places every `(path, device)` of `map` (the command line's `--device-map
    /// 'encoder=gpu:0,head=cpu'`), over what the model file said.
    pub fn with_device_map(self, map: &[(String, Device)]) -> crate::Result<Self> {
        map.iter().try_fold(self, |spec, (path, device)| spec.place(path, *device))
    }

    /// This spec with no layer (and not the model) placed anywhere: built, it runs wherever it
    /// is moved.
    pub fn without_placement(mut self) -> Self {
        clear_devices(&mut self.layers);
        self.device = None;
        self
    }

    /// Whether any layer or the model says where it runs.
    pub fn is_placed(&self) -> bool {
        fn any(layers: &[NamedLayer]) -> bool {
            layers.iter().any(|l| l.device.is_some() || children(&l.spec).iter().any(|c| any(c)))
        }
        self.device.is_some() || any(&self.layers)
    }

    /// Where the model's output ends up when it runs with unplaced layers on `default`: the
    /// device of the last layer that places its input (a block's output is its last layer's).
    pub fn output_device(&self, default: Device) -> Device {
        fn last(layers: &[NamedLayer], inherited: Device) -> Device {
            let Some(l) = layers.last() else { return inherited };
            let d = l.device.unwrap_or(inherited);
            match &l.spec {
                LayerSpec::Sequential(inner) => last(inner, d),
                LayerSpec::Residual { body, .. } => last(body, d),
                LayerSpec::Branches { branches, .. } => branches.first().map_or(d, |b| last(b, d)),
                _ => d,
            }
        }
        last(&self.layers, self.device.unwrap_or(default))
    }
}

/// `layers` and every layer inside them placed nowhere (they inherit their block's device).
fn clear_devices(layers: &mut [NamedLayer]) {
    for l in layers {
        l.device = None;
        match &mut l.spec {
            LayerSpec::Sequential(inner) => clear_devices(inner),
            LayerSpec::Residual { body, shortcut } => {
                clear_devices(body);
                shortcut.iter_mut().for_each(|s| clear_devices(s));
            }
            LayerSpec::Branches { branches, .. } => branches.iter_mut().for_each(|b| clear_devices(b)),
            _ => {}
        }
    }
}

/// The chains inside a container spec (none for a leaf).
fn children(spec: &LayerSpec) -> Vec<&Vec<NamedLayer>> {
    match spec {
        LayerSpec::Sequential(inner) => vec![inner],
        LayerSpec::Residual { body, shortcut } => std::iter::once(body).chain(shortcut.as_ref()).collect(),
        LayerSpec::Branches { branches, .. } => branches.iter().collect(),
        _ => vec![],
    }
}

/// Parses a device map, `encoder=gpu:0,head=cpu` (spaces allowed): layer paths and devices.
pub fn parse_device_map(text: &str) -> std::result::Result<Vec<(String, Device)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (path, device) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not `layer=device` (e.g. `encoder=gpu:0,head=cpu`)"))?;
            let device = device.trim().parse::<Device>()?;
            Ok((path.trim().to_string(), device))
        })
        .collect()
}

/// `name`, or `name_`, `name__`, … until no layer of `chain` has it.
fn unique_name(chain: &[NamedLayer], name: &str) -> String {
    let mut name = name.to_string();
    while chain.iter().any(|l| l.name == name) {
        name.push('_');
    }
    name
}

fn apply_edit(spec: &mut ModelSpec, e: &Edit) -> bool {
    match e {
        Edit::SetDevice { path, device } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                // The whole layer or block: the layers inside inherit it.
                clear_devices(std::slice::from_mut(&mut chain[i]));
                chain[i].device = Some(*device);
                true
            }
            None => false,
        },
        Edit::SetInput { sample } => {
            spec.input = Some(sample.clone());
            true
        }
        Edit::AppendLinear { in_features, out_features } => {
            let name = spec.layers.len().to_string();
            spec.layers.push(NamedLayer {
                name,
                spec: LayerSpec::Linear { in_features: Some(*in_features), out_features: *out_features, bias: true },
                origin: None,
                device: None,
                init: Default::default(),
            });
            true
        }
        Edit::SetShortcut { path, in_features, out_features } => match find(&mut spec.layers, path) {
            Some((chain, i)) => match &mut chain[i].spec {
                LayerSpec::Residual { shortcut, .. } => {
                    let proj =
                        LayerSpec::Linear { in_features: Some(*in_features), out_features: *out_features, bias: true };
                    *shortcut = Some(vec![NamedLayer {
                        name: "proj".into(),
                        spec: proj,
                        origin: None,
                        device: None,
                        init: Default::default(),
                    }]);
                    true
                }
                _ => false,
            },
            None => false,
        },
        Edit::InsertFlattenBefore { path } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                let name = unique_name(chain, "flatten");
                chain.insert(
                    i,
                    NamedLayer {
                        name,
                        spec: LayerSpec::Flatten { start_dim: 1, end_dim: -1 },
                        origin: None,
                        device: None,
                        init: Default::default(),
                    },
                );
                true
            }
            None => false,
        },
        Edit::SetShortcutLayers { path, layers } => match find(&mut spec.layers, path) {
            Some((chain, i)) => match &mut chain[i].spec {
                LayerSpec::Residual { shortcut, .. } => {
                    *shortcut = Some(layers.clone());
                    true
                }
                _ => false,
            },
            None => false,
        },
        Edit::InsertBefore { path, name, spec: layer } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                let name = unique_name(chain, name);
                chain.insert(
                    i,
                    NamedLayer { name, spec: layer.clone(), origin: None, device: None, init: Default::default() },
                );
                true
            }
            None => false,
        },
        Edit::Append { chain, name, spec: layer } => match find_chain(&mut spec.layers, chain) {
            Some(chain) => {
                let name = unique_name(chain, name);
                chain.push(NamedLayer {
                    name,
                    spec: layer.clone(),
                    origin: None,
                    device: None,
                    init: Default::default(),
                });
                true
            }
            None => false,
        },
        Edit::Replace { path, spec: layer } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                chain[i].spec = layer.clone();
                true
            }
            None => false,
        },
        Edit::SetInputDType { dtype } => {
            spec.input_dtype = *dtype;
            true
        }
        Edit::SetConcatDim { path, dim: d } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            match &mut chain[i].spec {
                LayerSpec::Branches { merge: Merge::Concat { dim }, .. } => *dim = *d,
                _ => return false,
            }
            true
        }
        Edit::Remove { path } => match find(&mut spec.layers, path) {
            Some((chain, i)) => {
                chain.remove(i);
                true
            }
            None => false,
        },
        // A key of one layer: the layer's kind applies it.
        Edit::SetInFeatures { path, .. }
        | Edit::SetOutFeatures { path, .. }
        | Edit::SetFlattenRange { path, .. }
        | Edit::SetInChannels { path, .. }
        | Edit::SetOutChannels { path, .. }
        | Edit::SetNumFeatures { path, .. }
        | Edit::SetInputSize { path, .. }
        | Edit::SetHiddenSize { path, .. }
        | Edit::SetWindow { path, .. }
        | Edit::SetDim { path, .. }
        | Edit::SetNormalizedShape { path, .. }
        | Edit::SetEmbeddingDim { path, .. }
        | Edit::SetGroups { path, .. } => {
            let Some((chain, i)) = find(&mut spec.layers, path) else { return false };
            let Some(mut layer) = chain[i].spec.layer() else { return false };
            if !layer.apply_edit(e) {
                return false;
            }
            chain[i].spec = layer.to_spec();
            true
        }
    }
}
