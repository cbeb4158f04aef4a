//! `--device` end to end: `strata devices`, training on a GPU with the CPU's losses, checkpoints
//! that do not depend on the device, and the errors for a device that is not there. Without a
//! GPU adapter the GPU tests print `SKIPPED` and pass, unless `STRATA_REQUIRE_GPU=1`.

use std::path::Path;
use std::process::Command;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn strata(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(STRATA).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Whether `strata devices` lists a GPU; otherwise a `SKIPPED` line (or a failure under
/// `STRATA_REQUIRE_GPU=1`).
fn has_gpu(test: &str) -> bool {
    let (code, out, _) = strata(&["devices"]);
    assert_eq!(code, 0, "{out}");
    if out.contains("gpu:0") {
        return true;
    }
    let why = out.lines().find(|l| l.starts_with("no GPU")).unwrap_or("no GPU listed").to_string();
    assert!(std::env::var("STRATA_REQUIRE_GPU").as_deref() != Ok("1"), "STRATA_REQUIRE_GPU=1 but {why}");
    // Straight to stderr (libtest captures eprintln!), so the skip shows.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{test}: SKIPPED, {why}\n").as_bytes());
    false
}

/// The step losses a run logged to its metrics.jsonl.
fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn devices_lists_the_cpu_and_says_what_gpus_there_are() {
    let (code, out, _) = strata(&["devices"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("cpu "), "{out}");
    // The kernels the CPU's products run on, chosen at run time.
    let cpu = out.lines().next().unwrap();
    assert!(cpu.contains("products: f32 on ") && cpu.contains(", bf16 (--precision bf16) on "), "{cpu}");
    // STRATA_NO_AMX keeps bf16 products off the AMX tiles, and says so on a CPU that has them.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("devices")
        .env("STRATA_NO_AMX", "1")
        .output()
        .expect("strata runs");
    let off = String::from_utf8_lossy(&o.stdout);
    let cpu_off = off.lines().next().unwrap();
    assert!(!cpu_off.contains("on AMX tiles"), "{cpu_off}");
    if cpu.contains("on AMX tiles") {
        assert!(cpu_off.contains("turned off by STRATA_NO_AMX"), "{cpu_off}");
    }
    assert!(out.contains("gpu:0") || out.contains("no GPU"), "{out}");
}

#[test]
fn a_device_that_is_not_there_is_a_clear_error() {
    let (code, _, err) = strata(&["train", "--device", "tpu", "--epochs", "1", "--quiet"]);
    assert_ne!(code, 0);
    assert!(err.contains("training.device (--device): unknown device `tpu`"), "{err}");
    let (code, _, err) = strata(&["train", "--device", "gpu:99", "--epochs", "1", "--quiet"]);
    assert_ne!(code, 0);
    assert!(err.contains("gpu:99"), "{err}");
}

#[test]
fn simple_nn_trains_on_the_gpu_with_the_cpus_losses() {
    if !has_gpu("simple_nn_trains_on_the_gpu_with_the_cpus_losses") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, gpu) = (tmp.path().join("cpu"), tmp.path().join("gpu"));
    for (dir, device) in [(&cpu, "cpu"), (&gpu, "gpu")] {
        let (code, _, err) =
            strata(&["train", "--epochs", "1", "--device", device, "--out", dir.to_str().unwrap(), "--quiet"]);
        assert_eq!(code, 0, "{device}: {err}");
    }
    let (lc, lg) = (losses(&cpu), losses(&gpu));
    assert_eq!(lc.len(), lg.len());
    for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
        assert!((c - g).abs() < 1e-4, "logged step {}: cpu loss {c}, gpu loss {g}", 10 * (i + 1));
    }
    // The GPU-trained checkpoint evaluates on the CPU, to the GPU run's held-out accuracy...
    let (code, out_cpu, err) = strata(&["eval", gpu.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out_gpu, err) = strata(&["eval", gpu.to_str().unwrap(), "--device", "gpu"]);
    assert_eq!(code, 0, "{err}");
    let acc = |s: &str| s.lines().find(|l| l.contains("accuracy")).unwrap_or_default().to_string();
    assert_eq!(acc(&out_cpu), acc(&out_gpu));
    // ...and the run resumes on the other device.
    let (code, _, err) =
        strata(&["train", "--resume", gpu.to_str().unwrap(), "--epochs", "2", "--device", "cpu", "--quiet"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_grouped_reflect_padded_convolution_trains_on_the_gpu_with_the_cpus_losses() {
    if !has_gpu("a_grouped_reflect_padded_convolution_trains_on_the_gpu_with_the_cpus_losses") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("grouped.toml");
    std::fs::write(
        &model,
        r#"name = "GroupedConv"
input = [1, 28, 28]
layers = [
  { name = "conv1", type = "Conv2d", in_channels = 1, out_channels = 4, kernel_size = 3, stride = 2 },
  { type = "ReLU" },
  { name = "conv2", type = "Conv2d", in_channels = 4, out_channels = 4, kernel_size = 3, stride = 2, padding = 1, padding_mode = "reflect", groups = 2 },
  { type = "Flatten" },
  { name = "fc", type = "Linear", in_features = 196, out_features = 10 },
]
"#,
    )
    .unwrap();
    let (cpu, gpu) = (tmp.path().join("cpu"), tmp.path().join("gpu"));
    for (dir, device) in [(&cpu, "cpu"), (&gpu, "gpu")] {
        let args = ["train", "--model", model.to_str().unwrap(), "--epochs", "1", "--device", device];
        let (code, _, err) = strata(&[&args[..], &["--out", dir.to_str().unwrap(), "--quiet"]].concat());
        assert_eq!(code, 0, "{device}: {err}");
    }
    let (lc, lg) = (losses(&cpu), losses(&gpu));
    assert!(!lc.is_empty() && lc.len() == lg.len());
    for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
        assert!((c - g).abs() < 1e-4, "logged step {}: cpu loss {c}, gpu loss {g}", 10 * (i + 1));
    }
}

#[test]
fn f64_on_a_gpu_is_refused_with_the_fix() {
    if !has_gpu("f64_on_a_gpu_is_refused_with_the_fix") {
        return;
    }
    let (code, _, err) = strata(&["train", "--dtype", "f64", "--device", "gpu", "--epochs", "1", "--quiet"]);
    assert_ne!(code, 0);
    assert!(err.contains("GPUs hold f32 only"), "{err}");
}

#[test]
fn a_split_model_checks_summarises_trains_and_resumes_under_another_map() {
    if !has_gpu("a_split_model_checks_summarises_trains_and_resumes_under_another_map") {
        return;
    }
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/split_devices.toml");
    let one_gpu = ["--device-map", "mid=gpu:0"];
    let (code, out, err) = strata(&[&["check", model][..], &one_gpu].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("device") && out.contains("gpu:0") && out.contains("ok: "), "{out}");
    let (code, out, err) = strata(&[&["summary", model][..], &one_gpu].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("on gpu:0: 108,736 parameters") && out.contains("into head: gpu:0 → cpu, 256 B per sample"),
        "{out}"
    );
    // Trained split, and all on the CPU from the same seed: the same losses.
    let tmp = tempfile::tempdir().unwrap();
    let (split, cpu) = (tmp.path().join("split"), tmp.path().join("cpu"));
    let all_cpu = ["--device-map", "encoder=cpu,mid=cpu,head=cpu"];
    for (dir, map) in [(&split, &one_gpu), (&cpu, &all_cpu)] {
        let args = ["train", "--model", model, "--epochs", "1", "--out", dir.to_str().unwrap(), "--quiet"];
        let (code, _, err) = strata(&[&args[..], &map[..]].concat());
        assert_eq!(code, 0, "{err}");
    }
    let (ls, lc) = (losses(&split), losses(&cpu));
    assert!(!ls.is_empty() && ls.len() == lc.len());
    for (i, (s, c)) in ls.iter().zip(&lc).enumerate() {
        assert!((s - c).abs() < 1e-4, "logged step {}: split loss {s}, cpu loss {c}", 10 * (i + 1));
    }
    // The split run's checkpoint evaluates on the CPU alone, and resumes under another map.
    let (code, out, err) = strata(&["eval", split.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    let (code, _, err) = strata(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--epochs",
        "2",
        "--device-map",
        "encoder=cpu,mid=gpu:0",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    // A device the machine lacks is refused before training, naming the layer and the fix.
    let (code, _, err) = strata(&["train", "--model", model, "--device-map", "mid=gpu:99", "--epochs", "1", "--quiet"]);
    assert_ne!(code, 0);
    assert!(err.contains("`mid`") && err.contains("gpu:99") && err.contains("--device-map 'mid=cpu'"), "{err}");
}

/// `--pipeline-chunks K` on a model split over the CPU and a GPU, and over two GPUs and the CPU
/// (one adapter offered twice): the header names the stages,
/// and the run's losses and final weights equal `--accumulate K`'s bit for bit (the pipeline
/// changes when the stages compute, not what). Beside `--accumulate` it is refused.
#[test]
fn a_pipelined_split_run_equals_accumulation_bit_for_bit() {
    if !has_gpu("a_pipelined_split_run_equals_accumulation_bit_for_bit") {
        return;
    }
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/split_devices.toml");
    let tmp = tempfile::tempdir().unwrap();
    let (piped, accumulated) = (tmp.path().join("piped"), tmp.path().join("accumulated"));
    let mut header = String::new();
    for (dir, how) in [(&piped, "--pipeline-chunks"), (&accumulated, "--accumulate")] {
        let args = ["train", "--model", model, "--device-map", "mid=gpu:0", "--epochs", "1", "--batch-size", "50"];
        let (code, out, err) = strata(&[&args[..], &[how, "3", "--out", dir.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{err}");
        header.push_str(&out);
    }
    assert!(header.contains("pipeline: 2 stages (encoder, mid on gpu:0 | head on cpu), 3 micro-batches"), "{header}");
    let (lp, la) = (losses(&piped), losses(&accumulated));
    assert!(!lp.is_empty());
    assert_eq!(lp, la, "pipelined and accumulated losses");
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(&piped) == weights(&accumulated), "the final weights differ");
    // Three stages over gpu:0, gpu:1 (the adapter offered twice) and the CPU, as the file places
    // them: the same again.
    let three = |how: &str, dir: &Path| {
        let o = std::process::Command::new(STRATA)
            .env("STRATA_GPU_REPLICAS", "2")
            .args(["train", "--model", model, "--epochs", "1", "--batch-size", "40", how, "4", "--out"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (piped3, accumulated3) = (tmp.path().join("piped3"), tmp.path().join("accumulated3"));
    let out = three("--pipeline-chunks", &piped3);
    assert!(out.contains("pipeline: 3 stages (encoder on gpu:0 | mid on gpu:1 | head on cpu)"), "{out}");
    three("--accumulate", &accumulated3);
    assert_eq!(losses(&piped3), losses(&accumulated3), "three stages: pipelined and accumulated losses");
    assert!(weights(&piped3) == weights(&accumulated3), "three stages: the final weights differ");
    let (code, _, err) =
        strata(&["train", "--model", model, "--pipeline-chunks", "2", "--accumulate", "2", "--epochs", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("pipeline_chunks = 2 and training.accumulate = 2") && err.contains("keep one"), "{err}");
}
