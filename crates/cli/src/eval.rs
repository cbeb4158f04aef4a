//! `strata eval` (accuracy, top-k accuracy, macro and weighted F1, the confusion matrix and, with
//! `--report`, sklearn's per-class classification report) and `strata predict` (class
//! probabilities for an image file, an IDX record or a CSV row), both from a checkpoint:
//! the checkpoint carries the model file, the normalisation and the data config it was trained
//! with, so nothing else needs to be given.

use crate::check::{Verdict, check_before_building};
use crate::checkpoint;
use crate::config::RunConfig;
use crate::data_setup::{data_source_of, load_mnist_test, prepare};
use crate::train::InputLayout;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use strata_core::{Tensor, no_grad};
use strata_data::{
    CsvOptions, DataLoader, Dataset, ImageFolder, ImageFolderOptions, load_image, read_csv, read_csv_unlabelled,
    read_idx,
};
use strata_nn::check::SymShape;
use strata_nn::metrics::{ConfusionMatrix, TopK};
use strata_nn::model_file::parse_model;
use strata_nn::{Module, Sequential};

/// Options of `strata eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint file, or a run directory (its best checkpoint, else its newest).
    checkpoint: PathBuf,
    /// Evaluate on other data than the run's own test/validation data, read as the run's kind:
    /// an MNIST folder (its t10k test set), a CSV file (every row; also any `*.csv` or
    /// `*.csv.gz`), or an image folder of the run's classes.
    #[arg(long, value_name = "DIR|FILE.csv")]
    data: Option<PathBuf>,
    /// Where to run the model: `cpu` (the default), `gpu` or `gpu:N`.
    #[arg(long, value_name = "cpu|gpu|gpu:N")]
    device: Option<String>,
    /// Also give top-K accuracy (the true class among the K highest scores; equal scores rank
    /// the lower class first). Default: 5 when the data has more than 5 classes; 0 turns it off.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Print the per-class report (precision, recall, f1-score, support, with the class names),
    /// as sklearn's classification_report.
    #[arg(long)]
    report: bool,
}

/// Options of `strata predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A checkpoint file, or a run directory.
    checkpoint: PathBuf,
    /// Image files (PNG/JPEG), resized to the model's input when needed.
    images: Vec<PathBuf>,
    /// An IDX images file (MNIST format, raw or gzip) to take samples from, with --index.
    #[arg(long, value_name = "FILE", requires = "index")]
    idx: Option<PathBuf>,
    /// Which records of the IDX file.
    #[arg(long, value_delimiter = ',', requires = "idx")]
    index: Vec<usize>,
    /// A CSV file (raw or gzip) whose every row is an input: the training file's feature
    /// columns in its order, with or without its label column (a header row is detected).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// How many classes to show per input (at least 1).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    top: usize,
    /// Where to run the model: `cpu` (the default), `gpu` or `gpu:N`.
    #[arg(long, value_name = "cpu|gpu|gpu:N")]
    device: Option<String>,
}

/// A model rebuilt from a checkpoint, with what it needs to prepare inputs.
struct Loaded {
    model: Sequential,
    sample: Vec<usize>,
    /// How a batch becomes the model's input (its element type, a time-major batch).
    layout: InputLayout,
    /// The checkpoint file, for messages.
    file: PathBuf,
    meta: checkpoint::Meta,
    config: RunConfig,
}

/// [`load`], with the model moved to the device asked for (checkpoints do not depend on the
/// device they were trained on).
fn load_on(path: &Path, device: Option<&str>) -> Result<Loaded> {
    let mut l = load(path)?;
    let device = crate::devices::resolve(device, l.layout.dtype)?;
    l.model.to_device(device)?;
    l.layout = l.layout.on(device);
    Ok(l)
}

