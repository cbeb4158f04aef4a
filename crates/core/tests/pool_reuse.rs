//! Ops take their output buffers from the buffer pool (`storage`), where a buffer holds whatever
//! its last user left: each such op must write every element, or zero its buffer first where it
//! adds into it. Each case here runs an op forward and backward on a pool without spare buffers
//! of its sizes, then again after the pool has been given NaN-filled buffers of every size the
//! case makes; the values and gradients must be the same bits. An element an op forgot to write
//! comes out NaN the second time.

use strata_core::{
    DType, Element, Generator, PaddingMode, Tensor, adaptive_avg_pool2d, avg_pool2d, cat, embedding, layer_norm,
    max_pool2d, pad2d,
};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, &mut Generator::new(seed)).unwrap()
}

/// The op's output and the gradients of its float inputs (of the output's sum weighted by a
/// fixed random tensor), as vectors.
fn run(inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> strata_core::Result<Tensor>) -> Vec<Vec<f32>> {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| if t.dtype() == DType::F32 { t.detach().requires_grad_().unwrap() } else { t.clone() })
        .collect();
    let y = f(&leaves).unwrap();
    let w = rand(y.dims(), 99);
    y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y.to_vec::<f32>().unwrap()];
    out.extend(leaves.iter().filter_map(|l| l.grad()).map(|g| g.to_vec::<f32>().unwrap()));
    out
}

/// Gives the pool NaN buffers of each length the first run made (its output, its gradients,
/// and the weight tensor's), several of each so that every buffer the second run takes is one.
fn poison(lens: impl IntoIterator<Item = usize>) {
    for len in lens {
        for _ in 0..8 {
            f32::give_buffer(vec![f32::NAN; len]);
        }
    }
}

fn check(what: &str, inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> strata_core::Result<Tensor>) {
    let clean = run(inputs, f);
    assert!(clean.iter().flatten().all(|v| v.is_finite()), "{what}: the first run is finite");
    poison(clean.iter().map(Vec::len));
    let again = run(inputs, f);
    // Compared as bits: a NaN where a value should be fails, and so does any other difference.
    let bits = |r: &[Vec<f32>]| r.iter().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(bits(&clean), bits(&again), "{what}: the same values from pooled (NaN-filled) buffers");
}

// Sizes are chosen per case and unlike other tests' (the pool is shared by the test threads),
// and large enough for the ops' parallel paths.

#[test]
fn pooling_writes_or_zeroes_every_element() {
    let x = rand(&[3, 5, 23, 21], 1);
    check("max_pool2d", std::slice::from_ref(&x), &|t| max_pool2d(&t[0], (3, 3), (2, 2), (1, 1), (1, 1)));
    check("avg_pool2d", std::slice::from_ref(&x), &|t| avg_pool2d(&t[0], (3, 2), (2, 2), (1, 0), false));
    check("adaptive_avg_pool2d", std::slice::from_ref(&x), &|t| adaptive_avg_pool2d(&t[0], (1, 1)));
    check("adaptive_avg_pool2d 4×3", std::slice::from_ref(&x), &|t| adaptive_avg_pool2d(&t[0], (4, 3)));
}

#[test]
fn padding_zeroes_what_it_does_not_copy() {
    let x = rand(&[2, 7, 19, 17], 2);
    for mode in [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate] {
        check(&format!("pad2d {mode:?}"), std::slice::from_ref(&x), &|t| pad2d(&t[0], [2, 1, 3, 2], mode));
    }
}

#[test]
fn softmax_layer_norm_and_activations_write_every_element() {
    let x = rand(&[6, 37, 29], 3);
    check("softmax", std::slice::from_ref(&x), &|t| t[0].softmax(1));
    check("log_softmax", std::slice::from_ref(&x), &|t| t[0].log_softmax(-1));
    check("gelu", std::slice::from_ref(&x), &|t| t[0].gelu());
    check("elu", std::slice::from_ref(&x), &|t| t[0].elu(0.7));
    let (g, b) = (rand(&[29], 4), rand(&[29], 5));
    check("layer_norm", &[x, g, b], &|t| layer_norm(&t[0], &[29], Some(&t[1]), Some(&t[2]), 1e-5));
}

#[test]
fn embedding_and_cat_gradients_start_from_zero() {
    // Rows 3 and 40 are never looked up: their gradient must be exactly zero.
    let idx: Vec<i64> = (0..300).map(|i| [0, 7, 12, 7, 55][i % 5]).collect();
    let idx = Tensor::from_vec(idx, &[300]).unwrap();
    let w = rand(&[61, 19], 6);
    check("embedding", &[w, idx], &|t| embedding(&t[1], &t[0]));
    let (a, b) = (rand(&[13, 41, 3], 7), rand(&[13, 23, 3], 8));
    check("cat", &[a, b], &|t| cat(&[&t[0], &t[1]], 1));
}
