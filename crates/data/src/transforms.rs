//! Whole-data-set transforms: per-channel statistics and normalisation, scaling to `[0, 1]`,
//! flattening.
//!
//! They run once over the in-memory [`Dataset`] rather than per batch, because the data sets
//! strata targets fit in memory and a transform applied once costs nothing per epoch.
//!
//! Channels: for samples of rank 2 or more (`[C, H, W]` images, `[C, L]` sequences) the channel
//! axis is the first; a rank-0 or rank-1 sample (a flattened image, a CSV row) is one channel,
//! all its values pooled — what MNIST's single mean and std mean.

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

impl Dataset {
    /// The number of channels the transforms below see: `sample_shape[0]` for samples of rank
    /// 2 or more, else 1.
    pub fn channels(&self) -> usize {
        if self.sample_shape.len() >= 2 { self.sample_shape[0] } else { 1 }
    }

    /// Divides every value by `max`, mapping `[0, max]` to `[0, 1]` (digits' 0–16 pixels:
    /// `scale(16.0)`; 8-bit pixels: `scale(255.0)`). A true division, so `max` maps to exactly 1.
    /// `max` must be a positive finite number.
    pub fn scale(&mut self, max: f32) -> Result<()> {
        if !(max.is_finite() && max > 0.0) {
            return Err(DataError::InvalidArgument {
                what: "scale",
                message: format!("needs a positive finite maximum value, got {max}"),
            });
        }
        for x in &mut self.features {
            *x /= max;
        }
        Ok(())
    }

    /// Makes every sample one-dimensional: `sample_shape` becomes `[product]`. The features
    /// are already stored row-major, so only the shape changes.
    pub fn flatten(&mut self) {
        self.sample_shape = vec![self.sample_len()];
    }

    /// Standardises each channel `c` in place: `x = (x - mean[c]) / std[c]`, torchvision's
    /// `Normalize(mean, std)`.
    ///
    /// `mean` and `std` hold one value per channel (see [`Dataset::channels`]) or a single
    /// value for all. Lengths that fit neither, non-finite values, and a `std` that is not
    /// positive are errors.
    pub fn normalize_channels(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        let c = self.channels();
        check_mean_std(mean, std, c, &self.sample_shape)?;
        let len = self.sample_len();
        if len == 0 {
            return Ok(());
        }
        for sample in self.features.chunks_exact_mut(len) {
            normalize_sample(sample, c, mean, std);
        }
        Ok(())
    }
}

/// Checks `mean` and `std` for samples of `c` channels (shape `shape`, for messages): one value
/// per channel or one for all, finite means, positive finite stds. Shared by
/// [`Dataset::normalize_channels`] and the per-sample [`crate::augment::Normalize`].
pub(crate) fn check_mean_std(mean: &[f32], std: &[f32], c: usize, shape: &[usize]) -> Result<()> {
    let err = |message: String| Err(DataError::InvalidArgument { what: "normalize", message });
    for (name, v) in [("mean", mean), ("std", std)] {
        if v.len() != c && v.len() != 1 {
            return err(format!(
                "{name} has {} values but the samples (shape {shape:?}) have {c} channel(s); give {c} or 1",
                v.len()
            ));
        }
    }
    if let Some((i, m)) = mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
        return err(format!("mean[{i}] is {m}; every mean must be finite"));
    }
    if let Some((i, s)) = std.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
        return err(format!(
            "std[{i}] is {s}; every std must be positive and finite (a channel with std 0 is constant: \
             drop it or normalise with std 1)"
        ));
    }
    Ok(())
}

/// Standardises one sample of `c` equal channel planes in place: `x = (x - mean[c]) / std[c]`
/// (`mean`/`std` of length `c` or 1, already checked by [`check_mean_std`]).
///
/// # Shapes
/// - `sample`: `[c, plane]` flattened (`plane` = the values per channel)
pub(crate) fn normalize_sample(sample: &mut [f32], c: usize, mean: &[f32], std: &[f32]) {
    let plane = sample.len() / c.max(1);
    if plane == 0 {
        return;
    }
    for (ch, values) in sample.chunks_exact_mut(plane).enumerate() {
        let m = if mean.len() == 1 { mean[0] } else { mean[ch] };
        let inv = 1.0 / if std.len() == 1 { std[0] } else { std[ch] };
        for x in values {
            *x = (*x - m) * inv;
        }
    }
}

