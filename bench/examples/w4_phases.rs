//! W4's training step cut into its phases (zero_grad, forward and loss, backward, optimizer
//! step), medians over 60 steps, in f32 or bf16: where a step's time goes.
//!
//! `cargo run --release -p strata-bench --example w4_phases -- [f32|bf16] [THREADS]`

use std::time::Instant;
use strata_bench::{Mlp, sgd, synthetic_data};
use strata_core::{Generator, Precision, autocast};
use strata_nn::{CrossEntropyLoss, Module, Optimizer};

fn main() -> strata_nn::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let precision = if args.get(1).is_some_and(|a| a == "bf16") { Precision::Bf16 } else { Precision::F32 };
    let threads = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    strata_core::set_num_threads(threads)?;
    let batch = 256;
    let model = Mlp::new(&[784, 2048, 2048, 10], &mut Generator::new(0))?;
    let mut opt = sgd(&model)?;
    let (x, y) = synthetic_data(4 * batch, 784, 10, 2)?;
    let mut phases = [const { Vec::new() }; 4];
    autocast(precision, || -> strata_nn::Result<()> {
        for step in 0..70 {
            let (xb, yb) = (x.narrow(0, (step % 4) * batch, batch)?, y.narrow(0, (step % 4) * batch, batch)?);
            let t0 = Instant::now();
            opt.zero_grad()?;
            let t1 = Instant::now();
            let loss = CrossEntropyLoss::new().forward(&model.forward(&xb)?, &yb)?;
            let t2 = Instant::now();
            loss.backward()?;
            let t3 = Instant::now();
            opt.step()?;
            let t4 = Instant::now();
            if step >= 10 {
                for (p, d) in phases.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                    p.push(d.as_secs_f64() * 1e3);
                }
            }
        }
        Ok(())
    })?;
    let mut total = 0.0;
    for (name, mut p) in ["zero_grad", "forward+loss", "backward", "step"].into_iter().zip(phases) {
        p.sort_by(f64::total_cmp);
        total += p[p.len() / 2];
        println!("{name:>13} {:7.3} ms (median)", p[p.len() / 2]);
    }
    println!("{:>13} {total:7.3} ms = {:.0} samples/s", "sum", batch as f64 / total * 1e3);
    Ok(())
}
