//! An in-memory labelled data set: dense `f32` features plus one class label per sample.
//!
//! Kept deliberately plain (public fields, one contiguous feature buffer) because the data sets
//! strata targets fit in memory, and a flat row-major buffer is what batching code wants to
//! slice from without copying per sample.

use std::path::Path;

use strata_core::rng::Generator;

use crate::error::{DataError, Result};
use crate::idx::{IdxArray, IdxData};

/// Labelled samples: `features` holds `len()` samples of `sample_len()` values each, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// All samples' features, sample after sample.
    pub features: Vec<f32>,
    /// One class label per sample, each `< num_classes`.
    pub labels: Vec<usize>,
    /// The shape of one sample (MNIST: `[1, 28, 28]`, channels first).
    pub sample_shape: Vec<usize>,
    /// The number of classes labels are drawn from.
    pub num_classes: usize,
}

impl Dataset {
    /// Builds a data set from an images IDX array and a labels IDX array.
    ///
    /// Checks that both hold the same number of records and that every label is in
    /// `0..num_classes`; errors name the offending file (`images_path` / `labels_path`, used only
    /// for messages) and record. `u8` images are scaled to `[0, 1]` (divided by 255); other
    /// element types are taken as they are. Rank-3 images (`[count, height, width]`) get a
    /// channel axis of 1, so samples are `[1, height, width]` as convolutions expect.
    ///
    /// An array whose `dims` do not describe its data (none at all, or a product other than
    /// its number of values: possible for arrays assembled in memory, not for files read with
    /// [`crate::idx`]) is an error naming the file.
    pub fn from_idx(
        images: IdxArray,
        labels: IdxArray,
        num_classes: usize,
        images_path: &Path,
        labels_path: &Path,
    ) -> Result<Dataset> {
        for (array, path) in [(&images, images_path), (&labels, labels_path)] {
            let described = array.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if array.dims.is_empty() || described != Some(array.data.len()) {
                let (dims, values) = (array.dims.clone(), array.data.len());
                return Err(DataError::IdxDims { path: path.to_path_buf(), dims, values });
            }
        }
        if labels.dims.len() != 1 {
            return Err(DataError::LabelsNotVector { path: labels_path.to_path_buf(), dims: labels.dims });
        }
        // At least one dimension, the record count (checked above).
        let count = images.dims[0];
        if count != labels.dims[0] {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                labels_path: labels_path.to_path_buf(),
                images: count,
                labels: labels.dims[0],
            });
        }
        let labels = checked_labels(&labels.data, num_classes, labels_path)?;
        let sample_shape = match &images.dims[1..] {
            [h, w] => vec![1, *h, *w],
            rest => rest.to_vec(),
        };
        let features = match &images.data {
            // A true division (not a multiply by 1/255) so 255 maps to exactly 1.0.
            IdxData::U8(v) => v.iter().map(|&x| x as f32 / 255.0).collect(),
            other => other.to_f32_vec(),
        };
        Ok(Dataset { features, labels, sample_shape, num_classes })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The number of feature values per sample (the product of `sample_shape`).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Sample `i`: its features and its label (PyTorch's `dataset[i]`).
    ///
    /// # Errors
    /// When `i >= len()` (PyTorch's `IndexError`), or when the public fields disagree (fewer
    /// `features` than `len()` samples of `sample_len()` values).
    pub fn sample(&self, i: usize) -> Result<(&[f32], usize)> {
        self.check_index("sample", i, None)?;
        let n = self.sample_len();
        let features = i.checked_mul(n).and_then(|start| self.features.get(start..start.checked_add(n)?));
        features.map(|x| (x, self.labels[i])).ok_or_else(|| DataError::InvalidArgument {
            what: "sample",
            message: format!(
                "the data set's features hold {} values, too few for {} samples of {n} (sample_shape {:?}); \
                 keep `features`, `labels` and `sample_shape` consistent",
                self.features.len(),
                self.len(),
                self.sample_shape
            ),
        })
    }

    /// Sample `i` of a data set whose indices were checked (the loader's own permutations):
    /// what [`Dataset::sample`] gives, without the error.
    ///
    /// # Panics
    /// If `i >= len()`, or the features are too short for sample `i`.
    pub(crate) fn row(&self, i: usize) -> (&[f32], usize) {
        let n = self.sample_len();
        (&self.features[i * n..(i + 1) * n], self.labels[i])
    }

    /// An error unless `i < len()`; `what` names the operation, `at` the index's position in the
    /// list it came from.
    fn check_index(&self, what: &'static str, i: usize, at: Option<usize>) -> Result<()> {
        if i < self.len() {
            return Ok(());
        }
        let which = at.map_or_else(|| format!("index {i}"), |k| format!("index {i} (entry {k} of the indices)"));
        let range =
            if self.is_empty() { "the data set is empty".to_string() } else { format!("use 0..{}", self.len()) };
        Err(DataError::InvalidArgument {
            what,
            message: format!("{which} is out of range for a data set of {} samples; {range}", self.len()),
        })
    }

    /// A new data set of the samples at `indices`, in that order (repeats allowed).
    ///
    /// # Errors
    /// When an index is `>= len()` (the first such is named, with its position in `indices`),
    /// or as [`Dataset::sample`] when the public fields disagree.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        for (k, &i) in indices.iter().enumerate() {
            self.check_index("subset", i, Some(k))?;
        }
        let n = self.sample_len();
        let mut features = Vec::with_capacity(indices.len().saturating_mul(n));
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (x, y) = self.sample(i).map_err(|e| match e {
                DataError::InvalidArgument { message, .. } => DataError::InvalidArgument { what: "subset", message },
                other => other,
            })?;
            features.extend_from_slice(x);
            labels.push(y);
        }
        Ok(Dataset { features, labels, sample_shape: self.sample_shape.clone(), num_classes: self.num_classes })
    }

    /// Splits into `(train, held_out)` with `held_out.len() == holdout`.
    ///
    /// The samples are shuffled with `Generator::new(seed).permutation(len())`; the first
    /// `len() - holdout` shuffled samples form the training part, the rest the held-out part.
    /// The same seed always gives the same split, and the parts are disjoint and cover every
    /// sample exactly once (see [`Dataset::split_indices`]).
    /// Holding out more samples than there are is an error.
    pub fn split(&self, holdout: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        let (train, held) = Self::split_indices(self.len(), holdout, seed)?;
        Ok((self.subset(&train)?, self.subset(&held)?))
    }

    /// The indices [`Dataset::split`] uses: `(train, held_out)` for a data set of `len` samples.
    /// Holding out more than `len` samples is an error.
    pub fn split_indices(len: usize, holdout: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        if holdout > len {
            return Err(DataError::InvalidArgument {
                what: "split",
                message: format!("cannot hold out {holdout} samples of a data set of {len}; choose at most {len}"),
            });
        }
        let mut perm = Generator::new(seed).permutation(len);
        let held = perm.split_off(len - holdout);
        Ok((perm, held))
    }

    /// Standardises every feature in place: `x = (x - mean) / std`.
    /// A `std` that is not a positive finite number is an error (it would silently produce
    /// infinities or NaNs).
    pub fn normalize(&mut self, mean: f32, std: f32) -> Result<()> {
        if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
            return Err(DataError::InvalidArgument {
                what: "normalize",
                message: format!("needs a finite mean and a positive finite std, got mean {mean}, std {std}"),
            });
        }
        let inv = 1.0 / std;
        for x in &mut self.features {
            *x = (*x - mean) * inv;
        }
        Ok(())
    }

    /// Checks that the public fields agree, as every loader of this crate leaves them: `features`
    /// holds exactly `len()` samples of `sample_len()` values, and (for a labelled set, whose
    /// `num_classes` is not 0) every label is below `num_classes`. A data set assembled by hand
    /// that fails it would otherwise panic, or train on the wrong samples, wherever it is batched;
    /// a trainer calls this before its first step.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] naming the disagreeing fields and their values, or the
    /// first label out of range with its index.
    pub fn validate(&self) -> Result<()> {
        let err = |message: String| Err(DataError::InvalidArgument { what: "data set", message });
        let n = self.sample_len();
        match self.len().checked_mul(n) {
            Some(values) if values == self.features.len() => {}
            _ => {
                return err(format!(
                    "`features` holds {} values, but {} labels of samples of shape {:?} ({n} values each) need {}; \
                     keep `features`, `labels` and `sample_shape` consistent",
                    self.features.len(),
                    self.len(),
                    self.sample_shape,
                    self.len().checked_mul(n).map_or_else(|| "more than memory holds".to_string(), |v| v.to_string())
                ));
            }
        }
        if self.num_classes > 0
            && let Some((i, y)) = self.labels.iter().enumerate().find(|(_, y)| **y >= self.num_classes)
        {
            return err(format!(
                "label {y} of sample {i} is not a class of {} (labels are 0..{}); fix the label, or raise `num_classes`",
                self.num_classes, self.num_classes
            ));
        }
        Ok(())
    }

    /// How many samples each class has: entry `c` counts label `c`; `num_classes` entries.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &y in &self.labels {
            counts[y] += 1;
        }
        counts
    }
}