fn load(path: &Path) -> Result<Loaded> {
    if !path.exists() {
        bail!("{}: no such checkpoint file or run directory", path.display());
    }
    let file = checkpoint::best_or_latest(path, "evaluate or predict from")?;
    let (params, _, meta) = checkpoint::load(&file)?;
    let spec = parse_model(&meta.model, &format!("{} (its model)", file.display()), "model")?;
    let config: RunConfig = toml::from_str(&meta.config)
        .with_context(|| format!("{}: the stored run config (metadata `config`) does not parse", file.display()))?;
    if meta.mean.is_empty()
        || meta.mean.len() != meta.std.len()
        || meta.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
    {
        bail!(
            "{}: the stored normalisation is invalid (mean {:?}, std {:?}): it needs one mean and one positive std per channel; the file is damaged or was not written by strata train",
            file.display(),
            meta.mean,
            meta.std
        );
    }
    // A model file without `input` (a checkpoint of an older strata stored it so): the shape of
    // the samples of the data it was trained on.
    let sample = match spec.input.clone() {
        Some(s) => s,
        None => {
            let mut data = config.data.clone();
            (data.mean, data.std) = (Some(meta.mean.clone()), Some(meta.std.clone()));
            prepare(&data, config.training.seed).map(|p| p.train.sample_shape.clone()).with_context(|| {
                format!(
                    "{}: its model has no input shape, and the data it was trained on ({} data) cannot be read to find it; add `input = [...]` to the model file and retrain, or restore the data",
                    file.display(),
                    config.data.source
                )
            })?
        }
    };
    // Evaluation runs the whole model on one device (`--device`): a placement the run was
    // trained with is left out, so a checkpoint from several GPUs evaluates on a CPU-only machine.
    let unplaced = spec.clone().without_placement();
    // Its size and the stored tensors' shapes are checked before the model is built (building
    // allocates every parameter: a model larger than memory would abort the process).
    let name = file.display().to_string();
    let report = check_before_building(
        &unplaced,
        Some(&SymShape::batched(&sample)),
        Some((&params, &name)),
        &format!("{name} (its model)"),
    )?;
    // `eval` and `predict` show the class names beside the model's scores: one per output.
    checkpoint::check_class_names(&file, &meta, &report)?;
    let model = unplaced.build()?;
    let what = format!("loading {}", file.display());
    let header = format!("{}: its tensors do not fit its model:", file.display());
    crate::convert::load_whole(&model, &params, &what, &header, crate::convert::CHECKPOINT_MISMATCH_FIX)?;
    let bad: Vec<String> =
        model.named_parameters().into_iter().filter(|(_, p)| !p.all_finite()).map(|(n, _)| n).collect();
    if !bad.is_empty() {
        bail!(
            "{}: the parameters {} hold non-finite values (NaN or infinity): the run that wrote it diverged; evaluate an earlier checkpoint, or retrain with a lower learning rate or training.clip_grad_norm",
            file.display(),
            bad.join(", ")
        );
    }
    model.eval();
    let layout = InputLayout::of(&spec, &sample);
    Ok(Loaded { model, sample, layout, file, meta, config })
}

