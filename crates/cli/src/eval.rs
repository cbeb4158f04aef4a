//! `strata eval` (accuracy, per-class precision and recall, confusion matrix) and `strata
//! predict` (class probabilities for an image file or an IDX record), both from a checkpoint:
//! the checkpoint carries the model file, the normalisation and the data config it was trained
//! with, so nothing else needs to be given.

use crate::check::Verdict;
use crate::checkpoint;
use crate::config::RunConfig;
use crate::data_setup::prepare;
use crate::train::InputLayout;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use strata_core::{Tensor, no_grad};
use strata_data::{DataLoader, ImageFolderOptions, load_image, read_idx};
use strata_nn::model_file::parse_model;
use strata_nn::{Module, Sequential};

/// Options of `strata eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint file, or a run directory (its best checkpoint, else its newest).
    checkpoint: PathBuf,
    /// Evaluate on the MNIST folder's t10k test set instead of the run's own test/validation data.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Where to run the model: `cpu` (the default), `gpu` or `gpu:N`.
    #[arg(long, value_name = "cpu|gpu|gpu:N")]
    device: Option<String>,
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
    #[arg(long, value_delimiter = ',')]
    index: Vec<usize>,
    /// How many classes to show per input.
    #[arg(long, default_value_t = 3)]
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
    let file = if path.is_dir() {
        let best = checkpoint::dir(path).join("best.safetensors");
        if best.exists() { best } else { checkpoint::latest(path)? }
    } else {
        path.to_path_buf()
    };
    let (params, _, meta) = checkpoint::load(&file)?;
    let spec = parse_model(&meta.model, &format!("{} (its model)", file.display()), "model")?;
    // Evaluation runs the whole model on one device (`--device`): a placement the run was
    // trained with is left out, so a checkpoint from several GPUs evaluates on a CPU-only machine.
    let model = spec.clone().without_placement().build()?;
    model.load_state_dict(&params, true).with_context(|| format!("loading {}", file.display()))?;
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
    let layout = InputLayout::of(&spec, &sample);
    Ok(Loaded { model, sample, layout, file, meta, config })
}

/// Runs `strata eval`.
pub fn eval(args: &EvalArgs) -> Result<Verdict> {
    let l = load_on(&args.checkpoint, args.device.as_deref())?;
    let mut data_cfg = l.config.data.clone();
    if let Some(d) = &args.data {
        data_cfg.source = "mnist".into();
        data_cfg.path = Some(d.clone());
    }
    // The normalisation the model was trained with, whatever the data's own statistics.
    (data_cfg.mean, data_cfg.std) = (Some(l.meta.mean.clone()), Some(l.meta.std.clone()));
    let data = prepare(&data_cfg, l.config.training.seed)?;
    let (set, name) = match &data.test {
        Some(t) => (t, "test set"),
        None => (&data.val, "held-out set"),
    };
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
    let mut confusion = vec![vec![0usize; k]; k];
    no_grad(|| -> Result<()> {
        for batch in DataLoader::new(set, 1000).epoch(0) {
            let logits = l.model.forward(&l.layout.apply(&batch.x)?)?;
            let outputs = logits.dims().get(1).copied().unwrap_or(0);
            if logits.ndim() != 2 || outputs > k {
                bail!(
                    "{}: the model gives {} scores per sample (logits {}), but the {name} has {k} classes: evaluate it on data with its {outputs} classes (--data DIR)",
                    l.file.display(),
                    outputs,
                    logits.shape()
                );
            }
            let pred = logits.argmax(1, false)?.to_vec::<i64>()?;
            for (p, y) in pred.iter().zip(batch.y.to_vec::<i64>()?) {
                confusion[y as usize][*p as usize] += 1;
            }
        }
        Ok(())
    })?;
    print!("{}", render_eval(&confusion, &data.classes, &format!("{} ({} samples)", name, set.len())));
    Ok(Verdict::Ok)
}

