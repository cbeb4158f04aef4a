//! PyTorch parity and structure for four options (issue 11, item 4): GELU's
//! `approximate = "tanh"`, `dropout` between stacked RNN/LSTM/GRU layers, time-major recurrent
//! models (`batch_first = false`) with a symbolic batch, and `state_dict()` keys in PyTorch's
//! order. The fixture `tests/fixtures/recurrent_option_parity.safetensors` was made by
//! `tools/make_recurrent_option_fixtures.py` with real PyTorch; the torch code behind each group
//! is quoted above the test that uses it (the script's docstring has all of it).
//!
//! Tolerances: 1e-5 relative in f32, 1e-12 relative in f64, with an absolute floor for elements
//! that cancel to about zero (1e-6 in f32, as `recurrent_parity.rs`: PyTorch's f32 tanh-GELU
//! computes `1 + tanh(u)` in f32, which is 0 where strata's, computed in f64 and rounded once,
//! keeps a tail of about 1e-7; 1e-15 in f64).
//!
//! Dropout masks cannot equal PyTorch's (another generator): parity is checked where dropout is
//! the identity (evaluation mode, and p = 0 in training mode); the masks are checked by their
//! structure — only between layers, values 0 or 1/(1 − p) at a rate p, the same for a seed at
//! any thread count, and continued exactly from a saved state.

use std::collections::BTreeMap;
use std::path::Path;
use strata_core::testing::assert_close;
use strata_core::{DType, Generator, Tensor, dropout};
use strata_nn::check::{SymShape, input_batch_dim};
use strata_nn::model_file::{load_model, parse_model, to_toml};
use strata_nn::spec::{GeluApproximate, LayerSpec, ModelSpec};
use strata_nn::{
    Adam, CrossEntropyLoss, GELU, GRU, LSTM, Linear, Module, Nonlinearity, Optimizer, RNN, RecurrentOptions,
    Sequential, StateDict, Summary,
};

const FIXTURE: &str = "recurrent_option_parity.safetensors";
const F32_TOL: (f64, f64) = (1e-5, 1e-6);
const F64_TOL: (f64, f64) = (1e-12, 1e-15);

fn path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn load() -> StateDict {
    StateDict::load(path(FIXTURE)).expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

/// A fresh leaf with the fixture tensor's values (so gradients land on it alone).
fn leaf(t: &Tensor) -> Tensor {
    match t.dtype() {
        DType::F64 => Tensor::from_vec(t.to_vec_f64(), t.dims()).unwrap(),
        _ => Tensor::from_vec(t.to_vec::<f32>().unwrap(), t.dims()).unwrap(),
    }
    .requires_grad_()
    .unwrap()
}

fn tol(t: &Tensor) -> (f64, f64) {
    if t.dtype() == DType::F64 { F64_TOL } else { F32_TOL }
}

#[track_caller]
fn close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    let (rtol, atol) = tol(expected);
    let r = std::panic::catch_unwind(|| assert_close(&actual.to_vec_f64(), &expected.to_vec_f64(), rtol, atol));
    if let Err(e) = r {
        panic!("{what}: {}", e.downcast_ref::<String>().cloned().unwrap_or_default());
    }
}

/// The tensors under `prefix.` with the prefix stripped.
fn under(sd: &StateDict, prefix: &str) -> StateDict {
    let mut out = StateDict::new();
    for (k, t) in sd.iter() {
        if let Some(rest) = k.strip_prefix(prefix) {
            out.insert(rest, t.clone());
        }
    }
    out
}

// ------------------------------------------------------------------------------------- GELU

