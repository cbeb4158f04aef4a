//! Mini-batches from a [`Dataset`]: a seeded shuffle per epoch, a batch size (or the whole set
//! per step), optional dropping of a short last batch, optional per-sample augmentation, and a
//! background thread that assembles (and augments) the next batches while the current one
//! trains.

use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;

use rayon::prelude::*;

use crate::Dataset;
use crate::augment::{Augment, ImageShape, Scratch, image_shape};
use crate::error::{DataError, Result};
use strata_core::{Generator, Tensor};

/// How many samples a step sees: a fixed number, or the whole data set (full-batch gradient
/// descent). Parses from `"64"` or `"full"`, the spellings of `--batch-size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchSize {
    /// This many samples per batch (the last batch of an epoch may be smaller).
    Samples(usize),
    /// The whole data set in one batch per epoch.
    Full,
}

impl BatchSize {
    /// The number of samples per batch for a data set of `len` samples (at least 1, so an empty
    /// data set still has a well-defined, batch-less epoch).
    pub fn resolve(self, len: usize) -> usize {
        match self {
            BatchSize::Samples(n) => n.max(1),
            BatchSize::Full => len.max(1),
        }
    }
}

impl From<usize> for BatchSize {
    fn from(n: usize) -> Self {
        BatchSize::Samples(n)
    }
}

impl FromStr for BatchSize {
    type Err = DataError;

    /// `"full"` (any case) or a positive integer.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("full") {
            return Ok(BatchSize::Full);
        }
        match t.parse::<usize>() {
            Ok(n) if n > 0 => Ok(BatchSize::Samples(n)),
            _ => Err(DataError::InvalidArgument {
                what: "batch size",
                message: format!(
                    "`{s}` is not a batch size; give a positive number of samples such as 64, or `full` for the \
                     whole data set in every step"
                ),
            }),
        }
    }
}

impl fmt::Display for BatchSize {
    /// `64` or `full`, the form [`BatchSize::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Samples(n) => write!(f, "{n}"),
            BatchSize::Full => write!(f, "full"),
        }
    }
}

/// One mini-batch: inputs `[B, *sample_shape]` (f32) and class indices `[B]` (i64).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The inputs.
    pub x: Tensor,
    /// The class indices.
    pub y: Tensor,
}

/// Iterates over a data set in mini-batches, PyTorch's `DataLoader` without workers.
///
/// The order of epoch `e` is a permutation drawn from a generator forked from `(seed, e)`, so it
/// is reproducible, independent across epochs, and the same when a run resumes at epoch `e`.
#[derive(Debug, Clone)]
pub struct DataLoader<'a> {
    dataset: &'a Dataset,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    augment: Option<Augmenting>,
}

/// A loader's augmentation: the pipeline, its seed, and the checked shapes.
#[derive(Debug, Clone)]
struct Augmenting {
    pipeline: Augment,
    seed: u64,
    input: ImageShape,
    output: ImageShape,
}

/// Batches with fewer values than this are augmented on the calling thread: below it, handing
/// the samples to rayon's pool costs more than it saves.
const PARALLEL_VALUES: usize = 16 * 1024;

/// Batches are augmented over rayon's pool only when it has at least this many threads. The
/// pool's threads are the training step's too (`strata_core::set_num_threads` makes the
/// training thread one of them): with 2, spreading the augmentation over them slowed the
/// embedded SimpleNN run with crop and affine augmentation from a median 80k to 57k samples/s
/// (2-core machine, 6 runs each), while augmenting on the prefetch thread alone runs beside
/// the step. With more threads one prefetch thread (~6 µs per 28×28 sample with an affine
/// warp) would cap training below what SimpleNN reaches, so the samples are spread.
const PARALLEL_MIN_THREADS: usize = 4;

impl<'a> DataLoader<'a> {
    /// Batches of `batch_size` in file order: a sample count (clamped to at least 1) or
    /// [`BatchSize::Full`] for the whole data set per step.
    pub fn new(dataset: &'a Dataset, batch_size: impl Into<BatchSize>) -> Self {
        let batch_size = batch_size.into().resolve(dataset.len());
        DataLoader { dataset, batch_size, shuffle: false, drop_last: false, seed: 0, augment: None }
    }

