//! The per-device op suite: every op the GPU backend implements, run on the CPU and on the GPU
//! from the same inputs; forward values, input gradients and parameter gradients must agree
//! within f32 rounding (1e-5 relative). Without an adapter the tests skip with one line saying
//! why, unless `STRATA_REQUIRE_GPU=1` (as `.ci/run` sets), where they fail.
//!
//! Over 600 lines on purpose: one test binary for the whole suite (each file under `tests/`
//! links its own, and CI links them on two cores), sharing the run-on-both-devices helpers.
#![cfg(feature = "gpu")]
// Inputs are listed as arrays of clones, one style for one input or several.
#![allow(clippy::cloned_ref_to_slice_refs)]

use strata_core::ops::optim::{AdamStep, SgdStep};
use strata_core::{DType, Device, Error, Generator, Reduction, Tensor};

/// The GPU to test on, or `None` (and a line saying why) when there is none.
fn gpu() -> Option<Device> {
    if strata_core::gpu::adapters().is_empty() {
        let reason = strata_core::gpu::no_adapter_reason();
        if std::env::var("STRATA_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("STRATA_REQUIRE_GPU=1 but {reason}");
        }
        // Once per test binary, straight to stderr (libtest captures eprintln!): one visible line.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let line = format!("SKIPPED: the GPU tests in {}: {reason}\n", file!());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        });
        return None;
    }
    Some(Device::Gpu(0))
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, &mut Generator::new(seed)).unwrap()
}

/// `|a − b| ≤ tol·(1 + |a|)` elementwise.
fn assert_close(what: &str, cpu: &Tensor, gpu: &Tensor, tol: f64) {
    assert_eq!(cpu.dims(), gpu.dims(), "{what}: shapes");
    assert_eq!(gpu.device(), Device::Gpu(0), "{what}: the GPU result is on the GPU");
    let a = cpu.to_vec_f64();
    let b: Vec<f64> =
        gpu.to_vec::<f32>().unwrap_or_else(|e| panic!("{what}: {e}")).into_iter().map(f64::from).collect();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = (x - y).abs() <= tol * (1.0 + x.abs()) || (x.is_nan() && y.is_nan());
        assert!(ok, "{what}: element {i}: cpu {x} vs gpu {y}");
    }
}

/// Runs `f` on leaves made from `inputs` on the CPU and on the GPU, backpropagates the sum of
/// the output times a fixed random weight, and compares the outputs and every input's gradient.
fn check(what: &str, dev: Device, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> strata_core::Result<Tensor>) {
    check_tol(what, dev, inputs, 1e-5, f)
}

fn check_tol(
    what: &str,
    dev: Device,
    inputs: &[Tensor],
    tol: f64,
    f: impl Fn(&[Tensor]) -> strata_core::Result<Tensor>,
) {
    let run = |device: Device| {
        let leaves: Vec<Tensor> =
            inputs.iter().map(|t| t.to_device(device).unwrap().detach().requires_grad_().unwrap()).collect();
        let y = f(&leaves).unwrap_or_else(|e| panic!("{what} on {device}: {e}"));
        let w = rand(y.dims(), 99).to_device(device).unwrap();
        y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        (y, leaves)
    };
    let (yc, lc) = run(Device::Cpu);
    let (yg, lg) = run(dev);
    assert_close(&format!("{what}: forward"), &yc, &yg, tol);
    for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
        match (c.grad(), g.grad()) {
            (Some(c), Some(g)) => assert_close(&format!("{what}: gradient of input {i}"), &c, &g, tol),
            (None, None) => {}
            (c, g) => panic!("{what}: input {i} has a gradient on one device only ({c:?} / {g:?})"),
        }
    }
}

#[test]
fn transfers_round_trip_and_report_their_device() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[3, 5], 1);
    let g = x.to_device(dev).unwrap();
    assert_eq!(g.device(), dev);
    assert_eq!(g.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    assert_eq!(g.to_device(Device::Cpu).unwrap().to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    // A view's own elements only.
    let v = x.t().unwrap().narrow(0, 1, 3).unwrap();
    assert_eq!(v.to_device(dev).unwrap().to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
    let labels = Tensor::from_vec(vec![3i64, 0, 9], &[3]).unwrap();
    assert_eq!(labels.to_device(dev).unwrap().to_vec::<i64>().unwrap(), vec![3, 0, 9]);
    assert_eq!(Tensor::full_on(&[2, 2], 1.5, DType::F32, dev).unwrap().to_vec::<f32>().unwrap(), vec![1.5; 4]);
    // The gradient goes back through the move.
    let leaf = x.clone().requires_grad_().unwrap();
    leaf.to_device(dev).unwrap().mul_scalar(2.0).unwrap().sum_all().unwrap().backward().unwrap();
    let grad = leaf.grad().unwrap();
    assert_eq!(grad.device(), Device::Cpu);
    assert_eq!(grad.to_vec::<f32>().unwrap(), vec![2.0; 15]);
}

#[test]
fn mixing_devices_is_an_error_that_names_both() {
    let Some(dev) = gpu() else { return };
    let (a, b) = (rand(&[2, 2], 1), rand(&[2, 2], 2).to_device(dev).unwrap());
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("cpu") && e.contains("gpu:0") && e.contains(".to_device"), "{e}");
    let e = a.matmul(&b).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
    let f64s = Tensor::zeros(&[2], DType::F64).to_device(dev).unwrap_err().to_string();
    assert!(f64s.contains("f64") || f64s.contains("F64"), "{f64s}");
    let missing = Device::Gpu(4096);
    let e = a.to_device(missing).unwrap_err().to_string();
    assert!(e.contains("gpu:4096") && e.contains("strata devices"), "{e}");
}

#[test]
fn a_tensor_too_big_for_the_device_is_an_error_naming_the_op_and_the_bytes() {
    let Some(dev) = gpu() else { return };
    // One element more than the adapter binds in one buffer: refused before asking the driver.
    let max = strata_core::gpu::adapters()[0].max_binding_bytes;
    let n = (max / 4 + 1) as usize;
    let e = Tensor::full_on(&[n], 0.0, DType::F32, dev).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::DeviceOutOfMemory { .. }), "{text}");
    assert!(
        text.contains("out of memory on gpu:0") && text.contains(&format!("{} bytes were asked for", 4 * n)),
        "{text}"
    );
    assert!(text.contains("bytes at most in one buffer on this adapter"), "{text}");
    // The device still works afterwards.
    assert_eq!(Tensor::full_on(&[2], 1.0, DType::F32, dev).unwrap().to_vec::<f32>().unwrap(), [1.0, 1.0]);
}

