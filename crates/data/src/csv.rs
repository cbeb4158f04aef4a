//! Labelled numeric data sets from CSV files (raw or gzip): one sample per row, one column of
//! integer class labels, every other column a feature.
//!
//! The file is streamed through the `csv` crate row by row and every cell is checked as it is
//! read, so an error names the file, the 1-based line a text editor shows and the column (by
//! number and, when the file has a header, by name). Nothing is reserved from a guess: memory
//! grows only with rows that are really there, and labels are capped at [`MAX_CLASSES`] so a
//! stray huge label cannot make later per-class bookkeeping allocate billions of counters.
//!
//! Compression is detected from the gzip magic bytes `1f 8b`, not from the file name, as for
//! IDX files.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flate2::read::MultiGzDecoder;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// The largest number of classes a CSV file may imply (`max label + 1`) when the caller does not
/// give `num_classes`: 2^20, far above any real classification task (ImageNet-21k has 21,841),
/// yet small enough that a per-class count vector stays a few megabytes.
pub const MAX_CLASSES: usize = 1 << 20;

/// The first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Cell text longer than this is cut in error messages, so a binary file read as CSV does not
/// produce a megabyte-long message.
const MAX_SHOWN_CELL: usize = 40;

/// Which CSV column holds the class labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelColumn {
    /// The column with this header name (the file must have a header).
    Name(String),
    /// The column at this 0-based index; negative counts from the end, so `-1` is the last
    /// column (Python's convention).
    Index(isize),
}

impl LabelColumn {
    /// The last column, where most CSV data sets (scikit-learn's digits among them) keep the label.
    pub const LAST: LabelColumn = LabelColumn::Index(-1);
}

impl Default for LabelColumn {
    /// [`LabelColumn::LAST`].
    fn default() -> Self {
        LabelColumn::LAST
    }
}

impl FromStr for LabelColumn {
    type Err = DataError;

    /// `"3"` and `"-1"` are indices, `"last"` is `Index(-1)`, anything else is a column name
    /// (so a command-line `--label-column label` and `--label-column 0` both do what they say).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DataError::InvalidArgument {
                what: "label column",
                message: "is empty; give a column name, a 0-based index (negative counts from the end) or `last`"
                    .into(),
            });
        }
        if s.eq_ignore_ascii_case("last") {
            return Ok(LabelColumn::LAST);
        }
        Ok(match s.parse::<isize>() {
            Ok(i) => LabelColumn::Index(i),
            Err(_) => LabelColumn::Name(s.to_string()),
        })
    }
}

impl fmt::Display for LabelColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelColumn::Name(n) => write!(f, "{n}"),
            LabelColumn::Index(i) => write!(f, "{i}"),
        }
    }
}

/// How to read a CSV data set; `CsvOptions::default()` detects a header, takes the label from
/// the last column, infers the class count and splits on commas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// `Some(true)`/`Some(false)` forces a header row or its absence; `None` detects it: the
    /// first row is a header when any of its non-empty cells is not a number (a valid data row
    /// never has one, since features and labels are both numbers), or when the label column is
    /// given by name (a name needs a header).
    pub has_header: Option<bool>,
    /// The label column.
    pub label_column: LabelColumn,
    /// The number of classes; `None` takes `max label + 1`. When given, a label `>= num_classes`
    /// is an error naming its line.
    pub num_classes: Option<usize>,
    /// The field delimiter (`b','`; `b'\t'` for TSV, `b';'` for European spreadsheets).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { has_header: None, label_column: LabelColumn::LAST, num_classes: None, delimiter: b',' }
    }
}

/// Reads a labelled data set from the CSV file at `path` (raw or gzip-compressed).
///
/// Every row is a sample: the label column holds its class, a non-negative integer written as
/// `3` or `3.0`; every other column, in file order, is a feature, a finite number. The result
/// has `sample_shape == [number of feature columns]` and features as written (unscaled: use
/// [`Dataset::scale`] for pixel counts such as digits' 0–16).
///
/// Errors name the file and, for a bad row, its 1-based line and column: an empty file or a
/// header without rows, a row with a different field count from the first (ragged), a feature
/// that is not a finite number, a label that is negative, fractional or not a number, a label
/// `>= num_classes`, a label column that does not exist.
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    read_file(path, options, true)
}

