//! Gradient buckets reduced while backward still runs, as PyTorch's DDP does: the parameters are
//! grouped, in reverse order of [`strata_nn::Module::parameters`] (roughly the order backward
//! finishes them), into buckets of about `bucket_cap_mb`; a bucket's reduction starts as soon as
//! backward has finished all of its parameters ([`strata_core::Tensor::backward_with_hook`]), so
//! the exchange of the output side's gradients overlaps the backward of the input side's layers.
//!
//! Buckets start strictly in order (bucket `b` after `b − 1`), on every rank alike: collectives
//! must be started in the same order everywhere, and a bucket that waits for a parameter backward
//! never reaches (an unused layer) holds the later ones back until the end of backward rather than
//! letting the ranks' orders differ. Because the combination is element by element
//! ([`super::combine_in_order`]), any bucketing gives the bits of one whole reduction.

use super::{GradBuffer, GradientReducer, PendingReduction};
use crate::error::{Error, Result};
use std::collections::HashMap;
use strata_core::Tensor;

/// The default bucket size in MiB (`bucket_cap_mb`). PyTorch's DDP uses 25 MiB for models of
/// hundreds of MiB; strata's models are most often below 1 MiB of gradient, where 25 MiB would
/// make one bucket and no overlap. At 0.25 MiB a model like the example ResNet (605 KB) is
/// reduced in three buckets, the first starting after the last two conv layers' backward.
pub const DEFAULT_BUCKET_CAP_MB: f64 = 0.25;

/// Which parameters make up each bucket, in the order the buckets are reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketPlan {
    /// Per bucket, the indices of its parameters in the model's parameter order.
    buckets: Vec<Vec<usize>>,
    /// Parameter id → its bucket.
    bucket_of: HashMap<u64, usize>,
}

impl BucketPlan {
    /// Groups `params` into buckets of about `cap_bytes`: walking them from the last to the
    /// first, each joins the open bucket, and a bucket closes once it holds `cap_bytes` or more
    /// (DDP's rule: a parameter larger than the cap makes a bucket of its own or ends one). A cap
    /// of 0 puts everything in one bucket, reduced after backward.
    pub fn new(params: &[Tensor], cap_bytes: usize) -> BucketPlan {
        let mut buckets: Vec<Vec<usize>> = vec![];
        let mut open: Vec<usize> = vec![];
        let mut bytes = 0;
        for i in (0..params.len()).rev() {
            open.push(i);
            bytes += params[i].numel() * params[i].dtype().size_in_bytes();
            if cap_bytes > 0 && bytes >= cap_bytes {
                buckets.push(std::mem::take(&mut open));
                bytes = 0;
            }
        }
        if !open.is_empty() {
            buckets.push(open);
        }
        let bucket_of =
            buckets.iter().enumerate().flat_map(|(b, ps)| ps.iter().map(move |&i| (params[i].id(), b))).collect();
        BucketPlan { buckets, bucket_of }
    }

    /// Per bucket, the indices of its parameters (in the order given to [`BucketPlan::new`]).
    pub fn buckets(&self) -> &[Vec<usize>] {
        &self.buckets
    }
}

/// One step's reduction in buckets: fed by backward's hook ([`BucketedReduction::grad_ready`]),
/// finished after backward ([`BucketedReduction::finish`]), which leaves the combined gradient in
/// every parameter's `.grad()`.
pub struct BucketedReduction<'a> {
    plan: &'a BucketPlan,
    params: &'a [Tensor],
    reducer: &'a (dyn GradientReducer + 'a),
    sizes: &'a [usize],
    /// Per bucket, its parameters backward has not finished yet.
    left: Vec<usize>,
    /// The buckets started so far (bucket `b` is `started[b]`), each with whether it completed.
    started: Vec<(Box<dyn PendingReduction + 'a>, bool)>,
    /// The first error met inside backward's hook (which cannot return one), reported by
    /// `finish`.
    error: Option<Error>,
}

