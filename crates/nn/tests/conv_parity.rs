//! PyTorch parity for `Conv2d`, the pooling layers and `BatchNorm1d/2d`: the fixture
//! `tests/fixtures/conv_parity.safetensors` was made by `tools/make_conv_fixtures.py` with real
//! PyTorch; the torch code behind each group is quoted above the test that uses it. Every
//! backward uses the fixture's random upstream gradient `gy` (L = Σ y·gy). Tolerances: 1e-5
//! relative or 1e-6 absolute for f32, 1e-12 relative or 1e-13 absolute for f64.

use strata_core::testing::assert_close;
use strata_core::{DType, Tensor};
use strata_nn::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, BatchNormConfig, Conv2dConfig, MaxPool2d, Module, StateDict,
};

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/conv_parity.safetensors")).expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

/// The fixture's entries under `prefix.`, with the prefix removed: a PyTorch state_dict.
fn sub(sd: &StateDict, prefix: &str, keys: &[&str]) -> StateDict {
    let mut out = StateDict::new();
    for k in keys {
        if let Some(t) = sd.get(&format!("{prefix}.{k}")) {
            out.insert(*k, t.clone());
        }
    }
    out
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

/// Runs `layer` on `<name>.x` (as a leaf that requires grad), backpropagates `<name>.gy`, and
/// compares the output and the input gradient; returns nothing, the parameters' gradients stay
/// on the layer for the caller to check.
fn forward_backward(sd: &StateDict, name: &str, layer: &dyn Module) {
    let x = get(sd, &format!("{name}.x")).requires_grad_().unwrap();
    let y = layer.forward(&x).unwrap();
    close(&y, &get(sd, &format!("{name}.y")), &format!("{name}: output"));
    y.mul(&get(sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
    close(&x.grad().unwrap(), &get(sd, &format!("{name}.grad.x")), &format!("{name}: grad of x"));
}

/// ```python
/// torch.manual_seed(seed)
/// conv = ctor().to(dtype)
/// x = torch.randn(*shape, dtype=dtype, requires_grad=True)
/// y = conv(x); gy = torch.randn_like(y); y.backward(gy)
/// ```
/// with
/// ```python
/// "conv_a": (10, lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 9, 8), torch.float32),
/// "conv_b": (11, lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2),
///                                  dilation=(2, 1), groups=2, bias=False), (2, 4, 9, 8), torch.float32),
/// "conv_c": (12, lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6), torch.float64),
/// "conv_d": (13, lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), (3, 4, 5, 7), torch.float32),
/// ```
#[test]
fn conv2d_forward_and_gradients() {
    let sd = fixture();
    let cases = [
        ("conv_a", Conv2dConfig::new(4, 6, 3).stride(2).padding(1).dilation(2).groups(2)),
        (
            "conv_b",
            Conv2dConfig::new(4, 6, (3, 2)).stride((2, 1)).padding((1, 2)).dilation((2, 1)).groups(2).bias(false),
        ),
        ("conv_c", Conv2dConfig::new(3, 4, 3).padding(1).dtype(DType::F64)),
        ("conv_d", Conv2dConfig::new(4, 8, 3).padding(1).groups(4)),
    ];
    for (name, config) in cases {
        let conv = config.init(&mut strata_core::Generator::new(0)).unwrap();
        // PyTorch's state_dict loads strictly: same keys, shapes and layouts.
        conv.load_state_dict(&sub(&sd, name, &["weight", "bias"]), true).unwrap();
        forward_backward(&sd, name, &conv);
        for (p, t) in conv.named_parameters() {
            close(&t.grad().unwrap(), &get(&sd, &format!("{name}.grad.{p}")), &format!("{name}: grad of {p}"));
        }
    }
}

/// ```python
/// torch.manual_seed(seed)
/// x = torch.randn(*shape, requires_grad=True)
/// y = pool(x); gy = torch.randn_like(y); y.backward(gy)
/// ```
/// with
/// ```python
/// "maxpool_a":  (20, nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
/// "maxpool_b":  (21, nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), (2, 3, 9, 8)),
/// "avgpool_a":  (22, nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
/// "avgpool_b":  (23, nn.AvgPool2d((3, 2), stride=(2, 1), padding=1, count_include_pad=False), (2, 3, 9, 8)),
/// "adaptive_a": (24, nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 9)),
/// "adaptive_b": (25, nn.AdaptiveAvgPool2d(1), (2, 3, 7, 9)),
/// ```
#[test]
fn pooling_forward_and_gradients() {
    let sd = fixture();
    let cases: [(&str, Box<dyn Module>); 6] = [
        ("maxpool_a", Box::new(MaxPool2d::new(3).stride(2).padding(1))),
        ("maxpool_b", Box::new(MaxPool2d::new((3, 2)).stride((1, 2)).padding((1, 0)).dilation((2, 1)))),
        ("avgpool_a", Box::new(AvgPool2d::new(3).stride(2).padding(1))),
        ("avgpool_b", Box::new(AvgPool2d::new((3, 2)).stride((2, 1)).padding(1).count_include_pad(false))),
        ("adaptive_a", Box::new(AdaptiveAvgPool2d::new((3, 4)))),
        ("adaptive_b", Box::new(AdaptiveAvgPool2d::new(1))),
    ];
    for (name, pool) in cases {
        forward_backward(&sd, name, pool.as_ref());
    }
}

const BN_KEYS: [&str; 5] = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"];

/// ```python
/// torch.manual_seed(seed)
/// bn = ctor().to(dtype)
/// with torch.no_grad():
///     bn.weight.copy_(torch.randn(C, dtype=dtype)); bn.bias.copy_(torch.randn(C, dtype=dtype))
/// bn.train()
/// x = (torch.randn(*shape, dtype=dtype) * 2 + 1).requires_grad_()
/// y = bn(x); gy = torch.randn_like(y); y.backward(gy)          # <name>.y, <name>.grad.*
/// x2 = torch.randn(*shape, dtype=dtype) * 3 - 1
/// with torch.no_grad(): bn(x2)                                 # <name>.after.* = bn.state_dict()
/// bn.eval(); bn.zero_grad(set_to_none=True)
/// x3 = torch.randn(*shape, dtype=dtype, requires_grad=True)
/// y3 = bn(x3); gy3 = torch.randn_like(y3); y3.backward(gy3)    # <name>.eval.*
/// ```
/// with
/// ```python
/// "bn1d_a":   (30, lambda: nn.BatchNorm1d(5), (8, 5), torch.float32),
/// "bn1d_b":   (31, lambda: nn.BatchNorm1d(5), (4, 5, 6), torch.float32),
/// "bn2d":     (32, lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), torch.float32),
/// "bn2d_f64": (33, lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), torch.float64),
/// "bn2d_cma": (34, lambda: nn.BatchNorm2d(3, momentum=None), (4, 3, 5, 6), torch.float32),
/// ```
#[test]
fn batch_norm_train_and_eval() {
    let sd = fixture();
    let cases: [(&str, Box<dyn Module>); 5] = [
        ("bn1d_a", Box::new(BatchNorm1d::new(5).unwrap())),
        ("bn1d_b", Box::new(BatchNorm1d::new(5).unwrap())),
        ("bn2d", Box::new(BatchNorm2d::new(3).unwrap())),
        ("bn2d_f64", Box::new(BatchNormConfig::new(3).dtype(DType::F64).init_2d().unwrap())),
        ("bn2d_cma", Box::new(BatchNormConfig::new(3).momentum(None).init_2d().unwrap())),
    ];
    for (name, bn) in cases {
        let bn = bn.as_ref();
        // PyTorch's state_dict (parameters and the three buffers) loads strictly.
        bn.load_state_dict(&sub(&sd, &format!("{name}.init"), &BN_KEYS), true).unwrap();

        // Training step 1: output and every gradient.
        bn.train(true);
        forward_backward(&sd, name, bn);
        for (p, t) in bn.named_parameters() {
            close(&t.grad().unwrap(), &get(&sd, &format!("{name}.grad.{p}")), &format!("{name}: grad of {p}"));
        }
        // Training step 2 without grad: the running statistics after both steps.
        strata_core::no_grad(|| bn.forward(&get(&sd, &format!("{name}.x2")))).unwrap();
        let state = bn.state_dict();
        assert_eq!(state.keys().collect::<Vec<_>>(), BN_KEYS, "{name}: state_dict keys");
        for k in BN_KEYS {
            close(
                state.get(k).unwrap(),
                &get(&sd, &format!("{name}.after.{k}")),
                &format!("{name}: {k} after 2 steps"),
            );
        }

        // Evaluation: running statistics; output and gradients.
        bn.eval();
        for p in bn.parameters() {
            p.set_grad(None).unwrap();
        }
        forward_backward(&sd, &format!("{name}.eval"), bn);
        for (p, t) in bn.named_parameters() {
            close(
                &t.grad().unwrap(),
                &get(&sd, &format!("{name}.eval.grad.{p}")),
                &format!("{name}: eval grad of {p}"),
            );
        }
        // Evaluation leaves the statistics alone.
        assert_eq!(bn.state_dict().get("num_batches_tracked").unwrap().item().unwrap(), 2.0);
    }
}