    /// The number of samples per batch (the whole data set's length for [`BatchSize::Full`]).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Shuffles each epoch with a seeded permutation.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Drops a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// Augments every sample of every batch with `augment` (`None` or an empty pipeline: no
    /// augmentation), its random numbers drawn from [`Augment::generator`]`(seed, epoch, index)`
    /// for the sample at `index` of the data set: a pure function of the three, so the batches
    /// are the same for any thread count, prefetch depth and batch size. The samples are
    /// augmented as the batch is gathered — on the background thread of
    /// [`DataLoader::epoch_prefetched`] — spread over rayon's pool when it has 4 threads or more
    /// (with fewer, the pool's threads are busy with the training step and one thread beside it
    /// is faster).
    ///
    /// Only a training loader should augment; evaluation loaders leave it out.
    ///
    /// # Errors
    /// The data set's samples are not images `[C, H, W]`, or a transform does not fit them (see
    /// [`Augment::output_shape`]).
    pub fn augment(mut self, augment: impl Into<Option<Augment>>, seed: u64) -> Result<Self> {
        self.augment = match augment.into() {
            Some(pipeline) if !pipeline.is_empty() => {
                let output = pipeline.output_shape(&self.dataset.sample_shape)?;
                let input = image_shape(&self.dataset.sample_shape)?;
                Some(Augmenting { pipeline, seed, input, output })
            }
            _ => None,
        };
        Ok(self)
    }

    /// The shape of one sample in this loader's batches: the data set's, or the augmentation's
    /// output shape.
    pub fn sample_shape(&self) -> Vec<usize> {
        match &self.augment {
            Some(a) => a.output.to_vec(),
            None => self.dataset.sample_shape.clone(),
        }
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last { n / self.batch_size } else { n.div_ceil(self.batch_size) }
    }

    /// The sample order of epoch `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if self.shuffle {
            Generator::new(self.seed).fork(epoch).permutation(self.dataset.len())
        } else {
            (0..self.dataset.len()).collect()
        }
    }

    /// The batches of epoch `epoch`, assembled (and augmented, see [`DataLoader::augment`]) as
    /// they are consumed.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Batch> + '_ {
        let order = self.order(epoch);
        let (bs, nb) = (self.batch_size, self.num_batches());
        (0..nb).map(move |b| {
            let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
            self.batch(epoch, idx)
        })
    }

    /// The batches of epoch `epoch`, exactly those of [`DataLoader::epoch`] in the same order,
    /// assembled on a background thread up to `depth` batches ahead (at least 1), so the training
    /// step never waits for batch assembly. `f` consumes them; its result is returned.
    ///
    /// The thread is scoped to this call, so it can borrow the data set without copying it, and
    /// it never outlives `f`: when `f` returns early (a `break`, an error, a Ctrl-C stop), the
    /// channel closes, the thread stops at its next batch and is joined before this returns.
    /// A panic on the thread is re-raised here rather than ending the epoch silently short.
    ///
    /// ```
    /// # use strata_data::{DataLoader, Dataset};
    /// # let ds = Dataset { features: vec![0.0; 8], labels: vec![0; 8], sample_shape: vec![1], num_classes: 1 };
    /// let loader = DataLoader::new(&ds, 3).shuffle(1);
    /// let seen = loader.epoch_prefetched(0, 2, |batches| batches.map(|b| b.y.numel()).sum::<usize>());
    /// assert_eq!(seen, 8);
    /// ```
    pub fn epoch_prefetched<R>(&self, epoch: u64, depth: usize, f: impl FnOnce(Prefetched) -> R) -> R {
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for batch in self.epoch(epoch) {
                    // A send fails only when the consumer is gone: stop assembling.
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            // `f` owns the receiver, so it is dropped when `f` returns, unblocking the thread.
            f(Prefetched { rx })
        })
    }

    /// The samples at `indices` as one batch of epoch `epoch`: augmented when the loader
    /// augments (each sample by its own generator, see [`DataLoader::augment`]), else as
    /// [`DataLoader::gather`].
    ///
    /// # Panics
    /// If an index is `>= len()` of the data set.
    pub fn batch(&self, epoch: u64, indices: &[usize]) -> Batch {
        let Some(a) = &self.augment else { return self.gather(indices) };
        let d = self.dataset;
        let out_len: usize = a.output.iter().product();
        let mut x = vec![0.0f32; indices.len() * out_len];
        let one = |scratch: &mut Scratch, (dst, &i): (&mut [f32], &usize)| {
            let mut rng = Augment::generator(a.seed, epoch, i);
            a.pipeline.run(d.row(i).0, a.input, &mut rng, dst, scratch);
        };
        // Each sample draws from its own generator, so the split over threads does not matter.
        if x.len() >= PARALLEL_VALUES && rayon::current_num_threads() >= PARALLEL_MIN_THREADS {
            x.par_chunks_mut(out_len).zip(indices.par_iter()).for_each_init(Scratch::default, one);
        } else {
            let mut scratch = Scratch::default();
            x.chunks_mut(out_len).zip(indices).for_each(|pair| one(&mut scratch, pair));
        }
        let y: Vec<i64> = indices.iter().map(|&i| d.labels[i] as i64).collect();
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&a.output);
        Batch {
            x: Tensor::from_vec(x, &shape).expect("batch length matches its shape"),
            y: Tensor::from_vec(y, &[indices.len()]).expect("one label per sample"),
        }
    }

    /// The samples at `indices` as one batch, as stored (never augmented).
    ///
    /// # Panics
    /// If an index is `>= len()` of the data set.
    pub fn gather(&self, indices: &[usize]) -> Batch {
        let d = self.dataset;
        let sl = d.sample_len();
        let mut x = Vec::with_capacity(indices.len() * sl);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let (features, label) = d.row(i);
            x.extend_from_slice(features);
            y.push(label as i64);
        }
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&d.sample_shape);
        Batch {
            x: Tensor::from_vec(x, &shape).expect("batch length matches its shape"),
            y: Tensor::from_vec(y, &[indices.len()]).expect("one label per sample"),
        }
    }
}