#[test]
fn convolution() {
    let Some(dev) = gpu() else { return };
    let (x, w, b) = (rand(&[2, 3, 9, 8], 1), rand(&[4, 3, 3, 3], 2), rand(&[4], 3));
    check("conv2d", dev, &[x.clone(), w.clone(), b.clone()], |t| {
        strata_core::conv2d(&t[0], &t[1], Some(&t[2]), (1, 1), (1, 1), (1, 1), 1)
    });
    check("conv2d strided, dilated, no bias", dev, &[x.clone(), rand(&[5, 3, 2, 3], 4)], |t| {
        strata_core::conv2d(&t[0], &t[1], None, (2, 1), (0, 2), (2, 1), 1)
    });
    check("conv2d 1×1 of a view", dev, &[x.clone(), rand(&[2, 3, 1, 1], 5)], |t| {
        strata_core::conv2d(&t[0].transpose(2, 3)?, &t[1], None, (1, 1), (0, 0), (1, 1), 1)
    });
    // Groups: the GEMMs batched over (sample, group).
    let x6 = rand(&[2, 6, 7, 8], 6);
    check("conv2d groups = 2", dev, &[x6.clone(), rand(&[4, 3, 3, 3], 7), rand(&[4], 8)], |t| {
        strata_core::conv2d(&t[0], &t[1], Some(&t[2]), (1, 2), (1, 0), (1, 1), 2)
    });
    check("conv2d depthwise (groups = C), 2 outputs per channel", dev, &[x6.clone(), rand(&[12, 1, 3, 3], 9)], |t| {
        strata_core::conv2d(&t[0], &t[1], None, (2, 2), (1, 1), (1, 2), 6)
    });
}

#[test]
fn padding_every_mode() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[2, 3, 5, 6], 1);
    for mode in strata_core::PaddingMode::ALL {
        // Asymmetric, at reflect's limit on the left.
        check(&format!("pad2d {mode}"), dev, &[x.clone()], move |t| strata_core::pad2d(&t[0], [5, 1, 2, 3], mode));
        check(&format!("pad2d {mode} of a view"), dev, &[x.clone()], move |t| {
            strata_core::pad2d(&t[0].transpose(2, 3)?, [0, 2, 1, 0], mode)
        });
    }
    let e = strata_core::pad2d(&x.to_device(dev).unwrap(), [6, 0, 0, 0], strata_core::PaddingMode::Reflect);
    assert!(e.unwrap_err().to_string().contains("use at most 5"));
}

#[test]
fn concatenation_and_lstm() {
    let Some(dev) = gpu() else { return };
    let (a, b) = (rand(&[2, 3, 4], 1), rand(&[2, 5, 4], 2));
    check("cat", dev, &[a.clone(), b.clone()], |t| strata_core::cat(&[&t[0], &t[1]], 1));
    check("stack", dev, &[a.clone(), a.mul_scalar(2.0).unwrap()], |t| strata_core::stack(&[&t[0], &t[1]], 2));
    check("chunk", dev, &[b.clone()], |t| {
        let c = t[0].chunk(5, 1)?;
        c[1].mul(&c[3])?.add(&c[4])
    });
    let (x, wih, whh, bih, bhh) =
        (rand(&[5, 3, 4], 1), rand(&[24, 4], 2), rand(&[24, 6], 3), rand(&[24], 4), rand(&[24], 5));
    for opts in [
        strata_core::LstmOptions::default(),
        strata_core::LstmOptions { reverse: true, batch_first: true, cell_state: true },
    ] {
        check(
            &format!("lstm {opts:?}"),
            dev,
            &[x.clone(), wih.clone(), whh.clone(), bih.clone(), bhh.clone()],
            move |t| {
                let (out, h_n, c_n) =
                    strata_core::lstm_layer(&t[0], None, None, &t[1], &t[2], Some((&t[3], &t[4])), opts)?;
                let tail = match c_n {
                    Some(c) => h_n.mul(&c)?,
                    None => h_n,
                };
                out.sum(&[0, 1], false)?.add(&tail.sum(&[0], false)?)
            },
        );
    }
    // Given initial states (their gradients too), without biases, reversed, and one step alone.
    let (h0, c0) = (rand(&[3, 6], 6), rand(&[3, 6], 7));
    for (x, opts) in [
        (x.clone(), strata_core::LstmOptions { cell_state: true, ..Default::default() }),
        (x.clone(), strata_core::LstmOptions { reverse: true, ..Default::default() }),
        (rand(&[1, 3, 4], 8), strata_core::LstmOptions { batch_first: true, cell_state: true, ..Default::default() }),
    ] {
        check_tol(
            &format!("lstm with h0, c0 {opts:?} T={}", x.dims()[0]),
            dev,
            &[x, wih.clone(), whh.clone(), h0.clone(), c0.clone()],
            2e-5,
            move |t| {
                let (out, h_n, c_n) =
                    strata_core::lstm_layer(&t[0], Some(&t[3]), Some(&t[4]), &t[1], &t[2], None, opts)?;
                let tail = match c_n {
                    Some(c) => h_n.mul(&c)?,
                    None => h_n,
                };
                out.mul(&out)?.sum(&[0, 1], false)?.add(&tail.sum(&[0], false)?)
            },
        );
    }
}

#[test]
fn pooling() {
    let Some(dev) = gpu() else { return };
    use strata_core::{AvgPool2dOptions, MaxPool2dOptions};
    let x = rand(&[2, 3, 7, 6], 1);
    check("max_pool2d", dev, &[x.clone()], |t| strata_core::max_pool2d_with(&t[0], &MaxPool2dOptions::new((2, 2))));
    let opts = MaxPool2dOptions {
        stride: (2, 1),
        padding: (1, 1),
        dilation: (1, 2),
        ceil_mode: true,
        ..MaxPool2dOptions::new((3, 2))
    };
    check("max_pool2d with options", dev, &[x.clone()], move |t| strata_core::max_pool2d_with(&t[0], &opts));
    check("avg_pool2d", dev, &[x.clone()], |t| strata_core::avg_pool2d_with(&t[0], &AvgPool2dOptions::new((2, 3))));
    let opts = AvgPool2dOptions {
        stride: (2, 2),
        padding: (1, 1),
        ceil_mode: true,
        count_include_pad: false,
        ..AvgPool2dOptions::new((3, 3))
    };
    check("avg_pool2d with options", dev, &[x.clone()], move |t| strata_core::avg_pool2d_with(&t[0], &opts));
    check("adaptive_avg_pool2d", dev, &[x.clone()], |t| strata_core::adaptive_avg_pool2d(&t[0], (3, 4)));
}

