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

    /// An IDX array whose `dims` do not describe its data: no dimensions at all (an IDX array's
    /// first dimension is its record count), or a product of the dims other than the number of
    /// values held. Files are checked as they are read; this is an array assembled in memory.
    #[error("`{}`: {}", .path.display(), idx_dims_problem(.dims, *.values))]
    IdxDims {
        /// The file the array stands for (as given for messages).
        path: PathBuf,
        /// The array's dims.
        dims: Vec<usize>,
        /// How many values its data holds.
        values: usize,
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

    /// A gzip-compressed IDX file whose header declares more data than this machine's memory:
    /// inflating it could only end in a gzip bomb's worth of zeros or an aborted process.
    #[error(
        "`{}`: IDX header declares {} ({declared_bytes} bytes once decompressed), more than this \
         machine's {memory_bytes} bytes of memory; the header is corrupt or the file is not a data \
         set (a gzip bomb) — re-download it",
        .path.display(),
        describe(.dims, .element)
    )]
    LargerThanMemory {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<usize>,
        /// The element type's name.
        element: &'static str,
        /// The payload's declared size.
        declared_bytes: u64,
        /// This machine's memory.
        memory_bytes: u64,
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

    // ---- CSV files -------------------------------------------------------------------------
    /// A CSV file holds no data rows (it is empty, or holds only a header).
    #[error(
        "`{}`: {}; a CSV data set needs at least one data row of features and a label",
        .path.display(),
        if *.header_only { "the file holds a header row but no data rows" } else { "the file holds no rows" }
    )]
    CsvEmpty {
        /// The file.
        path: PathBuf,
        /// Whether a header row was found (the file is not entirely empty).
        header_only: bool,
    },

    /// A CSV row has a different number of fields from the first row.
    #[error(
        "`{}`: line {line} has {found} fields but the first row (line {first_line}) has {expected}; \
         every row needs the same number of fields — check for a missing value, a stray \
         delimiter or an unquoted comma inside a value",
        .path.display()
    )]
    CsvRagged {
        /// The file.
        path: PathBuf,
        /// The 1-based line on which the offending row starts.
        line: u64,
        /// The 1-based line of the first row, which sets the field count.
        first_line: u64,
        /// Fields in the first row.
        expected: usize,
        /// Fields in the offending row.
        found: usize,
    },

    /// A feature cell of a CSV file is not a finite number.
    #[error(
        "`{}`: line {line}, column {}: {} is not a finite number; every feature cell must be a \
         number such as 0, 3.5 or -1e-3 (fill in or drop missing values before loading)",
        .path.display(),
        column_label(*.column, .column_name.as_deref()),
        cell_label(.value)
    )]
    CsvNotNumeric {
        /// The file.
        path: PathBuf,
        /// The 1-based line holding the cell.
        line: u64,
        /// The 1-based column (field) number.
        column: usize,
        /// The column's name from the header, if the file has one.
        column_name: Option<String>,
        /// The cell's text (lossily decoded if it was not UTF-8).
        value: String,
    },

    /// A label cell of a CSV file is not a non-negative integer.
    #[error(
        "`{}`: line {line}, label column {}: {} is not a class index ({reason}); labels must be \
         non-negative integers such as 0, 3 or 3.0",
        .path.display(),
        column_label(*.column, .column_name.as_deref()),
        cell_label(.value)
    )]
    CsvInvalidLabel {
        /// The file.
        path: PathBuf,
        /// The 1-based line holding the label.
        line: u64,
        /// The 1-based column number of the label column.
        column: usize,
        /// The label column's name from the header, if the file has one.
        column_name: Option<String>,
        /// The cell's text.
        value: String,
        /// Why it is not a label: "negative", "not an integer", ...
        reason: String,
    },

    /// A CSV label is not below the number of classes the caller declared.
    #[error(
        "`{}`: line {line}: label {label} is outside 0..{num_classes}; either the file does not \
         belong to this {num_classes}-class data set or num_classes is too small",
        .path.display()
    )]
    CsvLabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The 1-based line holding the label.
        line: u64,
        /// The label found.
        label: u64,
        /// The declared number of classes.
        num_classes: usize,
    },

    /// The requested label column does not exist in the CSV file.
    #[error("`{}`: {message}", .path.display())]
    CsvLabelColumn {
        /// The file.
        path: PathBuf,
        /// What was asked for, what exists, and what to do.
        message: String,
    },

    /// A row of a CSV file could not be read (an I/O error mid-file, for instance).
    #[error("`{}`: line {line}: cannot read the CSV row: {source}", .path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The 1-based line where reading stopped.
        line: u64,
        /// The CSV reader's error.
        source: csv::Error,
    },

    // ---- Image folders ---------------------------------------------------------------------
    /// An image folder has no class sub-folders.
    #[error(
        "`{}`: no class folders found; an image folder data set needs one sub-folder per class \
         (e.g. `{}/cat/001.png`, `{}/dog/002.jpg`)",
        .root.display(), .root.display(), .root.display()
    )]
    NoClasses {
        /// The data set's root folder.
        root: PathBuf,
    },

    /// A class folder holds no PNG or JPEG file.
    #[error(
        "`{}`: class folder `{class}` holds no PNG or JPEG images (.png, .jpg, .jpeg); every \
         class needs at least one image — remove the folder or add its images",
        .root.display()
    )]
    EmptyClass {
        /// The data set's root folder.
        root: PathBuf,
        /// The class (sub-folder) name.
        class: String,
    },

    /// An image file could not be decoded.
    #[error(
        "`{}`: cannot decode the image: {source}; the file is corrupt, truncated or not really \
         a PNG/JPEG — re-export it or delete it",
        .path.display()
    )]
    ImageDecode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },

    /// An image's header declares more pixel values than strata will decode.
    #[error(
        "`{}`: the image header declares {width}x{height} pixels (width x height) with {channels} \
         channel(s), {} values, more than the limit of {max}; the header is corrupt or the image \
         is far too large for a training sample — downscale it first",
        .path.display(),
        *.width as u64 * *.height as u64 * *.channels as u64
    )]
    ImageTooLarge {
        /// The image file.
        path: PathBuf,
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// Channels per pixel that would be produced.
        channels: usize,
        /// The most values (width × height × channels) accepted.
        max: u64,
    },

    /// An image folder whose images, decoded, would take more than this machine's memory: found
    /// from the first image's header (or the resize target) before any is decoded (a few MB of
    /// compressed PNGs can decode to gigabytes).
    #[error(
        "`{}`: {images} images of {per_image} values each ({}'s size, or the resize target) take \
         {bytes} bytes as f32, more than this machine's {memory} bytes of memory; resize them \
         smaller (a `resize` option), or load fewer images",
        .root.display(),
        .first.display()
    )]
    ImageFolderTooLarge {
        /// The folder.
        root: PathBuf,
        /// The first image, whose decoded size every image has (or is resized to).
        first: PathBuf,
        /// How many images the folder holds.
        images: usize,
        /// Values per decoded image.
        per_image: usize,
        /// What they take together, in bytes.
        bytes: u128,
        /// This machine's memory, in bytes.
        memory: u64,
    },

    /// An image file larger than any image strata decodes: read whole, it could exhaust memory
    /// before its header is even looked at (a disk image or a sparse file with an image's name).
    #[error(
        "`{}`: the file holds {bytes} bytes, more than the {max} bytes an image strata decodes may \
         take; it is not a training image (a misnamed disk image or archive?) — move it out of the folder",
        .path.display()
    )]
    ImageFileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes (at least; a file that grows while read counts what was read).
        bytes: u64,
        /// The most bytes accepted.
        max: u64,
    },

    /// A class folder of an image folder whose name is not UTF-8: it cannot be named as a class
    /// (two such names would read the same), so it is refused rather than renamed.
    #[error(
        "`{}`: a class folder whose name is not valid UTF-8 (shown with � for the bytes that are \
         not); class names are stored and printed as text, and two such folders would get the same \
         name — rename the folder",
        .path.display()
    )]
    ClassNameNotUtf8 {
        /// The folder.
        path: PathBuf,
    },

    /// Two images of one image folder differ in size and no resize was requested.
    #[error(
        "`{}` is {width}x{height} pixels (width x height) but `{}`, the first image, is \
         {first_width}x{first_height}; every image must have the same size — resize the files, or \
         resize them as they are read (`size = [{first_height}, {first_width}]` under [data] in a \
         strata run file; `ImageFolderOptions::resize` in the API)",
        .path.display(),
        .first_path.display()
    )]
    ImageSizeMismatch {
        /// The first image whose size differs.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The first image loaded, which set the expected size.
        first_path: PathBuf,
        /// The first image's width.
        first_width: u32,
        /// The first image's height.
        first_height: u32,
    },
    /// The training and test images of an MNIST-style directory differ in shape (the same
    /// number of pixels laid out differently still trains a model on one layout and tests it
    /// on another).
    #[error(
        "`{}` holds images of shape {test_shape:?} but `{}` holds {train_shape:?}: the test images must have \
         the training images' shape; check that both files come from the same data set",
        .test_path.display(),
        .train_path.display()
    )]
    SplitShapeMismatch {
        /// The training images' file.
        train_path: PathBuf,
        /// One training image's shape.
        train_shape: Vec<usize>,
        /// The test images' file.
        test_path: PathBuf,
        /// One test image's shape.
        test_shape: Vec<usize>,
    },
}

/// "3 (`pixel_2`)" when the column has a header name, else "3".
fn column_label(column: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{column} (`{n}`)"),
        None => column.to_string(),
    }
}

/// "`abc`" for a cell's text, or "an empty cell" when there is none.
fn cell_label(value: &str) -> String {
    if value.trim().is_empty() { "an empty cell".to_string() } else { format!("`{value}`") }
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

/// What is wrong with an IDX array's `dims` for `values` values, for [`DataError::IdxDims`].
fn idx_dims_problem(dims: &[usize], values: usize) -> String {
    if dims.is_empty() {
        return "the IDX array has no dimensions; the first must be the record count (MNIST's images: \
                [60000, 28, 28], its labels: [60000])"
            .into();
    }
    let described = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let described = described.map_or_else(|| "more values than memory can hold".to_string(), |n| format!("{n} values"));
    format!(
        "the IDX array's dims {dims:?} describe {described}, but its data holds {values}; make the product of the dims \
         the number of values"
    )
}
