//! Image-folder data sets through the public API, on PNG/JPEG files written into a temporary
//! folder with the `image` crate: round trips, class ordering, skipped files, and crafted bad
//! folders (corrupt file, mixed sizes, empty class, lying header), each a clear error naming
//! the file or folder.

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use strata_data::{DataError, ImageFolder, ImageFolderOptions, MAX_IMAGE_VALUES, compute_stats, load_image};

fn gray(opts_resize: Option<(u32, u32)>) -> ImageFolderOptions {
    ImageFolderOptions { channels: 1, resize: opts_resize }
}

/// Writes a `w`x`h` gray PNG whose pixel (x, y) is `base + x + w * y`.
fn gray_png(path: &Path, w: u32, h: u32, base: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(w, h, |x, y| Luma([base + (x + w * y) as u8])).save(path).unwrap();
}

/// A folder `dogs/` (2 images), `cats/` (1 image in a sub-folder), plus clutter to skip.
fn small_folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pets");
    gray_png(&root.join("dogs/b.png"), 3, 2, 100);
    gray_png(&root.join("dogs/a.PNG"), 3, 2, 50);
    gray_png(&root.join("cats/nested/x.png"), 3, 2, 0);
    std::fs::write(root.join("dogs/README.txt"), "not an image").unwrap();
    std::fs::write(root.join("dogs/.DS_Store"), [0u8, 1, 2]).unwrap();
    std::fs::write(root.join("dogs/._a.png"), "AppleDouble junk with an image name").unwrap();
    std::fs::create_dir_all(root.join(".ipynb_checkpoints")).unwrap();
    std::fs::write(root.join("labels.csv"), "stray file at the root").unwrap();
    (dir, root)
}

#[test]
fn round_trip_gray_pngs_with_sorted_classes_and_skipped_clutter() {
    let (_dir, root) = small_folder();
    let f = ImageFolder::load(&root, &gray(None)).unwrap();
    assert_eq!(f.classes, vec!["cats", "dogs"]);
    assert_eq!(f.dataset.num_classes, 2);
    assert_eq!(f.dataset.labels, vec![0, 1, 1]);
    assert_eq!(f.dataset.sample_shape, vec![1, 2, 3]);
    let names: Vec<String> = f.paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["x.png", "a.PNG", "b.png"]);
    // Exact pixels, scaled by 1/255: dogs/a.PNG holds 50..56 row-major.
    let (x, y) = f.dataset.sample(1).unwrap();
    assert_eq!(y, 1);
    let expect: Vec<f32> = (50..56).map(|v| v as f32 / 255.0).collect();
    assert_eq!(x, &expect[..]);
}

#[test]
fn rgb_is_channels_first_and_gray_as_three_channels_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("c")).unwrap();
    // 2x1 image: a red pixel then a blue one.
    RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]).unwrap().save(root.join("c/rgb.png")).unwrap();
    let f = ImageFolder::load(root, &ImageFolderOptions::default()).unwrap();
    assert_eq!(f.dataset.sample_shape, vec![3, 1, 2]);
    assert_eq!(f.dataset.features, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    // As grayscale, PIL's convert("L") values: red 76, blue 29.
    let g = ImageFolder::load(root, &gray(None)).unwrap();
    assert_eq!(g.dataset.features, vec![76.0 / 255.0, 29.0 / 255.0]);
    // A gray file read as RGB gives three equal planes.
    let (_d2, root2) = small_folder();
    let f = ImageFolder::load(&root2, &ImageFolderOptions::default()).unwrap();
    let (x, _) = f.dataset.sample(0).unwrap();
    assert_eq!(x[..6], x[6..12]);
    assert_eq!(x[..6], x[12..]);
}

