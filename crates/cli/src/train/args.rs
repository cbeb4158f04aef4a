//! `strata train`'s command line: the flags, how output is reported, and the flags turned into
//! run-file overrides.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use strata_data::BatchSize;

/// Options of `strata train`. Each flag overrides the run file's key of the same meaning.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// A run file (TOML): model, data, optimizer, schedule, training options.
    pub(super) run: Option<PathBuf>,
    /// A model file to train (overrides the run file's `model`).
    #[arg(long, value_name = "MODEL.toml")]
    pub(super) model: Option<PathBuf>,
    /// A folder with the four MNIST IDX files (data.source = "mnist", data.path = DIR; its
    /// t10k pair is the test set, evaluated at the end), or a CSV file (`*.csv`, `*.csv.gz`:
    /// data.source = "csv").
    #[arg(long, value_name = "DIR|FILE.csv")]
    pub(super) data: Option<PathBuf>,
    /// training.epochs.
    #[arg(long)]
    pub(super) epochs: Option<usize>,
    /// training.batch_size: a number, or `full` for the whole training set per step.
    #[arg(long, value_name = "N|full")]
    pub(super) batch_size: Option<String>,
    /// optimizer.lr.
    #[arg(long)]
    pub(super) lr: Option<f64>,
    /// optimizer.momentum.
    #[arg(long)]
    pub(super) momentum: Option<f64>,
    /// training.seed.
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// training.out: the run directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// training.threads.
    #[arg(long)]
    pub(super) threads: Option<usize>,
    /// training.checkpoint_every (steps).
    #[arg(long, value_name = "STEPS")]
    pub(super) checkpoint_every: Option<usize>,
    /// training.dtype: build, train, checkpoint and evaluate the model in f32 or f64.
    #[arg(long, value_name = "f32|f64")]
    pub(super) dtype: Option<String>,
    /// training.device: where to train, `cpu`, `gpu` or `gpu:N` (`strata devices` lists them).
    #[arg(long, value_name = "cpu|gpu|gpu:N")]
    pub(super) device: Option<String>,
    /// training.device_map: layers placed on devices, over the model file's `device` keys:
    /// `encoder=gpu:0,head=cpu` (dotted layer paths; unplaced layers run on --device).
    #[arg(long, value_name = "LAYER=DEVICE,…")]
    pub(super) device_map: Option<String>,
    /// training.conv_algorithm: `default` (as accurate as PyTorch) or `fast` (Winograd F(4×4) on
    /// large planes, ~10× PyTorch's f32 error).
    #[arg(long, value_name = "default|fast")]
    pub(super) conv_algorithm: Option<String>,
    /// training.accumulate: cut each batch into N micro-batches, one gradient step per batch
    /// (gradient accumulation, the same numbers as N MPI processes).
    #[arg(long, value_name = "N")]
    pub(super) accumulate: Option<usize>,
    /// training.pipeline_chunks: train a model placed over several devices as a pipeline
    /// (GPipe), each batch cut into K micro-batches that the devices work on at the same time
    /// (the same numbers as --accumulate K).
    #[arg(long, value_name = "K")]
    pub(super) pipeline_chunks: Option<usize>,
    /// training.sync_bn: under mpirun, BatchNorm normalises with the global batch's statistics
    /// (PyTorch's SyncBatchNorm) rather than each process's own.
    #[arg(long)]
    pub(super) sync_bn: bool,
    /// training.bucket_cap_mb: under mpirun, the size of the gradient buckets exchanged while
    /// backward runs (PyTorch DDP's bucket_cap_mb; 0: one bucket after backward).
    #[arg(long, value_name = "MIB")]
    pub(super) bucket_cap_mb: Option<f64>,
    /// training.precision: bf16 for mixed precision (bf16 matrix products, f32 accumulation and
    /// master weights, as torch.autocast on the CPU), f32 by default.
    #[arg(long, value_name = "f32|bf16")]
    pub(super) precision: Option<String>,
    /// Any other key: `--set optimizer.name=adam --set schedule.name=cosine`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(super) set: Vec<String>,
    /// Continue a run from its newest checkpoint (a run directory or a checkpoint file).
    #[arg(long, value_name = "RUN_DIR")]
    pub(crate) resume: Option<PathBuf>,
    /// training.init: start from these weights, a PyTorch `.pt` (torch.save state_dict) or a
    /// safetensors file, checked against the model first.
    #[arg(long, value_name = "FILE")]
    pub(crate) init: Option<PathBuf>,
    /// Also write the final parameters here as a plain state_dict (PyTorch's key names).
    #[arg(long, value_name = "FILE")]
    pub(super) save: Option<PathBuf>,
    /// Replace the --save file if it exists (never one of the run's own inputs).
    #[arg(long, requires = "save")]
    pub(super) force: bool,
    /// Print only the final result.
    #[arg(long, conflicts_with = "json")]
    pub(super) quiet: bool,
    /// Print one JSON object per event (for scripts).
    #[arg(long)]
    pub(super) json: bool,
    /// Print the training set's per-channel mean and std (for `data.mean` / `data.std`) and exit.
    #[arg(long)]
    pub(super) compute_stats: bool,
}

/// How progress is reported.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Output {
    Human,
    Quiet,
    Json,
}

pub(super) fn overrides(args: &TrainArgs) -> Result<Vec<(String, String)>> {
    let mut o = vec![];
    let mut push = |k: &str, v: String| o.push((k.to_string(), v));
    if let Some(d) = &args.data {
        push("data.source", format!("\"{}\"", crate::data_setup::data_source_of(d)));
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
    if let Some(p) = &args.init {
        push("training.init", toml::Value::String(p.display().to_string()).to_string());
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
    if let Some(d) = &args.device {
        push("training.device", toml::Value::String(d.clone()).to_string());
    }
    if let Some(m) = &args.device_map {
        push("training.device_map", toml::Value::String(m.clone()).to_string());
    }
    if let Some(a) = &args.conv_algorithm {
        push("training.conv_algorithm", toml::Value::String(a.clone()).to_string());
    }
    if let Some(n) = args.accumulate {
        push("training.accumulate", n.to_string());
    }
    if let Some(k) = args.pipeline_chunks {
        push("training.pipeline_chunks", k.to_string());
    }
    if args.sync_bn {
        push("training.sync_bn", "true".into());
    }
    if let Some(c) = args.bucket_cap_mb {
        push("training.bucket_cap_mb", toml_float(c));
    }
    if let Some(p) = &args.precision {
        push("training.precision", toml::Value::String(p.clone()).to_string());
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE, e.g. --set optimizer.name=adam"))?;
        o.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(o)
}

/// A float as TOML writes it (`nan`, `inf` included), so a non-finite flag reaches the config's
/// range checks and their message rather than failing to parse as a number.
pub(super) fn toml_float(v: f64) -> String {
    match v {
        v if v.is_nan() => "nan".into(),
        v if v.is_infinite() => if v > 0.0 { "inf" } else { "-inf" }.into(),
        v => format!("{v:e}"),
    }
}
