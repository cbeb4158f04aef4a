//! Layers placed on devices: `examples/split_devices.toml` (SimpleNN over gpu:0, gpu:1 and the
//! CPU) trains 200 steps with the all-CPU losses (within 1e-4), its state_dict loads into a
//! model on the CPU alone, and moving the whole model drops the placement.
//!
//! Three devices on any machine with one GPU adapter (Mesa's software Vulkan on CI): the test
//! re-runs itself with `STRATA_GPU_REPLICAS=2`, which offers the adapter as gpu:0 and gpu:1,
//! two logical devices (own queues and buffers; moves between them go through the host, as
//! between two real GPUs). Without an adapter it prints `SKIPPED` (and fails under
//! `STRATA_REQUIRE_GPU=1`).
#![cfg(feature = "gpu")]

use std::path::Path;
use strata_core::{DType, Device, Generator, Tensor, with_seed};
use strata_nn::optim::{Optimizer, SGD, SgdConfig};
use strata_nn::{CrossEntropyLoss, ModelSpec, Module};

/// Whether this process sees gpu:0 and gpu:1; when it sees only gpu:0, the test named `test`
/// re-runs in a child process that does (and `false` is returned: the child did the work).
fn three_devices(test: &str) -> bool {
    let gpus = strata_core::gpu::adapters().len();
    if gpus >= 2 {
        return true;
    }
    if gpus == 0 {
        let reason = strata_core::gpu::no_adapter_reason();
        assert!(std::env::var("STRATA_REQUIRE_GPU").as_deref() != Ok("1"), "STRATA_REQUIRE_GPU=1 but {reason}");
        let line = format!("SKIPPED: {test} in {}: {reason}\n", file!());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return false;
    }
    assert!(std::env::var(strata_core::gpu::REPLICAS_VAR).is_err(), "replicas asked for but not offered");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(strata_core::gpu::REPLICAS_VAR, "2")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{test} with two GPU replicas:\n{text}");
    false
}

fn split_spec() -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/split_devices.toml");
    strata_nn::model_file::load_model(&path).unwrap()
}

/// The losses of 200 SGD steps (batch 16, four fixed batches) of `model`, its input on the CPU.
fn train(model: &dyn Module, out_device: Device) -> Vec<f64> {
    let mut opt =
        SGD::with_config(model.parameters(), SgdConfig { lr: 0.02, momentum: 0.9, ..Default::default() }).unwrap();
    let mut rng = Generator::new(3);
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|_| {
            let x = Tensor::randn(&[16, 784], 0.0, 1.0, DType::F32, &mut rng).unwrap();
            let y: Vec<i64> = (0..16).map(|_| (rng.next_u64() % 10) as i64).collect();
            (x, Tensor::from_vec(y, &[16]).unwrap().to_device(out_device).unwrap())
        })
        .collect();
    let criterion = CrossEntropyLoss::new();
    (0..200)
        .map(|step| {
            let (x, y) = &batches[step % 4];
            opt.zero_grad().unwrap();
            let logits = model.forward(x).unwrap();
            assert_eq!(logits.device(), out_device);
            let loss = criterion.forward(&logits, y).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            loss.item().unwrap()
        })
        .collect()
}

