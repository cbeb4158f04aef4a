//! PyTorch parity for SimpleNN: the fixture `tests/fixtures/simple_nn_parity.safetensors` was
//! made by `tools/make_fixtures.py` with real PyTorch; the torch code behind each group of
//! numbers is quoted above the test that uses it. Tolerance: 1e-5 relative or 1e-6 absolute.

use strata_core::testing::assert_close;
use strata_core::{Reduction, Tensor, cross_entropy};
use strata_nn::{
    Adam, AdamConfig, AdamW, CrossEntropyLoss, Linear, Module, Optimizer, SGD, SgdConfig, SimpleNN, StateDict,
};

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/simple_nn_parity.safetensors"))
        .expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

const PARAMS: [&str; 6] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"];

/// SimpleNN with the fixture's initial weights (`torch.manual_seed(0); model = SimpleNN()`).
fn model_from_fixture(sd: &StateDict) -> SimpleNN {
    let layer = |n: &str| {
        Linear::from_tensors(get(sd, &format!("init.{n}.weight")), Some(get(sd, &format!("init.{n}.bias")))).unwrap()
    };
    SimpleNN { fc1: layer("fc1"), fc2: layer("fc2"), fc3: layer("fc3") }
}

#[track_caller]
fn close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let r = std::panic::catch_unwind(|| assert_close(&actual.to_vec_f64(), &expected.to_vec_f64(), 1e-5, 1e-6));
    if let Err(e) = r {
        panic!("{what}: {}", e.downcast_ref::<String>().cloned().unwrap_or_default());
    }
}

/// ```python
/// torch.manual_seed(0); model = SimpleNN()
/// x = torch.randn(16, 784); target = torch.randint(0, 10, (16,))
/// logits = model(x); loss = nn.CrossEntropyLoss()(logits, target); loss.backward()
/// ```
#[test]
fn forward_loss_and_every_gradient() {
    let sd = fixture();
    let model = model_from_fixture(&sd);
    let (x, target) = (get(&sd, "input"), get(&sd, "target"));
    let logits = model.forward(&x).unwrap();
    close(&logits, &get(&sd, "logits"), "logits");
    let loss = CrossEntropyLoss::new().forward(&logits, &target).unwrap();
    close(&loss, &get(&sd, "loss"), "loss");
    loss.backward().unwrap();
    for (name, p) in model.named_parameters() {
        close(&p.grad().unwrap(), &get(&sd, &format!("grad.{name}")), &format!("grad of {name}"));
    }
}

/// Three steps of `zero_grad(); loss = criterion(model(x), target); loss.backward(); opt.step()`
/// from the initial weights, comparing the losses seen and the parameters after step 3.
fn run_three_steps(prefix: &str, make: impl FnOnce(Vec<Tensor>) -> Box<dyn Optimizer>) {
    let sd = fixture();
    let model = model_from_fixture(&sd);
    let (x, target) = (get(&sd, "input"), get(&sd, "target"));
    let criterion = CrossEntropyLoss::new();
    let mut opt = make(model.parameters());
    let mut losses = vec![];
    for _ in 0..3 {
        opt.zero_grad().unwrap();
        let loss = criterion.forward(&model.forward(&x).unwrap(), &target).unwrap();
        losses.push(loss.item().unwrap() as f32);
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    close(
        &Tensor::from_vec(losses, &[3]).unwrap(),
        &get(&sd, &format!("{prefix}.losses")),
        &format!("{prefix} losses"),
    );
    for (name, p) in model.named_parameters() {
        close(&p, &get(&sd, &format!("{prefix}.step3.{name}")), &format!("{prefix}: {name} after 3 steps"));
    }
    assert_eq!(model.named_parameters().len(), PARAMS.len());
}

/// `optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=False)`
#[test]
fn sgd_momentum_three_steps() {
    run_three_steps("sgd_momentum", |p| {
        Box::new(SGD::with_config(p, SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() }).unwrap())
    });
}

/// `optim.SGD(model.parameters(), lr=0.01, foreach=False)`
#[test]
fn sgd_plain_three_steps() {
    run_three_steps("sgd_plain", |p| Box::new(SGD::new(p, 0.01).unwrap()));
}

/// `optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2, foreach=False)`
#[test]
fn sgd_nesterov_weight_decay_three_steps() {
    run_three_steps("sgd_nesterov_wd", |p| {
        Box::new(
            SGD::with_config(
                p,
                SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-2, ..Default::default() },
            )
            .unwrap(),
        )
    });
}

/// `optim.SGD(params, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=1e-3, foreach=False)`
#[test]
fn sgd_dampening_three_steps() {
    run_three_steps("sgd_dampening", |p| {
        Box::new(
            SGD::with_config(
                p,
                SgdConfig { lr: 0.05, momentum: 0.5, dampening: 0.3, weight_decay: 1e-3, ..Default::default() },
            )
            .unwrap(),
        )
    });
}

/// `optim.Adam(model.parameters(), lr=1e-3, foreach=False)`
#[test]
fn adam_three_steps() {
    run_three_steps("adam", |p| Box::new(Adam::new(p, 1e-3).unwrap()));
}

/// `optim.Adam(params, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, amsgrad=True, foreach=False)`
#[test]
fn adam_weight_decay_amsgrad_three_steps() {
    run_three_steps("adam_wd_amsgrad", |p| {
        Box::new(
            Adam::with_config(
                p,
                AdamConfig { lr: 1e-3, betas: (0.8, 0.99), eps: 1e-6, weight_decay: 1e-2, amsgrad: true },
            )
            .unwrap(),
        )
    });
}

