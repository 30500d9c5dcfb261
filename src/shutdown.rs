//! Running a server on its own thread, and stopping it.
//!
//! A server's poll loop watches an inproc PAIR "control" socket beside its network sockets;
//! [`ServerHandle`] holds the other end. Dropping or stopping the handle sends STOP and joins
//! the thread, so the binary (Ctrl-C) and the tests stop servers the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::{transport, Error, Result};

/// A server running on its own thread.
pub struct ServerHandle {
    /// Our end of the control pipe; any message on it means STOP.
    control: zmq::Socket,
    /// The server's thread; `None` once joined.
    thread: Option<JoinHandle<Result<()>>>,
    /// Where the server listens (`tcp://…`), for tests and for printing.
    endpoint: String,
}

impl ServerHandle {
    /// Runs `serve(control)` on a new thread named `name`; `serve` must return when its
    /// control socket becomes readable.
    ///
    /// # Errors
    /// When the control pipe or the thread cannot be made.
    pub fn spawn<F>(
        ctx: &zmq::Context,
        name: &str,
        endpoint: String,
        serve: F,
    ) -> Result<ServerHandle>
    where
        F: FnOnce(zmq::Socket) -> Result<()> + Send + 'static,
    {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pipe = format!(
            "inproc://zms-control-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let server_end = transport::socket(ctx, zmq::PAIR)?;
        server_end.bind(&pipe)?;
        let control = transport::socket(ctx, zmq::PAIR)?;
        control.connect(&pipe)?;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || serve(server_end))?;
        Ok(ServerHandle {
            control,
            thread: Some(thread),
            endpoint,
        })
    }

    /// The endpoint the server is bound to, e.g. `tcp://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `HOST:PORT` the server is bound to.
    pub fn address(&self) -> String {
        transport::address(&self.endpoint)
    }

    /// Whether the server's thread is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the server and waits for it.
    ///
    /// # Errors
    /// The error the server's loop ended with, if any.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // If the thread already ended the send may fail; joining tells why.
        let _ = self.control.send("STOP", zmq::DONTWAIT);
        thread
            .join()
            .unwrap_or_else(|_| Err(Error::Input("server thread panicked".into())))
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Err(err) = self.stop_inner() {
            tracing::error!(%err, "server ended with an error");
        }
    }
}
