//! PyTorch parity for the recurrent layers (RNN tanh/relu, LSTM, GRU), the activations and
//! Embedding. The fixtures `tests/fixtures/recurrent_{layers,activations}.safetensors` were made
//! by `tools/make_recurrent_fixtures.py` with real PyTorch; the torch code behind each group is
//! quoted above the test that uses it (the script's docstring has all of it).
//!
//! Tolerance: 1e-5 relative or 1e-6 absolute, in f32 — except `lstm_mnist`, whose fixture is
//! f64 (28 steps of f32 accumulation leave differences too close to the f32 tolerance to be a
//! useful check), compared at 1e-10 relative / 1e-12 absolute.

use strata_core::testing::assert_close;
use strata_core::{DType, Generator, Tensor, embedding};
use strata_nn::{
    ELU, GELU, GRU, Hardsigmoid, Hardswish, LSTM, LastStep, LeakyReLU, Linear, LogSoftmax, Mish, Module, Nonlinearity,
    RNN, ReLU6, RecurrentOptions, Sequential, SiLU, Sigmoid, Softmax, StateDict, Tanh,
};

fn load(name: &str) -> StateDict {
    StateDict::load(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

const F32_TOL: (f64, f64) = (1e-5, 1e-6);
const F64_TOL: (f64, f64) = (1e-10, 1e-12);

#[track_caller]
fn close(actual: &Tensor, expected: &Tensor, what: &str, (rtol, atol): (f64, f64)) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let r = std::panic::catch_unwind(|| assert_close(&actual.to_vec_f64(), &expected.to_vec_f64(), rtol, atol));
    if let Err(e) = r {
        panic!("{what}: {}", e.downcast_ref::<String>().cloned().unwrap_or_default());
    }
}

/// The three layer types behind one interface for the checks.
enum Layer {
    Rnn(RNN),
    Lstm(LSTM),
    Gru(GRU),
}

impl Layer {
    fn module(&self) -> &dyn Module {
        match self {
            Layer::Rnn(m) => m,
            Layer::Lstm(m) => m,
            Layer::Gru(m) => m,
        }
    }
    fn run(&self, x: &Tensor, h0: Option<&Tensor>, c0: Option<&Tensor>) -> (Tensor, Tensor, Option<Tensor>) {
        match self {
            Layer::Rnn(m) => {
                let (o, h) = m.forward_with_state(x, h0).unwrap();
                (o, h, None)
            }
            Layer::Gru(m) => {
                let (o, h) = m.forward_with_state(x, h0).unwrap();
                (o, h, None)
            }
            Layer::Lstm(m) => {
                let state = h0.map(|h| (h, c0.expect("c0 with h0")));
                let (o, (h, c)) = m.forward_with_state(x, state).unwrap();
                (o, h, Some(c))
            }
        }
    }
}

/// Loads group `g`'s PyTorch parameters into `layer`, runs the forward with the fixture's input
/// (and initial states when it has them), compares output and final states, then backpropagates
/// `Σ out·w_out + Σ h_n·w_h (+ Σ c_n·w_c)` and compares the gradients of the input, the initial
/// states and every parameter.
fn check_group(g: &str, layer: Layer, tol: (f64, f64)) {
    let sd = load("recurrent_layers.safetensors");
    let prefix = format!("{g}.param.");
    let mut params = StateDict::new();
    for (k, t) in sd.iter() {
        if let Some(name) = k.strip_prefix(&prefix) {
            params.insert(name, t.clone());
        }
    }
    let m = layer.module();
    m.load_state_dict(&params, true).unwrap();
    let leaf = |k: &str| sd.get(&format!("{g}.{k}")).map(|t| t.detach().requires_grad_().unwrap());
    let (x, h0, c0) = (leaf("x").unwrap(), leaf("h0"), leaf("c0"));
    let (out, h_n, c_n) = layer.run(&x, h0.as_ref(), c0.as_ref());
    close(&out, &get(&sd, &format!("{g}.out")), &format!("{g} output"), tol);
    close(&h_n, &get(&sd, &format!("{g}.h_n")), &format!("{g} h_n"), tol);
    let mut loss = out.mul(&get(&sd, &format!("{g}.w_out"))).unwrap().sum_all().unwrap();
    loss = loss.add(&h_n.mul(&get(&sd, &format!("{g}.w_h"))).unwrap().sum_all().unwrap()).unwrap();
    if let Some(c_n) = &c_n {
        close(c_n, &get(&sd, &format!("{g}.c_n")), &format!("{g} c_n"), tol);
        loss = loss.add(&c_n.mul(&get(&sd, &format!("{g}.w_c"))).unwrap().sum_all().unwrap()).unwrap();
    }
    loss.backward().unwrap();
    close(&x.grad().unwrap(), &get(&sd, &format!("{g}.grad.x")), &format!("{g} grad of x"), tol);
    for (name, t) in [("h0", &h0), ("c0", &c0)] {
        if let Some(t) = t {
            close(&t.grad().unwrap(), &get(&sd, &format!("{g}.grad.{name}")), &format!("{g} grad of {name}"), tol);
        }
    }
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), params.len(), "{g}: parameter count");
    for (name, p) in m.named_parameters() {
        close(&p.grad().unwrap(), &get(&sd, &format!("{g}.grad.{name}")), &format!("{g} grad of {name}"), tol);
    }
}

