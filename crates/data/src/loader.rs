//! Mini-batches from a [`Dataset`]: a seeded shuffle per epoch, a batch size (or the whole set
//! per step), and optional dropping of a short last batch.

use crate::Dataset;
use strata_core::{Generator, Tensor};

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
}

impl<'a> DataLoader<'a> {
    /// Batches of `batch_size` samples in file order (clamped to at least 1; use
    /// `dataset.len()` for full-batch training).
    pub fn new(dataset: &'a Dataset, batch_size: usize) -> Self {
        DataLoader { dataset, batch_size: batch_size.max(1), shuffle: false, drop_last: false, seed: 0 }
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

    /// The batches of epoch `epoch`, assembled as they are consumed.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Batch> + '_ {
        let order = self.order(epoch);
        let (bs, nb) = (self.batch_size, self.num_batches());
        (0..nb).map(move |b| {
            let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
            self.gather(idx)
        })
    }

    /// The samples at `indices` as one batch.
    pub fn gather(&self, indices: &[usize]) -> Batch {
        let d = self.dataset;
        let sl = d.sample_len();
        let mut x = Vec::with_capacity(indices.len() * sl);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let (features, label) = d.sample(i);
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
}
