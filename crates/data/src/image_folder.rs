//! Image classification data sets from a folder with one sub-folder per class, torchvision's
//! `ImageFolder` layout: `root/cat/001.png`, `root/dog/xyz.jpg`, ...
//!
//! Class names are the sub-folder names sorted, so class indices are the same on every machine
//! and match what torchvision assigns to the same folder. PNG and JPEG files are decoded with the
//! `image` crate; each image's header is read first and its size checked (against a cap, and
//! against the first image's size) before any pixel memory is allocated, since a header can
//! claim any size it likes.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader, Limits, imageops::FilterType};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// The most values (width × height × channels) one image may produce: 2^28, a 1 GiB `f32`
/// sample — far beyond any training image, and small enough that a corrupt header claiming
/// 65535×65535 pixels is refused before decoding.
pub const MAX_IMAGE_VALUES: u64 = 1 << 28;

/// The most bytes the decoder may allocate for one image (its working buffers at the file's own
/// colour depth, e.g. 8 bytes per pixel for 16-bit RGBA).
const MAX_DECODE_BYTES: u64 = 1 << 31;

/// File extensions (compared case-insensitively) taken as images; every other file is skipped.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How deep below a class folder images are searched (torchvision walks the whole tree); bounded
/// so a directory cycle made with bind mounts cannot recurse forever.
const MAX_DEPTH: usize = 32;

/// How images become samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// Channels per sample: 1 (grayscale) or 3 (RGB). Alpha is dropped, as PIL's
    /// `convert("RGB")` does. Default 3, what torchvision's `ImageFolder` loads.
    pub channels: usize,
    /// `Some((height, width))` resizes every image to that size (bilinear, torchvision's default
    /// interpolation; `(height, width)` in torchvision's `Resize` order); `None` requires all
    /// images to have the same size.
    pub resize: Option<(u32, u32)>,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        ImageFolderOptions { channels: 3, resize: None }
    }
}

impl ImageFolderOptions {
    /// Checks `channels` is 1 or 3 and a resize target is non-empty and within
    /// [`MAX_IMAGE_VALUES`].
    fn validate(&self) -> Result<()> {
        let err = |message: String| Err(DataError::InvalidArgument { what: "image folder", message });
        if !matches!(self.channels, 1 | 3) {
            return err(format!("channels must be 1 (grayscale) or 3 (RGB), got {}", self.channels));
        }
        if let Some((h, w)) = self.resize {
            if h == 0 || w == 0 {
                return err(format!("resize to ({h}, {w}) (height, width) has no pixels; both must be at least 1"));
            }
            if h as u64 * w as u64 * self.channels as u64 > MAX_IMAGE_VALUES {
                return err(format!(
                    "resize to ({h}, {w}) (height, width) with {} channel(s) exceeds the limit of {MAX_IMAGE_VALUES} \
                     values per image",
                    self.channels
                ));
            }
        }
        Ok(())
    }
}

/// An image-folder data set: the samples and the class names their labels index.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFolder {
    /// The images, `sample_shape == [channels, height, width]`, pixels scaled to `[0, 1]`.
    pub dataset: Dataset,
    /// Class names, sorted; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// The file each sample came from, in sample order (torchvision's `samples`).
    pub paths: Vec<PathBuf>,
}

impl ImageFolder {
    /// Loads every PNG/JPEG under `root/<class>/` (sub-folders included).
    ///
    /// Classes are the non-hidden sub-folders of `root`, sorted by name; samples are ordered by
    /// class, then by path. Files without a `.png`, `.jpg` or `.jpeg` extension (a README,
    /// `.DS_Store`) and hidden files and folders (names starting with `.`, such as macOS's
    /// `._x.png` resource forks or `.ipynb_checkpoints`) are skipped.
    ///
    /// Errors name the folder or file: no class folders, a class folder without images, a file
    /// that cannot be read or decoded, an image whose header declares more than
    /// [`MAX_IMAGE_VALUES`] values, and — when `options.resize` is `None` — the first image whose
    /// size differs from the first image's, with both sizes.
    pub fn load(root: &Path, options: &ImageFolderOptions) -> Result<ImageFolder> {
        options.validate()?;
        let mut classes: Vec<(String, PathBuf)> = Vec::new();
        for entry in read_dir(root)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `Path::is_dir` follows symlinks, so a class folder may be a link to elsewhere.
            if !name.starts_with('.') && entry.path().is_dir() {
                if entry.file_name().to_str().is_none() {
                    return Err(DataError::ClassNameNotUtf8 { path: entry.path() });
                }
                classes.push((name, entry.path()));
            }
        }
        if classes.is_empty() {
            return Err(DataError::NoClasses { root: root.to_path_buf() });
        }
        classes.sort();

