//! Per-sample data augmentation for images, torchvision's transforms by name and meaning:
//! [`RandomCrop`], [`RandomHorizontalFlip`], [`RandomAffine`] and [`Normalize`], chained by an
//! [`Augment`] pipeline (torchvision's `Compose`).
//!
//! **Randomness.** Each sample's random numbers come from its own counter-based generator,
//! [`Augment::generator`]`(seed, epoch, index)` (Philox, forked from the seed by the epoch and
//! the sample's index in the data set), so what sample `i` looks like in epoch `e` is a pure
//! function of `(seed, e, i)`: the same for any thread count, prefetch depth, batch size or
//! shuffle order, and the same when a run resumes. Transforms draw from it in pipeline order.
//!
//! **Where it runs.** [`crate::DataLoader::augment`] applies a pipeline to every sample as the
//! loader gathers a batch — on the loader's background thread with
//! [`crate::DataLoader::epoch_prefetched`], spread over samples with rayon — so only loaders
//! that ask for it augment (a training loader; evaluation loaders do not).
//!
//! **Normalisation.** torchvision's convention is to transform raw pixels and [`Normalize`] last;
//! a pipeline ending in [`Normalize`] does that. Data normalised at load time (as `strata
//! train`'s is) can be augmented as is with [`Augment::after_normalize`], which turns every fill
//! into the value that fill has after normalisation (a black pixel becomes `−mean/std`): every
//! transform here commutes with a per-channel `(x − m)/s` once its fill is mapped so, so the
//! result equals augmenting the raw pixels and then normalising (to rounding).
//!
//! Samples must be images `[C, H, W]` (what [`crate::Dataset::sample_shape`] holds for MNIST,
//! IDX and image folders; a model that reads `[784]` gets it by a reshape after the loader).
//! Any other shape — a CSV row, a flattened image — is refused with an error that says so.

mod affine;
mod crop;
mod flip;

use std::fmt;

pub use affine::{AffineParams, RandomAffine};
pub use crop::{PadMode, RandomCrop};
pub use flip::{Normalize, RandomHorizontalFlip};
use strata_core::Generator;

use crate::error::{DataError, Result};

/// An image's shape, `[channels, height, width]`.
pub type ImageShape = [usize; 3];

/// The fork that separates augmentation's random streams from the loader's shuffle (which forks
/// the same seed by the epoch): "AUGMENT" in ASCII, far above any epoch number.
const AUGMENT_STREAM: u64 = 0x0041_5547_4d45_4e54;

/// One step of an [`Augment`] pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Pad, then crop at a random offset.
    RandomCrop(RandomCrop),
    /// Mirror left to right with a probability.
    RandomHorizontalFlip(RandomHorizontalFlip),
    /// Random rotation, translation and scale with bilinear sampling.
    RandomAffine(RandomAffine),
    /// Per-channel standardisation.
    Normalize(Normalize),
}

impl From<RandomCrop> for Transform {
    fn from(t: RandomCrop) -> Self {
        Transform::RandomCrop(t)
    }
}

impl From<RandomHorizontalFlip> for Transform {
    fn from(t: RandomHorizontalFlip) -> Self {
        Transform::RandomHorizontalFlip(t)
    }
}

impl From<RandomAffine> for Transform {
    fn from(t: RandomAffine) -> Self {
        Transform::RandomAffine(t)
    }
}

impl From<Normalize> for Transform {
    fn from(t: Normalize) -> Self {
        Transform::Normalize(t)
    }
}

impl Transform {
    /// The output shape for an input of `shape`, or why this transform cannot apply to it.
    fn output_shape(&self, shape: ImageShape) -> Result<ImageShape> {
        match self {
            Transform::RandomCrop(t) => t.output_shape(shape),
            Transform::RandomHorizontalFlip(t) => t.output_shape(shape),
            Transform::RandomAffine(t) => t.output_shape(shape),
            Transform::Normalize(t) => t.output_shape(shape),
        }
    }