/// Runs `strata eval`.
pub fn eval(args: &EvalArgs) -> Result<Verdict> {
    let l = load_on(&args.checkpoint, args.device.as_deref())?;
    let (set, name, data_classes) = match &args.data {
        Some(path) if l.config.data.source == "csv" || data_source_of(path) == "csv" => {
            let set = csv_set(&l, path)?;
            (set, format!("{}", path.display()), vec![])
        }
        Some(path) if l.config.data.source == "images" => {
            let set = image_set(&l, path)?;
            (set, format!("{}", path.display()), vec![])
        }
        // A folder of IDX files, given or the run's own: only its test pair is read (the
        // training pair need not be there), normalised as the run was.
        Some(dir) => mnist_test(&l, dir, &format!("--data {}", dir.display()))?,
        None if l.config.data.source == "mnist" && l.config.data.path.is_some() => {
            let dir = l.config.data.path.clone().unwrap_or_default();
            mnist_test(&l, &dir, &format!("the run's data.path = {}", dir.display()))?
        }
        None => {
            let mut data_cfg = l.config.data.clone();
            // The normalisation the model was trained with, whatever the data's own statistics.
            (data_cfg.mean, data_cfg.std) = (Some(l.meta.mean.clone()), Some(l.meta.std.clone()));
            let data = prepare(&data_cfg, l.config.training.seed)?;
            match data.test {
                Some(t) => (t, "test set".to_string(), data.classes),
                None => (data.val, "held-out set".to_string(), data.classes),
            }
        }
    };
    let set = &set;
    if set.is_empty() {
        bail!("there is no test or held-out data to evaluate on; pass --data DIR");
    }
    let k = set.num_classes;
    let sample = l.sample.clone();
    if sample.iter().product::<usize>() != set.sample_len() {
        bail!(
            "{}: the model takes samples of shape {sample:?}, but the data's are {:?}; evaluate it on the data it was trained on (--data DIR)",
            l.file.display(),
            set.sample_shape
        );
    }
    let top_k = match args.top_k {
        None if k > 5 => Some(5),
        None | Some(0) => None,
        Some(t) if t > k => bail!("--top-k {t}: the {name} has {k} classes; give at most {k}, or 0 for none"),
        Some(t) => Some(t),
    };
    let mut confusion = ConfusionMatrix::new(k);
    let mut top = top_k.map(TopK::new).transpose()?;
    no_grad(|| -> Result<()> {
        for batch in DataLoader::new(set, 1000).epoch(0) {
            // logits: [N, C]
            let logits = l.model.forward(&l.layout.apply(&batch.x)?)?;
            let outputs = logits.dims().get(1).copied().unwrap_or(0);
            if logits.ndim() != 2 || outputs != k {
                bail!(
                    "{}: the model gives {} scores per sample (logits {}), but the {name} has {k} classes: evaluate it on data with its {outputs} classes (--data DIR)",
                    l.file.display(),
                    outputs,
                    logits.shape()
                );
            }
            confusion.update(&logits, &batch.y)?;
            if let Some(top) = &mut top {
                top.update(&logits, &batch.y)?;
            }
        }
        Ok(())
    })?;
    // The names the model was trained with, else the data's own.
    let names = if l.meta.classes.len() == k { &l.meta.classes } else { &data_classes };
    let what = format!("{} ({} samples)", name, set.len());
    print!("{}", render_eval(&confusion, top.as_ref(), names, &what, args.report));
    Ok(Verdict::Ok)
}

/// The test pair of the MNIST folder `dir` (`given` says where it came from), normalised as the
/// run was: the set, its name and its classes' names.
fn mnist_test(l: &Loaded, dir: &Path, given: &str) -> Result<(Dataset, String, Vec<String>)> {
    let mut set = load_mnist_test(dir, given)?;
    set.normalize_channels(&l.meta.mean, &l.meta.std)?;
    // The run file's names for them, as the run's data had them; else the digits.
    let names = match &l.config.data.classes {
        Some(names) if names.len() == set.num_classes => names.clone(),
        _ => (0..set.num_classes).map(|d| d.to_string()).collect(),
    };
    Ok((set, "test set".to_string(), names))
}

/// Every row of the CSV file at `path`, labelled in the run's label column, as the run's
/// classes (a file that lacks the last classes still counts them), normalised as the run was.
fn csv_set(l: &Loaded, path: &Path) -> Result<Dataset> {
    let num_classes = (!l.meta.classes.is_empty()).then_some(l.meta.classes.len());
    let options = CsvOptions { label_column: l.config.data.label_column.parse()?, num_classes, ..Default::default() };
    let mut set = read_csv(path, &options)?;
    set.normalize_channels(&l.meta.mean, &l.meta.std)?;
    Ok(set)
}