/// `optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2, foreach=False)`
#[test]
fn adamw_three_steps() {
    run_three_steps("adamw", |p| Box::new(AdamW::new(p, 1e-3).unwrap()));
}

/// Rows with logits of ±1e4 (see `ce_big` in tools/make_fixtures.py):
/// `loss = F.cross_entropy(logits, target); loss.backward()` in float32.
#[test]
fn cross_entropy_with_huge_logits() {
    let sd = fixture();
    let logits = get(&sd, "ce_big.logits").requires_grad_().unwrap();
    let loss = cross_entropy(&logits, &get(&sd, "ce_big.target"), Reduction::Mean).unwrap();
    close(&loss, &get(&sd, "ce_big.loss"), "ce_big loss");
    loss.backward().unwrap();
    close(&logits.grad().unwrap(), &get(&sd, "ce_big.grad"), "ce_big grad");
}

/// `torch.manual_seed(1); logits = torch.randn(6, 7, dtype=torch.float64) * 3`, in float64.
#[test]
fn cross_entropy_f64() {
    let sd = fixture();
    let logits = get(&sd, "ce_f64.logits").requires_grad_().unwrap();
    let loss = cross_entropy(&logits, &get(&sd, "ce_f64.target"), Reduction::Mean).unwrap();
    assert_close(&[loss.item().unwrap()], &get(&sd, "ce_f64.loss").to_vec_f64(), 1e-12, 0.0);
    loss.backward().unwrap();
    assert_close(&logits.grad().unwrap().to_vec_f64(), &get(&sd, "ce_f64.grad").to_vec_f64(), 1e-10, 1e-14);
}

/// `out = torch.matmul(a, b)` with a [2,3,4,5], b [3,5,6] (batch broadcast);
/// `(out * w).sum().backward()`, in float64.
#[test]
fn batched_broadcast_matmul() {
    let sd = fixture();
    let a = get(&sd, "bmm.a").requires_grad_().unwrap();
    let b = get(&sd, "bmm.b").requires_grad_().unwrap();
    let out = a.matmul(&b).unwrap();
    assert_close(&out.to_vec_f64(), &get(&sd, "bmm.out").to_vec_f64(), 1e-12, 1e-12);
    out.mul(&get(&sd, "bmm.w")).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&a.grad().unwrap().to_vec_f64(), &get(&sd, "bmm.grad_a").to_vec_f64(), 1e-12, 1e-12);
    assert_close(&b.grad().unwrap().to_vec_f64(), &get(&sd, "bmm.grad_b").to_vec_f64(), 1e-12, 1e-12);
}

/// a [4,1,3], b [5,1]: `a + b`, `a * b`, `a / b`; `((a * b) + a / b).sum().backward()`, float64.
#[test]
fn elementwise_broadcasting() {
    let sd = fixture();
    let a = get(&sd, "bc.a").requires_grad_().unwrap();
    let b = get(&sd, "bc.b").requires_grad_().unwrap();
    assert_close(&a.add(&b).unwrap().to_vec_f64(), &get(&sd, "bc.add").to_vec_f64(), 1e-14, 1e-14);
    assert_close(&a.mul(&b).unwrap().to_vec_f64(), &get(&sd, "bc.mul").to_vec_f64(), 1e-14, 1e-14);
    assert_close(&a.div(&b).unwrap().to_vec_f64(), &get(&sd, "bc.div").to_vec_f64(), 1e-14, 1e-14);
    a.mul(&b).unwrap().add(&a.div(&b).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&a.grad().unwrap().to_vec_f64(), &get(&sd, "bc.grad_a").to_vec_f64(), 1e-12, 1e-12);
    assert_close(&b.grad().unwrap().to_vec_f64(), &get(&sd, "bc.grad_b").to_vec_f64(), 1e-12, 1e-12);
}

/// `x = torch.tensor([-1., 0., 2.], requires_grad=True); torch.relu(x).sum().backward()`
#[test]
fn relu_gradient_at_zero() {
    let sd = fixture();
    let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]).unwrap().requires_grad_().unwrap();
    x.relu().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), get(&sd, "relu0.grad").to_vec::<f32>().unwrap());
}

/// A state_dict written by PyTorch (`tools/check_state_dict.py save ... --seed 1`:
/// `safetensors.torch.save_file(SimpleNN().state_dict(), path)`) loads strictly into strata's
/// SimpleNN and gives PyTorch's logits on PyTorch's input.
#[test]
fn loads_a_pytorch_state_dict() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let model = SimpleNN::new().unwrap();
    strata_nn::module::load_file(&model, format!("{dir}torch_simple_nn_state_dict.safetensors"), true).unwrap();
    let expected =
        StateDict::load(format!("{dir}torch_simple_nn_state_dict.safetensors.expected.safetensors")).unwrap();
    let logits = model.forward(&get(&expected, "input")).unwrap();
    close(&logits, &get(&expected, "logits"), "logits of the PyTorch-written model");
}

/// strata writes PyTorch's keys, shapes and dtypes: the file round-trips and has exactly the
/// keys `SimpleNN().state_dict()` has. (`tools/check_state_dict.py load FILE` loads such a file
/// into PyTorch with strict=True.)
#[test]
fn writes_pytorch_keys_and_layouts() {
    let model = SimpleNN::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simple_nn.safetensors");
    model.state_dict().save(&path).unwrap();
    let sd = StateDict::load(&path).unwrap();
    let mut keys: Vec<&str> = sd.keys().collect();
    keys.sort();
    let mut expected = PARAMS.to_vec();
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(sd.get("fc1.weight").unwrap().dims(), &[128, 784]);
    assert_eq!(sd.get("fc3.bias").unwrap().dims(), &[10]);
}
