//! The update rules by hand, on f64 (the GPU suite in `tests/devices.rs` compares the GPU's
//! updates with these kernels).

use super::*;
use crate::device::DType;

fn t(v: &[f64]) -> Tensor {
    Tensor::from_slice(v, &[v.len()]).unwrap()
}

#[test]
fn sgd_by_hand() {
    // p = 1, g = 0.5, lr 0.1.
    let cfg = SgdStep { lr: 0.1, ..Default::default() };
    let p = t(&[1.0]);
    p.sgd_step_(&t(&[0.5]), None, true, &cfg).unwrap();
    assert_eq!(p.to_vec::<f64>().unwrap(), [0.95]);
    // Weight decay 0.1: g = 0.5 + 0.1·1 = 0.6 → p = 0.94.
    let p = t(&[1.0]);
    p.sgd_step_(&t(&[0.5]), None, true, &SgdStep { weight_decay: 0.1, ..cfg }).unwrap();
    assert!((p.item().unwrap() - 0.94).abs() < 1e-15);
    // Momentum 0.9, dampening 0.5: step 1 b = g = 0.5, p = 0.95; step 2 (g = 0.5) b = 0.45 + 0.25
    // = 0.7, p = 0.88.
    let (p, b) = (t(&[1.0]), t(&[0.0]));
    let m = SgdStep { momentum: 0.9, dampening: 0.5, ..cfg };
    p.sgd_step_(&t(&[0.5]), Some(&b), true, &m).unwrap();
    p.sgd_step_(&t(&[0.5]), Some(&b), false, &m).unwrap();
    assert!((p.item().unwrap() - 0.88).abs() < 1e-15 && (b.item().unwrap() - 0.7).abs() < 1e-15);
    // Nesterov, momentum 0.9: step 1 b = 0.5, g = 0.5 + 0.45 = 0.95, p = 0.905.
    let (p, b) = (t(&[1.0]), t(&[0.0]));
    p.sgd_step_(&t(&[0.5]), Some(&b), true, &SgdStep { momentum: 0.9, nesterov: true, ..cfg }).unwrap();
    assert!((p.item().unwrap() - 0.905).abs() < 1e-15);
}

#[test]
fn adam_by_hand() {
    // Step 1: m̂ = g, v̂ = g², so p moves by lr·g/(|g| + eps) ≈ lr·sign(g).
    let cfg = AdamStep { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 1 };
    let (p, m, v) = (t(&[1.0, -2.0]), t(&[0.0, 0.0]), t(&[0.0, 0.0]));
    p.adam_step_(&t(&[2.0, -4.0]), &m, &v, None, &cfg).unwrap();
    let pv = p.to_vec::<f64>().unwrap();
    assert!((pv[0] - 0.9).abs() < 1e-7 && (pv[1] + 1.9).abs() < 1e-7, "{pv:?}");
    assert!((m.to_vec::<f64>().unwrap()[0] - 0.2).abs() < 1e-15);
    assert!((v.to_vec::<f64>().unwrap()[0] - 0.004).abs() < 1e-15);
    // AdamW shrinks p by 1 − lr·wd first: 1·(1 − 0.1·0.5) = 0.95, then the same step.
    let (p, m, v) = (t(&[1.0]), t(&[0.0]), t(&[0.0]));
    p.adam_step_(&t(&[2.0]), &m, &v, None, &AdamStep { weight_decay: 0.5, decoupled: true, ..cfg }).unwrap();
    assert!((p.item().unwrap() - 0.85).abs() < 1e-7);
    // AMSGrad keeps the largest v.
    let (p, m, v, vmax) = (t(&[1.0]), t(&[0.0]), t(&[0.0]), t(&[1.0]));
    p.adam_step_(&t(&[2.0]), &m, &v, Some(&vmax), &cfg).unwrap();
    assert_eq!(vmax.item().unwrap(), 1.0);
}

#[test]
fn bad_states_are_errors_not_panics() {
    let cfg = SgdStep { lr: 0.1, momentum: 0.9, ..Default::default() };
    let p = t(&[1.0, 2.0]);
    let e = p.sgd_step_(&t(&[1.0, 1.0]), None, true, &cfg).unwrap_err().to_string();
    assert!(e.contains("momentum needs a momentum buffer"), "{e}");
    let e = p.sgd_step_(&t(&[1.0]), None, true, &SgdStep::default()).unwrap_err().to_string();
    assert!(e.contains("shape [1]"), "{e}");
    let e = p.sgd_step_(&t(&[1.0, 1.0]), Some(&p), true, &cfg).unwrap_err().to_string();
    assert!(e.contains("its own tensor"), "{e}");
    let f32s = Tensor::zeros(&[2], DType::F32);
    assert!(matches!(p.sgd_step_(&f32s, None, true, &SgdStep::default()), Err(Error::DTypeMismatch { .. })));
    let ints = Tensor::from_vec(vec![1i64], &[1]).unwrap();
    assert!(matches!(ints.sgd_step_(&ints, None, true, &SgdStep::default()), Err(Error::UnsupportedDType { .. })));
    let adam = AdamStep { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 1 };
    let m = t(&[0.0, 0.0]);
    let e = p.adam_step_(&t(&[1.0, 1.0]), &m, &m, None, &adam).unwrap_err().to_string();
    assert!(e.contains("its own tensor"), "{e}");
}

#[test]
fn a_snapshot_of_a_parameter_keeps_its_values() {
    let p = t(&[1.0]);
    let before = p.detach();
    p.sgd_step_(&t(&[1.0]), None, true, &SgdStep { lr: 0.5, ..Default::default() }).unwrap();
    assert_eq!((p.item().unwrap(), before.item().unwrap()), (0.5, 1.0));
}
