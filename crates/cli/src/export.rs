//! `strata export`: a model as an ONNX file (see `strata_nn::onnx`). From a checkpoint or a
//! run directory, the stored model with its trained weights and the normalisation the run used
//! (in the ONNX model's metadata: `strata.mean`, `strata.std`, `strata.classes`); from a model
//! or run file, freshly initialised weights, or those of `--weights`.

use crate::check::{Verdict, check_before_building, load_model_or_run_file};
use crate::checkpoint;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use strata_nn::model_file::parse_model;
use strata_nn::state_dict::atomic_write;
use strata_nn::{ModelSpec, Module, StateDict, onnx};

/// Options of `strata export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint file, a run directory (its best checkpoint, else its newest), or a model or
    /// run file (TOML).
    model: PathBuf,
    /// The weights (a safetensors state_dict or checkpoint) for a model or run file; without
    /// them a model file exports freshly initialised weights.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The ONNX file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

/// What is exported: the spec, its weights and the model's metadata.
struct Source {
    spec: ModelSpec,
    weights: StateDict,
    metadata: Vec<(String, String)>,
    /// Where the weights came from, for the closing line.
    from: String,
}

/// Runs `strata export`.
pub fn run(args: &ExportArgs) -> Result<Verdict> {
    let path = &args.model;
    if !path.exists() {
        bail!("{}: no such checkpoint, run directory or model file", path.display());
    }
    if args.output.is_dir() {
        bail!(
            "-o {}: a directory, not a file; give the ONNX file's path (e.g. -o {})",
            args.output.display(),
            args.output.join("model.onnx").display()
        );
    }
    // Never the input itself, --force or not (the checkpoint a run directory exports is
    // compared once it is known).
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    // A run file's model file is read too (`model = "…"`, relative to the run file).
    let named_model = if is_toml { crate::check::model_file_named_by(path) } else { None };
    let mut inputs: Vec<(&str, &Path)> = vec![];
    if path.is_file() {
        let what = match (is_toml, &named_model) {
            (false, _) => "the checkpoint",
            (true, Some(_)) => "the run file",
            (true, None) => "the model file",
        };
        inputs.push((what, path));
    }
    if let Some(m) = &named_model {
        inputs.push(("the model file that the run file names", m));
    }
    if let Some(w) = &args.weights {
        inputs.push(("the --weights file", w));
    }
    crate::paths::refuse_overwriting_an_input("-o", &args.output, &inputs)?;
    // As `convert` and `import`: nothing already on disk is replaced unasked.
    if args.output.exists() && !args.force {
        bail!("{}: the file exists; pass --force to replace it, or choose another -o", args.output.display());
    }
    let source = if is_toml {
        let Some(spec) = load_model_or_run_file(path) else { return Ok(Verdict::Failed) };
        let spec = spec.without_placement();
        if spec.input.is_none() {
            // The export's own refusal (an ONNX graph needs an input shape), before anything
            // is built: the model's size cannot be checked without it.
            onnx::to_bytes(&spec, &StateDict::new(), &[]).with_context(|| format!("exporting {}", path.display()))?;
        }
        from_model_file(spec, args.weights.as_deref(), path)?
    } else {
        if args.weights.is_some() {
            bail!(
                "--weights is for a model or run file; {} is a checkpoint or run directory, which holds its own weights",
                path.display()
            );
        }
        from_checkpoint(path, &args.output)?
    };
    let bytes = onnx::to_bytes(&source.spec, &source.weights, &source.metadata)
        .with_context(|| format!("exporting {}", path.display()))?;
    atomic_write(&args.output, &bytes)?;
    let params: usize = source.weights.iter().filter(|(_, t)| t.dtype().is_float()).map(|(_, t)| t.numel()).sum();
    let sample = source.spec.input.as_deref().unwrap_or_default();
    let mut dims: Vec<String> = sample.iter().map(usize::to_string).collect();
    // `[T, batch, F]` for a model that reads time-major sequences.
    dims.insert(strata_nn::check::input_batch_dim(&source.spec, sample.len()), "batch".to_string());
    let ids = if source.spec.input_dtype == strata_core::DType::I64 { " of int64 token ids" } else { "" };
    println!(
        "wrote {} (ONNX opset {}, input [{}]{ids}; {} parameter and buffer values from {})",
        args.output.display(),
        onnx::OPSET,
        dims.join(", "),
        strata_nn::summary::group_digits(params),
        source.from
    );
    Ok(Verdict::Ok)
}

/// A model or run file's model, with `weights` loaded (checked against it) or fresh ones.
/// Checked before it is built (shapes, memory, the weights' shapes): see
/// [`check_before_building`].
fn from_model_file(spec: ModelSpec, weights: Option<&Path>, path: &Path) -> Result<Source> {
    let sd = match weights {
        Some(w) => {
            let mut sd = StateDict::load(w).with_context(|| format!("reading the weights {}", w.display()))?;
            // A training checkpoint also holds the optimizer's state: not the model's.
            drop(sd.split_prefix(checkpoint::OPTIM_PREFIX));
            Some((sd, w.display().to_string()))
        }
        None => None,
    };
    check_before_building(&spec, None, sd.as_ref().map(|(sd, w)| (sd, w.as_str())), &path.display().to_string())?;
    let model = spec.build()?;
    let from = match &sd {
        Some((sd, w)) => {
            let (what, header) = (format!("loading {w}"), format!("--weights {w}: its tensors do not fit the model:"));
            let fix = "give --weights saved from this model's architecture (the same layer names and sizes), or export without --weights (fresh weights)";
            crate::convert::load_whole(&model, sd, &what, &header, fix)?;
            w.clone()
        }
        None => "fresh initialisation (no --weights)".to_string(),
    };
    model.eval();
    Ok(Source { spec, weights: model.state_dict(), metadata: vec![], from })
}

/// A checkpoint's (or run directory's) model, weights and normalisation.
fn from_checkpoint(path: &Path, output: &Path) -> Result<Source> {
    let file = checkpoint::best_or_latest(path, "export")?;
    crate::paths::refuse_overwriting_an_input("-o", output, &[("the checkpoint", &file)])?;
    let (params, _, meta) = checkpoint::load(&file)?;
    let spec = parse_model(&meta.model, &format!("{} (its model)", file.display()), "model")?.without_placement();
    if spec.input.is_none() {
        bail!(
            "{}: its model has no input shape, which an ONNX graph needs; add `input = [...]` to the model file and export it with --weights {}",
            file.display(),
            file.display()
        );
    }
    let name = file.display().to_string();
    let report = check_before_building(&spec, None, Some((&params, &name)), &format!("{name} (its model)"))?;
    // The class names go into the ONNX metadata beside the model's outputs: one per output.
    checkpoint::check_class_names(&file, &meta, &report)?;
    let model = spec.build()?;
    let (what, header) =
        (format!("loading {}", file.display()), format!("{}: its tensors do not fit its model:", file.display()));
    crate::convert::load_whole(&model, &params, &what, &header, crate::convert::CHECKPOINT_MISMATCH_FIX)?;
    let mut metadata = vec![
        ("strata.mean".to_string(), serde_json::to_string(&meta.mean)?),
        ("strata.std".to_string(), serde_json::to_string(&meta.std)?),
    ];
    if !meta.classes.is_empty() {
        metadata.push(("strata.classes".to_string(), serde_json::to_string(&meta.classes)?));
    }
    Ok(Source { spec, weights: model.state_dict(), metadata, from: file.display().to_string() })
}
