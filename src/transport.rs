//! ZeroMQ helpers shared by servers and clients: addresses, sockets with safe defaults, polling.
//!
//! Every socket made here has LINGER 0 (so a context never hangs on exit) and, for clients,
//! send and receive timeouts, so no network wait is unbounded.

use std::time::Duration;

use crate::{errinput, Result};

/// Turns a user's `HOST:PORT` (or a full `tcp://HOST:PORT`) into a ZeroMQ endpoint.
/// Port `0` or `*` means "any free port" when binding.
///
/// # Errors
/// [`crate::Error::Input`] when the address has no valid port.
pub fn endpoint(address: &str) -> Result<String> {
    let address = address.trim();
    let bare = address.strip_prefix("tcp://").unwrap_or(address);
    let (host, port) = bare
        .rsplit_once(':')
        .ok_or_else(|| errinput!("address '{address}' must be HOST:PORT, e.g. 127.0.0.1:5555"))?;
    if host.is_empty() {
        return Err(errinput!(
            "address '{address}' has no host; try 127.0.0.1:{port}"
        ));
    }
    let port = match port {
        "0" | "*" => "*".to_string(),
        p => match p.parse::<u16>() {
            Ok(n) if n > 0 => n.to_string(),
            _ => return Err(errinput!("address '{address}' has no valid port (1-65535)")),
        },
    };
    Ok(format!("tcp://{host}:{port}"))
}

/// Checks an address others will connect to: `HOST:PORT` with a real port (not `0` or `*`).
/// Returns it without any `tcp://` prefix.
///
/// # Errors
/// [`crate::Error::Input`] naming the fault.
pub fn connectable(address: &str) -> Result<String> {
    let endpoint = endpoint(address)?;
    if endpoint.ends_with(":*") {
        return Err(errinput!(
            "address '{address}' has no fixed port to connect to"
        ));
    }
    Ok(self::address(&endpoint))
}

/// The `HOST:PORT` form of a `tcp://` endpoint, as shown to users and stored in the directory.
pub fn address(endpoint: &str) -> String {
    endpoint
        .strip_prefix("tcp://")
        .unwrap_or(endpoint)
        .to_string()
}

/// Splits a comma-separated list of addresses (`--server A,B`) into endpoints.
///
/// # Errors
/// The first invalid address.
pub fn endpoints(list: &str) -> Result<Vec<String>> {
    let all: Vec<String> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(endpoint)
        .collect::<Result<_>>()?;
    if all.is_empty() {
        return Err(errinput!("no server address given"));
    }
    Ok(all)
}

/// A socket with LINGER 0.
///
/// # Errors
/// When libzmq cannot create the socket.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> Result<zmq::Socket> {
    let socket = ctx.socket(kind)?;
    socket.set_linger(0)?;
    Ok(socket)
}

/// A server's ROUTER: bounded inbound frames, errors instead of silent drops to gone peers.
///
/// # Errors
/// When the socket cannot be made or bound.
pub fn bind_router(
    ctx: &zmq::Context,
    endpoint: &str,
    max_frame: i64,
) -> Result<(zmq::Socket, String)> {
    let router = socket(ctx, zmq::ROUTER)?;
    router.set_maxmsgsize(max_frame)?;
    router.set_router_mandatory(true)?;
    router.set_sndhwm(SERVER_SNDHWM)?;
    router.set_rcvhwm(SERVER_RCVHWM)?;
    router
        .bind(endpoint)
        .map_err(|e| errinput!("cannot bind {}: {e}", address(endpoint)))?;
    let actual = router
        .get_last_endpoint()?
        .unwrap_or_else(|_| endpoint.to_string());
    Ok((router, actual))
}

/// Messages queued per peer before a server stops sending to that peer (a slow reader then
/// misses pushes and repairs the gap from history, so the server's memory stays bounded).
pub const SERVER_SNDHWM: i32 = 10_000;
/// Messages queued inbound per peer before libzmq stops reading that peer's connection.
pub const SERVER_RCVHWM: i32 = 10_000;

/// Polls, retrying when a signal interrupts the wait.
///
/// # Errors
/// Any libzmq failure but EINTR.
pub fn poll(items: &mut [zmq::PollItem], timeout: Duration) -> Result<usize> {
    let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
    loop {
        match zmq::poll(items, ms) {
            Err(zmq::Error::EINTR) => continue,
            other => return Ok(other? as usize),
        }
    }
}

/// A routing id as hex, for logs.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_endpoints() {
        assert_eq!(endpoint("127.0.0.1:5555").unwrap(), "tcp://127.0.0.1:5555");
        assert_eq!(endpoint("tcp://host:1").unwrap(), "tcp://host:1");
        assert_eq!(endpoint(" 0.0.0.0:0 ").unwrap(), "tcp://0.0.0.0:*");
        assert!(endpoint("nohost").is_err());
        assert!(endpoint(":5555").is_err());
        assert!(endpoint("h:70000").is_err());
        assert_eq!(
            endpoints("a:1, b:2").unwrap(),
            vec!["tcp://a:1", "tcp://b:2"]
        );
        assert_eq!(address("tcp://a:1"), "a:1");
        assert_eq!(connectable("tcp://a:1").unwrap(), "a:1");
        assert!(connectable("a:0").is_err() && connectable("a:*").is_err());
    }
}