fn rng() -> Generator {
    Generator::new(0)
}

/// ```python
/// torch.manual_seed(1)
/// layer = nn.RNN(5, 7)
/// x = torch.randn(6, 3, 5); h0 = 0.5 * torch.randn(1, 3, 7)
/// out, h_n = layer(x, h0)
/// ((out * w_out).sum() + (h_n * w_h).sum()).backward()
/// ```
#[test]
fn rnn_tanh() {
    let m = RNN::with_options(5, 7, Nonlinearity::Tanh, RecurrentOptions::new(), &mut rng()).unwrap();
    check_group("rnn_tanh", Layer::Rnn(m), F32_TOL);
}

/// ```python
/// torch.manual_seed(2)
/// layer = nn.RNN(5, 7, num_layers=2, nonlinearity='relu', batch_first=True, bidirectional=True)
/// x = torch.randn(3, 6, 5); h0 = 0.5 * torch.randn(4, 3, 7)
/// out, h_n = layer(x, h0)
/// ((out * w_out).sum() + (h_n * w_h).sum()).backward()
/// ```
#[test]
fn rnn_relu_bidirectional_two_layers_batch_first() {
    let o = RecurrentOptions::new().num_layers(2).batch_first(true).bidirectional(true);
    let m = RNN::with_options(5, 7, Nonlinearity::Relu, o, &mut rng()).unwrap();
    check_group("rnn_relu_bi", Layer::Rnn(m), F32_TOL);
}

/// ```python
/// torch.manual_seed(3)
/// layer = nn.LSTM(5, 7)
/// x = torch.randn(6, 3, 5); h0 = 0.5 * torch.randn(1, 3, 7); c0 = 0.5 * torch.randn(1, 3, 7)
/// out, (h_n, c_n) = layer(x, (h0, c0))
/// ((out * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum()).backward()
/// ```
#[test]
fn lstm() {
    let m = LSTM::with_options(5, 7, RecurrentOptions::new(), &mut rng()).unwrap();
    check_group("lstm", Layer::Lstm(m), F32_TOL);
}

/// ```python
/// torch.manual_seed(4)
/// layer = nn.LSTM(5, 7, num_layers=2, batch_first=True, bidirectional=True)
/// x = torch.randn(3, 6, 5); h0 = 0.5 * torch.randn(4, 3, 7); c0 = 0.5 * torch.randn(4, 3, 7)
/// out, (h_n, c_n) = layer(x, (h0, c0))
/// ((out * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum()).backward()
/// ```
#[test]
fn lstm_bidirectional_two_layers_batch_first() {
    let o = RecurrentOptions::new().num_layers(2).batch_first(true).bidirectional(true);
    let m = LSTM::with_options(5, 7, o, &mut rng()).unwrap();
    check_group("lstm_bi", Layer::Lstm(m), F32_TOL);
}

