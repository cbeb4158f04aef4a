//! Counter-based random numbers (Philox 4x32-10, the generator cuRAND and PyTorch's CUDA backend use).
//!
//! Why counter-based: the value at position `i` of stream `s` under seed `k` is a pure function
//! `philox(k, s, i)`, so filling a tensor in parallel chunks, on any number of threads, gives
//! bit-identical results, and a generator's whole state is three integers that a checkpoint can
//! store and restore exactly.

/// Philox 4x32 with 10 rounds: maps a 128-bit counter and a 64-bit key to 128 random bits.
fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [((p1 >> 32) as u32) ^ c[1] ^ k[0], p1 as u32, ((p0 >> 32) as u32) ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// A reproducible random generator: `(seed, stream)` name a sequence, `offset` is the position in
/// it (counted in 32-bit words).
///
/// Two generators with the same seed and stream produce the same numbers; generators with
/// different streams are independent. `fork` derives a child stream without touching the parent's
/// position, which is how per-tensor or per-worker sequences are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generator {
    seed: u64,
    stream: u64,
    offset: u64,
}

impl Generator {
    /// A generator at the start of stream 0 of `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { seed, stream: 0, offset: 0 }
    }

    /// A generator at an exact position: what [`Generator::state`] returned.
    pub fn from_state(seed: u64, stream: u64, offset: u64) -> Self {
        Self { seed, stream, offset }
    }

    /// `(seed, stream, offset)`: everything needed to continue this sequence later.
    pub fn state(&self) -> (u64, u64, u64) {
        (self.seed, self.stream, self.offset)
    }

    /// A child generator on its own stream, derived from this one's seed, stream and `index`.
    pub fn fork(&self, index: u64) -> Self {
        let mixed = philox4x32_10(
            [index as u32, (index >> 32) as u32, self.stream as u32, (self.stream >> 32) as u32],
            [self.seed as u32 ^ 0x5EED, (self.seed >> 32) as u32],
        );
        Self { seed: self.seed, stream: (mixed[0] as u64) | ((mixed[1] as u64) << 32), offset: 0 }
    }

    /// The 32-bit word at absolute position `index` of this generator's stream.
    #[inline]
    fn word_at(&self, index: u64) -> u32 {
        let block = index / 4;
        let out = philox4x32_10(
            [block as u32, (block >> 32) as u32, self.stream as u32, (self.stream >> 32) as u32],
            [self.seed as u32, (self.seed >> 32) as u32],
        );
        out[(index % 4) as usize]
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let w = self.word_at(self.offset);
        self.offset += 1;
        w
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let lo = self.next_u32() as u64;
        let hi = self.next_u32() as u64;
        lo | (hi << 32)
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias.
    ///
    /// # Panics
    /// When `n` is 0 (an empty range, as `rand`'s `gen_range` panics on one).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Generator::below needs n > 0");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Fills `out` with uniform values in `[low, high)`, two words per value, the same whatever
    /// the thread count: value `i` depends only on the generator's position plus `2 i`.
    pub fn fill_uniform(&mut self, out: &mut [f64], low: f64, high: f64) {
        let base = self.offset;
        let g = self.clone();
        let fill = |start: usize, chunk: &mut [f64]| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let i = base + 2 * (start + j) as u64;
                let bits = (g.word_at(i) as u64) | ((g.word_at(i + 1) as u64) << 32);
                let u = (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                *v = low + (high - low) * u;
            }
        };
        par_chunks(out, fill);
        self.offset += 2 * out.len() as u64;
    }

    /// Fills `out` with normal values of the given mean and standard deviation (Box–Muller on
    /// counter-addressed pairs, so it too is independent of the thread count).
    pub fn fill_normal(&mut self, out: &mut [f64], mean: f64, std: f64) {
        let base = self.offset;
        let g = self.clone();
        let fill = |start: usize, chunk: &mut [f64]| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let i = base + 4 * (start + j) as u64;
                let u1 = ((g.word_at(i) as u64) | ((g.word_at(i + 1) as u64) << 32)) >> 11;
                let u2 = ((g.word_at(i + 2) as u64) | ((g.word_at(i + 3) as u64) << 32)) >> 11;
                // u1 in (0, 1] so the log is finite.
                let u1 = (u1 as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
                let u2 = u2 as f64 * (1.0 / (1u64 << 53) as f64);
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                *v = mean + std * z;
            }
        };
        par_chunks(out, fill);
        self.offset += 4 * out.len() as u64;
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// The seed the default generator starts from. Unlike PyTorch, strata is reproducible by
/// default: two runs of the same program initialise the same weights unless told otherwise.
pub const DEFAULT_SEED: u64 = 0;

static DEFAULT_GENERATOR: std::sync::Mutex<Generator> = std::sync::Mutex::new(Generator::new(DEFAULT_SEED));

thread_local! {
    /// This thread's own default generator while a [`with_seed`] scope runs on it; `None`
    /// elsewhere (the process-wide one is used).
    static SCOPED: std::cell::RefCell<Option<Generator>> = const { std::cell::RefCell::new(None) };
}