#[test]
fn jpeg_decodes_close_to_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flat.jpg");
    RgbImage::from_pixel(8, 8, Rgb([200, 200, 200])).save_with_format(&path, ImageFormat::Jpeg).unwrap();
    let (values, shape) = load_image(&path, &gray(None)).unwrap();
    assert_eq!(shape, vec![1, 8, 8]);
    assert!(values.iter().all(|&v| (v - 200.0 / 255.0).abs() < 3.0 / 255.0), "{values:?}");
}

#[test]
fn resize_makes_mixed_sizes_loadable() {
    let dir = tempfile::tempdir().unwrap();
    gray_png(&dir.path().join("a/1.png"), 4, 4, 0);
    gray_png(&dir.path().join("b/2.png"), 6, 2, 0);
    let f = ImageFolder::load(dir.path(), &gray(Some((3, 5)))).unwrap();
    assert_eq!(f.dataset.sample_shape, vec![1, 3, 5]);
    assert_eq!(f.dataset.features.len(), 2 * 15);
    assert!(f.dataset.features.iter().all(|v| (0.0..=1.0).contains(v)));
    let (mean, std) = compute_stats(&f.dataset).unwrap();
    assert_eq!((mean.len(), std.len()), (1, 1));
}

#[test]
fn mixed_sizes_name_the_file_and_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    gray_png(&dir.path().join("a/1.png"), 4, 3, 0);
    gray_png(&dir.path().join("b/2.png"), 5, 3, 0);
    let e = ImageFolder::load(dir.path(), &gray(None)).unwrap_err();
    assert!(
        matches!(e, DataError::ImageSizeMismatch { width: 5, height: 3, first_width: 4, first_height: 3, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("b/2.png` is 5x3") && msg.contains("a/1.png`, the first image, is 4x3"), "{msg}");
    assert!(msg.contains("resize"), "{msg}");
}

#[test]
fn corrupt_png_names_the_file() {
    let (_dir, root) = small_folder();
    let good = std::fs::read(root.join("dogs/b.png")).unwrap();
    // A real PNG signature and header, then the data cut short.
    std::fs::write(root.join("dogs/c.png"), &good[..good.len() - 20]).unwrap();
    let e = ImageFolder::load(&root, &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::ImageDecode { .. }), "{e:?}");
    assert!(e.to_string().contains("dogs/c.png`: cannot decode the image"), "{e}");
    // Bytes that are no image at all, under an image name.
    std::fs::write(root.join("dogs/c.png"), "<html>404</html>").unwrap();
    let e = ImageFolder::load(&root, &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::ImageDecode { .. }) && e.to_string().contains("dogs/c.png`"), "{e}");
}

#[test]
fn lying_header_is_refused_before_decoding() {
    // A 65-byte PNG whose IHDR claims 60000x60000 pixels (3.6 GB decoded), valid CRCs, no real data.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, no interlace
    // The decoder reads the header up to the first IDAT chunk, so give it a (tiny) one.
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01".to_vec();
    for chunk in [ihdr, idat, b"IEND".to_vec()] {
        png.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/huge.png"), &png).unwrap();
    let e = ImageFolder::load(dir.path(), &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::ImageTooLarge { width: 60_000, height: 60_000, channels: 1, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("huge.png`") && msg.contains(&MAX_IMAGE_VALUES.to_string()), "{msg}");
}

/// PNG's CRC-32 (IEEE), bit by bit: enough for one chunk in a test.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn empty_class_and_no_classes() {
    let (_dir, root) = small_folder();
    std::fs::create_dir_all(root.join("birds")).unwrap();
    std::fs::write(root.join("birds/notes.txt"), "no images here").unwrap();
    let e = ImageFolder::load(&root, &gray(None)).unwrap_err();
    assert!(matches!(&e, DataError::EmptyClass { class, .. } if class == "birds"), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("pets`: class folder `birds` holds no PNG or JPEG images"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), "loose file, no class folders").unwrap();
    let e = ImageFolder::load(dir.path(), &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::NoClasses { .. }) && e.to_string().contains("no class folders"), "{e}");

    let e = ImageFolder::load(&dir.path().join("missing"), &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("missing`"), "{e}");
}

