//! `strata devices` and the `--device` option: which devices a run can use, and the check that
//! the one asked for is there before anything is built on it.

use anyhow::{Result, bail};
use strata_core::{DType, Device, Tensor};

/// The device a run asked for (`training.device`, `--device`): `cpu` when absent. A GPU must be
/// usable now (the error says why not and what to do) and the model's type must live there.
pub fn resolve(name: Option<&str>, dtype: DType) -> Result<Device> {
    let device: Device = match name {
        None => Device::Cpu,
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
    };
    if device.is_gpu() {
        if dtype == DType::F64 {
            bail!(
                "the model is f64, and GPUs hold f32 only (WGSL has no f64): train it in f32 on {device} (--dtype f32), or in f64 on the CPU (--device cpu)"
            );
        }
        // Opens the adapter: the first use's error (no driver, no such index) is the message.
        Tensor::zeros(&[1], DType::F32).to_device(device)?;
    }
    Ok(device)
}

/// Runs `strata devices`: the CPU (threads, memory, the kernels its products run on), then every GPU adapter with its index, name, kind, API,
/// driver and limits; says why when there is none.
pub fn list() -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = Device::Cpu.total_memory().map(|b| format!(", {:.1} GiB memory", b as f64 / (1u64 << 30) as f64));
    let kernels = strata_core::cpu_kernels();
    println!(
        "cpu      {threads} threads{}; products: f32 on {}, bf16 (--precision bf16) on {}",
        memory.unwrap_or_default(),
        kernels.f32,
        kernels.bf16
    );
    gpus();
    Ok(())
}

#[cfg(feature = "gpu")]
fn gpus() {
    let adapters = strata_core::gpu::adapters();
    if adapters.is_empty() {
        println!("no GPU: {}", strata_core::gpu::no_adapter_reason());
        return;
    }
    for a in adapters {
        println!(
            "gpu:{:<4} {} ({}, {}; driver {}); largest tensor {:.0} MiB",
            a.index,
            a.name,
            a.kind,
            a.backend,
            if a.driver.is_empty() { "unknown" } else { &a.driver },
            a.max_binding_bytes as f64 / (1u64 << 20) as f64
        );
    }
    println!(
        "use one with `--device gpu` (= gpu:0) or `--device gpu:N`; software adapters show correctness, not speed"
    );
}

#[cfg(not(feature = "gpu"))]
fn gpus() {
    println!("no GPU: this build of strata has no GPU backend; build it with `cargo build --release --features gpu`");
}
