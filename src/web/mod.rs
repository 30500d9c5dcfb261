//! `zms web`: a gateway that serves the web client (one page, embedded in the binary) and
//! bridges each browser, over a WebSocket of JSON frames (PROTOCOL.md, "Part 2"), to a
//! [`Session`] as the user it signed in as.
//!
//! Threads, not async: an accept loop ([`Gateway::run`]) and one thread per connection, capped
//! ([`Limits`]), as the servers' blocking poll loops are. The files are [`http`]'s, the
//! browser protocol [`wire`]'s (pure), the per-connection loop [`bridge`]'s. The gateway owns
//! no state of its own: a restart loses nothing, since each browser keeps its last seq per
//! group and its unsent messages, and resumes.

pub mod bridge;
pub mod http;
pub mod secure;
pub mod tls;
pub mod wire;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use bridge::Stream;

use crate::client::{Session, Timeouts};
use crate::shutdown::ServerHandle;
use crate::{errinput, Result};

pub use secure::WebSecurity;

/// Per-connection and total limits; README's limits table lists them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections at once (HTTP and WebSocket); past it, 503.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_address: usize,
    /// Bytes of one WebSocket message; past it the connection closes with 1009.
    pub max_frame: usize,
    /// Frames a second a browser may send (a token bucket); past it, LIMITED errors.
    pub rate: u32,
    /// Frames a browser may send at once; once it is this far behind the rate, it is cut off.
    pub burst: u32,
    /// Time from connecting to a request head, and from the upgrade to `hello`.
    pub sign_in: Duration,
    /// Bytes queued for a browser that does not read; past it, it is cut off.
    pub max_backlog: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_per_address: 64,
            // A text of MAX_TEXT bytes, each escaped as \uXXXX at worst, and the JSON around it.
            max_frame: 6 * crate::protocol::MAX_TEXT + 4096,
            rate: 20,
            burst: 40,
            sign_in: Duration::from_secs(10),
            max_backlog: 8 * 1024 * 1024,
        }
    }
}

/// What `zms web` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen: `HOST:PORT` (port 0 for any).
    pub bind: String,
    /// The message servers' endpoints (`tcp://…`).
    pub directories: Vec<String>,
    /// Origins allowed besides the gateway's own, e.g. `https://chat.example.org`.
    pub origins: Vec<String>,
    pub limits: Limits,
    /// Secure mode: how browsers prove who they are (see [`secure`]).
    pub secure: Option<WebSecurity>,
    /// HTTPS and WSS: the certificate chain and key, PEM files.
    pub tls: Option<tls::TlsFiles>,
}

/// What every connection thread reads.
pub struct Shared {
    ctx: zmq::Context,
    directories: Vec<String>,
    origins: Vec<String>,
    limits: Limits,
    secure: Option<WebSecurity>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    /// A session as `user`: in secure mode only with the user's passphrase.
    fn session_for(&self, user: &str, passphrase: Option<&str>) -> Result<Session> {
        let session = Session::new(
            &self.ctx,
            self.directories.clone(),
            user,
            Timeouts::default(),
        )?;
        match &self.secure {
            None => Ok(session),
            Some(security) => security.sign_in(session, user, passphrase),
        }
    }
}

/// A bound gateway, not yet serving.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    address: String,
}

impl Gateway {
    /// Binds the listening socket.
    ///
    /// # Errors
    /// An address that cannot be bound.
    pub fn bind(ctx: &zmq::Context, config: Config) -> Result<Gateway> {
        let listener = TcpListener::bind(&config.bind)
            .map_err(|e| errinput!("cannot serve the web client on {}: {e}", config.bind))?;
        let address = listener.local_addr()?.to_string();
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        Ok(Gateway {
            listener,
            address,
            shared: Arc::new(Shared {
                ctx: ctx.clone(),
                directories: config.directories,
                origins: config.origins,
                limits: config.limits,
                secure: config.secure,
                tls,
            }),
        })
    }

    /// The `HOST:PORT` it listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The page's address for a browser.
    pub fn url(&self) -> String {
        let scheme = match self.shared.tls {
            Some(_) => "https",
            None => "http",
        };
        format!("{scheme}://{}/", self.address)
    }

    /// Serves on a thread of its own until the handle is dropped or stopped.
    ///
    /// # Errors
    /// When the thread cannot be made.
    pub fn spawn(self) -> Result<ServerHandle> {
        let ctx = self.shared.ctx.clone();
        let endpoint = format!("tcp://{}", self.address);
        ServerHandle::spawn(&ctx, "web", endpoint, move |control| self.run(control))
    }

