//! PyTorch parity for `LayerNorm` and the losses (`MSELoss`, `BCEWithLogitsLoss`, `NLLLoss`,
//! `CrossEntropyLoss` with class weights, `ignore_index` and label smoothing), plus the
//! behaviour of `Dropout`. The fixture `tests/fixtures/loss_parity.safetensors` was made by
//! `tools/make_loss_fixtures.py` with real PyTorch; the torch code behind each group is quoted
//! above the test that uses it. Every backward uses the fixture's random upstream gradient
//! (`loss.backward(gl)`, i.e. L = Σ loss·gl). Tolerances: 1e-5 relative or 1e-6 absolute for
//! f32, 1e-12 relative or 1e-13 absolute for f64.

use strata_core::testing::assert_close;
use strata_core::{DType, Generator, Reduction, Tensor, dropout};
use strata_nn::{
    BCEWithLogitsLoss, CrossEntropyLoss, Dropout, LayerNormConfig, MSELoss, Module, NLLLoss, Result, StateDict,
};

fn fixture() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/loss_parity.safetensors")).expect("fixture")
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
/// ln = ctor().to(dtype)
/// if ln.elementwise_affine:
///     with torch.no_grad():
///         ln.weight.copy_(torch.randn(ln.weight.shape, dtype=dtype))
///         ln.bias.copy_(torch.randn(ln.bias.shape, dtype=dtype))
/// x = (torch.randn(*shape, dtype=dtype) * 2 + 1).requires_grad_()
/// y = ln(x); gy = torch.randn_like(y); y.backward(gy)
/// ```
/// with
/// ```python
/// "ln_a":   (40, lambda: nn.LayerNorm(6), (4, 6), torch.float32),
/// "ln_b":   (41, lambda: nn.LayerNorm((3, 5), eps=1e-3), (2, 4, 3, 5), torch.float32),
/// "ln_c":   (42, lambda: nn.LayerNorm(5, elementwise_affine=False), (3, 2, 5), torch.float32),
/// "ln_f64": (43, lambda: nn.LayerNorm(7), (5, 7), torch.float64),
/// ```
#[test]
fn layer_norm_forward_and_gradients() {
    let sd = fixture();
    let cases = [
        ("ln_a", LayerNormConfig::new(&[6])),
        ("ln_b", LayerNormConfig::new(&[3, 5]).eps(1e-3)),
        ("ln_c", LayerNormConfig::new(&[5]).elementwise_affine(false)),
        ("ln_f64", LayerNormConfig::new(&[7]).dtype(DType::F64)),
    ];
    for (name, config) in cases {
        let ln = config.init().unwrap();
        if config.elementwise_affine {
            let mut params = StateDict::new();
            params.insert("weight", get(&sd, &format!("{name}.weight")));
            params.insert("bias", get(&sd, &format!("{name}.bias")));
            ln.load_state_dict(&params, true).unwrap();
        }
        let x = get(&sd, &format!("{name}.x")).requires_grad_().unwrap();
        let y = ln.forward(&x).unwrap();
        close(&y, &get(&sd, &format!("{name}.y")), &format!("{name}: output"));
        y.mul(&get(&sd, &format!("{name}.gy"))).unwrap().sum_all().unwrap().backward().unwrap();
        close(&x.grad().unwrap(), &get(&sd, &format!("{name}.grad.x")), &format!("{name}: grad of x"));
        for (p, t) in ln.named_parameters() {
            close(&t.grad().unwrap(), &get(&sd, &format!("{name}.grad.{p}")), &format!("{name}: grad of {p}"));
        }
    }
}

/// For each reduction `r` in none / mean / sum (k = 0, 1, 2):
/// ```python
/// x = x.detach().clone().requires_grad_()
/// loss = loss_fn(x, target, r)
/// gl = torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed + 1000 * k))
/// loss.backward(gl)        # <name>.<r>.loss, <name>.<r>.gl, <name>.<r>.grad.x
/// ```
/// and compares the loss and the gradient of `x`.
fn check_loss(sd: &StateDict, name: &str, loss_fn: impl Fn(&Tensor, &Tensor, Reduction) -> Result<Tensor>) {
    let target = get(sd, &format!("{name}.target"));
    for (r, reduction) in [("none", Reduction::None), ("mean", Reduction::Mean), ("sum", Reduction::Sum)] {
        let x = get(sd, &format!("{name}.x")).requires_grad_().unwrap();
        let loss = loss_fn(&x, &target, reduction).unwrap();
        close(&loss, &get(sd, &format!("{name}.{r}.loss")), &format!("{name} ({r}): loss"));
        loss.mul(&get(sd, &format!("{name}.{r}.gl"))).unwrap().sum_all().unwrap().backward().unwrap();
        close(&x.grad().unwrap(), &get(sd, &format!("{name}.{r}.grad.x")), &format!("{name} ({r}): grad of x"));
    }
}