/// ```python
/// torch.manual_seed(5)
/// layer = nn.LSTM(5, 7, bias=False)
/// x = torch.randn(6, 5)                      # unbatched: [T, F]
/// out, (h_n, c_n) = layer(x)                 # out [6, 7], h_n and c_n [1, 7]
/// ((out * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum()).backward()
/// ```
#[test]
fn lstm_unbatched_without_bias() {
    let m = LSTM::with_options(5, 7, RecurrentOptions::new().bias(false), &mut rng()).unwrap();
    check_group("lstm_unbatched", Layer::Lstm(m), F32_TOL);
}

/// f64 (see the file header):
/// ```python
/// torch.manual_seed(6)
/// layer = nn.LSTM(28, 32, batch_first=True).to(torch.float64)
/// x = torch.randn(4, 28, 28, dtype=torch.float64)   # MNIST-shaped: 28 rows of 28 pixels
/// out, (h_n, c_n) = layer(x)
/// ((out * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum()).backward()
/// ```
#[test]
fn lstm_mnist_shaped_sequence_f64() {
    let o = RecurrentOptions::new().batch_first(true).dtype(DType::F64);
    let m = LSTM::with_options(28, 32, o, &mut rng()).unwrap();
    check_group("lstm_mnist", Layer::Lstm(m), F64_TOL);
}

/// ```python
/// torch.manual_seed(7)
/// layer = nn.GRU(5, 7)
/// x = torch.randn(6, 3, 5); h0 = 0.5 * torch.randn(1, 3, 7)
/// out, h_n = layer(x, h0)
/// ((out * w_out).sum() + (h_n * w_h).sum()).backward()
/// ```
#[test]
fn gru() {
    let m = GRU::with_options(5, 7, RecurrentOptions::new(), &mut rng()).unwrap();
    check_group("gru", Layer::Gru(m), F32_TOL);
}

/// ```python
/// torch.manual_seed(8)
/// layer = nn.GRU(5, 7, num_layers=2, batch_first=True, bidirectional=True)
/// x = torch.randn(3, 6, 5); h0 = 0.5 * torch.randn(4, 3, 7)
/// out, h_n = layer(x, h0)
/// ((out * w_out).sum() + (h_n * w_h).sum()).backward()
/// ```
#[test]
fn gru_bidirectional_two_layers_batch_first() {
    let o = RecurrentOptions::new().num_layers(2).batch_first(true).bidirectional(true);
    let m = GRU::with_options(5, 7, o, &mut rng()).unwrap();
    check_group("gru_bi", Layer::Gru(m), F32_TOL);
}

/// Checks one activation against `act.<name>.{y, grad}` for input `act.<input>`.
fn check_activation(name: &str, input: &str, f: impl Fn(&Tensor) -> Tensor) {
    let sd = load("recurrent_activations.safetensors");
    let x = get(&sd, &format!("act.{input}")).requires_grad_().unwrap();
    let y = f(&x);
    close(&y, &get(&sd, &format!("act.{name}.y")), &format!("{name} values"), F32_TOL);
    y.mul(&get(&sd, &format!("act.{name}.w"))).unwrap().sum_all().unwrap().backward().unwrap();
    close(&x.grad().unwrap(), &get(&sd, &format!("act.{name}.grad")), &format!("{name} gradient"), F32_TOL);
}

