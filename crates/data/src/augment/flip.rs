//! The transforms that keep every pixel's value or only rescale it: `RandomHorizontalFlip` and
//! `Normalize`, torchvision's.

use std::fmt;

use strata_core::Generator;

use super::ImageShape;
use crate::error::{DataError, Result};
use crate::transforms::{check_mean_std, normalize_sample};

/// Mirrors the image left to right with probability `p`, torchvision's
/// `RandomHorizontalFlip(p)`: one uniform `u ~ U[0, 1)` is drawn per image (always, so the
/// transforms after it see the same stream whatever the outcome), and the image is flipped when
/// `u < p`:
///
/// `out[c, i, j] = x[c, i, W − 1 − j]`
///
/// # Shapes
/// - input: `[C, H, W]`
/// - output: `[C, H, W]`
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomHorizontalFlip {
    /// The probability of a flip, in `[0, 1]` (torchvision's default is 0.5).
    pub p: f64,
}

impl RandomHorizontalFlip {
    /// Flips with probability `p`.
    pub fn new(p: f64) -> Self {
        RandomHorizontalFlip { p }
    }

    /// Checks `p`; the output has the input's shape.
    pub(crate) fn output_shape(&self, shape: ImageShape) -> Result<ImageShape> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(DataError::InvalidArgument {
                what: "RandomHorizontalFlip",
                message: format!("p is a probability in [0, 1], got {}", self.p),
            });
        }
        Ok(shape)
    }

    /// The mirror image, torchvision's `F.hflip`: the flip with no randomness, for parity tests.
    ///
    /// # Errors
    /// A sample that does not hold `shape`'s values.
    ///
    /// # Shapes
    /// - `x`: `[C, H, W]` (`shape`)
    /// - output: `[C, H, W]`
    pub fn hflip(x: &[f32], shape: ImageShape) -> Result<Vec<f32>> {
        super::check_len(x, shape)?;
        let mut out = Vec::new();
        mirror(x, shape[2], &mut out);
        Ok(out)
    }

    /// Flips a checked input into `out` (cleared first) with probability `p`.
    pub(crate) fn run(&self, x: &[f32], shape: ImageShape, rng: &mut Generator, out: &mut Vec<f32>) {
        if rng.next_f64() < self.p {
            mirror(x, shape[2], out);
        } else {
            out.clear();
            out.extend_from_slice(x);
        }
    }
}

/// Every row of `x` (rows of `w` values) reversed, into `out`.
fn mirror(x: &[f32], w: usize, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(x.len());
    for row in x.chunks_exact(w) {
        out.extend(row.iter().rev());
    }
}

impl fmt::Display for RandomHorizontalFlip {
    /// `RandomHorizontalFlip(p=0.5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomHorizontalFlip(p={})", self.p)
    }
}

/// Standardises each channel, torchvision's `Normalize(mean, std)`:
/// `out[c, i, j] = (x[c, i, j] − mean[c]) / std[c]`. No randomness. The same computation as
/// [`crate::Dataset::normalize_channels`] (one shared implementation), applied per sample: put
/// it last in a pipeline that runs on raw pixels, torchvision's convention.
///
/// # Shapes
/// - input: `[C, H, W]`; `mean` and `std` hold `C` values or one for all
/// - output: `[C, H, W]`
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    /// Per-channel means (or one for all).
    pub mean: Vec<f32>,
    /// Per-channel standard deviations (or one for all), positive.
    pub std: Vec<f32>,
}

impl Normalize {
    /// `(x − mean) / std` per channel.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Normalize { mean, std }
    }

    /// Checks `mean` and `std` against the channels; the output has the input's shape.
    pub(crate) fn output_shape(&self, shape: ImageShape) -> Result<ImageShape> {
        check_mean_std(&self.mean, &self.std, shape[0], &shape)?;
        Ok(shape)
    }

    /// Normalises a checked input into `out` (cleared first).
    pub(crate) fn run(&self, x: &[f32], shape: ImageShape, out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(x);
        normalize_sample(out, shape[0], &self.mean, &self.std);
    }
}

impl fmt::Display for Normalize {
    /// `Normalize(mean=[0.1307], std=[0.3081])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Normalize(mean={}, std={})", super::list(&self.mean), super::list(&self.std))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_of_a_known_image() {
        // Two channels of 2×3: each row reversed, channels and rows kept in place.
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let want = [2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0, 11.0, 10.0, 9.0];
        assert_eq!(RandomHorizontalFlip::hflip(&x, [2, 2, 3]).unwrap(), want);
        // p = 1 always flips, p = 0 never; each draws one number either way.
        let (mut g, mut out) = (Generator::new(0), Vec::new());
        RandomHorizontalFlip::new(1.0).run(&x, [2, 2, 3], &mut g, &mut out);
        assert_eq!(out, want);
        RandomHorizontalFlip::new(0.0).run(&x, [2, 2, 3], &mut g, &mut out);
        assert_eq!(out, x);
        assert_eq!(g.state().2, 4, "two draws of two words");
        assert!(RandomHorizontalFlip::hflip(&x[..11], [2, 2, 3]).is_err());
    }

    #[test]
    fn flip_probability_is_p() {
        let flip = RandomHorizontalFlip::new(0.3);
        let (mut g, mut out) = (Generator::new(9), Vec::new());
        let x = [0.0, 1.0];
        let flips = (0..10_000)
            .filter(|_| {
                flip.run(&x, [1, 1, 2], &mut g, &mut out);
                out[0] == 1.0
            })
            .count();
        assert!((2_800..3_200).contains(&flips), "{flips} of 10,000");
        assert!(RandomHorizontalFlip::new(1.5).output_shape([1, 1, 2]).is_err());
        assert!(RandomHorizontalFlip::new(f64::NAN).output_shape([1, 1, 2]).is_err());
    }

    #[test]
    fn normalize_per_channel_matches_the_data_set_one() {
        let n = Normalize::new(vec![1.0, 10.0], vec![2.0, 5.0]);
        let mut out = Vec::new();
        n.run(&[1.0, 3.0, 10.0, 20.0], [2, 1, 2], &mut out);
        assert_eq!(out, [0.0, 1.0, 0.0, 2.0]);
        let mut d = crate::Dataset {
            features: vec![1.0, 3.0, 10.0, 20.0],
            labels: vec![0],
            sample_shape: vec![2, 1, 2],
            num_classes: 1,
        };
        d.normalize_channels(&n.mean, &n.std).unwrap();
        assert_eq!(d.features, out);
        let e = Normalize::new(vec![0.0; 3], vec![1.0]).output_shape([2, 1, 2]).unwrap_err().to_string();
        assert!(e.contains("mean has 3 values") && e.contains("2 channel(s)"), "{e}");
        assert!(Normalize::new(vec![0.0], vec![0.0]).output_shape([2, 1, 2]).is_err());
    }
}
