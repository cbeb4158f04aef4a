//! `strata lr-find` and `strata train --compute-stats` on the embedded data.

use std::process::Command;

#[test]
fn lr_find_suggests_a_rate_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["lr-find", "--steps", "120", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lr: f64 = stdout.lines().find_map(|l| l.strip_prefix("suggested learning rate: ")).unwrap().parse().unwrap();
    assert!((1e-4..1.0).contains(&lr), "{stdout}");
    for f in ["lr_find.png", "lr_find.svg"] {
        assert!(std::fs::metadata(tmp.path().join(f)).unwrap().len() > 1000, "{f}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["lr-find", "--start-lr", "1", "--end-lr", "0.1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("0 < start < end"));
}

#[test]
fn compute_stats_prints_mean_and_std() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(["train", "--compute-stats"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    // The MNIST test set's pixel statistics (the embedded training part of it).
    let mean: f64 =
        stdout.lines().find_map(|l| l.strip_prefix("mean = [")).unwrap().trim_end_matches(']').parse().unwrap();
    assert!((mean - 0.133).abs() < 0.005, "{stdout}");
}