impl<'a> BucketedReduction<'a> {
    /// A reduction of `params`' gradients in `plan`'s buckets over `reducer`, the ranks'
    /// micro-batches being of `sizes`.
    pub fn new(
        plan: &'a BucketPlan,
        params: &'a [Tensor],
        reducer: &'a (dyn GradientReducer + 'a),
        sizes: &'a [usize],
    ) -> BucketedReduction<'a> {
        let left = plan.buckets.iter().map(Vec::len).collect();
        BucketedReduction { plan, params, reducer, sizes, left, started: vec![], error: None }
    }

    /// Backward has finished `leaf`'s gradient: starts every bucket that is now complete (in
    /// order), and lets the ones in flight advance. Leaves that are not parameters are ignored.
    pub fn grad_ready(&mut self, leaf: &Tensor) {
        if self.error.is_some() {
            return;
        }
        if let Some(&b) = self.plan.bucket_of.get(&leaf.id()) {
            self.left[b] = self.left[b].saturating_sub(1);
        }
        if let Err(e) = self.start_complete().and_then(|()| self.progress()) {
            self.error = Some(e);
        }
    }

    /// The number of buckets started so far.
    pub fn started(&self) -> usize {
        self.started.len()
    }

    /// Starts the next buckets while they are complete.
    fn start_complete(&mut self) -> Result<()> {
        while self.started.len() < self.left.len() && self.left[self.started.len()] == 0 {
            self.start_next()?;
        }
        Ok(())
    }

    /// Reads the next bucket's gradients and starts its reduction.
    fn start_next(&mut self) -> Result<()> {
        let ps = self.bucket_params(self.started.len());
        let local = GradBuffer::read(&ps)?;
        self.started.push((self.reducer.start_bucket(local, self.sizes)?, false));
        Ok(())
    }

    /// Tests the buckets in flight in order, up to the first that is not complete (a
    /// non-blocking transport moves every pending message inside such a call; testing in order
    /// keeps whatever a transport starts on completion in bucket order on every rank).
    fn progress(&mut self) -> Result<()> {
        for (pending, done) in self.started.iter_mut().filter(|(_, done)| !done) {
            *done = pending.test()?;
            if !*done {
                break;
            }
        }
        Ok(())
    }

    fn bucket_params(&self, b: usize) -> Vec<Tensor> {
        self.plan.buckets[b].iter().map(|&i| self.params[i].clone()).collect()
    }

    /// After backward (or instead of it, on a rank with an empty micro-batch): starts the buckets
    /// not started yet (their parameters' gradients as they are, zeros where there is none),
    /// waits for all in order and sets every parameter's gradient to its combined value.
    /// Returns the bytes this rank sent and received.
    pub fn finish(mut self) -> Result<usize> {
        if let Some(e) = self.error.take() {
            // Wait for what is in flight before its buffers go (the others ranks do the same).
            for (pending, _) in self.started.drain(..) {
                let _ = pending.wait();
            }
            return Err(e);
        }
        while self.started.len() < self.left.len() {
            self.start_next()?;
        }
        let mut bytes = 0;
        let started = std::mem::take(&mut self.started);
        for (b, (pending, _)) in started.into_iter().enumerate() {
            let (combined, moved) = pending.wait()?;
            combined.write(&self.bucket_params(b))?;
            bytes += moved;
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Reduced;
    use super::*;
    use std::cell::RefCell;
    use strata_core::{DType, Generator, linear};

    /// One rank that logs when each bucket starts (by its first element count) and hands it back.
    struct Logging {
        log: RefCell<Vec<usize>>,
    }

    impl GradientReducer for Logging {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            1
        }
        fn start_bucket(&self, local: GradBuffer, _: &[usize]) -> Result<Box<dyn PendingReduction + '_>> {
            self.log.borrow_mut().push(local.f32.len());
            Ok(Box::new(Reduced(local, 0)))
        }
        fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>> {
            Ok(values.to_vec())
        }
    }

    #[test]
    fn buckets_start_while_backward_runs_and_leave_the_gradients_in_place() {
        // x: [4, 6] → Linear(w1: [5, 6], b1) → ReLU → Linear(w2: [3, 5], b2) → sum.
        let mut rng = Generator::new(1);
        let x = Tensor::randn(&[4, 6], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let params = vec![p(&[5, 6], &mut rng), p(&[5], &mut rng), p(&[3, 5], &mut rng), p(&[3], &mut rng)];
        let loss = || {
            let h = linear(&x, &params[0], Some(&params[1])).unwrap().relu().unwrap();
            linear(&h, &params[2], Some(&params[3])).unwrap().sum_all().unwrap()
        };
        loss().backward().unwrap();
        let plain: Vec<Vec<f32>> = params.iter().map(|t| t.grad().unwrap().to_vec().unwrap()).collect();
        for t in &params {
            t.zero_grad().unwrap();
        }
        // One bucket per layer: [b2, w2] (18 elements), then [b1, w1] (35).
        let plan = BucketPlan::new(&params, 40);
        assert_eq!(plan.buckets(), [vec![3, 2], vec![1, 0]]);
        let reducer = Logging { log: RefCell::new(vec![]) };
        let sizes = [4];
        let mut red = BucketedReduction::new(&plan, &params, &reducer, &sizes);
        // How many buckets had started at each of backward's reports.
        let mut at_report = vec![];
        loss()
            .backward_with_hook(|leaf| {
                red.grad_ready(leaf);
                at_report.push(red.started());
            })
            .unwrap();
        // The second layer's bucket starts once its two parameters are done, before the first
        // layer's gradients exist; the first layer's at its last parameter.
        assert_eq!(at_report, [0, 1, 1, 2]);
        assert_eq!(*reducer.log.borrow(), [18, 35]);
        assert_eq!(red.finish().unwrap(), 0);
        let after: Vec<Vec<f32>> = params.iter().map(|t| t.grad().unwrap().to_vec().unwrap()).collect();
        assert_eq!(after, plain);
    }

    /// A random f32 parameter of `shape`.
    fn p(shape: &[usize], rng: &mut Generator) -> Tensor {
        Tensor::randn(shape, 0.0, 1.0, DType::F32, rng).unwrap().requires_grad_().unwrap()
    }

    fn params(sizes: &[usize]) -> Vec<Tensor> {
        sizes.iter().map(|&n| Tensor::zeros(&[n], DType::F32)).collect()
    }

    #[test]
    fn a_bucket_waiting_for_an_unused_parameter_holds_the_later_ones_until_finish() {
        let mut rng = Generator::new(2);
        let x = Tensor::randn(&[4, 6], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        // [w1, b1, unused, w2, b2]: one bucket per parameter, b2 first.
        let params =
            vec![p(&[5, 6], &mut rng), p(&[5], &mut rng), p(&[7], &mut rng), p(&[3, 5], &mut rng), p(&[3], &mut rng)];
        let plan = BucketPlan::new(&params, 1);
        assert_eq!(plan.buckets().len(), 5);
        let reducer = Logging { log: RefCell::new(vec![]) };
        let sizes = [4];
        let mut red = BucketedReduction::new(&plan, &params, &reducer, &sizes);
        let mut at_report = vec![];
        let h = linear(&x, &params[0], Some(&params[1])).unwrap().relu().unwrap();
        linear(&h, &params[3], Some(&params[4]))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward_with_hook(|leaf| {
                red.grad_ready(leaf);
                at_report.push(red.started());
            })
            .unwrap();
        // Backward finishes w2 first: its bucket waits for b2's (bucket 0), then both start;
        // b1's and w1's wait behind the unused parameter's bucket.
        assert_eq!(at_report, [0, 2, 2, 2]);
        red.finish().unwrap();
        // Every bucket went out, in order; the unused parameter's gradient is zeros.
        assert_eq!(*reducer.log.borrow(), [3, 15, 7, 5, 30]);
        assert_eq!(params[2].grad().unwrap().to_vec::<f32>().unwrap(), vec![0.0; 7]);
    }

    proptest::proptest! {
        /// Any sizes and cap: every parameter in exactly one bucket, last to first; every bucket
        /// but the last holds the cap or more, and without its last-added parameter it held less.
        #[test]
        fn every_parameter_lands_once_in_order_and_buckets_close_at_the_cap(
            sizes in proptest::collection::vec(1usize..300, 0..12),
            cap in 0usize..2000,
        ) {
            let ps = params(&sizes);
            let plan = BucketPlan::new(&ps, cap);
            let flat: Vec<usize> = plan.buckets().iter().flatten().copied().collect();
            proptest::prop_assert_eq!(flat, (0..sizes.len()).rev().collect::<Vec<_>>());
            let bytes = |b: &[usize]| b.iter().map(|&i| sizes[i] * 4).sum::<usize>();
            let n = plan.buckets().len();
            for (bi, b) in plan.buckets().iter().enumerate() {
                proptest::prop_assert!(!b.is_empty());
                if bi + 1 < n {
                    proptest::prop_assert!(cap > 0 && bytes(b) >= cap);
                    proptest::prop_assert!(bytes(&b[..b.len() - 1]) < cap);
                }
                for &i in b {
                    proptest::prop_assert_eq!(plan.bucket_of[&ps[i].id()], bi);
                }
            }
            if cap == 0 {
                proptest::prop_assert!(n <= 1);
            }
        }
    }

    #[test]
    fn buckets_fill_from_the_last_parameter_and_close_at_the_cap() {
        // 4-byte elements: 400, 40, 4000, 40, 80 bytes.
        let ps = params(&[100, 10, 1000, 10, 20]);
        assert_eq!(BucketPlan::new(&ps, 100).buckets(), [vec![4, 3], vec![2], vec![1, 0]]);
        assert_eq!(BucketPlan::new(&ps, 1 << 20).buckets(), [vec![4, 3, 2, 1, 0]]);
        assert_eq!(BucketPlan::new(&ps, 0).buckets(), [vec![4, 3, 2, 1, 0]]);
        assert_eq!(BucketPlan::new(&ps, 1).buckets(), [vec![4], vec![3], vec![2], vec![1], vec![0]]);
        assert!(BucketPlan::new(&[], 100).buckets().is_empty());
    }
}