#[test]
fn bad_options_are_errors_not_panics() {
    let (_dir, root) = small_folder();
    let e = ImageFolder::load(&root, &ImageFolderOptions { channels: 4, resize: None }).unwrap_err();
    assert!(e.to_string().contains("channels must be 1 (grayscale) or 3 (RGB), got 4"), "{e}");
}

/// Two class folders whose names are not UTF-8 both became the class `�` (lossy conversion):
/// two classes of one name, which predictions and checkpoints cannot tell apart.
#[cfg(unix)]
#[test]
fn class_folders_whose_names_are_not_utf8_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    for name in [b"caf\xe9".as_slice(), b"caf\xe8"] {
        gray_png(&dir.path().join(std::ffi::OsStr::from_bytes(name)).join("a.png"), 2, 2, 0);
    }
    let e = ImageFolder::load(dir.path(), &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::ClassNameNotUtf8 { .. }), "{e:?}");
    assert!(
        e.to_string().ends_with(
            "caf�`: a class folder whose name is not valid UTF-8 (shown with � for the bytes that are not); class names are stored and printed as text, and two such folders would get the same name — rename the folder"
        ),
        "{e}"
    );
    // An image file whose own name is not UTF-8 is fine: only class names are text.
    let dir = tempfile::tempdir().unwrap();
    gray_png(&dir.path().join("a").join(std::ffi::OsStr::from_bytes(b"\xff.png")), 2, 2, 0);
    assert_eq!(ImageFolder::load(dir.path(), &gray(None)).unwrap().paths.len(), 1);
}

/// A file with an image's name larger than any image (here a sparse 2 GiB + 1 byte file, no
/// disk used) was read whole before its header was looked at: a sparse terabyte exhausted
/// memory. It is refused unread.
#[test]
fn an_image_file_larger_than_any_image_is_refused_unread() {
    let (_dir, root) = small_folder();
    let huge = root.join("dogs/huge.png");
    std::fs::File::create(&huge).unwrap().set_len((1 << 31) + 1).unwrap();
    let start = std::time::Instant::now();
    let e = ImageFolder::load(&root, &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::ImageFileTooLarge { bytes: 2_147_483_649, max: 2_147_483_648, .. }), "{e:?}");
    assert!(
        e.to_string().ends_with(
            "huge.png`: the file holds 2147483649 bytes, more than the 2147483648 bytes an image strata decodes may take; it is not a training image (a misnamed disk image or archive?) — move it out of the folder"
        ),
        "{e}"
    );
    let e = load_image(&huge, &gray(None)).unwrap_err();
    assert!(matches!(e, DataError::ImageFileTooLarge { .. }), "{e:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "read without reading: {:?}", start.elapsed());
}

/// A folder whose images, decoded (here: resized) to the first one's size, would take more than
/// the machine's memory is refused before any is decoded, the folder, count and sizes named.
#[test]
fn a_folder_larger_than_memory_is_refused_before_decoding() {
    let Some(memory) = strata_core::Device::Cpu.total_memory() else {
        eprintln!("skipped: this machine's memory is unknown");
        return;
    };
    // Each 1×1 PNG resized to 16384×16384 gray: 2^28 values, 1 GiB as f32.
    let images = (memory >> 30) as usize + 1;
    if images > 5000 {
        eprintln!("skipped: {images} images would be needed to exceed this machine's memory");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("a");
    std::fs::create_dir(&class).unwrap();
    for i in 0..images {
        gray_png(&class.join(format!("{i:05}.png")), 1, 1, 7);
    }
    let start = std::time::Instant::now();
    let e = ImageFolder::load(dir.path(), &gray(Some((16384, 16384)))).unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(
        matches!(&e, DataError::ImageFolderTooLarge { images: n, per_image: 268_435_456, memory: m, .. } if *n == images && *m == memory),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{images} images of 268435456 values each")) && msg.contains("more than this machine's"),
        "{msg}"
    );
}