/// ```python
/// torch.manual_seed(50); x = torch.randn(4, 5) * 3; y = torch.rand(4, 5)
/// loss = F.mse_loss(x, y, reduction=r)
/// ```
#[test]
fn mse_loss() {
    check_loss(&fixture(), "mse", |x, t, r| MSELoss::with_reduction(r).forward(x, t));
}

/// ```python
/// torch.manual_seed(51); x = torch.randn(4, 5) * 3; y = torch.rand(4, 5)
/// loss = F.binary_cross_entropy_with_logits(x, y, reduction=r)
/// torch.manual_seed(52); x = torch.randn(4, 5) * 3; y = torch.rand(4, 5)
/// pos_weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])
/// loss = F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction=r)
/// x = torch.tensor([[1e4, -1e4, 0.0, 20.0, -30.0], [-1e4, 1e4, 1e4, -1e4, 3.0]])
/// y = torch.tensor([[1.0, 1.0, 0.5, 0.0, 1.0], [0.0, 0.25, 1.0, 1.0, 0.0]])
/// loss = F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction=r)   # bce_big
/// ```
#[test]
fn bce_with_logits_loss() {
    let sd = fixture();
    check_loss(&sd, "bce", |x, t, r| BCEWithLogitsLoss::with_reduction(r).forward(x, t));
    let pw = get(&sd, "pos_weight");
    for name in ["bce_pw", "bce_big"] {
        check_loss(&sd, name, |x, t, r| BCEWithLogitsLoss::with_reduction(r).pos_weight(pw.clone()).forward(x, t));
    }
}

/// ```python
/// torch.manual_seed(seed); x = F.log_softmax(torch.randn(6, 5) * 2, dim=1)
/// target = torch.randint(0, 5, (6,))
/// weight = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25])
/// loss = F.nll_loss(x, target, reduction=r)                                   # nll, seed 54
/// loss = F.nll_loss(x, target, weight=weight, reduction=r)                    # nll_w, seed 55
/// target[2] = -100
/// loss = F.nll_loss(x, target, weight=weight, ignore_index=-100, reduction=r) # nll_w_ign, seed 56
/// ```
#[test]
fn nll_loss() {
    let sd = fixture();
    let w = get(&sd, "weight");
    check_loss(&sd, "nll", |x, t, r| NLLLoss::with_reduction(r).forward(x, t));
    check_loss(&sd, "nll_w", |x, t, r| NLLLoss::with_reduction(r).weight(w.clone()).forward(x, t));
    check_loss(&sd, "nll_w_ign", |x, t, r| {
        NLLLoss::with_reduction(r).weight(w.clone()).ignore_index(-100).forward(x, t)
    });
}

/// ```python
/// torch.manual_seed(seed); x = torch.randn(6, 5) * 2; target = torch.randint(0, 5, (6,))
/// weight = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25])
/// loss = F.cross_entropy(x, target, label_smoothing=0.1, reduction=r)                 # ce_ls, seed 57
/// loss = F.cross_entropy(x, target, weight=weight, reduction=r)                       # ce_w, seed 58
/// loss = F.cross_entropy(x, target, weight=weight, label_smoothing=0.2, reduction=r)  # ce_w_ls, seed 59
/// target[2] = -100                                                                    # ce_w_ls_ign, seed 60
/// loss = F.cross_entropy(x, target, weight=weight, ignore_index=-100, label_smoothing=0.3, reduction=r)
/// ```
#[test]
fn cross_entropy_weights_and_label_smoothing() {
    let sd = fixture();
    let w = get(&sd, "weight");
    let ce = |r| CrossEntropyLoss::with_reduction(r);
    check_loss(&sd, "ce_ls", |x, t, r| ce(r).label_smoothing(0.1).forward(x, t));
    check_loss(&sd, "ce_w", |x, t, r| ce(r).weight(w.clone()).forward(x, t));
    check_loss(&sd, "ce_w_ls", |x, t, r| ce(r).weight(w.clone()).label_smoothing(0.2).forward(x, t));
    check_loss(&sd, "ce_w_ls_ign", |x, t, r| {
        ce(r).weight(w.clone()).ignore_index(-100).label_smoothing(0.3).forward(x, t)
    });
}