/// ```python
/// x = torch.cat([torch.linspace(-8, 8, 161), torch.randn(64) * 3]).to(dtype).requires_grad_()
/// g = torch.randn_like(x)
/// y = torch.nn.GELU(approximate='tanh')(x)
/// (y * g).sum().backward()                     # x.grad
/// ```
#[test]
fn gelu_tanh_matches_pytorch_in_f32_and_f64() {
    let sd = load();
    for dtype in ["f32", "f64"] {
        let p = format!("gelu_tanh.{dtype}");
        let x = leaf(&get(&sd, &format!("{p}.x")));
        let y = GELU::tanh().forward(&x).unwrap();
        close(&y, &get(&sd, &format!("{p}.y")), &format!("{p}.y"));
        y.mul(&get(&sd, &format!("{p}.g"))).unwrap().sum_all().unwrap().backward().unwrap();
        close(&x.grad().unwrap(), &get(&sd, &format!("{p}.dx")), &format!("{p}.dx"));
        // The exact form is a different function: the option is not ignored.
        let exact = GELU::new().forward(&x).unwrap().to_vec_f64();
        assert!(exact.iter().zip(y.to_vec_f64()).any(|(a, b)| (a - b).abs() > 1e-4), "{p}");
    }
}

#[test]
fn gelu_approximate_in_model_files() {
    let text = "input = [4]\nlayers = [\n  { type = \"GELU\", approximate = \"tanh\" },\n  { type = \"GELU\", approximate = \"none\" },\n  { type = \"GELU\" },\n]\n";
    let spec = parse_model(text, "gelu.toml", "G").unwrap();
    let kinds: Vec<&LayerSpec> = spec.layers.iter().map(|l| &l.spec).collect();
    assert_eq!(
        kinds,
        [
            &LayerSpec::GELU { approximate: GeluApproximate::Tanh },
            &LayerSpec::GELU { approximate: GeluApproximate::None },
            &LayerSpec::GELU { approximate: GeluApproximate::None },
        ]
    );
    // Written back: the key only where it is not the default, and the same spec again.
    let written = to_toml(&spec);
    assert_eq!(written.matches("approximate = \"tanh\"").count(), 1, "{written}");
    assert!(!written.contains("\"none\""), "{written}");
    let mut again = parse_model(&written, "gelu.toml", "G").unwrap();
    again.layers.iter_mut().for_each(|l| l.origin = None);
    let mut spec = spec;
    spec.layers.iter_mut().for_each(|l| l.origin = None);
    assert_eq!(again, spec);
    // Described as PyTorch's repr; built into the module with the option.
    let report = spec.check(None).unwrap();
    assert!(report.render_trace().contains("GELU(approximate='tanh')"), "{}", report.render_trace());
    let model = spec.build().unwrap();
    let x = Tensor::from_vec(vec![-1.0f32, 0.5, 1.0, 2.0], &[1, 4]).unwrap();
    let y = model.forward(&x).unwrap();
    let want = x.gelu_tanh().unwrap().gelu().unwrap().gelu().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    assert_eq!(ModelSpec::from_module("G", &model).unwrap().layers[0].spec, spec.layers[0].spec);
    // A value other than "none" or "tanh" is located.
    let bad = "input = [4]\nlayers = [{ type = \"GELU\", approximate = \"fast\" }]\n";
    let e = parse_model(bad, "bad.toml", "B").unwrap_err().to_string();
    assert!(e.contains("`approximate` must be \"none\" or \"tanh\""), "{e}");
    assert!(e.contains("bad.toml:2:"), "{e}");
}

// --------------------------------------------------------------- dropout between layers: parity

/// One of RNN, LSTM, GRU behind one interface.
enum Rec {
    Rnn(RNN),
    Lstm(LSTM),
    Gru(GRU),
}

impl Rec {
    fn module(&self) -> &dyn Module {
        match self {
            Rec::Rnn(m) => m,
            Rec::Lstm(m) => m,
            Rec::Gru(m) => m,
        }
    }
    fn run(&self, x: &Tensor) -> (Tensor, Tensor, Option<Tensor>) {
        match self {
            Rec::Rnn(m) => {
                let (o, h) = m.forward_with_state(x, None).unwrap();
                (o, h, None)
            }
            Rec::Gru(m) => {
                let (o, h) = m.forward_with_state(x, None).unwrap();
                (o, h, None)
            }
            Rec::Lstm(m) => {
                let (o, (h, c)) = m.forward_with_state(x, None).unwrap();
                (o, h, Some(c))
            }
        }
    }
}

