//! Bad input found by an API fuzzing review is an error saying what, where and how to fix it,
//! never a silently wrong model or optimizer: layer names that would collide in state_dict
//! keys (in `Sequential`, in a spec, in a model file), learning rates set after construction,
//! a parameter given to an optimizer twice, damaged optimizer state.

use strata_core::{DType, Generator, Tensor};
use strata_nn::model_file::parse_model;
use strata_nn::spec::ModelSpec;
use strata_nn::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, Linear, Module, Optimizer, RMSprop, RMSpropConfig, ReLU, SGD,
    Sequential, SgdConfig, StateDict,
};

#[test]
fn a_spec_with_a_name_used_twice_does_not_build() {
    // It built a model of 4 parameters whose state_dict had 2 entries.
    let e = ModelSpec::new("m").input(&[3]).linear("fc", 3, 3).linear("fc", 3, 3).build().unwrap_err().to_string();
    assert!(
        e.starts_with("model `m`: layer name `fc` is already the name of layer 0 of the chain;")
            && e.contains("choose another name"),
        "{e}"
    );
    // In a block, a residual body or a branch: the error names the chain.
    let block = ModelSpec::new("b").linear("fc", 3, 3).relu().linear("fc", 3, 3);
    let e = ModelSpec::new("m").input(&[3]).block("enc", block.clone()).build().unwrap_err().to_string();
    assert!(e.starts_with("model `m`, block `enc`: layer name `fc` is already the name of layer 0"), "{e}");
    let e = ModelSpec::new("m").input(&[3]).residual("res", block.clone()).build().unwrap_err().to_string();
    assert!(e.starts_with("model `m`, block `res.body`: layer name `fc`"), "{e}");
    let branches = vec![ModelSpec::new("x"), block];
    let e = ModelSpec::new("m").input(&[3]).add_branches("add", branches).build().unwrap_err().to_string();
    assert!(e.starts_with("model `m`, block `add.branches.1`: layer name `fc`"), "{e}");
    // A name given by hand that an unnamed layer gets from its position.
    let e = ModelSpec::new("m").input(&[3]).linear("1", 3, 3).relu().build().unwrap_err().to_string();
    assert!(e.contains("layer name `1` is already the name of layer 0"), "{e}");
    // A dotted name is ambiguous in parameter keys.
    let e = ModelSpec::new("m").input(&[3]).linear("a.b", 3, 3).build().unwrap_err().to_string();
    assert!(e.contains("layer name `a.b` contains \".\"") && e.contains("use `a_b` instead"), "{e}");
    // The same name in different chains is fine: the keys differ (`fc.weight`, `enc.fc.weight`).
    let inner = ModelSpec::new("b").linear("fc", 3, 3);
    let m = ModelSpec::new("m").input(&[3]).linear("fc", 3, 3).block("enc", inner).build().unwrap();
    assert_eq!(m.state_dict().len(), m.parameters().len());
}

#[test]
fn a_model_file_with_a_name_used_twice_is_an_error_at_the_layer() {
    let text = "layers = [\n  { name = \"fc\", type = \"Linear\", in_features = 3, out_features = 3 },\n  \
                { name = \"fc\", type = \"Linear\", in_features = 3, out_features = 3 },\n]\n";
    let e = parse_model(text, "m.toml", "m").unwrap_err().to_string();
    assert!(e.contains("m.toml:3:") && e.contains("two layers in this chain are named `fc`"), "{e}");
    assert!(e.contains("the first is at line 2"), "{e}");
    // Also in a block, and against an unnamed layer's position.
    let text = "layers = [\n  { name = \"blk\", type = \"Sequential\", layers = [\n    { type = \"ReLU\" },\n    \
                { name = \"0\", type = \"ReLU\" },\n  ] },\n]\n";
    let e = parse_model(text, "m.toml", "m").unwrap_err().to_string();
    assert!(e.contains("m.toml:4:") && e.contains("two layers in this chain are named `0`"), "{e}");
    let text = "layers = [ { name = \"a.b\", type = \"ReLU\" } ]\n";
    let e = parse_model(text, "m.toml", "m").unwrap_err().to_string();
    assert!(e.contains("m.toml:1:") && e.contains("layer name `a.b` is not allowed"), "{e}");
}

