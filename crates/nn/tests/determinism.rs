//! Determinism is not traded for speed: the same seed gives bit-identical parameters after
//! training with 1, 2 and 4 threads (fixed reduction order in every kernel, GEMM threads split
//! the output, never the sum, and the cut depends only on the shape). bf16 autocast too: its
//! kernel adds each output's k-blocks in order, whatever block of the output it runs in.

use strata_core::{DType, Generator, Precision, Tensor, autocast, manual_seed};
use strata_nn::{
    Adam, AdamConfig, CrossEntropyLoss, Linear, Module, Optimizer, ReLU, SGD, Sequential, SgdConfig, model_file,
};

/// `steps` training steps of `model` on the batch `(x, y)` with cross-entropy; returns the
/// parameters' bits.
fn fit(model: &dyn Module, opt: &mut dyn Optimizer, x: &Tensor, y: &Tensor, steps: usize) -> Vec<Vec<u32>> {
    for _ in 0..steps {
        opt.zero_grad().unwrap();
        let loss = CrossEntropyLoss::new().forward(&model.forward(x).unwrap(), y).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    model.parameters().iter().map(|p| p.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

/// Trains an MLP of the given layer widths (ReLU between) for `steps` SGD steps on one fixed
/// random batch inside a pool of `threads` threads; returns the parameters' bits.
fn train(threads: usize, widths: &[usize], batch: usize, steps: usize, seed: u64) -> Vec<Vec<u32>> {
    train_in(Precision::F32, threads, widths, batch, steps, seed)
}

/// [`train`] with the matrix products in `precision`.
fn train_in(
    precision: Precision,
    threads: usize,
    widths: &[usize],
    batch: usize,
    steps: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        autocast(precision, || {
            let mut rng = Generator::new(seed);
            let mut model = Sequential::new();
            for (i, w) in widths.windows(2).enumerate() {
                if i > 0 {
                    model = model.append(ReLU).unwrap();
                }
                model = model.append(Linear::with_options(w[0], w[1], true, DType::F32, &mut rng).unwrap()).unwrap();
            }
            let x = Tensor::randn(&[batch, widths[0]], 0.0, 1.0, DType::F32, &mut rng).unwrap();
            let y = Tensor::from_vec((0..batch).map(|_| rng.below(10) as i64).collect(), &[batch]).unwrap();
            let mut opt =
                SGD::with_config(model.parameters(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() })
                    .unwrap();
            fit(&model, &mut opt, &x, &y, steps)
        })
    })
}

/// SimpleNN at batch 512: large enough that the GEMMs and elementwise kernels take their
/// threaded paths.
#[test]
fn one_two_and_four_threads_give_bit_identical_parameters() {
    let run = |threads| train(threads, &[784, 128, 64, 10], 512, 5, 42);
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads");
    assert_eq!(one, run(4), "1 vs 4 threads");
}

/// A wider MLP at batch 256: its first layer's GEMMs (256×784×1536 multiply-adds) are cut into
/// four blocks run in parallel, its hidden layer's input and weight gradients run on two threads
/// at once, and its first weight (1.2 M elements) is updated by SGD in parallel chunks: the
/// parallel paths W4 takes.
#[test]
fn wide_mlp_is_bit_identical_across_thread_counts() {
    let run = |threads| train(threads, &[784, 1536, 256, 10], 256, 2, 7);
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads");
    assert_eq!(one, run(4), "1 vs 4 threads");
}

/// Trains the model of `examples/{file}` on one fixed random batch of `[batch, *input]` for
/// `steps` Adam steps inside a pool of `threads` threads; returns the parameters' bits.
fn train_example(threads: usize, file: &str, input: &[usize], batch: usize, steps: usize) -> Vec<Vec<u32>> {
    train_example_in(Precision::F32, threads, file, input, batch, steps)
}

/// [`train_example`] with the matrix products in `precision`.
fn train_example_in(
    precision: Precision,
    threads: usize,
    file: &str,
    input: &[usize],
    batch: usize,
    steps: usize,
) -> Vec<Vec<u32>> {
    // `manual_seed` and `build` use the process-wide default generator, which the tests of this
    // file, running on parallel threads, would otherwise draw from in turns.
    static DEFAULT_GENERATOR_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = DEFAULT_GENERATOR_USERS.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(file);
    let spec = model_file::load_model(&path).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        autocast(precision, || {
            manual_seed(3);
            let model = spec.build().unwrap();
            let mut rng = Generator::new(5);
            let mut dims = vec![batch];
            dims.extend_from_slice(input);
            let x = Tensor::randn(&dims, 0.0, 1.0, DType::F32, &mut rng).unwrap();
            let y = Tensor::from_vec((0..batch).map(|_| rng.below(10) as i64).collect(), &[batch]).unwrap();
            let mut opt = Adam::with_config(model.parameters(), AdamConfig { lr: 0.01, ..Default::default() }).unwrap();
            fit(&model, &mut opt, &x, &y, steps)
        })
    })
}

/// The LSTM of W6 at its batch of 64: the fused layer cuts the batch into two row blocks that
/// run on two threads, and its weight-gradient GEMMs are split.
#[test]
fn lstm_is_bit_identical_across_thread_counts() {
    let run = |threads| train_example(threads, "lstm_mnist_model.toml", &[28, 28], 64, 2);
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads");
    assert_eq!(one, run(3), "1 vs 3 threads");
}

/// The ResNet of W5 at a batch of 32: its convolutions, batch norms and elementwise ops all take
/// their threaded paths.
#[test]
fn conv_resnet_is_bit_identical_across_thread_counts() {
    let run = |threads| train_example(threads, "resnet_mnist_model.toml", &[1, 28, 28], 32, 1);
    assert_eq!(run(1), run(2), "1 vs 2 threads");
}

/// bf16 autocast: the wide MLP (four-block and two-thread GEMMs) and the ResNet (convolutions'
/// GEMMs on the conv kernels' rayon tasks, which carry the precision along) give the same bits
/// on any thread count, and differ from f32 (the products really are bf16).
#[test]
fn bf16_autocast_is_bit_identical_across_thread_counts() {
    let run = |threads| train_in(Precision::Bf16, threads, &[784, 1536, 256, 10], 256, 2, 7);
    let one = run(1);
    assert_eq!(one, run(2), "bf16 MLP: 1 vs 2 threads");
    assert_eq!(one, run(4), "bf16 MLP: 1 vs 4 threads");
    assert_ne!(one, train(1, &[784, 1536, 256, 10], 256, 2, 7), "bf16 differs from f32");
    let run = |threads| train_example_in(Precision::Bf16, threads, "resnet_mnist_model.toml", &[1, 28, 28], 32, 1);
    assert_eq!(run(1), run(2), "bf16 ResNet: 1 vs 2 threads");
}