/// ```python
/// torch.manual_seed(10)
/// x = 3 * torch.randn(4, 6); x[0, 0] = 0.0; x[1, 3] = 0.0   # exact zeros: gradients at 0
/// x3 = torch.randn(2, 3, 4)
/// xi = x.clone().requires_grad_(); y = f(xi)                 # f as named below
/// w = torch.randn_like(y); (y * w).sum().backward()          # act.<name>.grad = xi.grad
/// ```
#[test]
fn activations_values_and_gradients() {
    let run = |m: &dyn Module, x: &Tensor| m.forward(x).unwrap();
    check_activation("sigmoid", "x", |x| run(&Sigmoid, x)); // torch.sigmoid
    check_activation("tanh", "x", |x| run(&Tanh, x)); // torch.tanh
    check_activation("gelu", "x", |x| run(&GELU::new(), x)); // nn.GELU()
    check_activation("silu", "x", |x| run(&SiLU, x)); // nn.SiLU()
    check_activation("mish", "x", |x| run(&Mish, x)); // nn.Mish()
    check_activation("hardswish", "x", |x| run(&Hardswish, x)); // nn.Hardswish()
    check_activation("hardsigmoid", "x", |x| run(&Hardsigmoid, x)); // nn.Hardsigmoid()
    check_activation("relu6", "x", |x| run(&ReLU6, x)); // nn.ReLU6()
    check_activation("leaky_relu", "x", |x| run(&LeakyReLU::new(), x)); // nn.LeakyReLU()
    check_activation("leaky_relu_02", "x", |x| run(&LeakyReLU::with_slope(0.2), x)); // nn.LeakyReLU(0.2)
    check_activation("elu", "x", |x| run(&ELU::new(), x)); // nn.ELU()
    check_activation("elu_07", "x", |x| run(&ELU::with_alpha(0.7), x)); // nn.ELU(alpha=0.7)
    check_activation("softmax_1", "x", |x| run(&Softmax::new(1), x)); // nn.Softmax(dim=1)
    check_activation("log_softmax_0", "x", |x| run(&LogSoftmax::new(0), x)); // nn.LogSoftmax(dim=0)
    check_activation("softmax3_1", "x3", |x| run(&Softmax::new(1), x)); // nn.Softmax(dim=1) on [2, 3, 4]
    check_activation("log_softmax3", "x3", |x| run(&LogSoftmax::new(-1), x)); // nn.LogSoftmax(dim=-1)
}

/// `type = "SiLU"` (and `Mish`, `Hardswish`) in a model file: read, written back the same,
/// described as PyTorch's repr, built into the op; a key SiLU does not have is located.
#[test]
fn silu_in_model_files() {
    use strata_nn::model_file::{parse_model, to_toml};
    use strata_nn::spec::LayerSpec;
    let text = "input = [4]\nlayers = [\n  { name = \"act\", type = \"SiLU\" },\n  { type = \"Mish\" },\n  { type = \"Hardswish\" },\n  { type = \"Hardsigmoid\" },\n  { type = \"ReLU6\" },\n]\n";
    let mut spec = parse_model(text, "silu.toml", "S").unwrap();
    let kinds: Vec<&LayerSpec> = spec.layers.iter().map(|l| &l.spec).collect();
    assert_eq!(
        kinds,
        [&LayerSpec::SiLU, &LayerSpec::Mish, &LayerSpec::Hardswish, &LayerSpec::Hardsigmoid, &LayerSpec::ReLU6]
    );
    let mut again = parse_model(&to_toml(&spec), "silu.toml", "S").unwrap();
    again.layers.iter_mut().for_each(|l| l.origin = None);
    spec.layers.iter_mut().for_each(|l| l.origin = None);
    assert_eq!(again, spec);
    let trace = spec.check(None).unwrap().render_trace();
    assert!(trace.contains("SiLU") && trace.contains("Mish") && trace.contains("Hardswish"), "{trace}");
    let x = Tensor::from_vec(vec![-3.0f32, -0.5, 0.0, 2.0], &[1, 4]).unwrap();
    let y = spec.build().unwrap().forward(&x).unwrap();
    let want = x.silu().unwrap().mish().unwrap().hardswish().unwrap().hardsigmoid().unwrap().relu6().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    let bad = "input = [4]\nlayers = [{ type = \"SiLU\", beta = 2.0 }]\n";
    let e = parse_model(bad, "bad.toml", "B").unwrap_err().to_string();
    assert!(e.contains("bad.toml:2:") && e.contains("beta"), "{e}");
}

/// ```python
/// torch.manual_seed(11)
/// emb = nn.Embedding(10, 4)
/// idx = torch.tensor([[1, 3, 3, 9], [0, 3, 1, 1]])
/// y = emb(idx); w = torch.randn_like(y); (y * w).sum().backward()   # emb.grad = emb.weight.grad
/// ```
#[test]
fn embedding_values_and_gradient() {
    let sd = load("recurrent_activations.safetensors");
    let m = strata_nn::Embedding::from_tensor(get(&sd, "emb.weight")).unwrap();
    let y = m.forward(&get(&sd, "emb.idx")).unwrap();
    close(&y, &get(&sd, "emb.y"), "embedding values", F32_TOL);
    y.mul(&get(&sd, "emb.w")).unwrap().sum_all().unwrap().backward().unwrap();
    // Rows 1 and 3 are used three times: their gradients add up in index order.
    close(&m.weight.grad().unwrap(), &get(&sd, "emb.grad"), "embedding gradient", F32_TOL);
    let direct = embedding(&get(&sd, "emb.idx"), &get(&sd, "emb.weight")).unwrap();
    close(&direct, &get(&sd, "emb.y"), "F.embedding values", F32_TOL);
}