/// The images of the folder at `path`, a sub-folder per class, labelled with the run's class
/// numbers and normalised as the run was. Sub-folders named as the run's classes are those
/// classes (a folder may leave some out); where the run renamed its classes (`data.classes`), a
/// folder with as many sub-folders as the run has classes is taken in their order, as training
/// took its own; any other sub-folder is refused.
fn image_set(l: &Loaded, path: &Path) -> Result<Dataset> {
    // Read as the run read its images: its channels, its resize.
    let d = &l.config.data;
    let folder =
        ImageFolder::load(path, &ImageFolderOptions { channels: d.channels, resize: d.size.map(|[h, w]| (h, w)) })?;
    let run = &l.meta.classes;
    let by_name: Option<Vec<usize>> = folder.classes.iter().map(|c| run.iter().position(|r| r == c)).collect();
    let to_run = match by_name {
        Some(v) => v,
        None if l.config.data.classes.is_some() && folder.classes.len() == run.len() => (0..run.len()).collect(),
        None => {
            let unknown: Vec<&str> = folder.classes.iter().filter(|c| !run.contains(c)).map(String::as_str).collect();
            bail!(
                "{}: the sub-folders {} are not among the run's classes ({}); evaluate on folders named as the classes it was trained on",
                path.display(),
                unknown.join(", "),
                run.join(", ")
            );
        }
    };
    let mut set = folder.dataset;
    set.labels.iter_mut().for_each(|y| *y = to_run[*y]);
    set.num_classes = run.len();
    set.normalize_channels(&l.meta.mean, &l.meta.std)?;
    Ok(set)
}

/// Accuracy, top-k accuracy, macro and weighted F1, the classification report when asked, and
/// the confusion matrix (rows: true, columns: predicted).
fn render_eval(cm: &ConfusionMatrix, top: Option<&TopK>, classes: &[String], what: &str, report: bool) -> String {
    let k = cm.num_classes();
    let name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    let (right, total) = (cm.correct(), cm.total());
    let mut s = format!("{what}: accuracy {:.2}% ({right}/{total})\n", pct(right, total));
    if let Some(t) = top {
        s.push_str(&format!(
            "top-{} accuracy {:.2}% ({}/{})\n",
            t.k(),
            pct(t.correct(), t.total()),
            t.correct(),
            t.total()
        ));
    }
    s.push_str(&format!("F1: macro {:.4}, weighted {:.4}\n\n", cm.f1_macro(), cm.f1_weighted()));
    if report {
        s.push_str(&cm.report_with_digits(Some(classes), 4));
        s.push('\n');
    }
    // Columns wide enough for the longest name.
    let w = (0..k).map(|c| name(c).chars().count() + 1).max().unwrap_or(0).max(6);
    s.push_str(&format!("confusion matrix (rows: true class, columns: predicted)\n{:w$}", ""));
    for c in 0..k {
        s.push_str(&format!("{:>w$}", name(c)));
    }
    s.push('\n');
    for r in 0..k {
        s.push_str(&format!("{:>w$}", name(r)));
        for v in cm.row(r).unwrap_or_default() {
            s.push_str(&format!("{v:>w$}"));
        }
        s.push('\n');
    }
    s
}

