//! `LossConfig`: each named loss built from its run-file table gives hand-derivable values on
//! class-index labels; `mse` and `bce_with_logits` equal the explicit computation on one-hot
//! targets (values and gradients); bad options are errors naming the key (snapshot).

use strata_core::testing::assert_close;
use strata_core::{DType, Device, Generator, Reduction, Tensor};
use strata_nn::{BCEWithLogitsLoss, Loss, LossConfig, MSELoss};

fn config(toml_text: &str) -> LossConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
}

fn build(toml_text: &str, classes: usize) -> Box<dyn Loss> {
    config(toml_text).build(classes, DType::F64, Device::Cpu).unwrap()
}

fn value(loss: &dyn Loss, output: &Tensor, target: &Tensor) -> f64 {
    loss.loss(output, target).unwrap().item().unwrap()
}

fn labels(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

#[test]
fn cross_entropy_by_hand() {
    // Both rows have softmax [1/4, 3/4]: the right class costs ln(4/3) for class 1, ln 4 for 0.
    let l3 = 3f64.ln();
    let x = Tensor::from_vec(vec![0.0, l3, 0.0, l3], &[2, 2]).unwrap();
    let y = labels(&[1, 0]);
    let (a, b) = ((4.0f64 / 3.0).ln(), 4f64.ln());
    let cases = [
        ("", (a + b) / 2.0),
        ("reduction = \"sum\"", a + b),
        // Weighted mean: Σ w_t·l / Σ w_t.
        ("weight = [1.0, 3.0]", (3.0 * a + b) / 4.0),
        ("ignore_index = 0", a),
        // (1 − ε)·nll + ε·mean over classes of −log p, and here both rows' mean is (a + b)/2.
        ("label_smoothing = 0.2", 0.8 * (a + b) / 2.0 + 0.2 * (a + b) / 2.0),
    ];
    for (options, expected) in cases {
        let loss = build(&format!("name = \"cross_entropy\"\n{options}"), 2);
        assert_close(&[value(loss.as_ref(), &x, &y)], &[expected], 1e-14, 0.0);
    }
    // The default is cross_entropy with no options.
    assert_close(&[value(build("", 2).as_ref(), &x, &y)], &[(a + b) / 2.0], 1e-14, 0.0);
    assert_eq!(build("", 2).name(), "CrossEntropyLoss");
}

#[test]
fn nll_takes_log_probabilities() {
    let x = Tensor::from_vec(vec![-1.0f64, -2.0, -3.0, -0.5], &[2, 2]).unwrap();
    let y = labels(&[1, 0]);
    for (options, expected) in [
        ("", 2.5),
        ("reduction = \"sum\"", 5.0),
        ("ignore_index = 0", 2.0),
        ("weight = [1.0, 3.0]", (3.0 * 2.0 + 3.0) / 4.0),
    ] {
        let loss = build(&format!("name = \"nll\"\n{options}"), 2);
        assert_eq!(value(loss.as_ref(), &x, &y), expected, "{options}");
    }
}

#[test]
fn mse_on_one_hot_targets() {
    let x = Tensor::from_vec(vec![0.5f64, 0.2, 0.1, 0.0, 1.0, 0.0], &[2, 3]).unwrap();
    let y = labels(&[0, 1]);
    // Row 0 against [1, 0, 0]: 0.25 + 0.04 + 0.01; row 1 is exact.
    assert_close(&[value(build("name = \"mse\"", 3).as_ref(), &x, &y)], &[0.3 / 6.0], 1e-15, 0.0);
    let sum = build("name = \"mse\"\nreduction = \"sum\"", 3);
    assert_close(&[value(sum.as_ref(), &x, &y)], &[0.3], 1e-15, 0.0);
    assert_eq!(sum.name(), "MSELoss");
}

#[test]
fn bce_with_logits_on_one_hot_targets() {
    // Every logit 0 costs ln 2, times pos_weight where the target is 1: (0, 2) × 3 and (1, 0) × 1.
    let x = Tensor::zeros(&[2, 3], DType::F64);
    let y = labels(&[2, 0]);
    let loss = build("name = \"bce_with_logits\"\npos_weight = [1.0, 2.0, 3.0]", 3);
    assert_close(&[value(loss.as_ref(), &x, &y)], &[8.0 * 2f64.ln() / 6.0], 1e-15, 0.0);
}

/// The one-hot losses equal the explicit computation on a one-hot tensor built by hand, in value
/// and in the gradient of the output, in f32 and f64.
#[test]
fn one_hot_losses_equal_the_explicit_computation() {
    let mut rng = Generator::new(5);
    let (n, c) = (7, 4);
    let y: Vec<i64> = (0..n).map(|i| (i * 3 % c) as i64).collect();
    let one_hot: Vec<f64> = (0..n * c).map(|k| if y[k / c] as usize == k % c { 1.0 } else { 0.0 }).collect();
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::randn(&[n, c], 0.0, 2.0, dtype, &mut rng).unwrap();
        let t = Tensor::from_vec(one_hot.clone(), &[n, c]).unwrap().to_dtype(dtype).unwrap();
        let pw = Tensor::from_vec(vec![0.5f64, 1.0, 2.0, 4.0], &[c]).unwrap().to_dtype(dtype).unwrap();
        // The same losses given the one-hot tensor `t` `[n, c]` explicitly.
        let explicit: [(&str, Box<dyn Loss>); 3] = [
            ("name = \"mse\"", Box::new(MSELoss::new())),
            (
                "name = \"bce_with_logits\"\nreduction = \"sum\"",
                Box::new(BCEWithLogitsLoss::with_reduction(Reduction::Sum)),
            ),
            (
                "name = \"bce_with_logits\"\npos_weight = [0.5, 1.0, 2.0, 4.0]",
                Box::new(BCEWithLogitsLoss::new().pos_weight(pw.clone())),
            ),
        ];
        for (text, reference) in explicit {
            let loss = config(text).build(c, dtype, Device::Cpu).unwrap();
            let (a, b) = (x.detach().requires_grad_().unwrap(), x.detach().requires_grad_().unwrap());
            let ours = loss.loss(&a, &labels(&y)).unwrap();
            let theirs = reference.loss(&b, &t).unwrap();
            assert_eq!(ours.dtype(), dtype);
            assert_eq!(ours.to_vec_f64(), theirs.to_vec_f64(), "{text} {dtype:?}");
            ours.backward().unwrap();
            theirs.backward().unwrap();
            assert_eq!(a.grad().unwrap().to_vec_f64(), b.grad().unwrap().to_vec_f64(), "{text} {dtype:?}: gradient");
        }
    }
}

