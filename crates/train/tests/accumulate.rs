//! Gradient accumulation and the data-parallel step: accumulation over N micro-batches is the
//! hand-written loop of `strata_train::parallel`'s definition bit for bit, N in-process "ranks"
//! (threads with a shared-memory reducer) end bit-identical to it, and both stay close to a
//! plain run with the same global batch; with sync_bn, ranks with BatchNorm stay close to the
//! plain run where ranks without it drift.

use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};
use strata_core::Collective;
use strata_train::parallel::{GradBuffer, GradientReducer, PendingReduction, Reduced, coefficients, combine_in_order};
use strata_train::prelude::*;

/// The first `n` training images of the embedded MNIST subset, normalised.
fn data(n: usize) -> Dataset {
    let (mut train, _) = embedded_mnist().unwrap();
    train.normalize(MNIST_MEAN, MNIST_STD).unwrap();
    train.subset(&(0..n).collect::<Vec<_>>()).unwrap()
}

/// Held while a model is seeded and built: the default generator is one for the whole test
/// binary, and tests run at once on threads would otherwise draw from it in turn, each model
/// getting other initial weights than its twin.
fn seeding() -> std::sync::MutexGuard<'static, ()> {
    static SEEDING: Mutex<()> = Mutex::new(());
    SEEDING.lock().unwrap_or_else(|e| e.into_inner())
}

fn simple_nn(seed: u64) -> Sequential {
    let _seeding = seeding();
    manual_seed(seed);
    ModelSpec::new("SimpleNN").input(&[784]).linear("fc1", 784, 32).relu().linear("fc2", 32, 10).build().unwrap()
}

/// SimpleNN with Dropout after the hidden layer: its masks must follow the micro-batches.
fn dropout_nn(seed: u64) -> Sequential {
    let _seeding = seeding();
    manual_seed(seed);
    ModelSpec::new("DropoutNN")
        .input(&[784])
        .linear("fc1", 784, 32)
        .relu()
        .layer("drop", strata_nn::LayerSpec::Dropout { p: 0.3 })
        .linear("fc2", 32, 10)
        .build()
        .unwrap()
}

fn sgd(model: &Sequential) -> Box<dyn Optimizer> {
    Box::new(SGD::with_config(model.parameters(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() }).unwrap())
}

fn params(model: &dyn Module) -> Vec<Vec<f32>> {
    model.parameters().iter().map(|p| p.to_vec::<f32>().unwrap()).collect()
}

fn fit(model: &Sequential, train: &Dataset, accumulate: usize) -> History {
    Trainer::new(model, sgd(model)).epochs(1).batch_size(64).seed(3).accumulate(accumulate).fit(train, None).unwrap()
}

#[test]
fn accumulate_1_is_the_plain_run_bit_for_bit() {
    let train = data(300);
    let (a, b) = (simple_nn(1), simple_nn(1));
    Trainer::new(&a, sgd(&a)).epochs(1).batch_size(64).seed(3).fit(&train, None).unwrap();
    fit(&b, &train, 1);
    assert_eq!(params(&a), params(&b));
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The definition, written out: each micro-batch's mean-loss gradient, times n_k / gcd, summed
/// left to right, divided by B / gcd, in f32.
fn hand_written(train: &Dataset, parts: usize) -> Sequential {
    let model = simple_nn(1);
    let mut opt = sgd(&model);
    let loss = CrossEntropyLoss::new();
    let loader = DataLoader::new(train, 64).shuffle(3);
    let ps = model.parameters();
    for batch in loader.epoch(0) {
        let b = batch.y.numel();
        let sizes: Vec<usize> = (0..parts).map(|k| b / parts + usize::from(k < b % parts)).collect();
        let m = sizes.iter().fold(0, |a, &n| gcd(a, n));
        let mut sum: Option<Vec<Vec<f32>>> = None;
        let mut start = 0;
        for &n in &sizes {
            if n == 0 {
                continue;
            }
            let x = batch.x.narrow(0, start, n).unwrap().reshape(&[n, 784]).unwrap();
            let y = batch.y.narrow(0, start, n).unwrap();
            start += n;
            opt.zero_grad().unwrap();
            loss.forward(&model.forward(&x).unwrap(), &y).unwrap().backward().unwrap();
            let c = (n / m) as f32;
            let g: Vec<Vec<f32>> = ps.iter().map(|p| p.grad().unwrap().to_vec::<f32>().unwrap()).collect();
            sum = Some(match sum {
                None => g.iter().map(|v| v.iter().map(|&e| c * e).collect()).collect(),
                Some(s) => s.iter().zip(&g).map(|(s, v)| s.iter().zip(v).map(|(&a, &e)| a + c * e).collect()).collect(),
            });
        }
        let d = (b / m) as f32;
        for (p, s) in ps.iter().zip(sum.unwrap()) {
            let g: Vec<f32> = s.iter().map(|&v| v / d).collect();
            p.set_grad(Some(Tensor::from_vec(g, p.dims()).unwrap())).unwrap();
        }
        opt.step().unwrap();
    }
    model
}

#[test]
fn accumulation_is_the_definition_bit_for_bit() {
    // 650 samples: ten batches of 64 (split 32/32, 22/21/21) and one of 10 (5/5, 4/3/3); 641
    // leaves a last batch of one sample, so two of three micro-batches are empty.
    for (n, parts) in [(650, 2), (650, 3), (641, 3)] {
        let train = data(n);
        let model = simple_nn(1);
        fit(&model, &train, parts);
        assert_eq!(params(&model), params(&hand_written(&train, parts)), "{n} samples, accumulate {parts}");
    }
}

#[test]
fn accumulation_stays_close_to_the_plain_run() {
    let train = data(2000);
    let plain = simple_nn(1);
    fit(&plain, &train, 1);
    for parts in [2, 3, 4] {
        let acc = simple_nn(1);
        let h = fit(&acc, &train, parts);
        assert_eq!(h.state.step, 32);
        let mut worst = 0.0f64;
        for (a, b) in params(&plain).iter().zip(params(&acc)) {
            let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((*x as f64 - *y as f64).abs() / scale);
            }
        }
        // Rounding only: the same mathematical gradient summed in another order.
        println!("accumulate {parts}: max |Δparam| / max |param| per tensor after one epoch = {worst:.3e}");
        assert!(worst > 0.0 && worst < 1e-4, "accumulate {parts}: {worst}");
    }
}

