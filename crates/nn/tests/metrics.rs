//! `strata_nn::metrics`: cases worked out by hand (zero divisions, absent classes, ties, refused
//! arguments), and parity with scikit-learn 1.9 (and `torch.topk`) through the fixture
//! `tests/fixtures/metrics_parity.safetensors`, made by `tools/make_metrics_fixtures.py`; its
//! docstring has the exact Python behind every key. The report must equal sklearn's
//! `classification_report` to the character.

use std::collections::HashMap;
use strata_core::Tensor;
use strata_nn::metrics::{ClassScores, ConfusionMatrix, TopK};
use strata_nn::{Result, StateDict};

fn t_i64(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

fn logits(rows: &[&[f32]]) -> Tensor {
    let c = rows[0].len();
    Tensor::from_vec(rows.concat(), &[rows.len(), c]).unwrap()
}

#[track_caller]
fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-12, "{what}: {a} vs {b}");
}

/// sklearn's docstring example: y_true = [0, 1, 2, 2, 2], y_pred = [0, 0, 2, 2, 1].
/// Class 0: tp 1, predicted 2, support 1 → precision 1/2, recall 1, F1 2/3.
/// Class 1: tp 0, predicted 1, support 1 → 0, 0, 0. Class 2: tp 2, predicted 2, support 3 →
/// 1, 2/3, F1 4/5. Macro F1 (2/3 + 0 + 4/5)/3 = 22/45; weighted (2/3 + 0 + 3·4/5)/5 = 46/75.
#[test]
fn by_hand() -> Result<()> {
    let mut cm = ConfusionMatrix::new(3);
    cm.update(&t_i64(&[0, 0, 2, 2, 1]), &t_i64(&[0, 1, 2, 2, 2]))?;
    assert_eq!((cm.total(), cm.correct()), (5, 3));
    close(cm.accuracy(), 0.6, "accuracy");
    assert_eq!(cm.row(2), Some(&[0u64, 1, 2][..]));
    assert_eq!(cm.get(1, 0), Some(1));
    assert_eq!((cm.get(3, 0), cm.row(3)), (None, None));
    let s = cm.per_class();
    assert_eq!(s[0], ClassScores { precision: 0.5, recall: 1.0, f1: 2.0 / 3.0, support: 1 });
    assert_eq!(s[1], ClassScores { precision: 0.0, recall: 0.0, f1: 0.0, support: 1 });
    close(s[2].recall, 2.0 / 3.0, "recall 2");
    close(s[2].f1, 0.8, "f1 2");
    close(cm.f1_macro(), 22.0 / 45.0, "f1 macro");
    close(cm.f1_weighted(), 46.0 / 75.0, "f1 weighted");
    close(cm.precision_macro(), 0.5, "precision macro");
    close(cm.recall_weighted(), cm.accuracy(), "weighted recall is accuracy");
    Ok(())
}

/// 4 classes: class 2 never occurs and is never predicted (left out of the macro mean), class 3
/// never occurs but is predicted once (in the mean, with 0). y_true = [0, 0, 1, 1],
/// y_pred = [0, 3, 1, 1]: F1 per class 2/3, 1, –, 0 → macro (2/3 + 1 + 0)/3 = 5/9; weighted
/// (2·2/3 + 2·1)/4 = 5/6. Nothing counted: every score 0.
#[test]
fn absent_classes_and_zero_division() -> Result<()> {
    let mut cm = ConfusionMatrix::new(4);
    assert_eq!((cm.accuracy(), cm.f1_macro(), cm.f1_weighted()), (0.0, 0.0, 0.0));
    cm.update_indices(&[0, 3, 1, 1], &[0, 0, 1, 1])?;
    assert_eq!(cm.present(), [0, 1, 3]);
    assert_eq!(cm.class_scores(2), Some(ClassScores { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 }));
    assert_eq!(cm.class_scores(4), None);
    close(cm.f1_macro(), 5.0 / 9.0, "f1 macro");
    close(cm.f1_weighted(), 5.0 / 6.0, "f1 weighted");
    // precision: 1, 1, –, 0 (class 3: 0 of 1 prediction right).
    close(cm.precision_macro(), 2.0 / 3.0, "precision macro");
    cm.reset();
    assert_eq!(cm.total(), 0);
    Ok(())
}