/// One fixture case: the strata layer with PyTorch's options, its weights loaded, in PyTorch's
/// mode; output, states, input and parameter gradients compared.
fn recurrent_case(
    name: &str,
    make: impl Fn(RecurrentOptions, &mut Generator) -> Rec,
    o: RecurrentOptions,
    train: bool,
) {
    let sd = load();
    let p = format!("rnn.{name}");
    let layer = make(o, &mut Generator::new(1));
    layer.module().load_state_dict(&under(&sd, &format!("{p}.init.")), true).unwrap();
    layer.module().train(train);
    let x = leaf(&get(&sd, &format!("{p}.x")));
    let (out, h_n, c_n) = layer.run(&x);
    close(&out, &get(&sd, &format!("{p}.out")), &format!("{p}.out"));
    close(&h_n, &get(&sd, &format!("{p}.h_n")), &format!("{p}.h_n"));
    if let Some(c_n) = c_n {
        close(&c_n, &get(&sd, &format!("{p}.c_n")), &format!("{p}.c_n"));
    }
    out.mul(&get(&sd, &format!("{p}.g"))).unwrap().sum_all().unwrap().backward().unwrap();
    close(&x.grad().unwrap(), &get(&sd, &format!("{p}.dx")), &format!("{p}.dx"));
    for (k, param) in layer.module().named_parameters() {
        close(&param.grad().unwrap(), &get(&sd, &format!("{p}.grad.{k}")), &format!("{p}.grad.{k}"));
    }
}

/// `nn.LSTM(5, 7, num_layers=3, dropout=0.3, batch_first=True)` in `eval()` mode, f32.
#[test]
fn lstm_with_dropout_in_eval_mode() {
    let o = RecurrentOptions::new().num_layers(3).dropout(0.3).batch_first(true);
    recurrent_case("lstm_eval", |o, g| Rec::Lstm(LSTM::with_options(5, 7, o, g).unwrap()), o, false);
}

/// `nn.GRU(5, 7, num_layers=2, dropout=0.0, bidirectional=True).double()` in `train()` mode.
#[test]
fn gru_with_zero_dropout_in_train_mode() {
    let o = RecurrentOptions::new().num_layers(2).dropout(0.0).bidirectional(true).dtype(DType::F64);
    recurrent_case("gru_train_p0", |o, g| Rec::Gru(GRU::with_options(5, 7, o, g).unwrap()), o, true);
}

/// `nn.RNN(5, 7, num_layers=2, nonlinearity='relu', dropout=0.5).double()` in `eval()` mode.
#[test]
fn rnn_relu_with_dropout_in_eval_mode() {
    let o = RecurrentOptions::new().num_layers(2).dropout(0.5).dtype(DType::F64);
    let make = |o, g: &mut Generator| Rec::Rnn(RNN::with_options(5, 7, Nonlinearity::Relu, o, g).unwrap());
    recurrent_case("rnn_eval", make, o, false);
}

/// `nn.LSTM(5, 7, num_layers=2, dropout=0.0, bidirectional=True)` in `train()` mode, f32.
#[test]
fn lstm_with_zero_dropout_in_train_mode() {
    let o = RecurrentOptions::new().num_layers(2).dropout(0.0).bidirectional(true);
    recurrent_case("lstm_train_p0", |o, g| Rec::Lstm(LSTM::with_options(5, 7, o, g).unwrap()), o, true);
}

// ------------------------------------------------------------ dropout between layers: structure