#[test]
fn batch_and_layer_norm() {
    let Some(dev) = gpu() else { return };
    let (x, w, b) = (rand(&[4, 3, 5, 5], 1), rand(&[3], 2), rand(&[3], 3));
    for relu in [false, true] {
        let (rm, rv) = (Tensor::zeros(&[3], DType::F32), Tensor::ones(&[3], DType::F32));
        let (rmg, rvg) = (rm.to_device(dev).unwrap(), rv.to_device(dev).unwrap());
        let f = move |t: &[Tensor]| {
            let (rm, rv) = if t[0].device() == Device::Cpu { (&rm, &rv) } else { (&rmg, &rvg) };
            let bn = if relu { strata_core::batch_norm_relu } else { strata_core::batch_norm };
            bn(&t[0], Some(rm), Some(rv), Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5)
        };
        check(&format!("batch_norm training relu={relu}"), dev, &[x.clone(), w.clone(), b.clone()], f);
    }
    let (x2, w2, b2) = (rand(&[3, 4, 6], 4), rand(&[4, 6], 5), rand(&[4, 6], 6));
    check("layer_norm", dev, &[x2.clone(), w2, b2], |t| {
        strata_core::layer_norm(&t[0], &[4, 6], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    check("layer_norm without affine", dev, &[x2], |t| strata_core::layer_norm(&t[0], &[6], None, None, 1e-5));
    // The running statistics move alike, and evaluation uses them.
    let run = |device: Device| {
        let (rm, rv) = (
            Tensor::zeros(&[3], DType::F32).to_device(device).unwrap(),
            Tensor::ones(&[3], DType::F32).to_device(device).unwrap(),
        );
        let xd = x.to_device(device).unwrap();
        strata_core::batch_norm(&xd, Some(&rm), Some(&rv), None, None, true, 0.1, 1e-5).unwrap();
        let y = strata_core::batch_norm(&xd, Some(&rm), Some(&rv), None, None, false, 0.1, 1e-5).unwrap();
        (rm, rv, y)
    };
    let ((a, b_, c), (d, e, f)) = (run(Device::Cpu), run(dev));
    assert_close("running mean", &a, &d, 1e-5);
    assert_close("running var", &b_, &e, 1e-5);
    assert_close("eval output", &c, &f, 1e-5);
}

/// A one-member collective: the synchronised ops on their own, on either device.
struct Alone;

impl strata_core::Collective for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, values: &[f64]) -> Result<Vec<f64>, String> {
        Ok(values.to_vec())
    }
}

#[test]
fn sync_batch_norm_and_all_reduce() {
    let Some(dev) = gpu() else { return };
    let _alone = strata_core::install_collective(std::rc::Rc::new(Alone));
    let (x, w, b) = (rand(&[4, 3, 5, 5], 1), rand(&[3], 2), rand(&[3], 3));
    check("sync_batch_norm", dev, &[x.clone(), w, b], |t| {
        strata_core::sync_batch_norm(&t[0], None, None, Some(&t[1]), Some(&t[2]), 0.1, 1e-5)
    });
    check("all_reduce_sum", dev, &[x], |t| strata_core::all_reduce_sum(&t[0], 0.5));
}

#[test]
fn elementwise_ops_with_broadcasting() {
    let Some(dev) = gpu() else { return };
    let (a, b, row) = (rand(&[4, 5], 1), rand(&[4, 5], 2), rand(&[5], 3));
    check("add", dev, &[a.clone(), b.clone()], |t| t[0].add(&t[1]));
    check("sub broadcast", dev, &[a.clone(), row.clone()], |t| t[0].sub(&t[1]));
    check("mul", dev, &[a.clone(), b.clone()], |t| t[0].mul(&t[1]));
    let pos = b.mul(&b).unwrap().add_scalar(0.5).unwrap();
    check("div", dev, &[a.clone(), pos.clone()], |t| t[0].div(&t[1]));
    check("column broadcast", dev, &[a.clone(), rand(&[4, 1], 4)], |t| t[0].mul(&t[1]));
    check("neg", dev, &[a.clone()], |t| t[0].neg());
    check("exp", dev, &[a.clone()], |t| t[0].exp());
    check("log", dev, &[pos.clone()], |t| t[0].log());
    check("relu", dev, &[a.clone()], |t| t[0].relu());
    check("scalars", dev, &[a.clone()], |t| t[0].mul_scalar(-1.5)?.add_scalar(0.25));
    check("sqrt", dev, &[pos.clone()], |t| t[0].sqrt());
    check("add_relu", dev, &[a.clone(), b.clone()], |t| strata_core::add_relu(&t[0], &t[1]));
    check("transposed operand", dev, &[a.clone(), rand(&[5, 4], 5)], |t| t[0].add(&t[1].t()?));
    // A leaf used twice: its gradients add up on the device.
    check("used twice", dev, &[a.clone()], |t| t[0].mul(&t[0])?.add(&t[0]));
}

#[test]
fn activations_and_softmax() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[5, 7], 1).mul_scalar(3.0).unwrap();
    check("sigmoid", dev, &[x.clone()], |t| t[0].sigmoid());
    check("tanh", dev, &[x.clone()], |t| t[0].tanh());
    check("leaky_relu", dev, &[x.clone()], |t| t[0].leaky_relu(0.1));
    check("elu", dev, &[x.clone()], |t| t[0].elu(0.7));
    check("gelu", dev, &[x.clone()], |t| t[0].gelu());
    check("gelu_tanh", dev, &[x.clone()], |t| t[0].gelu_tanh());
    check("silu", dev, &[x.clone()], |t| t[0].silu());
    check("mish", dev, &[x.clone()], |t| t[0].mish());
    check("hardswish", dev, &[x.clone()], |t| t[0].hardswish());
    check("hardsigmoid", dev, &[x.clone()], |t| t[0].hardsigmoid());
    check("relu6", dev, &[x.mul_scalar(3.0).unwrap()], |t| t[0].relu6());
    check("softmax", dev, &[x.clone()], |t| t[0].softmax(-1));
    check("softmax dim 0", dev, &[x.clone()], |t| t[0].softmax(0));
    check("log_softmax", dev, &[x.mul_scalar(100.0).unwrap()], |t| t[0].log_softmax(1));
    let big = Tensor::from_vec(vec![-100.0f32, 100.0], &[2]).unwrap().to_device(dev).unwrap();
    assert_eq!(big.tanh().unwrap().to_vec::<f32>().unwrap(), vec![-1.0, 1.0], "finite for large inputs");
    assert_eq!(big.sigmoid().unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
}

#[test]
fn dropout_draws_the_cpus_mask() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[3, 1000], 1);
    for (p, seed) in [(0.5, 1), (0.1, 2), (0.9, 3), (1.0 / 3.0, 4)] {
        // An offset that is not a multiple of four words, and a stream of its own.
        let start = Generator::new(seed).fork(7);
        let (mut gc, mut gg) = (start.clone(), start.clone());
        gc.next_u32();
        gg.next_u32();
        let yc = strata_core::dropout(&x, p, &mut gc).unwrap();
        let yg = strata_core::dropout(&x.to_device(dev).unwrap(), p, &mut gg).unwrap();
        assert_eq!(yc.to_vec::<f32>().unwrap(), yg.to_vec::<f32>().unwrap(), "p = {p}: the same mask, bit for bit");
        assert_eq!(gc, gg, "both generators advance alike");
    }
    check("dropout gradient", dev, &[x.clone()], |t| strata_core::dropout(&t[0], 0.3, &mut Generator::new(5)));
}