/// Reads unlabelled rows from the CSV file at `path` (raw or gzip-compressed), as inputs to
/// predict from: every column is a feature, checked as [`read_csv`] checks features (finite
/// numbers, every row as long as the first, the header detected or forced by
/// `options.has_header`, split on `options.delimiter`; `label_column` and `num_classes` are not
/// used). The result has `sample_shape == [number of columns]`, every label 0 and
/// `num_classes == 0`.
pub fn read_csv_unlabelled(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    read_file(path, options, false)
}

/// [`read_csv`] (`labelled`) or [`read_csv_unlabelled`]: opens the file, raw or gzip.
fn read_file(path: &Path, options: &CsvOptions, labelled: bool) -> Result<Dataset> {
    let io_err = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut reader = BufReader::new(file);
    // A fresh BufReader's first fill returns the file's first block, so two bytes are there
    // unless the file is shorter than that.
    let gzip = reader.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
    if gzip {
        read_from(MultiGzDecoder::new(reader), path, true, options, labelled)
    } else {
        read_from(reader, path, false, options, labelled)
    }
}

/// Parses a CSV data set already in memory (raw or gzip-compressed), as [`read_csv`] does a
/// file; `name` stands for the file in error messages.
pub fn parse_csv(bytes: &[u8], name: impl AsRef<Path>, options: &CsvOptions) -> Result<Dataset> {
    let path = name.as_ref();
    if bytes.starts_with(&GZIP_MAGIC) {
        read_from(MultiGzDecoder::new(bytes), path, true, options, true)
    } else {
        read_from(bytes, path, false, options, true)
    }
}

/// The reader behind [`read_csv`], [`read_csv_unlabelled`] and [`parse_csv`]: streams records,
/// validating each; without `labelled`, every column is a feature.
fn read_from(input: impl Read, path: &Path, gzip: bool, options: &CsvOptions, labelled: bool) -> Result<Dataset> {
    let mut reader = csv::ReaderBuilder::new()
        // Headers are detected here, not by the csv crate, and ragged rows are reported here with
        // both line numbers, so the crate reads every row as plain fields.
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .delimiter(options.delimiter)
        .from_reader(input);
    let mut record = csv::ByteRecord::new();

    let next = |reader: &mut csv::Reader<_>, record: &mut csv::ByteRecord| -> Result<bool> {
        reader.read_byte_record(record).map_err(|e| read_error(e, path, gzip, reader.position()))
    };

    if !next(&mut reader, &mut record)? {
        return Err(DataError::CsvEmpty { path: path.to_path_buf(), header_only: false });
    }
    let first_line = line_of(&record);
    let n_fields = record.len();

    let has_header = match options.has_header {
        Some(h) => h,
        // Empty cells do not count: a header's may be blank (pandas' index column), and a data
        // row with a missing value must be reported as such, not silently taken for a header.
        None => {
            (labelled && matches!(options.label_column, LabelColumn::Name(_)))
                || record.iter().any(|c| !c.is_empty() && !is_number(c))
        }
    };
    let names: Option<Vec<String>> =
        has_header.then(|| record.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect());
    // Unlabelled: no column is the label (an index no column has).
    let label_col = if labelled {
        resolve_label_column(&options.label_column, n_fields, names.as_deref(), path)?
    } else {
        usize::MAX
    };
    if labelled && n_fields < 2 {
        return Err(DataError::CsvLabelColumn {
            path: path.to_path_buf(),
            message: format!(
                "line {first_line} has {n_fields} field(s), so after the label column there is no feature column; \
                 check the delimiter (this reader splits on `{}`)",
                options.delimiter.escape_ascii()
            ),
        });
    }
    let column_name = |col: usize| names.as_ref().map(|n| n[col].clone());

    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<usize> = Vec::new();
    let mut max_label = None;
    // The first record is data unless it is the header.
    let mut have_row = !has_header || next(&mut reader, &mut record)?;
    if !have_row {
        return Err(DataError::CsvEmpty { path: path.to_path_buf(), header_only: true });
    }
    while have_row {
        let line = line_of(&record);
        if record.len() != n_fields {
            return Err(DataError::CsvRagged {
                path: path.to_path_buf(),
                line,
                first_line,
                expected: n_fields,
                found: record.len(),
            });
        }
        for (col, cell) in record.iter().enumerate() {
            if col == label_col {
                let label = parse_label(cell).map_err(|reason| DataError::CsvInvalidLabel {
                    path: path.to_path_buf(),
                    line,
                    column: col + 1,
                    column_name: column_name(col),
                    value: shown(cell),
                    reason,
                })?;
                match options.num_classes {
                    Some(nc) if label >= nc as u64 => {
                        return Err(DataError::CsvLabelOutOfRange {
                            path: path.to_path_buf(),
                            line,
                            label,
                            num_classes: nc,
                        });
                    }
                    None if label >= MAX_CLASSES as u64 => {
                        return Err(DataError::CsvInvalidLabel {
                            path: path.to_path_buf(),
                            line,
                            column: col + 1,
                            column_name: column_name(col),
                            value: shown(cell),
                            reason: format!(
                                "it would imply more than {MAX_CLASSES} classes; pass num_classes if it is meant"
                            ),
                        });
                    }
                    _ => {}
                }
                // Below MAX_CLASSES or below a usize num_classes, so it fits in a usize.
                let label = label as usize;
                max_label = max_label.max(Some(label));
                labels.push(label);
            } else {
                let value = parse_feature(cell).ok_or_else(|| DataError::CsvNotNumeric {
                    path: path.to_path_buf(),
                    line,
                    column: col + 1,
                    column_name: column_name(col),
                    value: shown(cell),
                })?;
                features.push(value);
            }
        }
        have_row = next(&mut reader, &mut record)?;
    }

    if !labelled {
        let rows = features.len() / n_fields;
        return Ok(Dataset { features, labels: vec![0; rows], sample_shape: vec![n_fields], num_classes: 0 });
    }
    let num_classes = options.num_classes.unwrap_or_else(|| max_label.map_or(0, |m| m + 1));
    Ok(Dataset { features, labels, sample_shape: vec![n_fields - 1], num_classes })
}