/// A two-layer ReLU RNN whose layers pass their input through (W_ih = I, W_hh = 0, no bias), on
/// an input of ones: every output is 1 unless a mask between the layers zeroed it, so the
/// output *is* the mask, scaled.
fn pass_through(layers: usize, p: f64, seed: u64) -> RNN {
    let h = 10;
    let o = RecurrentOptions::new().num_layers(layers).bias(false).dropout(p);
    let rnn = RNN::with_options(h, h, Nonlinearity::Relu, o, &mut Generator::new(seed)).unwrap();
    let eye: Vec<f32> = (0..h * h).map(|i| if i % (h + 1) == 0 { 1.0 } else { 0.0 }).collect();
    let mut sd = StateDict::new();
    for (k, _) in rnn.named_parameters() {
        let v = if k.starts_with("weight_ih") { eye.clone() } else { vec![0.0; h * h] };
        sd.insert(k, Tensor::from_vec(v, &[h, h]).unwrap());
    }
    rnn.load_state_dict(&sd, true).unwrap();
    rnn
}

#[test]
fn masks_fall_between_layers_at_rate_p_scaled_by_one_over_one_minus_p() {
    let x = Tensor::ones(&[50, 40, 10], DType::F32); // [T, N, F]: 20,000 values
    for (layers, p) in [(2, 0.3), (2, 0.6), (3, 0.3)] {
        let rnn = pass_through(layers, p, 3);
        let y = rnn.forward(&x).unwrap().to_vec::<f32>().unwrap();
        let scale = (1.0 / (1.0 - p)) as f32;
        // Zeros where a mask dropped the value; survivors scaled once per mask they passed.
        let kept = |v: f32| (0..layers).any(|k| v == scale.powi(k as i32)) && v != 1.0;
        assert!(y.iter().all(|&v| v == 0.0 || kept(v)), "values other than 0 and 1/(1-p)^{}", layers - 1);
        // layers − 1 masks: a value survives with (1 − p)^(layers − 1) — so neither the input nor
        // the last layer's output is masked (that would be one more factor of 1 − p).
        let survive = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        let want = (1.0 - p).powi(layers as i32 - 1);
        assert!((survive - want).abs() < 0.015, "{layers} layers, p {p}: {survive} survive, expected {want}");
        // Evaluation mode: no masks at all.
        rnn.eval();
        assert!(rnn.forward(&x).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 1.0));
    }
    // p = 0 in training mode, and one layer (nothing between), draw no masks.
    for rnn in [pass_through(2, 0.0, 3), pass_through(1, 0.5, 3)] {
        assert!(rnn.forward(&x).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 1.0));
        assert_eq!(rnn.dropout_stream().1, 0);
    }
}

#[test]
fn the_mask_is_strata_dropout_of_the_lower_layer_output_and_h_n_is_unmasked() {
    // A two-layer LSTM with dropout equals its two layers run one by one with
    // `dropout(y0, p, Generator::new(seed).fork(step))` between them, bit for bit; h_n and c_n
    // are the layers' own (states are not masked, as in PyTorch).
    // Time-major throughout, so the mask is drawn over the same element order in both.
    let p = 0.4;
    let o = RecurrentOptions::new().num_layers(2).dropout(p);
    let lstm = LSTM::with_options(6, 5, o, &mut Generator::new(21)).unwrap();
    let single = |k: usize| {
        let one =
            LSTM::with_options(if k == 0 { 6 } else { 5 }, 5, RecurrentOptions::new(), &mut Generator::new(0)).unwrap();
        let mut sd = StateDict::new();
        for (name, t) in lstm.named_parameters() {
            if let Some(base) = name.strip_suffix(&format!("_l{k}")) {
                sd.insert(format!("{base}_l0"), t.detach());
            }
        }
        one.load_state_dict(&sd, true).unwrap();
        one
    };
    let x = Tensor::randn(&[3, 4, 6], 0.0, 1.0, DType::F32, &mut Generator::new(5)).unwrap();
    for call in 0..3u64 {
        let (seed, step) = lstm.dropout_stream();
        assert_eq!(step, call);
        let (out, (h_n, c_n)) = lstm.forward_with_state(&x, None).unwrap();
        let (y0, (h0, c0)) = single(0).forward_with_state(&x, None).unwrap();
        let dropped = dropout(&y0, p, &mut Generator::new(seed).fork(step)).unwrap();
        let (y1, (h1, c1)) = single(1).forward_with_state(&dropped, None).unwrap();
        assert_eq!(out.to_vec::<f32>().unwrap(), y1.to_vec::<f32>().unwrap(), "call {call}");
        let cat = |a: &Tensor, b: &Tensor| [a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap()].concat();
        assert_eq!(h_n.to_vec::<f32>().unwrap(), cat(&h0, &h1));
        assert_eq!(c_n.to_vec::<f32>().unwrap(), cat(&c0, &c1));
    }
}