#[test]
fn accumulation_options_out_of_range_are_clear_errors() {
    let train = data(100);
    let model = simple_nn(1);
    let e = Trainer::new(&model, sgd(&model)).accumulate(0).fit(&train, None).unwrap_err().to_string();
    assert!(e.contains("accumulate = 0"), "{e}");
    let e = Trainer::new(&model, sgd(&model)).batch_size(4).accumulate(5).fit(&train, None).unwrap_err().to_string();
    assert!(e.contains("5 micro-batches") && e.contains("batch_size of at least 5"), "{e}");
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let e = Trainer::new(&model, sgd(&model)).bucket_cap_mb(bad).fit(&train, None).unwrap_err().to_string();
        assert!(e.contains("bucket_cap_mb") && e.contains("0 or more"), "{e}");
    }
}

/// What the processes of a data-parallel run share, here between threads.
struct Shared {
    barrier: Barrier,
    grads: Mutex<Vec<GradBuffer>>,
    values: Mutex<Vec<Vec<f64>>>,
}

impl Shared {
    fn new(world: usize) -> Arc<Shared> {
        Arc::new(Shared {
            barrier: Barrier::new(world),
            grads: Mutex::new(vec![GradBuffer::default(); world]),
            values: Mutex::new(vec![vec![]; world]),
        })
    }

    /// Every rank's `values`, concatenated in rank order.
    fn gather(&self, rank: usize, values: &[f64]) -> Vec<f64> {
        self.values.lock().unwrap()[rank] = values.to_vec();
        self.barrier.wait();
        let out = self.values.lock().unwrap().concat();
        self.barrier.wait();
        out
    }
}

/// sync_bn's collective between the threads (the trait adds the gathered values in rank order).
struct ThreadCollective {
    rank: usize,
    shared: Arc<Shared>,
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.grads.lock().unwrap().len()
    }
    fn all_gather(&self, values: &[f64]) -> Result<Vec<f64>, String> {
        Ok(self.shared.gather(self.rank, values))
    }
}

/// A reducer between threads: every rank combines all ranks' buffers with the library's
/// `combine_in_order`, as the MPI reducer does per chunk.
struct ThreadReducer {
    rank: usize,
    shared: Arc<Shared>,
}