    /// The output shape for a checked input of `shape`.
    fn shape_after(&self, [c, h, w]: ImageShape) -> ImageShape {
        match self {
            Transform::RandomCrop(t) => [c, t.size[0], t.size[1]],
            _ => [c, h, w],
        }
    }

    /// Applies this transform to a checked input, drawing from `rng`, into `out`.
    fn run(&self, x: &[f32], shape: ImageShape, rng: &mut Generator, out: &mut Vec<f32>) {
        match self {
            Transform::RandomCrop(t) => t.run(x, shape, rng, out),
            Transform::RandomHorizontalFlip(t) => t.run(x, shape, rng, out),
            Transform::RandomAffine(t) => t.run(x, shape, rng, out),
            Transform::Normalize(t) => t.run(x, shape, out),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::RandomCrop(t) => t.fmt(f),
            Transform::RandomHorizontalFlip(t) => t.fmt(f),
            Transform::RandomAffine(t) => t.fmt(f),
            Transform::Normalize(t) => t.fmt(f),
        }
    }
}

/// A chain of transforms applied to each image in order, torchvision's `Compose`.
///
/// ```
/// # use strata_data::augment::{Augment, RandomCrop, RandomHorizontalFlip, RandomAffine};
/// let augment = Augment::new()
///     .then(RandomCrop::new(28).padding(4))
///     .then(RandomHorizontalFlip::new(0.5))
///     .then(RandomAffine::new(10.0).translate(0.1, 0.1).scale(0.9, 1.1));
/// assert_eq!(augment.output_shape(&[1, 28, 28])?, [1, 28, 28]);
/// let image = vec![0.5f32; 784];
/// let out = augment.apply(&image, &[1, 28, 28], &mut Augment::generator(0, 0, 7))?;
/// assert_eq!(out.len(), 784);
/// // The same (seed, epoch, index) gives the same result.
/// assert_eq!(out, augment.apply(&image, &[1, 28, 28], &mut Augment::generator(0, 0, 7))?);
/// # Ok::<(), strata_data::DataError>(())
/// ```
///
/// # Shapes
/// - input: `[C, H, W]`
/// - output: [`Augment::output_shape`] (`[C, H, W]` unless a crop changes `H, W`)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    transforms: Vec<Transform>,
}

impl Augment {
    /// An empty pipeline (no change).
    pub fn new() -> Self {
        Augment::default()
    }

    /// This pipeline followed by `transform`.
    pub fn then(mut self, transform: impl Into<Transform>) -> Self {
        self.transforms.push(transform.into());
        self
    }

    /// The transforms, in the order they apply.
    pub fn transforms(&self) -> &[Transform] {
        &self.transforms
    }

    /// Whether the pipeline has no transforms.
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// The shape of an output for samples of `sample_shape`, checking every transform against
    /// the shape it receives.
    ///
    /// # Errors
    /// Samples that are not images `[C, H, W]` (CSV rows, flattened images), and any transform
    /// whose parameters do not fit (a crop larger than the padded image, a reflect padding as
    /// large as the side, a probability outside `[0, 1]`, a fill or mean of the wrong length, an
    /// output of more than [`crate::MAX_IMAGE_VALUES`] values…), naming the transform.
    pub fn output_shape(&self, sample_shape: &[usize]) -> Result<ImageShape> {
        let mut shape = image_shape(sample_shape)?;
        for (i, t) in self.transforms.iter().enumerate() {
            shape = t.output_shape(shape).map_err(|e| match e {
                DataError::InvalidArgument { what, message } => DataError::InvalidArgument {
                    what,
                    message: format!("{message} (transform {} of the pipeline, on images {shape:?})", i + 1),
                },
                other => other,
            })?;
            let values = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            if values.is_none_or(|n| n > crate::MAX_IMAGE_VALUES) {
                return Err(DataError::InvalidArgument {
                    what: "augment",
                    message: format!(
                        "transform {} of the pipeline makes images of shape {shape:?}, more than {} values each",
                        i + 1,
                        crate::MAX_IMAGE_VALUES
                    ),
                });
            }
        }
        Ok(shape)
    }

