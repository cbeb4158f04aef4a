//! W5's convolutions one by one: the median forward and backward time of each distinct layer of
//! `examples/resnet_mnist_model.toml` at batch 128, on random data, in f32 or under bf16
//! autocast. It says which layer a change of the convolution code moved, where a whole W5 step
//! mixes five geometries (three algorithms: Winograd, im2col, a strided 1×1).
//!
//! ```text
//! cargo run --release -p strata-bench --example conv_layers -- [f32|bf16] [LAYER]   # RAYON_NUM_THREADS=1|2
//! ```
//! `LAYER` (an index into the table below) times that layer alone, over more repetitions (for
//! `perf record`). A W5 step runs the stem and the stride-2 layers once, `b1` twice and the
//! 64-channel 3×3 three times (the `step` line weights them so). `bench/torch_conv_layers.py`
//! times the same layers the same way in PyTorch.

use std::time::Instant;
use strata_core::{ConvOptions, DType, Generator, Precision, Tensor, autocast, conv2d_with};

/// A layer: name, input channels, output channels, input side, kernel side, stride, padding,
/// whether its input needs a gradient (not the stem's: the data).
type Layer = (&'static str, usize, usize, usize, usize, usize, usize, bool);

const LAYERS: [Layer; 5] = [
    ("stem 1->32 3x3", 1, 32, 28, 3, 1, 1, false),
    ("b1 32->32 3x3", 32, 32, 28, 3, 1, 1, true),
    ("b2.c1 32->64 3x3 s2", 32, 64, 28, 3, 2, 1, true),
    ("b2.sc 32->64 1x1 s2", 32, 64, 28, 1, 2, 0, true),
    ("b2.c2/b3 64->64 3x3", 64, 64, 14, 3, 1, 1, true),
];

/// How many times a W5 step runs each layer of [`LAYERS`].
const PER_STEP: [usize; 5] = [1, 2, 1, 1, 3];

fn main() {
    let precision = match std::env::args().nth(1).as_deref() {
        None | Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some(other) => {
            eprintln!("conv_layers: unknown precision {other:?} (f32 or bf16)");
            std::process::exit(2);
        }
    };
    let only: Option<usize> = std::env::args().nth(2).and_then(|a| a.parse().ok());
    let reps = if only.is_some() { 60 } else { 12 };
    let mut g = Generator::new(1);
    let mut step = 0.0;
    for (i, (name, c, o, side, k, s, p, needs_dx)) in LAYERS.into_iter().enumerate() {
        if only.is_some_and(|j| j != i) {
            continue;
        }
        let x = Tensor::randn(&[128, c, side, side], 0.0, 1.0, DType::F32, &mut g).unwrap();
        let x = if needs_dx { x.requires_grad_().unwrap() } else { x };
        let w = Tensor::randn(&[o, c, k, k], 0.0, 0.1, DType::F32, &mut g).unwrap().requires_grad_().unwrap();
        let opts = ConvOptions { stride: (s, s), padding: (p, p), ..Default::default() };
        let (mut forward, mut backward) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            autocast(precision, || {
                let t = Instant::now();
                let y = conv2d_with(&x, &w, None, &opts).unwrap();
                forward.push(t.elapsed().as_secs_f64());
                let dy = Tensor::ones(y.dims(), DType::F32);
                let t = Instant::now();
                y.backward_with_grad(&dy).unwrap();
                backward.push(t.elapsed().as_secs_f64());
            });
            w.zero_grad().unwrap();
            if needs_dx {
                x.zero_grad().unwrap();
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] * 1e3
        };
        let (fwd, bwd) = (median(&mut forward), median(&mut backward));
        step += PER_STEP[i] as f64 * (fwd + bwd);
        println!("{name:22} forward {fwd:6.2} ms  backward {bwd:6.2} ms");
    }
    if only.is_none() {
        println!("{:22} {step:6.2} ms", "step (weighted)");
    }
}
