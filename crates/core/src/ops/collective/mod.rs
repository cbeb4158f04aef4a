//! Collectives inside the autograd graph: values summed over the processes of a data-parallel
//! run, as an op whose backward is a collective too. What synchronised batch normalisation
//! ([`crate::sync_batch_norm`]) is built on; the engine knows no transport, only the
//! [`Collective`] trait a transport (MPI, threads in a test) implements.
//!
//! **Installed per thread.** A collective is installed on the thread that runs the model
//! ([`install_collective`], until its guard drops), and the ops find it there, in forward and in
//! backward (which runs on the thread that calls `backward`). So a transport's handle need not
//! cross threads (an MPI communicator cannot), and a layer need not hold it.
//!
//! **The weighting.** In a data-parallel step, process k's loss is the mean over its own
//! micro-batch, `L_k`, and the step's loss is `L = Σ_j w_j·L_j` with `w_j = n_j / B` (its share
//! of the batch); the parameters' gradients are combined as `Σ_k w_k·(process k's gradient)`.
//! A value `S = Σ_j s_j` summed over the processes feeds every process's loss, so
//! `dL/dS = Σ_j w_j·dL_j/dS`, the same on every process. For the combination to give `dL/dθ`,
//! process k's backward must hand `s_k` the gradient `dL/dS / w_k`: [`all_reduce_sum`]'s
//! backward does exactly that (and is the plain gradient when there is one process, `w = 1`).

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::{DType, Device};
use std::cell::RefCell;
use std::rc::Rc;

/// A group of processes (or threads) that sum values together, the same way on every member.
///
/// Every member must call [`Collective::sum`] the same number of times, in the same order, with
/// buffers of the same length: it is a collective (`MPI_Allreduce`-like) and blocks until all
/// have called it.
pub trait Collective {
    /// This member's index, `0..size`.
    fn rank(&self) -> usize;
    /// The number of members.
    fn size(&self) -> usize;
    /// Every member's `values` (the same length on every member), concatenated in rank order,
    /// on every member: the one thing a transport implements.
    ///
    /// # Errors
    /// The transport failed; the message names what and where.
    fn all_gather(&self, values: &[f64]) -> std::result::Result<Vec<f64>, String>;

    /// Replaces `values` with their element-wise sum over the members, added in rank order
    /// (rank 0 first) from [`Collective::all_gather`], so every member gets the same bits
    /// (`MPI_Allreduce` adds in an order of its choosing).
    ///
    /// # Errors
    /// The transport failed, or the members' lengths differ.
    fn sum(&self, values: &mut [f64]) -> std::result::Result<(), String> {
        let all = self.all_gather(values)?;
        if all.len() != values.len() * self.size() {
            return Err(format!(
                "{} values gathered from {} members for {} each: the members' lengths differ",
                all.len(),
                self.size(),
                values.len()
            ));
        }
        values.fill(0.0);
        for part in all.chunks(values.len().max(1)) {
            values.iter_mut().zip(part).for_each(|(v, x)| *v += x);
        }
        Ok(())
    }
}

thread_local! {
    /// The collectives installed on this thread, innermost last (`None`: suspended).
    static INSTALLED: RefCell<Vec<Option<Rc<dyn Collective>>>> = const { RefCell::new(Vec::new()) };
}

/// Installs `collective` on this thread until the returned guard drops: the synchronised ops
/// ([`all_reduce_sum`], [`crate::sync_batch_norm`]) called on this thread sum over it.
#[must_use = "the collective is uninstalled when the guard drops"]
pub fn install_collective(collective: Rc<dyn Collective>) -> CollectiveGuard {
    INSTALLED.with(|c| c.borrow_mut().push(Some(collective)));
    CollectiveGuard { _not_send: std::marker::PhantomData }
}

/// Suspends the installed collective on this thread until the returned guard drops: what runs
/// meanwhile is this process's alone (a divergence report re-running one rank's micro-batch),
/// and synchronised BatchNorm uses this process's own statistics.
#[must_use = "the collective is back when the guard drops"]
pub fn suspend_collective() -> CollectiveGuard {
    INSTALLED.with(|c| c.borrow_mut().push(None));
    CollectiveGuard { _not_send: std::marker::PhantomData }
}

/// The collective installed on this thread, if any (and not suspended).
pub fn installed_collective() -> Option<Rc<dyn Collective>> {
    INSTALLED.with(|c| c.borrow().last().cloned().flatten())
}

/// Uninstalls its collective when dropped (see [`install_collective`]).
pub struct CollectiveGuard {
    // Dropped on the thread it was made on.
    _not_send: std::marker::PhantomData<Rc<()>>,
}

impl Drop for CollectiveGuard {
    fn drop(&mut self) {
        INSTALLED.with(|c| c.borrow_mut().pop());
    }
}

/// The installed collective, or an error naming `op`.
pub(crate) fn require(op: &'static str) -> Result<Rc<dyn Collective>> {
    installed_collective().ok_or_else(|| Error::InvalidArgument {
        op,
        message: "no collective is installed on this thread (strata_core::install_collective); a synchronised op runs inside a data-parallel step, forward and backward".into(),
    })
}

/// The sum of `values` over `collective`'s members, outside any graph (counts, sizes).
///
/// # Errors
/// The transport failed.
pub fn collective_sum(collective: &dyn Collective, values: &mut [f64]) -> Result<()> {
    collective.sum(values).map_err(|message| Error::InvalidArgument { op: "all_reduce", message })
}

