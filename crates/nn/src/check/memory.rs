//! The memory check: a model whose training could never fit in this machine's memory is
//! refused before anything is allocated.

use super::error::{ShapeError, ShapeErrorKind};
use super::fix::Fix;
use super::report::CheckReport;
use super::shape::dtype_name;
use strata_core::DType;

/// Copies of each parameter that training keeps: the weights, their gradients and up to two
/// optimizer buffers (Adam's moments).
pub const TRAINING_COPIES: u128 = 4;

/// Refuses, as shape errors, a model whose training could never fit in `memory` bytes: a layer
/// whose parameters (with their gradients and optimizer state, [`TRAINING_COPIES`] in all) or
/// whose output for a single sample exceed it, or a model whose parameters together do (the
/// error then names the largest layers). Sizes are computed without overflow; a size that
/// overflows is "more than" any memory.
pub fn check_memory(report: &mut CheckReport, dtype: DType, memory: u64) {
    check_memory_copies(report, dtype, memory, TRAINING_COPIES);
}

/// [`check_memory`] counting `copies` of each parameter: [`TRAINING_COPIES`] for a model to be
/// trained, 1 for one that is only run or converted (evaluation, prediction, export), which
/// keeps no gradients or optimizer state.
pub fn check_memory_copies(report: &mut CheckReport, dtype: DType, memory: u64, copies: u128) {
    let elem = dtype.size_in_bytes() as u128;
    let with_state = if copies > 1 { " with gradients and optimizer state" } else { "" };
    let memory = u128::from(memory);
    let mut total: u128 = 0;
    let mut sizes: Vec<(u128, usize)> = vec![];
    let mut too_large: Vec<(usize, ShapeError)> = vec![];
    for (i, r) in report.trace.iter().enumerate() {
        if r.spec.is_block() {
            continue;
        }
        let shapes = r.spec.own_parameter_shapes().unwrap_or_default();
        let buffers = r.spec.own_buffer_shapes().unwrap_or_default();
        let params: u128 = shapes
            .iter()
            .chain(buffers.iter())
            .map(|(_, s)| s.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128)))
            .fold(0u128, u128::saturating_add);
        // A size the shape rules saturated (`usize::MAX`) makes every figure from it a lower
        // bound, said with `≥`, not a size.
        let at_least = |over: bool| if over { "≥" } else { "" };
        let params_over = shapes.iter().chain(buffers.iter()).any(|(_, s)| s.contains(&usize::MAX));
        let sample = r.output.sample();
        let output_over = sample.as_ref().is_some_and(|s| s.contains(&usize::MAX));
        let train_bytes = params.saturating_mul(elem).saturating_mul(copies);
        let activation = sample.map_or(0u128, |s| s.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128)));
        let activation = activation.saturating_mul(elem);
        total = total.saturating_add(train_bytes);
        sizes.push((train_bytes, i));
        let what = if train_bytes > memory {
            let p = at_least(params_over);
            let state =
                if copies > 1 { format!(" ({p}{}{with_state})", human_bytes_u128(train_bytes)) } else { String::new() };
            format!(
                "its {p}{} parameters take {p}{} in {}{state}",
                group_digits_u128(params),
                human_bytes_u128(params.saturating_mul(elem)),
                dtype_name(dtype),
            )
        } else if activation > memory {
            let o = at_least(output_over);
            format!("its output for a single sample takes {o}{}", human_bytes_u128(activation))
        } else {
            continue;
        };
        too_large.push((i, ShapeError {
            layer: Some(r.layer.clone()),
            input: Some(r.input.clone()),
            kind: ShapeErrorKind::BadLayer {
                reason: format!("{what}: more than this machine's {} of memory", human_bytes_u128(memory)),
            },
            fixes: vec![Fix {
                text: "make the layer smaller (fewer features or channels), or shrink its input (pooling, a smaller image)"
                    .into(),
                edits: vec![],
            }],
        }));
    }
    for (i, e) in too_large {
        report.trace[i].error = Some(report.errors.len());
        report.errors.push(e);
    }
    if report.errors.is_empty() && total > memory {
        sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
        let largest: Vec<String> = sizes
            .iter()
            .take(3)
            .map(|&(b, i)| format!("`{}` {}", report.trace[i].layer.path, human_bytes_u128(b)))
            .collect();
        report.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::BadLayer {
                reason: format!(
                    "the model's parameters take {}{with_state}, more than this machine's {} of memory; the largest layers: {}",
                    human_bytes_u128(total),
                    human_bytes_u128(memory),
                    largest.join(", ")
                ),
            },
            fixes: vec![Fix { text: "make the largest layers smaller".into(), edits: vec![] }],
        });
    }
}

/// `1234567` → `1,234,567`, for sizes past `usize`.
pub(crate) fn group_digits_u128(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as `512 B`, `3.0 GiB`, `14.6 TiB`.
pub(crate) fn human_bytes_u128(b: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelSpec;
    use crate::check::check_shapes;

    #[test]
    fn training_counts_four_copies_of_the_parameters_running_one() {
        // 1000×1000 weights and 1000 biases: 4,004,000 bytes in f32.
        let spec = ModelSpec::new("m").input(&[1000]).linear("fc", 1000, 1000);
        let check = |memory: u64, copies: u128| {
            let mut report = check_shapes(&spec, None, None);
            check_memory_copies(&mut report, DType::F32, memory, copies);
            report.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
        };
        // 8 MB holds the weights, not training's 16 MB.
        let e = check(8_000_000, TRAINING_COPIES);
        assert!(e.contains("3.8 MiB in f32 (15.3 MiB with gradients and optimizer state)"), "{e}");
        assert_eq!(check(8_000_000, 1), "");
        let e = check(3_000_000, 1);
        assert!(e.contains("take 3.8 MiB in f32: more than this machine's 2.9 MiB"), "{e}");
    }
}