#[test]
fn embedding_lookups() {
    let Some(dev) = gpu() else { return };
    let idx = Tensor::from_vec(vec![3i64, 0, 3, 5, 1, 3], &[2, 3]).unwrap();
    let idx_gpu = idx.to_device(dev).unwrap();
    for pad in [None, Some(3)] {
        let (ic, ig) = (idx.clone(), idx_gpu.clone());
        check(&format!("embedding padding {pad:?}"), dev, &[rand(&[7, 4], 1)], move |t| {
            let i = if t[0].device() == Device::Cpu { &ic } else { &ig };
            strata_core::embedding_padded(i, &t[0], pad)
        });
    }
    // A longer sequence with repeats: the device-built table keeps every position, in order.
    let long: Vec<i64> = (0..300).map(|i| (i * i % 11) as i64).collect();
    let (lc, lg) = (Tensor::from_vec(long.clone(), &[300]).unwrap(), Tensor::from_vec(long, &[300]).unwrap());
    let lg = lg.to_device(dev).unwrap();
    check("embedding, 300 positions over 11 rows, padding 0", dev, &[rand(&[11, 5], 2)], move |t| {
        strata_core::embedding_padded(if t[0].device() == Device::Cpu { &lc } else { &lg }, &t[0], Some(0))
    });
    // Out of range: the CPU refuses it; the GPU (no read-back) gives that row NaN.
    let bad = Tensor::from_vec(vec![1i64, 9, -2], &[3]).unwrap();
    let e = strata_core::embedding(&bad, &rand(&[7, 4], 1)).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    let y = strata_core::embedding(&bad.to_device(dev).unwrap(), &rand(&[7, 4], 1).to_device(dev).unwrap()).unwrap();
    let y = y.to_vec::<f32>().unwrap();
    assert!(y[..4].iter().all(|v| v.is_finite()) && y[4..].iter().all(|v| v.is_nan()), "{y:?}");
}

#[test]
fn views_copies_and_conversions() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[3, 4, 5], 1);
    check("transpose + contiguous", dev, &[x.clone()], |t| t[0].transpose(0, 2)?.contiguous());
    check("narrow", dev, &[x.clone()], |t| t[0].narrow(1, 1, 2)?.contiguous());
    check("expand", dev, &[rand(&[3, 1], 2)], |t| t[0].expand(&[3, 6])?.mul_scalar(2.0));
    check("reshape of a view", dev, &[x.clone()], |t| t[0].transpose(0, 1)?.reshape(&[4, 15]));
    let labels = Tensor::from_vec(vec![2.7f32, -1.2, 0.0], &[3]).unwrap();
    let on = labels.to_device(dev).unwrap().to_dtype(DType::I64).unwrap();
    assert_eq!(on.to_vec::<i64>().unwrap(), labels.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap());
    assert_eq!(on.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![2.0, -1.0, 0.0]);
}

#[test]
fn reductions() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[6, 7, 3], 1);
    check("sum all", dev, &[x.clone()], |t| t[0].sum_all());
    check("sum dim 0", dev, &[x.clone()], |t| t[0].sum(&[0], false));
    check("sum dims 0, 2 keepdim", dev, &[x.clone()], |t| t[0].sum(&[0, 2], true));
    check("mean", dev, &[x.clone()], |t| t[0].mean(&[1], false));
    check("long sum", dev, &[rand(&[3, 5000], 2)], |t| t[0].sum(&[1], false));
    // Few outputs of long reductions are summed in slices (two passes): contiguous, and over a
    // plan that strides (BatchNorm's per-channel sums), with a length no slice count divides.
    check("split sum", dev, &[rand(&[3, 40_001], 3)], |t| t[0].sum(&[1], false));
    check("split per-channel sum", dev, &[rand(&[2, 4, 97, 103], 4)], |t| t[0].sum(&[0, 2, 3], false));
    check("max with gradient", dev, &[x.clone()], |t| t[0].max(1, false));
    check("max over the last dim, keepdim", dev, &[x.clone()], |t| t[0].max(-1, true));
    check("max over the first dim of a view", dev, &[x.clone()], |t| t[0].transpose(0, 2)?.max(0, false));
    let a = x.argmax(-1, false).unwrap();
    let g = x.to_device(dev).unwrap().argmax(-1, false).unwrap();
    assert_eq!(g.device(), dev);
    assert_eq!(g.to_vec::<i64>().unwrap(), a.to_vec::<i64>().unwrap());
}

#[test]
fn finiteness_is_checked_on_the_device() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[6, 7, 3], 1);
    assert!(x.to_device(dev).unwrap().all_finite());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 61, 125] {
            let mut v = x.to_vec::<f32>().unwrap();
            v[at] = bad;
            let t = Tensor::from_vec(v, &[6, 7, 3]).unwrap().to_device(dev).unwrap();
            assert!(!t.all_finite(), "{bad} at {at}");
            // A view sees only its own elements.
            let first = t.narrow(0, 0, 1).unwrap();
            assert_eq!(first.all_finite(), at >= 21, "{bad} at {at}, first row only");
            // Many tensors, one read; the bad one last.
            let many = [x.to_device(dev).unwrap(), first.clone(), t.transpose(0, 2).unwrap()];
            assert!(!strata_core::all_finite(&many));
            assert!(strata_core::all_finite(&many[..1]));
        }
    }
    // Mixed devices are checked per device; integers are always finite.
    let labels = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap().to_device(dev).unwrap();
    assert!(strata_core::all_finite(&[x.clone(), labels, x.to_device(dev).unwrap()]));
    assert!(strata_core::all_finite(&[]));
}