/// The element-wise sum of `t` over the installed collective's members (see
/// [`install_collective`]), with the data-parallel weighting in
/// backward (see the module docs): forward `S = Σ_j t_j`; backward, with `g_j` each member's
/// gradient of `S`, this member's `t` gets `(Σ_j weight_j·g_j) / weight`.
///
/// `weight` is this member's share of the step's loss (`n_k / B`); it must be positive. The
/// values travel as f64 through the host, whatever `t`'s device and type (the tensors summed
/// here are per-channel statistics: a few hundred values).
///
/// # Shapes
/// - `t`: any shape, the same on every member
/// - output: the shape of `t`
///
/// # Errors
/// `weight` is not positive and finite, no collective is installed (in forward or in
/// backward), or the transport failed.
pub fn all_reduce_sum(t: &Tensor, weight: f64) -> Result<Tensor> {
    if !(weight > 0.0 && weight.is_finite()) {
        crate::bail_arg!("all_reduce", "weight must be positive and finite, got {weight}");
    }
    let collective = require("all_reduce")?;
    let (dtype, device, shape) = (t.dtype(), t.device(), t.shape().clone());
    let mut values = t.to_device(Device::Cpu)?.to_vec_f64();
    collective_sum(collective.as_ref(), &mut values)?;
    let out = on(values, &shape.0, dtype, device)?;
    Ok(Tensor::from_op(out.buffer(), shape.clone(), "all_reduce", &[t], move |g| {
        let collective = require("all_reduce (backward)")?;
        let mut values: Vec<f64> = g.to_device(Device::Cpu)?.to_vec_f64().iter().map(|v| v * weight).collect();
        collective_sum(collective.as_ref(), &mut values)?;
        values.iter_mut().for_each(|v| *v /= weight);
        Ok(vec![Some(on(values, &shape.0, dtype, device)?)])
    }))
}

/// `values` as a contiguous tensor of `dims`, `dtype` on `device`.
fn on(values: Vec<f64>, dims: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
    Tensor::from_vec(values, dims)?.to_dtype(dtype)?.to_device(device)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Collective, all_reduce_sum, install_collective};
    use crate::testing::assert_close;
    use crate::{DType, Tensor};
    use std::rc::Rc;
    use std::sync::{Arc, Barrier, Mutex};

    /// `size` threads as a collective: each `sum` deposits its values, waits for all, and adds
    /// the deposits in rank order.
    pub(crate) struct Threads {
        rank: usize,
        size: usize,
        shared: Arc<(Barrier, Mutex<Vec<Vec<f64>>>)>,
    }

    impl Threads {
        /// One member per thread: move each into its thread and install it there
        /// ([`Threads::install`]).
        pub(crate) fn group(size: usize) -> Vec<Threads> {
            let shared = Arc::new((Barrier::new(size), Mutex::new(vec![vec![]; size])));
            (0..size).map(|rank| Threads { rank, size, shared: Arc::clone(&shared) }).collect()
        }

        pub(crate) fn install(self) -> super::CollectiveGuard {
            install_collective(Rc::new(self))
        }

        /// `f(k)` on `size` threads, thread k with member k of one group installed; the
        /// results in rank order.
        pub(crate) fn run<T: Send>(size: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
            let f = &f;
            std::thread::scope(|s| {
                let handles: Vec<_> = Threads::group(size)
                    .into_iter()
                    .enumerate()
                    .map(|(k, member)| {
                        s.spawn(move || {
                            let _installed = member.install();
                            f(k)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        }
    }

    impl Collective for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_gather(&self, values: &[f64]) -> Result<Vec<f64>, String> {
            let (barrier, slots) = &*self.shared;
            slots.lock().unwrap()[self.rank] = values.to_vec();
            barrier.wait();
            let all = slots.lock().unwrap().concat();
            // Nobody deposits the next call's values before everyone has read these.
            barrier.wait();
            Ok(all)
        }
    }

    #[test]
    fn sums_forward_and_weights_backward() {
        // Two members with weights 1/4 and 3/4; loss_k = Σ (c_k ⊙ S), so g_k = c_k and member
        // k's t gets (¼·c_0 + ¾·c_1) / w_k.
        let weights = [0.25, 0.75];
        let c = [[1.0, 2.0], [10.0, -4.0]];
        let results = Threads::run(2, |k| {
            let t = Tensor::from_vec(vec![k as f32 + 1.0, 3.0], &[2]).unwrap().requires_grad_().unwrap();
            let s = all_reduce_sum(&t, weights[k]).unwrap();
            let ck = Tensor::from_vec(c[k].to_vec(), &[2]).unwrap().to_dtype(DType::F32).unwrap();
            s.mul(&ck).unwrap().sum_all().unwrap().backward().unwrap();
            (s.to_vec_f64(), t.grad().unwrap().to_vec_f64())
        });
        let mixed = [0.25 * 1.0 + 0.75 * 10.0, 0.25 * 2.0 + 0.75 * -4.0];
        for (k, (s, g)) in results.iter().enumerate() {
            assert_eq!(s, &[3.0, 6.0]);
            assert_close(g, &[mixed[0] / weights[k], mixed[1] / weights[k]], 1e-6, 0.0);
        }
        let t = Tensor::from_vec(vec![1.0f64], &[1]).unwrap();
        assert!(all_reduce_sum(&t, 1.0).unwrap_err().to_string().contains("no collective is installed"));
        let _alone = Threads::group(1).pop().unwrap().install();
        assert!(all_reduce_sum(&t, 0.0).unwrap_err().to_string().contains("weight must be positive"));
        assert_eq!(all_reduce_sum(&t, 1.0).unwrap().to_vec_f64(), [1.0]);
        {
            let _suspended = super::suspend_collective();
            assert!(all_reduce_sum(&t, 1.0).unwrap_err().to_string().contains("no collective is installed"));
        }
        assert_eq!(all_reduce_sum(&t, 1.0).unwrap().to_vec_f64(), [1.0]);
    }
}
