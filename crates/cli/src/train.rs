//! `strata train`: the main job. With no arguments it trains PyTorch's SimpleNN on the embedded
//! MNIST subset (SGD lr 0.01 momentum 0.9, batch 64, 10 epochs). With a run file (and/or flags)
//! it trains any model file on any supported data, logs metrics (`metrics.jsonl`, TensorBoard
//! events), writes checkpoints, resumes bit-identically, and stops cleanly on Ctrl-C.

use crate::check::{Verdict, load_or_report, report_errors};
use crate::checkpoint::{self, Meta};
use crate::config::RunConfig;
use crate::data_setup::{Prepared, prepare};
use crate::schedule::lr_at;
use crate::tensorboard::EventWriter;
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use strata_core::{ConvAlgorithm, DType, Tensor, manual_seed, no_grad};
use strata_data::{BatchSize, DataLoader, Dataset};
use strata_nn::check::{SymShape, check_spec};
use strata_nn::model_file::{parse_model_at, to_toml};
use strata_nn::summary::group_digits;
use strata_nn::{
    Adam, AdamConfig, AdamW, CrossEntropyLoss, ModelSpec, Module, Optimizer, SGD, SgdConfig, SimpleNN, Summary,
};

/// Options of `strata train`. Each flag overrides the run file's key of the same meaning.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// A run file (TOML): model, data, optimizer, schedule, training options.
    run: Option<PathBuf>,
    /// A model file to train (overrides the run file's `model`).
    #[arg(long, value_name = "MODEL.toml")]
    model: Option<PathBuf>,
    /// A folder with the four MNIST IDX files (data.source = "mnist", data.path = DIR); its
    /// t10k pair is the test set, evaluated at the end.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// training.epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// training.batch_size: a number, or `full` for the whole training set per step.
    #[arg(long, value_name = "N|full")]
    batch_size: Option<String>,
    /// optimizer.lr.
    #[arg(long)]
    lr: Option<f64>,
    /// optimizer.momentum.
    #[arg(long)]
    momentum: Option<f64>,
    /// training.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// training.out: the run directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// training.threads.
    #[arg(long)]
    threads: Option<usize>,
    /// training.checkpoint_every (steps).
    #[arg(long, value_name = "STEPS")]
    checkpoint_every: Option<usize>,
    /// training.dtype: build, train, checkpoint and evaluate the model in f32 or f64.
    #[arg(long, value_name = "f32|f64")]
    dtype: Option<String>,
    /// training.conv_algorithm: `default` (as accurate as PyTorch) or `fast` (Winograd F(4×4) on
    /// large planes, ~10× PyTorch's f32 error).
    #[arg(long, value_name = "default|fast")]
    conv_algorithm: Option<String>,
    /// Any other key: `--set optimizer.name=adam --set schedule.name=cosine`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue a run from its newest checkpoint (a run directory or a checkpoint file).
    #[arg(long, value_name = "RUN_DIR")]
    pub(crate) resume: Option<PathBuf>,
    /// Also write the final parameters here as a plain state_dict (PyTorch's key names).
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Print only the final result.
    #[arg(long, conflicts_with = "json")]
    quiet: bool,
    /// Print one JSON object per event (for scripts).
    #[arg(long)]
    json: bool,
    /// Print the training set's per-channel mean and std (for `data.mean` / `data.std`) and exit.
    #[arg(long)]
    compute_stats: bool,
}

/// How progress is reported.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    Human,
    Quiet,
    Json,
}

/// The run's resolved configuration and where it came from.
struct Setup {
    config: RunConfig,
    spec: ModelSpec,
    /// Where the model came from, for the console.
    model_source: Option<String>,
    out: Option<PathBuf>,
    resume: Option<(PathBuf, strata_nn::StateDict, strata_nn::StateDict, Meta)>,
}

