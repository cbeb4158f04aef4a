//! `Conv1d` and the 1-d pools: PyTorch parity (the fixture
//! `tests/fixtures/conv1d_parity.safetensors`, made by `tools/make_conv1d_fixtures.py` with real
//! PyTorch: outputs, input and parameter gradients for strides, dilation, groups, the padding
//! modes, `"same"`, `ceil_mode`, `count_include_pad`, unbatched input, f64), and the layer kinds:
//! model-file keys, the shape check's messages (snapshots), summaries.
//! Tolerances: 1e-5 relative or 1e-6 absolute for f32, 1e-12 / 1e-13 for f64.

use strata_core::testing::assert_close;
use strata_core::{DType, PaddingMode, Tensor};
use strata_nn::model_file::{parse_model, to_toml};
use strata_nn::spec::{ConvSpec, LayerSpec, ModelSpec};
use strata_nn::{AdaptiveAvgPool1d, AvgPool1d, Conv1dConfig, MaxPool1d, Module, StateDict};

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/conv1d_parity.safetensors")).expect("fixture")
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

/// ```python
/// torch.manual_seed(seed)
/// conv = ctor().to(dtype)
/// x = torch.randn(*shape, dtype=dtype, requires_grad=True)
/// y = conv(x); gy = torch.randn_like(y); y.backward(gy)
/// ```
/// with the constructors named in each case below.
#[test]
fn conv1d_matches_pytorch() {
    let sd = fixture();
    let cases: Vec<(&str, Conv1dConfig)> = vec![
        // nn.Conv1d(3, 4, 3)
        ("basic", Conv1dConfig::new(3, 4, 3)),
        // nn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=2, groups=2)
        ("strided", Conv1dConfig::new(4, 6, 5).stride(2).padding(2).dilation(2).groups(2)),
        // nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect"): the odd element on the right
        ("same_reflect", Conv1dConfig::new(2, 3, 4).padding_same().padding_mode(PaddingMode::Reflect)),
        // nn.Conv1d(2, 2, 3, padding=2, padding_mode="circular", bias=False)
        ("circular", Conv1dConfig::new(2, 2, 3).padding(2).padding_mode(PaddingMode::Circular).bias(false)),
        // nn.Conv1d(3, 3, 3, padding=1, padding_mode="replicate")
        ("replicate", Conv1dConfig::new(3, 3, 3).padding(1).padding_mode(PaddingMode::Replicate)),
        // nn.Conv1d(4, 8, 3, groups=4, padding=1)
        ("depthwise", Conv1dConfig::new(4, 8, 3).groups(4).padding(1)),
        // nn.Conv1d(3, 5, 2, stride=3) on an unbatched [3, 14]
        ("unbatched", Conv1dConfig::new(3, 5, 2).stride(3)),
        // nn.Conv1d(3, 4, 3, padding=1, dilation=2).double()
        ("f64", Conv1dConfig::new(3, 4, 3).padding(1).dilation(2).dtype(DType::F64)),
    ];
    for (name, config) in cases {
        let conv = config.init(&mut strata_core::Generator::new(0)).unwrap();
        let mut weights = StateDict::new();
        weights.insert("weight", get(&sd, &format!("{name}.weight")));
        if let Some(b) = sd.get(&format!("{name}.bias")) {
            weights.insert("bias", b.clone());
        }
        conv.load_state_dict(&weights, true).unwrap();
        let x = get(&sd, &format!("{name}.x")).requires_grad_().unwrap();
        let y = conv.forward(&x).unwrap();
        close(&y, &get(&sd, &format!("{name}.y")), &format!("{name}: output"));
        y.mul(&get(&sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
        close(&x.grad().unwrap(), &get(&sd, &format!("{name}.grad.x")), &format!("{name}: grad of x"));
        close(
            &conv.weight.grad().unwrap(),
            &get(&sd, &format!("{name}.grad.weight")),
            &format!("{name}: grad of weight"),
        );
        if let Some(b) = &conv.bias {
            close(&b.grad().unwrap(), &get(&sd, &format!("{name}.grad.bias")), &format!("{name}: grad of bias"));
        }
    }
}

/// The pools, as `conv1d_matches_pytorch` (no parameters):
/// `nn.MaxPool1d(3, stride=2, padding=1)`, `nn.MaxPool1d(2, stride=2, dilation=2,
/// ceil_mode=True)`, `nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True,
/// count_include_pad=False)`, `nn.AvgPool1d(4)`, `nn.AdaptiveAvgPool1d(4)` and
/// `nn.AdaptiveAvgPool1d(1)` on an unbatched f64 `[3, 9]`.
#[test]
fn pools_1d_match_pytorch() {
    let sd = fixture();
    let cases: Vec<(&str, Box<dyn Module>)> = vec![
        ("max_pool", Box::new(MaxPool1d::new(3).stride(2).padding(1))),
        ("max_pool_dilated_ceil", Box::new(MaxPool1d::new(2).stride(2).dilation(2).ceil_mode(true))),
        ("avg_pool", Box::new(AvgPool1d::new(3).stride(2).padding(1).ceil_mode(true).count_include_pad(false))),
        ("avg_pool_plain", Box::new(AvgPool1d::new(4))),
        ("adaptive_avg_pool", Box::new(AdaptiveAvgPool1d::new(4))),
        ("global_avg_pool", Box::new(AdaptiveAvgPool1d::new(1))),
    ];
    for (name, pool) in cases {
        let x = get(&sd, &format!("{name}.x")).requires_grad_().unwrap();
        let y = pool.forward(&x).unwrap();
        close(&y, &get(&sd, &format!("{name}.y")), &format!("{name}: output"));
        y.mul(&get(&sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
        close(&x.grad().unwrap(), &get(&sd, &format!("{name}.grad.x")), &format!("{name}: grad of x"));
    }
    let e = MaxPool1d::new(2).forward(&Tensor::zeros(&[2, 3, 4, 5], DType::F32)).unwrap_err().to_string();
    assert!(e.contains("MaxPool1d") && e.contains("[N, C, L] or [C, L]"), "{e}");
}

#[test]
fn bad_configs_and_inputs_are_errors_naming_conv1d() {
    let err = |c: Conv1dConfig| c.init(&mut strata_core::Generator::new(0)).unwrap_err().to_string();
    assert_eq!(err(Conv1dConfig::new(3, 4, 0)), "Conv1d: kernel_size must be at least 1, got 0");
    assert!(err(Conv1dConfig::new(3, 4, 3).groups(2)).contains("Conv1d: in_channels must be divisible by groups (2)"));
    assert!(err(Conv1dConfig::new(3, 4, 3).stride(2).padding_same()).contains("\"same\" with stride 2"));
    let conv = Conv1dConfig::new(3, 4, 3).init(&mut strata_core::Generator::new(0)).unwrap();
    let e = conv.forward(&Tensor::zeros(&[2, 3, 4, 5], DType::F32)).unwrap_err().to_string();
    assert!(e.contains("Conv1d") && e.contains("[N, 3, L] or [3, L]"), "{e}");
}

/// A 1-d CNN in a model file: keys as PyTorch's (sizes as integers), written back the same,
/// checked end to end (lengths through strides, "same" and a Linear on the flattened features),
/// summarised, and built into a model whose output has the checked shape.
#[test]
fn conv1d_in_model_files() {
    let text = r#"
input = [2, 50]
layers = [
  { name = "c1", type = "Conv1d", out_channels = 8, kernel_size = 5, stride = 2, padding = 2 },
  { type = "ReLU" },
  { name = "c2", type = "Conv1d", in_channels = 8, out_channels = 8, kernel_size = 4, padding = "same", padding_mode = "reflect", groups = 2 },
  { name = "c3", type = "Conv1d", out_channels = 4, kernel_size = 3, dilation = 2, bias = false },
  { name = "mp", type = "MaxPool1d", kernel_size = 3, stride = 2, padding = 1, ceil_mode = true },
  { name = "ap", type = "AvgPool1d", kernel_size = 2, count_include_pad = false },
  { name = "gap", type = "AdaptiveAvgPool1d", output_size = 2 },
  { type = "Flatten" },
  { name = "fc", type = "Linear", out_features = 3 },
]
"#;
    let mut spec = parse_model(text, "cnn1d.toml", "cnn1d").unwrap();
    let report = spec.check(None).unwrap();
    insta::assert_snapshot!("conv1d_trace", report.render_trace());
    // in_channels of c1 and c3 inferred: 2 and 8; c1: ⌊(50 + 4 − 5)/2⌋ + 1 = 25; c2 keeps 25;
    // c3: 25 − 4 = 21; mp: ⌈(21 + 2 − 3)/2⌉ + 1 = 11; ap: 5; gap: 2.
    let again = parse_model(&to_toml(&report.resolved), "cnn1d.toml", "cnn1d").unwrap();
    let strip = |mut s: ModelSpec| {
        s.layers.iter_mut().for_each(|l| l.origin = None);
        s
    };
    assert_eq!(strip(again), strip(report.resolved.clone()));
    spec = report.resolved;
    let model = spec.build().unwrap();
    let keys: Vec<String> = model.state_dict().iter().map(|(k, t)| format!("{k} {:?}", t.dims())).collect();
    assert_eq!(
        keys,
        [
            "c1.weight [8, 2, 5]",
            "c1.bias [8]",
            "c2.weight [8, 4, 4]",
            "c2.bias [8]",
            "c3.weight [4, 8, 3]",
            "fc.weight [3, 8]",
            "fc.bias [3]"
        ]
    );
    let y = model.forward(&Tensor::zeros(&[6, 2, 50], DType::F32)).unwrap();
    assert_eq!(y.dims(), &[6, 3]);
}

#[test]
fn conv1d_model_file_errors_are_located() {
    let errors = [
        // A Conv2d's pair where Conv1d takes one size.
        "input = [2, 9]\nlayers = [{ type = \"Conv1d\", out_channels = 4, kernel_size = [3, 3] }]\n",
        "input = [2, 9]\nlayers = [{ type = \"Conv1d\", out_channels = 4 }]\n",
        "input = [2, 9]\nlayers = [{ type = \"Conv1d\", out_channels = 4, kernel_size = 3, padding = \"full\" }]\n",
        "input = [2, 9]\nlayers = [{ type = \"Conv1d\", out_channels = 4, kernel_size = 3, padding = -1 }]\n",
        "input = [2, 9]\nlayers = [{ type = \"MaxPool1d\", kernel_size = [2, 2] }]\n",
        "input = [2, 9]\nlayers = [{ type = \"AvgPool1d\", kernel_size = 2, divisor_override = 2 }]\n",
        "input = [2, 9]\nlayers = [{ type = \"AdaptiveAvgPool1d\" }]\n",
    ]
    .map(|text| parse_model(text, "bad.toml", "B").unwrap_err().to_string());
    insta::assert_snapshot!("conv1d_model_file_errors", errors.join("\n\n"));
}

/// What the shape check says about a Conv1d, in 1-d terms: a wrong channel count, images or
/// flat features fed to it, a window longer than the sequence, "same" with a stride, reflect
/// padding longer than the sequence.
#[test]
fn conv1d_shape_errors_name_the_fix() {
    let conv = |f: &dyn Fn(&mut ConvSpec)| {
        let mut c = ConvSpec::new_1d(Some(3), 8, 3);
        f(&mut c);
        LayerSpec::Conv1d(c)
    };
    let cases = [
        ModelSpec::new("m").input(&[4, 20]).layer("conv", conv(&|_| {})),
        ModelSpec::new("m").input(&[20]).layer("conv", conv(&|_| {})),
        ModelSpec::new("m").input(&[1, 28, 28]).layer("conv", conv(&|_| {})),
        ModelSpec::new("m").input(&[3, 4]).layer("conv", conv(&|c| (c.kernel_size, c.dilation) = ((1, 5), (1, 2)))),
        ModelSpec::new("m").input(&[3, 20]).layer("conv", conv(&|c| (c.stride, c.padding_same) = ((1, 2), true))),
        ModelSpec::new("m")
            .input(&[3, 4])
            .layer("conv", conv(&|c| (c.padding, c.padding_mode) = ((0, 4), PaddingMode::Reflect))),
        ModelSpec::new("m").input(&[4, 20]).conv1d("c0", None, 6, 3, 1, 1).layer("conv", conv(&|_| {})),
        ModelSpec::new("m").input(&[3, 4]).layer("pool", LayerSpec::MaxPool1d(MaxPool1d::new(6).options)),
        ModelSpec::new("m").input(&[3, 20]).layer("pool", LayerSpec::AvgPool1d(AvgPool1d::new(2).padding(2).options)),
        ModelSpec::new("m").input(&[20]).layer("pool", LayerSpec::AdaptiveAvgPool1d { output_size: 1 }),
    ];
    let text: Vec<String> = cases.iter().map(|spec| spec.check(None).unwrap_err().render_errors()).collect();
    insta::assert_snapshot!("conv1d_shape_errors", text.join("\n\n"));
    // Every fix offered applies, and the model then checks clean (but for the channel dimension
    // given to flat samples: then the channel count is the next fix, as for Conv2d). Removing a
    // pool that does not fit is a fix too.
    for (i, spec) in cases.iter().enumerate().filter(|(i, _)| *i != 1) {
        let report = spec.check(None).unwrap_err();
        for fix in report.errors.iter().flat_map(|e| &e.fixes) {
            let mut fixed = spec.clone();
            assert!(fixed.apply(&fix.edits), "fix `{}` does not apply", fix.text);
            if let Err(r) = fixed.check(None) {
                panic!("case {i}, after `{}`:\n{}", fix.text, r.render_errors());
            }
        }
    }
}