#[test]
fn the_same_seed_gives_the_same_masks_at_any_thread_count() {
    // Batch 64 takes the LSTM's threaded paths.
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let o = RecurrentOptions::new().num_layers(3).dropout(0.5).batch_first(true);
            let lstm = LSTM::with_options(8, 16, o, &mut Generator::new(11)).unwrap();
            let x = Tensor::randn(&[64, 5, 8], 0.0, 1.0, DType::F32, &mut Generator::new(12)).unwrap();
            let a = lstm.forward(&x).unwrap().to_vec::<f32>().unwrap();
            let b = lstm.forward(&x).unwrap().to_vec::<f32>().unwrap();
            assert_ne!(a, b, "each training-mode call draws new masks");
            [a, b]
        })
    };
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads");
    assert_eq!(one, run(4), "1 vs 4 threads");
}

#[test]
fn extra_state_resumes_the_mask_stream() {
    let model = |seed: u64| {
        let o = RecurrentOptions::new().num_layers(2).dropout(0.5).batch_first(true);
        let mut g = Generator::new(seed);
        Sequential::new()
            .add_module("gru", GRU::with_options(4, 6, o, &mut g).unwrap())
            .unwrap()
            .add_module("fc", Linear::with_options(6, 2, true, DType::F32, &mut g).unwrap())
            .unwrap()
    };
    let x = Tensor::randn(&[3, 5, 4], 0.0, 1.0, DType::F32, &mut Generator::new(2)).unwrap();
    let (a, b) = (model(1), model(2));
    a.forward(&x).unwrap();
    a.forward(&x).unwrap();
    // What a checkpoint stores: the state_dict and, beside it, the mask stream.
    let saved: BTreeMap<String, String> = a.extra_state();
    let (seed, step) = match &a.children()[..] {
        [(_, gru), _] => {
            let s = gru.own_extra_state().unwrap();
            assert_eq!(saved.get("gru"), Some(&s));
            s.split_once(',').map(|(s, t)| (s.to_string(), t.to_string())).unwrap()
        }
        _ => unreachable!(),
    };
    assert!(seed.starts_with("seed=") && step == "step=2", "{seed},{step}");
    b.load_state_dict(&a.state_dict(), true).unwrap();
    b.load_extra_state(&saved).unwrap();
    for _ in 0..2 {
        assert_eq!(a.forward(&x).unwrap().to_vec::<f32>().unwrap(), b.forward(&x).unwrap().to_vec::<f32>().unwrap());
    }
    // Layers without dropout between layers keep no state (checkpoints stay as they were).
    let plain = GRU::with_options(4, 6, RecurrentOptions::new().num_layers(2), &mut Generator::new(1)).unwrap();
    assert_eq!(plain.own_extra_state(), None);
    let bad = [("gru".to_string(), "step=3".to_string())].into_iter().collect();
    assert_eq!(
        b.load_extra_state(&bad).unwrap_err().to_string(),
        "GRU: saved state `step=3`: not a dropout generator position: expected `seed=<integer>,step=<integer>`"
    );
}

