//! strata's matrix product in f32 and under bf16 autocast, one thread, on W4's GEMM shapes:
//! GFLOP/s of `x·wᵀ` as `linear` calls it (the kernel plus the operands' packing), to set beside
//! PyTorch's `torch.mm` in f32 and bf16 (`bench/torch_matmul_precision.py`).
//!
//! `cargo run --release -p strata-bench --example matmul_precision`

use std::time::Instant;
use strata_core::{DType, Generator, Precision, Tensor, autocast};

fn main() -> strata_core::Result<()> {
    strata_core::set_num_threads(1)?;
    let mut rng = Generator::new(0);
    for (m, n, k) in [
        (256, 2048, 2048),
        (2048, 2048, 256),
        (256, 2048, 784),
        (512, 128, 784),
        (128, 784, 512),
        (64, 128, 784),
        (1792, 512, 28),
        (64, 512, 128),
        (512, 64, 128),
    ] {
        let x = Tensor::randn(&[m, k], 0.0, 1.0, DType::F32, &mut rng)?;
        let w = Tensor::randn(&[n, k], 0.0, 1.0, DType::F32, &mut rng)?;
        let wt = w.t()?;
        for precision in [Precision::F32, Precision::Bf16] {
            let gflops = autocast(precision, || -> strata_core::Result<f64> {
                for _ in 0..3 {
                    x.matmul(&wt)?;
                }
                let reps = (2e10 / (2.0 * (m * n * k) as f64)).clamp(5.0, 2000.0) as usize;
                let t = Instant::now();
                for _ in 0..reps {
                    x.matmul(&wt)?;
                }
                Ok(2.0 * (m * n * k) as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9)
            })?;
            println!("{m}×{k} · ({n}×{k})ᵀ  {precision:>4}  {gflops:6.0} GFLOP/s");
        }
    }
    Ok(())
}
