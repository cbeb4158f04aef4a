//! The optimizer and the loss chosen in run files, end to end: one epoch of SimpleNN on the
//! embedded data with RMSprop, Adagrad, MSE on one-hot targets and label-smoothed
//! cross-entropy each lowers the loss and reaches a sane held-out accuracy, and the run header
//! names what was chosen; an unknown optimizer or loss name is an error listing the valid ones.

use std::process::Command;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("the strata binary runs")
}

/// One epoch with `extra` flags, `--json`: the setup line, the logged step losses and the
/// held-out accuracy.
fn one_epoch(extra: &[&str]) -> (String, Vec<f64>, f64) {
    let mut args = vec!["train", "--epochs", "1", "--json", "--set", "training.log_every=5"];
    args.extend_from_slice(extra);
    let out = strata(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{extra:?}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of = |kind: &'static str| events.iter().filter(move |e| e["event"] == kind);
    let setup = of("start").next().expect("a start event")["setup"].as_str().unwrap().to_string();
    let losses: Vec<f64> = of("step").map(|e| e["loss"].as_f64().unwrap()).collect();
    let acc = of("done").next().expect("a done event")["val_acc"].as_f64().unwrap();
    (setup, losses, acc)
}

/// Trains one epoch and checks it; returns the mean of the first three logged step losses.
#[track_caller]
fn check(extra: &[&str], header: &str, min_acc: f64) -> f64 {
    let (setup, losses, acc) = one_epoch(extra);
    assert!(setup.starts_with(header), "{extra:?}: the header says `{setup}`, expected `{header}…`");
    assert!(losses.len() >= 20, "{extra:?}: {} step losses", losses.len());
    let (first, last) = (losses[..3].iter().sum::<f64>() / 3.0, losses[losses.len() - 3..].iter().sum::<f64>() / 3.0);
    println!("{setup}: loss {first:.4} → {last:.4}, held-out accuracy {:.2}%", 100.0 * acc);
    assert!(losses.iter().all(|l| l.is_finite()), "{extra:?}: {losses:?}");
    assert!(last < 0.7 * first, "{extra:?}: the loss went from {first:.4} to {last:.4} only: {losses:?}");
    assert!(acc >= min_acc, "{extra:?}: held-out accuracy {:.2}% < {:.0}%", 100.0 * acc, 100.0 * min_acc);
    first
}

#[test]
fn rmsprop_trains() {
    let _ = check(
        &["--set", "optimizer.name=rmsprop", "--lr", "0.001", "--set", "optimizer.centered=true"],
        "CrossEntropyLoss, RMSprop lr 0.001 alpha 0.99 centered,",
        0.85,
    );
}

#[test]
fn adagrad_trains() {
    let _ = check(
        &["--set", "optimizer.name=adagrad", "--set", "optimizer.lr_decay=1e-4"],
        "CrossEntropyLoss, Adagrad lr 0.01 lr_decay 0.0001,",
        0.85,
    );
}

#[test]
fn mse_on_one_hot_targets_trains() {
    let first =
        check(&["--set", "loss.name=mse", "--lr", "0.1"], "MSELoss on one-hot targets, SGD lr 0.1 momentum 0.9,", 0.8);
    // A mean squared error over ten one-hot columns starts near 0.1; a cross-entropy near ln 10.
    assert!(first < 0.5, "the first losses ({first:.4}) are not an MSE's");
}

#[test]
fn label_smoothed_cross_entropy_trains() {
    let _ = check(
        &["--set", "loss.label_smoothing=0.1"],
        "CrossEntropyLoss(label_smoothing=0.1), SGD lr 0.01 momentum 0.9,",
        0.8,
    );
}

#[test]
fn bad_names_and_options_list_what_is_valid() {
    let mut report = String::new();
    for args in [
        &["train", "--set", "optimizer.name=rmsprob"][..],
        &["train", "--set", "loss.name=hinge"],
        &["train", "--set", "loss.name=mse", "--set", "loss.label_smoothing=0.1"],
        // Known only once the data says how many classes there are.
        &["train", "--set", "loss.weight=[1.0, 2.0]"],
        &["train", "--set", "optimizer.name=rmsprop", "--set", "optimizer.alpha=1.5"],
    ] {
        let out = strata(args);
        assert!(!out.status.success(), "{args:?} should fail");
        report.push_str(&format!("$ strata {}\n{}\n", args.join(" "), String::from_utf8_lossy(&out.stderr).trim_end()));
    }
    insta::assert_snapshot!(report);
}