        // Gather every file first, so an empty class is reported before minutes of decoding.
        let mut files: Vec<(usize, PathBuf)> = Vec::new();
        for (label, (class, dir)) in classes.iter().enumerate() {
            let mut found = Vec::new();
            find_images(dir, 0, &mut found)?;
            if found.is_empty() {
                return Err(DataError::EmptyClass { root: root.to_path_buf(), class: class.clone() });
            }
            found.sort();
            files.extend(found.into_iter().map(|p| (label, p)));
        }

        let mut features = Vec::new();
        let mut labels = Vec::with_capacity(files.len());
        let mut paths = Vec::with_capacity(files.len());
        // Without a resize, the first image fixes the size every other must have.
        let mut first: Option<(PathBuf, u32, u32)> = None;
        let mut sample_shape = Vec::new();
        let images = files.len();
        let memory = strata_core::Device::Cpu.total_memory();
        for (label, path) in files {
            let bytes = read_image_file(&path)?;
            let (width, height) = dimensions(&bytes, &path, options.channels)?;
            if options.resize.is_none() {
                match &first {
                    None => first = Some((path.clone(), width, height)),
                    Some((first_path, fw, fh)) if (*fw, *fh) != (width, height) => {
                        return Err(DataError::ImageSizeMismatch {
                            path,
                            width,
                            height,
                            first_path: first_path.clone(),
                            first_width: *fw,
                            first_height: *fh,
                        });
                    }
                    Some(_) => {}
                }
            }
            // Every image becomes the first one's size (resized, or refused above): its header
            // tells what they take together, before any is decoded.
            if labels.is_empty()
                && let Some(memory) = memory
            {
                let (h, w) = options.resize.unwrap_or((height, width));
                let per_image = options.channels * h as usize * w as usize;
                let bytes = images as u128 * per_image as u128 * 4;
                if bytes > u128::from(memory) {
                    return Err(DataError::ImageFolderTooLarge {
                        root: root.to_path_buf(),
                        first: path,
                        images,
                        per_image,
                        bytes,
                        memory,
                    });
                }
            }
            let (values, shape) = decode(&bytes, &path, options)?;
            features.extend_from_slice(&values);
            sample_shape = shape;
            labels.push(label);
            paths.push(path);
        }
        let dataset = Dataset { features, labels, sample_shape, num_classes: classes.len() };
        Ok(ImageFolder { dataset, classes: classes.into_iter().map(|(name, _)| name).collect(), paths })
    }
}

/// Loads one PNG/JPEG file as a sample the way [`ImageFolder::load`] does (for prediction on a
/// single image): the values, `[channels, height, width]` row-major, scaled to `[0, 1]`, and that
/// shape. Errors name the file.
pub fn load_image(path: &Path, options: &ImageFolderOptions) -> Result<(Vec<f32>, Vec<usize>)> {
    options.validate()?;
    let bytes = read_image_file(path)?;
    dimensions(&bytes, path, options.channels)?;
    decode(&bytes, path, options)
}

/// The bytes of an image file, refused unread when it holds more than [`MAX_DECODE_BYTES`]
/// (no PNG or JPEG within the decoder's limits is that large): `std::fs::read` would allocate
/// whatever a file, a sparse one included, claims.
fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io_err = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let too_large = |bytes| DataError::ImageFileTooLarge { path: path.to_path_buf(), bytes, max: MAX_DECODE_BYTES };
    let len = file.metadata().map_err(io_err)?.len();
    if len > MAX_DECODE_BYTES {
        return Err(too_large(len));
    }
    // The length is a hint (a file may grow while read): read at most one byte past the limit.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_DECODE_BYTES + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > MAX_DECODE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The entries of a directory, with errors naming it.
fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let io_err = |source| DataError::Io { path: dir.to_path_buf(), source };
    std::fs::read_dir(dir).map_err(io_err)?.map(|e| e.map_err(io_err)).collect()
}