/// Reseeds the process-wide default generator that layer constructors draw their initial
/// weights from (PyTorch's `torch.manual_seed`). Inside a [`with_seed`] scope it reseeds that
/// scope's generator instead, on this thread alone.
pub fn manual_seed(seed: u64) {
    let reseeded = SCOPED.with(|s| match s.borrow_mut().as_mut() {
        Some(g) => {
            *g = Generator::new(seed);
            true
        }
        None => false,
    });
    if !reseeded {
        *DEFAULT_GENERATOR.lock().unwrap_or_else(|e| e.into_inner()) = Generator::new(seed);
    }
}

/// Runs `f` with a default generator of its own, seeded with `seed`, on this thread: every
/// draw `f` makes through the default generator on this thread (layer constructors, `build`,
/// dropout seeds) comes from `Generator::new(seed)`, as after `manual_seed(seed)`, while other
/// threads' draws neither see it nor move it, and the process-wide generator is left as it was.
///
/// `manual_seed` then `build` is a race when other threads draw at the same time (tests run in
/// parallel, a program building models on several threads): another thread's draws between
/// the two change the weights. `with_seed(seed, || spec.build())` cannot be disturbed. It is
/// PyTorch's `with torch.random.fork_rng(): torch.manual_seed(seed); ...`, without touching
/// the global state. Scopes nest; each restores the one around it, also when `f` panics.
pub fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    /// Puts the enclosing scope's generator back, however `f` ends.
    struct Restore(Option<Generator>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            SCOPED.with(|s| *s.borrow_mut() = outer);
        }
    }
    let _restore = Restore(SCOPED.with(|s| s.replace(Some(Generator::new(seed)))));
    f()
}

/// Runs `f` with the default generator: this thread's [`with_seed`] scope's where one is open,
/// else the process-wide one.
pub fn with_default_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    // Taken out while `f` runs (and put back after, also on a panic), so that `f` may open a
    // scope of its own without the RefCell being borrowed twice.
    struct PutBack(Option<Generator>);
    impl Drop for PutBack {
        fn drop(&mut self) {
            if let Some(g) = self.0.take() {
                SCOPED.with(|s| *s.borrow_mut() = Some(g));
            }
        }
    }
    let mut scoped = PutBack(SCOPED.with(|s| s.borrow_mut().take()));
    match scoped.0.as_mut() {
        Some(g) => f(g),
        None => f(&mut DEFAULT_GENERATOR.lock().unwrap_or_else(|e| e.into_inner())),
    }
}

/// Runs `f(start_index, chunk)` over fixed-size chunks, in parallel when the slice is large.
/// Chunk boundaries do not depend on the thread count.
fn par_chunks(out: &mut [f64], f: impl Fn(usize, &mut [f64]) + Sync) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    if out.len() <= CHUNK {
        f(0, out);
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| f(c * CHUNK, chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_scope_is_this_threads_alone() {
        let draw = || with_default_generator(|g| g.next_u64());
        let expected = Generator::new(11).next_u64();
        // Another thread drawing from the process-wide generator all along cannot move it.
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    draw();
                }
            });
            for _ in 0..200 {
                assert_eq!(with_seed(11, draw), expected);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        // Nested scopes restore the outer one; manual_seed inside reseeds the scope only.
        with_seed(11, || {
            let first = draw();
            assert_eq!(first, expected);
            assert_eq!(with_seed(11, draw), expected);
            let second = draw();
            assert_ne!(second, first, "the outer scope went on from where it was");
            manual_seed(11);
            assert_eq!(draw(), expected);
        });
        // A panic inside a scope still restores the state around it.
        let caught = std::panic::catch_unwind(|| with_seed(3, || panic!("inside")));
        assert!(caught.is_err());
        assert!(SCOPED.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn philox_known_answer() {
        // Random123's known-answer test for philox4x32_10 with zero counter and key.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        // ... and with all-ones inputs.
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
    }

    #[test]
    fn same_seed_same_numbers_different_stream_different() {
        let mut a = Generator::new(7);
        let mut b = Generator::new(7);
        let xs: Vec<u32> = (0..10).map(|_| a.next_u32()).collect();
        let ys: Vec<u32> = (0..10).map(|_| b.next_u32()).collect();
        assert_eq!(xs, ys);
        let mut c = Generator::new(7).fork(1);
        let zs: Vec<u32> = (0..10).map(|_| c.next_u32()).collect();
        assert_ne!(xs, zs);
    }

    #[test]
    fn parallel_fill_matches_thread_count_one() {
        let mut big = vec![0.0; 100_000];
        Generator::new(3).fill_normal(&mut big, 0.0, 1.0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut one = vec![0.0; 100_000];
        pool.install(|| Generator::new(3).fill_normal(&mut one, 0.0, 1.0));
        assert_eq!(big, one);
        let mean = big.iter().sum::<f64>() / big.len() as f64;
        let var = big.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / big.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
    }

    #[test]
    fn uniform_in_range_and_permutation_is_a_permutation() {
        let mut u = vec![0.0; 10_000];
        Generator::new(1).fill_uniform(&mut u, -2.0, 3.0);
        assert!(u.iter().all(|&x| (-2.0..3.0).contains(&x)));
        let mut p = Generator::new(1).permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
