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
        push("optimizer.lr", toml_float(lr));
    }
    if let Some(m) = args.momentum {
        push("optimizer.momentum", toml_float(m));
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

/// The config as a run directory's `config.toml` stores it, so that `strata train
/// RUN_DIR/config.toml` runs it again as is: the model is the `model.toml` beside it, data paths
/// are absolute, and the output goes to a new directory (`runs/config` unless `--out` says).
fn rerunnable(config: &RunConfig) -> RunConfig {
    let mut c = config.clone();
    c.model = Some(toml::Value::String("model.toml".into()));
    c.training.out = None;
    for p in [&mut c.data.path, &mut c.data.test_path].into_iter().flatten() {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    c
}

/// A float as TOML writes it (`nan`, `inf` included), so a non-finite flag reaches the config's
/// range checks and their message rather than failing to parse as a number.
fn toml_float(v: f64) -> String {
    match v {
        v if v.is_nan() => "nan".into(),
        v if v.is_infinite() => if v > 0.0 { "inf" } else { "-inf" }.into(),
        v => format!("{v:e}"),
    }
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

/// Why `key` of the run config cannot change on `--resume`, or `None` when it can: what the
/// rest of the run can honour exactly as asked (its length, the optimizer's hyper-parameters,
/// the schedule, logging, threads, where the same data now lives) is applied; what would make it
/// a different run than the one checkpointed (the batches, the seed, the model, the optimizer
/// state's kind) is refused.
fn fixed_on_resume(key: &str, base: &RunConfig) -> Option<String> {
    let applied = [
        "training.epochs",
        "training.threads",
        "training.checkpoint_every",
        "training.keep_last",
        "training.log_every",
        // What a diverging run is resumed with: clipping, or skipping the bad steps.
        "training.clip_grad_norm",
        "training.on_divergence",
        "optimizer.lr",
        "optimizer.momentum",
        "optimizer.dampening",
        "optimizer.nesterov",
        "optimizer.weight_decay",
        "optimizer.betas",
        "optimizer.eps",
        "data.path",
        "data.test_path",
    ];
    if applied.contains(&key) || key.starts_with("schedule.") {
        return None;
    }
    Some(match key {
        "optimizer.name" | "optimizer.amsgrad" => format!(
            "the optimizer state in the checkpoint is {}'s{}",
            base.optimizer.name,
            if base.optimizer.amsgrad { " with AMSGrad" } else { "" }
        ),
        "training.batch_size" => "every remaining batch would hold other samples than an uninterrupted run's".into(),
        "training.seed" => {
            "the seed fixed the initial weights, the validation split and the order of every epoch's batches".into()
        }
        "training.dtype" | "training.conv_algorithm" => "the model in the checkpoint was built with it".into(),
        "training.out" => "--resume continues a run in its own directory".into(),
        "model" => "the model is the checkpoint's".into(),
        k if k.starts_with("data.") => "the training data would differ from the run's so far".into(),
        // A key added later and not sorted into either kind yet: refused, to be safe.
        _ => "strata does not carry a change of it into a run under way".into(),
    })
}

/// The flag that sets a run-config key, for messages.
fn flag_of(key: &str) -> String {
    let flag = match key {
        "training.epochs" => "--epochs",
        "training.batch_size" => "--batch-size",
        "optimizer.lr" => "--lr",
        "optimizer.momentum" => "--momentum",
        "training.seed" => "--seed",
        "training.out" => "--out",
        "training.threads" => "--threads",
        "training.checkpoint_every" => "--checkpoint-every",
        "training.dtype" => "--dtype",
        "training.conv_algorithm" => "--conv-algorithm",
        "data.source" | "data.path" => "--data",
        _ => return format!("--set {key}=…"),
    };
    flag.to_string()
}

/// A config as `section.key → value`.
fn flatten(config: &RunConfig) -> Result<std::collections::BTreeMap<String, toml::Value>> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut std::collections::BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) if key != "model" => walk(&key, t, out),
                v => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    let mut out = Default::default();
    walk("", &toml::Table::try_from(config).context("encoding the run config")?, &mut out);
    Ok(out)
}

/// The config of a resumed run: the checkpoint's, with the command line's overrides applied
/// where the rest of the run can honour them (each one said on stderr) and refused where they
/// would break it ([`fixed_on_resume`]). Never ignored.
fn resume_config(base: &RunConfig, args: &TrainArgs, run: &Path, checkpoint: &Path, meta: &Meta) -> Result<RunConfig> {
    if let Some(file) = &args.run {
        bail!(
            "--resume {}: the run file {} cannot be given with --resume: the run's config is the one in its checkpoint {}\nfix: drop {}, and give the keys to change as flags (`--lr 0.001`, `--epochs 20`, `--set schedule.name=cosine`)",
            run.display(),
            file.display(),
            checkpoint.display(),
            file.display()
        );
    }
    if let Some(model) = &args.model {
        bail!(
            "--resume {}: --model {} cannot be given with --resume: the model is the one in its checkpoint {}\nfix: drop --model, or train it as a new run (`strata train --model {} --out NEW_DIR`)",
            run.display(),
            model.display(),
            checkpoint.display(),
            model.display()
        );
    }
    let config = base.with_overrides(&overrides(args)?)?;
    config.validate()?;
    let (old, new) = (flatten(base)?, flatten(&config)?);
    let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), ToString::to_string);
    let mut notes = vec![];
    for key in old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (was, now) = (old.get(key), new.get(key));
        if was == now {
            continue;
        }
        if let Some(why) = fixed_on_resume(key, base) {
            let flag = flag_of(key);
            bail!(
                "--resume {}: {key} cannot change on resume: {flag} asks for {}, the checkpoint {} has {}; {why}, so the resumed run would not be the one checkpointed\nfix: drop {flag} to continue the run, or start a new run with it (`strata train … --out NEW_DIR`)",
                run.display(),
                show(now),
                checkpoint.display(),
                show(was)
            );
        }
        notes.push(format!(
            "overriding {key} {} → {} from the checkpoint {}",
            show(was),
            show(now),
            checkpoint.display()
        ));
    }
    let epochs = config.training.epochs;
    if epochs < meta.epoch || (epochs == meta.epoch && meta.batch > 0) {
        let need = meta.epoch + usize::from(meta.batch > 0);
        bail!(
            "--resume {}: training.epochs = {epochs} (--epochs) ends before the checkpoint {}, which is {} of epoch {}\nfix: give --epochs {need} or more",
            run.display(),
            checkpoint.display(),
            if meta.batch > 0 { format!("at batch {}", meta.batch) } else { "at the end".into() },
            if meta.batch > 0 { meta.epoch + 1 } else { meta.epoch },
        );
    }
    for note in notes {
        eprintln!("{note}");
    }
    Ok(config)
}

