//! The run file's `[augment]` section: per-sample augmentation of the training images
//! (torchvision's `RandomCrop`, `RandomHorizontalFlip`, `RandomAffine`), off by default.
//!
//! ```toml
//! [augment]
//! random_crop = 28          # RandomCrop(28, padding=4): pad, then crop back at a random offset
//! crop_padding = 4
//! padding_mode = "constant" # constant | edge | reflect | symmetric
//! horizontal_flip = 0.5     # RandomHorizontalFlip(p=0.5)
//! degrees = 10.0            # RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
//! translate = [0.1, 0.1]
//! scale = [0.9, 1.1]
//! ```
//!
//! The transforms apply in that order (crop, flip, affine), to each training sample as its batch
//! is gathered on the loader's background thread, seeded by `training.seed`, the epoch and the
//! sample's index (the same for any `--threads`, and when a run resumes). Validation and test
//! data are never augmented. The data is normalised when it is loaded, so the pipeline runs on
//! normalised pixels with every fill set to a black pixel's normalised value (`−mean/std`):
//! the result is torchvision's `Compose([..., Normalize(mean, std)])` on the raw pixels.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use strata_data::{Augment, PadMode, RandomAffine, RandomCrop, RandomHorizontalFlip};

/// Augmentation of the training samples (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// `RandomCrop`'s size: pad by `crop_padding`, then crop this many pixels square at a random
    /// offset. It must be the images' own size (the model and evaluation see whole images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_crop: Option<usize>,
    /// Pixels of padding on each side before the crop.
    pub crop_padding: usize,
    /// How the padding is filled: `constant` (black), `edge`, `reflect` or `symmetric`.
    pub padding_mode: String,
    /// The probability of a horizontal flip (0: none). Not for digits, whose mirror images are
    /// not digits; for natural images.
    pub horizontal_flip: f64,
    /// `RandomAffine`'s rotation range, ± this many degrees (0: no rotation).
    pub degrees: f64,
    /// `RandomAffine`'s largest translation, as fractions of the width and height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translate: Option<[f64; 2]>,
    /// `RandomAffine`'s scale range `[min, max]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<[f64; 2]>,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            random_crop: None,
            crop_padding: 0,
            padding_mode: "constant".into(),
            horizontal_flip: 0.0,
            degrees: 0.0,
            translate: None,
            scale: None,
        }
    }
}

impl AugmentConfig {
    /// Whether this is the default (nothing asked for); such a section is left out of saved
    /// configs, so run files and checkpoints from before `[augment]` existed read the same.
    pub fn is_default(&self) -> bool {
        *self == AugmentConfig::default()
    }

    /// The pipeline on raw pixels, or `None` when no transform is asked for.
    pub fn pipeline(&self) -> Option<Augment> {
        let mut a = Augment::new();
        if let Some(size) = self.random_crop {
            let mode = PadMode::from_name(&self.padding_mode).unwrap_or_default();
            a = a.then(RandomCrop::new(size).padding(self.crop_padding).padding_mode(mode));
        }
        if self.horizontal_flip > 0.0 {
            a = a.then(RandomHorizontalFlip::new(self.horizontal_flip));
        }
        if self.degrees != 0.0 || self.translate.is_some() || self.scale.is_some() {
            let mut affine = RandomAffine::new(self.degrees);
            affine.translate = self.translate;
            affine.scale = self.scale;
            a = a.then(affine);
        }
        (!a.is_empty()).then_some(a)
    }