/// Per-channel mean and standard deviation over every sample of `dataset` (see
/// [`Dataset::channels`]), the numbers to pass to [`Dataset::normalize_channels`]; compute them
/// on the training split only, so no held-out information leaks into training.
///
/// The standard deviation is the population one (divide by the count, `numpy.std`'s default),
/// accumulated in `f64` so millions of values lose no precision. An empty data set or one with
/// empty samples is an error.
pub fn compute_stats(dataset: &Dataset) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = dataset.channels();
    let plane = dataset.sample_len() / c.max(1);
    if dataset.is_empty() || plane == 0 {
        return Err(DataError::InvalidArgument {
            what: "compute_stats",
            message: format!(
                "needs at least one value per channel, but the data set has {} samples of shape {:?}",
                dataset.len(),
                dataset.sample_shape
            ),
        });
    }
    // Two passes (mean, then squared deviations) rather than sum and sum of squares: the
    // one-pass formula cancels catastrophically when the mean is large next to the spread.
    let count = (dataset.len() * plane) as f64;
    let mut mean = vec![0.0f64; c];
    for sample in dataset.features.chunks_exact(c * plane) {
        for (ch, values) in sample.chunks_exact(plane).enumerate() {
            mean[ch] += values.iter().map(|&x| x as f64).sum::<f64>();
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0f64; c];
    for sample in dataset.features.chunks_exact(c * plane) {
        for (ch, values) in sample.chunks_exact(plane).enumerate() {
            var[ch] += values.iter().map(|&x| (x as f64 - mean[ch]).powi(2)).sum::<f64>();
        }
    }
    let std = var.iter().map(|v| (v / count).sqrt() as f32).collect();
    Ok((mean.iter().map(|&m| m as f32).collect(), std))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of shape `[2, 1, 2]`: channel 0 holds 0, 2, 4, 6 and channel 1 holds 10 × that.
    fn two_channel() -> Dataset {
        Dataset {
            features: vec![0.0, 2.0, 0.0, 20.0, 4.0, 6.0, 40.0, 60.0],
            labels: vec![0, 1],
            sample_shape: vec![2, 1, 2],
            num_classes: 2,
        }
    }

    #[test]
    fn stats_per_channel_by_hand() {
        let d = two_channel();
        let (mean, std) = compute_stats(&d).unwrap();
        // Channel 0: mean 3, deviations -3 -1 1 3, variance (9+1+1+9)/4 = 5.
        assert_eq!(mean, vec![3.0, 30.0]);
        assert_eq!(std, vec![5f32.sqrt(), 500f32.sqrt()]);
    }

    #[test]
    fn normalize_with_computed_stats_gives_zero_mean_unit_std() {
        let mut d = two_channel();
        let (mean, std) = compute_stats(&d).unwrap();
        d.normalize_channels(&mean, &std).unwrap();
        let (m2, s2) = compute_stats(&d).unwrap();
        for (m, s) in m2.iter().zip(&s2) {
            assert!(m.abs() < 1e-6 && (s - 1.0).abs() < 1e-6, "{m} {s}");
        }
    }

    #[test]
    fn scalar_normalize_and_rank1_is_one_channel() {
        let mut d = Dataset { features: vec![1.0, 3.0], labels: vec![0], sample_shape: vec![2], num_classes: 1 };
        assert_eq!(d.channels(), 1);
        assert_eq!(compute_stats(&d).unwrap(), (vec![2.0], vec![1.0]));
        d.normalize_channels(&[2.0], &[1.0]).unwrap();
        assert_eq!(d.features, vec![-1.0, 1.0]);
        // One value for several channels applies to all.
        let mut d = two_channel();
        d.normalize_channels(&[2.0], &[2.0]).unwrap();
        assert_eq!(d.features[..4], [-1.0, 0.0, -1.0, 9.0]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut d = two_channel();
        let e = d.normalize_channels(&[0.0, 0.0, 0.0], &[1.0]).unwrap_err().to_string();
        assert!(e.contains("mean has 3 values") && e.contains("2 channel(s)"), "{e}");
        assert!(d.normalize_channels(&[0.0], &[0.0, 1.0]).unwrap_err().to_string().contains("std[0] is 0"));
        assert!(d.normalize_channels(&[f32::NAN], &[1.0]).is_err());
        assert!(d.scale(0.0).is_err() && d.scale(f32::INFINITY).is_err() && d.scale(-1.0).is_err());
        let empty = Dataset { features: vec![], labels: vec![], sample_shape: vec![3], num_classes: 1 };
        assert!(compute_stats(&empty).is_err());
        assert_eq!(d, two_channel(), "failed calls leave the data untouched");
    }

    #[test]
    fn scale_and_flatten() {
        let mut d = two_channel();
        d.scale(60.0).unwrap();
        assert_eq!(d.features[7], 1.0);
        d.flatten();
        assert_eq!(d.sample_shape, vec![4]);
        assert_eq!(d.channels(), 1);
    }
}
