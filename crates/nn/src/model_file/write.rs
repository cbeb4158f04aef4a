//! Writing a spec back as a model file: the model's keys here, each layer's keys by its kind
//! ([`crate::layer::Layer::write_toml`]), the containers' chains here.

use crate::check::shape::dtype_name;
use crate::init::LayerInit;
use crate::spec::{LayerSpec, Merge, ModelSpec, NamedLayer};
use strata_core::{ConvAlgorithm, DType};

/// The model file text for a spec: what `parse_model` reads back to an equal spec (without
/// origins). Checkpoints store it so `strata eval` can rebuild the model.
pub fn to_toml(spec: &ModelSpec) -> String {
    let mut s = format!("name = {:?}\n", spec.name);
    if let Some(input) = &spec.input {
        s.push_str(&format!("input = {input:?}\n"));
    }
    if spec.input_dtype != DType::F32 {
        s.push_str(&format!("input_dtype = {:?}\n", dtype_name(spec.input_dtype)));
    }
    if spec.conv_algorithm != ConvAlgorithm::Default {
        s.push_str(&format!("conv_algorithm = {:?}\n", spec.conv_algorithm.name()));
    }
    if spec.dtype != DType::F32 {
        s.push_str(&format!("dtype = {:?}\n", dtype_name(spec.dtype)));
    }
    if let Some(d) = spec.device {
        s.push_str(&format!("device = \"{d}\"\n"));
    }
    for (key, scheme) in init_fields(&spec.init) {
        s.push_str(&format!("{key} = {scheme}\n"));
    }
    s.push_str("layers = [\n");
    for l in &spec.layers {
        s.push_str(&format!("  {},\n", layer_toml(l)));
    }
    s.push_str("]\n");
    s
}

fn chain_toml(layers: &[NamedLayer]) -> String {
    layers.iter().map(layer_toml).collect::<Vec<_>>().join(", ")
}

fn layer_toml(l: &NamedLayer) -> String {
    let mut fields = vec![format!("name = {:?}", l.name), format!("type = {:?}", l.spec.type_name())];
    if let Some(d) = l.device {
        fields.push(format!("device = \"{d}\""));
    }
    fields.extend(init_fields(&l.init).map(|(key, scheme)| format!("{key} = {scheme}")));
    match &l.spec {
        LayerSpec::Branches { branches, merge } => {
            if let Merge::Concat { dim } = merge {
                fields.push(format!("dim = {dim}"));
            }
            let chains: Vec<String> = branches.iter().map(|b| format!("[{}]", chain_toml(b))).collect();
            fields.push(format!("branches = [{}]", chains.join(", ")));
        }
        LayerSpec::Sequential(inner) => fields.push(format!("layers = [{}]", chain_toml(inner))),
        LayerSpec::Residual { body, shortcut } => {
            fields.push(format!("layers = [{}]", chain_toml(body)));
            if let Some(s) = shortcut {
                fields.push(format!("shortcut = [{}]", chain_toml(s)));
            }
        }
        leaf => {
            if let Some(layer) = leaf.layer() {
                layer.write_toml(&mut fields);
            }
        }
    }
    format!("{{ {} }}", fields.join(", "))
}

/// `init` and `bias_init` with their schemes as model-file values, those that are set.
fn init_fields(init: &LayerInit) -> impl Iterator<Item = (&'static str, String)> {
    [("init", init.weight), ("bias_init", init.bias)].into_iter().filter_map(|(k, s)| Some((k, s?.to_toml())))
}