    /// Accepts connections until `control` is readable, then stops every connection (their
    /// browsers reconnect to the next gateway) and returns.
    ///
    /// # Errors
    /// A failing poll or listener.
    pub fn run(self, control: zmq::Socket) -> Result<()> {
        self.listener.set_nonblocking(true)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        loop {
            let mut items = [
                control.as_poll_item(zmq::POLLIN),
                zmq::PollItem::from_fd(self.listener.as_raw_fd(), zmq::POLLIN),
            ];
            crate::transport::poll(&mut items, Duration::from_secs(1))?;
            if items[0].is_readable() {
                break;
            }
            threads.retain(|t| !t.is_finished());
            loop {
                let (stream, peer) = match self.listener.accept() {
                    Ok(s) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // Out of descriptors, say: the next poll tries again.
                        warn!(err = %e, "cannot accept a browser connection");
                        break;
                    }
                };
                let limits = &self.shared.limits;
                let refusal = {
                    let mut counts = per_address.lock().expect("bug: lock poisoned");
                    let mine = counts.entry(peer.ip()).or_default();
                    if threads.len() >= limits.max_connections {
                        Some("the gateway is full; try again later")
                    } else if *mine >= limits.max_per_address {
                        Some("too many connections from your address")
                    } else {
                        *mine += 1;
                        None
                    }
                };
                if let Some(text) = refusal {
                    refuse_now(stream, text);
                    continue;
                }
                let shared = Arc::clone(&self.shared);
                let (stopping, per_address) = (Arc::clone(&stopping), Arc::clone(&per_address));
                let spawned =
                    std::thread::Builder::new()
                        .name("web-conn".into())
                        .spawn(move || {
                            if let Err(err) = serve(stream, &shared, &stopping) {
                                debug!(%err, "browser connection ended");
                            }
                            let mut counts = per_address.lock().expect("bug: lock poisoned");
                            if let Some(n) = counts.get_mut(&peer.ip()) {
                                *n -= 1;
                                if *n == 0 {
                                    counts.remove(&peer.ip());
                                }
                            }
                        });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(err) => warn!(%err, "cannot start a connection thread"),
                }
            }
        }
        stopping.store(true, Ordering::Relaxed);
        for thread in threads {
            let _ = thread.join();
        }
        info!("web gateway stopped");
        Ok(())
    }
}

/// A 503 to a connection over a cap, written without waiting on a slow peer.
fn refuse_now(mut stream: TcpStream, text: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(&http::refusal(503, "Service Unavailable", text));
}

/// One connection: TLS first when configured, then [`serve_http`].
fn serve(stream: TcpStream, shared: &Shared, stopping: &AtomicBool) -> Result<()> {
    stream.set_nonblocking(false)?;
    // The TLS handshake and the request head share the sign-in deadline.
    stream.set_read_timeout(Some(shared.limits.sign_in))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    match &shared.tls {
        None => serve_http(stream, shared, stopping),
        Some(config) => {
            let connection = rustls::ServerConnection::new(Arc::clone(config))
                .map_err(|e| errinput!("tls: {e}"))?;
            serve_http(
                rustls::StreamOwned::new(connection, stream),
                shared,
                stopping,
            )
        }
    }
}

/// One request: its head, then a file, a refusal or a WebSocket.
fn serve_http<S: bridge::Stream>(
    mut stream: S,
    shared: &Shared,
    stopping: &AtomicBool,
) -> Result<()> {
    let limits = &shared.limits;
    let by = Instant::now() + limits.sign_in;
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        match http::parse_head(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() >= http::MAX_HEAD => {
                let refusal = http::refusal(
                    431,
                    "Request Header Fields Too Large",
                    "request head too large",
                );
                return finish(stream, &refusal);
            }
            Ok(None) => {}
            Err(why) => return finish(stream, &http::refusal(400, "Bad Request", &why)),
        }
        let Some(left) = by.checked_duration_since(Instant::now()) else {
            return Ok(());
        };
        stream
            .tcp()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    match http::route(&head, &shared.origins) {
        http::Route::File { content_type, body } => {
            finish(stream, &http::response(200, "OK", content_type, body))
        }
        http::Route::Refuse {
            status,
            reason,
            text,
        } => {
            debug!(status, path = %head.path, "refused a browser request");
            finish(stream, &http::refusal(status, reason, &text))
        }
        http::Route::Upgrade => {
            let fd = stream.tcp().as_raw_fd();
            let replay = http::Replay::new(buf, stream);
            let config = shared.limits.websocket_config();
            let ws = match tungstenite::accept_with_config(replay, Some(config)) {
                Ok(ws) => ws,
                Err(err) => {
                    debug!(%err, "WebSocket handshake failed");
                    return Ok(());
                }
            };
            ws.get_ref().tcp().set_nonblocking(true)?;
            bridge::Bridge::new(ws, fd, shared).run(stopping)
        }
    }
}

/// Writes a whole response and ends the stream (with TLS, its close_notify too).
fn finish<S: bridge::Stream>(mut stream: S, response: &[u8]) -> Result<()> {
    stream.write_all(response)?;
    stream.end();
    stream.flush()?;
    Ok(())
}
