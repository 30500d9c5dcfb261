//! End-to-end credit: a sender may run at most `ahead` messages past its slowest receiver.
//!
//! Every system measured here bounds its queues (the group server's per-peer high-water mark,
//! PUB/SUB's, a NATS server's slow-consumer limit) and drops or disconnects beyond them, so
//! "as fast as possible" without credit measures how fast messages are thrown away. The same
//! credit paces zms, raw libzmq and NATS, so their figures compare (Malamute's credit-based
//! flow control is the model).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use zms::{Error, Result};

/// Shared between one sender and its receiver threads.
pub struct Credit {
    /// Messages each receiver thread has taken in (the least of its members).
    received: Vec<AtomicU64>,
    ahead: u64,
    /// Set while the sender waits, so receivers signal only then.
    waiting: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Credit {
    /// Credit for `receivers` receiver threads.
    pub fn new(receivers: usize, ahead: u64) -> Credit {
        Credit {
            received: (0..receivers).map(|_| AtomicU64::new(0)).collect(),
            ahead,
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Receiver `r` has taken in `count` messages in all.
    pub fn update(&self, r: usize, count: u64) {
        if let Some(slot) = self.received.get(r) {
            slot.store(count, Ordering::SeqCst);
        }
        if self.waiting.load(Ordering::SeqCst) {
            // Taking the lock orders this wake after the sender's last check.
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }

    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Whether message `index` (from 0) may be sent now, without waiting.
    pub fn ready(&self, index: u64) -> bool {
        index < self.slowest().saturating_add(self.ahead)
    }

    /// Waits until message `index` (from 0) may be sent.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the slowest receiver makes no progress for `stall`.
    pub fn wait(&self, index: u64, stall: Duration) -> Result<()> {
        let mut slowest = self.slowest();
        if index < slowest.saturating_add(self.ahead) {
            return Ok(());
        }
        let mut last_progress = Instant::now();
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            self.waiting.store(true, Ordering::SeqCst);
            let now_slowest = self.slowest();
            if index < now_slowest.saturating_add(self.ahead) {
                self.waiting.store(false, Ordering::SeqCst);
                return Ok(());
            }
            if now_slowest > slowest {
                slowest = now_slowest;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() >= stall {
                self.waiting.store(false, Ordering::SeqCst);
                return Err(Error::Timeout(format!(
                    "the slowest receiver is stuck at {slowest} messages for {:.0} s",
                    stall.as_secs_f64()
                )));
            }
            // The timeout only bounds the wait; the receivers' notify is what wakes us.
            guard = self
                .wake
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Sets a stop flag when dropped, so receiver threads end on any return path.
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_waits_for_the_slowest_receiver() {
        let credit = Arc::new(Credit::new(2, 10));
        credit.wait(9, Duration::from_secs(1)).unwrap();
        let c = credit.clone();
        let t = std::thread::spawn(move || c.wait(15, Duration::from_secs(5)));
        credit.update(0, 100);
        credit.update(1, 6);
        t.join().unwrap().unwrap();
        assert!(credit.wait(100, Duration::from_millis(100)).is_err());
    }
}
