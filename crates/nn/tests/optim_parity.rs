//! PyTorch parity for `RMSprop` and `Adagrad`: five steps over three parameters with a fixed
//! gradient sequence (one parameter skips a step, having no gradient), for several option
//! combinations each, in f64 and f32; every parameter after every step and the optimizer state
//! after the last (under torch's state names) against `torch.optim`'s `foreach=False` results.
//! The fixture `tests/fixtures/optim_parity.safetensors` was made by
//! `tools/make_optim_fixtures.py` (its docstring has the exact torch code):
//!
//! ```python
//! params = [p.clone().requires_grad_() for p in init]
//! opt = OPTIMIZER(params, **options, foreach=False)
//! for k in range(STEPS):
//!     for i, p in enumerate(params):
//!         p.grad = grads[k][i].clone() if (k, i) != (1, 1) else None
//!     opt.step()
//! ```
//!
//! Tolerances: f64 within 1e-12 relative (of each tensor's largest magnitude); f32 within 4 ulps
//! of it. PyTorch's CPU kernels fuse some multiply-adds (`add` with `alpha`, `lerp`) that strata
//! rounds twice, so the results agree to rounding, not to the bit.

use strata_core::{DType, Device, Tensor};
use strata_nn::{Adagrad, AdagradConfig, Optimizer, RMSprop, RMSpropConfig, StateDict};

const STEPS: usize = 5;
const PARAMS: usize = 3;

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optim_parity.safetensors")).expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

/// Makes an optimizer over the given parameters.
type Make = Box<dyn Fn(Vec<Tensor>) -> Box<dyn Optimizer>>;

/// Each case's optimizer, built with the options the fixture's case used.
fn cases() -> Vec<(&'static str, Make)> {
    fn rms(c: RMSpropConfig) -> Make {
        Box::new(move |p| Box::new(RMSprop::with_config(p, c).unwrap()))
    }
    fn ada(c: AdagradConfig) -> Make {
        Box::new(move |p| Box::new(Adagrad::with_config(p, c).unwrap()))
    }
    let r = RMSpropConfig::default();
    let a = AdagradConfig::default();
    vec![
        ("rmsprop", rms(r)),
        ("rmsprop_centered", rms(RMSpropConfig { centered: true, ..r })),
        ("rmsprop_momentum", rms(RMSpropConfig { momentum: 0.9, ..r })),
        ("rmsprop_wd", rms(RMSpropConfig { weight_decay: 0.1, lr: 0.05, ..r })),
        (
            "rmsprop_all",
            rms(RMSpropConfig { lr: 0.03, alpha: 0.9, eps: 1e-6, weight_decay: 0.05, momentum: 0.5, centered: true }),
        ),
        ("rmsprop_low_alpha", rms(RMSpropConfig { alpha: 0.3, centered: true, ..r })),
        ("adagrad", ada(a)),
        ("adagrad_lr_decay", ada(AdagradConfig { lr: 0.1, lr_decay: 0.3, ..a })),
        ("adagrad_init", ada(AdagradConfig { initial_accumulator_value: 0.5, ..a })),
        ("adagrad_wd", ada(AdagradConfig { weight_decay: 0.1, ..a })),
        (
            "adagrad_all",
            ada(AdagradConfig {
                lr: 0.2,
                lr_decay: 0.05,
                weight_decay: 0.02,
                initial_accumulator_value: 0.1,
                eps: 1e-6,
            }),
        ),
    ]
}

/// The worst element's error over the expected tensor's largest magnitude.
fn error(actual: &Tensor, expected: &Tensor, what: &str) -> f64 {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    let scale = e.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    // A NaN anywhere is an infinite error (`f64::max` would drop it).
    a.iter()
        .zip(&e)
        .map(|(a, e)| (a - e).abs() / scale)
        .map(|x| if x.is_nan() { f64::INFINITY } else { x })
        .fold(0.0, f64::max)
}

/// Runs every case in `dtype` on `device`, checking each step's parameters and the final state;
/// returns the worst relative error seen.
fn run_cases(dtype: DType, device: Device) -> f64 {
    let sd = fixture();
    let d = if dtype == DType::F64 { "f64" } else { "f32" };
    let tol = if dtype == DType::F64 { 1e-12 } else { 4.0 * f64::from(f32::EPSILON) };
    let mut worst = 0.0f64;
    for (case, make) in cases() {
        let params: Vec<Tensor> = (0..PARAMS)
            .map(|i| get(&sd, &format!("{d}.init.{i}")).to_device(device).unwrap().requires_grad_().unwrap())
            .collect();
        let mut opt = make(params.clone());
        for k in 0..STEPS {
            for (i, p) in params.iter().enumerate() {
                let g = sd.get(&format!("{d}.grad.{k}.{i}")).map(|g| g.to_device(device).unwrap());
                p.set_grad(g).unwrap();
            }
            opt.step().unwrap();
            for (i, p) in params.iter().enumerate() {
                let what = format!("{case} {d} on {device}: parameter {i} after step {}", k + 1);
                let err = error(p, &get(&sd, &format!("{case}.{d}.step.{k}.{i}")), &what);
                assert!(err <= tol, "{what}: error {err:.3e} (of the largest magnitude) > {tol:.1e}");
                worst = worst.max(err);
            }
        }
        // The state under torch's names: every entry torch has, and no other.
        let state = opt.state_dict();
        let prefix = format!("{case}.{d}.state.");
        let expected: Vec<String> =
            sd.keys().filter_map(|k| k.strip_prefix(&prefix)).map(str::to_string).collect::<Vec<_>>();
        let mut ours: Vec<String> = state.keys().map(str::to_string).collect();
        let mut theirs = expected.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{case} {d}: state entries");
        for key in expected {
            let (t, r) =
                (&state.get(&key).unwrap().to_device(Device::Cpu).unwrap(), &get(&sd, &format!("{prefix}{key}")));
            if key.starts_with("step.") {
                assert_eq!(t.item().unwrap(), r.item().unwrap(), "{case} {d}: {key}");
            } else {
                let what = format!("{case} {d} on {device}: state {key}");
                let err = error(t, r, &what);
                assert!(err <= tol, "{what}: error {err:.3e} > {tol:.1e}");
                worst = worst.max(err);
            }
        }
    }
    worst
}

#[test]
fn rmsprop_and_adagrad_match_torch_f64() {
    let worst = run_cases(DType::F64, Device::Cpu);
    println!("f64: worst error {worst:.2e} of the largest magnitude");
}

#[test]
fn rmsprop_and_adagrad_match_torch_f32() {
    let worst = run_cases(DType::F32, Device::Cpu);
    println!("f32: worst error {:.2} ulps of the largest magnitude", worst / f64::from(f32::EPSILON));
}

/// The same updates on a GPU (composed from the device's elementwise ops), against the same
/// PyTorch results. Without an adapter it prints `SKIPPED` (and fails under
/// `STRATA_REQUIRE_GPU=1`).
#[cfg(feature = "gpu")]
#[test]
fn rmsprop_and_adagrad_match_torch_on_a_gpu() {
    if strata_core::gpu::adapters().is_empty() {
        let reason = strata_core::gpu::no_adapter_reason();
        assert!(std::env::var("STRATA_REQUIRE_GPU").as_deref() != Ok("1"), "STRATA_REQUIRE_GPU=1 but {reason}");
        eprintln!("SKIPPED: the GPU test in {}: {reason}", file!());
        return;
    }
    let worst = run_cases(DType::F32, Device::Gpu(0));
    println!("f32 on the GPU: worst error {:.2} ulps of the largest magnitude", worst / f64::from(f32::EPSILON));
}
