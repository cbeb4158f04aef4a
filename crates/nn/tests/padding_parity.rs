//! PyTorch parity for `Conv2d`'s `padding = "same" | "valid" | int/pair` and `padding_mode`:
//! every mode × padding kind × layer variant (odd kernel; even kernel with dilation and
//! groups, which "same" pads asymmetrically; depthwise even kernel without bias) in f32 and f64.
//! The fixture `tests/fixtures/padding_parity.safetensors` was made by
//! `tools/make_padding_fixtures.py` with real PyTorch; its docstring holds the exact torch code.
//! Output, input gradient, weight and bias gradients (upstream gradient `gy`, L = Σ y·gy) must
//! match within 1e-5 relative in f32 and 1e-12 relative in f64, with an absolute floor of 1e-6
//! (f32) or 1e-13 (f64) times the tensor's largest magnitude (at least 1) for elements near
//! zero.

use strata_core::testing::assert_close;
use strata_core::{DType, PaddingMode, Tensor};
use strata_nn::{Conv2dConfig, Module, Padding, StateDict};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/padding_parity.safetensors");

/// The grid, as in the generator:
///
/// ```python
/// MODES = ["zeros", "reflect", "replicate", "circular"]
/// PADDINGS = ["same", "valid", "explicit"]
/// VARIANTS = {
///     # name: (in, out, kernel, dilation, groups, bias, explicit padding,
///     #        stride when not "same", input shape)
///     "odd":       (4, 6, (3, 3), (1, 1), 1, True,  (1, 2), (2, 1), (2, 4, 6, 5)),
///     "even":      (4, 6, (4, 2), (2, 3), 2, True,  (2, 1), (1, 1), (2, 4, 9, 8)),
///     "depthwise": (4, 8, (2, 2), (1, 1), 4, False, (1, 1), (2, 2), (1, 4, 5, 6)),
/// }
/// DTYPES = {"f32": torch.float32, "f64": torch.float64}
/// # per case:
/// conv = nn.Conv2d(cin, cout, kernel, stride=1 if pad == "same" else stride, padding=padding,
///                  dilation=dilation, groups=groups, bias=bias, padding_mode=mode).to(dtype)
/// x = torch.randn(*shape, dtype=dtype, requires_grad=True); y = conv(x)
/// gy = torch.randn_like(y); y.backward(gy)
/// ```
struct Variant {
    name: &'static str,
    channels: (usize, usize),
    kernel: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
    bias: bool,
    explicit: (usize, usize),
    stride: (usize, usize),
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "odd",
        channels: (4, 6),
        kernel: (3, 3),
        dilation: (1, 1),
        groups: 1,
        bias: true,
        explicit: (1, 2),
        stride: (2, 1),
    },
    Variant {
        name: "even",
        channels: (4, 6),
        kernel: (4, 2),
        dilation: (2, 3),
        groups: 2,
        bias: true,
        explicit: (2, 1),
        stride: (1, 1),
    },
    Variant {
        name: "depthwise",
        channels: (4, 8),
        kernel: (2, 2),
        dilation: (1, 1),
        groups: 4,
        bias: false,
        explicit: (1, 1),
        stride: (2, 2),
    },
];

const PADDINGS: [&str; 3] = ["same", "valid", "explicit"];