#[test]
fn dropout_in_model_files_descriptions_and_errors() {
    let text = "input = [6, 5]\nlayers = [\n  { name = \"lstm\", type = \"LSTM\", input_size = 5, hidden_size = 8, num_layers = 2, dropout = 0.25, batch_first = true },\n  { name = \"gru\", type = \"GRU\", input_size = 8, hidden_size = 4, dropout = 0.1, batch_first = true },\n  { name = \"last\", type = \"LastStep\" },\n]\n";
    let spec = parse_model(text, "d.toml", "D").unwrap();
    let LayerSpec::Recurrent(r) = &spec.layers[0].spec else { panic!() };
    assert_eq!((r.num_layers, r.dropout), (2, 0.25));
    let report = spec.check(None).unwrap();
    let trace = report.render_trace();
    assert!(trace.contains("LSTM(5, 8, num_layers=2, batch_first=True, dropout=0.25)"), "{trace}");
    // One layer: PyTorch warns that dropout has no effect; the description says so.
    assert!(trace.contains("GRU(8, 4, batch_first=True, dropout=0.1 (no effect: one layer))"), "{trace}");
    let summary = Summary::from_report(&report, 1).render();
    assert!(summary.contains("dropout=0.25"), "{summary}");
    // Written back and read again: the same spec; built with the option.
    let written = to_toml(&spec);
    assert!(written.contains("dropout = 0.25") && written.contains("dropout = 0.1"), "{written}");
    let mut again = parse_model(&written, "d.toml", "D").unwrap();
    let mut spec = spec;
    again.layers.iter_mut().chain(spec.layers.iter_mut()).for_each(|l| l.origin = None);
    assert_eq!(again, spec);
    let model = spec.build().unwrap();
    assert_eq!(ModelSpec::from_module("D", &model).unwrap().input(&[6, 5]), spec);
    assert_eq!(model.children()[0].1.describe(), "LSTM(5, 8, num_layers=2, batch_first=True, dropout=0.25)");
    // p outside [0, 1): located in a model file, and refused by the API.
    for p in ["1.0", "-0.1"] {
        let bad = format!(
            "input = [6, 5]\nlayers = [{{ type = \"RNN\", hidden_size = 3, num_layers = 2, dropout = {p} }}]\n"
        );
        let e = parse_model(&bad, "bad.toml", "B").unwrap_err().to_string();
        assert!(e.contains(&format!("`dropout` must be in [0, 1), got {}", p.parse::<f64>().unwrap())), "{e}");
        assert!(e.contains("bad.toml:2:"), "{e}");
    }
    let e = LSTM::with_options(5, 8, RecurrentOptions::new().num_layers(2).dropout(1.0), &mut Generator::new(0))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "LSTM: dropout must be in [0, 1) (the probability of zeroing a value between stacked layers), got 1");
}

// ------------------------------------------------------------------- time-major recurrent input

const TIME_MAJOR: &str = r#"name = "TimeMajor"
input = [6, 5]
layers = [
  { name = "lstm", type = "LSTM", input_size = 5, hidden_size = 8, num_layers = 2, dropout = 0.25 },
  { name = "last", type = "LastStep", batch_first = false },
  { name = "fc", type = "Linear", in_features = 8, out_features = 3 },
]
"#;

