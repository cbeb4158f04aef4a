//! bf16 autocast, op by op: the values and gradients of every op whose work is a matrix product
//! (matmul, linear, conv2d, the LSTM) against f32, bounded by bf16's rounding; linear's three
//! products against f64 references of the rounded operands (they are exactly bf16 products, on
//! rayon's threads too); a node's backward runs under the precision of its forward.

use strata_core::autocast::round_bf16;
use strata_core::{
    ConvAlgorithm, ConvOptions, DType, Generator, LstmOptions, Precision, Tensor, autocast, conv2d_with, linear,
    lstm_layer,
};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, &mut Generator::new(seed)).unwrap()
}

/// `rand` scaled to PyTorch's LSTM initialisation (±1/√H, H = 16).
fn small(shape: &[usize], seed: u64) -> Tensor {
    rand(shape, seed).mul_scalar(0.25).unwrap()
}

/// The op's output and every input's gradient (of the output's sum weighted by a fixed random
/// tensor), with forward and backward under `precision`.
fn run(
    precision: Precision,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> strata_core::Result<Tensor>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().requires_grad_().unwrap()).collect();
    autocast(precision, || {
        let y = f(&leaves).unwrap();
        let w = rand(y.dims(), 99);
        y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let grads = leaves.iter().map(|l| l.grad().unwrap().to_vec::<f32>().unwrap()).collect();
        (y.to_vec::<f32>().unwrap(), grads)
    })
}

/// The largest difference relative to the largest value.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    diff / scale.max(1e-30)
}

/// bf16 against f32 for the output and each gradient: within `2⁻⁷` of the largest value (each
/// operand is rounded by at most 2⁻⁹ relative; sums of N products of random signs grow the
/// difference like √N, the values like √N too), and visibly different from f32 (so the products
/// really were rounded). Inputs listed in `sums` are biases: their gradient is a sum of the
/// output's gradient, no product, so it equals f32's exactly.
fn check(what: &str, inputs: &[Tensor], sums: &[usize], f: &dyn Fn(&[Tensor]) -> strata_core::Result<Tensor>) {
    let (y32, g32) = run(Precision::F32, inputs, f);
    let (y16, g16) = run(Precision::Bf16, inputs, f);
    for i in sums {
        assert_eq!(g32[*i], g16[*i], "{what}: the bias gradient {i} involves no product");
    }
    let products = g32.iter().zip(&g16).enumerate().filter(|(i, _)| !sums.contains(i));
    let outs = std::iter::once(("output".to_string(), &y32, &y16))
        .chain(products.map(|(i, (a, b))| (format!("gradient {i}"), a, b)));
    for (name, a, b) in outs {
        let d = rel_diff(a, b);
        assert!(d <= 1.0 / 128.0, "{what} {name}: bf16 is {d:.2e} (relative) from f32");
        assert!(d >= 1e-5, "{what} {name}: bf16 equals f32 to {d:.2e}: were the products rounded?");
    }
}

#[test]
fn matmul_linear_conv_and_lstm_stay_within_bf16_rounding_of_f32() {
    check("matmul", &[rand(&[32, 48], 1), rand(&[48, 40], 2)], &[], &|t| t[0].matmul(&t[1]));
    check("batched matmul", &[rand(&[3, 20, 24], 3), rand(&[24, 32], 4)], &[], &|t| t[0].matmul(&t[1]));
    check("linear", &[rand(&[64, 100], 5), rand(&[80, 100], 6), rand(&[80], 7)], &[2], &|t| {
        linear(&t[0], &t[1], Some(&t[2]))
    });
    for algorithm in [ConvAlgorithm::Default, ConvAlgorithm::Fast] {
        let opts = ConvOptions { stride: (1, 1), padding: (1, 1), dilation: (1, 1), groups: 1, algorithm };
        check(
            &format!("conv2d ({})", algorithm.name()),
            &[rand(&[4, 16, 12, 12], 8), rand(&[24, 16, 3, 3], 9), rand(&[24], 10)],
            &[2],
            &move |t| conv2d_with(&t[0], &t[1], Some(&t[2]), &opts),
        );
    }
    check(
        "lstm",
        // Weights at PyTorch's initial scale (1/√H): unit-variance weights saturate the gates,
        // where any rounding is amplified step after step.
        &[rand(&[6, 32, 20], 11), small(&[64, 20], 12), small(&[64, 16], 13), small(&[64], 14), small(&[64], 15)],
        // The LSTM's bias gradients are sums of gate gradients that depend on bf16 products.
        &[],
        &|t| {
            let (out, _, _) =
                lstm_layer(&t[0], None, None, &t[1], &t[2], Some((&t[3], &t[4])), LstmOptions::default())?;
            Ok(out)
        },
    );
}

