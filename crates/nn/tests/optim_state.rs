//! Optimizer state survives a save/restore exactly: 2 steps, state_dict, a fresh optimizer that
//! loads it, 2 more steps → bit-identical to 4 uninterrupted steps (SGD, Adam, RMSprop, Adagrad).

use strata_core::{DType, Generator, Tensor};
use strata_nn::{
    Adagrad, AdagradConfig, Adam, AdamConfig, CrossEntropyLoss, Linear, Module, Optimizer, RMSprop, RMSpropConfig, SGD,
    Sequential, SgdConfig, StateDict,
};

fn model() -> Sequential {
    let mut rng = Generator::new(9);
    Sequential::new()
        .add_module("fc1", Linear::with_options(6, 5, true, DType::F32, &mut rng).unwrap())
        .unwrap()
        .add_module("fc2", Linear::with_options(5, 3, true, DType::F32, &mut rng).unwrap())
        .unwrap()
}

fn step(m: &Sequential, opt: &mut dyn Optimizer) {
    let mut rng = Generator::new(4);
    let x = Tensor::randn(&[8, 6], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let y = Tensor::from_vec((0..8).map(|i| i % 3).collect::<Vec<i64>>(), &[8]).unwrap();
    opt.zero_grad().unwrap();
    CrossEntropyLoss::new().forward(&m.forward(&x).unwrap(), &y).unwrap().backward().unwrap();
    opt.step().unwrap();
}

fn bits(m: &Sequential) -> Vec<Vec<u32>> {
    m.parameters().iter().map(|p| p.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

fn check(make: impl Fn(Vec<Tensor>) -> Box<dyn Optimizer>) {
    let straight = model();
    let mut opt = make(straight.parameters());
    (0..4).for_each(|_| step(&straight, opt.as_mut()));

    let first = model();
    let mut opt = make(first.parameters());
    (0..2).for_each(|_| step(&first, opt.as_mut()));
    let (params, state): (StateDict, StateDict) = (first.state_dict(), opt.state_dict());
    let resumed = model();
    resumed.load_state_dict(&params, true).unwrap();
    let mut opt = make(resumed.parameters());
    opt.load_state_dict(&state).unwrap();
    (0..2).for_each(|_| step(&resumed, opt.as_mut()));
    assert_eq!(bits(&straight), bits(&resumed));
}

#[test]
fn sgd_with_momentum_resumes_exactly() {
    check(|p| Box::new(SGD::with_config(p, SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() }).unwrap()));
}

#[test]
fn adam_with_amsgrad_resumes_exactly() {
    check(|p| Box::new(Adam::with_config(p, AdamConfig { lr: 0.01, amsgrad: true, ..Default::default() }).unwrap()));
}

#[test]
fn rmsprop_centered_with_momentum_resumes_exactly() {
    let c = RMSpropConfig { lr: 0.01, momentum: 0.9, centered: true, weight_decay: 1e-3, ..Default::default() };
    check(|p| Box::new(RMSprop::with_config(p, c).unwrap()));
}

#[test]
fn adagrad_with_lr_decay_resumes_exactly() {
    // The step count drives the decay: a resumed run that lost it would take other steps.
    let c = AdagradConfig { lr: 0.1, lr_decay: 0.5, initial_accumulator_value: 0.1, ..Default::default() };
    check(|p| Box::new(Adagrad::with_config(p, c).unwrap()));
}

#[test]
fn bad_state_is_an_error() {
    let m = model();
    let mut opt = SGD::with_config(m.parameters(), SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() }).unwrap();
    let mut sd = StateDict::new();
    sd.insert("momentum_buffer.0", Tensor::zeros(&[2, 2], DType::F32));
    assert!(
        opt.load_state_dict(&sd).unwrap_err().to_string().contains("has shape [2, 2], but its parameter has [5, 6]")
    );
}

#[test]
fn bad_rmsprop_and_adagrad_state_are_errors() {
    let m = model();
    let mut opt = RMSprop::new(m.parameters(), 0.01).unwrap();
    let mut sd = StateDict::new();
    sd.insert("exp_avg.0", Tensor::zeros(&[5, 6], DType::F32));
    assert_eq!(
        opt.load_state_dict(&sd).unwrap_err().to_string(),
        "RMSprop: saved state `exp_avg.0`: not an RMSprop state entry"
    );
    let mut opt = Adagrad::new(m.parameters(), 0.01).unwrap();
    let mut sd = StateDict::new();
    sd.insert("sum.9", Tensor::zeros(&[5, 6], DType::F32));
    assert_eq!(
        opt.load_state_dict(&sd).unwrap_err().to_string(),
        "Adagrad: saved state `sum.9`: not an Adagrad state entry"
    );
    let mut sd = StateDict::new();
    sd.insert("sum.1", Tensor::zeros(&[6], DType::F32));
    assert!(opt.load_state_dict(&sd).unwrap_err().to_string().contains("has shape [6], but its parameter has [5]"));
}
