//! PyTorch parity for the pooling options: `ceil_mode` (MaxPool2d, AvgPool2d),
//! `count_include_pad` and `divisor_override` (AvgPool2d). The fixture
//! `tests/fixtures/pool_option_parity.safetensors` was made by
//! `tools/make_pool_option_fixtures.py` with real PyTorch (its docstring has the exact torch
//! code and how to regenerate it). Each case's options travel in the fixture (`<name>.config`),
//! so the cases are listed once, in the script. Tolerances: 1e-5 relative (1e-6 absolute) in
//! f32, 1e-12 relative (1e-13 absolute) in f64.

use strata_core::testing::assert_close;
use strata_core::{DType, Tensor, pool_output_size};
use strata_nn::spec::{LayerSpec, ModelSpec};
use strata_nn::{AvgPool2d, MaxPool2d, Module, StateDict, Summary};

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pool_option_parity.safetensors"))
        .expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

#[track_caller]
fn close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    let (rtol, atol) = if expected.dtype() == DType::F64 { (1e-12, 1e-13) } else { (1e-5, 1e-6) };
    let r = std::panic::catch_unwind(|| assert_close(&actual.to_vec_f64(), &expected.to_vec_f64(), rtol, atol));
    if let Err(e) = r {
        panic!("{what}: {}", e.downcast_ref::<String>().cloned().unwrap_or_default());
    }
}

/// The module a fixture config describes: `[kind (0 MaxPool2d, 1 AvgPool2d), kH, kW, sH, sW,
/// pH, pW, dH, dW, ceil_mode, count_include_pad, divisor_override (0: None)]`.
fn module_of(c: &[i64]) -> Box<dyn Module> {
    let u = |i: usize| c[i] as usize;
    let (k, s, p, d) = ((u(1), u(2)), (u(3), u(4)), (u(5), u(6)), (u(7), u(8)));
    let ceil_mode = c[9] != 0;
    if c[0] == 0 {
        Box::new(MaxPool2d::new(k).stride(s).padding(p).dilation(d).ceil_mode(ceil_mode))
    } else {
        let divisor = (c[11] != 0).then(|| u(11));
        Box::new(
            AvgPool2d::new(k)
                .stride(s)
                .padding(p)
                .ceil_mode(ceil_mode)
                .count_include_pad(c[10] != 0)
                .divisor_override(divisor),
        )
    }
}