    /// The generator that sample `index` of epoch `epoch` draws from under `seed`: a pure
    /// function of the three, independent of the loader's shuffle stream for the same seed.
    pub fn generator(seed: u64, epoch: u64, index: usize) -> Generator {
        Generator::new(seed).fork(AUGMENT_STREAM).fork(epoch).fork(index as u64)
    }

    /// Applies the pipeline to one sample of shape `shape`, drawing from `rng` (use
    /// [`Augment::generator`] for the loader's numbers).
    ///
    /// # Errors
    /// As [`Augment::output_shape`], and a sample that does not hold `shape`'s values.
    ///
    /// # Shapes
    /// - `sample`: `shape`, `[C, H, W]`
    /// - output: [`Augment::output_shape`]`(shape)`, flattened
    pub fn apply(&self, sample: &[f32], shape: &[usize], rng: &mut Generator) -> Result<Vec<f32>> {
        let out_shape = self.output_shape(shape)?;
        let shape = image_shape(shape)?;
        check_len(sample, shape)?;
        let mut out = vec![0.0; out_shape.iter().product()];
        self.run(sample, shape, rng, &mut out, &mut Scratch::default());
        Ok(out)
    }

    /// Applies the pipeline to a checked sample into `out` (of the output shape's length),
    /// with `scratch` as the buffers between steps.
    pub(crate) fn run(
        &self,
        sample: &[f32],
        shape: ImageShape,
        rng: &mut Generator,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let Scratch(a, b) = scratch;
        let (mut shape, mut first) = (shape, true);
        for t in &self.transforms {
            let next = t.shape_after(shape);
            t.run(if first { sample } else { a.as_slice() }, shape, rng, b);
            std::mem::swap(a, b);
            (shape, first) = (next, false);
        }
        out.copy_from_slice(if first { sample } else { a.as_slice() });
    }