impl GradientReducer for ThreadReducer {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.grads.lock().unwrap().len()
    }
    fn start_bucket(
        &self,
        mut local: GradBuffer,
        sizes: &[usize],
    ) -> strata_train::Result<Box<dyn PendingReduction + '_>> {
        self.shared.grads.lock().unwrap()[self.rank] = local.clone();
        self.shared.barrier.wait();
        {
            let all = self.shared.grads.lock().unwrap();
            let (c, d) = coefficients(sizes);
            let p32: Vec<Option<&[f32]>> = all.iter().zip(sizes).map(|(g, &n)| (n > 0).then_some(&g.f32[..])).collect();
            combine_in_order(&p32, &c, d, &mut local.f32);
            let p64: Vec<Option<&[f64]>> = all.iter().zip(sizes).map(|(g, &n)| (n > 0).then_some(&g.f64[..])).collect();
            combine_in_order(&p64, &c, d, &mut local.f64);
        }
        self.shared.barrier.wait();
        let bytes = local.bytes() * 2;
        Ok(Box::new(Reduced(local, bytes)))
    }
    fn all_gather(&mut self, values: &[f64]) -> strata_train::Result<Vec<f64>> {
        Ok(self.shared.gather(self.rank, values))
    }
    fn collective(&self) -> Option<Rc<dyn Collective>> {
        Some(Rc::new(ThreadCollective { rank: self.rank, shared: self.shared.clone() }))
    }
}

/// `world` ranks in threads, each training its model of `models` on `train` (batch 64, seed 3,
/// one epoch) with `sync_bn` or without.
fn fit_ranks(models: &[Sequential], train: &Dataset, sync_bn: bool) -> Vec<strata_train::Result<History>> {
    fit_ranks_bucketed(models, train, sync_bn, strata_train::parallel::DEFAULT_BUCKET_CAP_MB)
}