/// ```python
/// model = nn.Sequential(OrderedDict(lstm=LSTMOut(5, 8, num_layers=2, dropout=0.25),
///                                   last=LastStep(False), fc=nn.Linear(8, 3))).double().eval()
/// x = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)   # [T, N, F]
/// logits = model(x); (logits * g).sum().backward()
/// ```
#[test]
fn a_time_major_model_checks_with_a_symbolic_batch_and_matches_pytorch() {
    let spec = parse_model(TIME_MAJOR, "tm.toml", "TimeMajor").unwrap();
    assert_eq!(input_batch_dim(&spec, 2), 1);
    let report = spec.check(None).unwrap_or_else(|r| panic!("{}", r.render_errors()));
    // The batch is dimension 1 of the input and of the LSTM's output, and LastStep takes it out.
    assert_eq!(report.input.as_ref().unwrap().to_string(), "[6, N, 5]");
    let outputs: Vec<String> = report.trace.iter().map(|r| r.output.to_string()).collect();
    assert_eq!(outputs, ["[6, N, 8]", "[N, 8]", "[N, 3]"]);
    // The same whether the caller gives the sample (the CLI's `--input 6x5`) or the model file does.
    let given = spec.check(Some(&SymShape::parse_sample("6x5").unwrap())).unwrap();
    assert_eq!(given.trace.iter().map(|r| r.output.to_string()).collect::<Vec<_>>(), outputs);
    // The summary counts one sample's activations and the MACs of its 6 steps.
    let summary = Summary::from_report(&report, 1);
    let lstm_macs = 6 * 4 * 8 * ((5 + 8) + (8 + 8));
    assert_eq!(summary.rows[0].macs, lstm_macs);
    assert_eq!(summary.rows[0].output.to_string(), "[6, N, 8]");
    assert!(summary.render().contains("[6, N, 8]"));

    let sd = load();
    let model = spec.clone().dtype(DType::F64).build().unwrap();
    model.load_state_dict(&under(&sd, "time_major.init."), true).unwrap();
    model.eval();
    let x = leaf(&get(&sd, "time_major.x"));
    let logits = model.forward(&x).unwrap();
    close(&logits, &get(&sd, "time_major.logits"), "time_major.logits");
    logits.mul(&get(&sd, "time_major.g")).unwrap().sum_all().unwrap().backward().unwrap();
    close(&x.grad().unwrap(), &get(&sd, "time_major.dx"), "time_major.dx");
    // Any batch size: the checked output is the output.
    for n in [1, 7] {
        let x = Tensor::zeros(&[6, n, 5], DType::F64);
        assert_eq!(model.forward(&x).unwrap().dims(), report.output.as_ref().unwrap().with_batch(n).as_slice());
    }
    // A loader's [N, T, F] batch laid out time-major as a view (`transpose(0, 1)`, what a caller
    // does when `input_batch_dim` is 1) gives the same logits as the contiguous [T, N, F] tensor.
    let x = get(&sd, "time_major.x");
    let batch_major = x.transpose(0, 1).unwrap().contiguous().unwrap();
    let view = batch_major.transpose(0, 1).unwrap();
    assert_eq!(model.forward(&view).unwrap().to_vec_f64(), model.forward(&x).unwrap().to_vec_f64());
}

#[test]
fn a_time_major_model_trains_at_any_batch_size() {
    let spec = parse_model(TIME_MAJOR, "tm.toml", "TimeMajor").unwrap();
    let model = strata_core::with_seed(3, || spec.build()).unwrap();
    let mut opt = Adam::new(model.parameters(), 0.02).unwrap();
    let loss_fn = CrossEntropyLoss::new();
    let mut g = Generator::new(4);
    // Two classes told apart by the sign of the first feature at the last step (x[T − 1, i, 0]
    // of the [T, N, F] batch); batches of 16 and 5.
    let batch = |n: usize, g: &mut Generator| {
        let x = Tensor::randn(&[6, n, 5], 0.0, 1.0, DType::F32, g).unwrap();
        let v = x.to_vec::<f32>().unwrap();
        let y: Vec<i64> = (0..n).map(|i| (v[(5 * n + i) * 5] > 0.0) as i64).collect();
        (x, Tensor::from_vec(y, &[n]).unwrap())
    };
    let mut losses = vec![];
    for step in 0..100 {
        let (x, y) = batch(if step % 2 == 0 { 16 } else { 5 }, &mut g);
        opt.zero_grad().unwrap();
        let loss = loss_fn.forward(&model.forward(&x).unwrap(), &y).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        losses.push(loss.item().unwrap());
    }
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[90..].iter().sum::<f64>() / 10.0;
    assert!(last < 0.6 * first, "loss {first} → {last}: {losses:?}");
}

