//! `strata check` and `strata summary`: the shape contract on a model file, before any data is
//! loaded. `check` prints the shape trace and exits 0, or prints every error and exits 1.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use strata_nn::check::{CheckReport, SymShape, check_checkpoint, check_spec, check_spec_to_run};
use strata_nn::model_file::load_model;
use strata_nn::summary::group_digits;
use strata_nn::{ModelSpec, StateDict, Summary};

/// Options of `strata check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The model file (TOML), e.g. examples/simple_nn.toml, or a run file (its model is checked).
    model: PathBuf,
    /// The shape of one input sample, e.g. 784 or 1x28x28 (default: the file's `input`).
    #[arg(long, value_name = "SHAPE")]
    input: Option<String>,
    /// Check that the model ends in one logit per class for this many classes (at least 1), as
    /// `strata train` checks it against its data's classes.
    #[arg(long, value_name = "N", value_parser = class_count)]
    classes: Option<usize>,
    /// Also check that this checkpoint (a safetensors state_dict) fits the model.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Layers placed on devices over the file's `device` keys: `encoder=gpu:0,head=cpu`.
    #[arg(long, value_name = "LAYER=DEVICE,…")]
    device_map: Option<String>,
}

/// Options of `strata summary`.
#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// The model file (TOML), or a run file (its model is checked).
    model: PathBuf,
    /// The shape of one input sample (default: the file's `input`).
    #[arg(long, value_name = "SHAPE")]
    input: Option<String>,
    /// Batch size for the activation-memory column (at least 1).
    #[arg(long, default_value_t = 64, value_parser = summary_batch_size)]
    batch_size: usize,
    /// Layers placed on devices over the file's `device` keys: `encoder=gpu:0,head=cpu`.
    #[arg(long, value_name = "LAYER=DEVICE,…")]
    device_map: Option<String>,
}

/// `--classes`' value: a number of classes, from 1 to the largest layer size a model file takes
/// (the fix a mismatch suggests is a Linear layer with that many outputs).
fn class_count(s: &str) -> std::result::Result<usize, String> {
    let max = strata_nn::model_file::keys::MAX_SIZE;
    match s.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n as usize),
        Ok(_) => Err(format!(
            "give the number of classes the model's data has, from 1 to {max} (e.g. --classes 10 for MNIST's digits): \
             the check is that the model ends in one logit per class"
        )),
        Err(e) => Err(format!("not a number of classes: {e}")),
    }
}

/// `strata summary --batch-size`'s value: a count of at least 1.
fn summary_batch_size(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("give at least 1: the activations column is the memory of a batch of that many samples".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a number of samples: {e}")),
    }
}

/// `spec` with `--device-map` applied.
fn placed(spec: ModelSpec, map: &Option<String>) -> Result<ModelSpec> {
    let Some(map) = map else { return Ok(spec) };
    let map = strata_nn::check::edit::parse_device_map(map).map_err(|e| anyhow::anyhow!("--device-map: {e}"))?;
    spec.with_device_map(&map).context("--device-map")
}

/// Outcome of a command that can fail the check without failing to run.
pub enum Verdict {
    /// Everything fits.
    Ok,
    /// Problems were found and printed.
    Failed,
    /// Stopped by Ctrl-C after writing a checkpoint.
    Interrupted,
}

/// Loads a model file, printing its errors on failure.
pub fn load_or_report(path: &Path) -> Option<ModelSpec> {
    match load_model(path) {
        Ok(spec) => Some(spec),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("\n{} in {}", plural(errors.0.len(), "error"), path.display());
            None
        }
    }
}

/// Loads the model of a model file or of a run file (its `model = "path"`, relative to the run
/// file, or its inline `[model]` table), printing errors on failure: `check` and `summary`
/// take either.
pub fn load_model_or_run_file(path: &Path) -> Option<ModelSpec> {
    let Ok(text) = std::fs::read_to_string(path) else { return load_or_report(path) };
    let Ok(doc) = text.parse::<toml::Table>() else { return load_or_report(path) };
    if doc.contains_key("layers") {
        return load_or_report(path);
    }
    match doc.get("model") {
        Some(toml::Value::String(model)) => load_or_report(&named_model_file(path, model)),
        Some(toml::Value::Table(_)) => {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            match strata_nn::model_file::parse_model_at(&text, &path.display().to_string(), &name, Some("model")) {
                Ok(spec) => spec,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("\n{} in {}", plural(errors.0.len(), "error"), path.display());
                    None
                }
            }
        }
        // A run file without a model trains SimpleNN.
        None if ["data", "optimizer", "schedule", "training"].iter().any(|k| doc.contains_key(*k)) => {
            strata_nn::SimpleNN::new()
                .ok()
                .and_then(|m| ModelSpec::from_module("SimpleNN", &m))
                .map(|s| s.input(&[784]))
        }
        _ => load_or_report(path),
    }
}