/// [`fit_ranks`] with gradient buckets of `bucket_cap_mb`.
fn fit_ranks_bucketed(
    models: &[Sequential],
    train: &Dataset,
    sync_bn: bool,
    bucket_cap_mb: f64,
) -> Vec<strata_train::Result<History>> {
    let shared = Shared::new(models.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = models
            .iter()
            .enumerate()
            .map(|(rank, m)| {
                let reducer = ThreadReducer { rank, shared: shared.clone() };
                s.spawn(move || {
                    Trainer::new(m, sgd(m))
                        .epochs(1)
                        .batch_size(64)
                        .seed(3)
                        .sync_bn(sync_bn)
                        .bucket_cap_mb(bucket_cap_mb)
                        .distributed(Box::new(reducer))
                        .fit(train, None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// SimpleNN with a BatchNorm1d on the hidden layer.
fn bn_nn(seed: u64) -> Sequential {
    let _seeding = seeding();
    manual_seed(seed);
    ModelSpec::new("BatchNormNN")
        .input(&[784])
        .linear("fc1", 784, 32)
        .layer("bn", strata_nn::LayerSpec::BatchNorm1d(strata_nn::spec::BatchNormSpec::new(Some(32))))
        .relu()
        .linear("fc2", 32, 10)
        .build()
        .unwrap()
}

/// The largest difference between two models' parameters and buffers (running statistics).
fn max_diff(a: &dyn Module, b: &dyn Module) -> f64 {
    let tensors = |m: &dyn Module| {
        let mut t = m.parameters();
        t.extend(m.named_buffers().into_iter().filter(|(n, _)| !n.ends_with("num_batches_tracked")).map(|(_, t)| t));
        t
    };
    tensors(a)
        .iter()
        .zip(tensors(b))
        .flat_map(|(x, y)| {
            x.to_vec_f64().into_iter().zip(y.to_vec_f64()).map(|(p, q)| (p - q).abs()).collect::<Vec<_>>()
        })
        .fold(0.0, f64::max)
}

#[test]
fn sync_bn_ranks_follow_the_plain_run() {
    let train = data(650);
    let plain = bn_nn(1);
    Trainer::new(&plain, sgd(&plain)).epochs(1).batch_size(64).seed(3).fit(&train, None).unwrap();
    for world in [2, 3] {
        let synced: Vec<Sequential> = (0..world).map(|_| bn_nn(1)).collect();
        // Small buckets: fc2's starts inside backward, between the BatchNorm's own collectives.
        for h in fit_ranks_bucketed(&synced, &train, true, 0.001) {
            h.unwrap();
        }
        let own: Vec<Sequential> = (0..world).map(|_| bn_nn(1)).collect();
        for h in fit_ranks(&own, &train, false) {
            h.unwrap();
        }
        // Every rank holds the same parameters and running statistics with sync_bn.
        for m in &synced[1..] {
            assert_eq!(max_diff(m, &synced[0]), 0.0, "{world} ranks");
        }
        // The global batch's statistics: the plain run up to rounding, where each rank's own
        // statistics (PyTorch's default) make a different model.
        let (with, without) = (max_diff(&synced[0], &plain), max_diff(&own[0], &plain));
        eprintln!(
            "{world} ranks, largest difference from the plain run: {with:.2e} with sync_bn, {without:.2e} without"
        );
        assert!(with < 2e-5, "{world} ranks with sync_bn: {with}");
        assert!(without > 100.0 * with, "{world} ranks: {without} without sync_bn, {with} with");
    }
    // A last batch with fewer samples than ranks is refused before the first step, by each.
    let short = data(641);
    let models: Vec<Sequential> = (0..2).map(|_| bn_nn(1)).collect();
    for h in fit_ranks(&models, &short, true) {
        let e = h.unwrap_err().to_string();
        assert!(e.contains("sync_bn with 2 processes: the last batch of an epoch has 1 samples"), "{e}");
    }
}

#[test]
fn ranks_in_threads_end_bit_identical_to_accumulation() {
    let train = data(650);
    // Bucket sizes (MiB): the default (one bucket for this 100 KB model), one bucket per layer
    // (fc2's 1.3 KB, then fc1's), one per parameter, and one after backward.
    let cases = [
        (2, simple_nn as fn(u64) -> Sequential, strata_train::parallel::DEFAULT_BUCKET_CAP_MB),
        (2, simple_nn, 0.001),
        (3, simple_nn, 1e-9),
        (3, simple_nn, 0.0),
        (3, dropout_nn, 0.001),
    ];
    for (world, build, cap) in cases {
        let single = build(1);
        fit(&single, &train, world);
        let models: Vec<Sequential> = (0..world).map(|_| build(1)).collect();
        let histories: Vec<History> =
            fit_ranks_bucketed(&models, &train, false, cap).into_iter().map(|h| h.unwrap()).collect();
        for (rank, m) in models.iter().enumerate() {
            assert_eq!(params(m), params(&single), "{world} ranks, buckets of {cap} MiB: rank {rank}");
            // Dropout's stream stands where one process's does: checkpoints do not depend on N.
            assert_eq!(m.extra_state(), single.extra_state(), "{world} ranks: rank {rank}");
        }
        let h = &histories[0];
        assert_eq!(h.state.step, 11);
        assert_eq!(h.reduced_bytes, (784 * 32 + 32 + 32 * 10 + 10) * 4 * 2);
        assert!(h.epochs[0].train_loss.unwrap().is_finite());
        // Every rank reports the whole batch's loss.
        assert_eq!(histories[1].epochs[0].train_loss, h.epochs[0].train_loss);
    }
}

/// Pipelining (GPipe) runs accumulation's micro-batches through the model's stages on their
/// own threads: the trainer's pipelined step ends bit-identical to accumulation (here on one
/// stage, the CPU's; `strata_train`'s unit tests cut the model into two and three stages, and
/// the CLI's device tests run one over the CPU and a GPU), Dropout masks included.
#[test]
fn pipelining_ends_bit_identical_to_accumulation() {
    let train = data(200);
    for parts in [2, 3] {
        let (a, b) = (dropout_nn(4), dropout_nn(4));
        let ha = fit(&a, &train, parts);
        let hb = Trainer::new(&b, sgd(&b))
            .epochs(1)
            .batch_size(64)
            .seed(3)
            .pipeline_chunks(parts)
            .fit(&train, None)
            .unwrap();
        assert_eq!(params(&a), params(&b), "{parts} chunks");
        let loss = |h: &History| h.epochs.iter().map(|e| (e.train_loss, e.train_acc)).collect::<Vec<_>>();
        assert_eq!(loss(&ha), loss(&hb), "{parts} chunks");
        assert_eq!(a.extra_state(), b.extra_state(), "Dropout's streams");
    }
}

#[test]
fn pipelining_options_that_cannot_work_are_clear_errors() {
    let train = data(100);
    let model = simple_nn(1);
    let e = Trainer::new(&model, sgd(&model)).pipeline_chunks(0).fit(&train, None).unwrap_err().to_string();
    assert!(e.contains("pipeline_chunks = 0"), "{e}");
    let e =
        Trainer::new(&model, sgd(&model)).pipeline_chunks(2).accumulate(2).fit(&train, None).unwrap_err().to_string();
    assert!(e.contains("pipeline_chunks = 2 with accumulate = 2") && e.contains("drop accumulate"), "{e}");
    // A model that is not a chain has no stages to cut.
    let mut rng = strata_core::Generator::new(1);
    let linear = strata_nn::Linear::with_options(784, 10, true, strata_core::DType::F32, &mut rng).unwrap();
    let opt = Box::new(SGD::with_config(linear.parameters(), SgdConfig { lr: 0.05, ..Default::default() }).unwrap());
    let e =
        Trainer::new(&linear, opt).input_shape(&[784]).pipeline_chunks(2).fit(&train, None).unwrap_err().to_string();
    assert!(e.contains("not one") && e.contains("Sequential"), "{e}");
}
