//! Time spent inside the pipeline's norm calls and the DiT's attention calls, for the closing
//! timing table. Per thread: a pipeline runs its calls on the thread that runs it, so pipelines
//! running concurrently (the tests) do not count each other's calls.

use candle_core::{Device, Result};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// What a timed call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every RMSNorm call (`crate::norms`).
    Norm,
    /// The DiT's softmax attention (`crate::dit::attention`), self- and cross-attention.
    Attention,
    /// The softmax inside the DiT's attention (part of [`Part::Attention`]'s time), timed only
    /// on a GPU (where each call synchronises: [`timed_on_gpu`]).
    Softmax,
}

thread_local! {
    /// (nanoseconds, calls) of each part on this thread.
    static SPENT: Cell<[(u64, u64); 3]> = const { Cell::new([(0, 0); 3]) };
}

/// Time spent inside `part`'s calls and their number on this thread since the last [`reset`].
pub fn spent(part: Part) -> (Duration, u64) {
    let (nanos, calls) = SPENT.with(Cell::get)[part as usize];
    (Duration::from_nanos(nanos), calls)
}

/// Zeroes every part's counters on this thread.
pub fn reset() {
    SPENT.with(|s| s.set([(0, 0); 3]));
}

/// Runs `f` and adds its duration to `part`'s counters. On a GPU the device is synchronised
/// before and after so that the time is the kernels', not the launches'.
pub fn timed<T>(part: Part, dev: &Device, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let sync = !dev.is_cpu();
    if sync {
        dev.synchronize()?;
    }
    let start = Instant::now();
    let out = f()?;
    if sync {
        dev.synchronize()?;
    }
    let nanos = start.elapsed().as_nanos() as u64;
    SPENT.with(|s| {
        let mut all = s.get();
        all[part as usize].0 += nanos;
        all[part as usize].1 += 1;
        s.set(all);
    });
    Ok(out)
}

/// [`timed`] on a GPU; on the CPU just `f` (a split of work that the CPU's timing would not
/// show better than the enclosing part's).
pub fn timed_on_gpu<T>(part: Part, dev: &Device, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if dev.is_cpu() {
        f()
    } else {
        timed(part, dev, f)
    }
}