/// The 0-based index of the label column among `n_fields`, or an error saying what exists.
fn resolve_label_column(want: &LabelColumn, n_fields: usize, names: Option<&[String]>, path: &Path) -> Result<usize> {
    let err = |message: String| DataError::CsvLabelColumn { path: path.to_path_buf(), message };
    match want {
        LabelColumn::Index(i) => {
            let resolved = if *i < 0 { n_fields.checked_sub(i.unsigned_abs()) } else { Some(*i as usize) };
            resolved.filter(|&c| c < n_fields).ok_or_else(|| {
                err(format!(
                    "label column index {i} is out of range: the file has {n_fields} columns, so valid indices are \
                     0..={} (or -{n_fields}..=-1 counting from the end)",
                    n_fields.saturating_sub(1)
                ))
            })
        }
        LabelColumn::Name(name) => {
            let Some(names) = names else {
                return Err(err(format!(
                    "the label column is named `{name}` but the file is read without a header row; give the \
                     column's index instead, or let the header be detected"
                )));
            };
            names.iter().position(|n| n == name).ok_or_else(|| {
                const SHOWN: usize = 12;
                let mut listed: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
                if names.len() > SHOWN {
                    listed.push(format!("... ({} columns in all)", names.len()));
                }
                err(format!("no column named `{name}` in the header; the columns are {}", listed.join(", ")))
            })
        }
    }
}

/// A feature cell as a finite `f32`, or `None`. Parsed straight to `f32` (not via `f64`) so the
/// text is rounded once, as `float(...)` followed by `torch.tensor(..., dtype=float32)` would.
fn parse_feature(cell: &[u8]) -> Option<f32> {
    std::str::from_utf8(cell).ok()?.parse::<f32>().ok().filter(|v| v.is_finite())
}

/// Whether a cell reads as a number (of any size), the test for "this row is data".
fn is_number(cell: &[u8]) -> bool {
    std::str::from_utf8(cell).is_ok_and(|s| s.parse::<f64>().is_ok())
}

/// A label cell as a class index: `"3"` and `"3.0"` are 3; the error says why not otherwise.
fn parse_label(cell: &[u8]) -> std::result::Result<u64, String> {
    let text = std::str::from_utf8(cell).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.is_empty() {
        return Err("it is missing".into());
    }
    if let Ok(v) = text.parse::<u64>() {
        return Ok(v);
    }
    let v: f64 = text.parse().map_err(|_| "it is not a number".to_string())?;
    if !v.is_finite() {
        Err("it is not finite".into())
    } else if v < 0.0 {
        Err("it is negative".into())
    } else if v.fract() != 0.0 {
        Err("it is not a whole number".into())
    } else if v >= u64::MAX as f64 {
        Err("it is far too large".into())
    } else {
        Ok(v as u64)
    }
}

