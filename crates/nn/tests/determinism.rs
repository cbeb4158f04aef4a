//! Determinism is not traded for speed: the same seed gives bit-identical parameters after
//! training with 1, 2 and 4 threads (fixed reduction order in every kernel, GEMM threads split
//! the output, never the sum, and the cut depends only on the shape).

use strata_core::{DType, Generator, Tensor};
use strata_nn::{CrossEntropyLoss, Linear, Module, Optimizer, ReLU, SGD, Sequential, SgdConfig, SimpleNN};

fn train(threads: usize) -> Vec<Vec<u32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut rng = Generator::new(42);
        let mut layer = |i, o| Linear::with_options(i, o, true, DType::F32, &mut rng).unwrap();
        let model = SimpleNN { fc1: layer(784, 128), fc2: layer(128, 64), fc3: layer(64, 10) };
        // Batch 512: large enough that the GEMMs and elementwise kernels take their threaded paths.
        let x = Tensor::randn(&[512, 784], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let y = Tensor::from_vec((0..512).map(|_| rng.below(10) as i64).collect(), &[512]).unwrap();
        let mut opt =
            SGD::with_config(model.parameters(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() }).unwrap();
        for _ in 0..5 {
            opt.zero_grad().unwrap();
            let loss = CrossEntropyLoss::new().forward(&model.forward(&x).unwrap(), &y).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
        }
        model.parameters().iter().map(|p| p.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
    })
}

#[test]
fn one_two_and_four_threads_give_bit_identical_parameters() {
    let one = train(1);
    assert_eq!(one, train(2), "1 vs 2 threads");
    assert_eq!(one, train(4), "1 vs 4 threads");
}

/// A wider MLP at batch 256: its first layer's GEMMs (256×784×1024 multiply-adds) are cut into
/// four blocks run in parallel, its hidden layer's input and weight gradients run on two threads
/// at once: the parallel paths W4 takes.
fn train_wide(threads: usize) -> Vec<Vec<u32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut rng = Generator::new(7);
        let mut layer = |i, o| Linear::with_options(i, o, true, DType::F32, &mut rng).unwrap();
        let model = Sequential::new()
            .append(layer(784, 1024))
            .append(ReLU)
            .append(layer(1024, 256))
            .append(ReLU)
            .append(layer(256, 10));
        let x = Tensor::randn(&[256, 784], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let y = Tensor::from_vec((0..256).map(|_| rng.below(10) as i64).collect(), &[256]).unwrap();
        let mut opt =
            SGD::with_config(model.parameters(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() }).unwrap();
        for _ in 0..2 {
            opt.zero_grad().unwrap();
            let loss = CrossEntropyLoss::new().forward(&model.forward(&x).unwrap(), &y).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
        }
        model.parameters().iter().map(|p| p.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
    })
}

#[test]
fn wide_mlp_is_bit_identical_across_thread_counts() {
    let one = train_wide(1);
    assert_eq!(one, train_wide(2), "1 vs 2 threads");
    assert_eq!(one, train_wide(4), "1 vs 4 threads");
}
