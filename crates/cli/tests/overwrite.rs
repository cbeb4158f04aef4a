//! Nothing already on disk is lost: a run writes only into a new, empty or strata-made run
//! directory, and never over its own inputs; `train --save`, `export`, `convert` and `import`
//! replace an existing file only with `--force`, and never their own input; a model larger than
//! memory is refused before it is built (not an aborted allocation); a run whose only
//! checkpoint is its best one resumes from it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn strata_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(STRATA).current_dir(dir).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` (relative path) with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push((p.strip_prefix(base).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut v = vec![];
    walk(dir, dir, &mut v);
    v.sort();
    v
}

const RUN_FILE: &str = "# my run: one epoch of a tiny model\nmodel = \"model.toml\"\n\n[training]\nepochs = 1\n";
const MODEL_FILE: &str = "# my model, commented\nname = \"Tiny\"\ninput = [784]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 784, out_features = 10 }]\n";

/// A project folder with a commented run file and model file.
fn project(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.toml"), RUN_FILE).unwrap();
    std::fs::write(dir.join("model.toml"), MODEL_FILE).unwrap();
}

/// `cd proj; strata train config.toml --out .` would have replaced the user's commented
/// config.toml and model.toml with resolved copies: a folder strata did not make is refused,
/// untouched (no lock file, no checkpoints/ left in it).
#[test]
fn a_folder_that_strata_did_not_make_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    project(&proj);
    let before = snapshot(&proj);
    let o = strata_in(&proj, &["train", "config.toml", "--out", ".", "--quiet"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    insta::assert_snapshot!("out_is_not_a_run_directory", err.replace(tmp.path().to_str().unwrap(), "[TMP]"));
    assert_eq!(snapshot(&proj), before);
    assert!(!proj.join("checkpoints").exists() && !proj.join(".lock").exists());
    // The same command into a new directory runs.
    let o = strata_in(&proj, &["train", "config.toml", "--out", "runs/a", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(proj.join("config.toml")).unwrap(), RUN_FILE);
    // An existing empty directory is a new run directory too.
    std::fs::create_dir(proj.join("empty")).unwrap();
    let o = strata_in(&proj, &["train", "config.toml", "--out", "empty", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(proj.join("empty/model.safetensors").exists());
}

/// A folder with a user's own metrics.jsonl and no checkpoints was "started over in place":
/// its metrics.jsonl, config.toml, model.toml and TensorBoard files were deleted. Now refused,
/// every file kept.
#[test]
fn a_users_metrics_file_is_not_started_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    project(&dir);
    std::fs::write(dir.join("metrics.jsonl"), "{\"my\": \"own log\"}\n").unwrap();
    std::fs::write(dir.join("events.out.tfevents.1700000000.host"), "x").unwrap();
    let before = snapshot(&dir);
    let o = strata_in(tmp.path(), &["train", "--epochs", "1", "--quiet", "--out", dir.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("is not a strata run directory"), "{err}");
    assert_eq!(snapshot(&dir), before);
}

/// A strata run directory killed before its first checkpoint starts over in place — but not
/// when its own config.toml is the run file given: the run would replace its own input.
#[test]
fn a_run_never_writes_over_its_own_run_file() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::write(run.join(".lock"), "4194304\n").unwrap();
    std::fs::write(run.join("metrics.jsonl"), "{\"event\":\"step\",\"epoch\":1,\"step\":10,\"loss\":2.0}\n").unwrap();
    std::fs::write(run.join("config.toml"), RUN_FILE).unwrap();
    std::fs::write(run.join("model.toml"), MODEL_FILE).unwrap();
    let before = snapshot(&run);
    let o = strata_in(tmp.path(), &["train", "run/config.toml", "--out", "run", "--quiet"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("--out run: the run would write its config.toml over the run file run/config.toml"), "{err}");
    assert_eq!(snapshot(&run), before);
}

/// `--save` replaces an existing file only with `--force`, and never one of the run's inputs
/// (the model file, the --init weights) nor its run directory's own files, even with it.
#[test]
fn save_keeps_existing_files_and_never_replaces_an_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    project(d);
    std::fs::write(d.join("old.safetensors"), "keep me").unwrap();
    let base = ["train", "--model", "model.toml", "--epochs", "1", "--quiet"];
    let o = strata_in(d, &[&base[..], &["--save", "old.safetensors"]].concat());
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("the file exists; pass --force to replace it"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).is_empty(), "it trained before refusing");
    assert_eq!(std::fs::read(d.join("old.safetensors")).unwrap(), b"keep me");

    let o = strata_in(d, &[&base[..], &["--save", "./model.toml", "--force"]].concat());
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("is the model file model.toml"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("model.toml")).unwrap(), MODEL_FILE);

    // --force replaces a file that is no input.
    let o = strata_in(d, &[&base[..], &["--save", "old.safetensors", "--force"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(strata_nn::StateDict::load(d.join("old.safetensors")).is_ok());

    let init = std::fs::read(d.join("old.safetensors")).unwrap();
    let o = strata_in(d, &[&base[..], &["--init", "old.safetensors", "--save", "old.safetensors", "--force"]].concat());
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("is the --init weights"), "{err}");
    assert_eq!(std::fs::read(d.join("old.safetensors")).unwrap(), init);

    std::fs::create_dir(d.join("run")).unwrap();
    let o = strata_in(d, &[&base[..], &["--out", "run", "--save", "run/metrics.jsonl", "--force"]].concat());
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("a file of the run directory run itself"), "{err}");

    // --force means nothing without --save.
    let o = strata_in(d, &[&base[..], &["--force"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("--save"), "{}", stderr(&o));
}

/// `export`, `convert` and `import` never write over their own input, even with `--force`;
/// `export -o DIR` says it is a directory whether or not `--force` is given.
#[test]
fn no_command_writes_over_its_own_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let o = strata_in(d, &["train", "--epochs", "1", "--quiet", "--out", "run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let best = d.join("run/checkpoints/best.safetensors");
    let before = std::fs::read(&best).unwrap();
    for source in ["run/checkpoints/best.safetensors", "run"] {
        let o = strata_in(d, &["export", source, "-o", "./run/checkpoints/best.safetensors", "--force"]);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains("is the checkpoint") && err.contains("--force does not"), "{err}");
        assert_eq!(std::fs::read(&best).unwrap(), before);
    }
    // Beside its checkpoints, a run directory exports fine.
    let o = strata_in(d, &["export", "run", "-o", "run/model.onnx"]);
    assert!(o.status.success(), "{}", stderr(&o));

    for force in [&[][..], &["--force"]] {
        let o = strata_in(d, &[&["export", "run", "-o", "run"][..], force].concat());
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains("-o run: a directory, not a file"), "{force:?}: {err}");
    }

    // A run file's model file is an input of export and of convert --model too (the run file
    // names it): written over, with --force, it was lost.
    project(&d.join("proj"));
    for args in [
        &["export", "proj/config.toml", "-o", "proj/model.toml", "--force"][..],
        &["export", "proj/config.toml", "-o", "./proj/../proj/model.toml", "--force"],
        &["convert", "w.pt", "--model", "proj/config.toml", "-o", "proj/model.toml", "--force"],
    ] {
        let o = strata_in(d, args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            err.contains("is the model file that the")
                && err.contains("names proj/model.toml, an input of this command; writing there would destroy it"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(d.join("proj/model.toml")).unwrap(), MODEL_FILE);
    }
    // Beside them, it exports.
    let o = strata_in(d, &["export", "proj/config.toml", "-o", "proj/tiny.onnx"]);
    assert!(o.status.success(), "{}", stderr(&o));

    std::fs::write(d.join("w.pt"), "not really a torch file").unwrap();
    let o = strata_in(d, &["convert", "w.pt", "-o", "w.pt", "--force"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("is the PyTorch file w.pt"), "{err}");
    assert_eq!(std::fs::read(d.join("w.pt")).unwrap(), b"not really a torch file");

    // An ONNX file named as the weights file that import writes beside it.
    std::fs::create_dir(d.join("imp")).unwrap();
    let onnx = d.join("imp/weights.safetensors");
    std::fs::copy(d.join("run/model.onnx"), &onnx).unwrap();
    let onnx_bytes = std::fs::read(&onnx).unwrap();
    let o = strata_in(d, &["import", "imp/weights.safetensors", "-o", "imp", "--force"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("is the ONNX file"), "{err}");
    assert_eq!(std::fs::read(&onnx).unwrap(), onnx_bytes);
}

/// A model file whose parameters are far more than any machine's memory (one Linear of
/// 400 billion weights, 1.5 TiB in f32).
const HUGE_MODEL: &str = "name = \"Huge\"\ninput = [200000]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 200000, out_features = 2000000 }]\n";

/// `export` of a model file, and `eval`, `predict` and `export` of a checkpoint whose stored
/// model is that large, are refused by the memory check before the model is built (they
/// aborted on the failed allocation, exit 134): exit 1, the check's message, nothing written.
#[test]
fn a_model_larger_than_memory_is_refused_before_it_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("huge.toml"), HUGE_MODEL).unwrap();
    let o = strata_in(d, &["export", "huge.toml", "-o", "huge.onnx"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("refused before it is built") && err.contains("more than this machine's"), "{err}");
    assert!(!d.join("huge.onnx").exists());

    // A valid checkpoint (checksum and all) of a small model whose metadata names the huge one.
    small_checkpoint(&d.join("huge.safetensors"), HUGE_MODEL);
    std::fs::write(d.join("rows.csv"), "0.5,0.5\n").unwrap();
    for args in [
        &["eval", "huge.safetensors"][..],
        &["predict", "huge.safetensors", "--csv", "rows.csv"],
        &["export", "huge.safetensors", "-o", "huge.onnx"],
    ] {
        let o = strata_in(d, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("huge.safetensors (its model)") && err.contains("more than this machine's"), "{err}");
    }
    assert!(!d.join("huge.onnx").exists());
}

/// A checkpoint whose stored tensors do not fit its model's parameters is refused by the
/// checkpoint check (as `strata check --weights`) before the model is built.
#[test]
fn stored_tensors_are_checked_against_the_model_before_it_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_checkpoint(
        &d.join("c.safetensors"),
        "name = \"Other\"\ninput = [4]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 4, out_features = 5 }]\n",
    );
    let o = strata_in(d, &["export", "c.safetensors", "-o", "c.onnx"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("refused before it is built") && err.contains("fc.weight"), "{err}");
}

/// A run whose step checkpoint failed to write after its best one was written: the same
/// command says to continue it with `--resume`, and `--resume` does, from the best checkpoint
/// (it said "no checkpoint to resume from … start it over in place", a loop).
#[test]
fn a_run_with_only_its_best_checkpoint_resumes_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let o = strata_in(d, &["train", "--epochs", "1", "--quiet", "--out", "run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // What the failed write leaves: best.safetensors, no step checkpoint, no final model.
    for e in std::fs::read_dir(d.join("run/checkpoints")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("step-") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::fs::remove_file(d.join("run/model.safetensors")).unwrap();
    let o = strata_in(d, &["train", "--epochs", "1", "--quiet", "--out", "run"]);
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("already holds a run; continue it with `strata train --resume run`"),
        "{err}"
    );
    let o = strata_in(d, &["train", "--resume", "run", "--epochs", "2", "--quiet"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming from run/checkpoints/best.safetensors"), "{err}");
    assert!(d.join("run/model.safetensors").exists());
    let log = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 2, "{log}");
}

/// Writes at `path` a valid checkpoint (checksum and all) of a small model (Linear 4 → 3 named
/// `fc`) whose metadata names the model `model_text`.
fn small_checkpoint(path: &std::path::Path, model_text: &str) {
    let small = strata_nn::model_file::parse_model(
        "name = \"Small\"\ninput = [4]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 4, out_features = 3 }]\n",
        "small",
        "model",
    )
    .unwrap()
    .build()
    .unwrap();
    let meta = strata_train::checkpoint::Meta {
        epoch: 1,
        batch: 0,
        step: 5,
        config: "[training]\nepochs = 10\n".into(),
        model: model_text.into(),
        mean: vec![0.5],
        std: vec![0.25],
        ..Default::default()
    };
    strata_train::checkpoint::save(path, &small, &strata_nn::StateDict::new(), &meta).unwrap();
}
