//! What each peer of a server has not read yet, in bytes, and the budgets that bound it.
//!
//! libzmq queues outgoing frames per peer and bounds them by count (`SERVER_SNDHWM`), not by
//! size: a peer that asks for a thousand pages of history and never reads would make the server
//! hold every page. So the server counts the bytes it hands libzmq for each TCP peer, and asks
//! the kernel how many of them that peer has acknowledged (`TCP_INFO`'s `bytes_acked`); the
//! difference is what is held for the peer, in libzmq's queue and the socket's send buffer. A
//! peer that stops reading closes its receive window and stops acknowledging, so its backlog
//! grows; a peer that reads keeps it near zero. The kernel is asked only when the count says a
//! peer may be over its budget, so a reading peer costs a syscall now and then.
//!
//! Whoever owns the socket decides what to refuse: a server checks [`Backlogs::check`] before a
//! request whose answer can be large, and [`Backlogs::push`] before a live push. This module
//! only counts; it sends nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A file descriptor of a peer's TCP connection, as libzmq reports it.
pub type Fd = i32;

/// How many unread bytes a server lets peers pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes one peer may leave unread before its large requests are refused and its pushes
    /// skipped. One answer always goes to a peer with nothing unread, however large.
    pub per_peer: u64,
    /// Bytes all peers together may leave unread before large requests are refused.
    pub total: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            // Four pages of history in flight (the reference client reads that far ahead),
            // with room to spare.
            per_peer: 8 << 20,
            total: 256 << 20,
        }
    }
}

/// How often the whole table may be re-read from the kernel when the total seems over budget:
/// an attacker's refused requests must not each cost a syscall per peer.
const FULL_REFRESH: Duration = Duration::from_millis(100);

/// The bytes in a ZMTP frame besides its body, at the least (a short frame's flags and size).
/// Counting the least keeps the count at or under what TCP carries, so a reading peer's
/// backlog returns to zero rather than creep up.
const FRAME_OVERHEAD: u64 = 2;

/// The unread bytes of every TCP peer a server has heard from.
#[derive(Debug)]
pub struct Backlogs {
    peers: HashMap<Vec<u8>, Peer>,
    budget: Budget,
    /// The sum of every peer's backlog as last counted.
    total: u64,
    /// Bytes a connection's peer has acknowledged so far; the kernel's, or a test's.
    acked: fn(Fd) -> Option<u64>,
    last_full_refresh: Option<Instant>,
}

#[derive(Debug)]
struct Peer {
    fd: Fd,
    /// The kernel's acknowledged bytes when the peer was first heard from: the handshake and
    /// anything before are not ours to count.
    base: u64,
    /// Bytes handed to libzmq for the peer since then.
    sent: u64,
    /// Bytes the peer acknowledged since then, as last asked.
    acked: u64,
}

impl Peer {
    fn backlog(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }
}

impl Backlogs {
    /// Counts against `budget`, asking the kernel what peers acknowledged.
    pub fn new(budget: Budget) -> Backlogs {
        Backlogs::with_acked(budget, kernel_bytes_acked)
    }

    /// Counts against `budget`, learning acknowledged bytes from `acked` (tests give their own).
    pub fn with_acked(budget: Budget, acked: fn(Fd) -> Option<u64>) -> Backlogs {
        Backlogs {
            peers: HashMap::new(),
            budget,
            total: 0,
            acked,
            last_full_refresh: None,
        }
    }

    /// Whether `route` is counted already (a server then need not look up its descriptor).
    pub fn knows(&self, route: &[u8]) -> bool {
        self.peers.contains_key(route)
    }

    /// Starts counting for `route`, whose connection is `fd`. A peer with no TCP descriptor
    /// (inproc) is not counted: nothing is held for it that its own process does not hold.
    pub fn watch(&mut self, route: &[u8], fd: Option<Fd>) {
        if self.knows(route) {
            return;
        }
        let Some(fd) = fd else { return };
        let Some(base) = (self.acked)(fd) else { return };
        let peer = Peer {
            fd,
            base,
            sent: 0,
            acked: 0,
        };
        self.peers.insert(route.to_vec(), peer);
    }

    /// Counts a frame of `bytes` handed to libzmq for `route`.
    pub fn sent(&mut self, route: &[u8], bytes: usize) {
        if let Some(peer) = self.peers.get_mut(route) {
            let bytes = bytes as u64 + FRAME_OVERHEAD;
            peer.sent += bytes;
            self.total += bytes;
        }
    }

    /// `Ok` when `route` may be sent another large answer: neither it nor all peers together
    /// are over budget (a peer with nothing unread may always have one). Otherwise the reason,
    /// for an ERROR 429.
    pub fn check(&mut self, route: &[u8], now: Instant) -> Result<(), String> {
        let per_peer = self.budget.per_peer;
        // The count only ever overstates, so the kernel is asked only when it says "over".
        if self.backlog(route) >= per_peer && self.refreshed(route) >= per_peer {
            return Err(format!(
                "{} bytes of earlier answers are still unread (the limit is {per_peer}); read them first",
                self.backlog(route)
            ));
        }
        if self.total >= self.budget.total {
            self.refresh_all(now);
            if self.total >= self.budget.total && self.backlog(route) > 0 {
                return Err(format!(
                    "this server holds {} bytes of answers its peers have not read; try again shortly",
                    self.total
                ));
            }
        }
        Ok(())
    }

