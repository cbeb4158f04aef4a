//! `strata import`: an ONNX model (from `torch.onnx.export` or `strata export`) as a model
//! file and a safetensors state_dict in PyTorch's names (see `strata_nn::onnx::import`).
//! Both files are written atomically, and existing ones are kept unless `--force`.

use crate::check::Verdict;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use strata_nn::model_file::to_toml;
use strata_nn::onnx;
use strata_nn::state_dict::atomic_write;
use strata_nn::summary::group_digits;

/// Options of `strata import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ONNX file: `torch.onnx.export(model, x, path, dynamo=False, opset_version=17)`'s,
    /// or `strata export`'s.
    model: PathBuf,
    /// The directory to write `model.toml` and `weights.safetensors` into (made if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Replace `model.toml` and `weights.safetensors` if the directory already has them.
    #[arg(long)]
    force: bool,
}

/// Runs `strata import`.
pub fn run(args: &ImportArgs) -> Result<Verdict> {
    let path = &args.model;
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the ONNX file", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let imported = onnx::import::from_bytes(&bytes, &stem).with_context(|| format!("importing {}", path.display()))?;
    let model_file = args.output.join("model.toml");
    let weights_file = args.output.join("weights.safetensors");
    // Never the ONNX file itself, --force or not.
    for f in [&model_file, &weights_file] {
        crate::paths::refuse_overwriting_an_input("-o", f, &[("the ONNX file", path)])?;
    }
    if !args.force {
        for f in [&model_file, &weights_file] {
            if f.exists() {
                bail!("{}: already exists; pass --force to replace it, or choose another -o directory", f.display());
            }
        }
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create the directory", args.output.display()))?;
    // The ONNX model's metadata (strata's export writes the normalisation and class names
    // there) travels in the state_dict's header.
    let metadata: HashMap<String, String> = imported
        .metadata
        .iter()
        .cloned()
        .chain([("strata.imported_from".to_string(), path.display().to_string())])
        .collect();
    imported.weights.save_with_metadata(&weights_file, Some(metadata))?;
    let text = format!(
        "# Imported from {} by `strata import`; the weights are in weights.safetensors.\n{}",
        path.display(),
        to_toml(&imported.spec)
    );
    atomic_write(&model_file, text.as_bytes())?;
    let values: usize = imported.weights.iter().filter(|(_, t)| t.dtype().is_float()).map(|(_, t)| t.numel()).sum();
    let sample = imported.spec.input.as_deref().unwrap_or_default();
    let dims: Vec<String> = std::iter::once("batch".to_string()).chain(sample.iter().map(usize::to_string)).collect();
    println!(
        "wrote {} ({} layers, input [{}]) and {} ({} tensors, {} parameter and buffer values)",
        model_file.display(),
        imported.spec.layers.len(),
        dims.join(", "),
        weights_file.display(),
        imported.weights.len(),
        group_digits(values)
    );
    for (k, v) in &imported.metadata {
        println!("  metadata {k} = {v}");
    }
    println!("check it with: strata check {} --weights {}", model_file.display(), weights_file.display());
    Ok(Verdict::Ok)
}
