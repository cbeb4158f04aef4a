//! Random-architecture differential test against PyTorch (issue 11): every model under
//! `tests/fixtures/differential/` (drawn by `tools/make_random_models.py` from every layer kind,
//! loss and optimizer strata has) is built from its model file, loaded with PyTorch's initial
//! state_dict, and run through the same forward, loss, backward and three optimizer steps as
//! PyTorch ran, in f64 and in f32. Compared, per model: `logits`, `loss`, `grad_input` (float
//! inputs), `grad.<param>`, `buffer.<buffer>` after the first training forward, `losses` of the
//! three steps, `step3.<param>` after the third step, and `eval_logits` in evaluation mode.
//!
//! Tolerances, per quantity with PyTorch's f64 result `r` as the reference:
//! - **f64**: every element within `1e-10·|r_i| + 1e-12·max_j |r_j|`. The absolute term is for
//!   elements near zero that come out of cancellation (a gradient summed over a batch, a
//!   BatchNorm output): their rounding error is that of the terms summed, of the order of the
//!   quantity's largest element times n·2⁻⁵³ (below 1e-13 for the sums here), not of the
//!   element itself, so a purely relative bound would demand more than f64 can give.
//! - **f32**: `max_i |strata_f32_i − r_i| ≤ 4·torch_err + 4·ε₃₂·max_i |r_i|`, ε₃₂ = 2⁻²³, where
//!   `torch_err` is PyTorch's own f32 error on that quantity of that model (`cases.toml`): the
//!   largest `max_i |torch_f32_i − r_i|` over its plain f32 run and two f32 runs whose inputs
//!   and initial state were moved by one ulp per element. A backward-stable f32 implementation
//!   computes the exact result of inputs perturbed by a few ulps, so the nudged runs show how
//!   far a correct one may land, also where a quantity amplifies rounding (an Adam step on a
//!   gradient element near eps, a ReLU near zero). strata may round differently from PyTorch
//!   but not be much less accurate than that; the floor of four ulps of the largest element
//!   covers quantities PyTorch happens to get exactly.
//! - Integer buffers (`num_batches_tracked`) exactly.
//!
//! A failure names the model, the precision, the quantity and its worst element; the test runs
//! every model, then panics listing the failing models and the first 60 failures. With
//! `--nocapture` it prints the quantities closest to their bounds (`STRATA_DIFF_VERBOSE=1`: all).

use std::collections::BTreeMap;
use strata_core::{DType, Reduction, Tensor};
use strata_nn::model_file::parse_model;
use strata_nn::{
    Adam, AdamConfig, AdamW, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, Module, NLLLoss, Optimizer, SGD, SgdConfig,
    StateDict,
};
use toml::{Table, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/differential");

/// Models whose f32 run is known to leave its bound, with the reason; their f64 run must still
/// pass, and their f32 run must still fail (so the entry goes when the cause is fixed).
///
/// All four have a stride-1 3×3 convolution with at least 8 channels in and out, which runs as
/// Winograd F(2×2, 3×3), and train with Adam or AdamW. The Winograd weight gradient does not
/// keep PyTorch's exact zeros (in `c206`, `c208` and `c211`; `c110` is 1.9× its bound): in
/// `c208_conv14`, `grad.2.weight[14, 3, 2, 0]` is exactly 0 in PyTorch (f32 and f64: the
/// element's taps never meet a live output) and 3.2e-10 in strata's f32. Adam divides each
/// gradient element by its own magnitude (plus eps = 1e-8), so that noise becomes a step of
/// ~lr/100 per iteration where PyTorch takes none: 3e-4 after three steps against PyTorch's
/// f32 spread of 2e-8. Their first forward and backward are within 0.21 of their bounds.
const KNOWN_F32_FAILURES: &[(&str, &str)] = &[];

/// One case of `cases.toml`.
struct Case {
    name: String,
    model_file: String,
    float_input: bool,
    loss: Table,
    optim: Table,
    torch_f32_err: BTreeMap<String, f64>,
    torch_f32_err_plain: BTreeMap<String, f64>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(format!("{DIR}/cases.toml")).expect("cases.toml");
    let root: Table = text.parse().expect("cases.toml is TOML");
    let list = root["case"].as_array().expect("[[case]]");
    list.iter()
        .map(|c| {
            let c = c.as_table().expect("case table");
            let s = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("case.{k}")).to_string();
            Case {
                name: s("name"),
                model_file: s("model"),
                float_input: c["float_input"].as_bool().expect("float_input"),
                loss: c["loss"].as_table().expect("loss").clone(),
                optim: c["optim"].as_table().expect("optim").clone(),
                torch_f32_err: errors(c, "torch_f32_err"),
                torch_f32_err_plain: errors(c, "torch_f32_err_plain"),
            }
        })
        .collect()
}

