//! `strata convert`: a PyTorch checkpoint (`torch.save(model.state_dict(), path)`, the zip
//! format) as a safetensors state_dict, read by strata-nn's restricted unpickler
//! ([`strata_nn::torch_file`]), which never runs code from the file. Also the weights reader of
//! `strata train --init`, which takes either kind of file.

use crate::check::{Verdict, load_model_or_run_file};
use crate::checkpoint;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::Read;
use std::path::{Path, PathBuf};
use strata_nn::state_dict::atomic_write;
use strata_nn::summary::group_digits;
use strata_nn::{Module, StateDict, torch_file};

/// Options of `strata convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The PyTorch file: `torch.save(model.state_dict(), path)` (PyTorch ≥ 1.6's zip format), or
    /// a checkpoint dict holding one under `state_dict`, `model_state_dict` or `model`.
    input: PathBuf,
    /// The safetensors file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Check the tensors' keys and shapes against this model (a model or run file) before
    /// writing, as PyTorch's `load_state_dict(strict=True)` would.
    #[arg(long, value_name = "MODEL.toml")]
    model: Option<PathBuf>,
}

/// Runs `strata convert`.
pub fn run(args: &ConvertArgs) -> Result<Verdict> {
    if args.output.is_dir() {
        bail!(
            "-o {}: a directory, not a file; give the safetensors file's path (e.g. -o {})",
            args.output.display(),
            args.output.join("model.safetensors").display()
        );
    }
    // Never an input, --force or not.
    let mut inputs: Vec<(&str, &Path)> = vec![("the PyTorch file", &args.input)];
    // A run file given as --model is read for the model file it names, an input too.
    let named_model = args.model.as_deref().and_then(crate::check::model_file_named_by);
    if let Some(m) = &args.model {
        inputs.push(("the --model file", m));
    }
    if let Some(m) = &named_model {
        inputs.push(("the model file that the --model run file names", m));
    }
    crate::paths::refuse_overwriting_an_input("-o", &args.output, &inputs)?;
    if args.output.exists() && !args.force {
        bail!("{}: the file exists; pass --force to replace it, or choose another -o", args.output.display());
    }
    let sd = torch_file::load(&args.input)?;
    if let Some(model_file) = &args.model {
        let Some(spec) = load_model_or_run_file(model_file) else { return Ok(Verdict::Failed) };
        let model = spec.without_placement().build()?;
        let what = format!("checking {} against {}", args.input.display(), model_file.display());
        load_whole(
            &model,
            &sd.to_state_dict()?,
            &what,
            &format!("{}: its tensors do not fit the model of {}:", args.input.display(), model_file.display()),
            "give the model file these weights were saved from (the same layer names and sizes), or drop --model to convert them unchecked; strata's commands load weights only whole (every key, as PyTorch's load_state_dict(strict=True)), so loading just the matching keys takes code: PyTorch's load_state_dict(…, strict=False), or strata-nn's load_state_dict(&sd, false)",
        )?;
    }
    let bytes = sd.to_safetensors_bytes()?;
    atomic_write(&args.output, &bytes)?;

    let rows: Vec<(String, &str, String)> =
        sd.tensors.iter().map(|(k, t)| (k.clone(), t.dtype.name(), format!("{:?}", t.shape))).collect();
    let (w0, w1) = rows.iter().fold((4, 5), |(a, b), (k, d, _)| (a.max(k.chars().count()), b.max(d.len())));
    println!("{:w0$}  {:w1$}  shape", "name", "dtype");
    for (k, d, s) in &rows {
        println!("{k:w0$}  {d:w1$}  {s}");
    }
    let values: usize = sd.tensors.iter().map(|(_, t)| t.shape.iter().product::<usize>()).sum();
    let mut notes = vec![];
    if let Some(key) = &sd.from_key {
        notes.push(format!("the state_dict is the checkpoint's `{key}` entry"));
    }
    if sd.shared_storages > 0 {
        notes.push(format!(
            "{} shared storage{} written out once per tensor",
            sd.shared_storages,
            if sd.shared_storages == 1 { "" } else { "s" }
        ));
    }
    if let Some(m) = &args.model {
        notes.push(format!("keys and shapes fit {}", m.display()));
    }
    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
    println!(
        "wrote {}: {} tensors, {} values, from {}{notes}",
        args.output.display(),
        sd.tensors.len(),
        group_digits(values),
        args.input.display()
    );
    Ok(Verdict::Ok)
}

/// The weights of `strata train --init`: a PyTorch file (a zip archive or a pickle, by its
/// first bytes) through the restricted unpickler, else a safetensors state_dict or strata
/// checkpoint (its optimizer state left out).
pub fn load_weights(path: &Path) -> Result<StateDict> {
    let mut head = [0u8; 2];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("--init {}: reading the weights", path.display()))?;
    if head[..n].starts_with(b"PK") || head[..n].first() == Some(&0x80) {
        return Ok(torch_file::load(path)?.to_state_dict()?);
    }
    let mut sd = StateDict::load(path)?;
    drop(sd.split_prefix(checkpoint::OPTIM_PREFIX));
    Ok(sd)
}

/// Loads `--init` weights into a freshly built model, checked first: every missing and
/// unexpected key and every shape mismatch is listed, and nothing is changed unless all fit.
pub fn init_model(model: &dyn Module, path: &Path) -> Result<()> {
    let sd = load_weights(path)?;
    let what = format!("--init {}", path.display());
    load_whole(
        model,
        &sd,
        &what,
        &format!("{what}: the weights do not fit the model:"),
        "give weights saved from this model's architecture (the same layer names and sizes), or train without --init",
    )
}

/// Loads `sd` into `model` whole — every key, as PyTorch's `load_state_dict(strict=True)`,
/// the only way strata's commands load weights — or changes nothing. A mismatch is said in the
/// command line's terms: strata-nn's message ends in its API's `strict = false`, which no
/// command has; this lists the same keys and shapes under `header` and ends with `fix`. Other
/// errors are given `context`.
pub fn load_whole(model: &dyn Module, sd: &StateDict, context: &str, header: &str, fix: &str) -> Result<()> {
    match model.load_state_dict(sd, true) {
        Ok(()) => Ok(()),
        Err(strata_nn::Error::StateDictMismatch { missing, unexpected, shape_mismatches, .. }) => {
            let mut s = header.to_string();
            for (key, model, file) in &shape_mismatches {
                s.push_str(&format!("\n  `{key}`: the model has shape {model}, the file has {file}"));
            }
            if !missing.is_empty() {
                s.push_str(&format!("\n  missing from the file: {}", missing.join(", ")));
            }
            if !unexpected.is_empty() {
                s.push_str(&format!("\n  not in the model: {}", unexpected.join(", ")));
            }
            s.push_str(&format!("\n  fix: {fix}"));
            bail!(s)
        }
        Err(e) => Err(e).with_context(|| context.to_string()),
    }
}

/// The fix for a checkpoint whose tensors do not fit the model stored in it (strata writes
/// both from one model, so the file was changed or forged).
pub const CHECKPOINT_MISMATCH_FIX: &str = "use another checkpoint of the run: strata writes a checkpoint's tensors and the model in its metadata from one model, so this file is damaged or was not written by strata";