    /// Whether a push of `bytes` may go to `route` (counting it if so): not when the peer is
    /// over its own budget. A skipped member repairs the gap from history once it reads again.
    pub fn push(&mut self, route: &[u8], bytes: usize) -> bool {
        let Some(peer) = self.peers.get(route) else {
            return true;
        };
        if peer.backlog() + bytes as u64 > self.budget.per_peer
            && peer.backlog() > 0
            && self.refreshed(route) + bytes as u64 > self.budget.per_peer
        {
            return false;
        }
        self.sent(route, bytes);
        true
    }

    /// Stops counting for `route` (its connection is gone).
    pub fn forget(&mut self, route: &[u8]) {
        if let Some(peer) = self.peers.remove(route) {
            self.total -= peer.backlog();
        }
    }

    /// Stops counting for every route whose connection on `router` is gone.
    pub fn forget_gone(&mut self, router: &mut zmq::Socket) {
        let gone: Vec<Vec<u8>> = self
            .peers
            .keys()
            .filter(|route| !crate::transport::peer_connected(router, route))
            .cloned()
            .collect();
        for route in gone {
            self.forget(&route);
        }
    }

    /// What `route` has not read, as last counted.
    pub fn backlog(&self, route: &[u8]) -> u64 {
        self.peers.get(route).map_or(0, Peer::backlog)
    }

    /// The sum over all peers, as last counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Asks the kernel what `route` acknowledged; returns its backlog then.
    fn refreshed(&mut self, route: &[u8]) -> u64 {
        let acked = self.acked;
        let Some(peer) = self.peers.get_mut(route) else {
            return 0;
        };
        let before = peer.backlog();
        // A descriptor that fails (closed, or reused by a connection with less behind it)
        // tells nothing new: the count stands until the route is found gone.
        if let Some(now) = acked(peer.fd) {
            peer.acked = peer.acked.max(now.saturating_sub(peer.base));
        }
        let after = peer.backlog();
        self.total = self.total - before + after;
        after
    }

    fn refresh_all(&mut self, now: Instant) {
        if self
            .last_full_refresh
            .is_some_and(|t| now.saturating_duration_since(t) < FULL_REFRESH)
        {
            return;
        }
        self.last_full_refresh = Some(now);
        let routes: Vec<Vec<u8>> = self
            .peers
            .iter()
            .filter(|(_, p)| p.backlog() > 0)
            .map(|(r, _)| r.clone())
            .collect();
        for route in routes {
            self.refreshed(&route);
        }
    }
}

/// Bytes the peer of TCP connection `fd` has acknowledged (`tcpi_bytes_acked`, Linux 4.1 and
/// later); `None` where the kernel does not say.
#[cfg(target_os = "linux")]
fn kernel_bytes_acked(fd: Fd) -> Option<u64> {
    // struct tcp_info up to tcpi_bytes_acked, a u64 at offset 120 (linux/tcp.h); the kernel
    // fills as much of the buffer as it has.
    const BYTES_ACKED: usize = 120;
    let mut info = [0u8; BYTES_ACKED + 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: the buffer and its length are valid for the call; a bad fd is an error return.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < info.len() {
        return None;
    }
    let bytes: [u8; 8] = info[BYTES_ACKED..].try_into().ok()?;
    Some(u64::from_ne_bytes(bytes))
}

#[cfg(not(target_os = "linux"))]
fn kernel_bytes_acked(_fd: Fd) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// What the test's one connection (fd 7) has acknowledged; only the test that reads it
    /// writes it, since the tests run in parallel.
    static ACKED: AtomicU64 = AtomicU64::new(0);

    fn acked(fd: Fd) -> Option<u64> {
        (fd == 7).then(|| ACKED.load(Ordering::SeqCst))
    }

    #[test]
    fn a_peer_that_stops_reading_is_refused_until_it_reads() {
        ACKED.store(1000, Ordering::SeqCst);
        let now = Instant::now();
        let budget = Budget {
            per_peer: 100,
            total: 1000,
        };
        let mut backlogs = Backlogs::with_acked(budget, acked);
        backlogs.watch(b"a", Some(7));
        backlogs.watch(b"inproc", None);
        assert!(!backlogs.knows(b"inproc"), "no descriptor, nothing counted");
        assert!(backlogs.check(b"a", now).is_ok());
        backlogs.sent(b"a", 500);
        assert_eq!(backlogs.backlog(b"a"), 502);
        assert!(
            backlogs.check(b"a", now).is_err(),
            "one large answer unread"
        );
        assert!(!backlogs.push(b"a", 10), "pushes skipped too");
        ACKED.store(1000 + 450, Ordering::SeqCst);
        assert!(backlogs.check(b"a", now).is_ok(), "it read most of it");
        assert_eq!(backlogs.total(), 52);
        assert!(backlogs.push(b"a", 10));
        backlogs.forget(b"a");
        assert_eq!(backlogs.total(), 0);
        assert!(
            backlogs.check(b"a", now).is_ok(),
            "an unknown peer is not held back"
        );
    }

    #[test]
    fn the_total_budget_holds_back_every_peer_with_something_unread() {
        let now = Instant::now();
        let budget = Budget {
            per_peer: 1000,
            total: 1500,
        };
        let mut backlogs = Backlogs::with_acked(budget, |_| Some(0));
        for route in [&b"a"[..], b"b", b"c"] {
            backlogs.watch(route, Some(1));
        }
        backlogs.sent(b"a", 800);
        backlogs.sent(b"b", 800);
        assert!(backlogs.check(b"a", now).is_err(), "over the total");
        assert!(backlogs.check(b"c", now).is_ok(), "c has nothing unread");
    }
}
