//! The Trainer against the loop it replaces: the same numbers as a hand-written PyTorch-style
//! loop, early stopping, stops and interrupts, checkpoints that resume bit for bit, and clear
//! errors for data that does not fit.

use strata_train::prelude::*;
use strata_train::{Callback, Progress, StepLog, TrainState, checkpoint};

/// The first `n` training and `m` held-out images of the embedded MNIST subset, normalised.
fn data(n: usize, m: usize) -> (Dataset, Dataset) {
    let (mut train, mut val) = embedded_mnist().unwrap();
    train.normalize(MNIST_MEAN, MNIST_STD).unwrap();
    val.normalize(MNIST_MEAN, MNIST_STD).unwrap();
    (train.subset(&(0..n).collect::<Vec<_>>()).unwrap(), val.subset(&(0..m).collect::<Vec<_>>()).unwrap())
}

fn simple_nn(seed: u64) -> Sequential {
    // This thread's own seeded generator: tests building at the same time cannot move it.
    with_seed(seed, || {
        ModelSpec::new("SimpleNN").input(&[784]).linear("fc1", 784, 32).relu().linear("fc2", 32, 10).build()
    })
    .unwrap()
}

fn sgd(model: &Sequential) -> Box<dyn Optimizer> {
    Box::new(SGD::with_config(model.parameters(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() }).unwrap())
}

fn params(model: &dyn Module) -> Vec<Vec<f64>> {
    model.parameters().iter().map(|p| p.to_vec_f64()).collect()
}

/// `fit` is exactly the loop a PyTorch user writes by hand: the same batches in the same order,
/// the same updates, bit for bit.
#[test]
fn fit_equals_the_hand_written_loop() {
    let (train, val) = data(640, 200);
    let model = simple_nn(1);
    // The model's own input shape ([784], from its spec) reshapes the [1, 28, 28] images.
    assert_eq!(model.input_shape(), Some(vec![784]));
    let history = Trainer::new(&model, sgd(&model)).epochs(2).batch_size(64).seed(7).fit(&train, Some(&val)).unwrap();
    assert_eq!(history.epochs.len(), 2);
    assert_eq!(history.outcome, Outcome::Completed);
    assert_eq!(history.state.step, 20);

    let manual = simple_nn(1);
    let mut opt = sgd(&manual);
    let loss = CrossEntropyLoss::new();
    let loader = DataLoader::new(&train, 64).shuffle(7);
    for epoch in 0..2 {
        for batch in loader.epoch(epoch) {
            opt.zero_grad().unwrap();
            let out = manual.forward(&batch.x.reshape(&[batch.x.dims()[0], 784]).unwrap()).unwrap();
            loss.forward(&out, &batch.y).unwrap().backward().unwrap();
            opt.step().unwrap();
        }
    }
    assert_eq!(params(&model), params(&manual));
    let e = history.epochs[1];
    assert!(e.train_loss.unwrap() < history.epochs[0].train_loss.unwrap(), "{history:?}");
    let v = e.val.unwrap();
    assert!(v.accuracy.unwrap() > 0.6, "{history:?}");
    // Ten classes: top-5 accuracy is reported, and bounds top-1 from above; F1 is in (0, 1].
    let (k, top5) = v.top_k.unwrap();
    assert!(k == 5 && top5 >= v.accuracy.unwrap() && top5 <= 1.0, "{v:?}");
    assert!(v.f1_macro.unwrap() > 0.0 && v.f1_macro.unwrap() <= 1.0 && v.f1_weighted.unwrap() > 0.0, "{v:?}");
}

