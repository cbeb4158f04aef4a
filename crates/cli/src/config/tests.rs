//! The run config's tests: defaults, overrides and their errors, validation, mutated files.

use super::*;

#[test]
fn a_model_file_given_as_the_run_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.toml");
    std::fs::write(&path, "input = [4]\nlayers = [{ type = \"Linear\", in_features = 4, out_features = 2 }]\n")
        .unwrap();
    let e = RunConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("is a model file") && e.contains("--model"), "{e}");
    std::fs::write(&path, "[training]\nepoch = 3\n").unwrap();
    assert!(!RunConfig::load(&path).unwrap_err().to_string().contains("model file"));
}

#[test]
fn empty_paths_are_refused_by_name() {
    let c = RunConfig::default().with_overrides(&[("training.out".into(), "".into())]).unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("training.out (--out) is empty"), "{e}");
}

#[test]
fn override_errors_name_the_key_at_fault() {
    let c = RunConfig::default();
    let ov = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        c.with_overrides(&pairs).unwrap_err().to_string()
    };
    // A flag and --set for one key: neither wins silently.
    let e = ov(&[("training.epochs", "1"), ("training.epochs", "3")]);
    assert!(e.contains("`training.epochs` is given twice") && e.contains("`1` and `3`"), "{e}");
    // Only the bad key is named, not every override.
    let e = ov(&[("training.seed", "4"), ("training.epochs", "\"x\""), ("optimizer.lr", "0.5")]);
    assert!(e.starts_with("overriding training.epochs:"), "{e}");
    // A number past TOML's integers is too large, not "a string".
    let e = ov(&[("training.epochs", "18446744073709551615")]);
    assert!(e.contains("too large") && e.contains("9223372036854775807"), "{e}");
}

#[test]
fn defaults_overrides_and_errors() {
    let c: RunConfig = toml::from_str("[training]\nepochs = 3\nbatch_size = \"full\"\n").unwrap();
    assert_eq!(c.training.epochs, 3);
    assert_eq!(c.training.batch_size, BatchSize::Full);
    assert_eq!(c.optimizer, OptimizerConfig::default());
    let o = c
        .with_overrides(&[("optimizer.name".into(), "adam".into()), ("training.batch_size".into(), "32".into())])
        .unwrap();
    assert_eq!(o.optimizer.name, "adam");
    assert_eq!(o.training.batch_size, BatchSize::Samples(32));
    let e = c.with_overrides(&[("training.epoch".into(), "3".into())]).unwrap_err().to_string();
    assert!(e.contains("unknown field `epoch`"), "{e}");
    let e = toml::from_str::<RunConfig>("[optimizer]\nlr = \"fast\"\n").unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    let e = toml::from_str::<RunConfig>("[trainig]\nepochs = 1\n").unwrap_err().to_string();
    assert!(e.contains("unknown field `trainig`"), "{e}");
}

/// `data.classes` is read for any source, stored when given, and refused when empty, blank
/// or with a name twice.
#[test]
fn class_names() {
    let c: RunConfig = toml::from_str("[data]\nclasses = [\"zero\", \"one\"]\n").unwrap();
    assert_eq!(c.data.classes.as_deref(), Some(&["zero".to_string(), "one".to_string()][..]));
    assert!(c.validate().is_ok());
    assert!(toml::to_string(&c).unwrap().contains("classes = [\"zero\", \"one\"]"));
    assert!(!toml::to_string(&RunConfig::default()).unwrap().contains("classes"));
    let err = |text: &str| toml::from_str::<RunConfig>(text).unwrap().validate().unwrap_err().to_string();
    insta::assert_snapshot!(
        [
            err("[data]\nclasses = []\n"),
            err("[data]\nclasses = [\"a\", \" \"]\n"),
            err("[data]\nclasses = [\"a\", \"b\", \"a\"]\n"),
        ]
        .join("\n"),
        @r#"
    data.classes is empty: name every class, label 0 first (`classes = ["cat", "dog"]`), or leave the key out
    data.classes[1] is blank: every class needs a name
    data.classes names `a` twice (classes 0 and 2): each class needs its own name
    "#
    );
    let c = RunConfig::default().with_overrides(&[("data.classes".into(), "[\"x\", \"y\"]".into())]).unwrap();
    assert_eq!(c.data.classes.map(|v| v.len()), Some(2));
}

