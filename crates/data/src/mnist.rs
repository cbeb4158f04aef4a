//! Loading MNIST from a directory of the four standard IDX files.
//!
//! Files may be gzip-compressed or not; both spellings of each name are accepted because
//! download scripts differ in whether they decompress.

use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::idx::read_idx;

/// Mean pixel value of the MNIST training set after scaling to `[0, 1]`; pass to
/// [`Dataset::normalize`] together with [`MNIST_STD`].
pub const MNIST_MEAN: f32 = 0.1307;

/// Standard deviation of the MNIST training set's pixels after scaling to `[0, 1]`.
pub const MNIST_STD: f32 = 0.3081;

/// MNIST has ten classes, the digits 0 to 9.
const MNIST_CLASSES: usize = 10;

/// Loads `(train, test)` MNIST from `dir`: 60,000 and 10,000 samples of shape `[1, 28, 28]`,
/// pixels scaled to `[0, 1]` but not normalised (call [`Dataset::normalize`] with
/// [`MNIST_MEAN`] and [`MNIST_STD`] for that).
///
/// Reads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`, each with or without a `.gz` suffix (the uncompressed one is
/// preferred when both exist, as it needs no decompression). A missing file is an error listing
/// the names tried.
pub fn load_mnist_dir(dir: &Path) -> Result<(Dataset, Dataset)> {
    let (train, train_path) = load_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let (test, test_path) = load_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    if test.sample_shape != train.sample_shape {
        return Err(DataError::SplitShapeMismatch {
            train_path,
            train_shape: train.sample_shape,
            test_path,
            test_shape: test.sample_shape,
        });
    }
    Ok((train, test))
}

/// One split and the path of its images file.
fn load_pair(dir: &Path, images: &str, labels: &str) -> Result<(Dataset, PathBuf)> {
    // Locate both files before reading either, so a missing file is reported at once.
    let images_path = find(dir, images)?;
    let labels_path = find(dir, labels)?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    Ok((Dataset::from_idx(images, labels, MNIST_CLASSES, &images_path, &labels_path)?, images_path))
}

/// `dir/name` if it exists, else `dir/name.gz`, else an error naming both.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let tried = vec![dir.join(name), dir.join(format!("{name}.gz"))];
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(DataError::MissingFile { dir: dir.to_path_buf(), name: name.to_string(), tried }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{IdxArray, IdxData};
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// Writes a tiny fake MNIST split: `n` 28x28 images and the given labels.
    fn write_split(dir: &Path, prefix: &str, n: usize, labels: Vec<u8>, gzip: bool) {
        let imgs = IdxArray { dims: vec![n, 28, 28], data: IdxData::U8(vec![255; n * 784]) }.to_bytes();
        let lbls = IdxArray { dims: vec![labels.len()], data: IdxData::U8(labels) }.to_bytes();
        for (name, bytes) in
            [(format!("{prefix}-images-idx3-ubyte"), imgs), (format!("{prefix}-labels-idx1-ubyte"), lbls)]
        {
            if gzip {
                let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
                enc.write_all(&bytes).unwrap();
                std::fs::write(dir.join(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    #[test]
    fn test_images_of_another_shape_are_refused() {
        // 14×56 holds 784 pixels too: it would reshape silently into the model's 28×28.
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 2, vec![1, 2], false);
        let imgs = IdxArray { dims: vec![1, 14, 56], data: IdxData::U8(vec![0; 784]) }.to_bytes();
        let lbls = IdxArray { dims: vec![1], data: IdxData::U8(vec![3]) }.to_bytes();
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), imgs).unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), lbls).unwrap();
        let e = load_mnist_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("t10k-images-idx3-ubyte") && e.contains("[1, 14, 56]") && e.contains("[1, 28, 28]"), "{e}");
    }

    #[test]
    fn loads_mixed_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, vec![1, 2, 3], true);
        write_split(dir.path(), "t10k", 2, vec![9, 0], false);
        let (train, test) = load_mnist_dir(dir.path()).unwrap();
        assert_eq!((train.len(), test.len()), (3, 2));
        assert_eq!(train.sample_shape, vec![1, 28, 28]);
        assert_eq!(test.labels, vec![9, 0]);
        assert!(train.features.iter().all(|&x| x == 1.0));
    }

    #[test]
    fn missing_file_lists_names_tried() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 1, vec![0], false);
        let e = load_mnist_dir(dir.path()).unwrap_err();
        assert!(matches!(&e, DataError::MissingFile { name, .. } if name == "t10k-images-idx3-ubyte"), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("t10k-images-idx3-ubyte`") && msg.contains("t10k-images-idx3-ubyte.gz`"), "{msg}");
    }

    #[test]
    fn bad_label_in_file_is_reported_with_path() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 2, vec![3, 11], true);
        write_split(dir.path(), "t10k", 1, vec![0], true);
        let e = load_mnist_dir(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { index: 1, label: 11, num_classes: 10, .. }), "{e:?}");
        assert!(e.to_string().contains("train-labels-idx1-ubyte.gz`"), "{e}");
    }
}
