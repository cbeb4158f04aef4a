//! Fuzz tests of the data readers (issue 14): thousands of mutations of valid IDX files (raw and
//! gzip), CSV files and PNG/JPEG images go through the readers. None may panic, every error
//! names its file, and no input makes a reader allocate more than 64 MiB at once — an image or
//! IDX header that claims billions of elements must be refused before anything is allocated.
//! (`idx/mod.rs` and `tests/csv.rs` also throw purely random bytes at the parsers.)

use proptest::prelude::*;
use std::io::Write;
use strata_core::testing::{RecordingAllocator, mutate, take_largest_allocation};
use strata_data::{CsvOptions, IdxArray, IdxData, ImageFolderOptions, load_image, parse_csv, parse_idx};

#[global_allocator]
static ALLOCATOR: RecordingAllocator = RecordingAllocator;

/// The most one allocation may take while reading a mutated file of a few KiB.
const ALLOCATION_BOUND: usize = 64 << 20;

fn ops() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..5)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Checks a reader's result: an error must name `file`; the largest allocation stays bounded.
fn verdict<T, E: std::fmt::Display>(r: Result<T, E>, file: &str) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let msg = e.to_string();
        prop_assert!(msg.contains(file), "error without the file name {file}: {msg}");
    }
    let largest = take_largest_allocation();
    prop_assert!(largest <= ALLOCATION_BOUND, "an allocation of {largest} bytes");
    Ok(())
}

/// Small valid images (8×6 gray and RGB gradients) encoded as PNG and JPEG.
fn image_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rgb = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 128]));
    let gray = image::GrayImage::from_fn(8, 6, |x, y| image::Luma([(x * 20 + y * 10) as u8]));
    let encode = |img: image::DynamicImage, format| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    vec![
        ("png", encode(rgb.clone().into(), image::ImageFormat::Png)),
        ("png", encode(gray.into(), image::ImageFormat::Png)),
        ("jpg", encode(rgb.into(), image::ImageFormat::Jpeg)),
    ]
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn mutated_images_never_panic_and_name_the_file(which in 0usize..3, ops in ops(), rgb in any::<bool>(), resize in any::<bool>()) {
        let seeds = image_seeds();
        let (ext, seed) = &seeds[which];
        let bytes = mutate(seed, &ops);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("fuzz.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        let options = ImageFolderOptions { channels: if rgb { 3 } else { 1 }, resize: resize.then_some((5, 4)) };
        take_largest_allocation();
        verdict(load_image(&path, &options), "fuzz.")?;
    }

    #[test]
    fn mutated_idx_files_never_panic_and_name_the_file(ops in ops(), gz in any::<bool>(), kind in 0usize..3) {
        let data = match kind {
            0 => IdxData::U8((0..60).collect()),
            1 => IdxData::F32((0..60).map(|v| v as f32).collect()),
            _ => IdxData::I32((0..60).collect()),
        };
        let valid = IdxArray { dims: vec![5, 3, 4], data }.to_bytes();
        let seed = if gz { gzip(&valid) } else { valid };
        let bytes = mutate(&seed, &ops);
        take_largest_allocation();
        verdict(parse_idx(&bytes, "fuzz.idx"), "fuzz.idx")?;
    }

    #[test]
    fn mutated_csv_files_never_panic_and_name_the_file(ops in ops(), gz in any::<bool>(), header in any::<bool>()) {
        let mut text = String::from(if header { "a,b,c,label\n" } else { "" });
        for i in 0..12 {
            text.push_str(&format!("{}.5,{},-{}e-1,{}\n", i, i * 3, i, i % 3));
        }
        let seed = if gz { gzip(text.as_bytes()) } else { text.into_bytes() };
        let bytes = mutate(&seed, &ops);
        take_largest_allocation();
        verdict(parse_csv(&bytes, "fuzz.csv", &CsvOptions::default()), "fuzz.csv")?;
    }
}
