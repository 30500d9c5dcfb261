//! Every TCP connection of a server's ROUTER, from accept to close, and which to close early:
//! one over a cap (per IP address, or in all), or one that never sent a request. Both servers
//! use it. [`Peers`] is the pure decision, fed libzmq's monitor events and the time;
//! [`Connections`] is the I/O around it: the monitor socket, and closing what [`Peers`] names.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::backlog::Fd;
use crate::{transport, Result};

/// Caps on a server's connections, whatever they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCaps {
    /// Connections in all: kept well under the descriptor limit, past which libzmq fails
    /// every accept.
    pub total: usize,
    /// Connections from one IP address.
    pub per_address: usize,
    /// How long a connection may stay without sending a request.
    pub idle: Duration,
}

impl Default for PeerCaps {
    fn default() -> PeerCaps {
        PeerCaps {
            total: 20_000,
            per_address: 1_000,
            idle: Duration::from_secs(30),
        }
    }
}

impl PeerCaps {
    /// These caps with the total kept to three quarters of `fd_limit`, the process's limit on
    /// open descriptors: refusing a connection takes an accept, and an accept past the limit
    /// fails without taking the connection off the queue, so libzmq would retry it at once,
    /// forever.
    pub fn within(self, fd_limit: Option<u64>) -> PeerCaps {
        let room = fd_limit.map_or(usize::MAX, |n| {
            usize::try_from(n / 4 * 3).unwrap_or(usize::MAX)
        });
        PeerCaps {
            total: self.total.min(room),
            ..self
        }
    }
}

#[derive(Debug)]
struct Peer {
    address: String,
    accepted: Instant,
    /// It has sent a request: it is a user, not an idle descriptor.
    active: bool,
}

/// The open connections, by descriptor.
#[derive(Debug, Default)]
pub struct Peers {
    caps: Option<PeerCaps>,
    by_fd: HashMap<Fd, Peer>,
    per_address: HashMap<String, usize>,
}

impl Peers {
    /// Tracks connections against `caps`.
    pub fn new(caps: PeerCaps) -> Peers {
        Peers {
            caps: Some(caps),
            ..Peers::default()
        }
    }

    /// A connection was accepted from `address`: `false` when it is over a cap and must be
    /// closed at once.
    pub fn accepted(&mut self, fd: Fd, address: String, now: Instant) -> bool {
        let Some(caps) = self.caps else { return true };
        // A descriptor reused before its close was reported: the old connection is gone.
        self.closed(fd);
        let from_address = self.per_address.get(&address).copied().unwrap_or(0);
        if self.by_fd.len() >= caps.total || from_address >= caps.per_address {
            return false;
        }
        *self.per_address.entry(address.clone()).or_default() += 1;
        let peer = Peer {
            address,
            accepted: now,
            active: false,
        };
        self.by_fd.insert(fd, peer);
        true
    }

    /// The connection `fd` sent a request.
    pub fn active(&mut self, fd: Fd) {
        if let Some(peer) = self.by_fd.get_mut(&fd) {
            peer.active = true;
        }
    }

    /// The connection `fd` was closed.
    pub fn closed(&mut self, fd: Fd) {
        if let Some(peer) = self.by_fd.remove(&fd) {
            if let Some(n) = self.per_address.get_mut(&peer.address) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&peer.address);
                }
            }
        }
    }

    /// Connections that have sent nothing for the idle time since they were accepted.
    pub fn idle(&self, now: Instant) -> Vec<Fd> {
        let Some(caps) = self.caps else {
            return Vec::new();
        };
        self.by_fd
            .iter()
            .filter(|(_, p)| !p.active && now.saturating_duration_since(p.accepted) >= caps.idle)
            .map(|(fd, _)| *fd)
            .collect()
    }

    /// Open connections counted.
    pub fn len(&self) -> usize {
        self.by_fd.len()
    }

    /// Whether none are open.
    pub fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
    }
}

/// A ROUTER's connections as libzmq reports them, with those over a cap or idle closed.
pub struct Connections {
    /// libzmq's reports of the ROUTER's connections opening and closing.
    monitor: zmq::Socket,
    peers: Peers,
}

