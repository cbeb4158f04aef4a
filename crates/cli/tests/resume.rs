//! A run killed with SIGKILL in the middle of an epoch — or in the middle of being resumed — and
//! resumed ends with bit-identical parameters to the same run never interrupted; Ctrl-C (SIGINT)
//! stops after the current step with a checkpoint that resumes the same way. A damaged newest
//! checkpoint is skipped for the newest that verifies; overrides on `--resume` are applied and
//! said, or refused; one process writes a run directory at a time; a run killed before its first
//! checkpoint starts over in place.

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
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 8);
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

/// Resuming a run that already trained all its epochs trains nothing and writes nothing: it says
/// so, names the checkpoint it would have continued from, gives the command that trains further,
/// and exits 0 (a script that resumes after every preemption finds a finished run finished).
/// With more epochs the same run continues.
#[test]
fn resuming_a_finished_run_says_so_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    assert!(train(&["--epochs", "1", "--quiet", "--out", d]).status.success());
    // Every file but the lock (whose pid the resumed process rewrites as it takes it).
    let files = || {
        let mut v: Vec<(std::path::PathBuf, Vec<u8>)> = walk(&dir)
            .into_iter()
            .filter(|p| !p.ends_with(".lock"))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = files();
    let out = train(&["--resume", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = redact(&String::from_utf8_lossy(&out.stderr), tmp.path(), None);
    assert_eq!(
        said,
        "[TMP]/run: the run is already finished: [TMP]/run/checkpoints/step-000000125.safetensors is the end of its epoch 1 of 1 (step 125), so there is nothing to train\n\
         to train it further, give more epochs: strata train --resume [TMP]/run --epochs 2\n"
    );
    let after = files();
    let names = |v: &[(std::path::PathBuf, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "files were added to or removed from a finished run's directory");
    assert!(after == before, "a finished run's files changed");
    let more = train(&["--resume", d, "--epochs", "2", "--quiet"]);
    assert!(more.status.success(), "{}", String::from_utf8_lossy(&more.stderr));
    assert!(checkpoint_steps(&dir).contains(&250));
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Output of a finished strata command: exit code and stderr, with the temporary directory and
/// pids written as `[TMP]` and `[PID]` for snapshots.
fn refused(args: &[&str], tmp: &Path, pid: Option<u32>) -> String {
    let out = Command::new(STRATA).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    redact(&String::from_utf8_lossy(&out.stderr), tmp, pid)
}

fn redact(text: &str, tmp: &Path, pid: Option<u32>) -> String {
    let text = text.replace(tmp.to_str().unwrap(), "[TMP]");
    match pid {
        Some(pid) => text.replace(&pid.to_string(), "[PID]"),
        None => text,
    }
}

fn until(what: &str, child: &mut std::process::Child, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {what}");
        assert!(start.elapsed() < Duration::from_secs(120), "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Killed once mid-epoch, then twice more while resuming — at a random moment of the resumed
/// run's start (taking the lock, verifying the checkpoint, rewriting the log, the first steps)
/// and mid-epoch — and resumed to the end: the same parameters as the run never interrupted,
/// and one log line per epoch.
#[test]
fn sigkill_during_resume_then_resume_again_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let out = train(&[&RUN[..], &["--out", straight.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spawn = |args: &[&str]| {
        Command::new(STRATA).arg("train").args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut child = spawn(&[&RUN[..], &["--out", killed.to_str().unwrap()]].concat());
    wait_for(&killed.join("checkpoints/step-000000140.safetensors"), &mut child);
    child.kill().unwrap();
    child.wait().unwrap();

    let resume = ["--resume", killed.to_str().unwrap(), "--quiet"];
    // A moment within the resumed run's first 300 ms, from the clock (printed on failure).
    let delay =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 300_000_000;
    let mut child = spawn(&resume);
    std::thread::sleep(Duration::from_nanos(delay.into()));
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = spawn(&resume);
    let past_420 = || checkpoint_steps(&killed).iter().any(|&s| s >= 420);
    until("a checkpoint at step 420 (mid epoch 4)", &mut child, past_420);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("model.safetensors").exists(), "the run finished before the kill");

    let out = train(&resume);
    assert!(out.status.success(), "killed {delay} ns into a resume: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(params(&straight), params(&killed), "killed {delay} ns into a resume");
    let log = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 8, "killed {delay} ns into a resume");
}

fn checkpoint_steps(run: &Path) -> Vec<usize> {
    std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok())
        .collect()
}

/// The newest checkpoint damaged by one byte: `--resume` says which file it skips and why,
/// resumes from the one before, and ends where an uninterrupted run ends.
#[test]
fn a_damaged_newest_checkpoint_is_skipped_for_the_newest_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, run) = (tmp.path().join("straight"), tmp.path().join("run"));
    let out = train(&["--epochs", "3", "--quiet", "--out", straight.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Checkpoints every 50 steps and at each epoch's end (125 steps); the last 3 are kept.
    let out = train(&["--epochs", "2", "--checkpoint-every", "50", "--quiet", "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checkpoint_steps(&run).into_iter().max(), Some(250));
    let newest = run.join("checkpoints/step-000000250.safetensors");
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.windows(9).position(|w| w == b"lr = 0.01").expect("the config's lr") + 5;
    bytes[at] = b'9'; // lr = 0.91
    std::fs::write(&newest, bytes).unwrap();

    let out = train(&["--resume", run.to_str().unwrap(), "--epochs", "3", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: String = stderr.lines().map(|l| redact_checksum(l) + "\n").collect();
    insta::assert_snapshot!("resume_skips_a_damaged_checkpoint", redact(&stderr, tmp.path(), None));
    assert_eq!(params(&straight), params(&run));
    assert!(run.join("checkpoints/step-000000250.safetensors.damaged").exists());
}

fn redact_checksum(line: &str) -> String {
    let mut parts = line.split("crc32:");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("crc32:########");
        out.push_str(part.get(8..).unwrap_or_default());
    }
    out
}

/// What a demanding user expects of `--resume RUN --lr X`: the run's length and the optimizer's
/// hyper-parameters change, and say so; what would make it another run (batch size, seed,
/// optimizer kind, model, run file) is refused, naming the key, both values and the fix; a flag
/// that repeats the checkpoint's value is fine.
#[test]
fn overrides_on_resume_are_applied_and_said_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let out = train(&["--epochs", "2", "--quiet", "--out", r]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model = tmp.path().join("m.toml");
    std::fs::write(
        &model,
        "input = [784]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 784, out_features = 10 }]\n",
    )
    .unwrap();
    let run_file = tmp.path().join("run.toml");
    std::fs::write(&run_file, "[training]\nepochs = 3\n").unwrap();
    let mut report = String::new();
    for args in [
        &["--batch-size", "32"][..],
        &["--seed", "1"],
        &["--set", "optimizer.name=adam"],
        &["--epochs", "1"],
        &["--lr=-1"],
        &["--model", model.to_str().unwrap()],
        &[run_file.to_str().unwrap()],
    ] {
        let all = [&["train", "--resume", r][..], args].concat();
        report.push_str(&format!(
            "$ strata train --resume [TMP]/run {}\n{}\n",
            redact(&args.join(" "), tmp.path(), None),
            refused(&all, tmp.path(), None)
        ));
    }
    insta::assert_snapshot!("resume_refuses_overrides", report);

    let out = train(&["--resume", r, "--epochs", "3", "--lr", "0.001", "--batch-size", "64", "--quiet"]);
    let stderr = redact(&String::from_utf8_lossy(&out.stderr), tmp.path(), None);
    assert!(out.status.success(), "{stderr}");
    insta::assert_snapshot!("resume_applies_overrides", stderr);
    // The third epoch's steps ran at the new rate.
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last_step = log.lines().rfind(|l| l.contains("\"event\":\"step\"")).unwrap();
    assert!(last_step.contains("\"lr\":0.001"), "{last_step}");
}

/// A second writer on a run directory is refused with the holder's pid, whether it starts
/// afresh or resumes; once the holder is killed its lock is free, and the stray temporary files
/// it left are removed by the next run.
#[test]
fn one_writer_per_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let mut holder = Command::new(STRATA)
        .args(["train", "--epochs", "50", "--checkpoint-every", "7", "--quiet", "--out", r])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let lock = run.join(".lock");
    until("the lock holds the pid", &mut holder, || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid.to_string())
    });
    wait_for(&run.join("checkpoints/step-000000007.safetensors"), &mut holder);
    let fresh = refused(&["train", "--epochs", "1", "--quiet", "--out", r], tmp.path(), Some(pid));
    let resume = refused(&["train", "--resume", r, "--epochs", "1"], tmp.path(), Some(pid));
    insta::assert_snapshot!(
        "run_directory_in_use",
        format!("$ strata train --out [TMP]/run\n{fresh}\n$ strata train --resume [TMP]/run\n{resume}")
    );
    holder.kill().unwrap(); // SIGKILL: the lock file stays, with the dead pid in it
    holder.wait().unwrap();

    let strays =
        [run.join("checkpoints/.step-000000999.safetensors.tmp-4194304"), run.join(".metrics.jsonl.tmp-4194304")];
    for s in &strays {
        std::fs::write(s, b"torn").unwrap();
    }
    // At most one epoch more than the newest checkpoint (125 steps per epoch) keeps it short.
    let epochs = (checkpoint_steps(&run).into_iter().max().unwrap() / 125 + 1).to_string();
    let out = train(&["--resume", r, "--epochs", &epochs, "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Ours, and the holder's own when the kill caught it writing a checkpoint.
    assert!(stderr.contains("temporary file(s) left by a killed run"), "{stderr}");
    assert!(stderr.contains(&format!("overriding training.epochs 50 → {epochs}")), "{stderr}");
    assert!(strays.iter().all(|s| !s.exists()));
    let last: u32 = std::fs::read_to_string(&lock).unwrap().trim().parse().unwrap();
    assert_ne!(last, pid, "the lock file names its last holder");
}

/// What a run killed before its first checkpoint leaves (a log, the resolved config, TensorBoard
/// events, the lock file with a dead pid, a torn temporary checkpoint): `--resume` has nothing
/// to resume and says how to start over; the same command that started it does so in place.
#[test]
fn a_run_killed_before_its_first_checkpoint_starts_over_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    let leftovers = [
        ("metrics.jsonl", "{\"event\":\"step\",\"epoch\":1,\"step\":10,\"loss\":2.0}\n"),
        ("config.toml", "[training]\nepochs = 1\n"),
        ("model.toml", "name = \"SimpleNN\"\n"),
        ("events.out.tfevents.1700000000.host.strata", "x"),
        (".lock", "4194304\n"),
        ("checkpoints/.step-000000007.safetensors.tmp-4194304", "torn"),
    ];
    for (name, text) in leftovers {
        std::fs::write(run.join(name), text).unwrap();
    }
    let resume = refused(&["train", "--resume", r], tmp.path(), None);
    insta::assert_snapshot!("resume_without_a_checkpoint", resume);

    let out = train(&["--epochs", "1", "--quiet", "--out", r]);
    let stderr = redact(&String::from_utf8_lossy(&out.stderr), tmp.path(), None);
    assert!(out.status.success(), "{stderr}");
    insta::assert_snapshot!("restart_in_place", stderr);
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(!log.contains("\"loss\":2.0}"), "the old log is gone: {log}");
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 1);
    assert!(!run.join("events.out.tfevents.1700000000.host.strata").exists());
    assert!(run.join("model.safetensors").exists());
}

/// A run pipelined in K chunks is accumulation's run in K micro-batches: resumed with
/// `--pipeline-chunks 1 --accumulate K` it ends with the weights of a run accumulating all along;
/// adding `--accumulate` alone beside the checkpoint's pipelining is refused with the fix.
#[test]
fn a_pipelined_run_resumes_as_accumulation() {
    let tmp = tempfile::tempdir().unwrap();
    let (piped, straight) = (tmp.path().join("piped"), tmp.path().join("straight"));
    let p = piped.to_str().unwrap();
    let o = train(&["--epochs", "1", "--pipeline-chunks", "2", "--out", p, "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train(&["--resume", p, "--epochs", "2", "--accumulate", "2", "--quiet"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pipeline_chunks = 2 and training.accumulate = 2") && err.contains("keep one"), "{err}");
    let o = train(&["--resume", p, "--epochs", "2", "--pipeline-chunks", "1", "--accumulate", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train(&["--epochs", "2", "--accumulate", "2", "--out", straight.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(params(&piped), params(&straight));
}

/// A checkpoint whose tensors do not fit the model stored in it (strata writes both from one
/// model: a forged or changed file) is refused on resume listing the keys, with what the
/// command line can do — not strata-nn's `strict = false`, an option of its API that no command
/// has — and the run is left as it was.
#[test]
fn a_checkpoint_whose_tensors_do_not_fit_its_model_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    assert!(train(&["--epochs", "1", "--quiet", "--out", r]).status.success());
    let ckpt = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
        .unwrap();
    let (_, _, meta) = strata_train::checkpoint::load(&ckpt).unwrap();
    // The same position, config and model file; the tensors of another model (Linear 4 → 3).
    let other = strata_nn::ModelSpec::new("other").input(&[4]).linear("fc", 4, 3).build().unwrap();
    strata_train::checkpoint::save(&ckpt, &other, &strata_nn::StateDict::new(), &meta).unwrap();
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    let out = train(&["--resume", r, "--epochs", "2", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("strict = false"), "{err}");
    assert!(
        err.contains(&format!("error: {}: its tensors do not fit its model:\n", ckpt.display()))
            && err.contains("  missing from the file: fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias\n  not in the model: fc.bias, fc.weight\n  fix: use another checkpoint of the run: strata writes a checkpoint's tensors and the model in its metadata from one model, so this file is damaged or was not written by strata\n"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("model.safetensors")).unwrap(), model, "a refused resume changed the run");
}

/// A run whose stored config strata accepted before it refused a warm-up longer than the run
/// and `keep_last = 0` (written here by hand: 1 epoch, a 5-epoch warm-up, keep_last = 0) is
/// still read, and resumes once the overrides the refusals name fix it: `--resume` checks
/// those keys after its overrides, as a new run's.
#[test]
fn a_run_stored_with_a_long_warmup_and_keep_last_0_resumes_once_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    assert!(train(&["--epochs", "1", "--quiet", "--out", r]).status.success());
    for e in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let path = e.unwrap().path();
        let (params, optim, mut meta) = strata_train::checkpoint::load(&path).unwrap();
        assert!(meta.config.contains("warmup_epochs = 0.0\n") && meta.config.contains("keep_last = 3\n"));
        meta.config = meta.config.replace("warmup_epochs = 0.0\n", "warmup_epochs = 5.0\n");
        meta.config = meta.config.replace("keep_last = 3\n", "keep_last = 0\n");
        let model = strata_nn::SimpleNN::new().unwrap();
        strata_nn::Module::load_state_dict(&model, &params, true).unwrap();
        strata_train::checkpoint::save(&path, &model, &optim, &meta).unwrap();
    }
    let out = train(&["--resume", r, "--epochs", "2", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("schedule.warmup_epochs = 5 is longer than the run: training.epochs (--epochs) = 2"),
        "{err}"
    );
    let out = train(&["--resume", r, "--epochs", "5", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("training.keep_last = 0 asks to keep no step checkpoint"), "{err}");
    let out = train(&[
        "--resume",
        r,
        "--epochs",
        "2",
        "--set",
        "schedule.warmup_epochs=1",
        "--set",
        "training.keep_last=1",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("overriding schedule.warmup_epochs 5.0 → 1")
            && err.contains("overriding training.keep_last 0 → 1"),
        "{err}"
    );
}
