//! The one error type of `strata-data`.
//!
//! Data files come from outside the program (downloads, mounts, hand-made test files), so every
//! failure here is something a user has to act on. Each variant therefore carries what went
//! wrong, where (file, byte count, record index) and, in its message, how to fix it, instead of
//! a bare "invalid data".

use std::io;
use std::path::PathBuf;

/// `Result` with [`DataError`] as the error type.
pub type Result<T> = std::result::Result<T, DataError>;

/// Everything that can go wrong while reading or assembling a data set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An argument outside what the operation accepts.
    #[error("{what}: {message}")]
    InvalidArgument {
        /// The operation.
        what: &'static str,
        /// What was wrong and what is allowed.
        message: String,
    },

    /// The file could not be opened or read.
    #[error("`{}`: cannot read the file: {source}; check that it exists and is readable", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: io::Error,
    },

    /// A gzip-compressed file could not be decompressed.
    #[error(
        "`{}`: gzip decompression failed after {decompressed_bytes} bytes of output: {source}; \
         the .gz file is corrupt or truncated — re-download it",
        .path.display()
    )]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: io::Error,
        /// How many decompressed bytes had been produced before the failure.
        decompressed_bytes: u64,
    },

    /// The file is too short to hold even the IDX header.
    #[error(
        "`{}`: {} only {actual_bytes} bytes but an IDX header needs {needed_bytes}; \
         the file is truncated or not an IDX file — re-download it",
        .path.display(),
        holds(*.gzip)
    )]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Header bytes required (4, or 4 + 4 × dims once the dimension count is known).
        needed_bytes: u64,
        /// Bytes actually available.
        actual_bytes: u64,
        /// Whether the counts are of gzip-decompressed bytes.
        gzip: bool,
    },

    /// The first two bytes are not zero, so this is not an IDX file.
    #[error(
        "`{}`: not an IDX file: it starts with 0x{found:08x}, but IDX files start with two zero \
         bytes, a type code and a dimension count (0x00000803 for MNIST images, 0x00000801 for \
         labels); check that this is the right file and not, say, an HTML error page",
        .path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        found: u32,
    },

    /// Byte 2 of the header is not a known element type.
    #[error(
        "`{}`: unknown IDX element type code 0x{code:02x} in header byte 2; valid codes are \
         0x08 (u8), 0x09 (i8), 0x0B (i16), 0x0C (i32), 0x0D (f32), 0x0E (f64) — the file is \
         corrupt or not an IDX file",
        .path.display()
    )]
    UnknownType {
        /// The file.
        path: PathBuf,
        /// The type code found.
        code: u8,
    },

    /// Byte 3 of the header declares no dimensions or implausibly many.
    #[error(
        "`{}`: IDX header byte 3 declares {dims} dimensions, but strata reads 1 to {max}; \
         the file is corrupt or not an IDX file",
        .path.display(),
        max = crate::idx::MAX_DIMS
    )]
    BadDimCount {
        /// The file.
        path: PathBuf,
        /// The dimension count found.
        dims: u8,
    },

    /// The declared shape's size in bytes does not fit in memory addresses at all.
    #[error(
        "`{}`: IDX header declares shape {dims:?} of {element}, whose size in bytes overflows \
         this platform's address space; the header is corrupt — re-download the file",
        .path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<u64>,
        /// The element type's name.
        element: &'static str,
    },

    /// The payload after the header is shorter than the header declares.
    #[error(
        "`{}`: IDX header declares {} ({expected_bytes} bytes) but the file {} only \
         {actual_bytes} bytes after the header; the file is truncated or not an IDX file — \
         re-download it",
        .path.display(),
        describe(.dims, .element),
        holds(*.gzip)
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<usize>,
        /// The element type's name.
        element: &'static str,
        /// Payload bytes the header declares.
        expected_bytes: u64,
        /// Payload bytes actually present.
        actual_bytes: u64,
        /// Whether the counts are of gzip-decompressed bytes.
        gzip: bool,
    },

    /// The payload after the header is longer than the header declares.
    #[error(
        "`{}`: IDX header declares {} ({expected_bytes} bytes) but the file {} {}{actual_bytes} \
         bytes after the header; the header is wrong or data was appended — re-download it",
        .path.display(),
        describe(.dims, .element),
        holds(*.gzip),
        if *.gzip { "at least " } else { "" }
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<usize>,
        /// The element type's name.
        element: &'static str,
        /// Payload bytes the header declares.
        expected_bytes: u64,
        /// Payload bytes present. For gzip input a lower bound: decompression stops one byte
        /// past the declared size, so a gzip bomb is never inflated in full.
        actual_bytes: u64,
        /// Whether the counts are of gzip-decompressed bytes.
        gzip: bool,
    },

    /// A labels file is not one-dimensional.
    #[error(
        "`{}`: a labels file must be one-dimensional (one label per record), but it has shape \
         {dims:?}; check that images and labels files were not swapped",
        .path.display()
    )]
    LabelsNotVector {
        /// The labels file.
        path: PathBuf,
        /// Its dimensions.
        dims: Vec<usize>,
    },

    /// A labels file holds floating-point values.
    #[error(
        "`{}`: labels must be integers, but the file holds {element} values; check that images \
         and labels files were not swapped",
        .path.display()
    )]
    LabelsNotInteger {
        /// The labels file.
        path: PathBuf,
        /// Its element type's name.
        element: &'static str,
    },

    /// A label is negative or not below the number of classes.
    #[error(
        "`{}`: label record {index} is {label}, outside 0..{num_classes}; the labels file does \
         not belong to this {num_classes}-class data set or is corrupt",
        .path.display()
    )]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// The record (0-based) holding the bad label.
        index: usize,
        /// The label found.
        label: i64,
        /// The number of classes expected.
        num_classes: usize,
    },

    /// The images and labels files disagree on the number of records.
    #[error(
        "`{}` holds {images} images but `{}` holds {labels} labels; the two files must come \
         from the same split (both train-* or both t10k-*)",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Records in the images file.
        images: usize,
        /// Records in the labels file.
        labels: usize,
    },

    /// None of the accepted names of a required file exists in a data directory.
    #[error(
        "`{}`: no `{name}` file found (tried {}); put the four MNIST files \
         (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, \
         t10k-labels-idx1-ubyte, each optionally .gz) in this directory",
        .dir.display(),
        list(.tried)
    )]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// The file's base name.
        name: String,
        /// Every path tried, in order.
        tried: Vec<PathBuf>,
    },
}

/// "holds" or "decompresses to", so byte counts say which bytes they count.
fn holds(gzip: bool) -> &'static str {
    if gzip { "decompresses to" } else { "holds" }
}

/// "60000 records of 28x28 u8" / "60000 u8 values": the header's claim in words.
fn describe(dims: &[usize], element: &str) -> String {
    match dims {
        [] => format!("no {element} values"),
        [n] => format!("{n} {element} values"),
        [n, rest @ ..] => {
            let shape: Vec<String> = rest.iter().map(|d| d.to_string()).collect();
            format!("{n} records of {} {element}", shape.join("x"))
        }
    }
}

/// "`a`, `b`" for a list of paths.
fn list(paths: &[PathBuf]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
    quoted.join(", ")
}
