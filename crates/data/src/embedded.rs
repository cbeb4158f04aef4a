//! The default data set compiled into the binary: the 10,000-image MNIST test set.
//!
//! Embedding it means examples, tests and the CLI work offline and with no setup, at the cost
//! of about 1.6 MB of binary size. Its provenance and checksums are in `assets/README.md`.

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::idx::parse_idx;

/// The MNIST test images (`t10k-images-idx3-ubyte.gz`), byte-identical to the original.
const IMAGES_GZ: &[u8] = include_bytes!("../assets/t10k-images-idx3-ubyte.gz");

/// The MNIST test labels (`t10k-labels-idx1-ubyte.gz`), byte-identical to the original.
const LABELS_GZ: &[u8] = include_bytes!("../assets/t10k-labels-idx1-ubyte.gz");

/// Names the embedded images in error messages (there is no real path).
const IMAGES_NAME: &str = "<embedded>/t10k-images-idx3-ubyte.gz";
/// Names the embedded labels in error messages.
const LABELS_NAME: &str = "<embedded>/t10k-labels-idx1-ubyte.gz";

/// The seed of the shuffle that splits the embedded 10,000 samples into 8,000 training and
/// 2,000 held-out samples.
///
/// Fixed so that every run, machine and version agrees on which samples are held out: changing
/// it changes every held-out accuracy strata reports, so treat it as part of the data set.
pub const EMBEDDED_SPLIT_SEED: u64 = 0x5EED_1998;

/// How many of the embedded samples are held out for evaluation.
pub const EMBEDDED_HOLDOUT: usize = 2_000;

/// All 10,000 embedded samples, in file order, shape `[1, 28, 28]`, pixels in `[0, 1]`.
pub fn embedded_mnist_unsplit() -> Result<Dataset> {
    let images = parse_idx(IMAGES_GZ, IMAGES_NAME)?;
    let labels = parse_idx(LABELS_GZ, LABELS_NAME)?;
    Dataset::from_idx(images, labels, 10, Path::new(IMAGES_NAME), Path::new(LABELS_NAME))
}

/// The embedded data split into `(train, held_out)`: 8,000 and 2,000 samples of shape
/// `[1, 28, 28]`, pixels scaled to `[0, 1]` (not normalised), split by
/// [`Dataset::split`] with [`EMBEDDED_SPLIT_SEED`], so identical on every call.
///
/// Errors only if the embedded bytes were corrupted at build time.
pub fn embedded_mnist() -> Result<(Dataset, Dataset)> {
    embedded_mnist_unsplit()?.split(EMBEDDED_HOLDOUT, EMBEDDED_SPLIT_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    /// A fingerprint of one sample (features and label), to match samples across a split.
    fn fingerprint(x: &[f32], y: usize) -> u64 {
        let mut h = DefaultHasher::new();
        x.iter().for_each(|v| v.to_bits().hash(&mut h));
        y.hash(&mut h);
        h.finish()
    }

    fn fingerprints(d: &Dataset) -> Vec<u64> {
        (0..d.len()).map(|i| d.sample(i).unwrap()).map(|(x, y)| fingerprint(x, y)).collect()
    }

    #[test]
    fn sizes_shapes_and_ranges() {
        let (train, held) = embedded_mnist().unwrap();
        assert_eq!((train.len(), held.len()), (8_000, 2_000));
        for d in [&train, &held] {
            assert_eq!(d.sample_shape, vec![1, 28, 28]);
            assert_eq!(d.features.len(), d.len() * 784);
            assert_eq!(d.num_classes, 10);
            assert!(d.labels.iter().all(|&y| y < 10));
            assert!(d.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }
        // Scaled, not normalised: the mean pixel is near MNIST's 0.13.
        let mean = train.features.iter().map(|&x| x as f64).sum::<f64>() / train.features.len() as f64;
        assert!((mean - 0.13).abs() < 0.01, "{mean}");
    }

    #[test]
    fn label_counts_match_mnist_test_set() {
        let all = embedded_mnist_unsplit().unwrap();
        assert_eq!(all.class_counts(), vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
        let (train, held) = embedded_mnist().unwrap();
        let sum: Vec<usize> = train.class_counts().iter().zip(held.class_counts()).map(|(a, b)| a + b).collect();
        assert_eq!(sum, all.class_counts());
    }

    #[test]
    fn split_is_deterministic_and_a_partition() {
        let (train, held) = embedded_mnist().unwrap();
        let (train2, held2) = embedded_mnist().unwrap();
        assert!(train == train2 && held == held2, "two calls must give the same split");

        // Train plus held-out is exactly the original multiset of samples: nothing lost,
        // nothing duplicated, so the two parts are disjoint.
        let mut parts: Vec<u64> = fingerprints(&train);
        parts.extend(fingerprints(&held));
        parts.sort_unstable();
        let mut original = fingerprints(&embedded_mnist_unsplit().unwrap());
        original.sort_unstable();
        assert_eq!(parts, original);

        // And by index: the split's indices cover 0..10,000 once each.
        let (ti, hi) = Dataset::split_indices(10_000, EMBEDDED_HOLDOUT, EMBEDDED_SPLIT_SEED).unwrap();
        let mut idx: Vec<usize> = ti.into_iter().chain(hi).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..10_000).collect::<Vec<_>>());
    }
}