#[test]
fn a_model_split_over_three_devices_trains_like_the_cpu() {
    if !three_devices("a_model_split_over_three_devices_trains_like_the_cpu") {
        return;
    }
    let spec = split_spec();
    assert!(spec.is_placed() && strata_nn::check::check_spec(&spec, None, Some(10)).errors.is_empty());
    let cpu = with_seed(5, || spec.clone().without_placement().build()).unwrap();
    let init = cpu.state_dict();
    let placed = spec.build().unwrap();
    placed.load_state_dict(&init, true).unwrap();
    // Each layer's parameters live where it is placed.
    let devices: Vec<(String, Device)> = placed.named_parameters().into_iter().map(|(n, p)| (n, p.device())).collect();
    let want = [("encoder.fc1", Device::Gpu(0)), ("mid.fc2", Device::Gpu(1)), ("head", Device::Cpu)];
    for (name, device) in &devices {
        let (_, d) = want.iter().find(|(prefix, _)| name.starts_with(prefix)).unwrap();
        assert_eq!(device, d, "{name}");
    }
    assert_eq!(spec.output_device(Device::Cpu), Device::Cpu);
    let (lc, lp) = (train(&cpu, Device::Cpu), train(&placed, Device::Cpu));
    for (i, (c, p)) in lc.iter().zip(&lp).enumerate() {
        assert!((c - p).abs() < 1e-4, "step {i}: cpu loss {c}, placed loss {p}");
    }
    // The trained placed model's checkpoint loads on the CPU alone, with the same outputs.
    let x = Tensor::randn(&[3, 784], 0.0, 1.0, DType::F32, &mut Generator::new(9)).unwrap();
    let fresh = spec.clone().without_placement().build().unwrap();
    fresh.load_state_dict(&placed.state_dict(), true).unwrap();
    let (a, b) = (placed.forward(&x).unwrap().to_vec_f64(), fresh.forward(&x).unwrap().to_vec_f64());
    assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5), "{a:?} vs {b:?}");
    // A layer placed inside a placed block keeps its own device.
    let nested = spec.clone().place("encoder.fc1", Device::Gpu(1)).unwrap().build().unwrap();
    nested.load_state_dict(&fresh.state_dict(), true).unwrap();
    let fc1 = nested.named_parameters().into_iter().find(|(n, _)| n == "encoder.fc1.weight").unwrap().1;
    assert_eq!(fc1.device(), Device::Gpu(1));
    let c = nested.forward(&x).unwrap().to_vec_f64();
    assert!(c.iter().zip(&b).all(|(c, b)| (c - b).abs() < 1e-5), "{c:?} vs {b:?}");
    // Moving the whole model replaces the placement: everything on gpu:1, the output too.
    placed.to_device(Device::Gpu(1)).unwrap();
    assert!(placed.parameters().iter().all(|p| p.device() == Device::Gpu(1)));
    assert_eq!(placed.forward(&x.to_device(Device::Gpu(1)).unwrap()).unwrap().device(), Device::Gpu(1));
}

#[test]
fn a_device_map_overrides_the_file_and_round_trips() {
    let spec = split_spec();
    let map = strata_nn::check::edit::parse_device_map(" mid = cpu, encoder.fc1=gpu:0 ").unwrap();
    let moved = spec.clone().with_device_map(&map).unwrap();
    let text = strata_nn::model_file::to_toml(&moved);
    assert!(text.contains("name = \"mid\", type = \"Sequential\", device = \"cpu\""), "{text}");
    assert!(text.contains("name = \"fc1\", type = \"Linear\", device = \"gpu:0\""), "{text}");
    let again = strata_nn::model_file::parse_model(&text, "m.toml", "m").unwrap();
    assert_eq!(strata_nn::model_file::to_toml(&again), text);
    assert!(strata_nn::check::edit::parse_device_map("mid").unwrap_err().contains("layer=device"));
    assert!(strata_nn::check::edit::parse_device_map("mid=tpu").unwrap_err().contains("unknown device `tpu`"));
    let e = spec.clone().place("nope.fc", Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("nope.fc") && e.contains("dotted path"), "{e}");
    // A model-level device places every layer without one of its own.
    let all = ModelSpec::new("m").input(&[4]).linear("fc", 4, 2).device(Device::Cpu);
    assert!(all.is_placed() && strata_nn::model_file::to_toml(&all).contains("device = \"cpu\"\n"));
}

#[test]
fn a_parameter_too_large_for_a_gpu_buffer_is_refused_by_the_check() {
    let Some(max) = strata_core::max_tensor_bytes(Device::Gpu(0)) else {
        let line =
            format!("SKIPPED: a_parameter_too_large_for_a_gpu_buffer_is_refused_by_the_check in {}: no GPU\n", file!());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    };
    // One weight a little over the largest buffer: found from the shapes alone, nothing allocated.
    let rows = (max / 4 / 1000 + 1) as usize;
    let spec = ModelSpec::new("big").input(&[rows]).linear("fc", rows, 1000).place("fc", Device::Gpu(0)).unwrap();
    let report = strata_nn::check::check_spec(&spec, None, None);
    let text = report.render_errors();
    assert!(
        text.contains("`fc`") && text.contains("holds in one buffer") && text.contains("--device-map 'fc=cpu'"),
        "{text}"
    );
    let mut fixed = spec.clone();
    assert!(fixed.apply(&report.errors[0].fixes[0].edits));
    assert!(strata_nn::check::check_spec(&fixed, None, None).errors.is_empty());
}