/// Every case of the grid: its fixture name and strata's config for it.
fn cases() -> Vec<(String, Conv2dConfig)> {
    let mut out = vec![];
    for mode in PaddingMode::ALL {
        for pad in PADDINGS {
            for v in &VARIANTS {
                for (dname, dtype) in [("f32", DType::F32), ("f64", DType::F64)] {
                    let padding = match pad {
                        "same" => Padding::Same,
                        "valid" => Padding::Valid,
                        _ => Padding::Explicit(v.explicit.0, v.explicit.1),
                    };
                    let stride = if pad == "same" { (1, 1) } else { v.stride };
                    let config = Conv2dConfig::new(v.channels.0, v.channels.1, v.kernel)
                        .stride(stride)
                        .padding(padding)
                        .padding_mode(mode)
                        .dilation(v.dilation)
                        .groups(v.groups)
                        .bias(v.bias)
                        .dtype(dtype);
                    out.push((format!("{mode}_{pad}_{}_{dname}", v.name), config));
                }
            }
        }
    }
    out
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

/// The difference from PyTorch, if any, as a message naming the case and the tensor.
fn compare(actual: &Tensor, expected: &Tensor, what: &str) -> Option<String> {
    if actual.dims() != expected.dims() || actual.dtype() != expected.dtype() {
        return Some(format!(
            "{what}: got {:?} {:?}, expected {:?} {:?}",
            actual.dims(),
            actual.dtype(),
            expected.dims(),
            expected.dtype()
        ));
    }
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    // The absolute floor scales with the tensor's largest magnitude: a weight gradient sums
    // N·OH·OW products, so an element near zero among entries of ~20 carries PyTorch's own f32
    // rounding of ~1e-6 (measured: PyTorch's f32 weight gradient of `circular_explicit_odd` is
    // 3.1e-6 from the f64 result at worst, strata's 9.7e-7 on the element that needs the floor).
    let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let (rtol, atol) = if expected.dtype() == DType::F64 { (1e-12, 1e-13 * scale) } else { (1e-5, 1e-6 * scale) };
    let r = std::panic::catch_unwind(|| assert_close(&a, &e, rtol, atol));
    r.err().map(|p| format!("{what}: {}", p.downcast_ref::<String>().cloned().unwrap_or_default()))
}

/// Runs one case: loads PyTorch's parameters, forward, backward of Σ y·gy; returns the
/// mismatches.
fn run(sd: &StateDict, name: &str, config: &Conv2dConfig) -> Vec<String> {
    let conv = config.init(&mut strata_core::Generator::new(0)).unwrap();
    let mut params = StateDict::new();
    for p in ["weight", "bias"] {
        if let Some(t) = sd.get(&format!("{name}.{p}")) {
            params.insert(p, t.clone());
        }
    }
    // Strict: the same keys (no bias where PyTorch has none), shapes and layouts.
    conv.load_state_dict(&params, true).unwrap();
    let x = get(sd, &format!("{name}.x")).requires_grad_().unwrap();
    let y = conv.forward(&x).unwrap();
    let mut bad: Vec<String> =
        compare(&y, &get(sd, &format!("{name}.y")), &format!("{name}: output")).into_iter().collect();
    if !bad.is_empty() {
        return bad;
    }
    y.mul(&get(sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
    bad.extend(compare(&x.grad().unwrap(), &get(sd, &format!("{name}.grad.x")), &format!("{name}: grad of x")));
    for (p, t) in conv.named_parameters() {
        let want = get(sd, &format!("{name}.grad.{p}"));
        bad.extend(compare(&t.grad().unwrap(), &want, &format!("{name}: grad of {p}")));
    }
    bad
}

#[test]
fn fixture_covers_the_grid() {
    let (_, meta) = StateDict::load_with_metadata(FIXTURE).expect("fixture");
    let names: Vec<String> = cases().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 72);
    assert_eq!(meta["cases"].split(',').collect::<Vec<_>>(), names, "the generator's grid changed");
}

/// One test per mode, so a failure names the mode; within it every padding kind, variant and
/// dtype, reporting all mismatches at once.
fn mode_matches_pytorch(mode: PaddingMode) {
    let sd = StateDict::load(FIXTURE).expect("fixture");
    let prefix = format!("{mode}_");
    let mut bad = vec![];
    let mut ran = 0;
    for (name, config) in cases().into_iter().filter(|(n, _)| n.starts_with(&prefix)) {
        bad.extend(run(&sd, &name, &config));
        ran += 1;
    }
    assert_eq!(ran, 18);
    assert!(bad.is_empty(), "{} mismatches with PyTorch:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn zeros_matches_pytorch() {
    mode_matches_pytorch(PaddingMode::Zeros);
}

#[test]
fn reflect_matches_pytorch() {
    mode_matches_pytorch(PaddingMode::Reflect);
}

#[test]
fn replicate_matches_pytorch() {
    mode_matches_pytorch(PaddingMode::Replicate);
}

#[test]
fn circular_matches_pytorch() {
    mode_matches_pytorch(PaddingMode::Circular);
}

/// The same layers described in a model file build the same modules (the spec path, not only
/// the config builder).
#[test]
fn model_file_layers_match_pytorch() {
    let sd = StateDict::load(FIXTURE).expect("fixture");
    let text = "input = [4, 9, 8]\nlayers = [{ name = \"conv\", type = \"Conv2d\", in_channels = 4, out_channels = 6, \
                kernel_size = [4, 2], dilation = [2, 3], groups = 2, padding = \"same\", padding_mode = \"reflect\" }]\n";
    let spec = strata_nn::model_file::parse_model(text, "t.toml", "m").unwrap();
    assert!(spec.check(None).is_ok());
    let model = spec.build().unwrap();
    let name = "reflect_same_even_f32";
    let mut params = StateDict::new();
    for p in ["weight", "bias"] {
        params.insert(format!("conv.{p}"), get(&sd, &format!("{name}.{p}")));
    }
    model.load_state_dict(&params, true).unwrap();
    let y = model.forward(&get(&sd, &format!("{name}.x"))).unwrap();
    assert_eq!(compare(&y, &get(&sd, &format!("{name}.y")), name), None);
}
