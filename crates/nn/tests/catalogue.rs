//! `strata check` on a catalogue of broken models (`examples/broken/*.toml`): each names the
//! right layer (the file's `# expect:` line), its messages match the snapshots, and applying the
//! first suggested fix of every error makes the model check, build and run.

use std::path::{Path, PathBuf};
use strata_core::{DType, Generator, Tensor};
use strata_nn::Module;
use strata_nn::check::check_spec;
use strata_nn::model_file::load_model;

fn catalogue() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the catalogue has {} models", files.len());
    files
}

fn expectation(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
        .trim()
        .to_string()
}

/// Messages name files relative to the repository so snapshots do not depend on the checkout.
fn relative(path: &Path) -> String {
    format!("examples/broken/{}", path.file_name().unwrap().to_string_lossy())
}

#[test]
fn every_broken_model_names_the_right_layer_and_a_working_fix() {
    for path in catalogue() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let expect = expectation(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = strata_nn::model_file::parse_model(&text, &relative(&path), &name);
        if expect == "file" {
            let errors = parsed.expect_err(&format!("{name} should not parse"));
            insta::assert_snapshot!(name.clone(), errors.to_string());
            continue;
        }
        let spec = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = check_spec(&spec, None, Some(10));
        assert!(!report.errors.is_empty(), "{name}: no error found");
        let first = &report.errors[0];
        let blamed = first.layer.as_ref().map_or("loss".to_string(), |l| l.path.clone());
        assert_eq!(blamed, expect, "{name}: blames the wrong layer");
        // The devices a machine has vary: the snapshot shows none of them.
        let text = format!("{}\n\n{}", report.render_trace(), report.render_errors());
        insta::assert_snapshot!(name.clone(), redact_devices(&text));
        // The first fix of every error, applied together, makes the model check.
        let mut fixed = spec.clone();
        for e in &report.errors {
            let fix = e.fixes.first().unwrap_or_else(|| panic!("{name}: an error without a fix:\n{e}"));
            assert!(fixed.apply(&fix.edits), "{name}: fix `{}` does not apply", fix.text);
        }
        let after = check_spec(&fixed, None, Some(10));
        assert!(after.errors.is_empty(), "{name}: still broken after the fixes:\n{}", after.render_errors());
        // And runs: a batch of 2 goes through the built model with the checked output shape.
        let mut shape = vec![2];
        shape.extend(fixed.input.as_deref().unwrap());
        let x = match fixed.input_dtype {
            DType::I64 => Tensor::zeros(&shape, DType::I64),
            _ => Tensor::randn(&shape, 0.0, 1.0, DType::F32, &mut Generator::new(0)).unwrap(),
        };
        let y = fixed.build().unwrap().forward(&x).unwrap_or_else(|e| panic!("{name}: the fixed model fails: {e}"));
        assert_eq!(y.dims(), after.output.unwrap().with_batch(2).as_slice(), "{name}");
    }
}

/// `(it has cpu, gpu:0)` → `(it has …)`.
fn redact_devices(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("(it has ") {
        out.push_str(&rest[..i + "(it has ".len()]);
        rest = &rest[i + "(it has ".len()..];
        let end = rest.find(')').unwrap_or(rest.len());
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn load_model_reports_a_missing_file() {
    let e = load_model(Path::new("examples/does_not_exist.toml")).unwrap_err().to_string();
    assert!(e.contains("cannot read the model file"), "{e}");
}
