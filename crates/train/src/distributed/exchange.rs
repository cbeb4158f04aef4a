//! One bucket's fixed-order all-reduce in flight, on MPI's non-blocking collectives
//! (`MPI_Ialltoallv`, the in-order combination, `MPI_Iallgatherv`; the algorithm is in the
//! [parent module's docs](super)), so that backward goes on while the bucket is exchanged.
//!
//! **Why raw MPI calls, and the crate's one `unsafe`.** rsmpi's safe non-blocking collectives tie
//! every buffer to a scope closure that must complete all requests before it returns; a bucket's
//! exchange starts inside backward's hook and ends after backward, and its received chunks must be
//! read between the two collectives, which the scoped API does not hand back. So an [`Exchange`]
//! owns its buffers (heap vectors, never resized while a request is in flight) and its request,
//! and calls the C functions itself. MPI's default error handler on the world communicator aborts
//! the run on an error, so the return codes are not inspected (as rsmpi does not).
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::parallel::{Float, coefficients, combine_in_order, micro_batch_ranges};
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::traits::Equivalence;
use std::os::raw::c_int;

/// Where an [`Exchange`] stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// `MPI_Ialltoallv` in flight: chunk `r` of every rank going to rank `r`.
    Scatter,
    /// `MPI_Iallgatherv` in flight: every combined chunk going to every rank.
    Gather,
    /// Complete: `data` holds the combined gradient.
    Done,
}

/// One element type's part of a bucket, being all-reduced in rank order.
pub(super) struct Exchange<T> {
    /// The communicator of the scatter, and that of the gather.
    comms: (ffi::MPI_Comm, ffi::MPI_Comm),
    datatype: ffi::MPI_Datatype,
    rank: usize,
    /// This rank's gradient (sent in the scatter), then the combined one (the gather's target).
    data: Vec<T>,
    /// Chunk `r` of `data`: `counts[r]` elements at `displs[r]`.
    counts: Vec<c_int>,
    displs: Vec<c_int>,
    /// The scatter's target: every rank's copy of this rank's chunk, rank 0's first.
    received: Vec<T>,
    received_counts: Vec<c_int>,
    received_displs: Vec<c_int>,
    /// This rank's chunk combined: the gather's source.
    combined: Vec<T>,
    coeffs: Vec<f64>,
    divisor: f64,
    /// Whether rank `k`'s micro-batch has samples (an empty one is left out of the sum).
    present: Vec<bool>,
    request: ffi::MPI_Request,
    phase: Phase,
}

/// A count or an offset as MPI's `int`.
fn count(v: usize) -> Result<c_int> {
    c_int::try_from(v)
        .map_err(|_| Error::InvalidOption(format!("a gradient chunk of {v} elements is beyond MPI's 32-bit counts")))
}

impl<T: Float + Equivalence + Default> Exchange<T> {
    /// Starts all-reducing `data` (this rank's part) over `comms` (the scatter's, the gather's;
    /// the same `n` ranks), the ranks' micro-batches being of `sizes`.
    pub(super) fn start(
        comms: (ffi::MPI_Comm, ffi::MPI_Comm),
        rank: usize,
        n: usize,
        data: Vec<T>,
        sizes: &[usize],
    ) -> Result<Exchange<T>> {
        let chunks = micro_batch_ranges(data.len(), n);
        let mine = chunks[rank].len();
        let (coeffs, divisor) = coefficients(sizes);
        let mut ex = Exchange {
            comms,
            datatype: T::equivalent_datatype().as_raw(),
            rank,
            counts: chunks.iter().map(|r| count(r.len())).collect::<Result<_>>()?,
            displs: chunks.iter().map(|r| count(r.start)).collect::<Result<_>>()?,
            received: vec![T::default(); mine * n],
            received_counts: vec![count(mine)?; n],
            received_displs: (0..n).map(|k| count(k * mine)).collect::<Result<_>>()?,
            combined: vec![T::default(); mine],
            coeffs,
            divisor,
            present: sizes.iter().map(|&s| s > 0).collect(),
            data,
            request: unsafe { ffi::RSMPI_REQUEST_NULL },
            phase: Phase::Done,
        };
        if n == 1 || ex.data.is_empty() {
            // Nothing to exchange: this rank's part is the sum (weighted like any other).
            if n == 1 {
                let own = ex.data.clone();
                combine_in_order(&[Some(&own[..])], &ex.coeffs, ex.divisor, &mut ex.data);
            }
            return Ok(ex);
        }
        // SAFETY: every pointer is into a vector `ex` owns and does not resize or touch until the
        // request completes (`advance`, `wait`, or `Drop`, which waits); moving `ex` moves the
        // vectors' handles, not their heap buffers. The counts and offsets match the buffers'
        // lengths (micro_batch_ranges covers `data` exactly; `received` holds n chunks).
        unsafe {
            ffi::MPI_Ialltoallv(
                ex.data.as_ptr().cast(),
                ex.counts.as_ptr(),
                ex.displs.as_ptr(),
                ex.datatype,
                ex.received.as_mut_ptr().cast(),
                ex.received_counts.as_ptr(),
                ex.received_displs.as_ptr(),
                ex.datatype,
                ex.comms.0,
                &mut ex.request,
            );
        }
        ex.phase = Phase::Scatter;
        Ok(ex)
    }

