//! The fastest and the median training step of W5 or W6 over a number of steps, for measuring on
//! a busy machine: the whole-run mean that `strata-bench` prints includes every step another
//! process slowed down; the minimum is close to what an idle machine gives.
//!
//! ```text
//! cargo run --release -p strata-bench --example step_times -- W6 [STEPS] [fast]   # RAYON_NUM_THREADS=1|2
//! python3 bench/torch_step_times.py W6 [STEPS] [THREADS]                    # PyTorch's counterpart
//! ```
//! The model, optimizer and batch size come from the run file, as in `strata-bench`; the steps
//! cycle over four synthetic batches. `fast` builds the model with `conv_algorithm = "fast"`
//! (W5's 28×28 convolutions as Winograd F(4×4) on AVX-512).

use std::time::Instant;
use strata_bench::{RunFile, synthetic_data, train_step};
use strata_nn::Module;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map_or("W6", String::as_str).to_uppercase();
    let (run, sample): (&str, Vec<usize>) = match workload.as_str() {
        "W5" => ("resnet_mnist.toml", vec![1, 28, 28]),
        "W6" => ("lstm_mnist.toml", vec![28, 28]),
        other => {
            eprintln!("step_times: unknown workload {other:?} (W5 or W6)");
            std::process::exit(2);
        }
    };
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(40).max(1);
    let mut rf = RunFile::load(run).expect("run file");
    let fast = args.get(3).is_some_and(|a| a == "fast");
    if fast {
        rf.spec.conv_algorithm = strata_core::ConvAlgorithm::Fast;
    }
    let model = rf.build().expect("model");
    let mut opt = rf.optimizer(model.parameters()).expect("optimizer");
    let b = rf.batch_size;
    let (x, y) = synthetic_data(b * 4, sample.iter().product(), 10, 4).expect("data");
    let mut dims = vec![b * 4];
    dims.extend_from_slice(&sample);
    let x = x.reshape(&dims).expect("reshape");
    let mut times = Vec::with_capacity(steps);
    for s in 0..steps {
        let i = s % 4;
        let (xb, yb) = (x.narrow(0, i * b, b).expect("batch"), y.narrow(0, i * b, b).expect("batch"));
        let t = Instant::now();
        std::hint::black_box(train_step(&model, opt.as_mut(), &xb, &yb).expect("step"));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "strata {workload}{} {} threads, step ms: min {:.3} median {:.3}  => best {:.0} samples/s",
        if fast { " (conv_algorithm fast)" } else { "" },
        rayon::current_num_threads(),
        times[0],
        times[steps / 2],
        b as f64 / times[0] * 1e3
    );
}