/// The model file a run file at `run` names with `model = "model"` (relative to the run file).
fn named_model_file(run: &Path, model: &str) -> PathBuf {
    run.parent().unwrap_or(Path::new("")).join(model)
}

/// The model file that the run file at `path` names (`model = "…"`), when it is a run file that
/// names one: an input of the commands that read it through [`load_model_or_run_file`].
pub fn model_file_named_by(path: &Path) -> Option<PathBuf> {
    let doc = std::fs::read_to_string(path).ok()?.parse::<toml::Table>().ok()?;
    match doc.get("model") {
        Some(toml::Value::String(model)) if !doc.contains_key("layers") => Some(named_model_file(path, model)),
        _ => None,
    }
}

/// Parses `--input`.
pub fn parse_input(input: &Option<String>) -> Result<Option<SymShape>> {
    input.as_deref().map(SymShape::parse_sample).transpose().map_err(|e| anyhow::anyhow!("--input: {e}"))
}

/// Prints a failed report's errors to stderr.
pub fn report_errors(report: &CheckReport, what: &str) {
    eprintln!("{}", report.render_errors());
    eprintln!("\n{} in {what}", plural(report.errors.len(), "shape error"));
}

/// Checks a model before it is built, as `strata check` does: its shapes for `input` (else its
/// own input shape) and whether its parameters fit this machine's memory — one copy of each, as
/// a model that is only run or exported keeps ([`check_spec_to_run`]); with
/// `weights` (a state_dict and its name for messages), that the stored tensors' keys and shapes
/// fit its parameters ([`check_checkpoint`]). Building a model allocates and initialises every
/// parameter, so one larger than memory would abort the process rather than be refused; `what`
/// names the model (a file) in the error. Returns the report (the output shape, the trace).
pub fn check_before_building(
    spec: &ModelSpec,
    input: Option<&SymShape>,
    weights: Option<(&StateDict, &str)>,
    what: &str,
) -> Result<CheckReport> {
    let mut report = check_spec_to_run(spec, input);
    if let Some((sd, source)) = weights
        && report.errors.is_empty()
    {
        report.errors.extend(check_checkpoint(&report, sd, source));
    }
    if report.errors.is_empty() {
        return Ok(report);
    }
    anyhow::bail!(
        "{what}: the model is refused before it is built (as `strata check` would refuse it):\n{}\n\n{} in {what}",
        report.render_errors(),
        plural(report.errors.len(), "error")
    )
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// Runs `strata check`.
pub fn check(args: &CheckArgs) -> Result<Verdict> {
    let Some(spec) = load_model_or_run_file(&args.model) else { return Ok(Verdict::Failed) };
    let spec = placed(spec, &args.device_map)?;
    let input = parse_input(&args.input)?;
    let mut report = check_spec(&spec, input.as_ref(), args.classes);
    if let Some(w) = &args.weights {
        let mut sd = StateDict::load(w).with_context(|| format!("reading the checkpoint {}", w.display()))?;
        // A training checkpoint also holds the optimizer's state: not the model's to check.
        drop(sd.split_prefix(crate::checkpoint::OPTIM_PREFIX));
        if report.errors.is_empty() {
            report.errors.extend(check_checkpoint(&report, &sd, &w.display().to_string()));
        }
    }
    if !report.trace.is_empty() {
        print!("{}", report.render_trace());
    }
    if !report.errors.is_empty() {
        report_errors(&report, &args.model.display().to_string());
        return Ok(Verdict::Failed);
    }
    let params = Summary::from_report(&report, 1).total_params;
    let (i, o) = (
        report.input.as_ref().map(ToString::to_string).unwrap_or_default(),
        report.output.as_ref().map(ToString::to_string).unwrap_or_default(),
    );
    print!("ok: {i} → {o}, {} parameters", group_digits(params));
    if let Some(w) = &args.weights {
        print!("; the checkpoint {} fits", w.display());
    }
    println!();
    Ok(Verdict::Ok)
}

/// Runs `strata summary`.
pub fn summary(args: &SummaryArgs) -> Result<Verdict> {
    let Some(spec) = load_model_or_run_file(&args.model) else { return Ok(Verdict::Failed) };
    let spec = placed(spec, &args.device_map)?;
    let input = parse_input(&args.input)?;
    let report = check_spec(&spec, input.as_ref(), None);
    if !report.errors.is_empty() {
        report_errors(&report, &args.model.display().to_string());
        return Ok(Verdict::Failed);
    }
    print!("{}", Summary::from_report(&report, args.batch_size).render());
    Ok(Verdict::Ok)
}
