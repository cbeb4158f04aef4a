//! Data-parallel training under `mpirun` (the `mpi` feature; `cargo test -p strata-cli
//! --features mpi --test mpi`, which `.ci/run` runs): N processes end bit-identical to one
//! process accumulating N micro-batches, a run resumes with another number of processes, ranks
//! started with different options refuse to start, naming the rank, and a killed rank stops the
//! others with its checkpoint intact.

#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A small CSV problem (700 rows of 20 features, 3 classes; 100 held out) and a small MLP: 10
/// steps per epoch, 9 of 64 and one of 24, so 3 processes get unequal micro-batches (22/21/21).
fn run_file(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::new();
    for i in 0..700u64 {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut row = vec![];
        for _ in 0..20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            row.push(format!("{:.4}", (x % 2000) as f64 / 1000.0 - 1.0));
        }
        let label = (row[0].parse::<f64>().unwrap() + row[1].parse::<f64>().unwrap() > 0.0) as u8
            + (row[2].parse::<f64>().unwrap() > 0.5) as u8;
        csv.push_str(&format!("{},{label}\n", row.join(",")));
    }
    std::fs::write(dir.join("data.csv"), csv).unwrap();
    std::fs::write(
        dir.join("mlp.toml"),
        r#"name = "MLP"
input = [20]
layers = [
  { name = "fc1", type = "Linear", in_features = 20, out_features = 32 },
  { type = "ReLU" },
  { name = "fc2", type = "Linear", in_features = 32, out_features = 3 },
]
"#,
    )
    .unwrap();
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "model = \"mlp.toml\"\n\n[training]\nepochs = 1\nbatch_size = 64\nseed = 5\nthreads = 1\n\n[data]\nsource = \"csv\"\npath = {:?}\nvalidation = 100\n",
            dir.join("data.csv").display().to_string()
        ),
    )
    .unwrap();
    path
}

/// `mpirun` as root on one machine, with more processes than cores if need be.
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", &np.to_string()]);
    c
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn params(file: &Path) -> Vec<(String, Vec<u64>)> {
    let sd = strata_nn::StateDict::load(file).unwrap();
    sd.iter().map(|(k, t)| (k.to_string(), t.to_vec_f64().iter().map(|v| v.to_bits()).collect())).collect()
}

/// The embedded data set's subset, or a skip when `mpirun` is missing (never in CI, which
/// installs Open MPI).
fn have_mpirun() -> bool {
    let ok = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)");
    }
    ok
}

#[test]
fn n_processes_equal_one_process_accumulating_n_bit_for_bit() {
    if !have_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path());
    for n in [2, 3] {
        let single = tmp.path().join(format!("acc{n}"));
        let out = Command::new(STRATA)
            .args(["train", run.to_str().unwrap(), "--quiet", "--accumulate", &n.to_string(), "--out"])
            .arg(&single)
            .output()
            .unwrap();
        check(&out, &format!("accumulate {n}"));
        // The default buckets (one, for this 3 KB model), and one bucket per parameter: four
        // exchanges in flight at once, the first started inside backward.
        for (cap, buckets) in [(None, "in one bucket after backward"), (Some("1e-6"), "in 4 buckets")] {
            let multi = tmp.path().join(format!("np{n}-{}", cap.unwrap_or("default")));
            let mut cmd = mpirun(n);
            cmd.args([STRATA, "train", run.to_str().unwrap(), "--out"]).arg(&multi);
            if let Some(c) = cap {
                cmd.args(["--bucket-cap-mb", c]);
            }
            let out = cmd.output().unwrap();
            check(&out, &format!("mpirun -np {n}, buckets {cap:?}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            // Rank 0 alone prints: one header, one summary with the bytes reduced.
            assert_eq!(stdout.matches(&format!("data-parallel over {n} MPI processes")).count(), 1, "{stdout}");
            assert_eq!(stdout.matches("done in ").count(), 1, "{stdout}");
            assert!(stdout.contains("bytes of gradients per step") && stdout.contains(buckets), "{stdout}");
            assert_eq!(
                params(&multi.join("model.safetensors")),
                params(&single.join("model.safetensors")),
                "mpirun -np {n} (buckets {cap:?}) and --accumulate {n} differ"
            );
            // The checkpoint holds the same tensors (parameters and optimizer state).
            assert_eq!(
                params(&multi.join("checkpoints/step-000000010.safetensors")),
                params(&single.join("checkpoints/step-000000010.safetensors"))
            );
        }
    }
}

/// The largest difference between two state_dicts' float tensors.
fn max_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (strata_nn::StateDict::load(a).unwrap(), strata_nn::StateDict::load(b).unwrap());
    let mut d: f64 = 0.0;
    for ((ka, ta), (kb, tb)) in a.iter().zip(b.iter()) {
        assert_eq!(ka, kb);
        for (x, y) in ta.to_vec_f64().iter().zip(tb.to_vec_f64()) {
            d = d.max((x - y).abs());
        }
    }
    d
}