    /// Completes the current phase when `wait`, or tests it; on the scatter's completion,
    /// combines this rank's chunk and starts the gather. Returns whether everything is done.
    fn advance(&mut self, wait: bool) -> bool {
        loop {
            if self.phase == Phase::Done {
                return true;
            }
            let mut complete: c_int = 0;
            // SAFETY: `request` is the live request of the current phase (started by this
            // value); MPI sets it to MPI_REQUEST_NULL once it completes.
            unsafe {
                if wait {
                    ffi::MPI_Wait(&mut self.request, ffi::RSMPI_STATUS_IGNORE);
                    complete = 1;
                } else {
                    ffi::MPI_Test(&mut self.request, &mut complete, ffi::RSMPI_STATUS_IGNORE);
                }
            }
            if complete == 0 {
                return false;
            }
            match self.phase {
                Phase::Scatter => {
                    let mine = self.combined.len();
                    let parts: Vec<Option<&[T]>> = (0..self.present.len())
                        .map(|k| self.present[k].then(|| &self.received[k * mine..(k + 1) * mine]))
                        .collect();
                    combine_in_order(&parts, &self.coeffs, self.divisor, &mut self.combined);
                    // SAFETY: as in `start`; the scatter is complete, so `data` may be written
                    // again (the gather's target) and `combined` is read by the gather only.
                    unsafe {
                        ffi::MPI_Iallgatherv(
                            self.combined.as_ptr().cast(),
                            self.counts[self.rank],
                            self.datatype,
                            self.data.as_mut_ptr().cast(),
                            self.counts.as_ptr(),
                            self.displs.as_ptr(),
                            self.datatype,
                            self.comms.1,
                            &mut self.request,
                        );
                    }
                    self.phase = Phase::Gather;
                }
                Phase::Gather => self.phase = Phase::Done,
                Phase::Done => {}
            }
        }
    }

    /// Lets the exchange advance without blocking (Open MPI moves a non-blocking collective's
    /// messages inside MPI calls); `true` once complete.
    pub(super) fn test(&mut self) -> bool {
        self.advance(false)
    }

    /// Waits for the exchange: the combined gradient and the bytes this rank sent and received.
    pub(super) fn wait(mut self) -> (Vec<T>, usize) {
        self.advance(true);
        let (n, len, mine) = (self.present.len(), self.data.len(), self.combined.len());
        // Sent and received: all but my chunk out and N − 1 copies of it in, then the reverse.
        let bytes = if n == 1 { 0 } else { 2 * std::mem::size_of::<T>() * ((len - mine) + (n - 1) * mine) };
        (std::mem::take(&mut self.data), bytes)
    }
}

impl<T> Drop for Exchange<T> {
    /// A request still in flight (an error elsewhere ended the step early; the run then stops,
    /// every rank with it) is waited for before its buffers are freed: MPI may still use them.
    fn drop(&mut self) {
        if self.phase != Phase::Done {
            // SAFETY: the request of the current phase, still live.
            unsafe {
                ffi::MPI_Wait(&mut self.request, ffi::RSMPI_STATUS_IGNORE);
            }
        }
    }
}
