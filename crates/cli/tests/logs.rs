//! `strata logs` on hand-written run directories: the text summary, two runs overlaid in valid
//! PNG and SVG plots, and located errors for a malformed or missing `metrics.jsonl`.

use std::path::Path;
use std::process::Command;

fn strata(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("the strata binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `dir/metrics.jsonl`: `epochs` epochs of 4 steps each (8 steps when `batch` is 32),
/// validation accuracy peaking at `best_epoch`, and a test record.
fn write_run(dir: &Path, epochs: u64, best_epoch: u64, batch: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let steps_per_epoch = if batch == 32 { 8 } else { 4 };
    let mut lines = Vec::new();
    let mut step = 0;
    for epoch in 1..=epochs {
        for _ in 0..steps_per_epoch {
            step += 1;
            let loss = 2.3 / (1.0 + step as f64 / 4.0);
            lines.push(format!(
                r#"{{"kind":"step","epoch":{epoch},"step":{step},"loss":{loss},"lr":0.01,"grad_norm":1.5,"samples_per_s":50000.0,"time_s":{}}}"#,
                step as f64 * 0.1
            ));
        }
        let val_acc = 0.95 - 0.01 * (epoch as f64 - best_epoch as f64).abs();
        lines.push(format!(
            r#"{{"kind":"epoch","epoch":{epoch},"step":{step},"train_loss":{},"train_acc":{},"val_loss":{},"val_acc":{val_acc},"lr":0.01,"samples_per_s":40000.0,"time_s":{}}}"#,
            1.0 / epoch as f64,
            0.8 + 0.02 * epoch as f64,
            0.5 / epoch as f64 + 0.01 * epoch as f64,
            step as f64 * 0.1 + 0.05
        ));
    }
    lines.push(format!(
        r#"{{"kind":"test","epoch":{epochs},"step":{step},"test_loss":0.2,"test_acc":0.9412,"time_s":{}}}"#,
        step as f64 * 0.1 + 0.5
    ));
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (960, 600));
    // Text, grid and curves: far more than a blank canvas's one colour.
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "{} has only {} colours", path.display(), colours.len());
}

fn assert_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{}", path.display());
    assert!(text.contains("<polyline") || text.contains("<path"), "{} has no curves", path.display());
    for s in must_contain {
        assert!(text.contains(s), "{} lacks {s:?}", path.display());
    }
}

#[test]
fn logs_summarises_and_plots_two_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, out) = (tmp.path().join("sgd-b64"), tmp.path().join("sgd-b32"), tmp.path().join("plots"));
    write_run(&a, 5, 4, 64);
    write_run(&b, 3, 2, 32);
    let (code, stdout, stderr) =
        strata(&["logs", a.to_str().unwrap(), b.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let summary_a = stdout.split("\n\n").next().unwrap();
    assert!(summary_a.starts_with("sgd-b64 ("), "{stdout}");
    for line in [
        "  epochs   5, 20 steps",
        "  best     epoch 4:  val acc 95.00%  val loss 0.1650",
        "  final    epoch 5:  train loss 0.2000  train acc 90.00%  val loss 0.1500  val acc 94.00%",
        "  test     acc 94.12%  loss 0.2000",
        "  time     2.5 s, 40,000 samples/s on average",
    ] {
        assert!(summary_a.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("sgd-b32 ("), "{stdout}");
    assert!(stdout.contains("  epochs   3, 24 steps"), "{stdout}");
    assert!(stdout.contains("  best     epoch 2:  val acc 95.00%"), "{stdout}");
    // The comparison table, one row per run.
    assert!(stdout.contains("best val acc"), "{stdout}");
    assert!(stdout.contains("sgd-b64       5  95.00% (epoch 4)"), "{stdout}");

    for stem in ["loss", "accuracy"] {
        assert_png(&out.join(format!("{stem}.png")));
        assert_svg(&out.join(format!("{stem}.svg")), &["sgd-b64 val", "sgd-b32 val", "epoch"]);
    }
    // Without --out the plots go to the first run directory.
    let (code, _, stderr) = strata(&["logs", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_png(&b.join("loss.png"));
    assert_svg(&b.join("accuracy.svg"), &["sgd-b32 train", "sgd-b32 test"]);
}

#[test]
fn a_resumed_run_replaces_the_repeated_records() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("resumed");
    std::fs::create_dir_all(&run).unwrap();
    let lines = [
        r#"{"kind":"epoch","epoch":1,"step":4,"train_loss":0.9,"val_loss":0.8,"val_acc":0.70,"time_s":1.0}"#,
        r#"{"kind":"epoch","epoch":2,"step":8,"train_loss":0.5,"val_loss":0.4,"val_acc":0.99,"time_s":2.0}"#,
        // Killed after epoch 2 was logged but before its checkpoint: epoch 2 runs again, and
        // the resumed process counts its time from 0.
        r#"{"kind":"epoch","epoch":2,"step":8,"train_loss":0.5,"val_loss":0.45,"val_acc":0.80,"time_s":0.5}"#,
        r#"{"kind":"epoch","epoch":3,"step":12,"train_loss":0.4,"val_loss":0.42,"val_acc":0.85,"time_s":1.5}"#,
        r#"{"kind":"note","text":"unknown kinds are skipped"}"#,
        r#"{"event":"done","time_s":1.6}"#,
    ];
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n")).unwrap();
    let (code, stdout, stderr) = strata(&["logs", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("  epochs   3, 12 steps"), "{stdout}");
    assert!(stdout.contains("  best     epoch 3:  val acc 85.00%"), "{stdout}");
    assert!(stdout.contains("  time     3.6 s"), "{stdout}"); // 2.0 s before the kill, 1.6 s after
}

#[test]
fn a_malformed_line_is_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("broken");
    std::fs::create_dir_all(&run).unwrap();
    let lines = [
        r#"{"kind":"step","epoch":1,"step":1,"loss":2.3}"#,
        r#"{"kind":"step","epoch":1,"step":2,"loss":2.1}"#,
        r#"{"kind":"step","epoch":1,"step":3,"loss":}"#,
    ];
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n")).unwrap();
    let (code, stdout, stderr) = strata(&["logs", run.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    let file = run.join("metrics.jsonl");
    let expected = format!("{}:3:", file.display());
    assert!(stderr.contains(&expected) && stderr.contains("not a metrics record"), "{stderr}");
    assert!(!run.join("loss.png").exists(), "no plots from a broken log");

    // A wrong type is located the same way.
    std::fs::write(&file, r#"{"kind":"epoch","epoch":"one"}"#).unwrap();
    let (code, _, stderr) = strata(&["logs", run.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("{}:1:", file.display())) && stderr.contains("invalid type"), "{stderr}");

    // A last line cut short (no newline, its JSON unfinished: the run stopped while writing it)
    // is left out with a note, and the rest is summarised.
    std::fs::write(&file, format!("{}\n{}\n{}", lines[0], lines[1], &lines[1][..20])).unwrap();
    let (code, stdout, stderr) = strata(&["logs", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr,
        format!("{}:3: the last line is cut short (the run stopped while writing it); left out\n", file.display())
    );
    assert!(stdout.contains("broken"), "{stdout}");
}

#[test]
fn a_directory_without_metrics_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = strata(&["logs", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("has no metrics.jsonl"), "{stderr}");
    let missing = tmp.path().join("nope");
    let (code, _, stderr) = strata(&["logs", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
