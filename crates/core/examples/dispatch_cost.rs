//! The host cost of one GPU dispatch: 20,000 ReLUs of a 4-element tensor on `gpu:0`, one read
//! back at the end, three rounds. Prints the wall time per op and the part of it this thread
//! spent on the CPU before the read (Linux's `/proc/thread-self/schedstat`; 0 elsewhere): where
//! the two are close, small ops are bound by the host (wgpu's recording and the driver), not by
//! the GPU.
//!
//! ```sh
//! cargo run --release -p strata-core --features gpu --example dispatch_cost
//! ```

use strata_core::{DType, Device, Generator, Tensor};

/// This thread's time on a CPU so far, in nanoseconds (0 where the kernel does not say).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> strata_core::Result<()> {
    let dev = Device::Gpu(0);
    let x = Tensor::randn(&[4], 0.0, 1.0, DType::F32, &mut Generator::new(1))?.to_device(dev)?;
    let n = 20_000;
    for round in 0..3 {
        let wall = std::time::Instant::now();
        let cpu = thread_cpu_ns();
        let mut y = x.clone();
        for _ in 0..n {
            y = y.relu()?;
        }
        let host_us = (thread_cpu_ns() - cpu) as f64 / 1e3 / n as f64;
        y.to_vec::<f32>()?;
        let wall_us = wall.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("round {round}: {wall_us:.2} µs per op, {host_us:.2} µs of it on this thread's CPU before the read");
    }
    Ok(())
}