/// ```python
/// x = torch.tensor([[1e4, 0.0, -1e4, 1e4 - 1, 5.0],
///                   [-1e4, 1e4, 1e4, 1e4, 1e4],
///                   [0.0, 0.0, 0.0, 0.0, -1e4],
///                   [-1e4, -1e4, -1e4, 1e4, 0.5]])
/// target = torch.tensor([0, 0, 4, 3])
/// loss = F.cross_entropy(x, target, weight=weight, label_smoothing=0.1, reduction=r)
/// ```
#[test]
fn cross_entropy_huge_logits_with_weights_and_smoothing() {
    let sd = fixture();
    let w = get(&sd, "weight");
    check_loss(&sd, "ce_big_w_ls", |x, t, r| {
        CrossEntropyLoss::with_reduction(r).weight(w.clone()).label_smoothing(0.1).forward(x, t)
    });
}

/// Shape and range errors are values naming the op and the shapes, never panics.
#[test]
fn loss_errors_name_op_and_shapes() {
    let x = Tensor::zeros(&[2, 3], DType::F32);
    let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert_eq!(
        msg(MSELoss::new().forward(&x, &Tensor::zeros(&[3, 2], DType::F32))),
        "mse_loss: target has shape [3, 2], expected [2, 3] (the input's shape)"
    );
    assert_eq!(
        msg(NLLLoss::new().forward(&x, &Tensor::from_vec(vec![0i64, 5], &[2]).unwrap())),
        "nll_loss: target 1 is class 5, but the input has 3 classes (valid: 0..=2)"
    );
    assert_eq!(
        msg(BCEWithLogitsLoss::new().pos_weight(Tensor::ones(&[2], DType::F32)).forward(&x, &x)),
        "binary_cross_entropy_with_logits: shapes [2] and [2, 3] cannot be broadcast together: aligned from the \
         right, dimension 0 is 2 in the first and 3 in the second (broadcasting needs them equal or one of them 1)"
    );
    assert!(Dropout::new(-0.5).is_err());
}

// ------------------------------------------------------------------ dropout

/// Eval mode is the identity; training zeroes ≈ p of the entries and scales the others by
/// 1/(1 − p); the gradient is the same mask times the scale.
#[test]
fn dropout_modes_rate_scale_and_gradient() {
    let p = 0.25;
    let layer = Dropout::with_seed(p, 1234).unwrap();
    let x = Tensor::randn(&[200, 500], 0.0, 1.0, DType::F32, &mut Generator::new(1)).unwrap().requires_grad_().unwrap();
    layer.eval();
    assert_eq!(layer.forward(&x).unwrap().to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    layer.train(true);
    let y = layer.forward(&x).unwrap();
    let (xv, yv) = (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    let scale = (1.0 / (1.0 - p)) as f32;
    let kept: Vec<bool> = yv.iter().map(|&v| v != 0.0).collect();
    let zeroed = kept.iter().filter(|&&k| !k).count() as f64 / kept.len() as f64;
    // 100 000 Bernoulli(0.25) draws: the standard deviation of the rate is 0.0014.
    assert!((zeroed - p).abs() < 0.01, "zeroed fraction {zeroed}");
    for ((&xv, &yv), &k) in xv.iter().zip(&yv).zip(&kept) {
        if k {
            assert_eq!(yv, xv * scale);
        }
    }
    // L = Σ y·g: dL/dx = g·mask/(1 − p).
    let g = Tensor::randn(&[200, 500], 0.0, 1.0, DType::F32, &mut Generator::new(2)).unwrap();
    y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
    let expected: Vec<f32> =
        g.to_vec::<f32>().unwrap().iter().zip(&kept).map(|(&g, &k)| if k { g * scale } else { 0.0 }).collect();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), expected);
}

/// The same seed gives the same masks, call after call, with 1 and with 4 rayon threads.
#[test]
fn dropout_same_seed_same_mask_on_1_and_4_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let layer = Dropout::with_seed(0.5, 99).unwrap();
            // 100 000 elements: above the generator's parallel chunk size.
            let x = Tensor::ones(&[100, 1000], DType::F32);
            let a = layer.forward(&x).unwrap().to_vec::<f32>().unwrap();
            let b = layer.forward(&x).unwrap().to_vec::<f32>().unwrap();
            let c = dropout(&x, 0.5, &mut Generator::new(99).fork(1)).unwrap().to_vec::<f32>().unwrap();
            (a, b, c)
        })
    };
    let (one, four) = (run(1), run(4));
    assert_eq!(one, four);
    assert_ne!(one.0, one.1, "each call draws a new mask");
    assert_eq!(one.1, one.2, "call k uses Generator::new(seed).fork(k)");
}