/// The checkpoint's position must be one that this training data and batch size reach: the
/// same data as when the run started gives `step = epoch × batches per epoch + batch`.
fn check_resume_position(path: &Path, meta: &Meta, train: &Dataset, batch_size: BatchSize) -> Result<()> {
    let per_epoch = DataLoader::new(train, batch_size).num_batches();
    let expected = meta.epoch.checked_mul(per_epoch).and_then(|s| s.checked_add(meta.batch));
    if (meta.batch > 0 && meta.batch >= per_epoch) || expected != Some(meta.step) {
        bail!(
            "{}: metadata `strata.step` = {} (epoch {} batch {}) does not fit the training data, which now gives {per_epoch} batches of {} per epoch ({} samples): the data changed since the run started\nfix: resume with the data the run was started with",
            path.display(),
            meta.step,
            meta.epoch,
            meta.batch,
            batch_size.resolve(train.len()),
            train.len()
        );
    }
    Ok(())
}

fn setup(args: &TrainArgs) -> Result<Option<Setup>> {
    if let Some(r) = &args.resume {
        if !r.exists() {
            bail!(
                "--resume {}: no such run directory or checkpoint file\nfix: give the run's directory (its --out) or one of its checkpoints/*.safetensors",
                r.display()
            );
        }
        let out = if r.is_dir() { Some(r.clone()) } else { r.parent().and_then(Path::parent).map(Path::to_path_buf) };
        // Locked before any checkpoint is read: no other process may be writing or pruning them.
        if let Some(dir) = out.as_deref().filter(|d| d.is_dir()) {
            crate::run_lock::acquire(dir)?;
        }
        let (path, params, optim, meta) = checkpoint::load_for_resume(r)?;
        let base: RunConfig = toml::from_str(&meta.config)
            .with_context(|| format!("{}: the run config in its metadata (`strata.config`)", path.display()))?;
        let config = resume_config(&base, args, r, &path, &meta)?;
        init_threads(config.training.threads)?;
        let spec =
            strata_nn::model_file::parse_model(&meta.model, &format!("{} (its model)", path.display()), "model")?;
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
    let mut resolved = report.resolved.clone();
    // Checkpoints and run directories store the model with the input shape it was trained on,
    // so `eval` and `predict` can rebuild it when the model file left `input` out.
    resolved.input = Some(sample.clone());
    fits_in_memory(&report, resolved.dtype, t.batch_size.resolve(data.train.len()))?;
    manual_seed(t.seed);
    let model = resolved.build()?;
    let params_count = Summary::from_report(&report, 1).total_params;
    let optimizer = make_optimizer(&config, model.parameters())?;
    Ok(Some(Built { config, model_source, out, resume, data, sample, resolved, model, params_count, optimizer }))
}

/// Refuses, before anything is allocated, a run whose parameters (with gradients and optimizer
/// state) and activations at `batch` samples (kept for backward, and their gradients: twice the
/// outputs) exceed this machine's memory, naming the sizes and the largest batch that fits.
fn fits_in_memory(report: &strata_nn::CheckReport, dtype: DType, batch: usize) -> Result<()> {
    let Some(memory) = strata_core::Device::Cpu.total_memory() else { return Ok(()) };
    let summary = Summary::from_report(report, 1);
    let elem = dtype.size_in_bytes() as u128;
    let params =
        (summary.total_params as u128 + summary.total_non_trainable as u128) * elem * strata_nn::check::TRAINING_COPIES;
    // The summary counts activations in f32 bytes per sample.
    let per_sample = summary.total_activation_bytes as u128 / 4 * elem * 2;
    let need = params.saturating_add(per_sample.saturating_mul(batch as u128));
    if need > u128::from(memory) {
        let fits = u128::from(memory).saturating_sub(params) / per_sample.max(1);
        let largest = summary
            .rows
            .iter()
            .filter(|r| !r.is_block)
            .rev() // the first of equals: a Flatten after a conv shares its buffer
            .max_by_key(|r| r.activation_bytes)
            .map(|r| {
                format!(
                    "; the largest output is `{}`'s, {} per sample",
                    r.path,
                    human_bytes(r.activation_bytes as u128 / 4 * elem)
                )
            })
            .unwrap_or_default();
        bail!(
            "the run needs about {} of memory at batch size {batch} ({} for the parameters with gradients and optimizer state, {} per sample for activations and their gradients{largest}), more than this machine's {}; {}",
            human_bytes(need),
            human_bytes(params),
            human_bytes(per_sample),
            human_bytes(u128::from(memory)),
            if fits >= 1 {
                format!("use --batch-size {} or less", fits.min(u128::from(u32::MAX)))
            } else {
                "make the model smaller".into()
            }
        );
    }
    Ok(())
}

/// Bytes for messages (`usize` saturates, which the summary shows as "more than").
fn human_bytes(b: u128) -> String {
    strata_nn::summary::human_bytes(usize::try_from(b).unwrap_or(usize::MAX))
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
        check_resume_position(path, meta, &data.train, t.batch_size)?;
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
    let layout = InputLayout::of(&resolved, &sample);
    let loader = DataLoader::new(&data.train, batch_size).shuffle(t.seed);
    let steps_per_epoch = loader.num_batches();
    let total_steps = steps_per_epoch * t.epochs;
    let mut logger = Logger::open(out.as_deref(), output, resume.is_some(), step)?;
    if let Some(dir) = &out {
        std::fs::write(dir.join("config.toml"), toml::to_string(&rerunnable(&config))?)
            .context("writing config.toml")?;
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
    // Steps skipped for a non-finite loss or gradient (`training.on_divergence = "skip"`).
    let mut skipped = 0usize;
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
                let input = layout.apply(&batch.x)?;
                let logits = model.forward(&input)?;
                let loss = criterion.forward(&logits, &batch.y)?;
                loss.backward()?;
                let l = loss.item()?;
                let log_now = t.log_every > 0 && (step + 1) % t.log_every == 0;
                // The gradients' norm, clipped when asked; a non-finite loss or gradient is a
                // divergence: the step is skipped or the run stops, naming where it happened.
                let params = model.parameters();
                let grad_norm = match t.clip_grad_norm {
                    Some(max) => Some(strata_nn::optim::clip_grad_norm_(&params, max)?),
                    None if log_now => Some(grad_norm(&model)?),
                    None => None,
                };
                let grads_finite = match grad_norm {
                    Some(norm) => norm.is_finite(),
                    None => params.iter().all(|p| p.grad().is_none_or(|g| g.all_finite())),
                };
                if !l.is_finite() || !grads_finite {
                    if t.on_divergence == "skip" {
                        skipped += 1;
                        step += 1;
                        // The first few and then every hundredth, not a line per step.
                        let say = skipped <= 3 || skipped.is_multiple_of(100);
                        say.then(|| {
                            logger.note(&format!(
                                "epoch {} step {step}: {} non-finite, step skipped ({skipped} so far)",
                                epoch + 1,
                                if l.is_finite() { "a gradient is" } else { "the loss is" }
                            ))
                        });
                        continue;
                    }
                    let report = diagnose(&model, &input, &batch.y, l);
                    bail!("{}", divergence_message(epoch + 1, step + 1, i + 1, steps_per_epoch, &report, &config));
                }
                optimizer.step()?;
                if !params.iter().all(Tensor::all_finite) {
                    let report = diagnose(&model, &input, &batch.y, l);
                    bail!("{}", divergence_message(epoch + 1, step + 1, i + 1, steps_per_epoch, &report, &config));
                }
                step += 1;
                let n = batch.y.numel();
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
        if seen == 0 && stop.is_none() && skipped > 0 {
            bail!(
                "training diverged: every step of epoch {} had a non-finite loss or gradient and was skipped ({skipped} skipped in all); \
                 try a lower learning rate (--lr, now {}) or gradient clipping (training.clip_grad_norm = 1.0)",
                epoch + 1,
                config.optimizer.lr
            );
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
        let val = if data.val.is_empty() { None } else { Some(evaluate(&model, &data.val, &layout)?) };
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
    if skipped > 0 {
        logger.note(&format!(
            "{skipped} steps were skipped for a non-finite loss or gradient (training.on_divergence = \"skip\")"
        ));
    }
    // The test set is evaluated once, at the very end: its accuracy is the last figure printed.
    let test = data.test.as_ref().map(|d| evaluate(&model, d, &layout)).transpose()?;
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

/// How a batch from the data sets (`[B, *data sample]`, f32) becomes the model's input.
#[derive(Clone, Debug)]
pub struct InputLayout {
    /// The model's sample shape (same element count as the data's).
    pub sample: Vec<usize>,
    /// Where the batch goes: 0, or 1 for a model that reads time-major sequences `[T, N, F]`
    /// (`strata_nn::check::input_batch_dim`).
    pub batch_dim: usize,
    /// The model's element type.
    pub dtype: DType,
}

impl InputLayout {
    /// The layout `spec` takes for samples of shape `sample`.
    pub fn of(spec: &ModelSpec, sample: &[usize]) -> InputLayout {
        let batch_dim = strata_nn::check::input_batch_dim(spec, sample.len());
        InputLayout { sample: sample.to_vec(), batch_dim, dtype: spec.dtype }
    }

    /// A batch `[B, *data sample]` as the model's input: viewed as `[B, *model sample]`, the batch
    /// moved to `batch_dim` (`[T, B, F]` for a time-major model), in the model's element type.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = vec![x.dims()[0]];
        dims.extend_from_slice(&self.sample);
        let x = x.reshape(&dims)?;
        let x = if self.batch_dim == 1 { x.transpose(0, 1)? } else { x };
        Ok(x.to_dtype(self.dtype)?)
    }
}

/// Where a diverged step first went non-finite, in words: the input, a parameter, the first
/// layer (in forward order) whose output did, the loss, or the first gradient backward reached.
fn diagnose(model: &strata_nn::Sequential, input: &Tensor, target: &Tensor, loss: f64) -> String {
    /// The first layer under `m` (a Sequential) whose output is non-finite for input `x`: its path
    /// and description, descending into nested Sequential blocks; or `None` and the output.
    fn first_bad(prefix: &str, m: &dyn Module, x: &Tensor) -> Result<std::result::Result<Tensor, String>> {
        let mut h = x.clone();
        for (name, child) in m.children() {
            let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            let y = child.forward(&h)?;
            if !y.all_finite() {
                if matches!(child.spec(), Some(strata_nn::LayerSpec::Sequential(_)))
                    && let Err(inner) = first_bad(&path, child, &h)?
                {
                    return Ok(Err(inner));
                }
                return Ok(Err(format!("the output of layer `{path}` ({}), from a finite input", child.describe())));
            }
            h = y;
        }
        Ok(Ok(h))
    }
    let _no_grad = strata_core::NoGradGuard::new();
    let mut found = vec![];
    let bad_params: Vec<String> =
        model.named_parameters().into_iter().filter(|(_, p)| !p.all_finite()).map(|(n, _)| n).collect();
    if !bad_params.is_empty() {
        found.push(format!(
            "parameters already non-finite (the previous update made them so): {}",
            bad_params.join(", ")
        ));
    }
    if !input.all_finite() {
        found.push("the input batch holds non-finite values: check the data and its normalisation".into());
    } else {
        match first_bad("", model, input) {
            Ok(Err(where_)) => found.push(where_),
            Ok(Ok(logits)) if !loss.is_finite() => {
                let top = logits.to_vec_f64().iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let targets_ok = target.to_vec_f64().iter().all(|v| v.is_finite());
                found.push(format!(
                    "the loss: the logits are finite (largest magnitude {top:.3e}) but the loss is {loss}{}",
                    if targets_ok { "" } else { " (the targets hold non-finite values)" }
                ));
            }
            Ok(Ok(_)) => {}
            Err(e) => found.push(format!("(re-running the forward pass layer by layer failed: {e})")),
        }
    }
    if found.is_empty() || loss.is_finite() {
        // Backward reaches the last layers first: the last parameter in forward order with a
        // non-finite gradient is where the gradient first went non-finite.
        let bad_grads: Vec<String> = model
            .named_parameters()
            .into_iter()
            .filter(|(_, p)| p.grad().is_some_and(|g| !g.all_finite()))
            .map(|(n, _)| n)
            .collect();
        if let Some(last) = bad_grads.last() {
            found.push(format!(
                "the gradient, first at `{last}` (backward reaches it first; {} parameter gradient{} non-finite)",
                bad_grads.len(),
                if bad_grads.len() == 1 { " is" } else { "s are" }
            ));
        }
    }
    if found.is_empty() {
        found.push("the parameters after the update".into());
    }
    found.join("\n  first non-finite: ")
}

/// The error of a diverged run: where, what went non-finite, and what to try.
fn divergence_message(
    epoch: usize,
    step: usize,
    batch: usize,
    batches: usize,
    report: &str,
    config: &RunConfig,
) -> String {
    let o = &config.optimizer;
    let clip = match config.training.clip_grad_norm {
        Some(c) => format!("a smaller training.clip_grad_norm (now {c})"),
        None => "gradient clipping (training.clip_grad_norm = 1.0, or --set training.clip_grad_norm=1.0)".into(),
    };
    format!(
        "training diverged at epoch {epoch}, step {step} (batch {batch} of {batches}): a non-finite loss, gradient or parameter\n  \
         first non-finite: {report}\n  \
         nothing from this step on was saved (checkpoints and `best` hold the last finite model)\n  \
         try: a lower learning rate (--lr, now {}), {clip}, or training.on_divergence = \"skip\" to skip such steps",
        o.lr
    )
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
pub fn evaluate(model: &dyn Module, data: &Dataset, layout: &InputLayout) -> Result<(f64, f64)> {
    model.eval();
    let criterion = CrossEntropyLoss::with_reduction(strata_core::Reduction::Sum);
    let result = no_grad(|| -> Result<(f64, usize)> {
        let (mut loss, mut correct) = (0.0, 0);
        for batch in DataLoader::new(data, 1000).epoch(0) {
            let logits = model.forward(&layout.apply(&batch.x)?)?;
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

/// Clears a run directory whose run stopped before its first checkpoint — nothing to resume —
/// so that the same command starts the run over in place: its logs (metrics.jsonl, TensorBoard
/// events) and resolved config go; the lock file stays.
fn restart_in_place(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading the run directory {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["metrics.jsonl", "config.toml", "model.toml"].contains(&name.as_str())
            || name.starts_with("events.out.tfevents.")
        {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {} to start the run over", entry.path().display()))?;
        }
    }
    eprintln!(
        "{}: its run stopped before its first checkpoint, so there is nothing to resume: starting it over in place",
        dir.display()
    );
    Ok(())
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
            std::fs::create_dir_all(checkpoint::dir(d))
                .with_context(|| format!("creating the run directory {}", d.display()))?;
            // One writer per run directory (a resumed run took the lock before reading its
            // checkpoint already).
            crate::run_lock::acquire(d)?;
            if !resuming && metrics_path.exists() {
                if checkpoint::any(d) || d.join("model.safetensors").exists() {
                    bail!(
                        "{} already holds a run; continue it with `strata train --resume {}`, or choose another --out",
                        d.display(),
                        d.display()
                    );
                }
                restart_in_place(d)?;
            }
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
                // Atomically: a run killed while resuming must not lose the log of the run so far.
                strata_nn::state_dict::atomic_write(&metrics_path, kept.as_bytes())
                    .with_context(|| format!("rewriting {}", metrics_path.display()))?;
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
                println!("  normalisation: {}", data.normalization);
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
                json!({"event": "start", "model": model, "data": data.description, "normalization": data.normalization, "setup": line, "run_dir": self.dir, "resumed_from": resumed})
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
                // `wide_bar` takes what the terminal's width leaves, so the line never wraps.
                "epoch {:>2}/{epochs} [{{wide_bar}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
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
        let v = json!({"event": "step", "epoch": epoch, "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "samples_per_s": rate, "time_s": time});
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
        let v = json!({"event": "epoch", "epoch": epoch, "step": step, "train_loss": train.map(|t| t.0), "train_acc": train.map(|t| t.1),
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
                json!({"event": "test", "epoch": epochs, "step": step, "test_loss": l, "test_acc": a, "time_s": time}),
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