/// `a[m×k]·b[k×n]` of the bf16-rounded operands, in f64; `a` and `b` as `(values, row stride,
/// column stride)`.
fn rounded_product(m: usize, n: usize, k: usize, a: (&[f32], usize, usize), b: (&[f32], usize, usize)) -> Vec<f64> {
    let at = |(v, rs, cs): (&[f32], usize, usize), i: usize, j: usize| round_bf16(v[i * rs + j * cs]) as f64;
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| at(a, i, p) * at(b, p, j)).sum();
        }
    }
    out
}

fn assert_matches(what: &str, got: &[f32], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs the rounded product {w}");
    }
}

#[test]
fn linear_forward_and_both_gradients_are_products_of_rounded_operands() {
    // 64×256×256 = 2²² multiply-adds: the input and weight gradients run on two rayon threads
    // (linear's backward join), which must carry the precision along.
    let (m, k, n) = (64, 256, 256);
    let (x, w) = (rand(&[m, k], 21), rand(&[n, k], 22));
    let g = rand(&[m, n], 23);
    let (xl, wl) = (x.detach().requires_grad_().unwrap(), w.detach().requires_grad_().unwrap());
    let y = autocast(Precision::Bf16, || linear(&xl, &wl, None)).unwrap();
    // Backward outside the scope: it runs under the forward's precision all the same.
    y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
    let (xv, wv, gv) = (x.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap(), g.to_vec::<f32>().unwrap());
    // y = x·wᵀ, dx = g·w, dw = gᵀ·x.
    assert_matches("y", &y.to_vec::<f32>().unwrap(), &rounded_product(m, n, k, (&xv, k, 1), (&wv, 1, k)));
    assert_matches(
        "dx",
        &xl.grad().unwrap().to_vec::<f32>().unwrap(),
        &rounded_product(m, k, n, (&gv, n, 1), (&wv, k, 1)),
    );
    assert_matches(
        "dw",
        &wl.grad().unwrap().to_vec::<f32>().unwrap(),
        &rounded_product(n, k, m, (&gv, 1, n), (&xv, k, 1)),
    );
}

#[test]
fn backward_runs_under_the_precision_of_its_forward() {
    let (x, w) = (rand(&[32, 64], 31), rand(&[48, 64], 32));
    let grads = |forward: Precision, backward: Precision| {
        let (xl, wl) = (x.detach().requires_grad_().unwrap(), w.detach().requires_grad_().unwrap());
        let y = autocast(forward, || linear(&xl, &wl, None).unwrap().relu().unwrap());
        autocast(backward, || y.sum_all().unwrap().backward().unwrap());
        (xl.grad().unwrap().to_vec::<f32>().unwrap(), wl.grad().unwrap().to_vec::<f32>().unwrap())
    };
    let bf16 = grads(Precision::Bf16, Precision::Bf16);
    let f32 = grads(Precision::F32, Precision::F32);
    assert_ne!(bf16, f32, "bf16 and f32 gradients differ");
    assert_eq!(grads(Precision::Bf16, Precision::F32), bf16, "a bf16 forward's backward is bf16 wherever it runs");
    assert_eq!(grads(Precision::F32, Precision::Bf16), f32, "an f32 forward's backward is f32 wherever it runs");
}

#[test]
fn f64_and_thin_products_are_left_in_full_precision() {
    // f64 is never rounded.
    let a = Tensor::from_vec(vec![1.0f64 + 1.0 / 1024.0; 32 * 32], &[32, 32]).unwrap();
    let y = autocast(Precision::Bf16, || a.matmul(&a)).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), a.matmul(&a).unwrap().to_vec::<f64>().unwrap());
    // A product with fewer than 16 output rows (batch-1 inference) runs in f32.
    let (x, w) = (rand(&[1, 64], 41), rand(&[64, 64], 42));
    let y = autocast(Precision::Bf16, || x.matmul(&w)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), x.matmul(&w).unwrap().to_vec::<f32>().unwrap());
}
