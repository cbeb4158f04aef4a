//! `strata-bench`: runs the benchmark workloads W1–W6 and prints one JSON line per workload.
//!
//! ```text
//! strata-bench [--workload W1|W2|W3|W4|W5|W6|all] [--device cpu|gpu|gpu:N] [--threads N]
//!              [--samples N] [--epochs N] [--quick] [--precision f32|bf16]
//! ```
//! `--device` is where the models and data live (default `cpu`; `gpu` is `gpu:0`, the first
//! adapter `strata devices` lists); a device that cannot be used is an error before anything
//! runs. `--threads` sizes rayon's global pool (default: all cores), on any device; `--samples`
//! shortens the W1/W2 epoch and `--epochs` repeats it (to profile the steady state); `--quick`
//! shrinks every workload for a smoke test; `--precision bf16` runs every workload under
//! `strata_core::autocast` (bf16 products, f32 master weights; CPU only). `bench/compare.sh` runs this binary and
//! `bench/torch_bench.py` side by side.

use std::process::ExitCode;
use strata_bench::{EPOCH_SAMPLES, Record, run_big_mlp, run_inference, run_lstm, run_resnet, run_simple_nn_training};
use strata_core::{AutocastGuard, Device, Precision};

const USAGE: &str = "usage: strata-bench [--workload W1|W2|W3|W4|W5|W6|all] [--device cpu|gpu|gpu:N] [--threads N] \
                     [--samples N] [--epochs N] [--quick] [--precision f32|bf16]";

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut workloads: Vec<String> = Vec::new();
    let mut threads = None;
    let mut samples = EPOCH_SAMPLES;
    let mut quick = false;
    let mut epochs = 1;
    let mut device = Device::Cpu;
    let mut precision = Precision::F32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workload" | "-w" => match args.next() {
                Some(w) => workloads.extend(w.split(',').map(|s| s.trim().to_uppercase())),
                None => return usage(),
            },
            "--device" | "-d" => match args.next().map(|d| d.parse::<Device>()) {
                Some(Ok(d)) => device = d,
                Some(Err(e)) => {
                    eprintln!("strata-bench: --device: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
                None => return usage(),
            },
            "--threads" | "-t" => match args.next().and_then(|t| t.parse::<usize>().ok()) {
                Some(t) if t > 0 => threads = Some(t),
                _ => return usage(),
            },
            "--samples" => match args.next().and_then(|t| t.parse::<usize>().ok()) {
                Some(n) if n > 0 => samples = n,
                _ => return usage(),
            },
            "--epochs" => match args.next().and_then(|t| t.parse::<usize>().ok()) {
                Some(n) if n > 0 => epochs = n,
                _ => return usage(),
            },
            "--quick" => quick = true,
            "--precision" => match args.next().as_deref().and_then(Precision::parse) {
                Some(p) => precision = p,
                None => return usage(),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    if workloads.is_empty() || workloads.iter().any(|w| w == "ALL") {
        workloads = ["W1", "W2", "W3", "W4", "W5", "W6"].map(String::from).to_vec();
    }
    if let Some(t) = threads
        && let Err(e) = strata_core::set_num_threads(t)
    {
        eprintln!("strata-bench: cannot set up {t} threads: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = strata_bench::check_device(device) {
        eprintln!("strata-bench: cannot run on {device}: {e}");
        return ExitCode::FAILURE;
    }
    if quick {
        samples = samples.min(2_048);
    }
    if precision != Precision::F32 && device != Device::Cpu {
        eprintln!("strata-bench: --precision {precision} runs on the CPU only");
        return ExitCode::from(2);
    }
    // Every workload runs on this thread, so one scope covers forward and backward alike.
    let _autocast = AutocastGuard::new(precision);
    for w in &workloads {
        let record: strata_nn::Result<Record> = match w.as_str() {
            "W1" => run_simple_nn_training("W1", 64, samples, epochs, device),
            "W2" => run_simple_nn_training("W2", 512, samples, epochs, device),
            "W3" => run_inference(if quick { 2_000 } else { 100_000 }, device),
            "W4" => run_big_mlp(if quick { 2 } else { 24 }, device),
            "W5" => {
                if quick {
                    run_resnet(1, 2, device)
                } else {
                    run_resnet(3, 20, device)
                }
            }
            "W6" => {
                if quick {
                    run_lstm(1, 4, device)
                } else {
                    run_lstm(5, 60, device)
                }
            }
            other => {
                eprintln!("strata-bench: unknown workload {other:?} (W1–W6 or all)");
                return ExitCode::from(2);
            }
        };
        match record {
            Ok(mut r) => {
                r.precision = precision;
                println!("{}", r.to_json())
            }
            Err(e) => {
                eprintln!("strata-bench: {w} failed on {device}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
