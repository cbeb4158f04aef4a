//! A graph of many thousands of ops, built, differentiated and freed on a thread with a small
//! stack: freeing it must not recurse once per node (a 70,000-layer model's graph overflowed
//! the main thread's stack when it was dropped).

use strata_core::{DType, Tensor};

/// Runs `f` on a thread with a 256 KiB stack (the main thread has 8 MiB).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(256 << 10).spawn(f).unwrap().join().unwrap();
}

#[test]
fn a_deep_chain_of_ops_is_freed_without_recursion() {
    on_small_stack(|| {
        let x = Tensor::ones(&[4], DType::F32).requires_grad_().unwrap();
        let mut y = x.clone();
        for _ in 0..50_000 {
            // Each op saves its input for the backward: both the edges and the closures chain.
            y = y.mul(&y).unwrap().mul_scalar(0.5).unwrap().add_scalar(0.5).unwrap();
        }
        let loss = y.sum_all().unwrap();
        drop(y);
        // Freed here, the whole chain: the last tensor holds it.
        drop(loss);
        assert!(x.grad().is_none());
    });
}

#[test]
fn a_deep_chain_of_ops_is_differentiated_and_freed() {
    on_small_stack(|| {
        let x = Tensor::ones(&[4], DType::F64).requires_grad_().unwrap();
        let mut y = x.clone();
        for _ in 0..20_000 {
            y = y.mul_scalar(1.0).unwrap().add_scalar(0.0).unwrap();
        }
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [1.0; 4]);
    });
}
