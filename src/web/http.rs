//! The HTTP side of the gateway: one request per connection. It reads the request head,
//! serves the page's three embedded files, and hands a WebSocket upgrade on `/ws` to
//! [`super::bridge`] after checking its Origin. What a browser said after the head is kept
//! ([`Replay`]) for the WebSocket to read.

use std::io::{self, Read, Write};

/// The page, its style and its script: in the binary, so nothing is built or fetched.
const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_CSS: &str = include_str!("../../web/app.css");
const APP_JS: &str = include_str!("../../web/app.js");

/// Bytes a request head may take; a browser's is well under 4 KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// What the gateway makes of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A file to send: status, content type and body.
    File {
        content_type: &'static str,
        body: &'static str,
    },
    /// A WebSocket upgrade on `/ws` from an allowed origin.
    Upgrade,
    /// An answer with nothing to serve: status, reason, one line of text.
    Refuse {
        status: u16,
        reason: &'static str,
        text: String,
    },
}

/// A parsed request head: method, path and the headers the gateway reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub upgrade: Option<String>,
    /// Bytes the head took, `\r\n\r\n` included.
    pub len: usize,
}

/// Parses a request head from `buf`: `Ok(None)` while incomplete.
///
/// # Errors
/// A line that is not HTTP, as a reason for a 400.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP request: {e}")),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_string())
    };
    Ok(Some(Head {
        method: request.method.unwrap_or_default().to_string(),
        path: request.path.unwrap_or_default().to_string(),
        host: header("host"),
        origin: header("origin"),
        upgrade: header("upgrade"),
        len,
    }))
}

/// Where a request goes. `allowed` lists extra origins (`https://chat.example.org`) besides
/// the gateway's own, which is the request's `Host` under http or https.
pub fn route(head: &Head, allowed: &[String]) -> Route {
    let path = head.path.split('?').next().unwrap_or_default();
    if head.method != "GET" {
        return Route::Refuse {
            status: 405,
            reason: "Method Not Allowed",
            text: "only GET is served".into(),
        };
    }
    match path {
        "/" | "/index.html" => Route::File {
            content_type: "text/html; charset=utf-8",
            body: INDEX_HTML,
        },
        "/app.css" => Route::File {
            content_type: "text/css; charset=utf-8",
            body: APP_CSS,
        },
        "/app.js" => Route::File {
            content_type: "text/javascript; charset=utf-8",
            body: APP_JS,
        },
        "/healthz" => Route::File {
            content_type: "text/plain; charset=utf-8",
            body: "ok\n",
        },
        "/ws" => {
            let websocket = head
                .upgrade
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
            if !websocket {
                return Route::Refuse {
                    status: 400,
                    reason: "Bad Request",
                    text: "/ws speaks WebSocket only".into(),
                };
            }
            match origin_allowed(head, allowed) {
                true => Route::Upgrade,
                false => Route::Refuse {
                    status: 403,
                    reason: "Forbidden",
                    text: "this page's origin may not use the gateway".into(),
                },
            }
        }
        _ => Route::Refuse {
            status: 404,
            reason: "Not Found",
            text: "not found".into(),
        },
    }
}

/// Cross-site WebSocket hijacking: a page from another site can open a WebSocket to the
/// gateway, and browsers send its Origin. Only the gateway's own origin and those listed are
/// let in. A request without Origin is not from a browser page, so it cannot ride on a
/// victim's browser; it is let in (as any program could connect to the servers directly).
fn origin_allowed(head: &Head, allowed: &[String]) -> bool {
    let Some(origin) = &head.origin else {
        return true;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let Some(host) = &head.host else {
        return false;
    };
    origin == &format!("http://{host}") || origin == &format!("https://{host}")
}

/// The bytes of a whole response with `Connection: close`.
pub fn response(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    // The page shows network text only through textContent; the policy is a second wall:
    // scripts and styles from this origin only, no inline script, no framing.
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
         connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n\
         \r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(body.as_bytes());
    head
}

/// A refusal as a whole response.
pub fn refusal(status: u16, reason: &str, text: &str) -> Vec<u8> {
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        &format!("{text}\n"),
    )
}

/// A stream that first gives back bytes already read from it (the request head and anything
/// after it), for the WebSocket handshake to read again.
pub struct Replay<S> {
    read: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// `read` comes first, then `inner`.
    pub fn new(read: Vec<u8>, inner: S) -> Replay<S> {
        Replay { read, at: 0, inner }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream underneath, to write to.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Read> Read for Replay<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.read.len() {
            let n = (self.read.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.read[self.at..self.at + n]);
            self.at += n;
            if self.at == self.read.len() {
                self.read = Vec::new();
                self.at = 0;
            }
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Replay<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_head_is_read_once_complete() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let h = head("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:8080\r\n\r\nrest");
        assert_eq!(h.path, "/ws");
        assert_eq!(h.host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(h.len, h.len.min(200));
        assert!(parse_head(b"\x16\x03\x01 hello\r\n\r\n").is_err());
    }

    #[test]
    fn the_page_and_its_files_are_served_and_other_paths_are_not() {
        assert!(
            matches!(route(&head("GET / HTTP/1.1\r\n\r\n"), &[]), Route::File { content_type, .. } if content_type.starts_with("text/html"))
        );
        assert!(matches!(
            route(&head("GET /app.js HTTP/1.1\r\n\r\n"), &[]),
            Route::File { .. }
        ));
        assert!(matches!(
            route(&head("GET /../etc/passwd HTTP/1.1\r\n\r\n"), &[]),
            Route::Refuse { status: 404, .. }
        ));
        assert!(matches!(
            route(&head("POST / HTTP/1.1\r\n\r\n"), &[]),
            Route::Refuse { status: 405, .. }
        ));
        assert!(matches!(
            route(&head("GET /ws HTTP/1.1\r\n\r\n"), &[]),
            Route::Refuse { status: 400, .. }
        ));
    }

    #[test]
    fn a_websocket_from_another_origin_is_refused() {
        let ws = |origin: &str| {
            head(&format!(
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n{origin}\r\n"
            ))
        };
        assert_eq!(
            route(&ws("Origin: http://127.0.0.1:8080\r\n"), &[]),
            Route::Upgrade
        );
        assert_eq!(
            route(&ws("Origin: https://127.0.0.1:8080\r\n"), &[]),
            Route::Upgrade
        );
        assert_eq!(route(&ws(""), &[]), Route::Upgrade);
        assert!(matches!(
            route(&ws("Origin: https://evil.example\r\n"), &[]),
            Route::Refuse { status: 403, .. }
        ));
        assert!(matches!(
            route(&ws("Origin: http://127.0.0.1:8080.evil.example\r\n"), &[]),
            Route::Refuse { status: 403, .. }
        ));
        let allowed = ["https://chat.example.org".to_string()];
        assert_eq!(
            route(&ws("Origin: https://chat.example.org\r\n"), &allowed),
            Route::Upgrade
        );
    }

    #[test]
    fn replay_gives_back_what_was_read_first() {
        let mut r = Replay::new(b"abc".to_vec(), &b"def"[..]);
        let mut all = String::new();
        r.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abcdef");
    }
}