/// `--top`'s value: a count of at least 1.
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("give at least 1 (the most likely class)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

/// An error for an IDX or CSV file given where image files go (`strata predict RUN FILE`),
/// saying which flag reads it; image decoding would call it corrupt.
fn not_an_image(path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut head = [0u8; 4];
    let idx_magic = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
        && head[..2] == [0, 0];
    if name.contains("-idx") || name.ends_with(".idx") || idx_magic {
        bail!(
            "{}: an IDX file, not an image\nfix: strata predict RUN --idx {} --index 0,1,2 (the records to predict)",
            path.display(),
            path.display()
        );
    }
    if data_source_of(path) == "csv" {
        bail!(
            "{}: a CSV file, not an image\nfix: strata predict RUN --csv {} (every row an input)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Runs `strata predict`.
pub fn predict(args: &PredictArgs) -> Result<Verdict> {
    let l = load_on(&args.checkpoint, args.device.as_deref())?;
    let numel: usize = l.sample.iter().product();
    let mut inputs: Vec<(String, Vec<f32>)> = vec![];
    for path in &args.images {
        not_an_image(path)?;
        // Resize to the model's own height and width when its input is an image.
        let (h, w) = match l.sample.as_slice() {
            [_, h, w] => (*h as u32, *w as u32),
            _ => {
                let side = (numel as f64).sqrt() as u32;
                (side, side)
            }
        };
        let channels = if numel.is_multiple_of(3) && l.sample.first() == Some(&3) { 3 } else { 1 };
        let (pixels, _) = load_image(path, &ImageFolderOptions { channels, resize: Some((h, w)) })?;
        inputs.push((path.display().to_string(), pixels));
    }
    if let Some(idx) = &args.idx {
        let arr = read_idx(idx)?;
        let per: usize = arr.dims.iter().skip(1).product();
        let values = arr.data.to_f32_vec();
        for &i in &args.index {
            if i >= arr.dims[0] {
                bail!("{}: --index {i} is out of range (the file holds {} records)", idx.display(), arr.dims[0]);
            }
            let scale = if matches!(arr.data, strata_data::IdxData::U8(_)) { 1.0 / 255.0 } else { 1.0 };
            inputs.push((
                format!("{}[{i}]", idx.display()),
                values[i * per..(i + 1) * per].iter().map(|v| v * scale).collect(),
            ));
        }
    }
    if let Some(path) = &args.csv {
        inputs.extend(csv_rows(path, numel, &l.config)?);
    }
    if inputs.is_empty() {
        bail!("nothing to predict: give image files, --idx FILE --index N, or --csv FILE");
    }
    for (name, mut x) in inputs {
        if x.len() != numel {
            bail!("{name}: {} values, but the model takes {numel} ({:?})", x.len(), l.sample);
        }
        // A NaN or infinite input makes every class NaN%: refused, naming where it is.
        if let Some(at) = x.iter().position(|v| !v.is_finite()) {
            bail!("{name}: value {at} is {} (the input must be finite numbers)", x[at]);
        }
        normalize(&mut x, &l.meta.mean, &l.meta.std);
        let input = l.layout.apply(&Tensor::from_vec(x, &[1, numel])?)?;
        let logits = no_grad(|| l.model.forward(&input))?.to_vec_f64();
        let probs = softmax(&logits);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let shown: Vec<String> = order
            .iter()
            .take(args.top)
            .map(|&c| format!("{} {:.2}%", class_label(c, &l.meta.classes), 100.0 * probs[c]))
            .collect();
        println!("{name}: {}", shown.join(", "));
    }
    Ok(Verdict::Ok)
}

/// The rows of the CSV file at `path` as inputs of `numel` features, named `FILE row N` (data
/// rows from 1): every column a feature, or every column but the label column of a model trained
/// on CSV data (`data.label_column`), when the rows carry it.
fn csv_rows(path: &Path, numel: usize, config: &RunConfig) -> Result<Vec<(String, Vec<f32>)>> {
    let rows = read_csv_unlabelled(path, &CsvOptions::default())?;
    let columns = rows.sample_len();
    let features = if columns == numel {
        rows
    } else if columns == numel + 1 && config.data.source == "csv" {
        let options = CsvOptions { label_column: config.data.label_column.parse()?, ..CsvOptions::default() };
        read_csv(path, &options)
            .with_context(|| format!("{}: its rows have one column more than the model's {numel} features, taken for the label column `{}` of the training data", path.display(), config.data.label_column))?
    } else {
        bail!(
            "{}: its rows have {columns} columns, but the model takes {numel} features{}",
            path.display(),
            if config.data.source == "csv" {
                format!(
                    ": give the training file's {numel} feature columns in its order, with or without its label column"
                )
            } else {
                String::new()
            }
        );
    };
    Ok(features
        .features
        .chunks_exact(numel.max(1))
        .enumerate()
        .map(|(i, x)| (format!("{} row {}", path.display(), i + 1), x.to_vec()))
        .collect())
}

/// A class as `predict` shows it: its index, with its name beside it when it has one that is
/// not the index itself (`7 (seven)`; the digits of MNIST stay `7`).
fn class_label(c: usize, names: &[String]) -> String {
    match names.get(c) {
        Some(n) if *n != c.to_string() => format!("{c} ({n})"),
        _ => c.to_string(),
    }
}

fn normalize(x: &mut [f32], mean: &[f32], std: &[f32]) {
    let per = x.len() / mean.len().max(1);
    for (i, v) in x.iter_mut().enumerate() {
        let c = (i / per.max(1)).min(mean.len() - 1);
        *v = (*v - mean[c]) / std[c];
    }
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary, the report and the confusion matrix, with and without names (a name longer
    /// than the default columns widens them); `7` stays `7` in predict, `7 (seven)` when named.
    #[test]
    fn eval_output() {
        let mut cm = ConfusionMatrix::new(3);
        cm.update_indices(&[0, 0, 1, 1, 1, 2, 2, 0], &[0, 0, 1, 1, 2, 2, 2, 1]).unwrap();
        let mut top = TopK::new(2).unwrap();
        top.update_scores(&[0.9, 0.1, 0.0, 0.2, 0.5, 0.3, 0.1, 0.2, 0.7], 3, &[0, 2, 1]).unwrap();
        insta::assert_snapshot!("eval_plain", render_eval(&cm, None, &[], "test set (8 samples)", false));
        let names: Vec<String> = ["cat", "dog", "hedgehog"].iter().map(|s| s.to_string()).collect();
        insta::assert_snapshot!("eval_report_names", render_eval(&cm, Some(&top), &names, "x", true));
        let p = softmax(&[0.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12);
        let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
        assert_eq!(class_label(7, &digits), "7");
        assert_eq!(class_label(1, &names), "1 (dog)");
        assert_eq!(class_label(4, &names), "4");
    }

    /// Writes `model` (of `spec`) as a checkpoint of a default run on the embedded data, one
    /// epoch in, with MNIST's normalisation.
    fn save_checkpoint(path: &Path, spec: &strata_nn::ModelSpec, model: &Sequential) {
        let meta = checkpoint::Meta {
            epoch: 1,
            batch: 0,
            step: 125,
            best_val_acc: None,
            skipped: 0,
            config: toml::to_string(&RunConfig::default()).unwrap(),
            model: strata_nn::model_file::to_toml(spec),
            mean: vec![0.1307],
            std: vec![0.3081],
            classes: vec![],
            extra_state: Default::default(),
            callbacks: Default::default(),
        };
        checkpoint::save(path, model, &strata_nn::StateDict::new(), &meta).unwrap();
    }

    /// A model with more outputs than the evaluation data has classes is refused with both
    /// counts (it used to index past the confusion matrix and panic), and so is one with fewer
    /// (its scores cannot rank the data's classes).
    #[test]
    fn outputs_other_than_the_classes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (outputs, file) in [(12, "twelve.safetensors"), (3, "three.safetensors")] {
            let spec = strata_nn::ModelSpec::new("m").input(&[784]).linear("fc", 784, outputs);
            let model = spec.build().unwrap();
            let path = dir.path().join(file);
            save_checkpoint(&path, &spec, &model);
            let args = EvalArgs { checkpoint: path, data: None, device: None, top_k: None, report: false };
            let e = eval(&args).err().expect("refused").to_string();
            assert!(
                e.contains(file) && e.contains(&format!("{outputs} scores per sample")) && e.contains("10 classes"),
                "{e}"
            );
        }
    }

    /// A checkpoint whose weights went non-finite is refused by `eval` and `predict` (both
    /// `load` it), naming the file and the parameters; the same checkpoint with finite weights
    /// loads.
    #[test]
    fn non_finite_weights_are_refused() {
        let spec = strata_nn::ModelSpec::new("m").input(&[784]).linear("fc", 784, 10);
        let model = spec.build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.safetensors");
        save_checkpoint(&good, &spec, &model);
        assert!(load(&good).is_ok());
        let w = &model.named_parameters()[0].1;
        w.update_::<f32, _>(|v| v[3] = f32::NAN).unwrap();
        let bad = dir.path().join("bad.safetensors");
        save_checkpoint(&bad, &spec, &model);
        let e = load(&bad).err().expect("refused").to_string();
        assert!(e.contains("bad.safetensors") && e.contains("fc.weight") && e.contains("non-finite"), "{e}");
    }
}