/// Converts integer labels to `usize`, rejecting any outside `0..num_classes` with its record
/// index, so a wrong labels file is reported where it is wrong rather than as a later panic.
fn checked_labels(data: &IdxData, num_classes: usize, path: &Path) -> Result<Vec<usize>> {
    fn check<T: Copy + Into<i64>>(v: &[T], num_classes: usize, path: &Path) -> Result<Vec<usize>> {
        v.iter()
            .enumerate()
            .map(|(index, &label)| {
                let label: i64 = label.into();
                usize::try_from(label).ok().filter(|&l| l < num_classes).ok_or_else(|| DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    label,
                    num_classes,
                })
            })
            .collect()
    }
    match data {
        IdxData::U8(v) => check(v, num_classes, path),
        IdxData::I8(v) => check(v, num_classes, path),
        IdxData::I16(v) => check(v, num_classes, path),
        IdxData::I32(v) => check(v, num_classes, path),
        IdxData::F32(_) | IdxData::F64(_) => {
            Err(DataError::LabelsNotInteger { path: path.to_path_buf(), element: data.type_name() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> IdxArray {
        IdxArray { dims: vec![n, 2, 3], data: IdxData::U8((0..n * 6).map(|i| (i % 256) as u8).collect()) }
    }

    fn labels(v: Vec<u8>) -> IdxArray {
        IdxArray { dims: vec![v.len()], data: IdxData::U8(v) }
    }

    fn build(imgs: IdxArray, lbls: IdxArray, classes: usize) -> Result<Dataset> {
        Dataset::from_idx(imgs, lbls, classes, Path::new("d/imgs.idx"), Path::new("d/lbls.idx"))
    }

    /// `n` one-value samples whose label is their index: every sample is identifiable.
    fn numbered(n: usize) -> Dataset {
        Dataset {
            features: (0..n).map(|i| i as f32).collect(),
            labels: (0..n).collect(),
            sample_shape: vec![1],
            num_classes: n,
        }
    }

    #[test]
    fn from_idx_scales_and_adds_channel_axis() {
        let d = build(images(4), labels(vec![0, 1, 2, 1]), 3).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d.sample_shape, vec![1, 2, 3]);
        assert_eq!(d.sample_len(), 6);
        let (x, y) = d.sample(1).unwrap();
        assert_eq!(y, 1);
        assert_eq!(x[0], 6.0 / 255.0);
        assert!(d.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert_eq!(d.class_counts(), vec![1, 2, 1]);
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let e = build(images(4), labels(vec![0, 1, 2]), 3).unwrap_err();
        assert!(matches!(e, DataError::CountMismatch { images: 4, labels: 3, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("`d/imgs.idx`") && msg.contains("`d/lbls.idx`"), "{msg}");
    }

    #[test]
    fn label_out_of_range_names_file_and_record() {
        let e = build(images(3), labels(vec![0, 11, 2]), 10).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { index: 1, label: 11, num_classes: 10, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("`d/lbls.idx`") && msg.contains("record 1") && msg.contains("0..10"), "{msg}");
        let neg = IdxArray { dims: vec![1], data: IdxData::I32(vec![-1]) };
        let e = build(images(1), neg, 10).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { index: 0, label: -1, .. }), "{e:?}");
    }

    #[test]
    fn labels_must_be_integer_vectors() {
        let e = build(images(2), images(2), 10).unwrap_err();
        assert!(matches!(e, DataError::LabelsNotVector { .. }), "{e:?}");
        let f = IdxArray { dims: vec![2], data: IdxData::F32(vec![0.0, 1.0]) };
        let e = build(images(2), f, 10).unwrap_err();
        assert!(matches!(e, DataError::LabelsNotInteger { element: "f32", .. }), "{e:?}");
        assert!(e.to_string().contains("`d/lbls.idx`"));
    }

    #[test]
    fn subset_copies_in_order() {
        let d = numbered(5);
        let s = d.subset(&[4, 0, 4]).unwrap();
        assert_eq!(s.labels, vec![4, 0, 4]);
        assert_eq!(s.features, vec![4.0, 0.0, 4.0]);
    }

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let d = numbered(100);
        let (train, held) = d.split(30, 7).unwrap();
        assert_eq!((train.len(), held.len()), (70, 30));
        assert_eq!(d.split(30, 7).unwrap(), (train.clone(), held.clone()));
        let mut all: Vec<usize> = train.labels.iter().chain(&held.labels).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Features travel with their labels.
        assert!(held.labels.iter().zip(&held.features).all(|(&y, &x)| x == y as f32));
        // A different seed shuffles differently.
        assert_ne!(d.split(30, 8).unwrap().1.labels, held.labels);
        // Edge cases.
        assert_eq!(d.split(0, 1).unwrap().1.len(), 0);
        assert_eq!(d.split(100, 1).unwrap().0.len(), 0);
    }

    #[test]
    fn split_more_than_len_is_an_error() {
        let e = numbered(3).split(4, 0).unwrap_err().to_string();
        assert!(e.contains("cannot hold out 4 samples of a data set of 3"), "{e}");
        assert!(numbered(3).normalize(0.0, 0.0).is_err());
    }

    #[test]
    fn normalize_standardises() {
        let mut d = numbered(3);
        d.normalize(1.0, 2.0).unwrap();
        assert_eq!(d.features, vec![-0.5, 0.0, 0.5]);
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let d = numbered(3);
        let e = d.sample(3).unwrap_err().to_string();
        assert_eq!(e, "sample: index 3 is out of range for a data set of 3 samples; use 0..3");
        let e = d.subset(&[0, 2, 7, 1]).unwrap_err().to_string();
        assert_eq!(e, "subset: index 7 (entry 2 of the indices) is out of range for a data set of 3 samples; use 0..3");
        let e = numbered(0).sample(0).unwrap_err().to_string();
        assert!(e.ends_with("out of range for a data set of 0 samples; the data set is empty"), "{e}");
        // Public fields that disagree: an error, not a slice out of bounds.
        let short = Dataset { features: vec![0.0; 2], ..numbered(3) };
        let e = short.sample(2).unwrap_err().to_string();
        assert!(e.starts_with("sample: the data set's features hold 2 values, too few for 3 samples of 1"), "{e}");
        assert!(short.subset(&[2]).unwrap_err().to_string().starts_with("subset: the data set's features hold 2"));
        assert_eq!(d.subset(&[]).unwrap().len(), 0);
    }

    #[test]
    fn idx_arrays_whose_dims_do_not_fit_their_data_are_errors() {
        let no_dims = IdxArray { dims: vec![], data: IdxData::U8(vec![1]) };
        let e = build(no_dims, labels(vec![0]), 3).unwrap_err();
        assert!(matches!(&e, DataError::IdxDims { dims, values: 1, .. } if dims.is_empty()), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("`d/imgs.idx`: the IDX array has no dimensions; the first must be the record count"));
        // Dims promising more than the data holds (sample() would have panicked later).
        let short = IdxArray { dims: vec![2, 2, 3], data: IdxData::U8(vec![0; 6]) };
        let e = build(short, labels(vec![0, 1]), 3).unwrap_err().to_string();
        assert_eq!(
            e,
            "`d/imgs.idx`: the IDX array's dims [2, 2, 3] describe 12 values, but its data holds 6; make the product \
             of the dims the number of values"
        );
        let lbls = IdxArray { dims: vec![4], data: IdxData::U8(vec![0, 1]) };
        let e = build(images(4), lbls, 3).unwrap_err().to_string();
        assert!(e.starts_with("`d/lbls.idx`: the IDX array's dims [4] describe 4 values, but its data holds 2"), "{e}");
        let huge = IdxArray { dims: vec![usize::MAX, 2], data: IdxData::U8(vec![0; 2]) };
        let e = build(huge, labels(vec![0]), 3).unwrap_err().to_string();
        assert!(e.contains("describe more values than memory can hold"), "{e}");
    }

    /// Fields that disagree are refused with what each holds (a trainer would otherwise panic
    /// slicing the features of the last samples).
    #[test]
    fn validate_names_fields_that_disagree() {
        let short = Dataset { features: vec![0.0; 5], labels: vec![0, 1], sample_shape: vec![1, 3], num_classes: 2 };
        assert_eq!(
            short.validate().unwrap_err().to_string(),
            "data set: `features` holds 5 values, but 2 labels of samples of shape [1, 3] (3 values each) need 6; \
             keep `features`, `labels` and `sample_shape` consistent"
        );
        let label = Dataset { features: vec![0.0; 3], labels: vec![0, 1, 4], sample_shape: vec![1], num_classes: 3 };
        assert_eq!(
            label.validate().unwrap_err().to_string(),
            "data set: label 4 of sample 2 is not a class of 3 (labels are 0..3); fix the label, or raise `num_classes`"
        );
        let huge = Dataset { features: vec![], labels: vec![0; 2], sample_shape: vec![usize::MAX], num_classes: 1 };
        assert!(huge.validate().unwrap_err().to_string().contains("need more than memory holds"));
        // Unlabelled (num_classes 0, as read_csv_unlabelled gives) and empty sets are fine.
        Dataset { features: vec![0.0; 4], labels: vec![0, 0], sample_shape: vec![2], num_classes: 0 }
            .validate()
            .unwrap();
        build(images(0), labels(vec![]), 10).unwrap().validate().unwrap();
        numbered(5).validate().unwrap();
    }

    #[test]
    fn empty_dataset() {
        let d = build(images(0), labels(vec![]), 10).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.class_counts(), vec![0; 10]);
    }
}