fn errors(case: &Table, key: &str) -> BTreeMap<String, f64> {
    case[key].as_table().unwrap_or_else(|| panic!("{key}")).iter().map(|(k, v)| (k.clone(), num(v))).collect()
}

fn num(v: &Value) -> f64 {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).expect("a number")
}

/// A new leaf tensor with `t`'s values in `dtype` (float tensors) or as they are (integers), so
/// that nothing done to it reaches the fixture's own tensor.
fn fresh(t: &Tensor, dtype: DType) -> Tensor {
    match t.dtype() {
        DType::I64 => Tensor::from_vec(t.to_vec::<i64>().unwrap(), t.dims()).unwrap(),
        _ if dtype == DType::F64 => Tensor::from_vec(t.to_vec_f64(), t.dims()).unwrap(),
        _ => Tensor::from_vec(t.to_vec_f64().into_iter().map(|v| v as f32).collect(), t.dims()).unwrap(),
    }
}

fn reduction(loss: &Table) -> Reduction {
    match loss["reduction"].as_str().unwrap() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        other => panic!("reduction {other}"),
    }
}

/// The case's loss as a function of the model's output (`reduction = "none"` is summed, as
/// the generator does, to have a scalar to differentiate).
fn loss_fn(case: &Case, t: &StateDict, dtype: DType) -> impl Fn(&Tensor) -> Result<Tensor, String> {
    let l = &case.loss;
    let get = |k: &str| t.get(&format!("{}.{k}", case.name)).map(|v| fresh(v, dtype));
    let target = get("target").expect("target");
    let r = reduction(l);
    let ignore = l.get("ignore_index").and_then(Value::as_integer);
    let kind = l["type"].as_str().unwrap().to_string();
    let weight = get("loss_weight");
    let pos_weight = get("pos_weight");
    let smoothing = l.get("label_smoothing").map_or(0.0, num);
    move |out: &Tensor| {
        let loss = match kind.as_str() {
            "CrossEntropyLoss" => {
                let mut c = CrossEntropyLoss::with_reduction(r).label_smoothing(smoothing);
                c.weight = weight.clone();
                c.ignore_index = ignore;
                c.forward(out, &target)
            }
            "NLLLoss" => {
                let mut c = NLLLoss::with_reduction(r);
                c.weight = weight.clone();
                c.ignore_index = ignore;
                c.forward(out, &target)
            }
            "BCEWithLogitsLoss" => {
                let mut c = BCEWithLogitsLoss::with_reduction(r);
                c.pos_weight = pos_weight.clone();
                c.forward(out, &target)
            }
            "MSELoss" => MSELoss::with_reduction(r).forward(out, &target),
            other => panic!("loss {other}"),
        }
        .map_err(|e| format!("{kind}: {e}"))?;
        if loss.ndim() > 0 { loss.sum_all().map_err(|e| format!("sum_all: {e}")) } else { Ok(loss) }
    }
}

fn optimizer(o: &Table, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    let f = |k: &str| num(&o[k]);
    match o["type"].as_str().unwrap() {
        "SGD" => Box::new(
            SGD::with_config(
                params,
                SgdConfig {
                    lr: f("lr"),
                    momentum: f("momentum"),
                    dampening: f("dampening"),
                    nesterov: o["nesterov"].as_bool().unwrap(),
                    weight_decay: f("weight_decay"),
                },
            )
            .unwrap(),
        ),
        kind @ ("Adam" | "AdamW") => {
            let config = AdamConfig {
                lr: f("lr"),
                betas: (f("beta1"), f("beta2")),
                eps: f("eps"),
                weight_decay: f("weight_decay"),
                amsgrad: o["amsgrad"].as_bool().unwrap(),
            };
            if kind == "Adam" {
                Box::new(Adam::with_config(params, config).unwrap())
            } else {
                Box::new(AdamW::with_config(params, config).unwrap())
            }
        }
        other => panic!("optimizer {other}"),
    }
}

