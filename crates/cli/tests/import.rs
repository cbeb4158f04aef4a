//! `strata import`: PyTorch's ONNX exports (the fixtures of strata-nn's
//! `tests/onnx_import.rs`) become a model file and weights that `strata check` and
//! `strata summary` accept; existing files are kept unless `--force`; an unsupported graph
//! fails naming its nodes and writes nothing.

use std::path::Path;
use std::process::Command;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const FIXTURES: &str = "crates/nn/tests/fixtures/onnx_import";

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(STRATA).current_dir(ROOT).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn torch_exports_import_then_check_and_summarise() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["simple_nn", "resnet", "lstm", "gru"] {
        let dir = tmp.path().join(name);
        let d = dir.to_str().unwrap();
        let onnx = format!("{FIXTURES}/{name}.onnx");
        let (ok, stdout, err) = run(&["import", &onnx, "-o", d]);
        assert!(ok, "{name}: {err}");
        let (model, weights) = (dir.join("model.toml"), dir.join("weights.safetensors"));
        let (m, w) = (model.to_str().unwrap(), weights.to_str().unwrap());
        assert!(stdout.contains(&format!("check it with: strata check {m} --weights {w}")), "{stdout}");
        let text = std::fs::read_to_string(&model).unwrap();
        assert!(text.contains(&format!("name = \"{name}\"")), "{text}");
        let (ok, out, err) = run(&["check", m, "--weights", w]);
        assert!(ok, "{name}: strata check: {out}{err}");
        let (ok, out, err) = run(&["summary", m]);
        assert!(ok && out.contains("total") && out.contains(" parameters ("), "{name}: strata summary: {out}{err}");
    }
}

#[test]
fn existing_files_are_kept_unless_force() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let model = tmp.path().join("model.toml");
    std::fs::write(&model, "keep me").unwrap();
    let onnx = format!("{FIXTURES}/simple_nn.onnx");
    let (ok, _, err) = run(&["import", &onnx, "-o", d]);
    assert!(!ok && err.contains("already exists; pass --force"), "{err}");
    assert_eq!(std::fs::read_to_string(&model).unwrap(), "keep me");
    assert!(!tmp.path().join("weights.safetensors").exists());
    let (ok, _, err) = run(&["import", &onnx, "-o", d, "--force"]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&model).unwrap().contains("type = \"Linear\""));
}

#[test]
fn a_file_that_is_not_onnx_is_an_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.onnx");
    std::fs::write(&bad, b"\xff\xff\xff not protobuf").unwrap();
    let out = tmp.path().join("out");
    let (ok, _, err) = run(&["import", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!ok && err.contains("not a valid ONNX model"), "{err}");
    assert!(!Path::new(&out).exists());
}
