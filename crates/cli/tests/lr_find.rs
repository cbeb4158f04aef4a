//! `strata lr-find` and `strata train --compute-stats` on the embedded data; lr-find's flags,
//! where its plots go, and the data that used to hang it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `strata ARGS` in `dir`, killed after `limit` (a hang is a failure, not a stuck test).
fn strata_in(dir: &Path, args: &[&str], limit: Duration) -> (Output, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("strata {} did not finish in {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out, o, e)
}

/// Files under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

const MINUTE: Duration = Duration::from_secs(60);

/// Without --out and without a run file nothing is written (it used to write into the working
/// directory); with a run file the plots go to the run's directory, as `train` would name it
/// (`runs/<run file name>`, or training.out).
#[test]
fn plots_go_where_train_would_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, stdout, err) = strata_in(tmp.path(), &["lr-find", "--steps", "20"], MINUTE);
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("plots: none written (--out DIR writes"), "{stdout}");
    assert_eq!(files(tmp.path()), Vec::<String>::new());

    std::fs::write(tmp.path().join("quick.toml"), "[training]\nbatch_size = 32\n").unwrap();
    let (out, stdout, err) = strata_in(tmp.path(), &["lr-find", "quick.toml", "--steps", "20"], MINUTE);
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("(batch 32)"), "{stdout}");
    assert_eq!(files(tmp.path()), ["quick.toml", "runs/quick/lr_find.png", "runs/quick/lr_find.svg"]);

    let (out, _, err) = strata_in(
        tmp.path(),
        &["lr-find", "quick.toml", "--steps", "20", "--set", "training.out=\"elsewhere\""],
        MINUTE,
    );
    assert!(out.status.success(), "{err}");
    assert!(files(tmp.path()).contains(&"elsewhere/lr_find.png".to_string()));
}

/// lr-find takes the flags that change what it measures and hands them to train's parser (a
/// `--set` key is checked as train checks it); train's others are refused, not ignored.
#[test]
fn flags_it_takes_and_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    for flag in ["--epochs", "--lr", "--resume", "--save", "--json", "--quiet", "--checkpoint-every"] {
        let (out, _, err) = strata_in(tmp.path(), &["lr-find", flag, "1"], MINUTE);
        assert!(!out.status.success() && err.contains(&format!("unexpected argument '{flag}'")), "{flag}: {err}");
    }
    let (out, _, err) = strata_in(tmp.path(), &["lr-find", "--set", "optimizer.nme=adam"], MINUTE);
    assert!(!out.status.success() && err.contains("unknown field `nme`"), "{err}");
    let (out, _, err) = strata_in(tmp.path(), &["lr-find", "--batch-size", "0"], MINUTE);
    assert!(!out.status.success() && err.contains("--batch-size"), "{err}");
    let (out, _, err) = strata_in(tmp.path(), &["lr-find", "--start-lr", "1e-300", "--end-lr", "1e300"], MINUTE);
    assert!(!out.status.success() && err.contains("too large a range"), "{err}");
    let (out, _, err) = strata_in(tmp.path(), &["lr-find", "--steps", "5"], MINUTE);
    assert!(!out.status.success() && err.contains("--steps must be at least 10"), "{err}");
    assert_eq!(files(tmp.path()), Vec::<String>::new());
}

/// An empty training set is an error (lr-find looped forever waiting for a batch), and a batch
/// larger than the data is one batch of all of it.
#[test]
fn empty_data_and_a_batch_larger_than_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mnist = tmp.path().join("empty_mnist");
    std::fs::create_dir(&mnist).unwrap();
    for set in ["train", "t10k"] {
        let images = strata_data::IdxArray { dims: vec![0, 28, 28], data: strata_data::IdxData::U8(vec![]) };
        let labels = strata_data::IdxArray { dims: vec![0], data: strata_data::IdxData::U8(vec![]) };
        std::fs::write(mnist.join(format!("{set}-images-idx3-ubyte")), images.to_bytes()).unwrap();
        std::fs::write(mnist.join(format!("{set}-labels-idx1-ubyte")), labels.to_bytes()).unwrap();
    }
    let run = "[data]\nsource = \"mnist\"\npath = \"empty_mnist\"\nmean = [0.1]\nstd = [0.3]\n";
    std::fs::write(tmp.path().join("empty.toml"), run).unwrap();
    let (out, _, err) = strata_in(tmp.path(), &["lr-find", "empty.toml"], MINUTE);
    assert!(!out.status.success() && err.contains("the training set is empty"), "{err}");

    // Three rows: one held out, two to train on.
    std::fs::write(tmp.path().join("three.csv"), "a,b,label\n0.1,0.2,0\n0.5,0.1,1\n0.3,0.9,1\n").unwrap();
    std::fs::write(
        tmp.path().join("tiny.toml"),
        "name = \"tiny\"\nlayers = [{ type = \"Linear\", out_features = 2 }]\n",
    )
    .unwrap();
    let run = "model = \"tiny.toml\"\n[data]\nsource = \"csv\"\npath = \"three.csv\"\n";
    std::fs::write(tmp.path().join("three.toml"), run).unwrap();
    let (out, stdout, err) =
        strata_in(tmp.path(), &["lr-find", "three.toml", "--batch-size", "100", "--steps", "20", "--out", "o"], MINUTE);
    assert!(out.status.success(), "{err}");
    assert!(stdout.starts_with("lr-find: 20 steps") && stdout.contains("(batch 2)"), "{stdout}");
    assert!(tmp.path().join("o/lr_find.svg").exists());
}

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

/// The test runs in the run's precision, as `strata train` would train it: a run file's
/// `precision = "bf16"` (or `--precision bf16`) runs it with bf16 products and says so;
/// `--precision f32` overrides the run file; bf16 with an f64 model is refused as train refuses it.
#[test]
fn runs_in_the_runs_precision() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bf16.toml"), "[training]\nprecision = \"bf16\"\n").unwrap();
    for (args, bf16) in [
        (&["lr-find", "bf16.toml", "--out", "p"][..], true),
        (&["lr-find", "--precision", "bf16", "--out", "p"], true),
        (&["lr-find", "bf16.toml", "--precision", "f32", "--out", "p"], false),
    ] {
        let args = [args, &["--steps", "20"]].concat();
        let (out, stdout, err) = strata_in(tmp.path(), &args, MINUTE);
        assert!(out.status.success(), "{args:?}: {err}");
        assert_eq!(stdout.contains("(batch 64, bf16 products)"), bf16, "{args:?}: {stdout}");
    }
    let (out, _, err) = strata_in(tmp.path(), &["lr-find", "bf16.toml", "--dtype", "f64"], MINUTE);
    assert!(!out.status.success() && err.contains("`SimpleNN` is f64: use --dtype f32"), "{err}");
}