    /// The same pipeline for data that is normalised already with `mean` and `std` (per
    /// channel, or one for all): every fill `f` becomes `(f − mean) / std`, the value it has after
    /// normalisation (fill 0, a black pixel, becomes `−mean/std`). Running the result on
    /// normalised data equals running `self` on the raw data and then normalising, to rounding;
    /// see the module documentation.
    ///
    /// # Errors
    /// A pipeline that contains a [`Normalize`] (the data would be normalised twice), a `mean` or
    /// `std` that is not finite, a `std` that is not positive, or lengths that do not broadcast
    /// with a fill's.
    pub fn after_normalize(&self, mean: &[f32], std: &[f32]) -> Result<Augment> {
        let what = "Augment::after_normalize";
        if self.transforms.iter().any(|t| matches!(t, Transform::Normalize(_))) {
            let message = format!("the pipeline `{self}` normalises already; the data would be normalised twice");
            return Err(DataError::InvalidArgument { what, message });
        }
        let channels = mean.len().max(std.len());
        crate::transforms::check_mean_std(mean, std, channels, &[channels])?;
        let map = |fill: &[f32]| -> Result<Vec<f32>> {
            let n = fill.len().max(channels);
            if fill.len() != n && fill.len() != 1 {
                let message = format!("a fill of {} values and a mean of {channels} do not match", fill.len());
                return Err(DataError::InvalidArgument { what, message });
            }
            Ok((0..n).map(|c| (fill_at(fill, c) - fill_at(mean, c)) / fill_at(std, c)).collect())
        };
        let mut out = self.clone();
        for t in &mut out.transforms {
            match t {
                Transform::RandomCrop(c) => c.fill = map(&c.fill)?,
                Transform::RandomAffine(a) => a.fill = map(&a.fill)?,
                Transform::RandomHorizontalFlip(_) | Transform::Normalize(_) => {}
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Augment {
    /// The transforms in torchvision's spelling, joined by ` → `; `identity` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.transforms.is_empty() {
            return f.write_str("identity");
        }
        for (i, t) in self.transforms.iter().enumerate() {
            if i > 0 {
                f.write_str(" → ")?;
            }
            t.fmt(f)?;
        }
        Ok(())
    }
}

/// The two buffers a sample passes between while a pipeline transforms it; one per worker, so
/// a batch allocates them once per thread rather than once per sample and step.
#[derive(Default)]
pub(crate) struct Scratch(Vec<f32>, Vec<f32>);

/// `sample_shape` as an image `[C, H, W]`, or an error saying why it is not one.
pub(crate) fn image_shape(sample_shape: &[usize]) -> Result<ImageShape> {
    match *sample_shape {
        [c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
        [_, _, _] => Err(DataError::InvalidArgument {
            what: "augment",
            message: format!("the images of shape {sample_shape:?} are empty; augmentation needs at least one pixel"),
        }),
        _ => Err(DataError::InvalidArgument {
            what: "augment",
            message: format!(
                "augmentation needs image samples [C, H, W], but these samples have shape {sample_shape:?}{}",
                if sample_shape.len() <= 1 {
                    " (CSV rows or flattened images): augment image data (MNIST/IDX, image folders) before flattening \
                     it — a model that reads flat vectors gets them by a reshape after the loader"
                } else {
                    ""
                }
            ),
        }),
    }
}

/// Checks that `x` holds exactly the values of `shape`.
pub(crate) fn check_len(x: &[f32], shape: ImageShape) -> Result<()> {
    let need = shape.iter().product::<usize>();
    if x.len() != need {
        return Err(DataError::InvalidArgument {
            what: "augment",
            message: format!("the sample has {} values but its shape {shape:?} needs {need}", x.len()),
        });
    }
    Ok(())
}

/// Checks a fill: one finite value per channel, or one for all.
fn check_fill(what: &'static str, fill: &[f32], channels: usize) -> Result<()> {
    if fill.len() != 1 && fill.len() != channels {
        return Err(DataError::InvalidArgument {
            what,
            message: format!(
                "fill has {} values but the images have {channels} channel(s); give {channels} or 1",
                fill.len()
            ),
        });
    }
    if let Some(v) = fill.iter().find(|v| !v.is_finite()) {
        return Err(DataError::InvalidArgument { what, message: format!("fill values must be finite, got {v}") });
    }
    Ok(())
}

/// Channel `c`'s value of a per-channel list that may hold one value for all.
fn fill_at(values: &[f32], c: usize) -> f32 {
    if values.len() == 1 { values[0] } else { values[c] }
}

/// `[0.1307, 0.3081]`, for `Display`.
fn list(values: &[f32]) -> String {
    format!("[{}]", values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Augment {
        Augment::new()
            .then(RandomCrop::new(4).padding(1))
            .then(RandomHorizontalFlip::new(0.5))
            .then(RandomAffine::new(20.0).translate(0.2, 0.2).scale(0.8, 1.2))
    }

    #[test]
    fn non_images_are_refused_clearly() {
        let e = pipeline().output_shape(&[784]).unwrap_err().to_string();
        assert!(e.contains("augmentation needs image samples [C, H, W]") && e.contains("[784]"), "{e}");
        assert!(e.contains("CSV rows or flattened images"), "{e}");
        assert!(pipeline().output_shape(&[2, 5]).is_err());
        assert!(pipeline().output_shape(&[1, 0, 4]).unwrap_err().to_string().contains("empty"));
        let e = pipeline().output_shape(&[1, 1, 1]).unwrap_err().to_string();
        assert!(e.contains("larger than the padded image 3×3") && e.contains("transform 1 of the pipeline"), "{e}");
        assert!(pipeline().apply(&[0.0; 15], &[1, 4, 4], &mut Generator::new(0)).is_err());
        let huge = Augment::new().then(RandomCrop::new(1 << 20).padding(1 << 20));
        assert!(huge.output_shape(&[1, 2, 2]).unwrap_err().to_string().contains("more than 268435456 values"));
    }

    #[test]
    fn shapes_chain_through_the_pipeline() {
        let a = Augment::new().then(RandomCrop::rect(3, 5).padding(2)).then(Normalize::new(vec![0.5], vec![2.0]));
        assert_eq!(a.output_shape(&[2, 4, 4]).unwrap(), [2, 3, 5]);
        let out = a.apply(&[1.0; 32], &[2, 4, 4], &mut Augment::generator(1, 2, 3)).unwrap();
        assert_eq!(out.len(), 30);
        // Every value is a padded 0 or an image 1, normalised.
        assert!(out.iter().all(|&v| v == -0.25 || v == 0.25), "{out:?}");
        assert_eq!(Augment::new().apply(&[3.0; 4], &[1, 2, 2], &mut Generator::new(0)).unwrap(), [3.0; 4]);
    }

    #[test]
    fn generators_differ_by_seed_epoch_and_index_and_from_the_shuffle() {
        let draw = |mut g: Generator| (0..4).map(|_| g.next_u32()).collect::<Vec<_>>();
        let base = draw(Augment::generator(1, 2, 3));
        assert_eq!(base, draw(Augment::generator(1, 2, 3)));
        for other in [Augment::generator(0, 2, 3), Augment::generator(1, 3, 3), Augment::generator(1, 2, 4)] {
            assert_ne!(base, draw(other));
        }
        assert_ne!(draw(Augment::generator(1, 0, 0)), draw(Generator::new(1).fork(0)));
    }

    #[test]
    fn after_normalize_equals_augmenting_raw_pixels_then_normalising() {
        let (mean, std) = ([0.1307f32], [0.3081f32]);
        let raw: Vec<f32> = (0..2 * 6 * 5).map(|v| ((v * 37) % 11) as f32 / 10.0).collect();
        let shape = [2, 6, 5];
        for mode in PadMode::ALL {
            let a = Augment::new()
                .then(RandomCrop::new(5).padding(2).padding_mode(mode))
                .then(RandomHorizontalFlip::new(0.5))
                .then(RandomAffine::new(30.0).translate(0.3, 0.3).scale(0.7, 1.3));
            let then_normalise = a.clone().then(Normalize::new(mean.to_vec(), std.to_vec()));
            let on_normalised = a.after_normalize(&mean, &std).unwrap();
            let mut normalised = raw.clone();
            crate::transforms::normalize_sample(&mut normalised, 2, &mean, &std);
            for index in 0..20 {
                let want = then_normalise.apply(&raw, &shape, &mut Augment::generator(4, 0, index)).unwrap();
                let got = on_normalised.apply(&normalised, &shape, &mut Augment::generator(4, 0, index)).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{mode}: {g} vs {w}");
                }
            }
        }
        // Per channel: the fill 0 becomes −mean/std of each channel.
        let a = Augment::new().then(RandomCrop::new(2)).after_normalize(&[0.5, 1.0], &[0.5, 2.0]).unwrap();
        let Transform::RandomCrop(c) = &a.transforms()[0] else { unreachable!() };
        assert_eq!(c.fill, [-1.0, -0.5]);
        let twice = Augment::new().then(Normalize::new(vec![0.0], vec![1.0]));
        assert!(twice.after_normalize(&[0.0], &[1.0]).unwrap_err().to_string().contains("normalised twice"));
        assert!(pipeline().after_normalize(&[0.0], &[0.0]).is_err());
    }

    #[test]
    fn display_reads_like_torchvision() {
        assert_eq!(
            pipeline().to_string(),
            "RandomCrop(4, padding=1) → RandomHorizontalFlip(p=0.5) → RandomAffine(degrees=20, translate=(0.2, 0.2), scale=(0.8, 1.2))"
        );
        assert_eq!(Augment::new().to_string(), "identity");
    }
}
