//! PyTorch parity of `torch.nn.init`'s maths: fans (`_calculate_fan_in_and_fan_out`, grouped
//! convolutions included), gains (`calculate_gain` for every nonlinearity), the bounds and
//! standard deviations every scheme asks for (recorded from torch's own `uniform_`/`normal_`
//! calls, so they are torch's numbers, not a re-derivation), which of `trunc_normal_`'s two
//! samplers torch takes, and `orthogonal_`'s matrix from the same normal draws. The fixture
//! `tests/fixtures/init_parity.safetensors` comes from `tools/make_init_fixtures.py` (its
//! docstring has the torch code). The numbers themselves differ (the generators differ):
//! `crates/nn/src/init/tests.rs` tests the distributions.

use std::collections::HashMap;
use strata_core::{DType, Tensor};
use strata_nn::init::{self, Draw, Init, LayerInit, Nonlinearity, maths};
use strata_nn::model_file::parse_model;
use strata_nn::{Module, StateDict};

fn fixture() -> (StateDict, HashMap<String, String>) {
    StateDict::load_with_metadata(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/init_parity.safetensors"))
        .expect("fixture")
}

fn get(sd: &StateDict, key: &str) -> Tensor {
    sd.get(key).unwrap_or_else(|| panic!("fixture lacks {key}")).clone()
}

fn sizes(t: &Tensor) -> Vec<usize> {
    t.to_vec_f64().iter().map(|&v| v as usize).collect()
}

fn count(sd: &StateDict, prefix: &str, suffix: &str) -> usize {
    (0..).take_while(|i| sd.get(&format!("{prefix}.{i}.{suffix}")).is_some()).count()
}

/// `fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)` for Linear, Conv1d/2d/3d
/// (with `groups`: the weight is `[out, in/groups, kH, kW]`), LSTM/GRU and Embedding weights.
#[test]
fn fans_match_pytorch() {
    let (sd, meta) = fixture();
    let n = count(&sd, "fan", "shape");
    assert_eq!(n, 12, "fan cases");
    for i in 0..n {
        let shape = sizes(&get(&sd, &format!("fan.{i}.shape")));
        let want = sizes(&get(&sd, &format!("fan.{i}.fans")));
        let got = init::calculate_fan_in_and_fan_out(&shape).unwrap();
        assert_eq!([got.0, got.1], [want[0], want[1]], "{} {shape:?}", meta[&format!("fan.{i}.module")]);
    }
    // torch raises for a bias and a BatchNorm weight.
    for i in 0..count(&sd, "fan_error", "shape") {
        let shape = sizes(&get(&sd, &format!("fan_error.{i}.shape")));
        let e = init::calculate_fan_in_and_fan_out(&shape).unwrap_err().to_string();
        assert!(e.contains("2 or more dimensions"), "{shape:?}: {e}");
    }
}

/// `torch.nn.init.calculate_gain(name)` for every nonlinearity and `("leaky_relu", slope)`.
#[test]
fn gains_match_pytorch() {
    let (sd, meta) = fixture();
    let want = get(&sd, "gain").to_vec_f64();
    let cases: Vec<&str> = meta["gain.cases"].split(',').collect();
    assert_eq!(cases.len(), want.len());
    let mut seen = vec![];
    for (case, want) in cases.iter().zip(want) {
        let (name, param) = match case.split_once(':') {
            Some((n, p)) => (n, Some(p.parse::<f64>().unwrap())),
            None => (*case, None),
        };
        let nl = Nonlinearity::from_name(name).unwrap_or_else(|| panic!("unknown nonlinearity {name}"));
        seen.push(nl);
        assert_eq!(init::calculate_gain(nl, param), want, "calculate_gain({case})");
    }
    assert!(Nonlinearity::ALL.iter().all(|n| seen.contains(n)), "every nonlinearity is compared");
}

#[derive(serde::Deserialize)]
struct Holder {
    init: Init,
}

/// The scheme a model-file value means, read both by the model-file parser and by serde (the
/// two must agree).
fn scheme(value: &str) -> Init {
    let text = format!("layers = [{{ type = \"Linear\", in_features = 4, out_features = 3, init = {value} }}]\n");
    let spec = parse_model(&text, "case.toml", "m").unwrap_or_else(|e| panic!("{value}: {e}"));
    let parsed = spec.layers[0].init.weight.unwrap();
    // serde reads the table form; a model file also takes a bare name for the defaults.
    let table = if value.starts_with('"') { format!("{{ scheme = {value} }}") } else { value.to_string() };
    let via_serde =
        toml::from_str::<Holder>(&format!("init = {table}\n")).unwrap_or_else(|e| panic!("{table}: {e}")).init;
    assert_eq!(parsed, via_serde, "{value}: the model-file parser and serde disagree");
    parsed
}

/// The bounds (`uniform_(from, to)`), the mean and standard deviation (`normal_(mean, std)`)
/// and the constants (`fill_`, `zero_`) torch's schemes ask for, exactly.
#[test]
fn every_scheme_draws_what_pytorch_draws() {
    let (sd, meta) = fixture();
    let n = count(&sd, "draw", "shape");
    assert_eq!(n, 25, "draw cases");
    let mut schemes = vec![];
    for i in 0..n {
        let value = &meta[&format!("draw.{i}.init")];
        let call = meta[&format!("draw.{i}.call")].as_str();
        let shape = sizes(&get(&sd, &format!("draw.{i}.shape")));
        let args = get(&sd, &format!("draw.{i}.args")).to_vec_f64();
        let s = scheme(value);
        schemes.push(s.name());
        let what = format!("{value} on {shape:?}");
        match (init::draw(&s, &shape).unwrap(), call) {
            (Draw::Uniform { low, high }, "uniform") => assert_eq!([low, high], [args[0], args[1]], "{what}"),
            (Draw::Normal { mean, std }, "normal") => assert_eq!([mean, std], [args[0], args[1]], "{what}"),
            (Draw::Constant(c), "fill") => assert_eq!(c, args[0], "{what}"),
            (Draw::Constant(c), "zero") => assert_eq!(c, 0.0, "{what}"),
            // torch 2.15 draws normal values when [a, b] holds more than 30% of the mass, else
            // uniform proposals on [a, b].
            (Draw::TruncNormal { mean, std, a, b }, call) => {
                let mass = maths::norm_cdf((b - mean) / std) - maths::norm_cdf((a - mean) / std);
                match call {
                    "normal" => assert!(mass > 0.3 && [mean, std] == [args[0], args[1]], "{what}: {mass}"),
                    "uniform" => assert!(mass <= 0.3 && [a, b] == [args[0], args[1]], "{what}: {mass}"),
                    _ => panic!("{what}: torch called {call}"),
                }
            }
            (d, call) => panic!("{what}: strata draws {d:?}, torch called {call} {args:?}"),
        }
    }
    for name in Init::SCHEMES.iter().filter(|s| **s != "orthogonal") {
        assert!(schemes.contains(name), "{name} is compared");
    }
}

/// `orthogonal_(t, gain)` from the same normal draws: tall, wide, square, 3-D and 4-D (flattened
/// after the first dimension), a row and a column; within 1e-12.
#[test]
fn orthogonal_matches_pytorch_from_the_same_draws() {
    let (sd, _) = fixture();
    let n = count(&sd, "orth", "out");
    assert_eq!(n, 9, "orthogonal cases");
    for i in 0..n {
        let normal = get(&sd, &format!("orth.{i}.normal"));
        let out = get(&sd, &format!("orth.{i}.out"));
        let gain = get(&sd, &format!("orth.{i}.gain")).to_vec_f64()[0];
        let (rows, cols) = (normal.dims()[0], normal.dims()[1]);
        let q = maths::orthogonal(&normal.to_vec_f64(), rows, cols);
        let got: Vec<f64> = q.iter().map(|v| v * gain).collect();
        strata_core::testing::assert_close(&got, &out.to_vec_f64(), 1e-12, 1e-12);
    }
}

/// PyTorch's `nn.Linear` default is `kaiming_uniform_(a=√5)`: the same bound ±1/√fan_in as
/// strata's default; the fixture's case 16 is that scheme on a `[128, 784]` weight.
#[test]
fn linear_default_is_kaiming_uniform_with_a_sqrt_5() {
    let (sd, meta) = fixture();
    assert_eq!(meta["draw.16.init"], "{ scheme = \"kaiming_uniform\", a = 2.23606797749979 }");
    let args = get(&sd, "draw.16.args").to_vec_f64();
    assert!((args[1] - 1.0 / 28.0).abs() < 1e-15, "{args:?}");
    // A model-file layer with the scheme: the same bound, a fresh draw.
    let text = "layers = [{ name = \"fc\", type = \"Linear\", in_features = 784, out_features = 128, init = { scheme = \"kaiming_uniform\", a = 2.23606797749979 } }]\n";
    let spec = parse_model(text, "t.toml", "m").unwrap();
    assert_eq!(
        spec.layers[0].init,
        LayerInit::weight(Init::KaimingUniform {
            a: 2.23606797749979,
            mode: init::FanMode::FanIn,
            nonlinearity: Nonlinearity::LeakyRelu
        })
    );
    let model = spec.build().unwrap();
    let w = model.state_dict().get("fc.weight").unwrap().to_vec_f64();
    assert!(w.iter().all(|v| v.abs() <= args[1]) && w.iter().any(|v| v.abs() > 0.99 * args[1]));
    assert_eq!(model.state_dict().get("fc.weight").unwrap().dtype(), DType::F32);
}