/// The argmax of tied logits is the first maximum (torch.argmax); top-k ranks equal scores by
/// index, lower first, so top-1 agrees with the confusion matrix. Row 0: [1, 1, 0] label 1 →
/// class 0 ranks above it: not top-1, top-2. Row 1: [0, 2, 2] label 1 → top-1. Row 2: all equal,
/// label 2 → two above it: top-3 only. Row 3: NaN ranks above every number (PyTorch), label 0 →
/// top-2.
#[test]
fn ties_and_nan() -> Result<()> {
    let x = logits(&[&[1.0, 1.0, 0.0], &[0.0, 2.0, 2.0], &[5.0, 5.0, 5.0], &[3.0, f32::NAN, 1.0]]);
    let y = t_i64(&[1, 1, 2, 0]);
    let mut cm = ConfusionMatrix::new(3);
    cm.update(&x, &y)?;
    // argmax: 0, 1, 0, and 1 (NaN wins, as torch.argmax).
    assert_eq!(cm.row(1), Some(&[1u64, 1, 0][..]));
    assert_eq!(cm.row(0), Some(&[0u64, 1, 0][..]));
    let mut accs = vec![];
    for k in 1..=3 {
        let mut top = TopK::new(k)?;
        top.update(&x, &y)?;
        assert_eq!(top.total(), 4);
        accs.push(top.correct());
    }
    assert_eq!(accs, [1, 3, 4]);
    assert_eq!(cm.correct(), accs[0]);
    Ok(())
}

/// Refused arguments name what is wrong and count nothing.
#[test]
fn refusals() {
    let mut cm = ConfusionMatrix::new(3);
    let e = |r: Result<()>| r.unwrap_err().to_string();
    let msg = e(cm.update(&t_i64(&[0, 1]), &t_i64(&[0, 3])));
    assert!(msg.contains("labels must be class indices in 0..3, got 3 (position 1)"), "{msg}");
    let msg = e(cm.update(&logits(&[&[0.0, 1.0]]), &t_i64(&[0])));
    assert!(msg.contains("logits must be [1, 3]"), "{msg}");
    let msg = e(cm.update(&t_i64(&[0, 1]), &t_i64(&[0])));
    assert!(msg.contains("predictions must be [1]"), "{msg}");
    let f = Tensor::from_vec(vec![0.0f32, 1.0], &[2]).unwrap();
    let msg = e(cm.update(&t_i64(&[0, 1]), &f));
    assert!(msg.contains("labels must be [N], i64"), "{msg}");
    let msg = e(cm.update_indices(&[-1], &[0]));
    assert!(msg.contains("predictions must be class indices in 0..3, got -1"), "{msg}");
    assert_eq!(cm.total(), 0);
    assert!(TopK::new(0).unwrap_err().to_string().contains("k must be at least 1"));
    let mut top = TopK::new(5).unwrap();
    let msg = e(top.update(&logits(&[&[0.0, 1.0, 2.0]]), &t_i64(&[0])));
    assert!(msg.contains("k must be at most the number of classes, 3"), "{msg}");
    let msg = e(top.update_scores(&[0.0; 6], 5, &[0]));
    assert!(msg.contains("5 per label (1 labels)"), "{msg}");
    assert_eq!(top.total(), 0);
    // An empty batch counts nothing and is no error.
    cm.update(&Tensor::from_vec(Vec::<f32>::new(), &[0, 3]).unwrap(), &t_i64(&[])).unwrap();
    assert_eq!(cm.total(), 0);
}

/// The report's layout, named and unnamed (a name list too short falls back to indices).
#[test]
fn report_snapshot() -> Result<()> {
    let mut cm = ConfusionMatrix::new(4);
    cm.update_indices(&[0, 0, 2, 2, 1, 3, 3, 3], &[0, 1, 2, 2, 2, 3, 3, 1])?;
    insta::assert_snapshot!("report_indices", cm.report(None));
    let names: Vec<String> = ["zero", "one", "two"].iter().map(|s| s.to_string()).collect();
    insta::assert_snapshot!("report_names_digits4", cm.report_with_digits(Some(&names), 4));
    Ok(())
}