#[test]
fn per_optimizer_defaults_and_the_loss_section() {
    let c = RunConfig::default();
    assert_eq!((c.optimizer.resolved_momentum(), c.optimizer.resolved_eps()), (0.9, 1e-8));
    assert_eq!(c.optimizer.describe(), "SGD lr 0.01 momentum 0.9");
    assert!(c.loss.is_default());
    // The default loss is written out, so a resumed run compares like with like.
    assert!(toml::to_string(&c).unwrap().contains("[loss]\nname = \"cross_entropy\"\nreduction = \"mean\"\n"));
    let c: RunConfig = toml::from_str("[optimizer]\nname = \"adagrad\"\n[loss]\nname = \"mse\"\n").unwrap();
    c.validate().unwrap();
    assert_eq!((c.optimizer.resolved_momentum(), c.optimizer.resolved_eps()), (0.0, 1e-10));
    assert_eq!(c.loss.describe(), "MSELoss on one-hot targets");
    let o = |text: &str| toml::from_str::<RunConfig>(&format!("[optimizer]\n{text}\n")).unwrap().optimizer;
    let r = o("name = \"rmsprop\"\nmomentum = 0.5\neps = 1e-6\ncentered = true\nweight_decay = 0.01");
    assert_eq!((r.resolved_momentum(), r.resolved_eps()), (0.5, 1e-6));
    assert_eq!(r.describe(), "RMSprop lr 0.01 alpha 0.99 momentum 0.5 weight_decay 0.01 eps 0.000001 centered");
    assert_eq!(o("name = \"rmsprop\"").describe(), "RMSprop lr 0.01 alpha 0.99");
    let a = o("name = \"adagrad\"\ninitial_accumulator_value = 0.1\nlr_decay = 0.01");
    assert_eq!(a.describe(), "Adagrad lr 0.01 lr_decay 0.01 initial_accumulator_value 0.1");
    let error = |text: &str| toml::from_str::<RunConfig>(text).unwrap().validate().unwrap_err().to_string();
    assert_eq!(
        error("[loss]\nlabel_smoothing = 2.0\n"),
        "loss.label_smoothing must be in [0, 1] (0.1 is usual), got 2"
    );
    assert_eq!(
        error("[optimizer]\nname = \"adagrad\"\nlr_decay = -1.0\n"),
        "optimizer.lr_decay must be a number ≥ 0, got -1"
    );
    assert_eq!(
        error("[optimizer]\nname = \"rmsprop\"\nalpha = 1.0\n"),
        "optimizer.alpha must be in [0, 1) (0.99 is usual), got 1"
    );
}

/// Run files fuzzed (issue 14): thousands of mutations of the example run files are parsed,
/// overridden and validated; none may panic, and a parse error names the line.
#[test]
fn mutated_run_files_never_panic() {
    use proptest::prelude::*;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_mnist.toml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(seeds.len() >= 3);
    let config = ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() };
    let ops = prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..5);
    proptest::test_runner::TestRunner::new(config)
        .run(
            &(any::<prop::sample::Index>(), ops, "[a-z_.]{1,24}", "[-0-9a-z.\\[\\],\"]{0,12}"),
            |(which, ops, key, value)| {
                let seed: &Vec<u8> = which.get(&seeds);
                let bytes = strata_core::testing::mutate(seed, &ops);
                match toml::from_str::<RunConfig>(&String::from_utf8_lossy(&bytes)) {
                    Ok(c) => {
                        let _ = c.validate();
                        if let Ok(o) = c.with_overrides(&[(key, value)]) {
                            let _ = o.validate();
                        }
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                Ok(())
            },
        )
        .unwrap();
}

/// A warm-up longer than the run (it would never reach optimizer.lr) and `keep_last = 0` (no
/// checkpoint to resume from) are refused for a run, naming the keys, their values and the fix;
/// a warm-up as long as the run, or a resumed run extended past its warm-up, is fine. A
/// checkpoint's stored config is held only to the key-by-key checks, so one written before
/// these checks is still read.
#[test]
fn run_wide_checks() {
    let config = |text: &str| toml::from_str::<RunConfig>(text).unwrap();
    let warm = config("[schedule]\nname = \"cosine\"\nwarmup_epochs = 5.5\n[training]\nepochs = 3\n");
    let keep = config("[training]\nkeep_last = 0\n");
    insta::assert_snapshot!(
        [warm.validate().unwrap_err().to_string(), keep.validate().unwrap_err().to_string()].join("\n\n"),
        @r"
    schedule.warmup_epochs = 5.5 is longer than the run: training.epochs (--epochs) = 3, so the learning rate would still be warming up when the run ends and never reach optimizer.lr (0.01), and the `cosine` schedule after it would never start
    fix: give schedule.warmup_epochs at most 3 (--set schedule.warmup_epochs=…; a few percent of the run is usual), or train for 6 epochs or more (--epochs 6)

    training.keep_last = 0 asks to keep no step checkpoint, but --resume continues a run from its newest one, so strata keeps at least 1
    fix: give training.keep_last = 1 to keep only the newest (--set training.keep_last=1; the default is 3, and best.safetensors is kept besides them), or a number at least as large as the run's checkpoints to keep them all
    "
    );
    assert!(warm.validate_stored().is_ok() && keep.validate_stored().is_ok());
    // The fixes the messages give, as a resumed run applies them.
    let fixed = |c: &RunConfig, key: &str, value: &str| c.with_overrides(&[(key.into(), value.into())]).unwrap();
    fixed(&warm, "training.epochs", "6").validate().unwrap();
    fixed(&warm, "schedule.warmup_epochs", "3").validate().unwrap();
    fixed(&keep, "training.keep_last", "1").validate().unwrap();
    // Each key's own range is still checked first (a NaN warm-up is not "longer than the run").
    let e = config("[schedule]\nwarmup_epochs = nan\n").validate().unwrap_err().to_string();
    assert!(e.starts_with("schedule.warmup_epochs must be a number of epochs ≥ 0, got NaN"), "{e}");
}