/// The classification chain from the issue: LSTM(28 → 128, batch_first) → LastStep →
/// Linear(128, 10) on MNIST rows, as a `Sequential` with PyTorch's parameter names; a wrongly
/// shaped input is reported with the layer's path.
#[test]
fn lstm_classifier_in_a_sequential() {
    let mut r = rng();
    let model = Sequential::new()
        .add_module("lstm", LSTM::with_options(28, 128, RecurrentOptions::new().batch_first(true), &mut r).unwrap())
        .unwrap()
        .add_module("last", LastStep::new())
        .unwrap()
        .add_module("fc", Linear::with_options(128, 10, true, DType::F32, &mut r).unwrap())
        .unwrap();
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "fc.weight", "fc.bias"]
    );
    assert_eq!(model.num_parameters(), 4 * 128 * (28 + 128 + 2) + 128 * 10 + 10);
    let x = Tensor::randn(&[5, 28, 28], 0.0, 1.0, DType::F32, &mut r).unwrap();
    let logits = model.forward(&x).unwrap();
    assert_eq!(logits.dims(), &[5, 10]);
    logits.sum_all().unwrap().backward().unwrap();
    assert!(model.parameters().iter().all(|p| p.grad().is_some()));
    let e = model.forward(&Tensor::zeros(&[5, 1, 28, 28], DType::F32)).unwrap_err().to_string();
    assert_eq!(
        e,
        "in layer `lstm` (LSTM(28, 128, batch_first=True)): LSTM: input has shape [5, 1, 28, 28], expected \
         [N, T, 28] (batch_first: batch, time steps, features) or unbatched [T, 28]: it has 4 dimensions \
         (for images read row by row, drop the channel dimension first)"
    );
}

/// Process CPU time in seconds (utime + stime from `/proc/self/stat`), where readable: on a
/// shared machine it is steadier than wall-clock time.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Speed figure, not a check: `cargo test --release -p strata-nn --test recurrent_parity --
/// --ignored --nocapture lstm_speed` prints the time of one forward + backward of
/// LSTM(28 → 128, batch_first) on a `[64, 28, 28]` batch (MNIST rows), the issue's model, in
/// wall-clock and process CPU time.
#[test]
#[ignore = "timing; run in release"]
fn lstm_speed() {
    let mut r = rng();
    let lstm = LSTM::with_options(28, 128, RecurrentOptions::new().batch_first(true), &mut r).unwrap();
    let x = Tensor::randn(&[64, 28, 28], 0.0, 1.0, DType::F32, &mut r).unwrap();
    let step = || {
        lstm.zero_grad().unwrap();
        let out = lstm.forward(&x).unwrap();
        LastStep::new().forward(&out).unwrap().sum_all().unwrap().backward().unwrap();
    };
    (0..5).for_each(|_| step());
    let n = 100;
    let time = |f: &dyn Fn()| {
        let (t, c) = (std::time::Instant::now(), cpu_seconds());
        (0..n).for_each(|_| f());
        let wall = t.elapsed().as_secs_f64() / n as f64 * 1e3;
        let cpu = c.zip(cpu_seconds()).map(|(a, b)| (b - a) / n as f64 * 1e3);
        (wall, cpu.map_or("n/a".into(), |c| format!("{c:.1} ms")))
    };
    let (fb, fb_cpu) = time(&step);
    let (f, f_cpu) = time(&|| drop(strata_core::no_grad(|| lstm.forward(&x).unwrap())));
    eprintln!(
        "LSTM(28→128) on [64, 28, 28]: forward+backward {fb:.1} ms wall ({:.0} samples/s), {fb_cpu} CPU; \
         forward alone (no_grad) {f:.1} ms wall, {f_cpu} CPU",
        64e3 / fb
    );
}
