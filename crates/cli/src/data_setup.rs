//! Turns a run's `[data]` section into normalised train / validation / test sets.

use crate::config::DataConfig;
use anyhow::{Context, Result, bail};
use strata_data::{
    CsvOptions, Dataset, ImageFolder, ImageFolderOptions, MNIST_MEAN, MNIST_STD, compute_stats, embedded_mnist,
    load_mnist_dir, read_csv, read_idx,
};
use strata_nn::summary::group_digits as g;

/// The data of a run, normalised.
pub struct Prepared {
    /// Training samples.
    pub train: Dataset,
    /// Validation samples (evaluated each epoch; may be empty).
    pub val: Dataset,
    /// Test samples, evaluated once at the end.
    pub test: Option<Dataset>,
    /// Per-channel mean subtracted from inputs.
    pub mean: Vec<f32>,
    /// Per-channel std inputs were divided by.
    pub std: Vec<f32>,
    /// Class names: `data.classes`, else the image folders' names, else the label numbers.
    pub classes: Vec<String>,
    /// One line for the console.
    pub description: String,
    /// The normalisation in use and where it came from, for the console.
    pub normalization: String,
}

/// The `data.source` that `--data PATH` means: `csv` for a file named `*.csv` or `*.csv.gz`,
/// else `mnist` (a folder of IDX files).
pub fn data_source_of(path: &std::path::Path) -> &'static str {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".csv") || name.ends_with(".csv.gz") { "csv" } else { "mnist" }
}

/// MNIST's test split from the folder `dir`: `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`, each raw or gzipped (the raw one preferred, as
/// [`load_mnist_dir`] does), not normalised: what `strata eval` reads, so the training pair need
/// not be there. `given` says where `dir` came from (`--data DIR`) in errors; a missing file is
/// one naming it and the names tried.
pub fn load_mnist_test(dir: &std::path::Path, given: &str) -> Result<Dataset> {
    const PAIR: &str = "MNIST's test pair, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz)";
    if dir.is_file() {
        bail!(
            "{given}: a file, and the test set of a run trained on IDX files is read from a folder holding {PAIR}\nfix: give that folder (--data DIR)"
        );
    }
    if !dir.is_dir() {
        bail!("{given}: no such folder\nfix: give the folder that holds {PAIR} (--data DIR)");
    }
    let find = |name: &str| {
        let tried = [dir.join(name), dir.join(format!("{name}.gz"))];
        tried.iter().find(|p| p.is_file()).cloned().with_context(|| {
            format!(
                "{given}: no `{name}` file (tried {} and {}); the test set is read from {PAIR}, and only from them\nfix: put `{name}` or `{name}.gz` in {}, or give the folder that holds it (--data DIR)",
                tried[0].display(),
                tried[1].display(),
                dir.display()
            )
        })
    };
    let (images, labels) = (find("t10k-images-idx3-ubyte")?, find("t10k-labels-idx1-ubyte")?);
    let test = Dataset::from_idx(read_idx(&images)?, read_idx(&labels)?, 10, &images, &labels)?;
    if test.is_empty() {
        bail!("{given}: {}", EMPTY_MNIST_TEST);
    }
    Ok(test)
}

/// What an MNIST folder whose test pair holds no images is told.
const EMPTY_MNIST_TEST: &str = "its test pair (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) holds no images, so a test accuracy would be a figure of none\nfix: put MNIST's test files (10,000 images) there, or a test set of your own in that format";

