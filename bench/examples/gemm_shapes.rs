//! The GEMM shapes of W1, W2 and W4 through the `gemm` crate alone: one thread, the crate's own
//! rayon mode, and a fixed two-way split of the output columns run with `rayon::join`. What
//! the engine's threading choices in `strata-core` (ops/matmul/cpu.rs) are based on.
//!
//! `cargo run --release -p strata-bench --example gemm_shapes`

use std::time::Instant;

/// (name, m, n, k, lhs transposed, rhs transposed) as the training step calls them.
const SHAPES: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("W1 fc1 fwd  x·W1ᵀ", 64, 128, 784, false, true),
    ("W1 fc1 dW   gᵀ·x", 128, 784, 64, true, false),
    ("W1 fc2 fwd", 64, 64, 128, false, true),
    ("W1 fc2 dW", 64, 128, 64, true, false),
    ("W1 fc2 dX   g·W", 64, 128, 64, false, false),
    ("W2 fc1 fwd", 512, 128, 784, false, true),
    ("W2 fc1 dW", 128, 784, 512, true, false),
    ("W2 fc2 fwd", 512, 64, 128, false, true),
    ("W2 fc2 dW", 64, 128, 512, true, false),
    ("W2 fc2 dX", 512, 128, 64, false, false),
    ("W4 fc1 fwd", 256, 2048, 784, false, true),
    ("W4 fc1 dW", 2048, 784, 256, true, false),
    ("W4 fc2 fwd", 256, 2048, 2048, false, true),
    ("W4 fc2 dW", 2048, 2048, 256, true, false),
    ("W4 fc2 dX", 256, 2048, 2048, false, false),
];

#[allow(clippy::too_many_arguments)]
fn run(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], at: bool, bt: bool, par: gemm::Parallelism) {
    // Row-major a [m,k] (or its transpose stored [k,m]), b [k,n] (or [n,k]), c [m,n].
    let (a_rs, a_cs) = if at { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if bt { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the buffers hold m·k, k·n and m·n elements and the strides stay inside them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn time(mut f: impl FnMut(), flops: f64) -> f64 {
    for _ in 0..5 {
        f();
    }
    let reps = ((2e9 / flops) as usize).clamp(10, 20_000);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    println!(
        "{:<20} {:>5} {:>5} {:>5}  {:>16} {:>16} {:>16}",
        "shape", "m", "n", "k", "1 thread", "gemm rayon(2)", "split n, join"
    );
    for &(name, m, n, k, at, bt) in SHAPES {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let one = time(|| run(m, n, k, &a, &b, &mut c, at, bt, gemm::Parallelism::None), flops);
        let two = pool.install(|| time(|| run(m, n, k, &a, &b, &mut c, at, bt, gemm::Parallelism::Rayon(2)), flops));
        // Split the output columns in two; each half is an independent GEMM on one thread.
        let split = pool.install(|| {
            time(
                || {
                    let h = n / 2;
                    let (b0, b1): (&[f32], &[f32]) = if bt { (&b[..h * k], &b[h * k..]) } else { (&b[..], &b[h..]) };
                    let mut c0 = vec![0.0f32; m * h];
                    let mut c1 = vec![0.0f32; m * (n - h)];
                    rayon::join(
                        || run_cols(m, h, n, k, &a, b0, &mut c0, at, bt),
                        || run_cols(m, n - h, n, k, &a, b1, &mut c1, at, bt),
                    );
                },
                flops,
            )
        });
        let g = |t: f64| format!("{:>7.1} µs {:>5.0}GF", t * 1e6, flops / t / 1e9);
        println!("{name:<20} {m:>5} {n:>5} {k:>5}  {} {} {}", g(one), g(two), g(split));
    }
}

/// A column block of width `w` of the product, with `b` starting at the block's first column.
#[allow(clippy::too_many_arguments)]
fn run_cols(m: usize, w: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], at: bool, bt: bool) {
    let (a_rs, a_cs) = if at { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if bt { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: as in `run`, restricted to `w` columns of b and c.
    unsafe {
        gemm::gemm(
            m,
            w,
            k,
            c.as_mut_ptr(),
            1,
            w as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