fn fixture() -> (StateDict, HashMap<String, String>) {
    StateDict::load_with_metadata(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics_parity.safetensors"))
        .expect("fixture")
}

/// Every case of the fixture: per-class precision, recall, F1 and support (`labels=range(C)`,
/// `zero_division=0`), accuracy and the macro and weighted averages, top-k accuracy for
/// k ∈ {1, 2, 3, 5} (sklearn's `top_k_accuracy_score` and `torch.topk`, which agree on these
/// tie-free logits) and `classification_report` with 2 and 4 digits, to the character.
#[test]
fn sklearn_parity() -> Result<()> {
    let (sd, meta) = fixture();
    let get = |k: &str| sd.get(k).unwrap_or_else(|| panic!("fixture lacks {k}")).clone();
    for case in ["multi", "binary", "names", "docs"] {
        let precision = get(&format!("{case}.precision")).to_vec::<f64>()?;
        let classes = precision.len();
        let labels = get(&format!("{case}.labels"));
        let output = sd.get(&format!("{case}.logits")).cloned().unwrap_or_else(|| get(&format!("{case}.preds")));
        let mut cm = ConfusionMatrix::new(classes);
        // In two batches, to check the accumulation.
        let n = labels.dims()[0];
        let half = n / 2;
        cm.update(&output.narrow(0, 0, half)?, &labels.narrow(0, 0, half)?)?;
        cm.update(&output.narrow(0, half, n - half)?, &labels.narrow(0, half, n - half)?)?;
        let scores = cm.per_class();
        let recall = get(&format!("{case}.recall")).to_vec::<f64>()?;
        let f1 = get(&format!("{case}.f1")).to_vec::<f64>()?;
        let support = get(&format!("{case}.support")).to_vec::<i64>()?;
        for c in 0..classes {
            close(scores[c].precision, precision[c], &format!("{case} precision[{c}]"));
            close(scores[c].recall, recall[c], &format!("{case} recall[{c}]"));
            close(scores[c].f1, f1[c], &format!("{case} f1[{c}]"));
            assert_eq!(scores[c].support, support[c] as u64, "{case} support[{c}]");
        }
        let averages = get(&format!("{case}.averages")).to_vec::<f64>()?;
        let ours = [
            cm.accuracy(),
            cm.precision_macro(),
            cm.recall_macro(),
            cm.f1_macro(),
            cm.precision_weighted(),
            cm.recall_weighted(),
            cm.f1_weighted(),
        ];
        for (i, (a, b)) in ours.iter().zip(&averages).enumerate() {
            close(*a, *b, &format!("{case} averages[{i}]"));
        }
        let names: Option<Vec<String>> =
            meta.get(&format!("{case}.names")).map(|s| s.lines().map(String::from).collect());
        assert_eq!(cm.report(names.as_deref()), meta[&format!("{case}.report")], "{case} report");
        assert_eq!(cm.report_with_digits(names.as_deref(), 4), meta[&format!("{case}.report4")], "{case} report4");
        if sd.get(&format!("{case}.logits")).is_some() {
            let ks = get(&format!("{case}.topk_k")).to_vec::<i64>()?;
            let expected = get(&format!("{case}.topk")).to_vec::<f64>()?;
            for (k, e) in ks.iter().zip(expected) {
                let mut top = TopK::new(*k as usize)?;
                top.update(&output.narrow(0, 0, half)?, &labels.narrow(0, 0, half)?)?;
                top.update(&output.narrow(0, half, n - half)?, &labels.narrow(0, half, n - half)?)?;
                close(top.accuracy(), e, &format!("{case} top-{k}"));
                if *k == 1 {
                    assert_eq!(top.correct(), cm.correct(), "{case}: top-1 is the accuracy");
                }
            }
        }
    }
    // The fixture covers what it claims: an absent class, and one predicted but never true.
    let multi = get("multi.support").to_vec::<i64>()?;
    assert_eq!((multi[5], multi[6]), (0, 0));
    assert!(meta["multi.report"].contains("\n           6 ") && !meta["multi.report"].contains("\n           5 "));
    Ok(())
}