impl Connections {
    /// Watches `router`'s connections against `caps`, kept within the descriptor limit (see
    /// [`PeerCaps::within`]).
    ///
    /// # Errors
    /// A libzmq failure.
    pub fn watch(ctx: &zmq::Context, router: &zmq::Socket, caps: PeerCaps) -> Result<Connections> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = format!("inproc://zms-monitor-{n}");
        let events = zmq::SocketEvent::ACCEPTED.to_raw()
            | zmq::SocketEvent::CLOSED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        router.monitor(&endpoint, i32::from(events))?;
        let monitor = transport::socket(ctx, zmq::PAIR)?;
        monitor.connect(&endpoint)?;
        Ok(Connections {
            monitor,
            peers: Peers::new(caps.within(transport::fd_limit())),
        })
    }

    /// Stops `router`'s reports; to be called before `router` is closed. libzmq sends them
    /// from its I/O thread with a blocking send, so a report sent once this end is closed
    /// would stall every socket of the context.
    pub fn stop(&self, router: &mut zmq::Socket) {
        // SAFETY: the socket is live; a null endpoint is libzmq's way to stop monitoring.
        unsafe {
            zmq_sys::zmq_socket_monitor(router.as_mut_ptr(), std::ptr::null(), 0);
        }
    }

    /// Holds connections to `caps` from now on (kept within the descriptor limit).
    pub fn set_caps(&mut self, caps: PeerCaps) {
        self.peers.caps = Some(caps.within(transport::fd_limit()));
    }

    /// The socket to poll: readable when there are reports to take in.
    pub fn socket(&self) -> &zmq::Socket {
        &self.monitor
    }

    /// The connection `fd` sent a request: it is not idle.
    pub fn active(&mut self, fd: Fd) {
        self.peers.active(fd);
    }

    /// Open connections counted.
    pub fn count(&self) -> usize {
        self.peers.len()
    }

    /// Takes in libzmq's reports of connections opened and closed, then closes those over a
    /// cap (after all reports are in, so a descriptor closed and reused meanwhile is not hit).
    pub fn take_reports(&mut self) {
        let mut refused = HashSet::new();
        let now = Instant::now();
        while let Ok(event) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some((event, fd)) = monitor_event(&event) else {
                continue;
            };
            if event == zmq::SocketEvent::ACCEPTED.to_raw() {
                let address = transport::fd_peer_address(fd).unwrap_or_default();
                if !self.peers.accepted(fd, address.clone(), now) {
                    debug!(fd, %address, "connection over a cap; closing it");
                    refused.insert(fd);
                }
            } else {
                self.peers.closed(fd);
                refused.remove(&fd);
            }
        }
        for fd in refused {
            transport::shut_down(fd);
        }
    }

    /// Closes the connections that have sent no request within the idle time, after taking
    /// in the latest reports (so no descriptor reused meanwhile is taken for idle).
    pub fn close_idle(&mut self) {
        self.take_reports();
        for fd in self.peers.idle(Instant::now()) {
            debug!(fd, "connection idle since it was accepted; closing it");
            transport::shut_down(fd);
        }
    }
}

/// A monitor report: its event and value (a descriptor for those asked for).
fn monitor_event(frames: &[Vec<u8>]) -> Option<(u16, i32)> {
    let head = frames.first()?;
    let event = u16::from_ne_bytes(head.get(0..2)?.try_into().ok()?);
    let value = u32::from_ne_bytes(head.get(2..6)?.try_into().ok()?);
    Some((event, value as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_address_and_in_all_and_idle_ones_are_named() {
        let t0 = Instant::now();
        let caps = PeerCaps {
            total: 3,
            per_address: 2,
            idle: Duration::from_secs(10),
        };
        let mut peers = Peers::new(caps);
        assert!(peers.accepted(10, "1.1.1.1".into(), t0));
        assert!(peers.accepted(11, "1.1.1.1".into(), t0));
        assert!(
            !peers.accepted(12, "1.1.1.1".into(), t0),
            "a third from one address"
        );
        assert!(peers.accepted(13, "2.2.2.2".into(), t0));
        assert!(!peers.accepted(14, "3.3.3.3".into(), t0), "a fourth in all");
        peers.closed(10);
        assert!(peers.accepted(15, "1.1.1.1".into(), t0));
        peers.active(11);
        let later = t0 + Duration::from_secs(10);
        let mut idle = peers.idle(later);
        idle.sort();
        assert_eq!(idle, [13, 15]);
        assert_eq!(peers.len(), 3);
        assert_eq!(caps.within(Some(1024)).total, 3);
        assert_eq!(PeerCaps::default().within(Some(1024)).total, 768);
    }
}
