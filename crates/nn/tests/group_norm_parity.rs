//! PyTorch parity for `GroupNorm`: one group, several, one per channel; affine on and off;
//! `[N, C]`, `[N, C, L]`, `[N, C, H, W]` and `[N, C, D, H, W]` inputs; non-default eps. The
//! fixture `tests/fixtures/group_norm_parity.safetensors` was made by
//! `tools/make_group_norm_fixtures.py` with real PyTorch (its docstring has the exact torch code
//! and how to regenerate it). Each case's options travel in the fixture (`<name>.config`,
//! `<name>.eps`), so the cases are listed once, in the script.
//!
//! Tolerances, as `padding_parity.rs` (whose weight gradients are sums too): 1e-5 relative in
//! f32 and 1e-12 relative in f64, with an absolute floor of 1e-6 (f32) or 1e-13 (f64) times the
//! tensor's largest magnitude (at least 1) for elements near zero. The floor scales because
//! `weight`'s gradient sums `N·(C/G)·∏*` products: an element of 0.076 among entries of ~3
//! carries PyTorch's own f32 rounding (measured on `g8_c32_hw`: PyTorch's f32 `weight`
//! gradient is 1.5e-6 from the f64 result of the same f32 inputs, strata's 4.8e-7). For the f32
//! cases the fixture also holds that f64 result (`<name>.exact.*`), and strata's f32 error
//! against it is held to PyTorch's own (at most twice, plus 1e-7 of the largest magnitude).

use strata_core::testing::assert_close;
use strata_core::{DType, Tensor};
use strata_nn::group_norm::GroupNormSpec;
use strata_nn::spec::ModelSpec;
use strata_nn::{Layer, Module, StateDict, Summary};

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group_norm_parity.safetensors"))
        .expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

/// The largest absolute difference.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// Compares strata's `actual` with PyTorch's `key` of case `name`, and for an f32 case both with
/// the f64 result of the same inputs (`<name>.exact.<quantity>`); returns the largest absolute
/// difference from PyTorch and, in f32, strata's and PyTorch's from that f64 result.
#[track_caller]
fn close(sd: &StateDict, actual: &Tensor, name: &str, quantity: &str, what: &str) -> [f64; 3] {
    let expected = get(sd, &format!("{name}.{quantity}"));
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let (rtol, atol) = if expected.dtype() == DType::F64 { (1e-12, 1e-13 * scale) } else { (1e-5, 1e-6 * scale) };
    let r = std::panic::catch_unwind(|| assert_close(&a, &e, rtol, atol));
    if let Err(err) = r {
        panic!("{what}: {}", err.downcast_ref::<String>().cloned().unwrap_or_default());
    }
    let (mut ours, mut torch) = (0.0, 0.0);
    if expected.dtype() == DType::F32 {
        let exact = get(sd, &format!("{name}.exact.{quantity}")).to_vec_f64();
        (ours, torch) = (max_diff(&a, &exact), max_diff(&e, &exact));
        assert!(
            ours <= 2.0 * torch + 1e-7 * scale,
            "{what}: strata's f32 error {ours:.2e} against the f64 result, PyTorch's {torch:.2e}"
        );
    }
    [max_diff(&a, &e), ours, torch]
}

/// For every case and dtype (the script's docstring has the code):
/// ```python
/// gn = nn.GroupNorm(num_groups, num_channels, eps=eps, affine=affine).to(dtype)
/// # weight, bias set to random values when affine
/// y = gn(x); y.backward(gy)
/// ```
/// Compares the output, the input gradient and the weight and bias gradients, loading
/// PyTorch's weight and bias through the state_dict (PyTorch's names); and checks that the
/// shape check and the summary agree with the module (shape, description, parameter count).
#[test]
fn group_norm_matches_pytorch() {
    let sd = fixture();
    let names: Vec<String> = sd.keys().filter_map(|k| k.strip_suffix(".config")).map(String::from).collect();
    assert!(sd.keys().any(|k| k.ends_with(".exact.grad_weight")), "the fixture has the f64 results of the f32 cases");
    let mut seen = [0usize; 2];
    // Largest difference from PyTorch in f32 and f64; strata's and PyTorch's f32 error.
    let mut worst = [0f64; 4];
    for name in &names {
        let config = get(&sd, &format!("{name}.config")).to_vec::<i64>().unwrap();
        let eps = get(&sd, &format!("{name}.eps")).to_vec_f64()[0];
        let (groups, channels, affine) = (config[0] as usize, config[1] as usize, config[2] != 0);
        let x = get(&sd, &format!("{name}.x"));
        let dtype = x.dtype();
        let spec = GroupNormSpec::new(groups, channels).eps(eps).affine(affine);
        let gn = spec.init(dtype).unwrap();
        if affine {
            let mut params = StateDict::new();
            params.insert("weight", get(&sd, &format!("{name}.weight")));
            params.insert("bias", get(&sd, &format!("{name}.bias")));
            gn.load_state_dict(&params, true).unwrap();
        }
        let x = x.requires_grad_().unwrap();
        let y = gn.forward(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
        let what = format!("{name} ({})", gn.describe());
        let mut errs = vec![close(&sd, &y, name, "y", &format!("{what}: output"))];
        y.mul(&get(&sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
        errs.push(close(&sd, &x.grad().unwrap(), name, "grad_x", &format!("{what}: grad of x")));
        if affine {
            for p in ["weight", "bias"] {
                let t = gn.named_parameters().into_iter().find(|(n, _)| n == p).unwrap().1;
                errs.push(close(&sd, &t.grad().unwrap(), name, &format!("grad_{p}"), &format!("{what}: grad of {p}")));
            }
        } else {
            assert_eq!(gn.num_parameters(), 0, "{name}");
        }
        let i = usize::from(dtype == DType::F64);
        for [diff, ours, torch] in errs {
            worst = [worst[0], worst[1], worst[2].max(ours), worst[3].max(torch)];
            worst[i] = worst[i].max(diff);
        }

        // The shape check (what `strata check` and the summary show) agrees with the module.
        let d = x.dims();
        let model = ModelSpec::new(name).input(&d[1..]).layer("gn", spec.to_spec());
        let report = model.check(None).unwrap_or_else(|r| panic!("{name}: {}", r.render_errors()));
        assert_eq!(report.output.clone().unwrap().with_batch(d[0]), d.to_vec(), "{name}");
        let summary = Summary::from_report(&report, d[0]);
        assert_eq!(summary.rows[0].layer_type, gn.describe(), "{name}: summary's description");
        assert_eq!(summary.total_params, gn.num_parameters(), "{name}: summary's parameters");
        seen[i] += 1;
    }
    println!(
        "largest absolute difference from PyTorch: f32 {:.3e}, f64 {:.3e}; from the f64 result of the f32 inputs: strata's f32 {:.3e}, PyTorch's f32 {:.3e}",
        worst[0], worst[1], worst[2], worst[3]
    );
    // 10 configurations, each in f32 and f64.
    assert_eq!(seen, [10, 10], "cases per dtype (f32, f64)");
}
