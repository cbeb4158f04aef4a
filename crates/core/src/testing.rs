//! Helpers for tests of ops and modules, here and in the other crates: a finite-difference
//! gradient check in f64 and a closeness assertion that reports the worst element; and for the
//! parsers' fuzz tests, a byte mutator and an allocator that records the largest request.

use crate::autograd::no_grad;
use crate::device::DType;
use crate::error::Result;
use crate::rng::Generator;
use crate::tensor::Tensor;

/// A standard-normal f64 tensor.
pub fn randn64(shape: &[usize], rng: &mut Generator) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, rng).expect("f64 randn")
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` elementwise, naming the worst element when it fails.
#[track_caller]
pub fn assert_close(actual: &[f64], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if (excess > 0.0 || a.is_nan() != b.is_nan()) && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!("element {i}: got {}, expected {} (rtol {rtol}, atol {atol})", actual[i], expected[i]);
    }
}

/// Checks the analytic gradients of `f` at `inputs` (f64 tensors) against central finite
/// differences of L = Σ f(x)·w, with fixed random weights w so that errors cannot cancel.
#[track_caller]
pub fn gradcheck(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    const EPS: f64 = 1e-6;
    let leaves: Vec<Tensor> =
        inputs.iter().map(|t| t.detach().contiguous().unwrap().detach().requires_grad_().unwrap()).collect();
    let out = f(&leaves).expect("forward");
    let w = randn64(out.dims(), &mut Generator::new(0xC0FFEE));
    out.mul(&w).unwrap().sum_all().unwrap().backward().expect("backward");
    let loss_at = |xs: &[Tensor]| no_grad(|| f(xs).unwrap().mul(&w).unwrap().sum_all().unwrap().item().unwrap());
    for (which, leaf) in leaves.iter().enumerate() {
        let base = leaf.to_vec::<f64>().unwrap();
        let analytic = leaf.grad().map(|g| g.to_vec_f64()).unwrap_or_else(|| vec![0.0; base.len()]);
        let mut numeric = vec![0.0; base.len()];
        for i in 0..base.len() {
            let probe = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut xs: Vec<Tensor> = leaves.iter().map(Tensor::detach).collect();
                xs[which] = Tensor::from_vec(v, leaf.dims()).unwrap();
                loss_at(&xs)
            };
            numeric[i] = (probe(EPS) - probe(-EPS)) / (2.0 * EPS);
        }
        let result = std::panic::catch_unwind(|| assert_close(&analytic, &numeric, 1e-5, 1e-6));
        if result.is_err() {
            panic!(
                "gradcheck failed for input {which} of shape {}:\nanalytic {analytic:?}\nnumeric  {numeric:?}",
                leaf.shape()
            );
        }
    }
}

/// Tokens the mutator splices into inputs: sizes that overflow or exhaust memory, non-numbers,
/// and the punctuation and keys of the text formats (TOML, CSV), so that mutations reach past
/// the first syntax check.
const TOKENS: [&str; 24] = [
    "99999999999999999999",
    "4294967296",
    "2147483647",
    "1000000",
    "-1",
    "0",
    "1e308",
    "nan",
    "inf",
    "\"",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    "\n",
    "[[layers]]\n",
    "type = \"Linear\"",
    "in_features = 100000000",
    "out_features = 1000000",
    "kernel_size = 0",
    "\u{0}",
    "\u{ffff}",
];

/// Applies mutations to `seed`, each `(op, position, byte)`: flip a bit, set a byte, delete or
/// duplicate a run of up to 16 bytes, insert one of a dictionary of troublesome tokens, or cut
/// the input short. Positions wrap around the current length. Deterministic, so proptest can
/// shrink a failing list of mutations.
pub fn mutate(seed: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(op, pos, byte) in ops {
        let at = if v.is_empty() { 0 } else { pos % v.len() };
        let run = usize::from(byte % 16) + 1;
        match op % 6 {
            0 if !v.is_empty() => v[at] ^= 1 << (byte % 8),
            1 if !v.is_empty() => v[at] = byte,
            2 => drop(v.drain(at..(at + run).min(v.len()))),
            3 => {
                let piece = v[at..(at + run).min(v.len())].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let token = TOKENS[usize::from(byte) % TOKENS.len()].as_bytes();
                v.splice(at..at, token.iter().copied());
            }
            5 => v.truncate(at),
            _ => v.push(byte),
        }
    }
    v
}

/// A global allocator for fuzz tests (`#[global_allocator] static A: RecordingAllocator =
/// RecordingAllocator;` in the test binary): the system's, noting the largest single request
/// made on each thread, so a test can assert that no input makes a parser allocate beyond a
/// bound ([`take_largest_allocation`]).
pub struct RecordingAllocator;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while a thread is being torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

/// The largest single allocation this thread asked for since the last call (0 if none), and
/// resets it.
pub fn take_largest_allocation() -> usize {
    LARGEST.try_with(|l| l.replace(0)).unwrap_or(0)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; noting the
// size touches only a const-initialised thread-local `Cell<usize>`, which neither allocates nor
// has a destructor.
unsafe impl std::alloc::GlobalAlloc for RecordingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged (the caller upholds `alloc`'s contract).
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` through this allocator.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` through this allocator.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_reach_every_kind() {
        let seed = b"layers = [{ type = \"ReLU\" }]";
        let ops = [(0, 3, 1), (1, 5, b'x'), (2, 0, 2), (3, 7, 4), (4, 2, 18), (5, 30, 0), (6, 0, b'!')];
        let a = mutate(seed, &ops);
        assert_eq!(a, mutate(seed, &ops));
        assert_ne!(a, seed.to_vec());
        assert!(mutate(b"", &ops).len() < 64);
        assert_eq!(mutate(seed, &[(5, 4, 0)]), b"laye");
        assert!(String::from_utf8_lossy(&mutate(seed, &[(4, 0, 18)])).starts_with("type = \"Linear\""));
    }

    #[test]
    #[should_panic(expected = "gradcheck failed for input 0")]
    fn gradcheck_catches_a_wrong_gradient() {
        // x · detach(x): the analytic gradient misses the detached factor's contribution.
        let x = randn64(&[4], &mut Generator::new(1));
        gradcheck(&[x], |t| t[0].mul(&t[0].detach()));
    }
}