/// Appends the image files under `dir` (recursively, skipping hidden entries) to `out`.
fn find_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in read_dir(dir)? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Links to folders are not followed below the class level: that is how cycles happen.
        let is_real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_real_dir {
            if depth < MAX_DEPTH {
                find_images(&path, depth + 1, out)?;
            }
        } else if is_image_name(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether the file name has one of [`IMAGE_EXTENSIONS`].
fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// An `ImageReader` over `bytes` with the format guessed from the content (not the extension,
/// which lies as often as not) and decoding limits set.
fn reader(bytes: &[u8]) -> ImageReader<Cursor<&[u8]>> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    // Guessing only reads from the in-memory cursor, which cannot fail; on the impossible
    // failure the format stays unknown and decoding reports it.
    if let Ok(guessed) = ImageReader::new(Cursor::new(bytes)).with_guessed_format() {
        reader = guessed;
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader
}

/// The `(width, height)` the image header declares, refused if it would produce more than
/// [`MAX_IMAGE_VALUES`] values with `channels` channels. Reads only the header.
fn dimensions(bytes: &[u8], path: &Path, channels: usize) -> Result<(u32, u32)> {
    let (width, height) = reader(bytes)
        .into_dimensions()
        .map_err(|source| DataError::ImageDecode { path: path.to_path_buf(), source })?;
    if width as u64 * height as u64 * channels as u64 > MAX_IMAGE_VALUES {
        return Err(DataError::ImageTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            channels,
            max: MAX_IMAGE_VALUES,
        });
    }
    Ok((width, height))
}

/// Decodes, resizes if asked, and converts to `channels` planes scaled to `[0, 1]`.
fn decode(bytes: &[u8], path: &Path, options: &ImageFolderOptions) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut img =
        reader(bytes).decode().map_err(|source| DataError::ImageDecode { path: path.to_path_buf(), source })?;
    if let Some((h, w)) = options.resize
        && (img.width(), img.height()) != (w, h)
    {
        img = img.resize_exact(w, h, FilterType::Triangle);
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let values = if options.channels == 3 { rgb_planes(&img) } else { gray_plane(&img) };
    Ok((values, vec![options.channels, h, w]))
}

/// RGB, channels first: `[3, H, W]` from the decoder's interleaved `[H, W, 3]`.
fn rgb_planes(img: &DynamicImage) -> Vec<f32> {
    // `to_rgb32f` scales 8-bit values by a true division by 255, the same as IDX pixels.
    let rgb = img.to_rgb32f();
    let hw = rgb.width() as usize * rgb.height() as usize;
    let mut out = vec![0.0; 3 * hw];
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        out[i] = px[0];
        out[hw + i] = px[1];
        out[2 * hw + i] = px[2];
    }
    out
}

/// Grayscale `[1, H, W]`. A gray image keeps its values; a colour image is converted with PIL's
/// `convert("L")` arithmetic (ITU-R 601-2 luma in 16-bit fixed point, rounded to 8 bits), so a
/// model sees the same pixels it would under torchvision's `Grayscale()`.
fn gray_plane(img: &DynamicImage) -> Vec<f32> {
    if !img.color().has_color() {
        return img.to_luma32f().into_raw();
    }
    img.to_rgb8()
        .as_raw()
        .chunks_exact(3)
        .map(|px| {
            let l = (px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16;
            l as f32 / 255.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let bad = [
            ImageFolderOptions { channels: 2, resize: None },
            ImageFolderOptions { channels: 1, resize: Some((0, 4)) },
            ImageFolderOptions { channels: 3, resize: Some((1 << 15, 1 << 15)) },
        ];
        for o in bad {
            assert!(matches!(o.validate(), Err(DataError::InvalidArgument { .. })), "{o:?}");
        }
        assert!(ImageFolderOptions::default().validate().is_ok());
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(is_image_name(Path::new("a/b.PNG")));
        assert!(is_image_name(Path::new("b.JpEg")));
        assert!(!is_image_name(Path::new("README")));
        assert!(!is_image_name(Path::new("x.gif")));
    }

    #[test]
    fn gray_conversion_matches_pil() {
        // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L").getpixel((0, 0)) == 76,
        // (0, 255, 0) -> 150, (0, 0, 255) -> 29, (10, 20, 30) -> 18.
        let img = image::RgbImage::from_raw(4, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]).unwrap();
        let g = gray_plane(&DynamicImage::ImageRgb8(img));
        let expect: Vec<f32> = [76u8, 150, 29, 18].iter().map(|&v| v as f32 / 255.0).collect();
        assert_eq!(g, expect);
    }
}