#[test]
fn a_model_whose_children_share_a_name_does_not_load_a_state_dict() {
    // A custom module is free to return any children; two of one name would both get the
    // one saved tensor.
    struct Twins {
        a: Linear,
        b: Linear,
    }
    impl Module for Twins {
        fn forward(&self, x: &Tensor) -> strata_nn::Result<Tensor> {
            self.b.forward(&self.a.forward(x)?)
        }
        fn children(&self) -> Vec<(String, &dyn Module)> {
            vec![("fc".into(), &self.a), ("fc".into(), &self.b)]
        }
    }
    let twins = Twins { a: Linear::new(3, 3).unwrap(), b: Linear::new(3, 3).unwrap() };
    let mut sd = StateDict::new();
    sd.insert("fc.weight", Tensor::zeros(&[3, 3], DType::F32));
    sd.insert("fc.bias", Tensor::zeros(&[3], DType::F32));
    let before = twins.b.weight.to_vec_f64();
    let e = twins.load_state_dict(&sd, true).unwrap_err().to_string();
    assert!(
        e.starts_with("state_dict: layer name `fc` is given to two children of one module")
            && e.contains("`fc.weight`")
            && e.contains("give the children distinct names"),
        "{e}"
    );
    assert_eq!(twins.b.weight.to_vec_f64(), before, "nothing was loaded");
}

fn param(rng: &mut Generator) -> Tensor {
    Tensor::randn(&[2, 2], 0.0, 1.0, DType::F32, rng).unwrap().requires_grad_().unwrap()
}

fn optimizers(params: Vec<Tensor>) -> Vec<(&'static str, strata_nn::Result<Box<dyn Optimizer>>)> {
    fn boxed<O: Optimizer + 'static>(o: strata_nn::Result<O>) -> strata_nn::Result<Box<dyn Optimizer>> {
        o.map(|o| Box::new(o) as Box<dyn Optimizer>)
    }
    vec![
        ("SGD", boxed(SGD::with_config(params.clone(), SgdConfig { lr: 0.1, ..Default::default() }))),
        ("Adam", boxed(Adam::with_config(params.clone(), AdamConfig::default()))),
        ("AdamW", boxed(AdamW::new(params.clone(), 0.1))),
        ("RMSprop", boxed(RMSprop::with_config(params.clone(), RMSpropConfig::default()))),
        ("Adagrad", boxed(Adagrad::with_config(params, AdagradConfig::default()))),
    ]
}

#[test]
fn set_lr_refuses_what_the_constructors_refuse() {
    let mut rng = Generator::new(1);
    for (name, opt) in optimizers(vec![param(&mut rng)]) {
        let mut opt = opt.unwrap();
        let lr = opt.lr();
        for bad in [f64::NAN, f64::INFINITY, -0.5] {
            let e = opt.set_lr(bad).unwrap_err().to_string();
            assert_eq!(e, format!("{name}: lr must be finite and ≥ 0, got {bad}"));
            assert_eq!(opt.lr(), lr, "{name}: a refused lr leaves the old one");
        }
        opt.set_lr(0.0).unwrap();
        assert_eq!(opt.lr(), 0.0);
    }
}

#[test]
fn a_parameter_given_twice_is_refused() {
    // Adam moved it by twice the step.
    let mut rng = Generator::new(2);
    let (p, q) = (param(&mut rng), param(&mut rng));
    for (name, opt) in optimizers(vec![p.clone(), q.clone(), p.clone()]) {
        let e = opt.err().unwrap_or_else(|| panic!("{name} took a repeated parameter")).to_string();
        assert!(
            e.starts_with(&format!("{name}: params must be distinct tensors, each given once"))
                && e.ends_with("got parameter 2, the same tensor as parameter 0"),
            "{e}"
        );
    }
    // Equal values in different tensors are fine.
    let copy = Tensor::from_vec(p.to_vec::<f32>().unwrap(), p.dims()).unwrap().requires_grad_().unwrap();
    assert!(optimizers(vec![p, q, copy]).into_iter().all(|(_, o)| o.is_ok()));
}