#[test]
fn matmul_and_linear() {
    let Some(dev) = gpu() else { return };
    check("matmul", dev, &[rand(&[70, 33], 1), rand(&[33, 65], 2)], |t| t[0].matmul(&t[1]));
    check("matmul transposed", dev, &[rand(&[33, 70], 1), rand(&[65, 33], 2)], |t| t[0].t()?.matmul(&t[1].t()?));
    check("batched broadcast", dev, &[rand(&[2, 3, 9, 4], 1), rand(&[3, 4, 5], 2)], |t| t[0].matmul(&t[1]));
    check("vector", dev, &[rand(&[4], 1), rand(&[4, 3], 2)], |t| t[0].matmul(&t[1]));
    let (x, w, b) = (rand(&[64, 784], 1), rand(&[128, 784], 2).mul_scalar(0.05).unwrap(), rand(&[128], 3));
    check_tol("linear", dev, &[x.clone(), w.clone(), b.clone()], 2e-5, |t| {
        strata_core::linear(&t[0], &t[1], Some(&t[2]))
    });
    check_tol("linear_relu", dev, &[x.clone(), w.clone(), b.clone()], 2e-5, |t| {
        strata_core::linear_relu(&t[0], &t[1], Some(&t[2]))
    });
    check("linear without bias, 3-D input", dev, &[rand(&[2, 3, 8], 1), rand(&[5, 8], 2)], |t| {
        strata_core::linear(&t[0], &t[1], None)
    });
    // Up to 8 rows or columns take the split-K kernel: K longer than its 64 threads, not a multiple of
    // them, transposed and batched operands, and the bias + ReLU epilogue at batch 1.
    check_tol("few rows, long K", dev, &[rand(&[5, 300], 1), rand(&[300, 70], 2)], 2e-5, |t| t[0].matmul(&t[1]));
    check_tol("few rows, transposed, batched", dev, &[rand(&[3, 130, 8], 1), rand(&[3, 20, 130], 2)], 2e-5, |t| {
        t[0].transpose(1, 2)?.matmul(&t[1].transpose(1, 2)?)
    });
    // Few output tiles and a long K split K into slices (the linear above too): batched, and
    // K not a multiple of the slices' 16-deep steps.
    check_tol("batched, split K", dev, &[rand(&[3, 20, 300], 1), rand(&[300, 70], 2)], 2e-5, |t| t[0].matmul(&t[1]));
    check_tol("few columns", dev, &[rand(&[70, 300], 1), rand(&[300, 3], 2)], 2e-5, |t| t[0].matmul(&t[1]));
    check_tol("batch-1 linear_relu", dev, &[rand(&[1, 784], 4), w.clone(), b.clone()], 2e-5, |t| {
        strata_core::linear_relu(&t[0], &t[1], Some(&t[2]))
    });
}

#[test]
fn cross_entropy_every_reduction() {
    let Some(dev) = gpu() else { return };
    let logits = rand(&[16, 10], 1).mul_scalar(3.0).unwrap();
    let target = Tensor::from_vec((0..16).map(|i| (i * 7 % 10) as i64).collect::<Vec<_>>(), &[16]).unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let tc = target.clone();
        let tg = target.to_device(dev).unwrap();
        check(&format!("cross_entropy {reduction:?}"), dev, &[logits.clone()], move |t| {
            let target = if t[0].device() == Device::Cpu { &tc } else { &tg };
            strata_core::cross_entropy(&t[0], target, reduction)
        });
    }
    let e = strata_core::cross_entropy(&logits.to_device(dev).unwrap(), &target, Reduction::Mean).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
}

#[test]
fn weighted_smoothed_and_ignoring_cross_entropy_and_nll() {
    use strata_core::CrossEntropyOptions;
    let Some(dev) = gpu() else { return };
    let logits = rand(&[12, 5], 1).mul_scalar(3.0).unwrap();
    // Rows 3 and 8 carry the ignored class −100.
    let t: Vec<i64> = (0..12).map(|i| if i % 5 == 3 { -100 } else { (i * 3 % 5) as i64 }).collect();
    let target = Tensor::from_vec(t.clone(), &[12]).unwrap();
    let in_range = Tensor::from_vec(t.iter().map(|&v| v.max(1)).collect::<Vec<_>>(), &[12]).unwrap();
    let weight = rand(&[5], 2).exp().unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for (w, ignore, eps) in
            [(true, None, 0.0), (false, Some(-100), 0.0), (true, Some(-100), 0.1), (false, None, 0.25)]
        {
            // Without ignore_index, the ignored rows' targets become class 1.
            let tgt = if ignore.is_some() { target.clone() } else { in_range.clone() };
            let what = format!("cross_entropy {reduction:?} weight {w} ignore {ignore:?} ε {eps}");
            let (tc, tg) = (tgt.clone(), tgt.to_device(dev).unwrap());
            let (wc, wg) = (weight.clone(), weight.to_device(dev).unwrap());
            check(&what, dev, &[logits.clone()], move |x| {
                let gpu = x[0].device() != Device::Cpu;
                let options = CrossEntropyOptions {
                    reduction,
                    weight: w.then(|| if gpu { wg.clone() } else { wc.clone() }),
                    ignore_index: ignore,
                    label_smoothing: eps,
                };
                strata_core::cross_entropy_with(&x[0], if gpu { &tg } else { &tc }, &options)
            });
            if eps == 0.0 {
                let (tc, tg) = (tgt.clone(), tgt.to_device(dev).unwrap());
                let (wc, wg) = (weight.clone(), weight.to_device(dev).unwrap());
                check(&format!("nll_loss of log_softmax, {what}"), dev, &[logits.clone()], move |x| {
                    let gpu = x[0].device() != Device::Cpu;
                    let w = w.then_some(if gpu { &wg } else { &wc });
                    strata_core::nll_loss(&x[0].log_softmax(1)?, if gpu { &tg } else { &tc }, w, ignore, reduction)
                });
            }
        }
    }
}

#[test]
fn binary_cross_entropy_with_logits() {
    let Some(dev) = gpu() else { return };
    // Logits up to ±30: the stable forms must not overflow.
    let x = rand(&[6, 4], 1).mul_scalar(10.0).unwrap();
    let y = rand(&[6, 4], 2).sigmoid().unwrap();
    let pw = rand(&[4], 3).exp().unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        check(&format!("bce {reduction:?}"), dev, &[x.clone(), y.clone()], move |t| {
            strata_core::binary_cross_entropy_with_logits(&t[0], &t[1], None, reduction)
        });
        let (pc, pg) = (pw.clone(), pw.to_device(dev).unwrap());
        check(&format!("bce {reduction:?} with pos_weight"), dev, &[x.clone(), y.clone()], move |t| {
            let pw = if t[0].device() == Device::Cpu { &pc } else { &pg };
            strata_core::binary_cross_entropy_with_logits(&t[0], &t[1], Some(pw), reduction)
        });
    }
}

/// Runs three optimizer steps of `step` on the CPU and on the GPU and compares parameters and states.
fn check_steps(what: &str, dev: Device, states: usize, step: impl Fn(&Tensor, &Tensor, &[Tensor], u64)) {
    let run = |device: Device| {
        let p = rand(&[300], 1).to_device(device).unwrap();
        let s: Vec<Tensor> = (0..states).map(|_| p.zeros_like().unwrap()).collect();
        for t in 1..=3 {
            let g = rand(&[300], 10 + t).to_device(device).unwrap();
            step(&p, &g, &s, t);
        }
        (p, s)
    };
    let ((pc, sc), (pg, sg)) = (run(Device::Cpu), run(dev));
    assert_close(&format!("{what}: parameter"), &pc, &pg, 1e-5);
    for (c, g) in sc.iter().zip(&sg) {
        assert_close(&format!("{what}: state"), c, g, 1e-5);
    }
}

