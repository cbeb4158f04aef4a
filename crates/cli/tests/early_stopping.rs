//! `[early_stopping]` in run files: the run stops after `patience` epochs without improvement,
//! says so, and with `restore_best` ends with the best epoch's weights.

use std::process::Command;

/// Early stopping on the training loss, patience 2, restoring the best weights; min_delta 1.0:
/// no epoch after the first improves the training loss by that much.
const EARLY: [&str; 10] = [
    "--set",
    "early_stopping.monitor=train_loss",
    "--set",
    "early_stopping.patience=2",
    "--set",
    "early_stopping.min_delta=1.0",
    "--set",
    "early_stopping.restore_best=true",
    "--set",
    "training.keep_last=5",
];

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("the strata binary runs")
}

#[test]
fn a_run_stops_early_and_ends_with_the_best_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let saved = dir.path().join("final.safetensors");
    let args = ["train", "--epochs", "10", "--out", run.to_str().unwrap(), "--save", saved.to_str().unwrap()];
    let out = strata(&[&args[..], &EARLY].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("epoch ")).count(), 3, "{stdout}");
    assert!(
        stdout.contains("stopped early after epoch 3: train_loss did not improve for 2 epochs (best")
            && stdout.contains("at epoch 1, whose weights the run ends with)"),
        "{stdout}"
    );
    // The weights the run ends with are epoch 1's (its checkpoint at step 125), not epoch 3's.
    let first = strata_train::checkpoint::load(&run.join("checkpoints/step-000000125.safetensors")).unwrap().0;
    let last = strata_train::checkpoint::load(&run.join("checkpoints/step-000000375.safetensors")).unwrap().0;
    for file in [saved, run.join("model.safetensors")] {
        let sd = strata_nn::StateDict::load(&file).unwrap();
        for (k, t) in sd.iter() {
            assert_eq!(t.to_vec_f64(), first.get(k).unwrap().to_vec_f64(), "{}: {k}", file.display());
        }
        let w = "fc1.weight";
        assert_ne!(sd.get(w).unwrap().to_vec_f64(), last.get(w).unwrap().to_vec_f64());
    }
}

#[test]
fn bad_early_stopping_options_are_errors() {
    for (set, message) in [
        (
            "early_stopping.monitor=val_los",
            "early_stopping.monitor must be one of val_loss, val_acc, train_loss, train_acc, got `val_los`",
        ),
        ("early_stopping.patience=0", "early_stopping.patience must be at least 1"),
        ("early_stopping.min_delta=-1", "early_stopping.min_delta must be a number >= 0, got -1"),
        ("early_stopping.patiense=3", "unknown field `patiense`"),
    ] {
        let out = strata(&["train", "--epochs", "1", "--set", set]);
        assert!(!out.status.success(), "{set} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{set}: {stderr}");
    }
}

/// A run resumed for more epochs goes on counting where it was: trained 2 epochs (the best at
/// epoch 1, one epoch waited), then resumed to 10, it stops after epoch 3 with epoch 1's
/// weights, as the run of 10 epochs above does. (The count used to start over on resume: the
/// run went on to epoch 5 and ended with epoch 3's weights.)
#[test]
fn a_resumed_run_stops_where_the_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = strata(&[&["train", "--epochs", "2", "--out", run.to_str().unwrap()][..], &EARLY].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = dir.path().join("final.safetensors");
    let out =
        strata(&["train", "--resume", run.to_str().unwrap(), "--epochs", "10", "--save", saved.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("stopped early after epoch 3: train_loss did not improve for 2 epochs (best")
            && stdout.contains("at epoch 1, whose weights the run ends with)"),
        "{stdout}"
    );
    let first = strata_train::checkpoint::load(&run.join("checkpoints/step-000000125.safetensors")).unwrap().0;
    let sd = strata_nn::StateDict::load(&saved).unwrap();
    for (k, t) in sd.iter() {
        assert_eq!(t.to_vec_f64(), first.get(k).unwrap().to_vec_f64(), "{k}");
    }

    // A new patience on resume applies to the count so far: 3 stops after epoch 4.
    let run = dir.path().join("run3");
    let out = strata(&[&["train", "--epochs", "2", "--out", run.to_str().unwrap()][..], &EARLY].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        strata(&["train", "--resume", run.to_str().unwrap(), "--epochs", "10", "--set", "early_stopping.patience=3"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("overriding early_stopping.patience 2 → 3"), "{stderr}");
    assert!(stdout.contains("stopped early after epoch 4: train_loss did not improve for 3 epochs"), "{stdout}");
}