#[test]
fn describe_names_the_class_and_options() {
    let cases = [
        ("", "CrossEntropyLoss"),
        ("label_smoothing = 0.1", "CrossEntropyLoss(label_smoothing=0.1)"),
        (
            "weight = [1.0, 2.5]\nignore_index = 1\nreduction = \"sum\"",
            "CrossEntropyLoss(weight=[1, 2.5], ignore_index=1, reduction=sum)",
        ),
        ("name = \"nll\"", "NLLLoss on log-probabilities"),
        ("name = \"mse\"", "MSELoss on one-hot targets"),
        (
            "name = \"bce_with_logits\"\npos_weight = [2.0, 2.0]",
            "BCEWithLogitsLoss(pos_weight=[2, 2]) on one-hot targets",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(config(text).describe(), expected);
    }
    assert!(LossConfig::default().is_default());
    assert!(!config("label_smoothing = 0.0").is_default());
}

/// Every refusal, by the key it names. Options a loss does not have are errors, never ignored.
#[test]
fn bad_options_are_errors_naming_the_key() {
    let cases = [
        ("name = \"hinge\"", 3),
        ("reduction = \"none\"", 3),
        ("weight = [1.0, 2.0]", 3),
        ("weight = [1.0, -2.0, 1.0]", 3),
        ("weight = [0.0, 0.0, 0.0]", 3),
        ("name = \"mse\"\nweight = [1.0, 2.0, 3.0]", 3),
        ("label_smoothing = 1.5", 3),
        ("name = \"nll\"\nlabel_smoothing = 0.1", 3),
        ("name = \"bce_with_logits\"\nignore_index = 0", 3),
        ("pos_weight = [1.0, 1.0, 1.0]", 3),
        ("name = \"bce_with_logits\"\npos_weight = [1.0, 1.0]", 3),
    ];
    let mut report = String::new();
    for (text, classes) in cases {
        let e = config(text).build(classes, DType::F32, Device::Cpu).unwrap_err();
        report.push_str(&format!("{} ({classes} classes)\n  {e}\n", text.replace('\n', "; ")));
    }
    // Not a loss option at all: serde names it, with its line.
    let e = toml::from_str::<LossConfig>("name = \"mse\"\nsmoothing = 0.1\n").unwrap_err();
    report.push_str(&format!("name = \"mse\"; smoothing = 0.1\n{e}"));
    // Labels that do not fit the output.
    let mse = build("name = \"mse\"", 3);
    let x = Tensor::zeros(&[2, 3], DType::F64);
    for (output, target) in
        [(x.clone(), labels(&[0, 3])), (x.clone(), labels(&[0])), (Tensor::zeros(&[2, 4], DType::F64), labels(&[0, 1]))]
    {
        report.push_str(&format!("mse: {}\n", mse.loss(&output, &target).unwrap_err()));
    }
    insta::assert_snapshot!(report);
}

/// On a GPU the one-hot rows are looked up there (no read-back of the labels): the same values
/// as on the CPU. Without an adapter it prints `SKIPPED` (and fails under `STRATA_REQUIRE_GPU=1`).
#[cfg(feature = "gpu")]
#[test]
fn one_hot_losses_on_a_gpu() {
    if strata_core::gpu::adapters().is_empty() {
        let reason = strata_core::gpu::no_adapter_reason();
        assert!(std::env::var("STRATA_REQUIRE_GPU").as_deref() != Ok("1"), "STRATA_REQUIRE_GPU=1 but {reason}");
        eprintln!("SKIPPED: the GPU test in {}: {reason}", file!());
        return;
    }
    let gpu = Device::Gpu(0);
    let x = Tensor::randn(&[6, 5], 0.0, 1.0, DType::F32, &mut Generator::new(2)).unwrap();
    let y = labels(&[0, 4, 2, 2, 1, 3]);
    for text in ["name = \"mse\"", "name = \"bce_with_logits\"\npos_weight = [1.0, 2.0, 3.0, 4.0, 5.0]"] {
        let cpu = config(text).build(5, DType::F32, Device::Cpu).unwrap().loss(&x, &y).unwrap().item().unwrap();
        let on_gpu = config(text).build(5, DType::F32, gpu).unwrap();
        let l = on_gpu.loss(&x.to_device(gpu).unwrap(), &y.to_device(gpu).unwrap()).unwrap().item().unwrap();
        assert_close(&[l], &[cpu], 1e-6, 0.0);
    }
}
