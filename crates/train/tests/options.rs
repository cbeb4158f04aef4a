//! Options and data that make no sense are refused before the first step, with what, where and
//! how to fix it — never a panic, and never a run that quietly trains on something else.

use strata_train::prelude::*;

/// `n` samples of 4 values in 3 classes.
fn data(n: usize) -> Dataset {
    Dataset {
        features: (0..n * 4).map(|i| (i % 7) as f32 / 7.0).collect(),
        labels: (0..n).map(|i| i % 3).collect(),
        sample_shape: vec![4],
        num_classes: 3,
    }
}

fn tiny() -> Sequential {
    with_seed(1, || ModelSpec::new("Tiny").input(&[4]).linear("fc", 4, 3).build()).unwrap()
}

fn trainer(model: &Sequential) -> Trainer<'_> {
    Trainer::new(model, Box::new(SGD::new(model.parameters(), 0.1).unwrap())).epochs(2).batch_size(4)
}

fn refused(t: &mut Trainer, train: &Dataset, val: Option<&Dataset>) -> String {
    let check = t.check(train, val).map_err(|e| e.to_string());
    let fit = t.fit(train, val).map(|h| format!("{:?}", h.state)).unwrap_err().to_string();
    assert_eq!(check, Err(fit.clone()), "check and fit refuse alike");
    fit
}

/// `batch_size(0)` trained with batches of 1 (the loader clamps); PyTorch's DataLoader refuses
/// `batch_size=0`.
#[test]
fn a_batch_size_of_zero_is_refused() {
    let model = tiny();
    let e = refused(&mut trainer(&model).batch_size(0), &data(8), None);
    assert_eq!(
        e,
        "batch_size = 0: a step needs at least 1 sample; give a positive batch size (64 is usual), or BatchSize::Full for the whole training set per step"
    );
    let e = refused(&mut trainer(&model).eval_batch_size(0), &data(8), Some(&data(2)));
    assert_eq!(
        e,
        "eval_batch_size = 0: validation needs at least 1 sample per batch; give a positive number (the default is 1000)"
    );
    // A batch larger than the data is one batch of all of it, as in PyTorch.
    let h = trainer(&model).batch_size(100).fit(&data(8), None).unwrap();
    assert_eq!(h.state.step, 2);
}

/// An empty validation set reported a loss of 0 every epoch (the mean of no samples), which
/// early stopping on val_loss then took as a plateau.
#[test]
fn an_empty_validation_set_is_refused() {
    let model = tiny();
    let empty = data(0);
    let e = refused(&mut trainer(&model), &data(8), Some(&empty));
    assert_eq!(
        e,
        "the validation set is empty: its loss and accuracy would be figures of no samples; pass None for no validation, or give a validation set with samples"
    );
}

/// A data set whose public fields disagree panicked on the loader's thread (slicing features
/// that are not there); a label beyond `num_classes` is refused too.
#[test]
fn a_data_set_whose_fields_disagree_is_refused_not_a_panic() {
    let model = tiny();
    let mut short = data(8);
    short.features.truncate(30);
    let e = refused(&mut trainer(&model), &short, None);
    assert_eq!(
        e,
        "the training set: data set: `features` holds 30 values, but 8 labels of samples of shape [4] (4 values each) need 32; keep `features`, `labels` and `sample_shape` consistent"
    );
    let mut label = data(2);
    label.labels[1] = 3;
    let e = refused(&mut trainer(&model), &data(8), Some(&label));
    assert_eq!(
        e,
        "the validation set: data set: label 3 of sample 1 is not a class of 3 (labels are 0..3); fix the label, or raise `num_classes`"
    );
}

/// `epochs(usize::MAX)` overflowed `steps_per_epoch * epochs` (a panic in debug builds, a
/// wrapped schedule length in release); a start near the step counter's end overflowed it.
#[test]
fn a_run_longer_than_the_step_counter_is_refused() {
    let model = tiny();
    let e = refused(&mut trainer(&model).epochs(usize::MAX), &data(8), None);
    assert_eq!(
        e,
        format!(
            "a run of {} epochs of 2 batches from step 0 takes more steps than a step counter holds ({}); give fewer epochs",
            usize::MAX,
            usize::MAX
        )
    );
    let e = refused(&mut trainer(&model).start_at(1, 0, usize::MAX - 1, None), &data(8), None);
    assert!(e.starts_with(&format!("a run of 2 epochs of 2 batches from step {}", usize::MAX - 1)), "{e}");
    // A start at the end of a run of one epoch per step still fits.
    let h = trainer(&model).epochs(1).batch_size(8).start_at(0, 0, usize::MAX - 2, None).fit(&data(8), None).unwrap();
    assert_eq!(h.state.step, usize::MAX - 1);
}

/// A schedule PyTorch refuses (StepLR's step_size 0, a negative gamma, a NaN warm-up) trained
/// on a rate nobody asked for.
#[test]
fn a_schedule_that_makes_no_sense_is_refused_before_the_first_step() {
    let model = tiny();
    let before = model.parameters()[0].to_vec_f64();
    let e = refused(&mut trainer(&model).schedule(Schedule::step(0, 0.5)), &data(8), None);
    assert_eq!(
        e,
        "the `step` learning-rate schedule: step_size = 0: the rate decays every step_size epochs, at least 1 (PyTorch's StepLR)"
    );
    let e = refused(&mut trainer(&model).schedule(Schedule::constant().warmup(f64::NAN)), &data(8), None);
    assert!(e.contains("warmup_epochs = NaN"), "{e}");
    let e = refused(&mut trainer(&model).schedule(Schedule::step(1, -1.0)), &data(8), None);
    assert!(e.contains("gamma = -1: the decay factor must be positive and finite"), "{e}");
    assert_eq!(model.parameters()[0].to_vec_f64(), before, "nothing trained");
}

/// `Checkpointing::keep_last(0)` was quietly 1; it is refused when the run starts, before the
/// checkpoint folder is made.
#[test]
fn keeping_no_checkpoint_is_refused() {
    let model = tiny();
    let dir = tempfile::tempdir().unwrap();
    let e = trainer(&model).callback(Checkpointing::new(dir.path()).keep_last(0)).fit(&data(8), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Checkpointing::keep_last(0) asks to keep no step checkpoint, but a resume continues from the newest one; give keep_last(1) to keep only the newest (the default is 3, and best.safetensors is kept besides them), or usize::MAX to keep them all"
    );
    assert!(!dir.path().join("checkpoints").exists());
    // usize::MAX keeps every checkpoint.
    trainer(&model).callback(Checkpointing::new(dir.path()).keep_last(usize::MAX)).fit(&data(8), None).unwrap();
    assert_eq!(strata_train::checkpoint::list(dir.path()).len(), 2);
}