#[test]
fn batch_first_and_image_models_keep_the_batch_first() {
    for file in ["lstm_mnist_model.toml", "embedding_lstm.toml", "simple_nn.toml", "resnet_mnist_model.toml"] {
        let spec = load_model(&examples().join(file)).unwrap();
        let rank = spec.input.as_ref().unwrap().len();
        assert_eq!(input_batch_dim(&spec, rank), 0, "{file}");
        assert_eq!(spec.check(None).unwrap().input.unwrap().batch_dim(), Some(0), "{file}");
    }
    // A time-major layer after another layer reads what it is given (PyTorch does no more).
    let spec = ModelSpec::new("m").input(&[6, 5]).linear("fc", 5, 5).layer(
        "rnn",
        LayerSpec::Recurrent(strata_nn::spec::RecurrentSpec::new(strata_nn::spec::RecurrentKind::Gru, Some(5), 3)),
    );
    assert_eq!(input_batch_dim(&spec, 2), 0);
    assert_eq!(spec.check(None).unwrap().output.unwrap().to_string(), "[N, 6, 3]");
}

// ------------------------------------------------------------------------- state_dict key order

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Metadata `keys.<file>` = `",".join(model.state_dict().keys())` of the PyTorch model with the
/// same module tree, for every model file `examples/*.toml`.
#[test]
fn state_dict_keys_are_in_pytorchs_order_for_every_example() {
    let (_, meta) = StateDict::load_with_metadata(path(FIXTURE)).unwrap();
    let mut seen = 0;
    let mut files: Vec<_> = std::fs::read_dir(examples()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        if !text.lines().any(|l| l.starts_with("layers") || l.starts_with("[[layers]]")) {
            continue; // a run file, which names a model file
        }
        let want =
            meta.get(&format!("keys.{name}")).unwrap_or_else(|| panic!("no PyTorch keys for {name}: regenerate"));
        let spec = load_model(file).unwrap();
        // Sizes left to inference are resolved first; the broken example builds as written.
        let spec = spec.resolve(None).unwrap_or(spec);
        // Placement (split_devices.toml) does not change the keys; this machine may lack the GPUs.
        let model = spec.without_placement().build().unwrap();
        let keys: Vec<&str> = want.split(',').collect();
        assert_eq!(model.state_dict().keys().collect::<Vec<_>>(), keys, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 11, "every example model file is compared");
}

#[test]
fn state_dicts_in_either_order_load() {
    // A file written with every buffer after every parameter (strata's order before) loads into
    // the model, and the model's own file reads back in its key set: loading goes by name.
    let spec = load_model(&examples().join("resnet_mnist_model.toml")).unwrap();
    let (a, b) = (spec.build().unwrap(), spec.build().unwrap());
    let mut old = StateDict::new();
    for (k, t) in a.named_parameters().into_iter().chain(a.named_buffers()) {
        old.insert(k, t.detach());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.safetensors");
    old.save(&file).unwrap();
    strata_nn::module::load_file(&b, &file, true).unwrap();
    assert_eq!(
        a.parameters().iter().map(|p| p.to_vec::<f32>().unwrap()).collect::<Vec<_>>(),
        b.parameters().iter().map(|p| p.to_vec::<f32>().unwrap()).collect::<Vec<_>>()
    );
    a.state_dict().save(dir.path().join("new.safetensors")).unwrap();
    let back = StateDict::load(dir.path().join("new.safetensors")).unwrap();
    let mut want: Vec<&str> = old.keys().collect();
    let mut got: Vec<&str> = back.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    strata_nn::module::load_file(&b, dir.path().join("new.safetensors"), true).unwrap();
}