/// Early stopping ends a run that stopped improving (lr 0: nothing changes after the first
/// epoch), after `patience` epochs, and names itself as the reason.
#[test]
fn early_stopping_stops_after_patience_epochs() {
    let (train, val) = data(128, 64);
    let model = simple_nn(2);
    let opt = Box::new(SGD::new(model.parameters(), 0.0).unwrap());
    let history = Trainer::new(&model, opt)
        .input_shape(&[784])
        .epochs(10)
        .batch_size(64)
        .callback(EarlyStopping::new("val_loss").patience(2))
        .fit(&train, Some(&val))
        .unwrap();
    assert_eq!(history.epochs.len(), 3, "best at epoch 1, no better at 2 and 3");
    assert_eq!(history.outcome, Outcome::Stopped { by: "EarlyStopping".into() });
    // Monitoring validation figures without validation data is an error, not a silent pass.
    let e = Trainer::new(&model, Box::new(SGD::new(model.parameters(), 0.0).unwrap()))
        .input_shape(&[784])
        .epochs(2)
        .callback(EarlyStopping::new("val_acc"))
        .fit(&train, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no validation data"), "{e}");
    let e = Trainer::new(&model, Box::new(SGD::new(model.parameters(), 0.0).unwrap()))
        .input_shape(&[784])
        .callback(EarlyStopping::new("val_los"))
        .fit(&train, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("val_loss, val_acc, train_loss, train_acc"), "{e}");
}

/// With `restore_best`, the model ends with the weights of the epoch whose figure was best,
/// not the last epoch's.
#[test]
fn early_stopping_restores_the_best_weights() {
    let model = simple_nn(3);
    let opt = SGD::new(model.parameters(), 0.0).unwrap();
    let mut es = EarlyStopping::new("val_loss").patience(2).restore_best(true);
    let mut kept = vec![];
    for (epoch, loss) in [1.0, 0.5, 0.7, 0.8].into_iter().enumerate() {
        // The weights change every epoch (as training would change them).
        for p in model.parameters() {
            no_grad(|| p.fill_(epoch as f64)).unwrap();
        }
        kept.push(params(&model));
        let log = EpochLog {
            epoch: epoch + 1,
            epochs: 4,
            step: epoch + 1,
            train_loss: Some(loss),
            train_acc: None,
            val: Some(Evaluation { loss, accuracy: None, samples: 1, f1_macro: None, f1_weighted: None, top_k: None }),
            improved: false,
            lr: 0.0,
            samples_per_s: 0.0,
            time_s: 0.0,
        };
        let p =
            Progress { model: &model, optimizer: &opt, state: TrainState::default(), callbacks: &Default::default() };
        let control = es.on_epoch_end(&p, &log).unwrap();
        assert_eq!(control == Control::Stop, epoch == 3, "epoch {epoch}");
    }
    assert_eq!(es.best(), Some((0.5, 2)));
    let p = Progress { model: &model, optimizer: &opt, state: TrainState::default(), callbacks: &Default::default() };
    es.on_fit_end(&p, &Outcome::Stopped { by: "EarlyStopping".into() }).unwrap();
    assert_eq!(params(&model), kept[1], "the weights of epoch 2, the best");
}

/// Stops the run after a given step (as Ctrl-C or a callback would, mid-epoch).
struct StopAt(usize);

impl Callback for StopAt {
    fn on_step_end(&mut self, p: &Progress, _s: &StepLog) -> strata_train::Result<Control> {
        Ok(if p.state.step == self.0 { Control::Stop } else { Control::Continue })
    }
}

/// A run stopped mid-epoch and resumed from its checkpoint ends with the same weights, bit for
/// bit, as the run that never stopped; the interrupt flag stops a run after the current step.
#[test]
fn a_stopped_run_resumes_from_its_checkpoint_bit_for_bit() {
    let (train, val) = data(640, 100);
    let whole = simple_nn(4);
    Trainer::new(&whole, sgd(&whole))
        .input_shape(&[784])
        .epochs(2)
        .batch_size(64)
        .schedule(Schedule::cosine(0.001).warmup(0.5))
        .fit(&train, Some(&val))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let first = simple_nn(4);
    let mut ckpt = Checkpointing::new(dir.path());
    let h = Trainer::new(&first, sgd(&first))
        .input_shape(&[784])
        .epochs(2)
        .batch_size(64)
        .schedule(Schedule::cosine(0.001).warmup(0.5))
        .callback(StopAt(13))
        .fit_with(&train, Some(&val), &mut [&mut ckpt])
        .unwrap();
    assert_eq!(h.outcome, Outcome::Stopped { by: "StopAt".into() });
    assert_eq!((h.state.epoch, h.state.batch, h.state.step), (1, 3, 13));
    let path = ckpt.last_written().unwrap().to_path_buf();
    assert_eq!(path, checkpoint::step_file(dir.path(), 13));

    let resumed = simple_nn(99); // other initial weights: all of them come from the checkpoint
    let mut opt = sgd(&resumed);
    let meta = checkpoint::restore(&path, &resumed, opt.as_mut()).unwrap();
    let h = Trainer::new(&resumed, opt)
        .base_lr(0.05)
        .input_shape(&[784])
        .epochs(2)
        .batch_size(64)
        .schedule(Schedule::cosine(0.001).warmup(0.5))
        .resume(&meta)
        .fit(&train, Some(&val))
        .unwrap();
    assert_eq!((h.outcome, h.state.step), (Outcome::Completed, 20));
    assert_eq!(params(&resumed), params(&whole));

    // The interrupt flag, raised mid-run, stops after that step.
    let model = simple_nn(5);
    let trainer = Trainer::new(&model, sgd(&model)).input_shape(&[784]).epochs(3).batch_size(64);
    struct Raise(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Callback for Raise {
        fn on_step_end(&mut self, p: &Progress, _s: &StepLog) -> strata_train::Result<Control> {
            if p.state.step == 4 {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(Control::Continue)
        }
    }
    let flag = trainer.interrupt_flag();
    let h = trainer.callback(Raise(flag)).fit(&train, None).unwrap();
    assert_eq!((h.outcome, h.state.step, h.state.batch), (Outcome::Interrupted, 4, 4));
}

/// Data the model cannot take, and an empty training set, are clear errors before any step;
/// so is evaluating an empty set.
#[test]
fn data_that_does_not_fit_is_a_clear_error() {
    let (train, _) = data(64, 1);
    let model = simple_nn(6);
    let e = Trainer::new(&model, sgd(&model)).input_shape(&[28, 27]).fit(&train, None).unwrap_err().to_string();
    assert!(e.contains("[28, 27]") && e.contains("input_shape") && e.contains("784 values"), "{e}");
    let empty = train.subset(&[]).unwrap();
    let e = Trainer::new(&model, sgd(&model)).input_shape(&[784]).fit(&empty, None).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    // Evaluating no samples is an error, not a loss of 0.
    let e = Trainer::new(&model, sgd(&model)).input_shape(&[784]).evaluate(&empty).unwrap_err().to_string();
    assert!(e.contains("evaluating an empty data set"), "{e}");
}

/// A hand-written module (PyTorch's SimpleNN as a struct) trains as well as a built one.
#[test]
fn a_hand_written_module_trains() {
    struct Mlp {
        fc1: Linear,
        fc2: Linear,
    }
    impl Module for Mlp {
        fn forward(&self, x: &Tensor) -> strata_nn::Result<Tensor> {
            self.fc2.forward(&self.fc1.forward(x)?.relu()?)
        }
        fn children(&self) -> Vec<(String, &dyn Module)> {
            vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
        }
    }
    let model = with_seed(8, || Mlp { fc1: Linear::new(784, 32).unwrap(), fc2: Linear::new(32, 10).unwrap() });
    let (train, val) = data(1280, 300);
    let opt = Box::new(Adam::new(model.parameters(), 1e-3).unwrap());
    let h = Trainer::new(&model, opt).input_shape(&[784]).epochs(2).fit(&train, Some(&val)).unwrap();
    assert!(h.last_val().unwrap().accuracy.unwrap() > 0.7, "{h:?}");
}

/// Raises the interrupt flag after step `.1` (Ctrl-C at that point).
struct InterruptAt(std::sync::Arc<std::sync::atomic::AtomicBool>, usize);

impl Callback for InterruptAt {
    fn on_step_end(&mut self, p: &Progress, _s: &StepLog) -> strata_train::Result<Control> {
        if p.state.step == self.1 {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(Control::Continue)
    }
}

/// Early stopping goes on across a resume where it was: a run interrupted mid-epoch and resumed
/// stops at the same epoch as the run that never stopped, and puts back the same best epoch's
/// weights, kept in the checkpoint. (Its counters started over on resume: the resumed run
/// stopped two epochs later, and ended with its last weights, the best epoch's being lost.)
#[test]
fn early_stopping_resumes_where_it_was() {
    let (train, val) = data(640, 100);
    // min_delta 10: only the first epoch counts as an improvement, so the run stops after
    // epoch 1 + patience, and the best weights are epoch 1's.
    let early = || EarlyStopping::new("val_loss").patience(3).min_delta(10.0).restore_best(true);
    fn trainer(m: &Sequential, opt: Box<dyn Optimizer>) -> Trainer<'_> {
        Trainer::new(m, opt).input_shape(&[784]).epochs(10).batch_size(64)
    }

    let whole = simple_nn(11);
    let mut es = early();
    let h = trainer(&whole, sgd(&whole)).fit_with(&train, Some(&val), &mut [&mut es]).unwrap();
    assert_eq!((es.stopped_at(), es.best().map(|b| b.1)), (Some(4), Some(1)));
    assert_eq!(h.state.step, 40);

    // Interrupted in epoch 3 (after step 25), early stopping before the checkpoints.
    let dir = tempfile::tempdir().unwrap();
    let first = simple_nn(11);
    let (mut es, mut ckpt) = (early(), Checkpointing::new(dir.path()));
    let t = trainer(&first, sgd(&first));
    let flag = t.interrupt_flag();
    let h = t.callback(InterruptAt(flag, 25)).fit_with(&train, Some(&val), &mut [&mut es, &mut ckpt]).unwrap();
    assert_eq!((h.outcome, h.state.step), (Outcome::Interrupted, 25));
    let path = ckpt.last_written().unwrap().to_path_buf();

    let resumed = simple_nn(99);
    let mut opt = sgd(&resumed);
    let meta = checkpoint::restore(&path, &resumed, opt.as_mut()).unwrap();
    // The interrupted run's own weights were saved, not the best epoch's it would restore.
    assert_eq!(meta.callbacks["early_stopping"].tensors.len(), 4);
    let mut es = early();
    let h = trainer(&resumed, opt).base_lr(0.05).resume(&meta).fit_with(&train, Some(&val), &mut [&mut es]).unwrap();
    assert_eq!((es.stopped_at(), es.best().map(|b| b.1)), (Some(4), Some(1)));
    assert_eq!((h.outcome, h.state.step), (Outcome::Stopped { by: "EarlyStopping".into() }, 40));
    assert_eq!(params(&resumed), params(&whole));
}

/// The count of skipped steps goes on across a resume: a run whose one bad sample (NaN
/// features) makes one step an epoch non-finite, interrupted in epoch 2 and resumed, reports
/// the same count and ends with the same weights as the run never interrupted. (The count
/// started over on resume: "1 steps were skipped" for 3.)
#[test]
fn skipped_steps_are_counted_across_a_resume() {
    let (mut train, _) = data(640, 1);
    train.features[..784].fill(f32::NAN);
    fn trainer(m: &Sequential, opt: Box<dyn Optimizer>) -> Trainer<'_> {
        Trainer::new(m, opt).input_shape(&[784]).epochs(3).batch_size(64).on_divergence(OnDivergence::Skip)
    }
    let whole = simple_nn(12);
    let h = trainer(&whole, sgd(&whole)).fit(&train, None).unwrap();
    assert_eq!((h.skipped, h.state.skipped, h.state.step), (3, 3, 30));

    let dir = tempfile::tempdir().unwrap();
    let first = simple_nn(12);
    let mut ckpt = Checkpointing::new(dir.path());
    let t = trainer(&first, sgd(&first));
    let flag = t.interrupt_flag();
    let h = t.callback(InterruptAt(flag, 15)).fit_with(&train, None, &mut [&mut ckpt]).unwrap();
    assert_eq!(h.outcome, Outcome::Interrupted);
    let before = h.skipped;
    let resumed = simple_nn(99);
    let mut opt = sgd(&resumed);
    let meta = checkpoint::restore(ckpt.last_written().unwrap(), &resumed, opt.as_mut()).unwrap();
    assert_eq!(meta.skipped, before);
    let h = trainer(&resumed, opt).base_lr(0.05).resume(&meta).fit(&train, None).unwrap();
    assert_eq!((h.skipped, h.state.step), (3, 30));
    assert_eq!(params(&resumed), params(&whole));
}
