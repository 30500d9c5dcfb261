//! `tcp`: a TCP connection to another system's server speaking a text protocol, shared by the
//! [`super::nats`] and [`super::redis`] clients: writes are queued and sent in one go, and
//! reads land in a buffer that a parser takes complete replies from.
//!
//! It owns the socket, its timeouts and the buffers; it leaves the protocol (what to queue, where
//! a reply ends, what a reply means) to the client that holds it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use zms::{errinput, Error, Result};

/// How long a blocking read waits before the caller checks its deadline again.
pub const READ_SLICE: Duration = Duration::from_millis(100);
/// Queued output is written once it reaches this size: large enough to batch many small
/// commands into one write, small enough that the server starts on them early.
const FLUSH_AT: usize = 32 * 1024;

/// One connection. Ranges handed out by the parser index [`Conn::slice`] until the next
/// [`Conn::fill`], which may move the unread bytes.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read; `start..end` is what the parser has not taken yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes queued and not yet written.
    out: Vec<u8>,
    /// `NATS at HOST:PORT`, for error messages.
    peer: String,
}

impl Conn {
    /// Connects to `system` ("NATS", "Redis") at `address`, with a read buffer of `buffer`
    /// bytes to start with. Reads wait at most [`READ_SLICE`], writes at most `wait`.
    ///
    /// # Errors
    /// [`Error::Input`] for an address that does not resolve or a refused connection.
    pub fn connect(system: &str, address: &str, wait: Duration, buffer: usize) -> Result<Conn> {
        let addr = address
            .to_socket_addrs()
            .map_err(|e| errinput!("bad {system} address {address}: {e}"))?
            .next()
            .ok_or_else(|| errinput!("bad {system} address {address}"))?;
        let stream = TcpStream::connect_timeout(&addr, wait).map_err(|e| {
            let server = system.to_lowercase();
            errinput!("cannot connect to {system} at {address}: {e} (is {server}-server running?)")
        })?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_SLICE))?;
        stream.set_write_timeout(Some(wait))?;
        Ok(Conn {
            stream,
            buf: vec![0; buffer],
            start: 0,
            end: 0,
            out: Vec::with_capacity(2 * FLUSH_AT),
            peer: format!("{system} at {address}"),
        })
    }

    /// `NATS at HOST:PORT`: who is at the other end, for error messages.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The output queue: append to it, then [`Conn::flush`] or [`Conn::flush_if_full`].
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// A write failure or timeout.
    pub fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes everything queued once it reaches 32 KiB, so pipelined commands go out in batches.
    ///
    /// # Errors
    /// A write failure or timeout.
    pub fn flush_if_full(&mut self) -> Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// The bytes read and not yet taken by the parser.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Where [`Conn::unread`] starts in the buffer: add it to a range within `unread()` to get
    /// one for [`Conn::slice`].
    pub fn base(&self) -> usize {
        self.start
    }

    /// Marks the first `n` unread bytes as taken.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(
            n <= self.end - self.start,
            "bug: consumed more than was read"
        );
        self.start += n;
    }

    /// The bytes of a range the parser handed out.
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// The next reply `take` finds among the bytes read, reading more until it finds one, or
    /// `None` once `deadline` passes. `take` parses [`Conn::unread`] and consumes what it uses.
    ///
    /// # Errors
    /// What `take` returns (bytes that are not the protocol), or [`Conn::fill`]'s errors.
    pub fn take_next<T>(
        &mut self,
        deadline: Instant,
        mut take: impl FnMut(&mut Conn) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        loop {
            if let Some(reply) = take(self)? {
                return Ok(Some(reply));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Reads what has arrived (waiting at most [`READ_SLICE`]), first making room: it moves the
    /// unread bytes to the front once they sit in the back half, and doubles a full buffer.
    ///
    /// # Errors
    /// [`Error::Protocol`] when the server closed the connection; a read failure.
    pub fn fill(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only a reply larger than the buffer gets here; the parser bounds how large.
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(Error::Protocol(format!(
                "{} closed the connection",
                self.peer
            ))),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A scripted server for the clients' tests: a loopback listener whose first connection,
/// its reads waiting at most 5 s, is handed to `serve` on a thread. Returns its address.
#[cfg(test)]
pub(crate) fn one_peer<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (String, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        serve(stream)
    });
    (address, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_larger_than_the_buffer_grows_it_and_a_close_names_the_peer() {
        let (address, server) = one_peer(|mut s| s.write_all(&[b'x'; 100]).unwrap());
        let mut conn = Conn::connect("Redis", &address, Duration::from_secs(5), 16).unwrap();
        server.join().unwrap();
        let err = loop {
            match conn.fill() {
                Ok(()) => {}
                Err(e) => break e.to_string(),
            }
        };
        assert!(
            err.ends_with(&format!("Redis at {address} closed the connection")),
            "{err}"
        );
        assert_eq!(conn.unread(), &[b'x'; 100][..]);
        conn.consume(40);
        assert_eq!((conn.base(), conn.slice(40..42)), (40, &b"xx"[..]));
    }
}