fn overrides(args: &TrainArgs) -> Result<Vec<(String, String)>> {
    let mut o = vec![];
    let mut push = |k: &str, v: String| o.push((k.to_string(), v));
    if let Some(d) = &args.data {
        push("data.source", "\"mnist\"".into());
        push("data.path", toml::Value::String(d.display().to_string()).to_string());
    }
    if let Some(e) = args.epochs {
        push("training.epochs", e.to_string());
    }
    if let Some(b) = &args.batch_size {
        let parsed: BatchSize = b.parse().map_err(|e| anyhow::anyhow!("--batch-size: {e}"))?;
        push(
            "training.batch_size",
            toml::Value::try_from(
                parsed
                    .to_string()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .unwrap_or(toml::Value::String("full".into())),
            )?
            .to_string(),
        );
    }
    if let Some(lr) = args.lr {
        push("optimizer.lr", format!("{lr:e}"));
    }
    if let Some(m) = args.momentum {
        push("optimizer.momentum", format!("{m:e}"));
    }
    if let Some(s) = args.seed {
        push("training.seed", s.to_string());
    }
    if let Some(d) = &args.out {
        push("training.out", toml::Value::String(d.display().to_string()).to_string());
    }
    if let Some(t) = args.threads {
        push("training.threads", t.to_string());
    }
    if let Some(c) = args.checkpoint_every {
        push("training.checkpoint_every", c.to_string());
    }
    if let Some(d) = &args.dtype {
        push("training.dtype", toml::Value::String(d.clone()).to_string());
    }
    if let Some(a) = &args.conv_algorithm {
        push("training.conv_algorithm", toml::Value::String(a.clone()).to_string());
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE, e.g. --set optimizer.name=adam"))?;
        o.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(o)
}

/// The model of a run: `--model`, the run file's `model` (path or inline table), or SimpleNN.
fn model_spec(args: &TrainArgs, config: &RunConfig) -> Result<Option<ModelSpec>> {
    let from_file = |p: &Path| load_or_report(p);
    if let Some(p) = &args.model {
        return Ok(from_file(p));
    }
    match (&config.model, &args.run) {
        (Some(toml::Value::String(p)), run) => {
            let base = run.as_ref().and_then(|r| r.parent()).unwrap_or(Path::new(""));
            Ok(from_file(&base.join(p)))
        }
        (Some(toml::Value::Table(_)), Some(run)) => {
            let text = std::fs::read_to_string(run)?;
            let name = run.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            match parse_model_at(&text, &run.display().to_string(), &name, Some("model")) {
                Ok(spec) => Ok(spec),
                Err(errors) => {
                    eprintln!("{errors}");
                    Ok(None)
                }
            }
        }
        (Some(_), _) => bail!("`model` must be a path to a model file or a [model] table"),
        (None, _) => {
            let spec =
                ModelSpec::from_module("SimpleNN", &SimpleNN::new()?).expect("SimpleNN has a spec").input(&[784]);
            Ok(Some(spec))
        }
    }
}

/// Sets up the ops' thread pool, all cores unless the config says otherwise, with this (the
/// training loop's) thread as one of its workers. Must come before the first op: building a
/// model or a data set may already run in parallel.
fn init_threads(threads: Option<usize>) -> Result<()> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    match strata_core::set_num_threads(n) {
        Ok(()) => Ok(()),
        // Already set up (a second run in one process): fine if it has the size asked for.
        Err(_) if strata_core::get_num_threads() == n => Ok(()),
        Err(e) => Err(e).context("setting up the thread pool"),
    }
}

