//! The checkpoint check: a state_dict's tensors against a checked spec, layer by layer, before
//! anything is loaded.

use super::error::{ShapeError, ShapeErrorKind};
use super::fix::{Edit, Fix};
use super::report::CheckReport;
use crate::state_dict::StateDict;

/// Checks a checkpoint (state_dict) against a resolved spec: for each layer, its tensors'
/// shapes; then tensors that no layer uses. `source` names the checkpoint in messages.
pub fn check_checkpoint(report: &CheckReport, sd: &StateDict, source: &str) -> Vec<ShapeError> {
    let mut errors = vec![];
    let mut used = std::collections::HashSet::new();
    for row in &report.trace {
        let Some(mut params) = row.spec.own_parameter_shapes() else { continue };
        params.extend(row.spec.own_buffer_shapes().unwrap_or_default());
        if row.spec.is_block() {
            continue;
        }
        let (mut mismatched, mut missing) = (vec![], vec![]);
        let mut saved_linear = None;
        for (name, shape) in params {
            let key = format!("{}.{name}", row.layer.path);
            used.insert(key.clone());
            match sd.get(&key) {
                None => missing.push(key),
                Some(t) if t.dims() != shape.as_slice() => {
                    if name == "weight" && t.ndim() == 2 {
                        saved_linear = Some((t.dims()[1], t.dims()[0]));
                    }
                    mismatched.push((key, format!("{shape:?}"), format!("{:?}", t.dims())));
                }
                Some(_) => {}
            }
        }
        if mismatched.is_empty() && missing.is_empty() {
            continue;
        }
        let name = &row.layer.path;
        let fixes = match saved_linear {
            Some((i, o)) => vec![
                Fix {
                    text: format!(
                        "the checkpoint was saved with {name} as Linear({i}, {o}): make {name} Linear({i}, {o})"
                    ),
                    edits: vec![
                        Edit::SetInFeatures { path: row.layer.path.clone(), value: i },
                        Edit::SetOutFeatures { path: row.layer.path.clone(), value: o },
                    ],
                },
                Fix { text: "load a checkpoint saved from this architecture".into(), edits: vec![] },
            ],
            None => vec![Fix { text: "load a checkpoint saved from this architecture".into(), edits: vec![] }],
        };
        errors.push(ShapeError {
            layer: Some(row.layer.clone()),
            input: None,
            kind: ShapeErrorKind::Checkpoint { source: source.into(), mismatched, missing },
            fixes,
        });
    }
    let extra: Vec<String> = sd.keys().filter(|k| !used.contains(*k)).map(String::from).collect();
    if !extra.is_empty() {
        errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::CheckpointExtra { source: source.into(), keys: extra },
            fixes: vec![Fix {
                text: "load a checkpoint saved from this architecture, or add the layers it was saved with".into(),
                edits: vec![],
            }],
        });
    }
    errors
}
