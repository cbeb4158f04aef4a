//! Fuzz tests of the nn crate's readers of user files (issue 14): thousands of mutations of
//! every example model file go through the model-file parser and the shape check, and mutations
//! of a saved state_dict through the safetensors reader and `load_state_dict`. None may panic,
//! every error names its file, and no input makes a reader allocate more than 64 MiB at once
//! (the allocator records each thread's largest request).

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use strata_core::testing::{RecordingAllocator, mutate, take_largest_allocation};
use strata_nn::check::check_spec;
use strata_nn::model_file::parse_model;
use strata_nn::{ModelSpec, Module, StateDict};

#[global_allocator]
static ALLOCATOR: RecordingAllocator = RecordingAllocator;

/// The most one allocation may take while reading a mutated file: the seeds are a few KiB, so
/// anything near this means a size was taken from the input unchecked.
const ALLOCATION_BOUND: usize = 64 << 20;

/// Every model and run file under `examples/` (and `examples/broken/`): the seeds.
fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out = vec![];
    for dir in [root.clone(), root.join("broken")] {
        for entry in std::fs::read_dir(&dir).expect("examples/ is in the repository") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "only {} seed files", out.len());
    out
}

fn ops() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
}

/// Sizes a user may write in place of a number: zero, one, huge, the largest a model file
/// allows (2^31: two of them make a plane of 2^62 values), overflowing, negative.
const VALUES: [&str; 11] =
    ["0", "1", "3", "1000", "65536", "2147483648", "4294967296", "99999999999999999999", "-2", "0.5", "1e9"];

/// Replaces the `k`-th number of `text` (counting from its first, wrapping) with `VALUES[v]`:
/// a mutation that keeps the file well-formed, so it reaches the shape check and the build.
fn swap_number(text: &str, k: usize, v: usize) -> String {
    let runs: Vec<(usize, usize)> = {
        let b = text.as_bytes();
        let mut runs = vec![];
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                runs.push((start, i));
            } else {
                i += 1;
            }
        }
        runs
    };
    if runs.is_empty() {
        return text.to_string();
    }
    let (a, b) = runs[k % runs.len()];
    format!("{}{}{}", &text[..a], VALUES[v % VALUES.len()], &text[b..])
}

/// A parsed model: checked, summarised, and (when small) built and run on one sample.
fn exercise(spec: &ModelSpec) {
    let report = check_spec(spec, None, None);
    if !report.errors.is_empty() {
        let _ = report.render_errors();
        return;
    }
    let summary = strata_nn::Summary::from_report(&report, 2);
    let _ = summary.render();
    // Small in every way the forward pass pays for: parameters, output, input, every layer's
    // activations and the multiply-adds (a mutated padding or kernel can make a layer in the
    // middle huge while the ends stay small; such a run took minutes and gigabytes).
    let small = summary.total_params.saturating_add(summary.total_non_trainable) < 200_000
        && summary.total_activation_bytes < 64 << 20
        && summary.total_macs < 1 << 28
        && report.output.as_ref().is_some_and(|o| o.sample_numel() < 1 << 16)
        && spec.input.as_ref().is_some_and(|i| i.iter().product::<usize>() < 1 << 14);
    if small && let Ok(model) = spec.build() {
        let mut dims = vec![1];
        dims.extend(spec.input.clone().unwrap());
        let x = match spec.input_dtype {
            strata_core::DType::I64 => strata_core::Tensor::zeros(&dims, strata_core::DType::I64),
            _ => strata_core::Tensor::zeros(&dims, spec.dtype),
        };
        let _ = strata_core::no_grad(|| model.forward(&x));
    }
}

/// Thousands of mutated model files; at least a tenth of them must still parse, so that the
/// check, the summary and the build are fuzzed too, not only the TOML reader.
#[test]
fn mutated_model_files_never_panic_and_name_the_file() {
    let seeds = seeds();
    let parsed = std::cell::Cell::new(0usize);
    let config = ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(
            &(any::<prop::sample::Index>(), ops(), prop::option::of((any::<usize>(), any::<usize>()))),
            |(which, ops, swap)| {
                let (path, seed) = which.get(&seeds);
                // Either a number swapped for another (well-formed files with odd sizes) or bytes
                // mutated (anything).
                let bytes = match swap {
                    Some((k, v)) => swap_number(&String::from_utf8_lossy(seed), k, v).into_bytes(),
                    None => mutate(seed, &ops),
                };
                let text = String::from_utf8_lossy(&bytes);
                take_largest_allocation();
                match parse_model(&text, "fuzz.toml", "fuzz") {
                    Ok(spec) => {
                        parsed.set(parsed.get() + 1);
                        exercise(&spec);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        prop_assert!(
                            msg.contains("fuzz.toml"),
                            "{} mutated: error without the file name: {msg}",
                            path.display()
                        );
                    }
                }
                let largest = take_largest_allocation();
                prop_assert!(
                    largest <= ALLOCATION_BOUND,
                    "{} mutated: an allocation of {largest} bytes",
                    path.display()
                );
                Ok(())
            },
        )
        .unwrap();
    assert!(parsed.get() >= 300, "only {} of 3000 mutated files parsed", parsed.get());
}

