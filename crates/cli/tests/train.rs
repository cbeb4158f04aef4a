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
        (
            &["train", "--set", "optimizer.name=lion"],
            "optimizer.name must be one of sgd, adam, adamw, rmsprop, adagrad",
        ),
    ] {
        let out = strata(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // Refused before training (--save writes after the last epoch), naming the missing directory.
    let out = strata(&["train", "--save", "/nonexistent-dir/x.safetensors", "--epochs", "1"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --save /nonexistent-dir/x.safetensors: its directory /nonexistent-dir does not exist; create it first, or choose another path\n"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it trained before refusing");
    // A directory given as the file: refused before training too.
    let tmp = tempfile::tempdir().unwrap();
    let out = strata(&["train", "--save", tmp.path().to_str().unwrap(), "--epochs", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(": a directory, not a file; give a file path (e.g. --save "),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it trained before refusing");
}

/// A warm-up longer than the run (the rate would never reach optimizer.lr) and `keep_last = 0`
/// (no checkpoint to resume from; it was taken as 1, silently) are refused before anything is
/// written, naming the keys, their values and the fix. A warm-up of the whole run trains, and
/// `--resume` extends it past its warm-up; an override on resume that makes the warm-up longer
/// than the resumed run is refused the same way, leaving the run as it was.
#[test]
fn a_warmup_longer_than_the_run_and_keeping_no_checkpoint_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    for (args, message) in [
        (
            &["--epochs", "2", "--set", "schedule.warmup_epochs=3"][..],
            "error: schedule.warmup_epochs = 3 is longer than the run: training.epochs (--epochs) = 2, so the learning rate would still be warming up when the run ends and never reach optimizer.lr (0.01), and the `constant` schedule after it would never start\nfix: give schedule.warmup_epochs at most 2 (--set schedule.warmup_epochs=…; a few percent of the run is usual), or train for 3 epochs or more (--epochs 3)\n",
        ),
        (
            &["--epochs", "1", "--set", "training.keep_last=0"],
            "error: training.keep_last = 0 asks to keep no step checkpoint, but --resume continues a run from its newest one, so strata keeps at least 1\nfix: give training.keep_last = 1 to keep only the newest (--set training.keep_last=1; the default is 3, and best.safetensors is kept besides them), or a number at least as large as the run's checkpoints to keep them all\n",
        ),
    ] {
        let out = strata(&[&["train", "--quiet", "--out", r][..], args].concat());
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(String::from_utf8_lossy(&out.stderr), message, "{args:?}");
        assert!(!run.exists(), "{args:?} left {r} behind");
    }
    let out = strata(&["train", "--quiet", "--out", r, "--epochs", "1", "--set", "schedule.warmup_epochs=1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = strata(&["train", "--resume", r, "--epochs", "2", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("overriding training.epochs 1 → 2"), "{err}");
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    let out = strata(&["train", "--resume", r, "--epochs", "3", "--set", "schedule.warmup_epochs=4", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("schedule.warmup_epochs = 4 is longer than the run: training.epochs (--epochs) = 3"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("model.safetensors")).unwrap(), model, "a refused resume changed the run");
}

/// Options that only the trainer can judge against the model and the data (here: more
/// micro-batches than a batch has samples) are refused before the run directory is made:
/// nothing is left on disk, and an existing run directory keeps exactly what it held.
#[test]
fn options_refused_by_the_trainer_leave_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out_arg = out_dir.to_str().unwrap();
    for (args, message) in [
        (
            &["--accumulate", "100"][..],
            "100 micro-batches (accumulate, pipeline_chunks or processes) of a batch of 64 samples: each needs at least one sample; use a batch_size of at least 100",
        ),
        (&["--batch-size", "1", "--pipeline-chunks", "2"], "of a batch of 1 sample: each needs at least one sample"),
    ] {
        let out = strata(&[&["train", "--epochs", "1", "--out", out_arg][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!out_dir.exists(), "{args:?} left {} behind", out_dir.display());
    }
    // A finished run's directory, then a refused run into it: every file as it was, and no new one.
    assert!(strata(&["train", "--epochs", "1", "--out", out_arg]).status.success());
    let listing = |d: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = listing(&out_dir);
    let out = strata(&["train", "--epochs", "1", "--accumulate", "100", "--out", out_arg]);
    assert!(!out.status.success());
    assert_eq!(listing(&out_dir), before, "a refused run changed the run directory");
}

/// `--dtype f64` (`training.dtype`, or `dtype = "f64"` in the model file): the model is built,
/// trained, checkpointed, resumed and evaluated in f64, as `model.double()` in PyTorch; the
/// losses agree with the f32 run's to f32 precision.
#[test]
fn f64_runs_train_checkpoint_resume_and_evaluate_in_f64() {
    let dir = tempfile::tempdir().unwrap();
    let (f64_dir, f32_dir) = (dir.path().join("f64"), dir.path().join("f32"));
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["train", "--epochs", "1", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = strata(&args);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        stdout
    };
    let loss = |stdout: &str| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with("epoch  1/")).expect("an epoch line");
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    let out64 = run(&f64_dir, &["--dtype", "f64"]);
    assert!(out64.contains("threads, f64"), "{out64}");
    let out32 = run(&f32_dir, &[]);
    assert!((loss(&out64) - loss(&out32)).abs() < 2e-3, "f64 {out64}\nf32 {out32}");
    let dtypes = |path: std::path::PathBuf| {
        let sd = strata_nn::StateDict::load(path).unwrap();
        sd.iter().map(|(_, t)| format!("{:?}", t.dtype())).collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(dtypes(f64_dir.join("model.safetensors")), ["F64".to_string()].into());
    assert_eq!(dtypes(f32_dir.join("model.safetensors")), ["F32".to_string()].into());
    // Resumed: still f64 (the checkpoint's model says so), one more epoch.
    let o = strata(&["train", "--resume", f64_dir.to_str().unwrap(), "--epochs", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("epoch  2/2"));
    assert_eq!(dtypes(f64_dir.join("model.safetensors")), ["F64".to_string()].into());
    let o = strata(&["eval", f64_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("accuracy"));
    // The model file's own `dtype = "f64"`, with no flag.
    let model = dir.path().join("m.toml");
    std::fs::write(
        &model,
        "dtype = \"f64\"\ninput = [784]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 784, out_features = 10 }]\n",
    )
    .unwrap();
    let m_dir = dir.path().join("m");
    run(&m_dir, &["--model", model.to_str().unwrap()]);
    assert_eq!(dtypes(m_dir.join("model.safetensors")), ["F64".to_string()].into());
    // Bad values are errors that name the key.
    for (flag, value, says) in
        [("--dtype", "f16", "training.dtype"), ("--conv-algorithm", "winograd", "training.conv_algorithm")]
    {
        let o = strata(&["train", flag, value]);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(says) && e.contains(value), "{e}");
    }
}

/// `--precision bf16` (`training.precision`): mixed precision as torch.autocast on the CPU.
/// The run trains to the f32 run's accuracy, its checkpoint is f32 (interchangeable with an f32
/// run's: resumed in f32 and back), and an f64 model or a bad value is a clear error.
#[test]
fn bf16_runs_train_like_f32_and_checkpoint_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (bf_dir, f_dir) = (dir.path().join("bf16"), dir.path().join("f32"));
    let run = |args: &[&str]| {
        let o = strata(args);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        stdout
    };
    let acc = |stdout: &str| -> f64 {
        let last = stdout.lines().find(|l| l.starts_with("done in")).expect("a final line");
        last.rsplit(' ').next().unwrap().trim_end_matches('%').parse().unwrap()
    };
    let bf = run(&["train", "--epochs", "3", "--precision", "bf16", "--out", bf_dir.to_str().unwrap()]);
    assert!(bf.contains("bf16 products (f32 master weights)"), "{bf}");
    let f = run(&["train", "--epochs", "3", "--out", f_dir.to_str().unwrap()]);
    assert!((acc(&bf) - acc(&f)).abs() <= 1.0, "bf16 {}% vs f32 {}%\n{bf}\n{f}", acc(&bf), acc(&f));
    // The losses differ (the products were rounded) but only slightly.
    assert_ne!(bf.lines().find(|l| l.starts_with("epoch  1/")), f.lines().find(|l| l.starts_with("epoch  1/")));
    let sd = strata_nn::StateDict::load(bf_dir.join("model.safetensors")).unwrap();
    assert!(sd.iter().all(|(_, t)| t.dtype() == strata_core::DType::F32), "bf16 runs keep f32 weights");
    // Resumed in f32, then the f32 run resumed in bf16: checkpoints do not depend on it. The
    // switch is said, with f32 named (a written config leaves the default out).
    let resume = |dir: &std::path::Path, precision: &str| {
        let o = strata(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "4", "--precision", precision]);
        let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && out.contains("epoch  4/4"), "{out}\n{err}");
        (out, err.into_owned())
    };
    let (r, e) = resume(&bf_dir, "f32");
    assert!(!r.contains("bf16 products"), "{r}");
    assert!(e.contains(r#"overriding training.precision "bf16" → "f32" (the default) from the checkpoint"#), "{e}");
    let (r, e) = resume(&f_dir, "bf16");
    assert!(r.contains("bf16 products"), "{r}");
    assert!(e.contains(r#"overriding training.precision "f32" (the default) → "bf16" from the checkpoint"#), "{e}");
    for (args, says) in [
        (&["train", "--precision", "fp16"][..], "training.precision (--precision) must be f32 or bf16"),
        (&["train", "--precision", "bf16", "--dtype", "f64"], "`SimpleNN` is f64: use --dtype f32"),
    ] {
        let o = strata(args);
        assert!(!o.status.success(), "{args:?} should fail");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

/// A diverging run (issue 14): exit non-zero naming the step and the first layer that went
/// non-finite, with what to try; no non-finite model is saved. `on_divergence = "skip"` skips
/// such steps instead, and gives up only when a whole epoch was skipped; clipping keeps the
/// run finite.
#[test]
fn a_diverging_run_stops_naming_the_step_and_layer_and_saves_nothing_non_finite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = strata(&["train", "--lr", "1e3", "--epochs", "2", "--quiet", "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("training diverged at epoch 1, step "), "{err}");
    assert!(err.contains("first non-finite: ") && err.contains("layer `fc"), "{err}");
    assert!(err.contains("--lr, now 1000") && err.contains("clip_grad_norm"), "{err}");
    // Whatever was saved before the divergence is finite; `eval` and `predict` of it work.
    for entry in std::fs::read_dir(out.join("checkpoints")).into_iter().flatten() {
        let sd = strata_nn::StateDict::load(entry.unwrap().path());
        for (k, t) in sd.iter().flat_map(|s| s.iter().map(|(k, t)| (k.to_string(), t.clone())).collect::<Vec<_>>()) {
            assert!(t.all_finite(), "{k} was saved non-finite");
        }
    }
    let o = strata(&["train", "--lr", "1e3", "--epochs", "2", "--set", "training.on_divergence=skip"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("step skipped (1 so far)"), "{out}");
    assert!(!o.status.success() && err.contains("every step of epoch 2"), "{err}");
    let o = strata(&["train", "--lr", "1", "--epochs", "1", "--quiet", "--set", "training.clip_grad_norm=1.0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (set, says) in [
        ("training.clip_grad_norm=-1", "training.clip_grad_norm must be a positive number"),
        ("training.on_divergence=ignore", "training.on_divergence must be stop"),
        ("training.bucket_cap_mb=-0.5", "training.bucket_cap_mb (--bucket-cap-mb) must be a size in MiB, 0 or more"),
    ] {
        let o = strata(&["train", "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{set}: {err}");
    }
}

/// The CLI's rough edges (issue 16): every subcommand's `--help` has examples; `--json` names
/// every event with one key, `event`; a run directory's `config.toml` runs again as is; `check`
/// and `summary` take a run file and check its model.
#[test]
fn help_examples_json_events_rerunnable_config_and_run_files_in_check() {
    for sub in ["train", "check", "summary", "eval", "predict", "lr-find", "logs"] {
        let o = strata(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("Examples:\n  strata "), "{sub} --help has no examples:\n{help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = strata(&["train", "--epochs", "1", "--json", "--out", run.to_str().unwrap()]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    for line in stdout.lines() {
        assert!(line.starts_with('{') && line.contains("\"event\":") && !line.contains("\"kind\":"), "{line}");
    }
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(log.lines().all(|l| l.contains("\"event\":")), "{log}");
    let again = dir.path().join("again");
    let config = run.join("config.toml");
    let o = strata(&["train", config.to_str().unwrap(), "--quiet", "--out", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(again.join("model.safetensors").exists());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    for (cmd, file, says) in [
        ("check", "resnet_mnist.toml", "ok: [N, 1, 28, 28] → [N, 10]"),
        ("summary", "lstm_mnist.toml", "parameters ("),
        ("check", "simple_nn_mnist.toml", "ok: [N, 784] → [N, 10]"),
    ] {
        let o = strata(&[cmd, &format!("{root}{file}")]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains(says),
            "{cmd} {file}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A model that reads time-major sequences (`batch_first = false`, `input = [T, F]`) trains,
/// evaluates and predicts from the CLI: the batch is laid out `[T, N, F]` for it (issue 11).
#[test]
fn a_time_major_recurrent_model_trains_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tm.toml");
    std::fs::write(
        &model,
        r#"input = [28, 28]
layers = [
  { name = "rnn", type = "GRU", input_size = 28, hidden_size = 16, batch_first = false },
  { type = "LastStep", batch_first = false },
  { name = "fc", type = "Linear", in_features = 16, out_features = 10 },
]
"#,
    )
    .unwrap();
    let run = dir.path().join("run");
    let o = strata(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = strata(&["eval", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let idx = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/assets/t10k-images-idx3-ubyte.gz");
    let o = strata(&["predict", run.to_str().unwrap(), "--idx", idx, "--index", "0,1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
}

/// `--data FILE.csv` (or `.csv.gz`) reads a CSV file, as `data.source = "csv"` does; any other
/// file is refused saying that --data takes a folder of MNIST files, and how to read CSV and
/// image folders (it was reported as a folder without `train-images-idx3-ubyte`).
#[test]
fn data_flag_reads_a_csv_file_and_refuses_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let mut rows = String::from("a,b,label\n");
    for i in 0..60 {
        rows += &format!("{},{},{}\n", i % 7, i % 5, i % 2);
    }
    std::fs::write(path("rows.CSV"), &rows).unwrap();
    std::fs::write(path("rows.txt"), &rows).unwrap();
    std::fs::write(path("m.toml"), "input = [2]\nlayers = [ { type = \"Linear\", out_features = 2 } ]\n").unwrap();
    let train = |data: &str| {
        strata(&[
            "train",
            "--model",
            &path("m.toml"),
            "--data",
            &path(data),
            "--epochs",
            "1",
            "--set",
            "data.validation=10",
        ])
    };
    let o = train("rows.CSV");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("data: CSV ") && out.contains("50 training / 10 validation rows, 2 features"), "{out}");
    let o = train("rows.txt");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("(--data) is a file, and data.source = \"mnist\" reads a folder"), "{err}");
    assert!(err.contains("named *.csv or *.csv.gz (or with --set data.source=csv)"), "{err}");
}

/// A batch size beyond the training set is one batch of all of it (what the loader gives), and
/// the memory check counts that batch, not the number asked for (which it refused as needing
/// hundreds of GiB).
#[test]
fn a_batch_larger_than_the_data_is_one_batch_of_all_of_it() {
    let o = strata(&["train", "--batch-size", "100000000", "--epochs", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("epoch  1/1") && out.contains(", batch 100000000 (one batch of all 8,000 samples), 1 epoch, "),
        "{out}"
    );
}

/// An image folder of mixed sizes trains when the run file asks for a size (`size = [H, W]`
/// under [data], torchvision's Resize), read with the channels the model takes; without it,
/// the size error names the key, and a model of other channels or size says which keys read
/// the images to fit it.
#[test]
fn image_folders_are_resized_and_read_as_the_model_takes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    for (class, base, (w, h)) in [("dark", 20u8, (8, 8)), ("light", 220u8, (12, 10))] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..6u8 {
            let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([base.wrapping_add(((x + y) as u8 + i) % 8)]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let model = tmp.path().join("m.toml");
    std::fs::write(
        &model,
        "input = [3, 8, 8]\nlayers = [ { type = \"Flatten\" }, { type = \"Linear\", out_features = 2 } ]\n",
    )
    .unwrap();
    let run = |data: &str| {
        let file = tmp.path().join("run.toml");
        let text = format!(
            "model = {:?}\n[data]\nsource = \"images\"\npath = {:?}\nvalidation = 2\n{data}[training]\nepochs = 1\nbatch_size = 4\n",
            model.display().to_string(),
            root.display().to_string()
        );
        std::fs::write(&file, text).unwrap();
        let out = tmp.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        strata(&["train", file.to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()])
    };
    let o = run("channels = 3\nsize = [8, 8]\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run("channels = 3\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("(`size = [8, 8]` under [data] in a strata run file"), "{err}");
    let o = run("size = [8, 8]\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("or read the images as the model takes them: channels = 3 under [data]"),
        "{err}"
    );
    let o = run("channels = 3\nsize = [4, 4]\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("as the model takes them: size = [8, 8] under [data]"), "{err}");
}

/// An MNIST folder whose test pair holds no images: `train` refuses it before training (it
/// reported "test accuracy 0.00%" of no images), and `eval --data` says the same.
#[test]
fn an_empty_test_pair_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/assets");
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    // The embedded test images as the training pair; an IDX header of 0 images as the test pair.
    std::fs::copy(format!("{assets}/t10k-images-idx3-ubyte.gz"), data.join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::copy(format!("{assets}/t10k-labels-idx1-ubyte.gz"), data.join("train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), [0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28]).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let run_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/simple_nn_mnist.toml");
    let out = strata(&["train", run_file, "--data", d, "--epochs", "1", "--out", r]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {d}: its test pair (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) holds no images"
        )),
        "{stderr}"
    );
    assert!(!run.exists());
    // A run trained on the embedded data, evaluated on that folder.
    let out = strata(&["train", "--epochs", "1", "--out", r]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = strata(&["eval", r, "--data", d]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--data {d}: its test pair")), "{stderr}");
}
