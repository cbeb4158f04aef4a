//! `strata train`: the main job. SimpleNN (or any model file that checks), cross-entropy, SGD
//! with momentum, mini-batches of 64, on the embedded 8,000/2,000 MNIST split; prints loss,
//! held-out accuracy and throughput per epoch.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use strata_core::{Tensor, manual_seed, no_grad};
use strata_data::{DataLoader, Dataset, EMBEDDED_SPLIT_SEED, MNIST_MEAN, MNIST_STD, embedded_mnist};
use strata_nn::check::check_spec;
use strata_nn::summary::group_digits;
use strata_nn::{CrossEntropyLoss, Module, Optimizer, SGD, SgdConfig, SimpleNN, Summary};

use crate::check::{Verdict, load_or_report, report_errors};

/// Options of `strata train`; every one has a default, so `strata train` alone is the demo.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A model file (TOML) to train instead of the built-in SimpleNN; it is shape-checked first.
    #[arg(long, value_name = "MODEL.toml")]
    model: Option<PathBuf>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// SGD momentum (0 for plain SGD).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Seed for the initial weights and the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the trained parameters here as a safetensors state_dict (PyTorch's key names).
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
}

/// Runs the training job.
pub fn run(args: &TrainArgs) -> Result<Verdict> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global().context("setting up the thread pool")?;
    }

    let (mut train, mut held_out) = embedded_mnist().context("decoding the embedded MNIST subset")?;
    train.normalize(MNIST_MEAN, MNIST_STD)?;
    held_out.normalize(MNIST_MEAN, MNIST_STD)?;

    manual_seed(args.seed);
    let data_sample = train.sample_shape.clone();
    // The model, the shape one sample takes on its way in, and a one-line description.
    let (model, sample_shape, title): (Box<dyn Module>, Vec<usize>, String) = match &args.model {
        None => {
            let model = SimpleNN::new()?;
            let title =
                format!("SimpleNN 784 → 128 → 64 → 10 (ReLU), {} parameters", group_digits(model.num_parameters()));
            (Box::new(model), vec![784], title)
        }
        Some(path) => {
            let Some(spec) = load_or_report(path) else { return Ok(Verdict::Failed) };
            let sample = spec.input.clone().unwrap_or_else(|| data_sample.clone());
            let numel: usize = sample.iter().product();
            if numel != train.sample_len() {
                bail!(
                    "{}: the model takes samples of shape {sample:?} ({numel} values), but the data's samples are {data_sample:?} ({} values); set `input` in the model file to {data_sample:?} or [{}]",
                    path.display(),
                    train.sample_len(),
                    train.sample_len()
                );
            }
            let report = check_spec(&spec, Some(&strata_nn::SymShape::batched(&sample)), Some(train.num_classes));
            if !report.errors.is_empty() {
                report_errors(&report, &path.display().to_string());
                return Ok(Verdict::Failed);
            }
            let params = Summary::from_report(&report, 1).total_params;
            let model = report.resolved.build()?;
            (
                Box::new(model),
                sample,
                format!("{} from {} (shape-checked: {} parameters)", spec.name, path.display(), group_digits(params)),
            )
        }
    };
    let criterion = CrossEntropyLoss::new();
    let mut optimizer =
        SGD::with_config(model.parameters(), SgdConfig { lr: args.lr, momentum: args.momentum, ..Default::default() })?;

    println!("strata train: {title}");
    println!(
        "  data: embedded MNIST subset, {} training / {} held-out images (split seed {EMBEDDED_SPLIT_SEED:#x})",
        group_digits(train.len()),
        group_digits(held_out.len())
    );
    println!(
        "  CrossEntropyLoss, SGD lr {} momentum {}, batch {}, {} epochs, seed {}, {} threads",
        args.lr,
        args.momentum,
        args.batch_size,
        args.epochs,
        args.seed,
        rayon::current_num_threads()
    );

    let loader = DataLoader::new(&train, args.batch_size).shuffle(args.seed);
    let started = Instant::now();
    let mut last_acc = 0.0;
    for epoch in 0..args.epochs {
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for batch in loader.epoch(epoch as u64) {
            let x = to_model_input(&batch.x, &sample_shape)?;
            optimizer.zero_grad()?;
            let logits = model.forward(&x)?;
            let loss = criterion.forward(&logits, &batch.y)?;
            loss.backward()?;
            optimizer.step()?;
            let n = batch.y.numel();
            loss_sum += loss.item()? * n as f64;
            correct += count_correct(&logits, &batch.y)?;
            seen += n;
        }
        let train_secs = t0.elapsed().as_secs_f64();
        last_acc = accuracy(model.as_ref(), &held_out, &sample_shape)?;
        println!(
            "epoch {:>2}/{}  loss {:.4}  train acc {:5.2}%  held-out acc {:5.2}%  {:>7} samples/s",
            epoch + 1,
            args.epochs,
            loss_sum / seen as f64,
            100.0 * correct as f64 / seen as f64,
            100.0 * last_acc,
            group_digits((seen as f64 / train_secs) as usize)
        );
    }
    println!("done in {:.1} s: held-out accuracy {:.2}%", started.elapsed().as_secs_f64(), 100.0 * last_acc);
    if let Some(path) = &args.save {
        model
            .state_dict()
            .save(path)
            .with_context(|| format!("saving the trained parameters to {}", path.display()))?;
        println!("saved the state_dict to {}", path.display());
    }
    Ok(Verdict::Ok)
}

/// A batch `[B, *data sample]` viewed as `[B, *model sample]` (same element count per sample).
fn to_model_input(x: &Tensor, sample_shape: &[usize]) -> Result<Tensor> {
    let mut dims = vec![x.dims()[0]];
    dims.extend_from_slice(sample_shape);
    Ok(x.reshape(&dims)?)
}

/// Correct predictions in a batch: argmax of the logits equals the label.
fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1, false)?.to_vec::<i64>()?;
    let y = labels.to_vec::<i64>()?;
    Ok(pred.iter().zip(&y).filter(|(p, t)| p == t).count())
}

/// Accuracy over a whole data set, in evaluation mode and without recording the graph.
fn accuracy(model: &dyn Module, data: &Dataset, sample_shape: &[usize]) -> Result<f64> {
    model.eval();
    let correct = no_grad(|| -> Result<usize> {
        let mut correct = 0;
        for batch in DataLoader::new(data, 1000).epoch(0) {
            correct += count_correct(&model.forward(&to_model_input(&batch.x, sample_shape)?)?, &batch.y)?;
        }
        Ok(correct)
    })?;
    model.train(true);
    Ok(correct as f64 / data.len().max(1) as f64)
}