/// Accuracy, per-class precision/recall and the confusion matrix (rows: true, columns: predicted).
fn render_eval(confusion: &[Vec<usize>], classes: &[String], what: &str) -> String {
    let k = confusion.len();
    let total: usize = confusion.iter().flatten().sum();
    let right: usize = (0..k).map(|i| confusion[i][i]).sum();
    let name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut s = format!("{what}: accuracy {:.2}% ({right}/{total})\n\n", 100.0 * right as f64 / total.max(1) as f64);
    s.push_str("class  precision  recall  support\n");
    for (c, row) in confusion.iter().enumerate() {
        let predicted: usize = confusion.iter().map(|r| r[c]).sum();
        let support: usize = row.iter().sum();
        let pct =
            |a: usize, b: usize| if b == 0 { "-".to_string() } else { format!("{:.2}%", 100.0 * a as f64 / b as f64) };
        s.push_str(&format!(
            "{:>5}  {:>9}  {:>6}  {:>7}\n",
            name(c),
            pct(row[c], predicted),
            pct(row[c], support),
            support
        ));
    }
    s.push_str("\nconfusion matrix (rows: true class, columns: predicted)\n      ");
    for c in 0..k {
        s.push_str(&format!("{:>6}", name(c)));
    }
    s.push('\n');
    for (r, row) in confusion.iter().enumerate() {
        s.push_str(&format!("{:>6}", name(r)));
        for v in row {
            s.push_str(&format!("{v:>6}"));
        }
        s.push('\n');
    }
    s
}

/// Runs `strata predict`.
pub fn predict(args: &PredictArgs) -> Result<Verdict> {
    let l = load_on(&args.checkpoint, args.device.as_deref())?;
    let numel: usize = l.sample.iter().product();
    let mut inputs: Vec<(String, Vec<f32>)> = vec![];
    for path in &args.images {
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
    if inputs.is_empty() {
        bail!("nothing to predict: give image files, or --idx FILE --index N");
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
            .take(args.top.max(1))
            .map(|&c| {
                format!("{} {:.2}%", l.meta.classes.get(c).cloned().unwrap_or_else(|| c.to_string()), 100.0 * probs[c])
            })
            .collect();
        println!("{name}: {}", shown.join(", "));
    }
    Ok(Verdict::Ok)
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

    #[test]
    fn eval_table_by_hand() {
        let c = vec![vec![3, 1], vec![0, 4]];
        let s = render_eval(&c, &[], "x");
        assert!(s.starts_with("x: accuracy 87.50% (7/8)"));
        assert!(s.contains("    0    100.00%  75.00%        4"), "{s}");
        assert!(s.contains("    1     80.00%  100.00%        4") || s.contains("    1     80.00%  100.00%"), "{s}");
        let p = softmax(&[0.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12);
    }

    /// Writes `model` (of `spec`) as a checkpoint of a default run on the embedded data, one
    /// epoch in, with MNIST's normalisation.
    fn save_checkpoint(path: &Path, spec: &strata_nn::ModelSpec, model: &Sequential) {
        let meta = checkpoint::Meta {
            epoch: 1,
            batch: 0,
            step: 125,
            best_val_acc: None,
            config: toml::to_string(&RunConfig::default()).unwrap(),
            model: strata_nn::model_file::to_toml(spec),
            mean: vec![0.1307],
            std: vec![0.3081],
            classes: vec![],
            extra_state: Default::default(),
        };
        checkpoint::save(path, model, &strata_nn::StateDict::new(), &meta).unwrap();
    }

    /// A model with more outputs than the evaluation data has classes is refused with both
    /// counts (it used to index past the confusion matrix and panic).
    #[test]
    fn more_outputs_than_classes_is_an_error() {
        let spec = strata_nn::ModelSpec::new("m").input(&[784]).linear("fc", 784, 12);
        let model = spec.build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twelve.safetensors");
        save_checkpoint(&path, &spec, &model);
        let e = eval(&EvalArgs { checkpoint: path, data: None, device: None }).err().expect("refused").to_string();
        assert!(
            e.contains("twelve.safetensors") && e.contains("12 scores per sample") && e.contains("10 classes"),
            "{e}"
        );
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