/// Loads and normalises the data described by `cfg`; `seed` drives the validation split, which
/// holds out `data.validation` samples but at most half of them (the description says so when
/// it caps it; the embedded subset's split is fixed).
pub fn prepare(cfg: &DataConfig, seed: u64) -> Result<Prepared> {
    let path = || cfg.path.clone().expect("validated: sources other than embedded have a path");
    let split = |all: Dataset| -> Result<(Dataset, Dataset)> {
        let holdout = cfg.validation.min(all.len() / 2);
        Ok(all.split(holdout, seed)?)
    };
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let (train, val, test, classes, description, mnist_like) = match cfg.source.as_str() {
        "embedded" => {
            let (train, held) = embedded_mnist().context("decoding the embedded MNIST subset")?;
            let d = format!(
                "embedded MNIST subset, {} training / {} held-out images (split seed {:#x})",
                g(train.len()),
                g(held.len()),
                strata_data::EMBEDDED_SPLIT_SEED
            );
            (train, held, None, digits, d, true)
        }
        "mnist" => {
            let dir = path();
            if dir.is_file() {
                bail!(
                    "data.path = {} (--data) is a file, and data.source = \"mnist\" reads a folder holding the four MNIST IDX files\nfix: give that folder; a CSV file is read as one when named *.csv or *.csv.gz (or with --set data.source=csv), a folder of images per class with --set data.source=images",
                    dir.display()
                );
            }
            let (all, test) = load_mnist_dir(&dir).with_context(|| format!("loading MNIST from {}", dir.display()))?;
            let (train, val) = split(all)?;
            let d = format!(
                "IDX images (MNIST's format) from {}: {} training / {} validation / {} test images",
                dir.display(),
                g(train.len()),
                g(val.len()),
                g(test.len())
            );
            // The folder may hold Fashion-MNIST or any data in MNIST's format: its statistics
            // are computed, not assumed.
            (train, val, Some(test), digits, d, false)
        }
        "csv" => {
            let options = CsvOptions { label_column: cfg.label_column.parse()?, ..Default::default() };
            let all = read_csv(&path(), &options)?;
            let test = cfg
                .test_path
                .as_ref()
                .map(|p| read_csv(p, &CsvOptions { num_classes: Some(all.num_classes), ..options.clone() }))
                .transpose()?;
            let (train, val) = split(all)?;
            let d = format!(
                "CSV {}: {} training / {} validation rows, {} features",
                path().display(),
                train.len(),
                val.len(),
                train.sample_len()
            );
            let classes = (0..train.num_classes).map(|c| c.to_string()).collect();
            (train, val, test, classes, d, false)
        }
        _ => {
            let options = ImageFolderOptions { channels: cfg.channels, resize: cfg.size.map(|[h, w]| (h, w)) };
            let folder = ImageFolder::load(&path(), &options)?;
            let test = cfg.test_path.as_ref().map(|p| ImageFolder::load(p, &options).map(|f| f.dataset)).transpose()?;
            let classes = folder.classes.clone();
            let (train, val) = split(folder.dataset)?;
            let d = format!(
                "images in {}: {} classes, {} training / {} validation images",
                path().display(),
                classes.len(),
                train.len(),
                val.len()
            );
            (train, val, test, classes, d, false)
        }
    };
    // An empty test set would be evaluated at the end as an accuracy of no samples ("0.00%").
    // (An empty training set is the trainer's to refuse, the more basic error.)
    if let Some(t) = &test
        && t.is_empty()
        && !train.is_empty()
    {
        match (cfg.source.as_str(), &cfg.test_path) {
            ("mnist", _) => bail!("{}: {EMPTY_MNIST_TEST}", path().display()),
            (_, Some(p)) => bail!(
                "data.test_path = {}: the test set holds no samples, so the run's test accuracy would be a figure of none\nfix: give a test file with samples, or drop data.test_path",
                p.display()
            ),
            _ => {}
        }
    }
    // Say where data.validation did not hold as given, rather than change it silently.
    let total = train.len() + val.len();
    let description = if cfg.source == "embedded" {
        if cfg.validation != DataConfig::default().validation {
            format!("{description}; data.validation does not apply (the embedded subset's held-out split is fixed)")
        } else {
            description
        }
    } else if cfg.validation > total / 2 {
        format!("{description} (data.validation = {} capped at half of the {} samples)", cfg.validation, g(total))
    } else {
        description
    };
    let classes = match &cfg.classes {
        None => classes,
        Some(names) if names.len() == train.num_classes => names.clone(),
        Some(names) => {
            let found = if cfg.source == "images" {
                let more = if classes.len() > 12 { ", …" } else { "" };
                format!("sub-folders {}{more}", classes[..classes.len().min(12)].join(", "))
            } else {
                format!("labels 0 to {}", train.num_classes.saturating_sub(1))
            };
            bail!(
                "data.classes names {} classes, but the data has {} ({found}): give one name per class, label 0 first",
                names.len(),
                train.num_classes
            );
        }
    };
    let (mean, std, source) = match (&cfg.mean, &cfg.std) {
        (Some(m), Some(s)) => (m.clone(), s.clone(), "given in the run file".to_string()),
        _ if mnist_like => (vec![MNIST_MEAN], vec![MNIST_STD], "MNIST's, as torchvision's examples use".into()),
        _ => {
            let (m, s) = compute_stats(&train)?;
            (
                m,
                s,
                format!(
                    "computed from the {} training samples; set data.mean and data.std to fix them",
                    g(train.len())
                ),
            )
        }
    };
    let round = |v: &[f32]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(", ");
    let normalization = format!("mean [{}] std [{}] ({source})", round(&mean), round(&std));
    let mut out = Prepared { train, val, test, mean, std, classes, description, normalization };
    for d in [Some(&mut out.train), Some(&mut out.val), out.test.as_mut()].into_iter().flatten() {
        if !d.is_empty() {
            d.normalize_channels(&out.mean, &out.std)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_size_that_does_not_hold_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("rows.csv");
        let rows: String = (0..10).map(|i| format!("{i},{},{}\n", i * 2, i % 2)).collect();
        std::fs::write(&csv, format!("a,b,label\n{rows}")).unwrap();
        let cfg = DataConfig { source: "csv".into(), path: Some(csv), ..DataConfig::default() };
        let p = prepare(&cfg, 1).unwrap();
        assert_eq!((p.train.len(), p.val.len()), (5, 5));
        assert!(
            p.description.contains("(data.validation = 5000 capped at half of the 10 samples)"),
            "{}",
            p.description
        );
        let p = prepare(&DataConfig { validation: 2, ..cfg }, 1).unwrap();
        assert!(!p.description.contains("capped"), "{}", p.description);
        let p = prepare(&DataConfig { validation: 0, ..DataConfig::default() }, 1).unwrap();
        assert!(p.description.contains("data.validation does not apply"), "{}", p.description);
    }
}
