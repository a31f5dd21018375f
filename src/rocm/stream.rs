//! Streams and timing events of one device, destroyed on drop.

use super::runtime::hip;
use super::sys::{HipEvent, HipStream};
use crate::error::op_error;
use candle_core::Result;

/// A stream on one device, destroyed on drop.
pub struct RocmStream {
    device: usize,
    raw: HipStream,
}

// SAFETY: a hipStream_t may be used from any thread; HIP serialises work submitted to it.
unsafe impl Send for RocmStream {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for RocmStream {}

impl std::fmt::Debug for RocmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocmStream(device {}, {:p})", self.device, self.raw)
    }
}

impl RocmStream {
    /// A new (blocking) stream on device `ordinal` (`RocmStream::new` takes the device).
    pub(super) fn on(ordinal: usize) -> Result<Self> {
        let h = hip()?;
        h.set_device(ordinal)?;
        let mut raw: HipStream = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the device is current.
        h.check("hipStreamCreate", unsafe { (h.hipStreamCreate)(&mut raw) })?;
        Ok(Self {
            device: ordinal,
            raw,
        })
    }

    /// The raw `hipStream_t`, for passing to other HIP code or the raw launchers.
    pub fn raw(&self) -> HipStream {
        self.raw
    }

    /// The device ordinal the stream belongs to.
    pub fn device_ordinal(&self) -> usize {
        self.device
    }

    /// `Ok` when the stream belongs to device `ordinal`, else op `op`'s error naming both.
    pub(super) fn check_device(&self, op: &str, ordinal: usize) -> Result<()> {
        if self.device == ordinal {
            return Ok(());
        }
        Err(op_error(
            op,
            "stream",
            format!("on device {ordinal}"),
            format!("device {}", self.device),
        ))
    }

    /// Waits for the work queued on this stream.
    ///
    /// # Errors
    /// The HIP error of `hipStreamSynchronize`, e.g. a failed kernel.
    pub fn synchronize(&self) -> Result<()> {
        let h = hip()?;
        // SAFETY: `raw` is a live stream created by this struct.
        h.check("hipStreamSynchronize", unsafe {
            (h.hipStreamSynchronize)(self.raw)
        })
    }
}

impl Drop for RocmStream {
    fn drop(&mut self) {
        if let Ok(h) = hip() {
            // SAFETY: `raw` was created by hipStreamCreate and is destroyed once; HIP waits
            // for queued work before releasing it.
            let _ = unsafe { (h.hipStreamDestroy)(self.raw) };
        }
    }
}

/// A timing event.
pub struct RocmEvent {
    raw: HipEvent,
}

// SAFETY: hipEvent_t handles may be used from any thread.
unsafe impl Send for RocmEvent {}
// SAFETY: as above.
unsafe impl Sync for RocmEvent {}

impl std::fmt::Debug for RocmEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocmEvent({:p})", self.raw)
    }
}

impl RocmEvent {
    /// A new event on device `ordinal` (`RocmEvent::new` takes the device).
    pub(super) fn on(ordinal: usize) -> Result<Self> {
        let h = hip()?;
        h.set_device(ordinal)?;
        let mut raw: HipEvent = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        h.check("hipEventCreate", unsafe { (h.hipEventCreate)(&mut raw) })?;
        Ok(Self { raw })
    }

    /// Records the event on `stream`.
    ///
    /// # Errors
    /// The HIP error of `hipEventRecord`.
    pub fn record(&self, stream: &RocmStream) -> Result<()> {
        let h = hip()?;
        // SAFETY: both handles are live.
        h.check("hipEventRecord", unsafe {
            (h.hipEventRecord)(self.raw, stream.raw)
        })
    }

    /// Milliseconds between `self` (recorded earlier) and `end`, after waiting for `end`.
    ///
    /// # Errors
    /// The HIP errors of `hipEventSynchronize` / `hipEventElapsedTime`.
    pub fn elapsed_ms(&self, end: &RocmEvent) -> Result<f32> {
        let h = hip()?;
        // SAFETY: live event.
        h.check("hipEventSynchronize", unsafe {
            (h.hipEventSynchronize)(end.raw)
        })?;
        let mut ms = 0f32;
        // SAFETY: valid out-pointer, live events.
        h.check("hipEventElapsedTime", unsafe {
            (h.hipEventElapsedTime)(&mut ms, self.raw, end.raw)
        })?;
        Ok(ms)
    }
}

impl Drop for RocmEvent {
    fn drop(&mut self) {
        if let Ok(h) = hip() {
            // SAFETY: created by hipEventCreate, destroyed once.
            let _ = unsafe { (h.hipEventDestroy)(self.raw) };
        }
    }
}