/// The batches of one epoch as a background thread delivers them; see
/// [`DataLoader::epoch_prefetched`].
#[derive(Debug)]
pub struct Prefetched {
    rx: mpsc::Receiver<Batch>,
}

impl Iterator for Prefetched {
    type Item = Batch;

    /// The next batch, waiting for it only if the thread has fallen behind.
    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset {
            features: (0..n * 2).map(|v| v as f32).collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            sample_shape: vec![2],
            num_classes: 3,
        }
    }

    #[test]
    fn every_sample_once_per_epoch_and_reproducible() {
        let d = toy(10);
        let loader = DataLoader::new(&d, 3).shuffle(7);
        assert_eq!(loader.num_batches(), 4);
        let mut seen: Vec<i64> = loader
            .epoch(0)
            .flat_map(|b| b.x.to_vec::<f32>().unwrap().iter().step_by(2).map(|&v| (v / 2.0) as i64).collect::<Vec<_>>())
            .collect();
        let first = seen.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let again: Vec<i64> = loader
            .epoch(0)
            .flat_map(|b| b.x.to_vec::<f32>().unwrap().iter().step_by(2).map(|&v| (v / 2.0) as i64).collect::<Vec<_>>())
            .collect();
        assert_eq!(first, again);
        assert_ne!(loader.order(0), loader.order(1));
    }

    #[test]
    fn shapes_labels_and_drop_last() {
        let d = toy(10);
        let batches: Vec<Batch> = DataLoader::new(&d, 4).drop_last(true).epoch(0).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].x.dims(), &[4, 2]);
        assert_eq!(batches[0].y.to_vec::<i64>().unwrap(), [0, 1, 2, 0]);
        let full: Vec<Batch> = DataLoader::new(&d, d.len()).epoch(0).collect();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].x.dims(), &[10, 2]);
    }

    /// Each batch's sample ids (toy samples' first feature is twice the id).
    fn ids(batches: impl Iterator<Item = Batch>) -> Vec<Vec<i64>> {
        batches.map(|b| b.x.to_vec::<f32>().unwrap().iter().step_by(2).map(|&v| (v / 2.0) as i64).collect()).collect()
    }

    #[test]
    fn prefetched_equals_plain_for_every_setting() {
        let d = toy(23);
        for (bs, shuffle, drop) in
            [(4, true, false), (4, true, true), (5, false, false), (23, true, false), (50, true, true)]
        {
            let mut loader = DataLoader::new(&d, bs).drop_last(drop);
            if shuffle {
                loader = loader.shuffle(3);
            }
            for epoch in 0..3 {
                for depth in [0, 1, 4, 100] {
                    let plain: Vec<Batch> = loader.epoch(epoch).collect();
                    let pre: Vec<Batch> = loader.epoch_prefetched(epoch, depth, |it| it.collect());
                    assert_eq!(pre.len(), loader.num_batches());
                    assert_eq!(plain.len(), pre.len());
                    for (a, b) in plain.iter().zip(&pre) {
                        assert_eq!(a.x.dims(), b.x.dims());
                        assert_eq!(a.x.to_vec::<f32>().unwrap(), b.x.to_vec::<f32>().unwrap());
                        assert_eq!(a.y.to_vec::<i64>().unwrap(), b.y.to_vec::<i64>().unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn every_sample_once_per_epoch_prefetched_and_seeded() {
        let d = toy(100);
        let loader = DataLoader::new(&d, 7).shuffle(42);
        for epoch in 0..4 {
            let order = loader.epoch_prefetched(epoch, 2, |it| ids(it).concat());
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "epoch {epoch}");
            // The same seed gives the same order, from a fresh loader too.
            let again = DataLoader::new(&d, 7).shuffle(42).epoch_prefetched(epoch, 5, |it| ids(it).concat());
            assert_eq!(order, again);
        }
        let other = DataLoader::new(&d, 7).shuffle(43);
        assert_ne!(ids(loader.epoch(0)), ids(other.epoch(0)));
    }

    #[test]
    fn early_stop_does_not_hang_and_returns_the_result() {
        let d = toy(1000);
        let loader = DataLoader::new(&d, 1).shuffle(0);
        // Taking 3 of 1000 batches with a depth of 2 leaves the thread blocked on a full
        // channel; dropping the receiver must release it.
        let first = loader.epoch_prefetched(0, 2, |mut it| {
            let _ = it.next();
            let _ = it.next();
            it.next().map(|b| b.y.to_vec::<i64>().unwrap())
        });
        assert_eq!(first.unwrap().len(), 1);
        let r: std::result::Result<(), &str> = loader.epoch_prefetched(1, 1, |_| Err("stopped"));
        assert_eq!(r, Err("stopped"));
    }

    #[test]
    fn full_batch_is_one_batch() {
        let d = toy(10);
        let loader = DataLoader::new(&d, BatchSize::Full).shuffle(9);
        assert_eq!((loader.num_batches(), loader.batch_size()), (1, 10));
        let batches: Vec<Batch> = loader.epoch_prefetched(0, 2, |it| it.collect());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].x.dims(), &[10, 2]);
        assert_eq!(DataLoader::new(&d, BatchSize::Full).drop_last(true).num_batches(), 1);
        // An empty data set has no batches rather than a division by zero.
        let empty = toy(0);
        let loader = DataLoader::new(&empty, BatchSize::Full);
        assert_eq!(loader.num_batches(), 0);
        assert_eq!(loader.epoch_prefetched(0, 1, |it| it.count()), 0);
    }

    #[test]
    fn batch_size_parses_and_prints() {
        assert_eq!("64".parse::<BatchSize>().unwrap(), BatchSize::Samples(64));
        assert_eq!(" Full ".parse::<BatchSize>().unwrap(), BatchSize::Full);
        for bad in ["0", "-1", "6.4", "", "all"] {
            let e = bad.parse::<BatchSize>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}` is not a batch size")) && e.contains("`full`"), "{e}");
        }
        for b in [BatchSize::Samples(3), BatchSize::Full] {
            assert_eq!(b.to_string().parse::<BatchSize>().unwrap(), b);
        }
        assert_eq!(BatchSize::Samples(0).resolve(5), 1);
        assert_eq!(BatchSize::Full.resolve(5), 5);
    }
}
