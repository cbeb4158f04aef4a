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
        let (code, stdout, stderr) = strata(&["check", &file]);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stdout.contains("ok: "), "{file}: {stdout}");
        let (code, stdout, stderr) = strata(&["summary", &file]);
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