#[test]
fn optimizer_updates() {
    let Some(dev) = gpu() else { return };
    let sgd = |cfg: SgdStep| {
        move |p: &Tensor, g: &Tensor, s: &[Tensor], t: u64| p.sgd_step_(g, s.first(), t == 1, &cfg).unwrap()
    };
    check_steps("sgd", dev, 0, sgd(SgdStep { lr: 0.1, ..Default::default() }));
    check_steps("sgd momentum", dev, 1, sgd(SgdStep { lr: 0.1, momentum: 0.9, dampening: 0.1, ..Default::default() }));
    check_steps(
        "sgd nesterov + decay",
        dev,
        1,
        sgd(SgdStep { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01, ..Default::default() }),
    );
    for (decoupled, weight_decay, amsgrad) in [(false, 0.0, false), (false, 0.1, true), (true, 0.01, false)] {
        let states = if amsgrad { 3 } else { 2 };
        check_steps(&format!("adam decoupled={decoupled} amsgrad={amsgrad}"), dev, states, move |p, g, s, t| {
            let cfg = AdamStep { lr: 0.01, betas: (0.9, 0.999), eps: 1e-8, weight_decay, decoupled, step: t };
            p.adam_step_(g, &s[0], &s[1], s.get(2), &cfg).unwrap()
        });
    }
}

#[test]
fn in_place_updates_keep_views_and_saved_values() {
    let Some(dev) = gpu() else { return };
    let p = rand(&[4], 1).to_device(dev).unwrap();
    let before = p.detach();
    p.fill_(2.0).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![2.0; 4]);
    assert_eq!(before.to_vec::<f32>().unwrap(), rand(&[4], 1).to_vec::<f32>().unwrap(), "copy-on-write");
    p.update_::<f32, _>(|v| v[1] = 5.0).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![2.0, 5.0, 2.0, 2.0]);
    p.copy_(&Tensor::ones(&[4], DType::F32)).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![1.0; 4]);
    let snapshot = p.detach();
    p.sgd_step_(
        &Tensor::ones(&[4], DType::F32).to_device(dev).unwrap(),
        None,
        true,
        &SgdStep { lr: 0.5, ..Default::default() },
    )
    .unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![0.5; 4]);
    assert_eq!(snapshot.to_vec::<f32>().unwrap(), vec![1.0; 4], "a snapshot keeps its values");
}

#[test]
fn a_small_mlp_trains_alike_on_both_devices() {
    let Some(dev) = gpu() else { return };
    // 20 → 16 → 3 with ReLU, cross-entropy, SGD with momentum: 20 steps.
    let run = |device: Device| {
        let mut rng = Generator::new(5);
        let mk = |shape: &[usize], rng: &mut Generator| {
            Tensor::randn(shape, 0.0, 0.3, DType::F32, rng)
                .unwrap()
                .to_device(device)
                .unwrap()
                .requires_grad_()
                .unwrap()
        };
        let params = [mk(&[16, 20], &mut rng), mk(&[16], &mut rng), mk(&[3, 16], &mut rng), mk(&[3], &mut rng)];
        let bufs: Vec<Tensor> = params.iter().map(|p| p.zeros_like().unwrap()).collect();
        let x = Tensor::randn(&[32, 20], 0.0, 1.0, DType::F32, &mut rng).unwrap().to_device(device).unwrap();
        let y: Vec<i64> = (0..32).map(|i| i % 3).collect();
        let y = Tensor::from_vec(y, &[32]).unwrap().to_device(device).unwrap();
        let mut losses = vec![];
        for step in 0..20 {
            params.iter().for_each(|p| p.zero_grad().unwrap());
            let h = strata_core::linear_relu(&x, &params[0], Some(&params[1])).unwrap();
            let logits = strata_core::linear(&h, &params[2], Some(&params[3])).unwrap();
            let loss = strata_core::cross_entropy(&logits, &y, Reduction::Mean).unwrap();
            loss.backward().unwrap();
            for (p, b) in params.iter().zip(&bufs) {
                let cfg = SgdStep { lr: 0.1, momentum: 0.9, ..Default::default() };
                p.sgd_step_(&p.grad().unwrap(), Some(b), step == 0, &cfg).unwrap();
            }
            losses.push(loss.item().unwrap());
        }
        losses
    };
    let (cpu, gpu) = (run(Device::Cpu), run(dev));
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert!((c - g).abs() < 1e-4, "step {i}: cpu loss {c}, gpu loss {g}");
    }
    assert!(cpu[19] < cpu[0] * 0.8, "it learns: {cpu:?}");
}

// ---------------------------------------------------------------- edge cases (adversarial review)

/// `cpu` and `gpu` equal within `tol·(1 + |cpu|)`, NaN where the other is NaN.
fn assert_same_values(what: &str, cpu: &[f32], gpu: &[f32], tol: f32) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths");
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        let ok = if c.is_nan() || g.is_nan() {
            c.is_nan() && g.is_nan()
        } else {
            c == g || (c - g).abs() <= tol * (1.0 + c.abs())
        };
        assert!(ok, "{what}: element {i}: cpu {c} vs gpu {g}\ncpu {cpu:?}\ngpu {gpu:?}");
    }
}

#[test]
fn empty_dimensions_through_the_gemm_ops_and_their_backward() {
    let Some(dev) = gpu() else { return };
    // K = 0: a product of empty sums (zeros, plus the bias); M = 0 and N = 0: empty outputs, whose
    // backward is a K = 0 product again. Each was a division by zero in the split-K plan.
    check("matmul [9, 0] × [0, 9]", dev, &[rand(&[9, 0], 1), rand(&[0, 9], 2)], |t| t[0].matmul(&t[1]));
    check("matmul [70, 0] × [0, 70]", dev, &[rand(&[70, 0], 1), rand(&[0, 70], 2)], |t| t[0].matmul(&t[1]));
    check("matmul [0, 5] × [5, 70]", dev, &[rand(&[0, 5], 1), rand(&[5, 70], 2)], |t| t[0].matmul(&t[1]));
    check("batched matmul [3, 20, 0] × [3, 0, 20]", dev, &[rand(&[3, 20, 0], 1), rand(&[3, 0, 20], 2)], |t| {
        t[0].matmul(&t[1])
    });
    check("linear, 0 input features", dev, &[rand(&[20, 0], 1), rand(&[30, 0], 2), rand(&[30], 3)], |t| {
        strata_core::linear_relu(&t[0], &t[1], Some(&t[2]))
    });
    check("conv2d, an empty batch", dev, &[rand(&[0, 3, 8, 8], 1), rand(&[16, 3, 3, 3], 2), rand(&[16], 3)], |t| {
        strata_core::conv2d(&t[0], &t[1], Some(&t[2]), (1, 1), (1, 1), (1, 1), 1)
    });
}