#[test]
fn sync_bn_processes_follow_one_process_with_the_whole_batch() {
    if !have_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path());
    // The MLP with a BatchNorm1d on its hidden layer.
    let mlp = std::fs::read_to_string(tmp.path().join("mlp.toml")).unwrap();
    let bn = mlp.replace(
        "  { type = \"ReLU\" },",
        "  { name = \"bn\", type = \"BatchNorm1d\", num_features = 32 },\n  { type = \"ReLU\" },",
    );
    assert_ne!(bn, mlp);
    std::fs::write(tmp.path().join("bn.toml"), bn).unwrap();
    let run_bn = tmp.path().join("run_bn.toml");
    std::fs::write(&run_bn, std::fs::read_to_string(&run).unwrap().replace("mlp.toml", "bn.toml")).unwrap();
    let r = run_bn.to_str().unwrap();
    let plain = tmp.path().join("plain");
    check(&Command::new(STRATA).args(["train", r, "--quiet", "--out"]).arg(&plain).output().unwrap(), "one process");
    let synced = tmp.path().join("synced");
    // One bucket per parameter: the first exchanges run while the BatchNorm's backward exchanges
    // its statistics.
    let args = [STRATA, "train", r, "--sync-bn", "--bucket-cap-mb", "1e-6", "--out"];
    check(&mpirun(2).args(args).arg(&synced).output().unwrap(), "--sync-bn");
    let own = tmp.path().join("own");
    check(&mpirun(2).args([STRATA, "train", r, "--out"]).arg(&own).output().unwrap(), "without --sync-bn");
    let file = "model.safetensors";
    let (with, without) =
        (max_diff(&synced.join(file), &plain.join(file)), max_diff(&own.join(file), &plain.join(file)));
    eprintln!("2 processes, largest difference from one process: {with:.2e} with --sync-bn, {without:.2e} without");
    assert!(with < 1e-5, "{with}");
    assert!(without > 100.0 * with, "{without} without sync_bn, {with} with");
}

#[test]
fn a_run_resumes_with_another_number_of_processes() {
    if !have_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path());
    // Epoch 1 on 2 processes, epoch 2 on 3, against the same on one process accumulating.
    let multi = tmp.path().join("multi");
    check(
        &mpirun(2).args([STRATA, "train", run.to_str().unwrap(), "--out"]).arg(&multi).output().unwrap(),
        "epoch 1 on 2 processes",
    );
    check(
        &mpirun(3).args([STRATA, "train", "--epochs", "2", "--resume"]).arg(&multi).output().unwrap(),
        "epoch 2 on 3 processes",
    );
    let single = tmp.path().join("single");
    let out = Command::new(STRATA)
        .args(["train", run.to_str().unwrap(), "--quiet", "--accumulate", "2", "--out"])
        .arg(&single)
        .output()
        .unwrap();
    check(&out, "epoch 1 accumulating 2");
    let out = Command::new(STRATA)
        .args(["train", "--quiet", "--epochs", "2", "--accumulate", "3", "--resume"])
        .arg(&single)
        .output()
        .unwrap();
    check(&out, "epoch 2 accumulating 3");
    assert_eq!(params(&multi.join("model.safetensors")), params(&single.join("model.safetensors")));
}

#[test]
fn ranks_with_different_options_refuse_to_start_naming_the_rank() {
    if !have_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path());
    let r = run.to_str().unwrap();
    let start = Instant::now();
    // MPMD: rank 0 and rank 1 get different learning rates.
    let out = mpirun(1)
        .args([STRATA, "train", r, "--lr", "0.01", ":", "-np", "1", STRATA, "train", r, "--lr", "0.02"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rank 1 of 2 was started with another run config or data than rank 0"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
}

/// The pids of `root`'s descendants whose environment says MPI rank `rank`.
fn rank_pids(root: u32, rank: usize) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`; comm may hold spaces, so split after the last `)`.
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let mut p = pid;
        let mut under = false;
        while let Some(pp) = parent(p) {
            if pp == root {
                under = true;
                break;
            }
            if pp <= 1 {
                break;
            }
            p = pp;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        if under && env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_killed_rank_stops_the_others_and_the_checkpoint_stays_intact() {
    if !have_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path());
    let dir = tmp.path().join("killed");
    let mut child = mpirun(2)
        .args([STRATA, "train", run.to_str().unwrap(), "--epochs", "100000", "--checkpoint-every", "5", "--out"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let ckpt_dir = dir.join("checkpoints");
    while std::fs::read_dir(&ckpt_dir).map_or(0, |d| d.count()) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before a rank could be killed");
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let victims = rank_pids(child.id(), 1);
    assert!(!victims.is_empty(), "rank 1's process not found");
    for pid in victims {
        unsafe_kill(pid);
    }
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "the other rank did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("rank 1"), "{stderr}");
    // The run resumes from its newest checkpoint (rank 0 writes it whole or not at all).
    let out = Command::new(STRATA).args(["train", "--quiet", "--epochs", "1", "--resume"]).arg(&dir).output();
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Epoch 1 may be over already: then `--epochs 1` ends before the checkpoint, which was read.
    assert!(out.status.success() || stderr.contains("ends before the checkpoint"), "{stderr}");
}

/// SIGKILL, through the `kill` command (the tests forbid no unsafe code, but need none).
fn unsafe_kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}