    /// Checks the values that need no data; `source` is `data.source`.
    pub fn validate(&self, source: &str) -> Result<()> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if self.random_crop == Some(0) {
            bail!("augment.random_crop must be at least 1 pixel (the images' size, e.g. 28 for MNIST)");
        }
        if self.crop_padding > 0 && self.random_crop.is_none() {
            bail!(
                "augment.crop_padding = {} needs augment.random_crop: the padded image is cropped back to random_crop \
                 pixels at a random offset (random_crop = 28 with crop_padding = 4 for MNIST)",
                self.crop_padding
            );
        }
        if PadMode::from_name(&self.padding_mode).is_none() {
            bail!("augment.padding_mode must be constant, edge, reflect or symmetric, got `{}`", self.padding_mode);
        }
        if !(0.0..=1.0).contains(&self.horizontal_flip) {
            bail!("augment.horizontal_flip is a probability in [0, 1] (0.5 is usual), got {}", self.horizontal_flip);
        }
        if !(self.degrees.is_finite() && (0.0..=180.0).contains(&self.degrees)) {
            bail!(
                "augment.degrees must be between 0 and 180 (rotations by ± that many degrees; 10 is usual), got {}",
                self.degrees
            );
        }
        if let Some(t) = self.translate
            && !(finite(&t) && t.iter().all(|v| (0.0..=1.0).contains(v)))
        {
            bail!(
                "augment.translate must be two fractions of the width and height in [0, 1] ([0.1, 0.1] is usual), got [{}, {}]",
                t[0],
                t[1]
            );
        }
        if let Some([lo, hi]) = self.scale
            && !(finite(&[lo, hi]) && lo > 0.0 && lo <= hi)
        {
            bail!("augment.scale must be [min, max] with 0 < min ≤ max ([0.9, 1.1] is usual), got [{lo}, {hi}]");
        }
        if source == "csv" && self.pipeline().is_some() {
            bail!(
                "augment: data.source = \"csv\" gives rows of numbers, not images; augmentation needs image data \
                 (embedded, mnist or images) — remove the [augment] keys for CSV data"
            );
        }
        Ok(())
    }

    /// The pipeline for the training samples of shape `sample_shape`, normalised already with
    /// `mean` and `std`: its fills are black pixels after normalisation. `None` when off.
    ///
    /// # Errors
    /// Samples that are not images, a crop that does not fit the padded image or is not the
    /// images' size, a padding that the mode refuses.
    pub fn for_data(&self, sample_shape: &[usize], mean: &[f32], std: &[f32]) -> Result<Option<Augment>> {
        let Some(pipeline) = self.pipeline() else { return Ok(None) };
        let out = pipeline.output_shape(sample_shape).map_err(|e| match e {
            strata_data::DataError::InvalidArgument { what: "augment", message } => {
                anyhow::anyhow!("augment: {message}")
            }
            e => anyhow::anyhow!("augment: {e}"),
        })?;
        if out[..] != sample_shape[..] {
            let size = self.random_crop.unwrap_or_default();
            bail!(
                "augment.random_crop = {size} makes {size}×{size} crops of the {}×{} training images, but the model and \
                 the evaluation see whole images; set random_crop = {} (with crop_padding for the random shift)",
                sample_shape[1],
                sample_shape[2],
                sample_shape[1]
            );
        }
        Ok(Some(pipeline.after_normalize(mean, std)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    fn parse(text: &str) -> Result<RunConfig> {
        let c: RunConfig = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn off_by_default_and_left_out_of_saved_configs() {
        let c = RunConfig::default();
        assert!(c.augment.pipeline().is_none());
        assert!(!toml::to_string(&c).unwrap().contains("augment"));
        let on = parse("[augment]\nrandom_crop = 28\ncrop_padding = 4\nhorizontal_flip = 0.5\n").unwrap();
        let saved = toml::to_string(&on).unwrap();
        assert!(saved.contains("[augment]") && saved.contains("random_crop = 28"), "{saved}");
        assert_eq!(toml::from_str::<RunConfig>(&saved).unwrap(), on);
    }

    #[test]
    fn keys_build_torchvisions_pipeline() {
        let c = parse(
            "[augment]\nrandom_crop = 28\ncrop_padding = 4\nhorizontal_flip = 0.5\ndegrees = 10.0\n\
             translate = [0.1, 0.1]\nscale = [0.9, 1.1]\n",
        )
        .unwrap();
        assert_eq!(
            c.augment.pipeline().unwrap().to_string(),
            "RandomCrop(28, padding=4) → RandomHorizontalFlip(p=0.5) → RandomAffine(degrees=10, translate=(0.1, 0.1), \
             scale=(0.9, 1.1))"
        );
        let c = parse("[augment]\nscale = [0.8, 1.0]\n").unwrap();
        assert_eq!(c.augment.pipeline().unwrap().to_string(), "RandomAffine(degrees=0, scale=(0.8, 1))");
        // Overrides reach the section even when the file has none.
        let o = RunConfig::default().with_overrides(&[("augment.degrees".into(), "15".into())]).unwrap();
        assert_eq!(o.augment.degrees, 15.0);
        // On normalised MNIST, a black pixel is −mean/std.
        let a = parse("[augment]\nrandom_crop = 28\ncrop_padding = 4\n").unwrap().augment;
        let aug = a.for_data(&[1, 28, 28], &[0.1307], &[0.3081]).unwrap().unwrap();
        let strata_data::augment::Transform::RandomCrop(crop) = &aug.transforms()[0] else { panic!() };
        assert_eq!(crop.fill, [-0.1307 / 0.3081]);
    }

    /// Every refusal, in one snapshot: the key, the value and what to give instead.
    #[test]
    fn refusals() {
        let mut lines = vec![];
        for text in [
            "random_crop = 0",
            "crop_padding = 4",
            "random_crop = 28\npadding_mode = \"zeros\"",
            "horizontal_flip = 1.5",
            "degrees = -5.0",
            "degrees = 270.0",
            "translate = [0.1, 2.0]",
            "scale = [1.1, 0.9]",
            "scale = [0.0, 1.0]",
            "rotate = 10",
        ] {
            let e = parse(&format!("[augment]\n{text}\n")).unwrap_err();
            lines.push(format!("{text:?}\n  {}", e.to_string().trim().replace('\n', "\n  ")));
        }
        let csv = parse("[data]\nsource = \"csv\"\npath = \"x.csv\"\n[augment]\nhorizontal_flip = 0.5\n").unwrap_err();
        lines.push(format!("csv data\n  {csv}"));
        let with_data = |text: &str, shape: &[usize]| {
            let c = parse(&format!("[augment]\n{text}\n")).unwrap();
            let e = c.augment.for_data(shape, &[0.0], &[1.0]).unwrap_err();
            format!("{text:?} on {shape:?}\n  {e}")
        };
        lines.push(with_data("random_crop = 40\ncrop_padding = 4", &[1, 28, 28]));
        lines.push(with_data("random_crop = 24\ncrop_padding = 4", &[1, 28, 28]));
        lines.push(with_data("random_crop = 28\ncrop_padding = 30\npadding_mode = \"reflect\"", &[1, 28, 28]));
        lines.push(with_data("degrees = 10.0", &[784]));
        insta::assert_snapshot!(lines.join("\n"));
    }
}