#[test]
fn pooling_an_empty_batch_builds_no_tables() {
    let Some(dev) = gpu() else { return };
    // No output cell: nothing to compute. The pixel and cell tables of a 3000×3000 plane (180 MB,
    // more than the software adapter binds) were built anyway, and refused.
    let x = Tensor::zeros(&[0, 1, 3000, 3000], DType::F32).to_device(dev).unwrap().requires_grad_().unwrap();
    let y = strata_core::max_pool2d(&x, (1, 1), (1, 1), (0, 0), (1, 1)).unwrap();
    assert_eq!(y.dims(), &[0, 1, 3000, 3000]);
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().dims(), &[0, 1, 3000, 3000]);
    let y = strata_core::adaptive_avg_pool2d(&x.detach(), (3000, 3000)).unwrap();
    assert_eq!(y.dims(), &[0, 1, 3000, 3000]);
    check("max_pool2d, an empty batch", dev, &[rand(&[0, 3, 8, 8], 1)], |t| {
        strata_core::max_pool2d(&t[0], (2, 2), (2, 2), (0, 0), (1, 1))
    });
    check("avg_pool2d, an empty batch", dev, &[rand(&[0, 3, 8, 8], 1)], |t| {
        strata_core::avg_pool2d(&t[0], (2, 2), (2, 2), (0, 0), true)
    });
}

#[test]
fn integer_tensors_are_refused_by_the_float_kernels_as_on_the_cpu() {
    let Some(dev) = gpu() else { return };
    // The GPU holds i64 as i32 words: a float kernel read them as tiny floats and answered
    // (`[1, 2, 3].exp()` gave 1065353216, an i64 sum gave 8e-45) where the CPU refuses.
    let ints = Tensor::from_vec(vec![1i64, 3, 2, 4], &[2, 2]).unwrap();
    let labels = Tensor::from_vec(vec![0i64, 1], &[2]).unwrap();
    type Op = fn(&Tensor, &Tensor) -> strata_core::Result<Tensor>;
    let ops: [(&str, Op); 11] = [
        ("add", |x, _| x.add(x)),
        ("exp", |x, _| x.exp()),
        ("relu", |x, _| x.relu()),
        ("sigmoid", |x, _| x.sigmoid()),
        ("sum", |x, _| x.sum_all()),
        ("max", |x, _| x.argmax(1, false)),
        ("matmul", |x, _| x.matmul(x)),
        ("cross_entropy", |x, t| strata_core::cross_entropy(x, t, Reduction::Mean)),
        ("max_pool2d", |x, _| strata_core::max_pool2d(&x.reshape(&[1, 1, 2, 2])?, (2, 2), (2, 2), (0, 0), (1, 1))),
        ("embedding", |x, t| strata_core::embedding(t, x)),
        ("conv2d", |x, _| {
            let x4 = x.reshape(&[1, 1, 2, 2])?;
            strata_core::conv2d(&x4, &x4, None, (1, 1), (0, 0), (1, 1), 1)
        }),
    ];
    for (name, op) in ops {
        let cpu = op(&ints, &labels).unwrap_err();
        let on_gpu = op(&ints.to_device(dev).unwrap(), &labels.to_device(dev).unwrap());
        let e = on_gpu.map(|t| t.to_vec_f64()).unwrap_err();
        assert!(matches!(e, Error::UnsupportedDType { dtype: DType::I64, .. }), "{name}: {e}");
        let text = e.to_string();
        assert!(text.starts_with(&format!("{name}:")) && text.contains("to_dtype(DType::F32)"), "{name}: {text}");
        assert!(matches!(cpu, Error::UnsupportedDType { .. }), "{name} on the CPU: {cpu}");
    }
    // Integer tensors still move, copy and convert.
    let g = ints.to_device(dev).unwrap();
    assert_eq!(g.t().unwrap().contiguous().unwrap().to_vec::<i64>().unwrap(), [1, 2, 3, 4]);
    assert_eq!(g.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), [1.0, 3.0, 2.0, 4.0]);
}

#[test]
fn nan_and_infinity_give_the_cpus_results() {
    let Some(dev) = gpu() else { return };
    // llvmpipe's shader compiler folds `v != v` to false: NaN was dropped by ReLU (and the
    // linear ReLU epilogue), ReLU6, hardsigmoid, and lost to a larger number in max, argmax and
    // max pooling.
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let v = vec![1.0, nan, 3.0, inf, -inf, 2.0, nan, nan, -inf, -inf, inf, inf, 0.0, -1.0, 7.0, -nan];
    let x = Tensor::from_vec(v.clone(), &[4, 4]).unwrap();
    let xg = x.to_device(dev).unwrap();
    let both = |what: &str, f: &dyn Fn(&Tensor) -> strata_core::Result<Tensor>| {
        let c = f(&x).unwrap().to_vec_f64().iter().map(|&v| v as f32).collect::<Vec<_>>();
        let g = f(&xg).unwrap().to_vec_f64().iter().map(|&v| v as f32).collect::<Vec<_>>();
        assert_same_values(what, &c, &g, 1e-5);
    };
    both("max", &|t| t.max(1, false));
    both("argmax", &|t| t.argmax(1, false));
    both("softmax", &|t| t.softmax(1));
    both("relu", &|t| t.relu());
    both("relu6", &|t| t.relu6());
    both("hardsigmoid", &|t| t.hardsigmoid());
    both("max_pool2d", &|t| strata_core::max_pool2d(&t.reshape(&[1, 4, 2, 2])?, (2, 2), (2, 2), (0, 0), (1, 1)));
    // The epilogue of the one-row-per-workgroup kernel (8 rows) and of the tiled one (16 × 16).
    both("linear_relu, few rows", &|t| {
        strata_core::linear_relu(
            &t.reshape(&[16, 1])?.narrow(0, 0, 8)?,
            &Tensor::ones(&[1, 1], DType::F32).to_device(t.device())?,
            None,
        )
    });
    both("linear_relu, tiled", &|t| {
        let eye: Vec<f32> = (0..256).map(|i| if i % 17 == 0 { 1.0 } else { 0.0 }).collect();
        let w = Tensor::from_vec(eye, &[16, 16])?.to_device(t.device())?;
        strata_core::linear_relu(&t.reshape(&[1, 16])?.expand(&[16, 16])?, &w, None)
    });
    // Gradients: max pooling's goes to the window's last NaN, as on the CPU; hardswish's is 1 at NaN.
    let grads = |what: &str, f: &dyn Fn(&Tensor) -> strata_core::Result<Tensor>| {
        let run = |t: &Tensor| {
            let leaf = t.detach().requires_grad_().unwrap();
            f(&leaf).unwrap().sum_all().unwrap().backward().unwrap();
            leaf.grad().unwrap().to_vec::<f32>().unwrap()
        };
        assert_same_values(what, &run(&x), &run(&xg), 1e-5);
    };
    grads("max_pool2d gradient", &|t| {
        strata_core::max_pool2d(&t.reshape(&[1, 4, 2, 2])?, (2, 2), (2, 2), (0, 0), (1, 1))
    });
    grads("hardswish gradient", &|t| t.hardswish());
    grads("max gradient", &|t| t.max(1, false));
    // Cross-entropy with infinite logits: NaN and ∞ where the CPU has them.
    let logits =
        Tensor::from_vec(vec![inf, 0.0, 0.0, inf, -inf, 0.0, 0.0, -inf, -inf, -inf, 1.0, 2.0], &[6, 2]).unwrap();
    let target = Tensor::from_vec(vec![0i64, 0, 0, 0, 0, 1], &[6]).unwrap();
    let ce =
        |l: &Tensor, t: &Tensor| strata_core::cross_entropy(l, t, Reduction::None).unwrap().to_vec::<f32>().unwrap();
    let (lg, tg) = (logits.to_device(dev).unwrap(), target.to_device(dev).unwrap());
    assert_same_values("cross_entropy", &ce(&logits, &target), &ce(&lg, &tg), 1e-5);
    // AMSGrad's running maximum keeps a NaN, as the CPU's does.
    let step = |device: Device| {
        let p = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap().to_device(device).unwrap();
        let s: Vec<Tensor> = (0..3).map(|_| p.zeros_like().unwrap()).collect();
        for (t, g) in [vec![nan, 1.0, -1.0], vec![0.5, nan, 2.0]].into_iter().enumerate() {
            let g = Tensor::from_vec(g, &[3]).unwrap().to_device(device).unwrap();
            let cfg = AdamStep {
                lr: 0.01,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.0,
                decoupled: false,
                step: t as u64 + 1,
            };
            p.adam_step_(&g, &s[0], &s[1], Some(&s[2]), &cfg).unwrap();
        }
        [p.to_vec::<f32>().unwrap(), s[2].to_vec::<f32>().unwrap()].concat()
    };
    assert_same_values("amsgrad", &step(Device::Cpu), &step(dev), 1e-5);
}

