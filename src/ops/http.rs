//! The operators' HTTP endpoint (`--metrics HOST:PORT`): `GET /metrics` in the Prometheus
//! text format, `GET /healthz` 200 `ok` or 503 with one line saying why not.
//!
//! tiny_http serves it on threads of its own, apart from the server's poll loop, which it
//! never waits on: it only reads the registry's atomics and the shared [`Health`].

use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tiny_http::{Header, Method, Response, Server};
use tracing::{debug, warn};

use super::Health;
use crate::{errinput, Result};

/// Anything that holds a registry to show.
pub trait Exposed: Send + Sync + 'static {
    /// The metrics to show.
    fn registry(&self) -> &Registry;
}

impl Exposed for super::metrics::GroupMetrics {
    fn registry(&self) -> &Registry {
        super::metrics::GroupMetrics::registry(self)
    }
}

impl Exposed for super::metrics::DirectoryMetrics {
    fn registry(&self) -> &Registry {
        super::metrics::DirectoryMetrics::registry(self)
    }
}

/// A running endpoint; dropping it stops it.
pub struct Endpoint {
    server: Arc<Server>,
    address: String,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Listens on `bind` (`HOST:PORT`, port 0 for any) and serves until dropped.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start(bind: &str, metrics: Arc<dyn Exposed>, health: Health) -> Result<Endpoint> {
        let server =
            Server::http(bind).map_err(|e| errinput!("cannot serve metrics on {bind}: {e}"))?;
        let address = match server.server_addr().to_ip() {
            Some(addr) => addr.to_string(),
            None => bind.to_string(),
        };
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let (status, body, content_type) =
                        answer(request.method(), request.url(), metrics.as_ref(), &health);
                    let header = Header::from_bytes("Content-Type", content_type)
                        .expect("bug: a static header is valid");
                    let response = Response::from_string(body)
                        .with_status_code(status)
                        .with_header(header);
                    if let Err(err) = request.respond(response) {
                        debug!(%err, "metrics answer not sent");
                    }
                }
            })?;
        Ok(Endpoint {
            server,
            address,
            thread: Some(thread),
        })
    }

    /// The bound `HOST:PORT`, with the real port.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("metrics thread panicked");
            }
        }
    }
}

/// The status, body and content type answering `method` `url`.
fn answer(
    method: &Method,
    url: &str,
    metrics: &dyn Exposed,
    health: &Health,
) -> (u16, String, &'static str) {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if *method != Method::Get && *method != Method::Head {
        return (405, "only GET\n".into(), PLAIN);
    }
    match url.split('?').next().unwrap_or_default() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_text::encode(&mut text, metrics.registry()) {
                Ok(()) => (200, text, prometheus_text::CONTENT_TYPE),
                Err(_) => (500, "cannot encode the metrics\n".into(), PLAIN),
            }
        }
        "/healthz" => match health.problem() {
            None => (200, "ok\n".into(), PLAIN),
            Some(why) => (503, format!("{why}\n"), PLAIN),
        },
        _ => (404, "not found: try /metrics or /healthz\n".into(), PLAIN),
    }
}