/// A cell's text for a message: lossily decoded and cut to [`MAX_SHOWN_CELL`] characters.
fn shown(cell: &[u8]) -> String {
    let text = String::from_utf8_lossy(cell);
    if text.chars().count() <= MAX_SHOWN_CELL {
        text.into_owned()
    } else {
        let cut: String = text.chars().take(MAX_SHOWN_CELL).collect();
        format!("{cut}...")
    }
}

/// The 1-based line on which `record` starts.
fn line_of(record: &csv::ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

/// Maps a csv reader failure to the matching [`DataError`]: I/O errors become [`DataError::Io`]
/// or, for gzip input, [`DataError::Gzip`] (a corrupt or truncated `.gz` surfaces as an I/O
/// error of the decoder).
fn read_error(err: csv::Error, path: &Path, gzip: bool, pos: &csv::Position) -> DataError {
    let path: PathBuf = path.to_path_buf();
    if !matches!(err.kind(), csv::ErrorKind::Io(_)) {
        return DataError::Csv { path, line: pos.line(), source: err };
    }
    let csv::ErrorKind::Io(source) = err.into_kind() else { unreachable!("checked to be an I/O error just above") };
    if gzip { DataError::Gzip { path, source, decompressed_bytes: pos.byte() } } else { DataError::Io { path, source } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, options: &CsvOptions) -> Result<Dataset> {
        parse_csv(text.as_bytes(), "t.csv", options)
    }

    fn err(text: &str, options: &CsvOptions) -> String {
        parse(text, options).unwrap_err().to_string()
    }

    #[test]
    fn reads_without_header_label_last() {
        let d = parse("1,2,0\n3.5,-4e-1,2\n", &CsvOptions::default()).unwrap();
        assert_eq!(d.sample_shape, vec![2]);
        assert_eq!(d.features, vec![1.0, 2.0, 3.5, -0.4]);
        assert_eq!(d.labels, vec![0, 2]);
        assert_eq!(d.num_classes, 3);
    }

    #[test]
    fn detects_header_and_finds_label_by_name_or_index() {
        let text = "y,a,b\n1,0.5,0.25\n0,1,2\n";
        for col in [LabelColumn::Name("y".into()), LabelColumn::Index(0), LabelColumn::Index(-3)] {
            let o = CsvOptions { label_column: col.clone(), ..Default::default() };
            let d = parse(text, &o).unwrap();
            assert_eq!(d.labels, vec![1, 0], "{col:?}");
            assert_eq!(d.features, vec![0.5, 0.25, 1.0, 2.0], "{col:?}");
        }
        // Whitespace around cells is fine; a label written 3.0 is 3.
        let d = parse(" a , label \n 1 , 3.0 \n", &CsvOptions::default()).unwrap();
        assert_eq!((d.labels.clone(), d.num_classes), (vec![3], 4));
    }

    #[test]
    fn forced_header_and_num_classes() {
        // All-numeric first row: detected as data, but can be forced to be a header.
        let text = "1,2\n3,1\n";
        assert_eq!(parse(text, &CsvOptions::default()).unwrap().len(), 2);
        let o = CsvOptions { has_header: Some(true), num_classes: Some(10), ..Default::default() };
        let d = parse(text, &o).unwrap();
        assert_eq!((d.len(), d.num_classes, d.labels[0]), (1, 10, 1));
    }

    #[test]
    fn header_detection_ignores_empty_cells() {
        // pandas' `to_csv` writes a blank name over the index column: still a header.
        let d = parse(",a,y\n0,1.5,1\n", &CsvOptions::default()).unwrap();
        assert_eq!((d.len(), d.features.clone()), (1, vec![0.0, 1.5]));
        // A first data row with a missing value is reported, not mistaken for a header.
        let e = err("1,,0\n2,3,1\n", &CsvOptions::default());
        assert!(e.contains("line 1, column 2: an empty cell"), "{e}");
    }

    #[test]
    fn tab_delimiter() {
        let o = CsvOptions { delimiter: b'\t', ..Default::default() };
        assert_eq!(parse("1\t2\t1\n", &o).unwrap().features, vec![1.0, 2.0]);
    }

    #[test]
    fn label_column_errors_say_what_exists() {
        let o = CsvOptions { label_column: LabelColumn::Name("label".into()), ..Default::default() };
        let e = err("a,b,c\n1,2,3\n", &o);
        assert!(e.contains("no column named `label`") && e.contains("`a`, `b`, `c`"), "{e}");
        let o = CsvOptions { label_column: LabelColumn::Index(3), ..Default::default() };
        let e = err("1,2,3\n", &o);
        assert!(e.contains("index 3 is out of range") && e.contains("3 columns"), "{e}");
        let o = CsvOptions { label_column: LabelColumn::Index(-4), ..Default::default() };
        assert!(err("1,2,3\n", &o).contains("index -4 is out of range"));
        let o =
            CsvOptions { has_header: Some(false), label_column: LabelColumn::Name("y".into()), ..Default::default() };
        assert!(err("1,2\n", &o).contains("without a header row"));
        let e = err("1\n2\n", &CsvOptions::default());
        assert!(e.contains("no feature column"), "{e}");
    }

    #[test]
    fn label_column_from_str() {
        assert_eq!("2".parse::<LabelColumn>().unwrap(), LabelColumn::Index(2));
        assert_eq!("-1".parse::<LabelColumn>().unwrap(), LabelColumn::LAST);
        assert_eq!("Last".parse::<LabelColumn>().unwrap(), LabelColumn::LAST);
        assert_eq!(" target ".parse::<LabelColumn>().unwrap(), LabelColumn::Name("target".into()));
        assert!("  ".parse::<LabelColumn>().is_err());
        assert_eq!(LabelColumn::Index(-1).to_string(), "-1");
    }

    #[test]
    fn labels_parse_strictly() {
        assert_eq!(parse_label(b"7"), Ok(7));
        assert_eq!(parse_label(b"7.0"), Ok(7));
        assert_eq!(parse_label(b"1e1"), Ok(10));
        assert!(parse_label(b"-1").unwrap_err().contains("negative"));
        assert!(parse_label(b"-1.0").unwrap_err().contains("negative"));
        assert!(parse_label(b"2.5").unwrap_err().contains("whole"));
        assert!(parse_label(b"cat").unwrap_err().contains("not a number"));
        assert!(parse_label(b"inf").unwrap_err().contains("finite"));
        assert!(parse_label(b"").unwrap_err().contains("missing"));
    }

    #[test]
    fn huge_label_without_num_classes_is_refused() {
        let e = err("0.5,99999999999\n", &CsvOptions::default());
        assert!(e.contains("line 1") && e.contains("more than 1048576 classes"), "{e}");
    }

    /// Unlabelled rows (inputs to predict from): every column a feature, with the same checks,
    /// the header detected, gzip recognised; a one-column file is fine.
    #[test]
    fn unlabelled_rows_are_all_features() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (plain, gz, one, bad) = (dir.join("x.csv"), dir.join("x.csv.gz"), dir.join("one.csv"), dir.join("bad.csv"));
        std::fs::write(&plain, "a,b,c\n1,2,3\n-4,5e-1,6\n").unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"1,2,3\n-4,0.5,6\n").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        std::fs::write(&one, "7\n8\n").unwrap();
        std::fs::write(&bad, "1,2\n3,nan\n").unwrap();
        for path in [&plain, &gz] {
            let d = read_csv_unlabelled(path, &CsvOptions::default()).unwrap();
            assert_eq!((d.sample_shape.clone(), d.features.clone()), (vec![3], vec![1.0, 2.0, 3.0, -4.0, 0.5, 6.0]));
            assert_eq!((d.labels.clone(), d.num_classes), (vec![0, 0], 0));
        }
        let d = read_csv_unlabelled(&one, &CsvOptions::default()).unwrap();
        assert_eq!((d.sample_shape, d.features), (vec![1], vec![7.0, 8.0]));
        let e = read_csv_unlabelled(&bad, &CsvOptions::default()).unwrap_err().to_string();
        assert!(e.contains("line 2, column 2") && e.contains("`nan` is not a finite number"), "{e}");
        // The labelled reader still wants its label column.
        assert!(read_csv(&one, &CsvOptions::default()).is_err());
    }

    #[test]
    fn quoted_multiline_cell_keeps_editor_line_numbers() {
        // The header's quoted name spans lines 1-2, so the bad row is on line 4.
        let e = err("\"a\nb\",y\n1,0\nx,1\n", &CsvOptions::default());
        assert!(e.contains("line 4, column 1 (`a\nb`)"), "{e}");
    }
}