fn setup(args: &TrainArgs) -> Result<Option<Setup>> {
    if let Some(r) = &args.resume {
        let path = checkpoint::latest(r)?;
        let (params, optim, meta) = checkpoint::load(&path)?;
        let base: RunConfig = toml::from_str(&meta.config).context("the checkpoint's run config")?;
        // On resume only the length of the run may change.
        let config = base.with_overrides(&overrides(&TrainArgs { epochs: args.epochs, ..Default::default() })?)?;
        init_threads(config.training.threads)?;
        let spec = strata_nn::model_file::parse_model(&meta.model, "the checkpoint's model", "model")?;
        let out =
            if r.is_dir() { Some(r.clone()) } else { path.parent().and_then(Path::parent).map(Path::to_path_buf) };
        return Ok(Some(Setup { config, spec, model_source: None, out, resume: Some((path, params, optim, meta)) }));
    }
    let base = match &args.run {
        Some(p) => RunConfig::load(p)?,
        None => RunConfig::default(),
    };
    let config = base.with_overrides(&overrides(args)?)?;
    config.validate()?;
    init_threads(config.training.threads)?;
    let Some(mut spec) = model_spec(args, &config)? else { return Ok(None) };
    // The run file's (or flag's) precision and algorithm choice override the model file's.
    if let Some(d) = &config.training.dtype {
        spec.dtype = if d == "f64" { DType::F64 } else { DType::F32 };
    }
    if let Some(a) = &config.training.conv_algorithm {
        spec.conv_algorithm = ConvAlgorithm::from_name(a).expect("validated");
    }
    let model_source = match (&args.model, &config.model, &args.run) {
        (Some(p), _, _) => Some(p.display().to_string()),
        (None, Some(toml::Value::String(p)), run) => {
            Some(run.as_ref().and_then(|r| r.parent()).unwrap_or(Path::new("")).join(p).display().to_string())
        }
        (None, Some(_), Some(run)) => Some(run.display().to_string()),
        _ => None,
    };
    let out = config
        .training
        .out
        .clone()
        .or_else(|| args.run.as_ref().map(|r| PathBuf::from("runs").join(r.file_stem().unwrap_or_default())));
    Ok(Some(Setup { config, spec, model_source, out, resume: None }))
}

/// Everything a run needs before its first step.
pub(crate) struct Built {
    pub config: RunConfig,
    model_source: Option<String>,
    out: Option<PathBuf>,
    resume: Option<(PathBuf, strata_nn::StateDict, strata_nn::StateDict, Meta)>,
    pub data: Prepared,
    /// The shape one sample takes on its way into the model.
    pub sample: Vec<usize>,
    pub resolved: ModelSpec,
    pub model: strata_nn::Sequential,
    params_count: usize,
    pub optimizer: Box<dyn Optimizer>,
}

/// Resolves the config, loads the data, checks the model against it (input and classes) and
/// instantiates model and optimizer. `None` when problems were found and printed.
pub(crate) fn build(args: &TrainArgs) -> Result<Option<Built>> {
    let Some(Setup { config, spec, model_source, out, resume }) = setup(args)? else { return Ok(None) };
    let t = &config.training;
    // strata's datasets hold float features: a model over token ids cannot take them.
    if !spec.input_dtype.is_float() {
        bail!(
            "the model `{}` takes {} token ids (input_dtype), but the training data (images or CSV columns) are float features; train it from Rust on token data, or remove input_dtype if it takes features",
            spec.name,
            strata_nn::check::dtype_name(spec.input_dtype)
        );
    }
    let data = prepare(&config.data, t.seed)?;

    // The model must fit the data before anything is allocated: its input and its classes.
    let sample = spec.input.clone().unwrap_or_else(|| data.train.sample_shape.clone());
    if sample.iter().product::<usize>() != data.train.sample_len() {
        bail!(
            "the model takes samples of shape {sample:?} ({} values), but the data's samples are {:?} ({} values); set `input` in the model file to {:?}",
            sample.iter().product::<usize>(),
            data.train.sample_shape,
            data.train.sample_len(),
            data.train.sample_shape
        );
    }
    let report = check_spec(&spec, Some(&SymShape::batched(&sample)), Some(data.train.num_classes));
    if !report.errors.is_empty() {
        report_errors(&report, &spec.name);
        return Ok(None);
    }
    let resolved = report.resolved.clone();
    manual_seed(t.seed);
    let model = resolved.build()?;
    let params_count = Summary::from_report(&report, 1).total_params;
    let optimizer = make_optimizer(&config, model.parameters())?;
    Ok(Some(Built { config, model_source, out, resume, data, sample, resolved, model, params_count, optimizer }))
}