#[test]
fn grids_past_65535_workgroups_run_in_pieces() {
    let Some(dev) = gpu() else { return };
    // One workgroup per matrix (or per 64-column tile) along a dispatch dimension: 70,000
    // matrices, or 65,625 column tiles, were a wgpu validation error at the next read — which
    // also dropped every op recorded with it, silently (`before` below kept garbage).
    let a = rand(&[1000], 7).to_device(dev).unwrap();
    let before = a.mul_scalar(2.0).unwrap();
    let cases: [(&str, Vec<usize>, Vec<usize>); 3] = [
        ("70,000 products of 2×2 (one workgroup per element)", vec![70_000, 2, 2], vec![70_000, 2, 2]),
        ("70,000 products of 9×9 (tiled)", vec![70_000, 9, 9], vec![70_000, 9, 9]),
        ("1 × 4,200,000 (65,625 column tiles)", vec![1, 1], vec![1, 4_200_000]),
    ];
    for (what, sa, sb) in cases {
        let (x, y) = (rand(&sa, 1), rand(&sb, 2));
        let cpu = x.matmul(&y).unwrap();
        let on_gpu = x.to_device(dev).unwrap().matmul(&y.to_device(dev).unwrap()).unwrap();
        assert_close(what, &cpu, &on_gpu, 1e-5);
    }
    // A depthwise convolution over 70,000 channels: one GEMM batch per (sample, group).
    let (x, w) = (rand(&[1, 70_000, 2, 2], 3), rand(&[70_000, 1, 1, 1], 4));
    let conv = |x: &Tensor, w: &Tensor| strata_core::conv2d(x, w, None, (1, 1), (0, 0), (1, 1), 70_000).unwrap();
    assert_close(
        "depthwise conv2d, 70,000 groups",
        &conv(&x, &w),
        &conv(&x.to_device(dev).unwrap(), &w.to_device(dev).unwrap()),
        1e-5,
    );
    let doubled: Vec<f32> = a.to_vec::<f32>().unwrap().iter().map(|v| 2.0 * v).collect();
    assert_eq!(before.to_vec::<f32>().unwrap(), doubled, "work recorded before the large dispatches");
}

#[test]
fn a_convolution_past_the_kernels_32_bit_arithmetic_is_refused_not_wrong() {
    let Some(dev) = gpu() else { return };
    // Padding 2³² (with a stride that keeps the output 1×1) read as the u32 word 0: the GPU
    // convolved real pixels where the CPU sees only padding (0.108 against 0).
    let (x, w) = (rand(&[1, 1, 2, 2], 1), rand(&[1, 1, 1, 1], 2));
    let conv =
        |x: &Tensor, w: &Tensor| strata_core::conv2d(x, w, None, (1 << 40, 1 << 40), (1 << 32, 1 << 32), (1, 1), 1);
    assert_eq!(conv(&x, &w).unwrap().to_vec::<f32>().unwrap(), [0.0]);
    let e = conv(&x.to_device(dev).unwrap(), &w.to_device(dev).unwrap()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::InvalidArgument { op: "conv2d", .. }), "{text}");
    assert!(text.contains("2³¹ − 1") && text.contains("on the CPU"), "{text}");
    // An ordinary one still runs.
    let y =
        strata_core::conv2d(&x.to_device(dev).unwrap(), &w.to_device(dev).unwrap(), None, (1, 1), (1, 1), (1, 1), 1);
    assert_eq!(y.unwrap().dims(), &[1, 1, 4, 4]);
}

#[test]
fn a_shape_whose_element_count_overflows_is_an_error_on_every_device() {
    // Was a multiply-overflow panic in `full_on` (and, without overflow checks, a wrapped size).
    let huge = [1usize << 40, 1 << 40];
    let e = Tensor::full_on(&huge, 0.0, DType::F32, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("full") && e.contains("overflows"), "{e}");
    let Some(dev) = gpu() else { return };
    let e = Tensor::full_on(&huge, 0.0, DType::F32, dev).unwrap_err().to_string();
    assert!(e.contains("full") && e.contains("overflows"), "{e}");
}

#[test]
fn two_threads_share_one_device() {
    let Some(dev) = gpu() else { return };
    let threads: Vec<_> = (0..2u64)
        .map(|k| {
            std::thread::spawn(move || {
                for i in 0..20 {
                    let (a, b) = (rand(&[33, 17], 100 * k + i), rand(&[17, 29], 100 * k + i + 50));
                    let f = |a: &Tensor, b: &Tensor| a.matmul(b).unwrap().relu().unwrap().sum(&[1], false).unwrap();
                    let on_gpu = f(&a.to_device(dev).unwrap(), &b.to_device(dev).unwrap());
                    assert_close(&format!("thread {k}, step {i}"), &f(&a, &b), &on_gpu, 1e-5);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}