/// What the generator's `run` computes, by strata, keyed as the references are.
fn run(case: &Case, t: &StateDict, dtype: DType) -> Result<BTreeMap<String, Tensor>, String> {
    let path = format!("{DIR}/{}", case.model_file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let spec = parse_model(&text, &path, &case.name).map_err(|e| e.to_string())?.dtype(dtype);
    let model = spec.build().map_err(|e| format!("build: {e}"))?;
    let mut init = StateDict::new();
    let prefix = format!("{}.init.", case.name);
    for (k, v) in t.iter() {
        if let Some(key) = k.strip_prefix(&prefix) {
            init.insert(key, fresh(v, dtype));
        }
    }
    model.load_state_dict(&init, true).map_err(|e| format!("load_state_dict: {e}"))?;
    model.train(true);
    let x = fresh(t.get(&format!("{}.x", case.name)).ok_or("no x")?, dtype);
    let loss_of = loss_fn(case, t, dtype);
    let e = |what: &'static str| move |err: strata_nn::Error| format!("{what}: {err}");
    let ec = |what: &'static str| move |err: strata_core::Error| format!("{what}: {err}");

    // The first iteration differentiates with respect to the input too, as the generator does.
    let xg =
        if case.float_input { fresh(&x, dtype).requires_grad_().map_err(ec("requires_grad_"))? } else { x.clone() };
    let out = model.forward(&xg).map_err(e("forward"))?;
    let loss = loss_of(&out)?;
    loss.backward().map_err(ec("backward"))?;
    let mut res = BTreeMap::new();
    res.insert("logits".to_string(), out.detach());
    res.insert("loss".to_string(), loss.detach());
    if case.float_input {
        res.insert("grad_input".to_string(), xg.grad().ok_or("the input has no gradient")?);
    }
    // Gradients and buffers are copied: zero_grad and later forwards update them in place.
    for (k, p) in model.named_parameters() {
        let g = p.grad().ok_or_else(|| format!("{k} has no gradient"))?;
        res.insert(format!("grad.{k}"), fresh(&g, dtype));
    }
    for (k, b) in model.named_buffers() {
        res.insert(format!("buffer.{k}"), fresh(&b, dtype));
    }
    let mut opt = optimizer(&case.optim, model.parameters());
    let mut losses = vec![loss.item().map_err(ec("item"))?];
    opt.step().map_err(e("step"))?;
    for _ in 0..2 {
        opt.zero_grad().map_err(e("zero_grad"))?;
        let l = loss_of(&model.forward(&x).map_err(e("forward"))?)?;
        losses.push(l.item().map_err(ec("item"))?);
        l.backward().map_err(ec("backward"))?;
        opt.step().map_err(e("step"))?;
    }
    res.insert("losses".to_string(), Tensor::from_vec(losses, &[3]).unwrap());
    for (k, p) in model.named_parameters() {
        res.insert(format!("step3.{k}"), fresh(&p, dtype));
    }
    model.eval();
    res.insert("eval_logits".to_string(), model.forward(&x).map_err(e("eval forward"))?.detach());
    Ok(res)
}

/// Compares one quantity: its worst error over its bound (≤ 1 passes) and, when it fails, the
/// message naming the model, precision, quantity and worst element.
fn compare(case: &Case, dtype: DType, q: &str, got: &Tensor, want: &Tensor) -> (f64, Option<String>) {
    let tag = format!("{} ({}) {q}", case.name, if dtype == DType::F64 { "f64" } else { "f32" });
    if got.dims() != want.dims() {
        return (f64::INFINITY, Some(format!("{tag}: shape {:?}, PyTorch {:?}", got.dims(), want.dims())));
    }
    let (g, w) = (got.to_vec_f64(), want.to_vec_f64());
    if want.dtype() == DType::I64 {
        return if g == w { (0.0, None) } else { (f64::INFINITY, Some(format!("{tag}: {g:?}, PyTorch {w:?}"))) };
    }
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // The bound of element i: per element in f64, one for the whole quantity in f32.
    let bound: Box<dyn Fn(f64) -> f64> = if dtype == DType::F64 {
        Box::new(|r: f64| 1e-10 * r.abs() + 1e-12 * scale)
    } else {
        let torch_err = case.torch_f32_err.get(q).copied().unwrap_or_else(|| panic!("{tag}: no torch_f32_err"));
        Box::new(move |_| 4.0 * torch_err + 4.0 * f32::EPSILON as f64 * scale)
    };
    // The element that exceeds its bound by the largest factor (NaN counts as infinitely far).
    let (mut i, mut ratio) = (0, 0.0);
    for (j, (a, r)) in g.iter().zip(&w).enumerate() {
        let err = (a - r).abs();
        let rj = if err.is_nan() { f64::INFINITY } else { err / bound(*r).max(f64::MIN_POSITIVE) };
        if rj > ratio {
            (i, ratio) = (j, rj);
        }
    }
    if ratio <= 1.0 {
        return (ratio, None);
    }
    let mut idx = vec![0; want.ndim()];
    let mut rest = i;
    for (d, n) in idx.iter_mut().zip(want.dims()).rev() {
        *d = rest % n;
        rest /= n;
    }
    let (err, b) = ((g[i] - w[i]).abs(), bound(w[i]));
    let mut msg = format!(
        "{tag}: worst element {idx:?}: strata {:e}, PyTorch{} {:e}, error {err:.3e} > bound {b:.3e}",
        g[i],
        if dtype == DType::F32 { " f64" } else { "" },
        w[i]
    );
    if dtype == DType::F32 {
        let plain = case.torch_f32_err_plain.get(q).copied().unwrap_or(f64::NAN);
        msg += &format!(" (PyTorch's own f32 error {:.3e}, {plain:.3e} in its plain run)", case.torch_f32_err[q]);
    }
    (ratio, Some(msg))
}

#[test]
fn random_models_match_pytorch() {
    let t = StateDict::load(format!("{DIR}/tensors.safetensors")).expect("tensors.safetensors");
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut failures = vec![];
    let mut margins: Vec<(f64, String)> = vec![];
    for case in &cases {
        let known = KNOWN_F32_FAILURES.iter().find(|(name, _)| *name == case.name);
        let refs: Vec<(String, &Tensor)> = {
            let prefix = format!("{}.ref.", case.name);
            t.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|q| (q.to_string(), v))).collect()
        };
        assert!(!refs.is_empty(), "{}: no references", case.name);
        for dtype in [DType::F64, DType::F32] {
            let before = failures.len();
            let got = match run(case, &t, dtype) {
                Ok(g) => g,
                Err(e) => {
                    failures.push(format!("{} ({dtype:?}): {e}", case.name));
                    continue;
                }
            };
            for (q, want) in &refs {
                match got.get(q) {
                    None => failures.push(format!("{} ({dtype:?}): strata has no `{q}`", case.name)),
                    Some(g) => {
                        let (ratio, failure) = compare(case, dtype, q, g, want);
                        if known.is_none() || dtype == DType::F64 {
                            margins.push((ratio, format!("{} ({dtype:?}) {q}", case.name)));
                        }
                        failures.extend(failure);
                    }
                }
            }
            if let (DType::F32, Some((_, why))) = (dtype, known) {
                if failures.len() == before {
                    failures.push(format!(
                        "{} (f32) now passes: remove it from KNOWN_F32_FAILURES (it was: {why})",
                        case.name
                    ));
                } else {
                    println!("known f32 failure of {} ({why}):", case.name);
                    for f in failures.drain(before..) {
                        println!("  {f}");
                    }
                }
            }
        }
    }
    // The quantities closest to their bounds, known failures aside (shown with `--nocapture`).
    margins.sort_by(|a, b| b.0.total_cmp(&a.0));
    let verbose = std::env::var_os("STRATA_DIFF_VERBOSE").is_some();
    for (ratio, what) in margins.iter().take(if verbose { margins.len() } else { 12 }) {
        println!("{ratio:8.3} of its bound: {what}");
    }
    println!("{} quantities of {} models compared", margins.len(), cases.len());
    if !failures.is_empty() {
        // Which models fail, then the first failures in full.
        let mut per_model: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &failures {
            *per_model.entry(f.split(' ').next().unwrap_or("")).or_default() += 1;
        }
        let models: Vec<String> = per_model.iter().map(|(m, n)| format!("{m} ({n})")).collect();
        let shown = failures.iter().take(60).cloned().collect::<Vec<_>>().join("\n");
        panic!(
            "{} quantities of {} of the {} models differ from PyTorch: {}\n{shown}",
            failures.len(),
            per_model.len(),
            cases.len(),
            models.join(", ")
        );
    }
}
