//! A run killed with SIGKILL in the middle of an epoch and resumed ends with bit-identical
//! parameters to the same run never interrupted; Ctrl-C (SIGINT) stops after the current step
//! with a checkpoint that resumes the same way.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn train(args: &[&str]) -> std::process::Output {
    Command::new(STRATA).arg("train").args(args).output().unwrap()
}

fn params(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let sd = strata_nn::StateDict::load(dir.join("model.safetensors")).unwrap();
    sd.iter().map(|(k, t)| (k.to_string(), t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())).collect()
}

fn wait_for(path: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
}

const RUN: [&str; 5] = ["--epochs", "8", "--checkpoint-every", "7", "--quiet"];

#[test]
fn sigkill_mid_epoch_then_resume_is_bit_identical() {
    sigkill_then_resume(&[]);
}

/// Dropout draws a new mask at every training step: the checkpoint carries where its stream
/// stands, so the resumed run draws the masks the straight one drew.
#[test]
fn sigkill_then_resume_with_dropout_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("dropout_mlp.toml");
    std::fs::write(
        &model,
        r#"name = "DropoutMLP"
input = [784]
layers = [
  { name = "fc1", type = "Linear", in_features = 784, out_features = 64 },
  { type = "ReLU" },
  { name = "drop", type = "Dropout", p = 0.3 },
  { name = "fc2", type = "Linear", in_features = 64, out_features = 10 },
]
"#,
    )
    .unwrap();
    sigkill_then_resume(&["--model", model.to_str().unwrap()]);
}

fn sigkill_then_resume(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let out = train(&[&RUN[..], extra, &["--out", straight.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(STRATA)
        .arg("train")
        .args(RUN)
        .args(extra)
        .args(["--out", killed.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Step 140 is in the middle of epoch 2 (125 steps per epoch).
    wait_for(&killed.join("checkpoints/step-000000140.safetensors"), &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("model.safetensors").exists(), "the run finished before the kill");

    let out = train(&["--resume", killed.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(params(&straight), params(&killed));
    // The log reads as one run: one line per epoch.
    let log = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"kind\":\"epoch\"")).count(), 8);
}

#[test]
fn ctrl_c_stops_with_a_checkpoint_that_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, stopped) = (tmp.path().join("straight"), tmp.path().join("stopped"));
    assert!(train(&[&RUN[..], &["--out", straight.to_str().unwrap()]].concat()).status.success());
    let mut child = Command::new(STRATA)
        .arg("train")
        .args(RUN)
        .args(["--out", stopped.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&stopped.join("checkpoints/step-000000070.safetensors"), &mut child);
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted at epoch") && stderr.contains("--resume"), "{stderr}");
    let out = train(&["--resume", stopped.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(params(&straight), params(&stopped));
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    assert!(train(&["--epochs", "1", "--quiet", "--out", dir.to_str().unwrap()]).status.success());
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let out = train(&["--epochs", "1", "--quiet", "--out", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"));
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
}
