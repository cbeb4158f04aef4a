//! `strata convert` and `strata train --init`: a PyTorch state_dict (the committed fixture made
//! by `tools/make_pt_fixtures.py`) converted to safetensors, and a run started from it — its
//! first loss is the loss of those weights, not of a fresh initialisation; weights that do not
//! fit the model are listed key by key; a malicious file is refused and runs nothing.

use std::path::Path;
use std::process::Command;
use strata_core::Tensor;
use strata_nn::module::load_file;
use strata_nn::{CrossEntropyLoss, Module, SimpleNN};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const PT: &str = "crates/nn/tests/fixtures/torch_pt/simple_nn.pt";

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(STRATA).current_dir(ROOT).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The loss of the first step of a one-step (full-batch) run, from its JSON events.
fn first_loss(extra: &[&str]) -> f64 {
    let args = [&["train", "--epochs", "1", "--batch-size", "full", "--set", "training.log_every=1", "--json"], extra]
        .concat();
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let step = out.lines().find(|l| l.contains(r#""event":"step""#)).unwrap_or_else(|| panic!("no step event: {out}"));
    let v: serde_json::Value = serde_json::from_str(step).unwrap();
    v["loss"].as_f64().unwrap()
}

/// SimpleNN with the weights of `file`, over the whole normalised training set (the embedded
/// MNIST subset, as `strata train` prepares it): the mean cross-entropy.
fn loss_of(file: &Path) -> f64 {
    let (mut train, _) = strata_data::embedded_mnist().unwrap();
    train.normalize(strata_data::MNIST_MEAN, strata_data::MNIST_STD).unwrap();
    let model = SimpleNN::new().unwrap();
    load_file(&model, file, true).unwrap();
    let x = Tensor::from_vec(train.features.clone(), &[train.len(), 784]).unwrap();
    let y = Tensor::from_vec(train.labels.iter().map(|&l| l as i64).collect::<Vec<i64>>(), &[train.len()]).unwrap();
    let loss = CrossEntropyLoss::new().forward(&model.forward(&x).unwrap(), &y).unwrap();
    loss.to_vec_f64()[0]
}

#[test]
fn a_run_starts_from_converted_pytorch_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("simple_nn.safetensors");
    let st = st.to_str().unwrap();
    let (ok, out, err) = run(&["convert", PT, "-o", st]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("name        dtype    shape\nfc1.weight  float32  [128, 784]\nfc1.bias    float32  [128]\n"),
        "{out}"
    );
    assert!(out.ends_with(&format!("wrote {st}: 6 tensors, 109,386 values, from {PT}\n")), "{out}");
    // Without --force an existing file is kept.
    let (ok, _, err) = run(&["convert", PT, "-o", st]);
    assert!(!ok && err.contains("the file exists; pass --force to replace it"), "{err}");
    let (ok, _, err) = run(&["convert", PT, "-o", st, "--force", "--model", "examples/simple_nn.toml"]);
    assert!(ok, "{err}");

    let from_pt = first_loss(&["--init", PT]);
    let from_st = first_loss(&["--init", st]);
    let from_run_file_key = first_loss(&["--set", &format!("training.init=\"{PT}\"")]);
    let fresh = first_loss(&[]);
    assert_eq!(from_pt.to_bits(), from_st.to_bits());
    assert_eq!(from_pt.to_bits(), from_run_file_key.to_bits());
    assert!((from_pt - fresh).abs() > 1e-3, "--init changed nothing: {from_pt} vs {fresh}");
    // The same loss as those weights evaluated directly (summed in another order: to rounding).
    let direct = loss_of(Path::new(st));
    assert!((from_pt - direct).abs() <= 1e-5 * direct.abs(), "{from_pt} vs {direct}");
}

#[test]
fn weights_that_do_not_fit_are_listed_key_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("narrow.toml");
    std::fs::write(
        &model,
        r#"name = "Narrow"
input = [784]
layers = [
  { name = "fc1", type = "Linear", in_features = 784, out_features = 128 },
  { type = "ReLU" },
  { name = "fc2", type = "Linear", in_features = 128, out_features = 32 },
  { type = "ReLU" },
  { name = "head", type = "Linear", in_features = 32, out_features = 10 },
]
"#,
    )
    .unwrap();
    let (ok, _, err) = run(&["train", "--model", model.to_str().unwrap(), "--init", PT, "--epochs", "1", "--quiet"]);
    assert!(!ok);
    insta::assert_snapshot!("init_mismatch", err);

    let (ok, _, err) = run(&["train", "--init", PT, "--resume", "runs/x"]);
    assert!(!ok);
    assert!(err.starts_with(&format!("error: --init {PT} cannot be given with --resume runs/x")), "{err}");
}

/// `convert --model` with weights that do not fit lists them as `--init` does, and its fix
/// says what the command line offers — strata-nn's own message ends in its API's
/// `strict = false`, which no command has; nothing is written.
#[test]
fn converted_weights_that_do_not_fit_the_model_name_the_commands_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("narrow.toml");
    std::fs::write(
        &model,
        "name = \"Narrow\"\ninput = [784]\nlayers = [\n  { name = \"fc1\", type = \"Linear\", in_features = 784, out_features = 10 },\n]\n",
    )
    .unwrap();
    let out = tmp.path().join("w.safetensors");
    let (ok, _, err) = run(&["convert", PT, "-o", out.to_str().unwrap(), "--model", model.to_str().unwrap()]);
    assert!(!ok);
    assert!(!err.contains("strict = false"), "{err}");
    insta::assert_snapshot!("convert_mismatch", err.replace(tmp.path().to_str().unwrap(), "[TMP]"));
    assert!(!out.exists());
}

const MARKER: &str = "/tmp/strata-torch-convert-pwned";

#[test]
fn malicious_files_are_refused_and_run_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.safetensors");
    let _ = std::fs::remove_file(MARKER);
    let bad = "crates/nn/tests/fixtures/torch_pt/malicious.pt";
    let (ok, _, err) = run(&["convert", bad, "-o", out.to_str().unwrap()]);
    assert!(!ok && err.contains("refused: the pickle asks for the Python global `posix.system`"), "{err}");
    assert!(!out.exists());
    let (ok, _, err) = run(&["train", "--init", bad, "--epochs", "1", "--quiet"]);
    assert!(!ok && err.contains(&format!("{bad}: refused")), "{err}");
    assert!(!Path::new(MARKER).exists(), "the command in the file ran");
}