/// For every case and dtype:
/// ```python
/// torch.manual_seed(seed)
/// x = torch.randn(*shape, dtype=dtype, requires_grad=True)
/// y = pool(x); gy = torch.randn(*y.shape, dtype=dtype); y.backward(gy)
/// ```
/// with `pool` one of
/// ```python
/// nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
/// nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil_mode,
///              count_include_pad=count_include_pad, divisor_override=divisor_override)
/// ```
/// over the geometries of `tools/make_pool_option_fixtures.py`, ceil_mode on and off,
/// count_include_pad on and off, divisor_override None and 4. Compares the output and the
/// input gradient, and checks that the shape check's output size (the summary's) is the
/// forward's.
#[test]
fn pools_with_options_match_pytorch() {
    let sd = fixture();
    let names: Vec<String> = sd.keys().filter_map(|k| k.strip_suffix(".config")).map(String::from).collect();
    let mut seen = [0usize; 2];
    for name in &names {
        let config = get(&sd, &format!("{name}.config")).to_vec::<i64>().unwrap();
        let pool = module_of(&config);
        let x = get(&sd, &format!("{name}.x")).requires_grad_().unwrap();
        let y = pool.forward(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
        close(&y, &get(&sd, &format!("{name}.y")), &format!("{name} ({}): output", pool.describe()));
        y.mul(&get(&sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
        close(&x.grad().unwrap(), &get(&sd, &format!("{name}.grad_x")), &format!("{name}: grad of x"));

        // The shape check (what `strata check` and the summary show) gives the forward's size.
        let d = x.dims();
        let spec = ModelSpec::new(name).input(&d[1..]).layer("pool", pool.spec().unwrap());
        let report = spec.check(None).unwrap_or_else(|r| panic!("{name}: {}", r.render_errors()));
        let yd = y.dims();
        let want = format!("[N, {}, {}, {}]", yd[1], yd[2], yd[3]);
        let summary = Summary::from_report(&report, yd[0]);
        assert_eq!((summary.rows.len(), summary.rows[0].output.to_string()), (1, want.clone()), "{name}: summary");
        assert_eq!(summary.rows[0].layer_type, pool.describe(), "{name}: summary's description");
        assert_eq!(summary.total_activation_bytes, y.numel() * 4, "{name}: summary's activation bytes");
        assert_eq!(report.output.unwrap().to_string(), want, "{name}");
        seen[usize::from(x.dtype() == DType::F64)] += 1;
    }
    // 13 MaxPool2d and 36 AvgPool2d configurations, each in f32 and f64.
    assert_eq!(seen, [49, 49], "cases per dtype (f32, f64)");
}

/// PyTorch's output size for every `[kind, size, kernel, stride, padding, dilation, ceil_mode]`
/// in the fixture's `shape_table` (−1 where PyTorch refuses the input):
/// ```python
/// x = torch.zeros(1, 1, size, size)
/// F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode).shape[-1]  # kind 0
/// F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode).shape[-1]            # kind 1
/// ```
/// Checked against `pool_output_size`, the modules' forward and the shape check.
#[test]
fn output_size_rule_matches_pytorch() {
    let table = get(&fixture(), "shape_table");
    let rows = table.to_vec::<i64>().unwrap();
    assert_eq!(table.dims()[1], 8);
    let (mut accepted, mut ceil_differs) = (0, 0);
    for r in rows.chunks(8) {
        let [kind, size, k, s, p, d, ceil, out] = <[i64; 8]>::try_from(r).unwrap();
        let (size, k, s, p, d, ceil_mode) = (size as usize, k as usize, s as usize, p as usize, d as usize, ceil != 0);
        let want = (out >= 1).then_some(out as usize);
        let what =
            format!("kind {kind}, size {size}, kernel {k}, stride {s}, padding {p}, dilation {d}, ceil {ceil_mode}");
        assert_eq!(pool_output_size(size, k, s, p, d, ceil_mode), want, "{what}");

        let layer = if kind == 0 {
            LayerSpec::MaxPool2d(strata_core::MaxPool2dOptions {
                kernel_size: (k, k),
                stride: (s, s),
                padding: (p, p),
                dilation: (d, d),
                ceil_mode,
            })
        } else {
            LayerSpec::AvgPool2d(strata_core::AvgPool2dOptions {
                kernel_size: (k, k),
                stride: (s, s),
                padding: (p, p),
                ceil_mode,
                count_include_pad: true,
                divisor_override: None,
            })
        };
        let module: Box<dyn Module> = if kind == 0 {
            Box::new(MaxPool2d::new(k).stride(s).padding(p).dilation(d).ceil_mode(ceil_mode))
        } else {
            Box::new(AvgPool2d::new(k).stride(s).padding(p).ceil_mode(ceil_mode))
        };
        let forward = module.forward(&Tensor::zeros(&[1, 1, size, size], DType::F32));
        let checked = ModelSpec::new("t").input(&[1, size, size]).layer("pool", layer).check(None);
        match want {
            Some(o) => {
                assert_eq!(forward.unwrap().dims(), &[1, 1, o, o], "{what}");
                assert_eq!(checked.unwrap().output.unwrap().to_string(), format!("[N, 1, {o}, {o}]"), "{what}");
                accepted += 1;
                ceil_differs += usize::from(ceil_mode && pool_output_size(size, k, s, p, d, false) != want);
            }
            None => {
                assert!(forward.is_err(), "{what}: forward should fail");
                assert!(checked.is_err(), "{what}: the shape check should fail");
            }
        }
    }
    // The table reaches both outcomes, and ceil mode changes the size in many rows.
    assert!(accepted > 1000 && accepted < rows.len() / 8, "{accepted} of {} rows accepted", rows.len() / 8);
    assert!(ceil_differs > 100, "ceil mode changes {ceil_differs} sizes");
}