#[test]
fn tied_weights_are_one_parameter() {
    // The same Linear twice in a chain: PyTorch's parameters() lists its tensors once, so an
    // optimizer of model.parameters() takes it.
    struct Tied {
        fc: Linear,
    }
    impl Module for Tied {
        fn forward(&self, x: &Tensor) -> strata_nn::Result<Tensor> {
            self.fc.forward(&self.fc.forward(x)?)
        }
        fn children(&self) -> Vec<(String, &dyn Module)> {
            vec![("first".into(), &self.fc), ("second".into(), &self.fc)]
        }
    }
    let m = Tied { fc: Linear::new(3, 3).unwrap() };
    assert_eq!(m.named_parameters().len(), 4);
    assert_eq!(m.parameters().len(), 2);
    assert_eq!(m.num_parameters(), 12);
    Adam::new(m.parameters(), 1e-3).unwrap();
}

#[test]
fn damaged_adam_state_is_an_error_naming_the_key() {
    let mut rng = Generator::new(3);
    let p = param(&mut rng);
    let mut adam = Adam::new(vec![p.clone()], 1e-3).unwrap();
    let good = |sd: &mut StateDict| {
        sd.insert("step.0", Tensor::scalar(3i64));
        sd.insert("exp_avg.0", Tensor::zeros(&[2, 2], DType::F32));
        sd.insert("exp_avg_sq.0", Tensor::ones(&[2, 2], DType::F32));
    };
    let mut sd = StateDict::new();
    good(&mut sd);
    adam.load_state_dict(&sd).unwrap();
    assert_eq!(adam.step_count(0), 3);
    let cases: [(&str, Tensor, &str); 4] = [
        ("exp_avg_sq.0", Tensor::from_vec(vec![1.0f32, -0.5, 1.0, 1.0], &[2, 2]).unwrap(), "holds -0.5 (element 1)"),
        ("exp_avg_sq.0", Tensor::from_vec(vec![f32::NAN, 1.0, 1.0, 1.0], &[2, 2]).unwrap(), "holds NaN (element 0)"),
        ("step.0", Tensor::scalar(-2i64), "is -2, but a step count is a whole number ≥ 0"),
        ("step.0", Tensor::scalar(1.5f64), "is 1.5, but a step count is a whole number ≥ 0"),
    ];
    for (key, bad, says) in cases {
        let mut sd = StateDict::new();
        good(&mut sd);
        sd.insert(key, bad);
        let e = adam.load_state_dict(&sd).unwrap_err().to_string();
        assert!(e.starts_with(&format!("Adam: saved state `{key}`: {says}")), "{e}");
        assert_eq!(adam.step_count(0), 3, "a refused state changes nothing");
    }
    // AMSGrad's maximum too.
    let mut ams = Adam::with_config(vec![p], AdamConfig { amsgrad: true, ..Default::default() }).unwrap();
    let mut sd = StateDict::new();
    good(&mut sd);
    sd.insert("max_exp_avg_sq.0", Tensor::full(&[2, 2], -1.0, DType::F32));
    let e = ams.load_state_dict(&sd).unwrap_err().to_string();
    assert!(e.starts_with("Adam: saved state `max_exp_avg_sq.0`: holds -1"), "{e}");
}

#[test]
fn sequential_builders_report_names_at_once() {
    let e = Sequential::new()
        .add_module("fc", Linear::new(3, 3).unwrap())
        .and_then(|m| m.add_module("fc", Linear::new(3, 3).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("Sequential: layer name `fc` is already the name of layer 0 of the chain"), "{e}");
    let m = Sequential::new().append(ReLU).and_then(|m| m.append(ReLU)).unwrap();
    let names: Vec<&str> = m.layers().map(|(n, _)| n).collect();
    assert_eq!(names, ["0", "1"]);
}
