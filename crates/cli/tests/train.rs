//! The main job, end to end: `strata train` with its defaults reaches ≥ 90% held-out accuracy
//! on the embedded data, and bad options are clear errors with a non-zero exit.

use std::process::Command;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("the strata binary runs")
}

#[test]
fn default_training_reaches_ninety_percent_held_out() {
    let out = strata(&["train"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "strata train failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().find(|l| l.starts_with("done in")).expect("a final line");
    let acc: f64 = last.rsplit(' ').next().unwrap().trim_end_matches('%').parse().unwrap();
    assert!(acc >= 90.0, "held-out accuracy {acc}% < 90%:\n{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("epoch")).count(), 10);
}

#[test]
fn saved_parameters_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let out = strata(&["train", "--epochs", "1", "--save", path.to_str().unwrap()]);
    assert!(out.status.success());
    let sd = strata_nn::StateDict::load(&path).unwrap();
    assert_eq!(sd.keys().count(), 6);
}

#[test]
fn bad_options_are_errors() {
    for (args, message) in [
        (&["train", "--epochs", "0"][..], "training.epochs (--epochs) must be at least 1"),
        (&["train", "--lr=-1"], "optimizer.lr (--lr) must be a positive number, got -1"),
        (&["train", "--batch-size", "0"], "--batch-size: batch size: `0` is not a batch size"),
        (&["train", "--set", "training.epoch=3"], "unknown field `epoch`"),
        (&["train", "--set", "optimizer.name=rmsprop"], "optimizer.name must be sgd, adam or adamw"),
    ] {
        let out = strata(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = strata(&["train", "--save", "/nonexistent-dir/x.safetensors", "--epochs", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("saving the trained parameters to /nonexistent-dir/x.safetensors")
    );
}