/// `--compute-stats`: the per-channel mean and standard deviation of the training set, as raw
/// values in [0, 1] before any normalisation, ready for `data.mean` / `data.std`.
fn compute_stats(args: &TrainArgs) -> Result<Verdict> {
    let Some(Setup { config, .. }) = setup(args)? else { return Ok(Verdict::Failed) };
    let mut data_cfg = config.data.clone();
    // Identity normalisation, so the statistics are those of the raw data.
    (data_cfg.mean, data_cfg.std) = (Some(vec![0.0]), Some(vec![1.0]));
    let data = prepare(&data_cfg, config.training.seed)?;
    let (mean, std) = strata_data::compute_stats(&data.train)?;
    println!("statistics of the {} training samples of {}:", group_digits(data.train.len()), data.description);
    println!("[data]\nmean = {mean:?}\nstd = {std:?}");
    Ok(Verdict::Ok)
}

/// Runs the training job.
pub fn run(args: &TrainArgs) -> Result<Verdict> {
    let output = if args.json {
        Output::Json
    } else if args.quiet {
        Output::Quiet
    } else {
        Output::Human
    };
    if args.compute_stats {
        return compute_stats(args);
    }
    let Some(Built { config, model_source, out, resume, data, sample, resolved, model, params_count, mut optimizer }) =
        build(args)?
    else {
        return Ok(Verdict::Failed);
    };
    let t = &config.training;

    // Where the run starts: from scratch, or from a checkpoint.
    let (mut epoch0, mut batch0, mut step, mut best) = (0, 0, 0, None);
    if let Some((path, params, optim, meta)) = &resume {
        model.load_state_dict(params, true).with_context(|| format!("loading {}", path.display()))?;
        optimizer
            .load_state_dict(optim)
            .with_context(|| format!("loading the optimizer state of {}", path.display()))?;
        model
            .load_extra_state(&meta.extra_state)
            .with_context(|| format!("loading the layers' state (Dropout masks) of {}", path.display()))?;
        (epoch0, batch0, step, best) = (meta.epoch, meta.batch, meta.step, meta.best_val_acc);
    }

    let batch_size = t.batch_size.resolve(data.train.len());
    let loader = DataLoader::new(&data.train, batch_size).shuffle(t.seed);
    let steps_per_epoch = loader.num_batches();
    let total_steps = steps_per_epoch * t.epochs;
    let mut logger = Logger::open(out.as_deref(), output, resume.is_some(), step)?;
    if let Some(dir) = &out {
        std::fs::write(dir.join("config.toml"), toml::to_string(&config)?).context("writing config.toml")?;
        std::fs::write(dir.join("model.toml"), to_toml(&resolved)).context("writing model.toml")?;
    }
    let meta_base = Meta {
        epoch: 0,
        batch: 0,
        step: 0,
        best_val_acc: None,
        config: toml::to_string(&config)?,
        model: to_toml(&resolved),
        mean: data.mean.clone(),
        std: data.std.clone(),
        classes: data.classes.clone(),
        extra_state: Default::default(),
    };

    let title = match &model_source {
        Some(src) => format!("{} from {src} ({} parameters, shape-checked)", resolved.name, group_digits(params_count)),
        None => format!("{} ({} parameters)", resolved.name, group_digits(params_count)),
    };
    logger.header(&title, resolved.dtype, &data, &config, batch_size, resume.as_ref().map(|r| r.0.as_path()));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // Only the first handler installation can succeed in a process; tests call run() once.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }

    let criterion = CrossEntropyLoss::new();
    let started = Instant::now();
    let mut last_val = None;
    for epoch in epoch0..t.epochs {
        let t0 = Instant::now();
        let skip = if epoch == epoch0 { batch0 } else { 0 };
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let bar = logger.epoch_bar(epoch, t.epochs, steps_per_epoch as u64, skip as u64);
        let mut stop = None;
        loader.epoch_prefetched(epoch as u64, 2, |batches| -> Result<()> {
            for (i, batch) in batches.enumerate().skip(skip) {
                let lr = lr_at(&config.schedule, config.optimizer.lr, step, steps_per_epoch, total_steps);
                optimizer.set_lr(lr);
                optimizer.zero_grad()?;
                let logits = model.forward(&to_model_input(&batch.x, &sample, resolved.dtype)?)?;
                let loss = criterion.forward(&logits, &batch.y)?;
                loss.backward()?;
                let log_now = t.log_every > 0 && (step + 1) % t.log_every == 0;
                let grad_norm = if log_now { Some(grad_norm(&model)?) } else { None };
                optimizer.step()?;
                step += 1;
                let n = batch.y.numel();
                let l = loss.item()?;
                loss_sum += l * n as f64;
                correct += count_correct(&logits, &batch.y)?;
                seen += n;
                let rate = seen as f64 / t0.elapsed().as_secs_f64();
                if let Some(bar) = &bar {
                    bar.set_position((i + 1) as u64);
                    bar.set_message(format!(
                        "loss {:.4}  acc {:5.2}%  {} samples/s",
                        loss_sum / seen as f64,
                        100.0 * correct as f64 / seen as f64,
                        group_digits(rate as usize)
                    ));
                }
                if log_now {
                    logger.step(epoch + 1, step, l, lr, grad_norm, rate, started.elapsed().as_secs_f64())?;
                }
                let done = i + 1;
                if t.checkpoint_every > 0 && step % t.checkpoint_every == 0 && done < steps_per_epoch {
                    logger.checkpoint(
                        &model,
                        optimizer.as_ref(),
                        &Meta { epoch, batch: done, step, best_val_acc: best, ..meta_base.clone() },
                        t.keep_last,
                    )?;
                }
                if interrupted.load(Ordering::SeqCst) {
                    stop = Some(done);
                    break;
                }
            }
            Ok(())
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Some(done) = stop {
            let at = if done == steps_per_epoch {
                Meta { epoch: epoch + 1, batch: 0, step, best_val_acc: best, ..meta_base.clone() }
            } else {
                Meta { epoch, batch: done, step, best_val_acc: best, ..meta_base.clone() }
            };
            let path = logger.checkpoint(&model, optimizer.as_ref(), &at, t.keep_last)?;
            match path {
                Some(p) => eprintln!(
                    "interrupted at epoch {} step {step}: checkpoint written to {}; continue with `strata train --resume {}`",
                    epoch + 1,
                    p.display(),
                    out.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
                ),
                None => eprintln!(
                    "interrupted at epoch {} step {step} (no run directory, so no checkpoint: pass --out DIR to keep one)",
                    epoch + 1
                ),
            }
            return Ok(Verdict::Interrupted);
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let val = if data.val.is_empty() { None } else { Some(evaluate(&model, &data.val, &sample, resolved.dtype)?) };
        if let Some((_, acc)) = val
            && best.is_none_or(|b| acc > b)
        {
            best = Some(acc);
            if let Some(dir) = &out {
                let meta = Meta { epoch: epoch + 1, batch: 0, step, best_val_acc: best, ..meta_base.clone() };
                checkpoint::save(
                    &checkpoint::dir(dir).join("best.safetensors"),
                    &model,
                    &optimizer.state_dict(),
                    &meta,
                )?;
            }
        }
        last_val = val;
        let rate = if seen > 0 { seen as f64 / train_secs } else { 0.0 };
        let lr = optimizer.lr();
        let train_metrics = (seen > 0).then(|| (loss_sum / seen as f64, correct as f64 / seen as f64));
        logger.epoch(epoch + 1, t.epochs, step, train_metrics, val, lr, rate, started.elapsed().as_secs_f64())?;
        logger.checkpoint(
            &model,
            optimizer.as_ref(),
            &Meta { epoch: epoch + 1, batch: 0, step, best_val_acc: best, ..meta_base.clone() },
            t.keep_last,
        )?;
    }

    if let Some(dir) = &out {
        model.state_dict().save(dir.join("model.safetensors"))?;
    }
    if let Some(path) = &args.save {
        model
            .state_dict()
            .save(path)
            .with_context(|| format!("saving the trained parameters to {}", path.display()))?;
        logger.note(&format!("saved the state_dict to {}", path.display()));
    }
    // The test set is evaluated once, at the very end: its accuracy is the last figure printed.
    let test = data.test.as_ref().map(|d| evaluate(&model, d, &sample, resolved.dtype)).transpose()?;
    logger.finish(t.epochs, step, last_val, test, best, started.elapsed().as_secs_f64())?;
    Ok(Verdict::Ok)
}

/// The optimizer named in the config.
pub fn make_optimizer(config: &RunConfig, params: Vec<Tensor>) -> Result<Box<dyn Optimizer>> {
    let o = &config.optimizer;
    let adam = AdamConfig {
        lr: o.lr,
        betas: (o.betas[0], o.betas[1]),
        eps: o.eps,
        weight_decay: o.weight_decay,
        amsgrad: o.amsgrad,
    };
    Ok(match o.name.as_str() {
        "adam" => Box::new(Adam::with_config(params, adam)?),
        "adamw" => Box::new(AdamW::with_config(params, adam)?),
        _ => Box::new(SGD::with_config(
            params,
            SgdConfig {
                lr: o.lr,
                momentum: o.momentum,
                dampening: o.dampening,
                nesterov: o.nesterov,
                weight_decay: o.weight_decay,
            },
        )?),
    })
}

/// A batch `[B, *data sample]` viewed as `[B, *model sample]` (same element count per sample),
/// in the model's element type (the data sets hold f32).
pub fn to_model_input(x: &Tensor, sample_shape: &[usize], dtype: DType) -> Result<Tensor> {
    let mut dims = vec![x.dims()[0]];
    dims.extend_from_slice(sample_shape);
    Ok(x.reshape(&dims)?.to_dtype(dtype)?)
}

/// Correct predictions in a batch: argmax of the logits equals the label.
fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1, false)?.to_vec::<i64>()?;
    let y = labels.to_vec::<i64>()?;
    Ok(pred.iter().zip(&y).filter(|(p, t)| p == t).count())
}

/// The L2 norm of all gradients together (what `clip_grad_norm_` measures).
fn grad_norm(model: &dyn Module) -> Result<f64> {
    let mut sum = 0.0;
    for p in model.parameters() {
        if let Some(g) = p.grad() {
            sum += g.to_vec_f64().iter().map(|v| v * v).sum::<f64>();
        }
    }
    Ok(sum.sqrt())
}

/// Mean loss and accuracy over a data set, in evaluation mode and without recording the graph.
pub fn evaluate(model: &dyn Module, data: &Dataset, sample: &[usize], dtype: DType) -> Result<(f64, f64)> {
    model.eval();
    let criterion = CrossEntropyLoss::with_reduction(strata_core::Reduction::Sum);
    let result = no_grad(|| -> Result<(f64, usize)> {
        let (mut loss, mut correct) = (0.0, 0);
        for batch in DataLoader::new(data, 1000).epoch(0) {
            let logits = model.forward(&to_model_input(&batch.x, sample, dtype)?)?;
            loss += criterion.forward(&logits, &batch.y)?.item()?;
            correct += count_correct(&logits, &batch.y)?;
        }
        Ok((loss, correct))
    });
    model.train(true);
    let (loss, correct) = result?;
    let n = data.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// Console, metrics.jsonl, TensorBoard and checkpoint output of a run.
struct Logger {
    output: Output,
    dir: Option<PathBuf>,
    metrics: Option<std::fs::File>,
    events: Option<EventWriter>,
    tty: bool,
}

impl Logger {
    fn open(dir: Option<&Path>, output: Output, resuming: bool, resume_step: usize) -> Result<Logger> {
        let (mut metrics, mut events) = (None, None);
        if let Some(d) = dir {
            let metrics_path = d.join("metrics.jsonl");
            if !resuming && metrics_path.exists() {
                bail!(
                    "{} already holds a run; continue it with `strata train --resume {}`, or choose another --out",
                    d.display(),
                    d.display()
                );
            }
            std::fs::create_dir_all(checkpoint::dir(d))
                .with_context(|| format!("creating the run directory {}", d.display()))?;
            if resuming {
                // Lines written after the checkpoint by the interrupted run are dropped, so
                // the log reads as one run.
                let old = std::fs::read_to_string(&metrics_path).unwrap_or_default();
                let kept: String = old
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v["step"].as_u64())
                            .is_some_and(|s| s as usize <= resume_step)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&metrics_path, kept)?;
            }
            metrics = Some(std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?);
            events = Some(
                EventWriter::create(d).with_context(|| format!("creating TensorBoard events in {}", d.display()))?,
            );
        }
        Ok(Logger { output, dir: dir.map(Path::to_path_buf), metrics, events, tty: std::io::stdout().is_terminal() })
    }

    fn emit(&mut self, value: serde_json::Value, scalars: &[(&str, Option<f64>)], step: usize) -> Result<()> {
        if let Some(f) = &mut self.metrics {
            writeln!(f, "{value}")?;
        }
        if let Some(ev) = &mut self.events {
            for (tag, v) in scalars {
                if let Some(v) = v {
                    ev.add_scalar(tag, *v as f32, step as i64)?;
                }
            }
            ev.flush()?;
        }
        if self.output == Output::Json {
            println!("{value}");
        }
        Ok(())
    }

    fn header(
        &mut self,
        model: &str,
        dtype: DType,
        data: &Prepared,
        config: &RunConfig,
        batch: usize,
        resumed: Option<&Path>,
    ) {
        let o = &config.optimizer;
        let t = &config.training;
        let opt = match o.name.as_str() {
            "sgd" => format!("SGD lr {} momentum {}", o.lr, o.momentum),
            name => format!("{} lr {}", if name == "adam" { "Adam" } else { "AdamW" }, o.lr),
        };
        let mut line = format!(
            "CrossEntropyLoss, {opt}{}, batch {batch}, {} epochs, seed {}, {} threads",
            if config.schedule.name == "constant" {
                String::new()
            } else {
                format!(", {} schedule", config.schedule.name)
            },
            t.epochs,
            t.seed,
            rayon::current_num_threads()
        );
        if dtype != DType::F32 {
            line.push_str(&format!(", {}", strata_nn::check::dtype_name(dtype)));
        }
        match self.output {
            Output::Human => {
                println!("strata train: {model}");
                println!("  data: {}", data.description);
                println!("  {line}");
                if let Some(d) = &self.dir {
                    println!("  run directory: {} (metrics.jsonl, checkpoints/)", d.display());
                }
                if let Some(ev) = &self.events {
                    println!(
                        "  TensorBoard events: {} (tensorboard --logdir {})",
                        ev.path().display(),
                        self.dir.as_deref().unwrap_or(Path::new(".")).display()
                    );
                }
                if let Some(p) = resumed {
                    println!("  resumed from {}", p.display());
                }
            }
            Output::Json => println!(
                "{}",
                json!({"event": "start", "model": model, "data": data.description, "setup": line, "run_dir": self.dir, "resumed_from": resumed})
            ),
            Output::Quiet => {}
        }
    }

    fn epoch_bar(&self, epoch: usize, epochs: usize, len: u64, pos: u64) -> Option<ProgressBar> {
        if self.output != Output::Human || !self.tty {
            return None;
        }
        let bar = ProgressBar::new(len).with_position(pos);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "epoch {:>2}/{epochs} [{{bar:25}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
                epoch + 1
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        Some(bar)
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        epoch: usize,
        step: usize,
        loss: f64,
        lr: f64,
        grad_norm: Option<f64>,
        rate: f64,
        time: f64,
    ) -> Result<()> {
        let v = json!({"kind": "step", "epoch": epoch, "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "samples_per_s": rate, "time_s": time});
        self.emit(
            v,
            &[
                ("train/loss", Some(loss)),
                ("train/lr", Some(lr)),
                ("train/grad_norm", grad_norm),
                ("train/samples_per_s", Some(rate)),
            ],
            step,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn epoch(
        &mut self,
        epoch: usize,
        epochs: usize,
        step: usize,
        train: Option<(f64, f64)>,
        val: Option<(f64, f64)>,
        lr: f64,
        rate: f64,
        time: f64,
    ) -> Result<()> {
        let v = json!({"kind": "epoch", "epoch": epoch, "step": step, "train_loss": train.map(|t| t.0), "train_acc": train.map(|t| t.1),
            "val_loss": val.map(|v| v.0), "val_acc": val.map(|v| v.1), "lr": lr, "samples_per_s": rate, "time_s": time});
        let scalars = [
            ("epoch/train_loss", train.map(|t| t.0)),
            ("epoch/train_acc", train.map(|t| t.1)),
            ("epoch/val_loss", val.map(|v| v.0)),
            ("epoch/val_acc", val.map(|v| v.1)),
            ("epoch/lr", Some(lr)),
        ];
        self.emit(v, &scalars, step)?;
        if self.output == Output::Human {
            let train_part =
                train.map_or(String::new(), |(l, a)| format!("loss {l:.4}  train acc {:5.2}%  ", 100.0 * a));
            let val_part = val.map_or(String::new(), |(_, a)| format!("held-out acc {:5.2}%  ", 100.0 * a));
            println!("epoch {epoch:>2}/{epochs}  {train_part}{val_part}{:>7} samples/s", group_digits(rate as usize));
        }
        Ok(())
    }

    fn checkpoint(
        &mut self,
        model: &dyn Module,
        optimizer: &dyn Optimizer,
        meta: &Meta,
        keep: usize,
    ) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let path = checkpoint::step_file(dir, meta.step);
        checkpoint::save(&path, model, &optimizer.state_dict(), meta)?;
        checkpoint::prune(dir, keep)?;
        Ok(Some(path))
    }

    fn finish(
        &mut self,
        epochs: usize,
        step: usize,
        val: Option<(f64, f64)>,
        test: Option<(f64, f64)>,
        best: Option<f64>,
        time: f64,
    ) -> Result<()> {
        if let Some((l, a)) = test {
            self.emit(
                json!({"kind": "test", "epoch": epochs, "step": step, "test_loss": l, "test_acc": a, "time_s": time}),
                &[("test/loss", Some(l)), ("test/acc", Some(a))],
                step,
            )?;
        }
        match self.output {
            Output::Json => println!(
                "{}",
                json!({"event": "done", "time_s": time, "val_acc": val.map(|v| v.1), "best_val_acc": best, "test_acc": test.map(|t| t.1)})
            ),
            _ => {
                let mut line = format!("done in {time:.1} s:");
                if let Some((_, a)) = val {
                    line.push_str(&format!(" held-out accuracy {:.2}%", 100.0 * a));
                }
                if let Some((_, a)) = test {
                    line.push_str(&format!(" test accuracy {:.2}%", 100.0 * a));
                }
                println!("{line}");
            }
        }
        Ok(())
    }

    fn note(&self, text: &str) {
        if self.output == Output::Human {
            println!("{text}");
        }
    }
}
