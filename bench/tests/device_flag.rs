//! `strata-bench --device`: the binary runs a quick W1 on the device asked for and says so in
//! its JSON line (`"device":"gpu:0"`, the adapter's name, whether it is a software one), and a
//! device it cannot use is a clear error with a non-zero exit, never a panic. Without a GPU
//! adapter the GPU run prints one `SKIPPED` line (and fails under `STRATA_REQUIRE_GPU=1`), as
//! the other GPU tests do; the check that `--device gpu` then fails cleanly still runs.

use std::process::{Command, Output};

/// `strata-bench` with `args`, its output collected.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata-bench")).args(args).output().expect("strata-bench starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one JSON line of a single-workload run.
fn json_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "one JSON line, got: {text}");
    lines[0].to_string()
}

/// Asserts a clean failure: non-zero exit, no panic, and every one of `phrases` in the message.
fn fails_clearly(out: &Output, phrases: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "a panic, not an error: {err}");
    for p in phrases {
        assert!(err.contains(p), "the message lacks {p:?}: {err}");
    }
}

#[test]
fn an_unknown_device_is_a_clear_error() {
    let out = bench(&["--workload", "W1", "--quick", "--device", "nonsense"]);
    fails_clearly(&out, &["--device", "unknown device `nonsense`", "expected `cpu`, `gpu` or `gpu:N`"]);
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn the_cpu_run_names_its_device() {
    let out = bench(&["--workload", "W1", "--quick", "--samples", "256", "--device", "cpu"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let line = json_line(&out);
    assert!(line.contains(r#""workload":"W1""#) && line.contains(r#""device":"cpu""#), "{line}");
    assert!(!line.contains("adapter"), "no adapter on the CPU: {line}");
}

#[cfg(feature = "gpu")]
#[test]
fn w1_runs_on_the_gpu_or_says_why_not() {
    let adapters = strata_core::gpu::adapters();
    let out = bench(&["--workload", "W1", "--quick", "--samples", "256", "--device", "gpu"]);
    if adapters.is_empty() {
        let reason = strata_core::gpu::no_adapter_reason();
        assert!(std::env::var("STRATA_REQUIRE_GPU").as_deref() != Ok("1"), "STRATA_REQUIRE_GPU=1 but {reason}");
        // With no adapter, `--device gpu` must still fail cleanly, saying what to install.
        fails_clearly(&out, &["cannot run on gpu:0", "no Vulkan, Metal or DX12 adapter"]);
        // Straight to stderr (libtest captures eprintln!): one visible line.
        let line = format!("SKIPPED: the GPU run in {}: {reason}\n", file!());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let line = json_line(&out);
    let a = &adapters[0];
    for field in [
        r#""device":"gpu:0""#.to_string(),
        format!(r#""adapter":"{}""#, strata_bench::json_escape(&a.name)),
        format!(r#""software_adapter":{}"#, a.is_software()),
        r#""loss":"#.to_string(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line}");
    }
}

#[cfg(feature = "gpu")]
#[test]
fn a_gpu_index_beyond_the_adapters_is_a_clear_error() {
    let n = strata_core::gpu::adapters().len();
    let out = bench(&["--workload", "W1", "--quick", "--device", "gpu:99"]);
    let phrase = if n == 0 { "no Vulkan, Metal or DX12 adapter".to_string() } else { format!("{n} adapter(s)") };
    fails_clearly(&out, &["cannot run on gpu:99", &phrase]);
}

#[cfg(not(feature = "gpu"))]
#[test]
fn without_the_gpu_feature_a_gpu_is_a_clear_error() {
    let out = bench(&["--workload", "W1", "--quick", "--device", "gpu"]);
    fails_clearly(&out, &["cannot run on gpu:0", "no GPU backend", "--features gpu"]);
}
