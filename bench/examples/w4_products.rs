//! W4's three products of its 2048×2048 layer, as a training step runs them (forward x·Wᵀ,
//! input gradient dY·W, weight gradient dYᵀ·x), in f32 and bf16: GFLOP/s each.
//!
//! `cargo run --release -p strata-bench --example w4_products [-- THREADS]`

use std::time::Instant;
use strata_core::{DType, Generator, Precision, Tensor, autocast};

fn main() -> strata_core::Result<()> {
    let threads = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    strata_core::set_num_threads(threads)?;
    let mut rng = Generator::new(0);
    let (b, i, o) = (256, 2048, 2048);
    let x = Tensor::randn(&[b, i], 0.0, 1.0, DType::F32, &mut rng)?;
    let w = Tensor::randn(&[o, i], 0.0, 1.0, DType::F32, &mut rng)?;
    let dy = Tensor::randn(&[b, o], 0.0, 1.0, DType::F32, &mut rng)?;
    let flops = 2.0 * (b * i * o) as f64;
    type Product = fn(&Tensor, &Tensor, &Tensor) -> strata_core::Result<Tensor>;
    let products: [(&str, Product); 3] = [
        ("forward x·Wᵀ ", |x, w, _| x.matmul(&w.t()?)),
        ("input dY·W   ", |_, w, dy| dy.matmul(w)),
        ("weight dYᵀ·x ", |x, _, dy| dy.t()?.matmul(x)),
    ];
    for (name, f) in products {
        for precision in [Precision::F32, Precision::Bf16] {
            let mut times = Vec::new();
            autocast(precision, || -> strata_core::Result<()> {
                for _ in 0..3 {
                    f(&x, &w, &dy)?;
                }
                for _ in 0..30 {
                    let t = Instant::now();
                    f(&x, &w, &dy)?;
                    times.push(t.elapsed().as_secs_f64());
                }
                Ok(())
            })?;
            times.sort_by(f64::total_cmp);
            println!("{name} {precision:>4}  {:6.0} GFLOP/s (median of 30)", flops / times[15] / 1e9);
        }
    }
    Ok(())
}