/// A model file whose Flatten would give more values per sample than a `usize` holds (a pool
/// to 2^31 × 2^31, the largest size a model file may write, on 6 channels): the check
/// saturates the count, as everywhere else, and the memory check refuses the model. It used to
/// panic on the multiplication's overflow (`strata check` and `strata train` alike).
#[test]
fn a_flatten_past_usize_max_is_an_error_not_a_panic() {
    let text = r#"input = [1, 28, 28]
layers = [
  { name = "conv", type = "Conv2d", in_channels = 1, out_channels = 6, kernel_size = 3 },
  { name = "pool", type = "AdaptiveAvgPool2d", output_size = 2147483648 },
  { name = "flat", type = "Flatten" },
  { name = "head", type = "Linear", out_features = 10 },
]
"#;
    let spec = parse_model(text, "huge.toml", "huge").unwrap();
    let report = check_spec(&spec, None, None);
    let flat = report.trace.iter().find(|r| r.layer.path == "flat").expect("a row for the Flatten");
    // Saturated, and shown as a lower bound.
    assert_eq!(flat.output.to_string(), format!("[N, ≥{}]", usize::MAX));
    // Where the machine's memory is known (Linux), the model is refused, the Flatten named.
    if strata_core::Device::Cpu.total_memory().is_some() {
        let errors = report.render_errors();
        assert!(errors.contains("layer `flat` (Flatten") && errors.contains("more than this machine's"), "{errors}");
    }
}

/// A small model's state_dict as safetensors bytes: the seed of the checkpoint fuzz test.
fn saved_state() -> (strata_nn::Sequential, Vec<u8>) {
    let spec = ModelSpec::new("m").input(&[6]).linear("fc1", 6, 4).relu().linear("fc2", 4, 3);
    let model = spec.build().unwrap();
    let meta = [("config".to_string(), "[training]\nepochs = 1\n".to_string())].into_iter().collect();
    let bytes = model.state_dict().to_safetensors_bytes(Some(meta)).unwrap();
    (model, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_state_dicts_never_panic_and_name_the_file(ops in ops(), header in any::<bool>()) {
        let (model, seed) = saved_state();
        // Half the cases aim at the JSON header (its length prefix and text), where sizes live.
        let ops: Vec<_> = ops
            .into_iter()
            .map(|(op, pos, b)| if header { (op, pos % 200, b) } else { (op, pos, b) })
            .collect();
        let bytes = mutate(&seed, &ops);
        take_largest_allocation();
        match StateDict::from_safetensors_bytes(&bytes, Path::new("fuzz.safetensors")) {
            Ok(sd) => {
                if let Err(e) = model.load_state_dict(&sd, true) {
                    let _ = e.to_string();
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("fuzz.safetensors"), "error without the file name: {msg}");
            }
        }
        let largest = take_largest_allocation();
        prop_assert!(largest <= ALLOCATION_BOUND, "an allocation of {largest} bytes");
    }
}

/// A Residual whose input a padding of 2^31 made 4 billion wide: checked at once. Suggesting
/// its projection shortcut searched strides 1..=4 billion (7 s in a release build; any longer
/// with a larger size).
#[test]
fn a_residual_after_a_huge_padding_is_checked_at_once() {
    let text = r#"input = [1, 28, 28]
layers = [
  { name = "conv1", type = "Conv2d", in_channels = 1, out_channels = 16, kernel_size = 3, padding = 2147483648 },
  { name = "block", type = "Residual", layers = [
    { name = "conv1", type = "Conv2d", in_channels = 16, out_channels = 32, kernel_size = 3, stride = 2, padding = 3 },
  ] },
]
"#;
    let spec = parse_model(text, "wide.toml", "wide").unwrap();
    let start = std::time::Instant::now();
    let report = check_spec(&spec, None, None);
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "took {:?}", start.elapsed());
    assert!(report.render_errors().contains("layer `block` (Residual"), "{}", report.render_errors());
}
