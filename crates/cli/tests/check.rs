//! `strata check` and `strata summary` on the example model files: the trace and summary on
//! success (exit 0), every error on failure (exit 1), compared with snapshots.

use std::process::Command;

fn strata(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("the strata binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_passes_simple_nn() {
    let (code, stdout, stderr) = strata(&["check", "examples/simple_nn.toml", "--classes", "10"]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("check_simple_nn", stdout);
}

#[test]
fn check_explains_the_broken_example() {
    let (code, stdout, stderr) = strata(&["check", "examples/broken_simple_nn.toml"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("✗ error 1"));
    insta::assert_snapshot!("check_broken_simple_nn", stderr);
}

#[test]
fn check_with_an_image_input_suggests_flatten() {
    let (code, _, stderr) = strata(&["check", "examples/simple_nn.toml", "--input", "1x28x28"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("fix: insert Flatten before fc1 (it turns [N, 1, 28, 28] into [N, 784])"), "{stderr}");
    let (code, _, stderr) = strata(&["check", "examples/simple_nn.toml", "--input", "28y28"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--input: `28y28` is not a sample shape"), "{stderr}");
}

#[test]
fn check_reports_a_checkpoint_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.safetensors");
    let (code, _, stderr) = strata(&["train", "--epochs", "1", "--save", ok.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = strata(&["check", "examples/simple_nn.toml", "--weights", ok.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("fits"));
    let (code, _, stderr) = strata(&["check", "examples/mlp_inferred.toml", "--weights", ok.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does not fit it"), "{stderr}");
    // A training checkpoint (parameters and optimizer state) is checked by its parameters.
    let run = dir.path().join("run");
    let (code, _, stderr) = strata(&["train", "--epochs", "1", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let best = run.join("checkpoints/best.safetensors");
    let (code, stdout, stderr) = strata(&["check", "examples/simple_nn.toml", "--weights", best.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("fits"), "{stdout}");
}

/// A model file whose Flatten output overflows a `usize` (2^31 × 2^31 pooled positions on 6
/// channels) is refused with the layer and the memory it would need (exit 1), not a panic
/// (exit 101), by `check`, `summary` and `train` alike.
#[test]
fn a_flatten_past_usize_max_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("huge.toml");
    std::fs::write(
        &model,
        r#"input = [1, 28, 28]
layers = [
  { name = "conv", type = "Conv2d", in_channels = 1, out_channels = 6, kernel_size = 3 },
  { name = "pool", type = "AdaptiveAvgPool2d", output_size = 2147483648 },
  { name = "flat", type = "Flatten" },
  { name = "head", type = "Linear", out_features = 10 },
]
"#,
    )
    .unwrap();
    let model = model.to_str().unwrap();
    let out = dir.path().join("run");
    for args in [
        vec!["check", model],
        vec!["summary", model],
        vec!["train", "--model", model, "--epochs", "1", "--quiet", "--out", out.to_str().unwrap()],
    ] {
        let (code, _, stderr) = strata(&args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        // The memory check that refuses it needs the machine's memory (/proc/meminfo).
        if std::path::Path::new("/proc/meminfo").exists() {
            assert_eq!(code, 1, "{args:?}: {stderr}");
            assert!(
                stderr.contains("layer `flat` (Flatten") && stderr.contains("more than this machine's"),
                "{stderr}"
            );
        }
    }
}

/// `summary --batch-size 0` (taken as 1) and `check --classes 0` (which suggested a Linear
/// layer with no outputs) are refused by the flag, saying what to give; 1 is fine for both.
#[test]
fn a_batch_or_class_count_of_zero_is_refused() {
    for (args, says) in [
        (
            &["summary", "examples/simple_nn.toml", "--batch-size", "0"][..],
            "error: invalid value '0' for '--batch-size <BATCH_SIZE>': give at least 1: the activations column is the memory of a batch of that many samples",
        ),
        (
            &["check", "examples/simple_nn.toml", "--classes", "0"],
            "error: invalid value '0' for '--classes <N>': give the number of classes the model's data has, from 1 to 2147483648 (e.g. --classes 10 for MNIST's digits): the check is that the model ends in one logit per class",
        ),
    ] {
        let (code, stdout, stderr) = strata(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with(says), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    let (code, stdout, stderr) = strata(&["summary", "examples/simple_nn.toml", "--batch-size", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("activations (N=1)"), "{stdout}");
    let (code, _, stderr) = strata(&["check", "examples/simple_nn.toml", "--classes", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("fix: make fc3 Linear(64, 1)"), "{stderr}");
}

/// A size whose count overflows 64 bits (a Flatten of 6 × 2^31 × 2^31 values, and the Linear
/// after it) is shown as a lower bound, `≥18446744073709551615`, never as the saturated number
/// as if it were the size, in the trace and the errors; so are the figures computed from it
/// (`≥64.0 EiB`).
#[test]
fn a_size_that_overflows_is_never_shown_as_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("huge.toml");
    std::fs::write(
        &model,
        r#"name = "Overflowing"
input = [1, 28, 28]
layers = [
  { name = "conv", type = "Conv2d", in_channels = 1, out_channels = 6, kernel_size = 3 },
  { name = "pool", type = "AdaptiveAvgPool2d", output_size = 2147483648 },
  { name = "flat", type = "Flatten" },
  { name = "head", type = "Linear", out_features = 10 },
]
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = strata(&["check", model.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    // Every saturated size is marked as a lower bound (`≥`), never printed as if it were one.
    let all = format!("{stdout}{stderr}");
    for saturated in ["18446744073709551615", "18,446,744,073,709,551,615"] {
        for (at, _) in all.match_indices(saturated) {
            assert!(all[..at].ends_with('≥'), "{saturated} at {at} without ≥: {all}");
        }
    }
    insta::assert_snapshot!("check_overflowing_trace", stdout);
    // The memory check that refuses it needs the machine's memory (/proc/meminfo).
    if std::path::Path::new("/proc/meminfo").exists() {
        for says in [
            "error: layer `flat` (Flatten, position 3) receives [N, 6, 2147483648, 2147483648]\n  its output for a single sample takes ≥64.0 EiB: more than this machine's",
            "error: layer `head` (Linear ≥18446744073709551615 → 10, position 4) receives [N, ≥18446744073709551615]\n  its ≥184,467,440,737,095,516,160 parameters take ≥640.0 EiB in f32",
        ] {
            assert!(stderr.contains(says), "{says}\n{stderr}");
        }
    }
}

#[test]
fn summary_of_simple_nn() {
    let (code, stdout, stderr) = strata(&["summary", "examples/simple_nn.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("109,386"));
    insta::assert_snapshot!("summary_simple_nn", stdout);
}

#[test]
fn train_takes_a_model_file_and_refuses_a_broken_one() {
    let (code, stdout, stderr) = strata(&["train", "--model", "examples/mlp_inferred.toml", "--epochs", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("InferredMLP from examples/mlp_inferred.toml"));
    let (code, stdout, stderr) = strata(&["train", "--model", "examples/broken/wrong_classes.toml"]);
    assert_eq!(code, 1);
    assert!(!stdout.contains("epoch"), "a broken model must not start training");
    assert!(stderr.contains("but the data has 10 classes"), "{stderr}");
    let (code, _, stderr) = strata(&["train", "--model", "examples/broken/unknown_key.toml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown key `out_feature`"), "{stderr}");
}

#[test]
fn every_example_model_checks_and_summarizes() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    let mut checked = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Model files have top-level `layers`; run files point at one with `model`.
        let is_model = path.extension().is_some_and(|e| e == "toml")
            && text.lines().any(|l| l.starts_with("layers") || l.starts_with("[[layers]]"));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !is_model || name.starts_with("broken") {
            continue;
        }
        let file = format!("examples/{name}");
        // A placed example names GPUs this machine may lack: checked here with every block on
        // the CPU (tests/device.rs checks and trains it on GPUs).
        let all_cpu = ["--device-map", "encoder=cpu,mid=cpu,head=cpu"];
        let map: &[&str] = if name == "split_devices.toml" { &all_cpu } else { &[] };
        let (code, stdout, stderr) = strata(&[&["check", file.as_str()][..], map].concat());
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stdout.contains("ok: "), "{file}: {stdout}");
        let (code, stdout, stderr) = strata(&[&["summary", file.as_str()][..], map].concat());
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stdout.contains(" parameters ("), "{file}: {stdout}");
        checked.push(name);
    }
    checked.sort();
    for expected in ["embedding_lstm.toml", "inception_mlp.toml", "resnet_mnist_model.toml", "simple_nn.toml"] {
        assert!(checked.iter().any(|c| c == expected), "{expected} was not checked: {checked:?}");
    }
}

#[test]
fn branches_and_token_ids_in_the_cli() {
    let (code, stdout, stderr) = strata(&["summary", "examples/embedding_lstm.toml"]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("summary_embedding_lstm", stdout);
    let (code, stdout, stderr) = strata(&["check", "examples/broken/add_mismatch.toml"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("fix: append a projection Linear(64, 128) to block.branches.0"), "{stderr}");
    // A model with branches trains; one over token ids is refused before any data is read.
    let (code, stdout, stderr) = strata(&["train", "--model", "examples/inception_mlp.toml", "--epochs", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("InceptionMLP from examples/inception_mlp.toml"), "{stdout}");
    let (code, _, stderr) = strata(&["train", "--model", "examples/embedding_lstm.toml", "--epochs", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("takes i64 token ids (input_dtype)"), "{stderr}");
}

/// The faults catalogue (`examples/broken/faults/`, issue 14): each file makes `check` or
/// `train` refuse with a message naming what, where and a fix, exit 1, no panic. The machine's
/// memory and core count are replaced by placeholders so the snapshot holds anywhere.
#[test]
fn faults_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut report = String::new();
    for (file, command) in [
        ("too_large_model.toml", "check"),
        ("too_large_batch_run.toml", "train"),
        ("diverging_run.toml", "train"),
        ("bad_numbers_run.toml", "train"),
        ("nan_momentum_run.toml", "train"),
        ("too_many_threads_run.toml", "train"),
        ("zero_std_run.toml", "train"),
        ("bad_clip_run.toml", "train"),
    ] {
        let path = format!("examples/broken/faults/{file}");
        let args: Vec<&str> = match command {
            "check" => vec!["check", &path],
            _ => vec!["train", &path, "--quiet", "--out", out],
        };
        let (code, _, stderr) = strata(&args);
        assert_eq!(code, 1, "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        let mut text = stderr.replace(out, "RUN_DIR");
        // "this machine's 23.5 GiB" and "use --batch-size 481 or less" depend on the machine.
        for marker in ["this machine's ", "--batch-size "] {
            text = redact_number(&text, marker);
        }
        let text = text
            .replace(&format!("between 1 and {}", 4 * cores), "between 1 and [4 per core]")
            .replace(&format!("this machine has {cores} cores"), "this machine has [cores] cores");
        report.push_str(&format!("$ strata {command} {path}\n{text}\n"));
    }
    insta::assert_snapshot!("faults_catalogue", report);
}

/// `text` with the number (and its byte unit, if any) after each `marker` replaced by
/// `[machine]`.
fn redact_number(text: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let start = at + marker.len();
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let digits = tail.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(tail.len());
        let mut end = digits;
        for unit in [" B", " KiB", " MiB", " GiB", " TiB", " PiB"] {
            if digits > 0 && tail[digits..].starts_with(unit) {
                end = digits + unit.len();
            }
        }
        out.push_str(if digits > 0 { "[machine]" } else { "" });
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}
